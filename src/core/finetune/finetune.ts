/**
 * Approximation-aware fine-tuning: the baseline he-approx is measured against (and, from
 * he-approx's result, the option for the last tenth of a point). Every activation is replaced by
 * a polynomial of a fixed degree on a fixed interval, and then the network's weights and the
 * polynomials' coefficients are trained together on labelled calibration images (or, without
 * labels, on the original model's outputs: distillation, fit/distill.ts): what users
 * otherwise do to make a network HE-friendly (Gilad-Bachrach et al., CryptoNets 2016; Baruch et
 * al., "A methodology for training homomorphic encryption friendly neural networks", 2022; the
 * fine-tuning step of AutoFHE, Ao & Boddeti 2024; Smart-PAF, Wang et al. 2024).
 *
 * Done as those papers do it:
 * - Adam (Kingma & Ba 2015) with a linear warm-up and a cosine decay over the planned epochs
 *   (schedule below), one step size for the weights and a relative one for the coefficients
 *   (TrainablePoly: steps in units of each layer's largest coefficient over its number of terms),
 *   both scaled down with the batch when the tape limits it (the linear scaling rule);
 * - gradient clipping by global norm (Pascanu et al. 2013): a polynomial outside its interval
 *   grows like T_d, and one such batch would otherwise throw the weights far away;
 * - Baruch et al.'s range loss: the mean squared excess of every activation input beyond its
 *   interval (in the interval's own units, so that layers weigh the same), plus the largest
 *   excess squared (rangeLoss), which keeps the values
 *   where the polynomial was fitted and where the chosen CKKS parameters hold them; while
 *   training, the polynomial's input is clamped to its interval (see finetune()). The range loss's
 *   weight is a multiplier that rises while training batches leave their intervals and falls back
 *   while they stay inside (RangeWeight), so that the network cannot trade the intervals for
 *   cross-entropy by leaning on the clamp;
 * - a batch whose loss is not finite is skipped, and counted.
 * The degrees, the intervals and the per-channel offsets never change: the levels stay what the
 * analysis priced. Seeded; progress and cancellation as every other stage.
 */
import { CancelledError } from '../errors';
import { Dataset } from '../data/read';
import { tf } from '../model/backend';
import { Executor, frozenParams } from '../model/execute';
import { Graph, GraphNode, activationNodes } from '../model/graph';
import { Interval, unitMap } from '../numerics/chebyshev';
import { PolyActivation, polyTerms } from '../numerics/polynomial';
import { Progress, captureValues, gather } from '../profile/profiler';
import { Rng } from '../rng';
import { TAPE_BYTES, tapeBatch } from '../fit/tune';
import { TrainablePoly } from '../fit/trainablePoly';
import { distillLoss, softTargets } from '../fit/distill';

export interface FinetuneOptions {
  /** Planned passes over the samples (the learning-rate schedule spans them). */
  epochs: number;
  batchSize: number;
  /** Adam step size of the weights (both step sizes are for this batch size; see finetune()). */
  lr: number;
  /**
   * Adam step size of the coefficients, relative to each layer's largest starting coefficient and
   * divided by its number of terms (TrainablePoly's perTerm).
   */
  coeffLr: number;
  /** Largest global norm of one step's gradient. */
  clipNorm: number;
  /**
   * Weight of the labels' cross-entropy, 0..1; the rest distils the original model's outputs
   * (fit/distill.ts). Default 1 (the labels alone); without labels it is 0 whatever is given.
   */
  labelWeight?: number;
  /** Distillation temperature (default 1). */
  temperature?: number;
  /** Weight of the range loss at the start, and its floor (RangeWeight raises it). */
  rangeWeight: number;
  /** The most RangeWeight may raise it to (default RangeWeight.MAX; rangeWeight itself: a fixed weight, for ablations). */
  rangeWeightMax?: number;
  seed: number;
  /** Stop after the epoch that reaches this many seconds (a wall-time cap), if given. */
  maxSeconds?: number;
  signal?: AbortSignal;
  onProgress?: Progress;
  /** After every step whose loss was finite: the step's cross-entropy and range loss (for traces). */
  onStep?: (step: number, loss: number, rangeLoss: number) => void;
  /** After every epoch, with the model as it is then (for per-epoch measurements; not timed). */
  onEpoch?: (e: EpochResult, now: FinetunedModel) => Promise<void>;
}

