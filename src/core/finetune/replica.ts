/**
 * One thread's copy of the network being fine-tuned, and the loss and gradients of one shard of a
 * batch on it. fine-tune.ts cuts every batch into SHARDS shards and adds their gradients, each
 * weighted by its share of the samples: the whole batch's gradient for every term of the loss that
 * is a mean over samples. TensorFlow.js's wasm backend runs on one core in Node (its threaded
 * build does not load there), so a helper thread with its own copy (stepWorker.ts) computes the
 * second shard while this thread computes the first, and the update is applied here. The shards
 * are the same whether or not the helper exists, so one thread and two compute the same weights.
 */
import { tf } from '../model/backend';
import { Executor } from '../model/execute';
import { Graph, GraphNode } from '../model/graph';
import { Interval, unitMap } from '../numerics/chebyshev';
import { PolyActivation } from '../numerics/polynomial';
import { TrainablePoly } from '../fit/trainablePoly';
import { distillLoss, softTargets } from '../fit/distill';

/** Shards per batch (a batch of one sample is one shard). */
export const SHARDS = 2;

/** What a copy is built from: plain data, so that it reaches a worker thread by structured clone. */
export interface ReplicaSpec {
  graph: Graph;
  /** Activation nodes (ids, in graph order) and each one's starting polynomial. */
  acts: number[];
  start: PolyActivation[];
  /** Classes (the output's size) and a sample's shape. */
  per: number;
  shape: number[];
  /** The labels' weight in the loss (distillLoss) and the temperature. */
  lw: number;
  T: number;
  /** The range loss's target: the inner fraction of each interval (rangeLoss's `inner`). */
  inner: number;
}

/** One shard: its samples, their labels (or null) and the teacher's logits for them (or null). */
export interface Shard {
  xs: Float32Array;
  m: number;
  labels: number[] | null;
  soft: Float32Array | null;
}

/** The shard's loss terms and, when the loss is finite, the gradients in `Replica.vars` order. */
export interface ShardResult {
  ce: number;
  rl: number;
  finite: boolean;
  grads: Float32Array[] | null;
}

/**
 * The range loss of one activation's input: mean(e^2) + max(e)^2, e = max(|t| - 1, 0), t the input
 * mapped to [-1, 1]. The mean is Baruch et al.'s; the max term is ours: one value beyond the
 * interval is enough to make an encrypted image wrong (a polynomial grows like T_d there), and the
 * mean of a few outliers among a batch's millions of values is nothing beside the cross-entropy,
 * so held-out values left the intervals on ResNet-20 while the mean stayed near zero. (Per shard,
 * the max is the shard's: the shards' gradients add up to a mean of their maxima.) With `inner`
 * below 1 the excess counts from that fraction of the interval's half-width: the training values
 * are held away from the edges, which leaves room for held-out values, which training never saw.
 */
export function rangeLoss(x: tf.Tensor, p: TrainablePoly, inner = 1): tf.Scalar {
  const iv = p.intervals;
  let t: tf.Tensor;
  if (Array.isArray(iv)) {
    const maps = iv.map(unitMap);
    t = tf.add(tf.mul(x, tf.tensor1d(maps.map((u) => u.scale))), tf.tensor1d(maps.map((u) => u.shift)));
  } else {
    const u = unitMap(iv);
    t = tf.add(tf.mul(x, u.scale), u.shift);
  }
  const e = tf.relu(tf.sub(tf.abs(t), inner));
  return tf.add(tf.mean(tf.square(e)), tf.square(tf.max(e)));
}

/** x clamped to the interval (per channel: the last axis) of a polynomial. */
function clampTo(iv: Interval | Interval[]): (x: tf.Tensor) => tf.Tensor {
  if (!Array.isArray(iv)) return (x) => tf.clipByValue(x, iv.a, iv.b);
  const lo = iv.map((v) => v.a);
  const hi = iv.map((v) => v.b);
  return (x) => tf.minimum(tf.maximum(x, tf.tensor1d(lo)), tf.tensor1d(hi));
}

export class Replica {
  readonly ex: Executor;
  readonly acts: GraphNode[];
  readonly polys: TrainablePoly[];
  /** The network's weights, then the polynomials' coefficient deviations: what is trained. */
  readonly vars: tf.Variable[];
  /** How many of `vars` are weights (the rest are coefficients, with their own optimiser). */
  readonly nWeights: number;
  private readonly clamps: ((x: tf.Tensor) => tf.Tensor)[];

  constructor(readonly spec: ReplicaSpec) {
    const g = spec.graph;
    this.ex = new Executor(g, { trainable: true });
    this.acts = spec.acts.map((id) => g.nodes[id]);
    this.polys = spec.start.map((p) => new TrainablePoly(p, true));
    // While training, each polynomial sees its input clamped to its interval: outside it a
    // polynomial grows like T_d, and in a deep network one such value overflows every layer after
    // it (ResNet-20 from the uniform fit: most batches had a non-finite loss, and nothing trained).
    // The range loss, on the unclamped input, pulls the values inside, where the clamp does
    // nothing; every measurement runs without it, as the encrypted model will.
    this.clamps = this.polys.map((p) => clampTo(p.intervals));
    const weights = this.ex.variables();
    this.nWeights = weights.length;
    this.vars = [...weights, ...this.polys.map((p) => p.delta)];
  }

  /** The trained values, in `vars` order (copies). */
  values(): Float32Array[] {
    return this.vars.map((v) => Float32Array.from(v.dataSync() as Float32Array));
  }

  /** Sets the trained values (another copy's `values()`). */
  setValues(values: Float32Array[]): void {
    this.vars.forEach((v, i) => tf.tidy(() => v.assign(tf.tensor(values[i], v.shape))));
  }

  /**
   * One shard's loss (against the targets, distillLoss, plus `weight` times the range loss averaged
   * over the activations) and its gradients. Not finite: no gradients; `rl` is measured either way.
   */
  grads(s: Shard, weight: number): ShardResult {
    const { spec, acts, polys, clamps } = this;
    const out: ShardResult = { ce: NaN, rl: NaN, finite: false, grads: null };
    tf.tidy(() => {
      const x = tf.tensor(s.xs, [s.m, ...spec.shape]);
      const hard = s.labels && spec.lw > 0 ? tf.oneHot(tf.tensor1d(s.labels, 'int32'), spec.per) : null;
      const soft = s.soft ? softTargets(s.soft, spec.per, spec.T) : null;
      const { value, grads } = tf.variableGrads(() => {
        const ranges: tf.Scalar[] = [];
        const apply = new Map(
          acts.map((a, k) => [
            a.id,
            (v: tf.Tensor) => {
              ranges.push(rangeLoss(v, polys[k], spec.inner));
              return polys[k].apply(clamps[k](v));
            },
          ]),
        );
        const logits = this.ex.forward(new Map([[spec.graph.input, x]]), 0, { apply });
        const loss = distillLoss(logits, soft, hard, spec.T, spec.lw);
        const range = ranges.length ? tf.div(tf.addN(ranges), ranges.length) : tf.scalar(0);
        out.ce = loss.dataSync()[0];
        out.rl = range.dataSync()[0];
        return tf.add(loss, tf.mul(range, weight)) as tf.Scalar;
      }, this.vars);
      if (!Number.isFinite(value.dataSync()[0])) return;
      out.finite = true;
      out.grads = this.vars.map((v) => Float32Array.from(grads[v.name].dataSync() as Float32Array));
    });
    return out;
  }

  dispose(): void {
    this.polys.forEach((p) => p.dispose());
    this.ex.dispose();
  }
}
