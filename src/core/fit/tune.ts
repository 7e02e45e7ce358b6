/**
 * Coefficient tuning: after each layer's polynomial has been fitted to the data reaching it, tune
 * all layers' Chebyshev coefficients together by gradient descent so that the approximated
 * network's outputs match the original network's on calibration data (knowledge distillation,
 * Hinton et al. 2015; coefficient tuning of polynomial activations on collected data as in
 * Smart-PAF, Wang et al., MLSys 2024). When the calibration data has labels, the loss mixes in
 * the cross-entropy against them (Hinton et al.'s weighted sum of the soft and the hard targets;
 * Smart-PAF tunes on the task loss). The network's weights are not touched, and the intervals and
 * degrees stay as chosen (same depth, same folded affine maps).
 *
 * Why it helps: a per-layer fit minimises each activation's own error, but what decides a
 * prediction is how the errors of all units add up in the next layers; the gradient sees that.
 * The labels add what distillation cannot: the original model's own near-ties are where a small
 * approximation error flips a prediction, and the labels say which way those should fall.
 * Deviations are measured in units of the starting polynomial's largest coefficient. Two things
 * keep a tuned polynomial near the fitted one where calibration data is sparse: Adam moves each
 * coefficient by at most about lr per step (128 steps with the defaults and 2,048 images), and an
 * L2 penalty on the deviations, which in the Chebyshev basis is (up to the weight of c0) the
 * Chebyshev-weighted L2 distance between the two polynomials over the whole interval.
 *
 * Defaults (step size, epochs, the labels' weight) from comparisons on the MNIST examples, tuning
 * each per-channel fit and measuring the held-out drop, mean of three seeded splits; the figures
 * are in the README ("Measurements behind the defaults").
 */
import { CancelledError } from '../errors';
import { Dataset } from '../data/read';
import { tf } from '../model/backend';
import { Executor } from '../model/execute';
import { GraphNode, actSpec, size } from '../model/graph';
import { Progress, captureValues, gather } from '../profile/profiler';
import { ValueStats } from '../profile/stats';
import { Rng } from '../rng';
import { Fit, assessChannels, assessFit, polyOf } from './fit';
import { TrainablePoly } from './trainablePoly';
import { distillLoss, softTargets, teacherRows } from './distill';