/**
 * Settings of the baseline, fine-tuning from the uniform fit, chosen so that it is not a straw
 * man: the best of a sweep of step sizes on mnist-cnn at he-approx's degrees (bench/finetune.ts
 * --lr X --coeff-lr Y --starts uniform; figures in the README, "Measurements behind the
 * defaults"). The largest steps won: the coefficients start far off and must move far. A deep
 * network wants smaller steps: bench/finetune.ts gives ResNet-20 its own.
 */
export const BASELINE_FINETUNE: Omit<FinetuneOptions, 'seed' | 'epochs'> = {
  batchSize: 64,
  lr: 1e-2,
  coeffLr: 0.12,
  clipNorm: 5,
  rangeWeight: 0.1,
};

/**
 * Settings of `--finetune-epochs`, which starts from he-approx's result: a start that is already
 * good wants small steps. The middle of a sweep from it on mnist-cnn (README, "Measurements
 * behind the defaults"): every setting first loses some of the start (Adam moves every weight by
 * about lr per step), and BASELINE_FINETUNE's steps from here lose most of it in the first epoch.
 */
export const FINETUNE_DEFAULTS: Omit<FinetuneOptions, 'seed' | 'epochs'> = {
  batchSize: 64,
  lr: 3e-4,
  coeffLr: 1.2e-2,
  clipNorm: 5,
  rangeWeight: 0.1,
  labelWeight: 1,
  temperature: 1,
};

export interface EpochResult {
  epoch: number;
  /** Training seconds so far (measurements in onEpoch excluded). */
  seconds: number;
  /** Mean loss against the targets (labels, the original's outputs or both) and range loss over the epoch's batches. */
  loss: number;
  rangeLoss: number;
  /** Batches whose loss was not finite, skipped. */
  skipped: number;
  /** The range loss's weight at the epoch's end (RangeWeight), and its batches with values beyond an interval. */
  rangeWeight: number;
  batchesOutside: number;
}

export interface FinetunedModel {
  graph: Graph;
  polys: Map<number, PolyActivation>;
}

export interface FinetuneResult extends FinetunedModel {
  epochs: EpochResult[];
  /** Layers whose kernels (or, for affine constants, all parameters) stayed fixed, and why. */
  frozen: { layer: string; reason: string }[];
  batchSize: number;
}

/**
 * The step size's factor at `step` of `total`: a linear warm-up over the first epoch (at most a
 * fifth of the run; Goyal et al. 2017), then cosine decay to zero (Loshchilov & Hutter 2017).
 * Without the warm-up, the first steps at full size threw the weights far from where they were
 * trained (README, "Measurements behind the defaults").
 */
export function schedule(step: number, total: number, stepsPerEpoch: number): number {
  const warm = Math.max(1, Math.min(stepsPerEpoch, Math.ceil(total / 5)));
  if (step < warm) return (step + 1) / warm;
  return 0.5 * (1 + Math.cos((Math.PI * (step - warm)) / Math.max(1, total - warm)));
}

/**
 * The range loss of one activation's input: mean(e^2) + max(e)^2, e = max(|t| - 1, 0), t the input
 * mapped to [-1, 1]. The mean is Baruch et al.'s; the max term is ours: one value beyond the
 * interval is enough to make an encrypted image wrong (a polynomial grows like T_d there), and the
 * mean of a few outliers among a batch's millions of values is nothing beside the cross-entropy,
 * so held-out values left the intervals on ResNet-20 while the mean stayed near zero.
 */
export function rangeLoss(x: tf.Tensor, p: TrainablePoly): tf.Scalar {
  const iv = p.intervals;
  let t: tf.Tensor;
  if (Array.isArray(iv)) {
    const maps = iv.map(unitMap);
    t = tf.add(tf.mul(x, tf.tensor1d(maps.map((u) => u.scale))), tf.tensor1d(maps.map((u) => u.shift)));
  } else {
    const u = unitMap(iv);
    t = tf.add(tf.mul(x, u.scale), u.shift);
  }
  const e = tf.relu(tf.sub(tf.abs(t), 1));
  return tf.add(tf.mean(tf.square(e)), tf.square(tf.max(e)));
}

