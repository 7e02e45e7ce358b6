/**
 * Batched passes over calibration and held-out data.
 *
 * - `profileActivations` streams calibration samples through the (possibly partly approximated)
 *   network and records the statistics of every activation's INPUT. Memory is bounded by the
 *   batch size and the reservoir size, whatever the number of samples.
 * - `HeldoutCache` keeps, for the held-out samples, the values of every node that is live at
 *   some activation (each activation's input among them) and the original model's predictions,
 *   so that judging a polynomial at layer L re-runs only the network from L onward.
 */
import { CancelledError, UserError } from '../errors';
import { Dataset } from '../data/read';
import { Executor, RunOptions } from '../model/execute';
import { tf } from '../model/backend';
import { activationNodes, liveAt, size } from '../model/graph';
import { CHANNEL_RESERVOIR, ChannelStats, StreamingStats, ValueStats } from './stats';

export interface Progress {
  (fraction: number, message: string): void;
}

export interface PassOptions {
  batchSize: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

function checkCancel(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CancelledError();
}

/** Yields to the event loop so that cancellation and progress messages get through. */
const tick = () => new Promise<void>((r) => setImmediate(r));

/** Copies samples idx[from .. from+n) of the dataset into one batch-major array. */
export function gather(ds: Dataset, idx: Int32Array, from: number, n: number): Float32Array {
  const per = size(ds.sampleShape);
  const out = new Float32Array(n * per);
  for (let i = 0; i < n; i++) out.set(ds.x.subarray(idx[from + i] * per, (idx[from + i] + 1) * per), i * per);
  return out;
}

/**
 * Runs the network from its input over samples `idx` in batches, with `run`'s replacements,
 * and hands each batch's logits and `capture`d values (batch-major copies) to `visit`: the one
 * loop every pass from the input shares (profiling, captures, predictions, streaming means), with
 * cancellation and event-loop yields between batches.
 */
export async function forEachBatch(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  run: RunOptions,
  capture: number[],
  opts: PassOptions,
  visit: (from: number, n: number, captured: Map<number, Float32Array>, logits: Float32Array) => void,
): Promise<void> {
  for (let s = 0; s < idx.length; s += opts.batchSize) {
    checkCancel(opts.signal);
    const n = Math.min(opts.batchSize, idx.length - s);
    const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
    let out: ReturnType<Executor['run']>;
    try {
      out = ex.run(new Map([[ex.graph.input, x]]), 0, run, capture);
    } finally {
      x.dispose();
    }
    visit(s, n, out.captured, out.logits);
    opts.onProgress?.((s + n) / idx.length, `${s + n}/${idx.length} samples`);
    await tick();
  }
}

export async function profileActivations(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  opts: PassOptions & {
    reservoir: number;
    seed: number;
    run?: RunOptions;
    only?: number[];
    /** Also keep per-channel ranges and samples (for per-channel fits; default true). */
    channels?: boolean;
  },
): Promise<Map<number, ValueStats>> {
  const g = ex.graph;
  const acts = opts.only ?? activationNodes(g).map((n) => n.id);
  const inputs = acts.map((a) => g.nodes[a].inputs[0]);
  const stats = new Map(acts.map((a, k) => [a, new StreamingStats(opts.reservoir, opts.seed + 7919 * (k + 1))]));
  const chans = new Map(
    opts.channels === false
      ? []
      : acts.map((a, k) => {
          const shape = g.nodes[a].shape;
          return [a, new ChannelStats(shape[shape.length - 1], CHANNEL_RESERVOIR, opts.seed + 104729 * (k + 1))];
        }),
  );
  await forEachBatch(
    ex,
    ds,
    idx,
    opts.run ?? {},
    inputs,
    { ...opts, onProgress: (f, m) => opts.onProgress?.(f, `profiled ${m}`) },
    (_s, _n, captured) => {
      acts.forEach((a, k) => {
        stats.get(a)!.add(captured.get(inputs[k])!);
        chans.get(a)?.add(captured.get(inputs[k])!);
      });
    },
  );
  // The original model with finite weights and data (both checked at loading) can still overflow
  // float32; every statistic after that would be nonsense, so stop at the first layer it reaches.
  for (const a of acts) {
    const bad = stats.get(a)!.nonFiniteCount;
    if (bad) {
      throw new UserError(
        'MODEL_NONFINITE',
        `the original model's values reaching ${g.nodes[a].name} are not finite (${bad} NaN or infinite values on the calibration data)`,
        'check the input preprocessing (--input-scale, --input-mean/--input-std) the model was trained with, and that its weights are the trained ones',
      );
    }
  }
  return new Map([...stats].map(([a, st]) => [a, { ...st.result(), channels: chans.get(a)?.result() }]));
}

export interface Scores {
  accuracy: number;
  agreement: number;
}

/**
 * The held-out samples' values at chosen cuts (activations), their labels and the original
 * model's predictions: a measurement of an approximated model re-runs only the network from the
 * first approximated activation on. Only the cuts asked for are kept: a deep network's values at
 * every activation would take megabytes per image.
 */
export class HeldoutCache {
  readonly ex: Executor;
  readonly count: number;
  /** Values of live nodes, batch-major: count x per-sample size. */
  readonly values = new Map<number, Float32Array>();
  /** Original model's top-1 predictions. */
  readonly reference: Int32Array;
  readonly labels: Int32Array | null;
  readonly batchSize: number;

