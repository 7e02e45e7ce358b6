/**
 * The refine stage: variants of one choice of degrees, each measured by the verify stage and
 * the best kept. The degrees (hence the levels) never change here.
 *
 * - per-layer: one polynomial per layer instead of one per channel;
 * - propagation: walking the activations in order with the earlier ones already approximated,
 *   each layer is refitted to the data that really reaches it (errors propagate), on an interval
 *   widened to cover those values: also what keeps a deep network's values inside its intervals;
 * - propagation+mean-shift: the same, and each layer's per-channel mean error subtracted (a
 *   constant that folds into the next linear layer's bias at no level cost);
 * - tuned: the best variant's coefficients tuned together (fit/tune.ts).
 * Both propagation variants cost one forward pass over the refinement samples (profile/Sweep).
 */
import { Dataset } from '../data/read';
import { Fit, assessChannels, assessFit, chooseInterval, fitDataGuidedAll, polyOf } from '../fit/fit';
import { polyValues } from '../numerics/polynomial';
import { TUNE_DEFAULTS, tuneCoefficients } from '../fit/tune';
import { Executor, PolyActivation } from '../model/execute';
import { Graph, GraphNode, actSpec } from '../model/graph';
import { Interval } from '../numerics/chebyshev';
import { Progress, Sweep } from '../profile/profiler';
import { CHANNEL_RESERVOIR, ChannelStats, ValueStats } from '../profile/stats';
import { Rng } from '../rng';
import type { Refinement } from '../report';

export interface Variant {
  name: Refinement['name'];
  description: string;
  fits: Map<number, Fit>;
  offsets: Map<number, Float32Array | null>;
}

const union = (p: Interval, q: Interval): Interval => ({ a: Math.min(p.a, q.a), b: Math.max(p.b, q.b) });

/** Min/max and a seeded uniform random sample (with replacement) of captured values, enough to refit. */
function sampleStats(vals: Float32Array, k: number, seed: number): ValueStats {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < vals.length; i++) {
    if (vals[i] < min) min = vals[i];
    if (vals[i] > max) max = vals[i];
  }
  const n = Math.min(k, vals.length);
  const sample = new Float32Array(n);
  // Random positions, not a stride: a stride that divides the per-sample size would pick the
  // same pixel and channel of every sample.
  const rng = new Rng(seed);
  for (let i = 0; i < n; i++) sample[i] = vals[rng.int(vals.length)];
  return {
    count: vals.length,
    min,
    max,
    mean: 0,
    std: 0,
    percentiles: {},
    histogram: { lo: min, width: 0, counts: [] },
    sample,
  };
}

/** Per-channel (last axis) means of values laid out channels last. */
function perChannelMeans(vals: Float32Array, C: number): Float64Array {
  const sum = new Float64Array(C);
  for (let i = 0; i < vals.length; i += C) for (let c = 0; c < C; c++) sum[c] += vals[i + c];
  const n = vals.length / C;
  for (let c = 0; c < C; c++) sum[c] /= n;
  return sum;
}

/** A layer refitted, at its degree, to the values that reach it; intervals only ever widen. */
function refit(
  a: GraphNode,
  fit: Fit,
  vals: Float32Array,
  margin: number,
  o: { floor: number; reservoir: number; seed: number },
): Fit {
  const act = actSpec(a);
  const st = sampleStats(vals, o.reservoir, o.seed);
  const iv = union(chooseInterval(st, margin, act), fit.interval);
  const c = fitDataGuidedAll(act, st.sample, iv, fit.degree, o.floor)[fit.degree];
  let out: Fit = { ...fit, interval: iv, coeffs: Array.from(c), ...assessFit(act, c, iv, st.sample, st) };
  if (fit.channels) {
    const cs = new ChannelStats(a.shape[a.shape.length - 1], CHANNEL_RESERVOIR, o.seed);
    cs.add(vals);
    const ch = cs.result();
    const intervals = fit.channels.intervals.map((old, k) =>
      union(chooseInterval({ min: ch.min[k], max: ch.max[k] }, margin, act), old),
    );
    const channels = {
      intervals,
      coeffs: ch.samples.map((smp, k) =>
        Array.from(fitDataGuidedAll(act, smp, intervals[k], fit.degree, o.floor)[fit.degree]),
      ),
    };
    out = { ...out, channels, ...assessChannels(act, channels, ch) };
  }
  return out;
}