/**
 * The range loss's weight as a Lagrange multiplier of the constraint "every value inside its
 * interval", raised multiplicatively while it is violated (dual ascent; the multiplicative form
 * keeps it positive and scale-free: Arora, Hazan & Kale 2012's multiplicative weights). A fixed
 * weight lost to the cross-entropy on ResNet-20 at 5 bootstraps: the range loss rose from 0.01 to
 * 0.21 over eight epochs while the network learnt to rely on the training clamp, and every epoch's
 * held-out values overflowed without it (README, "The accuracy-cost frontier").
 *
 * After a batch with any value beyond an interval the weight grows by UP; after a batch with none
 * it shrinks by DOWN, never below the configured weight. UP^1 = DOWN^-9: it settles where about
 * one batch in ten leaves an interval, and held-out samples, which training never saw, then leave
 * them rarely; it rises tenfold in about 25 violating batches, less than an epoch of any data set
 * fine-tuning is given.
 */
export class RangeWeight {
  static readonly UP = 1.1;
  static readonly DOWN = 1.1 ** (1 / 9);
  /** Far above any cross-entropy: a bound against overflow. */
  static readonly MAX = 1e6;
  private w: number;
  constructor(
    private readonly floor: number,
    private readonly max = RangeWeight.MAX,
  ) {
    this.w = floor;
  }
  get value(): number {
    return this.w;
  }
  /** After a step: `outside` when any of the batch's values left its interval. */
  update(outside: boolean): void {
    this.w = outside ? Math.min(this.max, this.w * RangeWeight.UP) : Math.max(this.floor, this.w / RangeWeight.DOWN);
  }
}

/** x clamped to the interval (per channel: the last axis) of a polynomial. */
function clampTo(iv: Interval | Interval[]): (x: tf.Tensor) => tf.Tensor {
  if (!Array.isArray(iv)) return (x) => tf.clipByValue(x, iv.a, iv.b);
  const lo = iv.map((v) => v.a);
  const hi = iv.map((v) => v.b);
  return (x) => tf.minimum(tf.maximum(x, tf.tensor1d(lo)), tf.tensor1d(hi));
}

/** Scales the gradients so that their global norm is at most `clip`. */
function clipByGlobalNorm(grads: tf.NamedTensorMap, clip: number): tf.NamedTensorMap {
  const sq = Object.values(grads).reduce((acc: tf.Tensor, g) => tf.add(acc, tf.sum(tf.square(g))), tf.scalar(0));
  const norm = Math.sqrt(sq.dataSync()[0]);
  if (!(norm > clip)) return grads;
  const f = clip / norm;
  return Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, tf.mul(g, f)]));
}

/** The model as it is, as plain data. */
function snapshot(ex: Executor, polys: TrainablePoly[], acts: GraphNode[]): FinetunedModel {
  return { graph: ex.currentGraph(), polys: new Map(acts.map((a, k) => [a.id, polys[k].current()])) };
}

/**
 * The step sizes for the batch the tape allows. A batch the tape made smaller takes more steps per
 * epoch: both step sizes shrink in proportion (the linear scaling rule, Goyal et al. 2017;
 * coefficient tuning does the same): on ResNet-20, whose tape allows fewer samples than a batch,
 * the configured step size raised the cross-entropy within ten steps.
 */
function scaledRates(o: FinetuneOptions, batchSize: number): { lr: number; coeffLr: number } {
  return { lr: (o.lr * batchSize) / o.batchSize, coeffLr: (o.coeffLr * batchSize) / o.batchSize };
}

/** Layers whose parameters fine-tuning keeps fixed, and why (frozenParams). */
function frozenLayers(g: Graph): { layer: string; reason: string }[] {
  return g.nodes.flatMap((nd) => {
    const why = frozenParams(nd);
    return why ? [{ layer: nd.layer, reason: why }] : [];
  });
}

/** Adam's step size is a field tfjs reads at every update; the schedule sets it there. */
function setLr(opt: tf.AdamOptimizer, lr: number): void {
  (opt as unknown as { learningRate: number }).learningRate = lr;
}

/** What every training step shares. */
interface StepContext {
  g: Graph;
  ex: Executor;
  acts: GraphNode[];
  polys: TrainablePoly[];
  clamps: ((x: tf.Tensor) => tf.Tensor)[];
  /** Classes (the output's size). */
  per: number;
  /** A sample's shape. */
  shape: number[];
  weights: tf.Variable[];
  deltas: tf.Variable[];
  isWeight: Set<string>;
  weightOpt: tf.AdamOptimizer;
  coeffOpt: tf.AdamOptimizer;
  rangeWeight: RangeWeight;
  /** The original model's logits on the training samples (rows in `idx` order), when distilling. */
  teacher: Float32Array | null;
  /** The labels' weight in the loss (0 without labels) and the temperature. */
  lw: number;
  T: number;
  o: FinetuneOptions;
}

