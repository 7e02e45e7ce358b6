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
import { CancelledError } from '../errors';
import { Dataset } from '../data/read';
import { Executor, RunOptions } from '../model/execute';
import { tf } from '../model/backend';
import { activationNodes, liveAt, size } from '../model/graph';
import { CHANNEL_RESERVOIR, ChannelStats, StreamingStats, ValueStats } from './stats';

export interface Progress { (fraction: number, message: string): void }

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

export async function profileActivations(ex: Executor, ds: Dataset, idx: Int32Array, opts: PassOptions & {
  reservoir: number; seed: number; run?: RunOptions; only?: number[];
  /** Also keep per-channel ranges and samples (for per-channel fits; default true). */
  channels?: boolean;
}): Promise<Map<number, ValueStats>> {
  const g = ex.graph;
  const acts = (opts.only ?? activationNodes(g).map((n) => n.id));
  const inputs = acts.map((a) => g.nodes[a].inputs[0]);
  const stats = new Map(acts.map((a, k) => [a, new StreamingStats(opts.reservoir, opts.seed + 7919 * (k + 1))]));
  const chans = new Map(opts.channels === false ? [] : acts.map((a, k) => {
    const shape = g.nodes[a].shape;
    return [a, new ChannelStats(shape[shape.length - 1], CHANNEL_RESERVOIR, opts.seed + 104729 * (k + 1))];
  }));
  for (let s = 0; s < idx.length; s += opts.batchSize) {
    checkCancel(opts.signal);
    const n = Math.min(opts.batchSize, idx.length - s);
    const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
    const { captured } = ex.run(new Map([[g.input, x]]), 0, opts.run ?? {}, inputs);
    x.dispose();
    acts.forEach((a, k) => { stats.get(a)!.add(captured.get(inputs[k])!); chans.get(a)?.add(captured.get(inputs[k])!); });
    opts.onProgress?.((s + n) / idx.length, `profiled ${s + n}/${idx.length} samples`);
    await tick();
  }
  return new Map([...stats].map(([a, st]) => [a, { ...st.result(), channels: chans.get(a)?.result() }]));
}

export interface Scores { accuracy: number; agreement: number }

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

  /** Runs the original model over the held-out samples once, keeping every value a later cut needs. */
  static async build(ex: Executor, ds: Dataset, idx: Int32Array, opts: PassOptions): Promise<HeldoutCache> {
    const g = ex.graph;
    const live = new Set<number>();
    for (const a of activationNodes(g)) for (const id of liveAt(g, a.id)) live.add(id);
    live.delete(g.output);
    const labels = ds.labels ? Int32Array.from(idx, (i) => ds.labels![i]) : null;
    const cache = new HeldoutCache(ex, idx.length, labels, opts.batchSize);
    for (const id of live) cache.values.set(id, new Float32Array(idx.length * size(g.nodes[id].shape)));
    for (let s = 0; s < idx.length; s += opts.batchSize) {
      checkCancel(opts.signal);
      const n = Math.min(opts.batchSize, idx.length - s);
      const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
      const { logits, captured } = ex.run(new Map([[g.input, x]]), 0, {}, live);
      x.dispose();
      for (const id of live) cache.values.get(id)!.set(captured.get(id)!, s * size(g.nodes[id].shape));
      argmaxInto(logits, n, cache.reference, s);
      opts.onProgress?.((s + n) / idx.length, `cached held-out ${s + n}/${idx.length}`);
      await tick();
    }
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
   * Top-1 predictions when the network runs from node `cut` (an activation) onward with `run`'s
   * replacements, every earlier value taken from the cache. Also returns, when asked, the values
   * reaching the `capture` nodes.
   */
  async predictFrom(cut: number, run: RunOptions, signal?: AbortSignal, capture: number[] = []): Promise<{ pred: Int32Array; captured: Map<number, Float32Array> }> {
    const g = this.ex.graph;
    const live = liveAt(g, cut);
    const pred = new Int32Array(this.count);
    const captured = new Map(capture.map((id) => [id, new Float32Array(this.count * size(g.nodes[id].shape))]));
    for (let s = 0; s < this.count; s += this.batchSize) {
      checkCancel(signal);
      const n = Math.min(this.batchSize, this.count - s);
      const given = new Map<number, tf.Tensor>();
      for (const id of live) {
        const per = size(g.nodes[id].shape);
        given.set(id, tf.tensor(this.values.get(id)!.subarray(s * per, (s + n) * per), [n, ...g.nodes[id].shape]));
      }
      const out = this.ex.run(given, cut, run, capture);
      given.forEach((t) => t.dispose());
      argmaxInto(out.logits, n, pred, s);
      for (const id of capture) captured.get(id)!.set(out.captured.get(id)!, s * size(g.nodes[id].shape));
      if ((s / this.batchSize) % 4 === 3) await tick();
    }
    return { pred, captured };
  }
}

function argmaxInto(logits: Float32Array, n: number, out: Int32Array, offset: number): void {
  const k = logits.length / n;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (logits[i * k + j] > logits[i * k + best]) best = j;
    // A non-finite logit (a polynomial blown up outside its interval) counts as a wrong answer.
    out[offset + i] = Number.isFinite(logits[i * k + best]) ? best : -1;
  }
}

/** Top-1 predictions of a full run (from the input) over samples `idx`, e.g. with max pooling swapped. */
export async function predictFull(ex: Executor, ds: Dataset, idx: Int32Array, run: RunOptions, opts: PassOptions): Promise<Int32Array> {
  const pred = new Int32Array(idx.length);
  for (let s = 0; s < idx.length; s += opts.batchSize) {
    checkCancel(opts.signal);
    const n = Math.min(opts.batchSize, idx.length - s);
    const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
    const { logits } = ex.run(new Map([[ex.graph.input, x]]), 0, run);
    x.dispose();
    argmaxInto(logits, n, pred, s);
    await tick();
  }
  return pred;
}

/** Values of nodes `ids` for samples `idx` (batch-major), with `run`'s replacements upstream, in one pass. */
export async function captureValues(ex: Executor, ds: Dataset, idx: Int32Array, ids: number[], run: RunOptions, opts: PassOptions): Promise<Map<number, Float32Array>> {
  const per = ids.map((id) => size(ex.graph.nodes[id].shape));
  const out = new Map(ids.map((id, k) => [id, new Float32Array(idx.length * per[k])]));
  for (let s = 0; s < idx.length; s += opts.batchSize) {
    checkCancel(opts.signal);
    const n = Math.min(opts.batchSize, idx.length - s);
    const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
    const { captured } = ex.run(new Map([[ex.graph.input, x]]), 0, run, ids);
    x.dispose();
    ids.forEach((id, k) => out.get(id)!.set(captured.get(id)!, s * per[k]));
    await tick();
  }
  return out;
}