export interface TuneOptions {
  /** Passes over the calibration samples. */
  epochs: number;
  batchSize: number;
  /** Adam step size, relative to each layer's largest starting coefficient. */
  lr: number;
  /** Weight of the L2 penalty on the relative coefficient changes. */
  anchor: number;
  /** Distillation temperature. */
  temperature: number;
  /** Weight of the cross-entropy against the dataset's labels, 0..1 (0: distillation only; no
   * effect when the dataset has no labels). */
  labelWeight: number;
  seed: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export const TUNE_DEFAULTS: Omit<TuneOptions, 'seed'> = {
  epochs: 8,
  batchSize: 128,
  lr: 1e-3,
  anchor: 1e-3,
  temperature: 1,
  labelWeight: 0.5,
};

/**
 * Tunes the coefficients of `fits` (one per activation in `acts`, with optional per-channel
 * offsets, which stay fixed) on the calibration samples `idx`. Returns new fits with the same
 * degrees and intervals and their quality on the recorded data `stats`.
 */
/**
 * The largest batch whose gradient tape fits `maxBytes`: Clenshaw's recurrence keeps about three
 * tensors of the layer's size per degree for the backward pass (plus the network's own
 * activations), and the wasm backend's heap is capped at a few GB; ResNet-20 at degree 15 with
 * batches of 128 aborted it.
 */
export function tapeBatch(
  acts: GraphNode[],
  degree: (a: GraphNode) => number,
  g: Executor['graph'],
  maxBytes: number,
  cap: number,
): number {
  const perSample = tapeBytesPerSample(acts, degree, g);
  return Math.max(1, Math.min(cap, Math.floor(maxBytes / perSample)));
}

/** One sample's share of the tuning tape, with `degree(a)` at each activation (see tapeBatch). */
export function tapeBytesPerSample(acts: GraphNode[], degree: (a: GraphNode) => number, g: Executor['graph']): number {
  let perSample = 0;
  for (const a of acts) perSample += (3 * degree(a) + 6) * size(a.shape) * 4;
  for (const n of g.nodes) perSample += 2 * size(n.shape) * 4;
  return perSample;
}

/** What a tuning tape may hold: well inside the wasm heap, beside the data and the model. */
export const TAPE_BYTES = 768 * 2 ** 20;

export async function tuneCoefficients(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  acts: GraphNode[],
  fits: Map<number, Fit>,
  offsets: Map<number, Float32Array | null>,
  stats: Map<number, ValueStats>,
  opts: TuneOptions,
): Promise<Map<number, Fit>> {
  const g = ex.graph;
  const n = idx.length;
  // A smaller batch takes more steps per epoch; the step size shrinks in proportion (the linear
  // scaling rule, Goyal et al. 2017), so that the coefficients move as far per epoch: unscaled,
  // ResNet-20's small tape batch made tuning ruin the fit (README, "Measurements behind the defaults").
  const batchSize = tapeBatch(acts, (a) => fits.get(a.id)!.degree, g, TAPE_BYTES, opts.batchSize);
  const o = { ...opts, batchSize, lr: (opts.lr * batchSize) / opts.batchSize };
  // The original model's logits on the tuning samples: the distillation targets.
  const teacher = (await captureValues(ex, ds, idx, [g.output], {}, { batchSize: o.batchSize, signal: o.signal })).get(
    g.output,
  )!;
  const per = size(g.nodes[g.output].shape);
  const layers = acts.map((a) => ({
    node: a,
    fit: fits.get(a.id)!,
    poly: new TrainablePoly(polyOf(fits.get(a.id)!, offsets.get(a.id))),
  }));
  const apply = new Map(layers.map((l) => [l.node.id, (x: tf.Tensor) => l.poly.apply(x)]));
  const optimizer = tf.train.adam(o.lr);
  const vars = layers.map((l) => l.poly.delta);
  const rng = new Rng(o.seed);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const T = o.temperature;
  const labels = o.labelWeight > 0 ? ds.labels : null;
  const lw = labels ? o.labelWeight : 0;
  const steps = o.epochs * Math.ceil(n / o.batchSize);
  let step = 0;
  try {
    for (let e = 0; e < o.epochs; e++) {
      rng.shuffle(order);
      for (let s = 0; s < n; s += o.batchSize) {
        if (o.signal?.aborted) throw new CancelledError();
        const m = Math.min(o.batchSize, n - s);
        const pick = order.subarray(s, s + m);
        const bIdx = Int32Array.from(pick, (i) => idx[i]);
        tf.tidy(() => {
          const x = tf.tensor(gather(ds, bIdx, 0, m), [m, ...ds.sampleShape]);
          const soft = softTargets(teacherRows(teacher, pick, per), per, T);
          const hard = labels
            ? tf.oneHot(
                tf.tensor1d(
                  Array.from(bIdx, (i) => labels[i]),
                  'int32',
                ),
                per,
              )
            : null;
          const { value, grads } = tf.variableGrads(() => {
            const logits = ex.forward(new Map([[g.input, x]]), 0, { apply });
            const fit = distillLoss(logits, soft, hard, T, lw);
            const pen = vars.reduce((acc: tf.Tensor, v) => tf.add(acc, tf.mean(tf.square(v))), tf.scalar(0));
            return tf.add(fit, tf.mul(pen, o.anchor)) as tf.Scalar;
          }, vars);
          // A batch whose values leave an interval far enough to overflow gives no usable step.
          if (Number.isFinite(value.dataSync()[0]))
            optimizer.applyGradients(grads as Parameters<typeof optimizer.applyGradients>[0]);
        });
        o.onProgress?.(++step / steps, `tuning coefficients: step ${step}/${steps}`);
        if (step % 4 === 0) await new Promise<void>((r) => setImmediate(r));
      }
    }
    return new Map(layers.map((l) => [l.node.id, tunedFit(l, stats.get(l.node.id)!)]));
  } finally {
    optimizer.dispose();
    for (const l of layers) l.poly.dispose();
  }
}

/** The tuned polynomial as a Fit of the same degree and interval(s), with its quality on the recorded data. */
function tunedFit(l: { node: GraphNode; fit: Fit; poly: TrainablePoly }, st: ValueStats): Fit {
  const act = actSpec(l.node);
  const p = l.poly.current();
  if (p.channels) return { ...l.fit, channels: p.channels, ...assessChannels(act, p.channels, st.channels!) };
  const coeffs = Array.from(p.coeffs);
  return { ...l.fit, coeffs, ...assessFit(act, coeffs, l.fit.interval, st.sample, st) };
}