/**
 * One step on a batch (samples `xs`, class `labels`, rows `pick` of the teacher's logits): the
 * loss against the targets (distillLoss) plus the weighted range loss, gradients clipped by their
 * global norm, the weights and the coefficients each stepped by their own Adam. `finite` false
 * when the loss is not (the step is then skipped); `rl` is measured either way.
 */
function trainStep(
  c: StepContext,
  xs: Float32Array,
  labels: number[] | null,
  pick: Int32Array,
): { ce: number; rl: number; finite: boolean } {
  const { g, ex, acts, polys, clamps } = c;
  const weight = c.rangeWeight.value;
  const m = pick.length;
  let ce = NaN;
  let rl = NaN;
  let finite = false;
  tf.tidy(() => {
    const x = tf.tensor(xs, [m, ...c.shape]);
    const hard = labels && c.lw > 0 ? tf.oneHot(tf.tensor1d(labels, 'int32'), c.per) : null;
    const soft = c.teacher ? softTargets(c.teacher, pick, c.per, c.T) : null;
    const { value, grads } = tf.variableGrads(() => {
      const ranges: tf.Scalar[] = [];
      const apply = new Map(
        acts.map((a, k) => [
          a.id,
          (v: tf.Tensor) => {
            ranges.push(rangeLoss(v, polys[k]));
            return polys[k].apply(clamps[k](v));
          },
        ]),
      );
      const logits = ex.forward(new Map([[g.input, x]]), 0, { apply });
      const xent = distillLoss(logits, soft, hard, c.T, c.lw);
      const range = ranges.length ? tf.div(tf.addN(ranges), ranges.length) : tf.scalar(0);
      ce = xent.dataSync()[0];
      rl = range.dataSync()[0];
      return tf.add(xent, tf.mul(range, weight)) as tf.Scalar;
    }, [...c.weights, ...c.deltas]);
    if (!Number.isFinite(value.dataSync()[0])) return;
    const clipped = clipByGlobalNorm(grads, c.o.clipNorm);
    const w: { name: string; tensor: tf.Tensor }[] = [];
    const cs: { name: string; tensor: tf.Tensor }[] = [];
    for (const [name, tensor] of Object.entries(clipped)) (c.isWeight.has(name) ? w : cs).push({ name, tensor });
    if (w.length) c.weightOpt.applyGradients(w);
    c.coeffOpt.applyGradients(cs);
    finite = true;
  });
  return { ce, rl, finite };
}

/** Where a run stands in its schedule, and its full step sizes. */
interface Run {
  step: number;
  total: number;
  stepsPerEpoch: number;
  lr: number;
  coeffLr: number;
  batchSize: number;
}

/**
 * One pass over the samples `idx[order[k]]` (`order`: positions in `idx`, in this epoch's order),
 * batch by batch: the epoch's means and counts.
 */
async function trainEpoch(
  c: StepContext,
  ds: Dataset,
  idx: Int32Array,
  order: Int32Array,
  run: Run,
  e: number,
): Promise<Omit<EpochResult, 'epoch' | 'seconds'>> {
  const { o } = c;
  const labels = ds.labels;
  let lossSum = 0;
  let rangeSum = 0;
  let counted = 0;
  let skipped = 0;
  let outside = 0;
  for (let s = 0; s < order.length; s += run.batchSize) {
    if (o.signal?.aborted) throw new CancelledError();
    const pick = order.subarray(s, s + run.batchSize);
    const batch = Int32Array.from(pick, (i) => idx[i]);
    const f = schedule(run.step, run.total, run.stepsPerEpoch);
    setLr(c.weightOpt, run.lr * f);
    setLr(c.coeffOpt, run.coeffLr * f);
    const r = trainStep(
      c,
      gather(ds, batch, 0, batch.length),
      labels ? Array.from(batch, (i) => labels[i]) : null,
      pick,
    );
    // Values beyond an interval (or not finite: rl NaN) are a violation whether or not the loss is finite.
    const violated = r.rl !== 0;
    c.rangeWeight.update(violated);
    if (violated) outside++;
    if (r.finite) {
      lossSum += r.ce;
      rangeSum += r.rl;
      counted++;
      o.onStep?.(run.step, r.ce, r.rl);
    } else skipped++;
    run.step++;
    o.onProgress?.(run.step / run.total, `fine-tuning: epoch ${e + 1}/${o.epochs}, step ${run.step}/${run.total}`);
    if (run.step % 4 === 0) await new Promise<void>((r) => setImmediate(r));
  }
  const mean = (sum: number) => (counted ? sum / counted : NaN);
  return {
    loss: mean(lossSum),
    rangeLoss: mean(rangeSum),
    skipped,
    rangeWeight: c.rangeWeight.value,
    batchesOutside: outside,
  };
}

