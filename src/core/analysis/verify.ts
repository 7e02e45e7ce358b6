/**
 * The verify stage: an approximated model measured on held-out data, exactly (no first-order
 * estimate): its accuracy, and for every activation how far the values reaching it stray from
 * its interval and how large any value gets. Under CKKS a value is held as round(x * scale)
 * modulo the ciphertext modulus; at the last level that is the first 60-bit prime, so with a
 * 40-bit scale any |x| >= 2^19 wraps and corrupts every image packed in the same ciphertext.
 * A choice whose held-out values exceed that, or are not finite, is not safe, whatever its
 * accuracy.
 */
import { Fit, polyOf } from '../fit/fit';
import { Graph, GraphNode, size } from '../model/graph';
import { PolyActivation } from '../numerics/polynomial';
import { SCALE_BITS } from '../he/params';
import { Dataset } from '../data/read';
import { Executor } from '../model/execute';
import { HeldoutCache, PassOptions, argmaxInto, forEachBatch, predictFull } from '../profile/profiler';

/** The largest |x| a CKKS ciphertext at the last level holds: first prime 60 bits, scale 2^40. */
export const VALUE_BOUND = 2 ** (60 - SCALE_BITS - 1);

export interface LayerRange {
  /** Held-out samples with at least one value outside the layer's (or its channel's) interval. */
  samplesOutside: number;
  valuesOutside: number;
  fractionOutside: number;
  /** Range of the values reaching the activation. */
  min: number;
  max: number;
  /** Largest magnitude reaching the activation, and leaving it (the polynomial's output). */
  maxAbsIn: number;
  maxAbsOut: number;
  /** Values that were NaN or infinite (a polynomial blown up upstream): counted, not in the maxima. */
  nonFinite: number;
}

export interface Measurement {
  accuracy: number;
  layers: LayerRange[];
  maxAbsLogit: number;
  /** The largest finite magnitude anywhere: activation inputs and outputs, logits. */
  maxAbs: number;
  /** Every value finite and within VALUE_BOUND (inputs and outputs of activations, logits). */
  safe: boolean;
}

export async function measureHeldout(
  cache: HeldoutCache,
  acts: GraphNode[],
  polys: Map<number, PolyActivation>,
  signal?: AbortSignal,
): Promise<Measurement> {
  if (!acts.length) return { accuracy: cache.baseline().accuracy, layers: [], maxAbsLogit: 0, maxAbs: 0, safe: true };
  const layers: LayerRange[] = acts.map(() => ({
    samplesOutside: 0,
    valuesOutside: 0,
    fractionOutside: 0,
    min: Infinity,
    max: -Infinity,
    maxAbsIn: 0,
    maxAbsOut: 0,
    nonFinite: 0,
  }));
  let maxAbsLogit = 0;
  let finite = true;
  // The statistics ride on the polynomial evaluation's own values (RunOptions.inspect): copying
  // every activation's inputs and outputs out again to check them cost more than the forward pass.
  const index = new Map(acts.map((a, k) => [a.id, k]));
  const bounds = acts.map((a) => {
    const p = polys.get(a.id)!;
    const C = a.shape[a.shape.length - 1];
    const ivs = p.channels?.intervals ?? new Array(C).fill({ a: p.a, b: p.b });
    return { lo: Float64Array.from(ivs, (iv) => iv.a), hi: Float64Array.from(ivs, (iv) => iv.b) };
  });
  const inspect = (node: number, x: Float32Array, y: Float32Array, C: number) => {
    const k = index.get(node)!;
    const r = layers[k];
    const { lo, hi } = bounds[k];
    const per = size(acts[k].shape);
    let mn = r.min;
    let mx = r.max;
    let out = r.maxAbsOut;
    let bad = 0;
    for (let i = 0; i < x.length; i += per) {
      let o = 0;
      for (let j = i, end = i + per; j < end; j += C) {
        for (let c = 0; c < C; c++) {
          const v = x[j + c];
          const w = y[j + c];
          if (!(v >= lo[c] && v <= hi[c])) o++;
          // v - v is NaN exactly when v is NaN or infinite: counted, kept out of the extremes.
          if (v - v !== 0 || w - w !== 0) {
            bad++;
            continue;
          }
          if (v < mn) mn = v;
          if (v > mx) mx = v;
          if (w > out) out = w;
          else if (-w > out) out = -w;
        }
      }
      r.valuesOutside += o;
      if (o) r.samplesOutside++;
    }
    r.min = mn;
    r.max = mx;
    r.maxAbsOut = out;
    r.maxAbsIn = Math.max(Math.abs(mn), Math.abs(mx));
    if (bad) {
      r.nonFinite += bad;
      finite = false;
    }
  };
  const pred = await cache.predictFrom(acts[0].id, { replace: polys, inspect }, signal, [], (_s, _n, _c, logits) => {
    for (const v of logits) {
      const m = Math.abs(v);
      if (!(m <= maxAbsLogit)) {
        if (!Number.isFinite(m)) finite = false;
        else maxAbsLogit = m;
      }
    }
  });
  for (const [k, a] of acts.entries())
    layers[k].fractionOutside = layers[k].valuesOutside / (cache.count * size(a.shape));
  const maxAbs = Math.max(maxAbsLogit, ...layers.map((l) => Math.max(l.maxAbsIn, l.maxAbsOut)));
  return { accuracy: cache.score(pred).accuracy, layers, maxAbsLogit, maxAbs, safe: finite && maxAbs < VALUE_BOUND };
}