  private constructor(ex: Executor, count: number, labels: Int32Array | null, batchSize: number) {
    this.ex = ex;
    this.count = count;
    this.reference = new Int32Array(count);
    this.labels = labels;
    this.batchSize = batchSize;
  }

  /** Runs the original model over the held-out samples once, keeping every value the `cuts` need. */
  static async build(
    ex: Executor,
    ds: Dataset,
    idx: Int32Array,
    opts: PassOptions & { cuts: number[] },
  ): Promise<HeldoutCache> {
    const g = ex.graph;
    const live = new Set<number>();
    for (const c of opts.cuts) for (const id of liveAt(g, c)) live.add(id);
    live.delete(g.output);
    const labels = ds.labels ? Int32Array.from(idx, (i) => ds.labels![i]) : null;
    const cache = new HeldoutCache(ex, idx.length, labels, opts.batchSize);
    for (const id of live) cache.values.set(id, new Float32Array(idx.length * size(g.nodes[id].shape)));
    await forEachBatch(
      ex,
      ds,
      idx,
      {},
      [...live],
      { ...opts, onProgress: (f, m) => opts.onProgress?.(f, `cached held-out ${m}`) },
      (s, n, captured, logits) => {
        for (const id of live) cache.values.get(id)!.set(captured.get(id)!, s * size(g.nodes[id].shape));
        argmaxInto(logits, n, cache.reference, s);
      },
    );
    return cache;
  }

  /** Accuracy of the original model (against labels; 1 without labels, by definition). */
  baseline(): Scores {
    return this.score(this.reference);
  }

  score(pred: Int32Array): Scores {
    let agree = 0;
    let correct = 0;
    for (let i = 0; i < this.count; i++) {
      if (pred[i] === this.reference[i]) agree++;
      if (this.labels && pred[i] === this.labels[i]) correct++;
    }
    const agreement = agree / this.count;
    return { accuracy: this.labels ? correct / this.count : agreement, agreement };
  }

  /**
   * Top-1 predictions when the network runs from node `cut` (a cut the cache was built for)
   * onward with `run`'s replacements, every earlier value taken from the cache. Each batch's
   * `capture`d values and logits go to `visit` (nothing of the size of the data is kept).
   */
  async predictFrom(
    cut: number,
    run: RunOptions,
    signal?: AbortSignal,
    capture: number[] = [],
    visit?: (from: number, n: number, captured: Map<number, Float32Array>, logits: Float32Array) => void,
  ): Promise<Int32Array> {
    const g = this.ex.graph;
    const live = liveAt(g, cut);
    const pred = new Int32Array(this.count);
    for (let s = 0; s < this.count; s += this.batchSize) {
      checkCancel(signal);
      const n = Math.min(this.batchSize, this.count - s);
      const given = new Map<number, tf.Tensor>();
      for (const id of live) {
        const vals = this.values.get(id);
        if (!vals) throw new Error(`held-out cache has no values of ${g.nodes[id].name}: build it with this cut`);
        const per = size(g.nodes[id].shape);
        given.set(id, tf.tensor(vals.subarray(s * per, (s + n) * per), [n, ...g.nodes[id].shape]));
      }
      let out: ReturnType<Executor['run']>;
      try {
        out = this.ex.run(given, cut, run, capture);
      } finally {
        given.forEach((t) => t.dispose());
      }
      argmaxInto(out.logits, n, pred, s);
      visit?.(s, n, out.captured, out.logits);
      if ((s / this.batchSize) % 4 === 3) await tick();
    }
    return pred;
  }
}

export function argmaxInto(logits: Float32Array, n: number, out: Int32Array, offset: number): void {
  const k = logits.length / n;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (logits[i * k + j] > logits[i * k + best]) best = j;
    // A non-finite logit (a polynomial blown up outside its interval) counts as a wrong answer.
    out[offset + i] = Number.isFinite(logits[i * k + best]) ? best : -1;
  }
}