export async function finetune(
  g: Graph,
  ds: Dataset,
  idx: Int32Array,
  start: Map<number, PolyActivation>,
  o: FinetuneOptions,
): Promise<FinetuneResult> {
  const acts = activationNodes(g);
  for (const a of acts) if (!start.has(a.id)) throw new Error(`no starting polynomial for ${a.name}`);
  const ex = new Executor(g, { trainable: true });
  const polys = acts.map((a) => new TrainablePoly(start.get(a.id)!, true));
  // The tape holds every layer's Clenshaw recurrence, as in coefficient tuning (tune.ts).
  const batchSize = tapeBatch(acts, (a) => polyTerms(start.get(a.id)!) - 1, g, TAPE_BYTES, o.batchSize);
  // While training, each polynomial sees its input clamped to its interval: outside it a
  // polynomial grows like T_d, and in a deep network one such value overflows every layer after
  // it (ResNet-20 from the uniform fit: most batches had a non-finite loss, and nothing trained).
  // The range loss, on the unclamped input, pulls the values inside, where the clamp does
  // nothing; every measurement runs without it, as the encrypted model will.
  const clamps = polys.map((p) => clampTo(p.intervals));
  const { lr, coeffLr } = scaledRates(o, batchSize);
  const lw = ds.labels ? Math.min(1, Math.max(0, o.labelWeight ?? 1)) : 0;
  // The original model's logits, computed before any weight moves: the distillation targets.
  const t0 = Date.now();
  const teacher =
    lw < 1 ? (await captureValues(ex, ds, idx, [g.output], {}, { batchSize, signal: o.signal })).get(g.output)! : null;
  const weights = ex.variables();
  const ctx: StepContext = {
    g,
    ex,
    acts,
    polys,
    clamps,
    per: g.nodes[g.output].shape.reduce((a, b) => a * b, 1),
    shape: ds.sampleShape,
    weights,
    deltas: polys.map((p) => p.delta),
    isWeight: new Set(weights.map((v) => v.name)),
    weightOpt: tf.train.adam(lr),
    coeffOpt: tf.train.adam(coeffLr),
    rangeWeight: new RangeWeight(o.rangeWeight, Math.max(o.rangeWeight, o.rangeWeightMax ?? RangeWeight.MAX)),
    teacher,
    lw,
    T: o.temperature ?? 1,
    o,
  };
  const { weightOpt, coeffOpt } = ctx;
  const rng = new Rng(o.seed);
  const n = idx.length;
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const stepsPerEpoch = Math.ceil(n / batchSize);
  const run: Run = { step: 0, total: o.epochs * stepsPerEpoch, stepsPerEpoch, lr, coeffLr, batchSize };
  const epochs: EpochResult[] = [];
  // The teacher's pass counts as training time.
  let seconds = (Date.now() - t0) / 1000;
  try {
    for (let e = 0; e < o.epochs; e++) {
      const t1 = Date.now();
      rng.shuffle(order);
      const sums = await trainEpoch(ctx, ds, idx, order, run, e);
      seconds += (Date.now() - t1) / 1000;
      const r: EpochResult = { epoch: e + 1, seconds, ...sums };
      epochs.push(r);
      if (o.onEpoch) await o.onEpoch(r, snapshot(ex, polys, acts));
      if (o.maxSeconds !== undefined && seconds >= o.maxSeconds) break;
    }
    return { ...snapshot(ex, polys, acts), epochs, frozen: frozenLayers(g), batchSize };
  } finally {
    weightOpt.dispose();
    coeffOpt.dispose();
    polys.forEach((p) => p.dispose());
    ex.dispose();
  }
}