export interface PropagateOptions {
  margins: number[];
  floor: number;
  batchSize: number;
  reservoir: number;
  seed: number;
  /** Also subtract each layer's per-channel mean error against `origMeans`. */
  shift: boolean;
  signal?: AbortSignal;
}

/**
 * Walks the activations in order with the earlier ones already approximated (and corrected), so
 * each layer sees the data that really reaches it in the approximated network, in one pass.
 */
export async function propagate(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  acts: GraphNode[],
  chosen: Map<number, Fit>,
  origMeans: Map<number, Float64Array>,
  o: PropagateOptions,
): Promise<{ fits: Map<number, Fit>; offsets: Map<number, Float32Array | null> }> {
  const fits = new Map<number, Fit>();
  const offsets = new Map<number, Float32Array | null>();
  const replace = new Map<number, PolyActivation>();
  const sweep = new Sweep(ex, ds, idx, o.batchSize, o.signal);
  for (const [k, a] of acts.entries()) {
    const [vals] = await sweep.advance(a.id, { replace });
    const fit = refit(a, chosen.get(a.id)!, vals, o.margins[k], o);
    let off: Float32Array | null = null;
    if (o.shift) {
      // The polynomial's outputs by the interleaved evaluator (polyValues), not point by point.
      const C = a.shape[a.shape.length - 1];
      const approx = perChannelMeans(polyValues(vals, C, polyOf(fit)), C);
      const orig = origMeans.get(a.id)!;
      off = Float32Array.from(approx, (v, c) => v - orig[c]);
    }
    fits.set(a.id, fit);
    offsets.set(a.id, off);
    replace.set(a.id, polyOf(fit, off));
  }
  return { fits, offsets };
}

/** The same degrees with one polynomial per layer: kept only if it measures better. */
export function perLayerVariant(acts: GraphNode[], chosen: Map<number, Fit>, stats: Map<number, ValueStats>): Variant {
  const fits = new Map(
    acts.map((a) => {
      const f = chosen.get(a.id)!;
      const st = stats.get(a.id)!;
      return [a.id, { ...f, channels: undefined, ...assessFit(actSpec(a), f.coeffs, f.interval, st.sample, st) }];
    }),
  );
  return {
    name: 'per-layer',
    description: 'one polynomial per layer instead of one per channel',
    fits,
    offsets: new Map(),
  };
}

/** Multiply-accumulates of the linear layers for one sample: what a training step costs, roughly. */
export function graphMacs(g: Graph): number {
  let macs = 0;
  for (const n of g.nodes) {
    const s = n.spec;
    if (s.op === 'dense')
      macs +=
        s.kernelShape[0] *
        s.kernelShape[1] *
        (n.shape.length > 1 ? n.shape.slice(0, -1).reduce((p, q) => p * q, 1) : 1);
    else if (s.op === 'conv2d')
      macs += n.shape[0] * n.shape[1] * s.kernelShape[0] * s.kernelShape[1] * s.kernelShape[2] * s.kernelShape[3];
  }
  return macs;
}

/**
 * How much coefficient tuning a model gets: TUNE_DEFAULTS.epochs over the refinement samples on
 * the MNIST examples, less where that costs more. The work (samples x epochs x multiply-accumulates
 * per sample) is capped at four times what 8 epochs of 2,048 samples cost on a 0.5 M-MAC network
 * (the MNIST CNN's order): first fewer epochs, down to one, then fewer samples, down to 256. On
 * ResNet-20 a full epoch took a large share of the analysis and was never the variant kept
 * (README, "Measurements behind the defaults").
 */