/** Top-1 predictions of a full run (from the input) over samples `idx`, e.g. with max pooling swapped. */
export async function predictFull(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  run: RunOptions,
  opts: PassOptions,
): Promise<Int32Array> {
  const pred = new Int32Array(idx.length);
  await forEachBatch(ex, ds, idx, run, [], opts, (s, n, _c, logits) => argmaxInto(logits, n, pred, s));
  return pred;
}

/** Values of nodes `ids` for samples `idx` (batch-major), with `run`'s replacements upstream, in one pass. */
export async function captureValues(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  ids: number[],
  run: RunOptions,
  opts: PassOptions,
): Promise<Map<number, Float32Array>> {
  const per = ids.map((id) => size(ex.graph.nodes[id].shape));
  const out = new Map(ids.map((id, k) => [id, new Float32Array(idx.length * per[k])]));
  await forEachBatch(ex, ds, idx, run, ids, opts, (s, _n, captured) =>
    ids.forEach((id, k) => out.get(id)!.set(captured.get(id)!, s * per[k])),
  );
  return out;
}

/**
 * Per-channel (last axis) means of nodes `ids` over samples `idx`, streamed batch by batch (the
 * values themselves are never held: at ResNet sizes they would not fit).
 */
export async function channelMeans(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  ids: number[],
  run: RunOptions,
  opts: PassOptions,
): Promise<Map<number, Float64Array>> {
  const g = ex.graph;
  const sums = new Map(ids.map((id) => [id, new Float64Array(g.nodes[id].shape[g.nodes[id].shape.length - 1])]));
  await forEachBatch(ex, ds, idx, run, ids, opts, (_s, _n, captured) => {
    for (const id of ids) {
      const v = captured.get(id)!;
      const sum = sums.get(id)!;
      const C = sum.length;
      for (let i = 0; i < v.length; i++) sum[i % C] += v[i];
    }
  });
  for (const id of ids) {
    const sum = sums.get(id)!;
    const n = (idx.length * size(g.nodes[id].shape)) / sum.length;
    for (let c = 0; c < sum.length; c++) sum[c] /= n;
  }
  return sums;
}

/**
 * A walk through the network cut by cut over a fixed set of samples: the values live at the
 * current cut are held for all samples, and `advance` runs only the segment up to the next cut.
 * A pass that must decide something at each activation before the later ones see its effect
 * (the propagation refit) then costs one forward pass in all, not one per activation, and holds
 * only one cut's values at a time.
 */
export class Sweep {
  private cut = 0;
  private live = new Map<number, Float32Array>();

  constructor(
    private readonly ex: Executor,
    ds: Dataset,
    private readonly idx: Int32Array,
    private readonly batchSize: number,
    private readonly signal?: AbortSignal,
  ) {
    this.live.set(ex.graph.input, gather(ds, idx, 0, idx.length));
  }

  /**
   * Runs the network from the current cut up to node `to` (not included) with `run`'s
   * replacements, makes `to` the new cut, and returns the values of `to`'s inputs.
   */
  async advance(to: number, run: RunOptions): Promise<Float32Array[]> {
    const g = this.ex.graph;
    const need = liveAt(g, to);
    const per = (id: number) => size(g.nodes[id].shape);
    const next = new Map(need.map((id) => [id, this.live.get(id) ?? new Float32Array(this.idx.length * per(id))]));
    const compute = need.filter((id) => !this.live.has(id));
    if (compute.length) {
      const from = this.cut;
      const have = [...this.live.keys()];
      for (let s = 0; s < this.idx.length; s += this.batchSize) {
        checkCancel(this.signal);
        const n = Math.min(this.batchSize, this.idx.length - s);
        const given = new Map(
          have.map((id) => [
            id,
            tf.tensor(this.live.get(id)!.subarray(s * per(id), (s + n) * per(id)), [n, ...g.nodes[id].shape]),
          ]),
        );
        let captured: Map<number, Float32Array>;
        try {
          captured = this.ex.runSegment(given, from, to - 1, run, compute);
        } finally {
          given.forEach((t) => t.dispose());
        }
        for (const id of compute) next.get(id)!.set(captured.get(id)!, s * per(id));
        if ((s / this.batchSize) % 4 === 3) await tick();
      }
    }
    this.live = next;
    this.cut = to;
    return g.nodes[to].inputs.map((id) => next.get(id)!);
  }
}