/**
 * The exact drop (percentage points) of a choice's fits on a few calibration samples: the
 * sensitivity screen's samples, against what was right there in the original model. A forward
 * pass over those samples, not the held-out set: the search uses it to test choices cheaply
 * before measuring the promising ones on held-out data.
 */
export async function measureSubset(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  right: Uint8Array,
  target: Int32Array,
  fits: Map<number, Fit>,
  opts: PassOptions,
): Promise<number> {
  const replace = new Map([...fits].map(([id, f]) => [id, polyOf(f)]));
  const pred = new Int32Array(idx.length);
  await forEachBatch(ex, ds, idx, { replace }, [], opts, (s, n, _c, logits) => argmaxInto(logits, n, pred, s));
  let lost = 0;
  for (let i = 0; i < idx.length; i++) lost += right[i] - Number(pred[i] === target[i]);
  return (100 * lost) / idx.length;
}

/**
 * The usual substitute for max pooling under CKKS, measured: average pooling in place of every
 * max pooling of the model as its file describes it (`source`, before the max trees), with the
 * chosen polynomials for every other activation (matched by name), on the held-out samples.
 * The analysis's own figures include the max trees' polynomials; this is what they are
 * compared with.
 */
export async function measureAveragePooling(
  cache: HeldoutCache,
  source: Graph,
  ds: Dataset,
  idx: Int32Array,
  polys: Map<number, PolyActivation>,
  opts: PassOptions,
): Promise<{ accuracy: number; drop: number }> {
  const g = cache.ex.graph;
  const byName = new Map(source.nodes.map((n) => [n.name, n.id]));
  const replace = new Map<number, PolyActivation>();
  for (const [id, p] of polys) {
    const n = g.nodes[id];
    if (n.spec.op === 'activation' && n.spec.maxTree) continue;
    const at = byName.get(n.name);
    if (at !== undefined) replace.set(at, p);
  }
  const ex = new Executor(source);
  try {
    const pred = await predictFull(ex, ds, idx, { replace, poolAsAvg: true }, opts);
    const accuracy = cache.score(pred).accuracy;
    return { accuracy, drop: 100 * (cache.baseline().accuracy - accuracy) };
  } finally {
    ex.dispose();
  }
}

/**
 * measureHeldout for a model whose weights differ from the cached original's (fine-tuned): its
 * own pass over the held-out samples up to the first activation, then the same measurement.
 * Accuracy is against the labels, which the caller needs (the cache's reference is this model's).
 */
export async function measureModel(
  g: Graph,
  ds: Dataset,
  idx: Int32Array,
  acts: GraphNode[],
  polys: Map<number, PolyActivation>,
  opts: PassOptions,
): Promise<Measurement> {
  const ex = new Executor(g);
  try {
    const cache = await HeldoutCache.build(ex, ds, idx, { ...opts, cuts: acts.length ? [acts[0].id] : [] });
    return await measureHeldout(cache, acts, polys, opts.signal);
  } finally {
    ex.dispose();
  }
}