export function tuneBudget(g: Graph, samples: number): { epochs: number; samples: number } {
  const cap = 4 * TUNE_DEFAULTS.epochs * 2048 * 5e5;
  const macs = Math.max(1, graphMacs(g));
  const epochs = Math.max(1, Math.min(TUNE_DEFAULTS.epochs, Math.floor(cap / (samples * macs))));
  return { epochs, samples: epochs > 1 ? samples : Math.min(samples, Math.max(256, Math.floor(cap / macs))) };
}

export interface TuneVariantOptions {
  labelWeight: number;
  seed: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

/** The `from` variant's coefficients tuned together (same degrees, intervals and offsets). */
export async function tunedVariant(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  acts: GraphNode[],
  from: Variant,
  stats: Map<number, ValueStats>,
  o: TuneVariantOptions,
): Promise<Variant> {
  const { epochs, samples } = tuneBudget(ex.graph, idx.length);
  const fits = await tuneCoefficients(ex, ds, idx.subarray(0, samples), acts, from.fits, from.offsets, stats, {
    ...TUNE_DEFAULTS,
    epochs,
    labelWeight: o.labelWeight,
    seed: o.seed,
    signal: o.signal,
    onProgress: o.onProgress,
  });
  const labels =
    ds.labels && o.labelWeight > 0
      ? `, mixed with the cross-entropy against the labels at weight ${o.labelWeight}`
      : '';
  return {
    name: 'tuned',
    description: `the ${from.name} fits' coefficients tuned together so that the approximated model's outputs match the original's on ${samples} calibration samples (distillation${labels}; ${epochs} epoch${epochs === 1 ? '' : 's'}; same degrees and intervals)`,
    fits,
    offsets: from.offsets,
  };
}

export interface RefineContext {
  ex: Executor;
  ds: Dataset;
  /** The refinement samples (calibration). */
  idx: Int32Array;
  acts: GraphNode[];
  stats: Map<number, ValueStats>;
  margins: number[];
  /** The original model's per-channel mean output of each activation (for the mean shift). */
  origMeans: Map<number, Float64Array>;
  floor: number;
  batchSize: number;
  reservoir: number;
  seed: number;
  tune: boolean;
  labelWeight: number;
  signal?: AbortSignal;
  onTuneProgress?: Progress;
  /** Called around each variant's construction (the refine stage's time). */
  timed: <T>(f: () => Promise<T>) => Promise<T>;
}

/**
 * The variants of one choice, plain fits first, each produced when the previous one has been
 * measured (`measured` holds what was, so tuning starts from the best safe one).
 */
export function refinementVariants(c: RefineContext) {
  return async function* variants(
    plain: Variant,
    measured: (Variant & { drop: number; safe: boolean })[],
  ): AsyncGenerator<Variant> {
    yield plain;
    if (!c.acts.length) return;
    if ([...plain.fits.values()].some((f) => f.channels)) yield perLayerVariant(c.acts, plain.fits, c.stats);
    const po = {
      margins: c.margins,
      floor: c.floor,
      batchSize: c.batchSize,
      reservoir: c.reservoir,
      seed: c.seed,
      signal: c.signal,
    };
    yield await c.timed(async () => ({
      name: 'propagation' as const,
      description:
        'each layer refitted, in order, to the data reaching it when the earlier layers are already approximated (intervals widened to cover it)',
      ...(await propagate(c.ex, c.ds, c.idx, c.acts, plain.fits, c.origMeans, { ...po, shift: false })),
    }));
    yield await c.timed(async () => ({
      name: 'propagation+mean-shift' as const,
      description: "the same, and each channel's mean error subtracted (folds into the next layer's bias)",
      ...(await propagate(c.ex, c.ds, c.idx, c.acts, plain.fits, c.origMeans, { ...po, shift: true })),
    }));
    if (c.tune) {
      const safe = measured.filter((v) => v.safe);
      const from = (safe.length ? safe : measured).reduce((b, v) => (v.drop < b.drop - 1e-9 ? v : b));
      yield await c.timed(() =>
        tunedVariant(c.ex, c.ds, c.idx, c.acts, from, c.stats, {
          labelWeight: c.labelWeight,
          seed: c.seed,
          signal: c.signal,
          onProgress: c.onTuneProgress,
        }),
      );
    }
  };
}
