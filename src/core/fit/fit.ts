/**
 * Fitting one activation's polynomial, three ways, all in the Chebyshev basis on [a, b]:
 *
 * - 'data'   : intermediate-data-guided weighted least squares (Nam et al., SNU 2024; OLA, Lee et
 *              al., arXiv 2310.10349): minimise the squared error weighted by the empirical
 *              distribution of the values that really reach the activation (a uniform reservoir
 *              sample), plus a small weight `floor` spread over Chebyshev nodes of [a, b] so that the
 *              polynomial stays bounded on the whole interval, where rare held-out values may land.
 * - 'uniform': Chebyshev interpolation over [a, b] (Orion; OpenFHE EvalChebyshevFunction).
 * - 'minimax': best uniform approximation on [a, b] by Remez exchange.
 */
import { ActivationSpec, activationFn, breakpoints, isEven } from '../numerics/activations';
import { Interval, chebInterpolate, chebpts1, chebval } from '../numerics/chebyshev';
import { chebfitWeightedAll } from '../numerics/lstsq';
import { remez } from '../numerics/remez';
import { ChannelSamples, ValueStats } from '../profile/stats';
import { ChannelFits, PolyActivation } from '../numerics/polynomial';

export type { ChannelFits };

export type FitMethod = 'data' | 'uniform' | 'minimax';

export interface FitQuality {
  /** RMS error over the recorded data (the empirical distribution). */
  rmsData: number;
  /** Max |p - f| over the observed range [min, max]. */
  maxErrObserved: number;
  /** Max |p| over the whole interval [a, b]. */
  maxAbsInterval: number;
}

export interface Fit extends FitQuality {
  method: FitMethod;
  degree: number;
  interval: Interval;
  /** Chebyshev coefficients, increasing degree, in t = (2x - a - b) / (b - a). */
  coeffs: number[];
  /**
   * Per-channel fits (last axis), when the layer is fitted channel by channel: what the model then
   * uses. `interval`/`coeffs` stay the layer-wide fit of the same degree (for plots and summaries).
   */
  channels?: ChannelFits;
}

/**
 * The fitting interval: the observed [min, max] widened by `margin` x (max - min) on each side,
 * so that held-out values slightly beyond the calibration range stay inside. For an even
 * activation (|x|, isEven) the interval is symmetric about 0, so that its fit can be even.
 */
export function chooseInterval(
  stats: Pick<ValueStats, 'min' | 'max'>,
  margin: number,
  spec?: ActivationSpec,
): Interval {
  const w = Math.max(stats.max - stats.min, 1e-6);
  const iv = { a: stats.min - margin * w, b: stats.max + margin * w };
  return spec && isEven(spec) ? symmetric(iv) : iv;
}

/** The smallest interval symmetric about 0 that holds `iv`. */
export function symmetric(iv: Interval): Interval {
  const r = Math.max(Math.abs(iv.a), Math.abs(iv.b), 1e-6);
  return { a: -r, b: r };
}

/**
 * The even part of a Chebyshev series on a symmetric interval (T_k is odd for odd k): exact
 * for the fits of an even function, whose odd coefficients are rounding noise.
 */
function evenPart<T extends Float64Array | number[]>(c: T): T {
  for (let k = 1; k < c.length; k += 2) c[k] = 0;
  return c;
}

export function assessFit(
  spec: ActivationSpec,
  coeffs: ArrayLike<number>,
  iv: Interval,
  sample: Float32Array,
  observed: { min: number; max: number },
): FitQuality {
  const f = activationFn(spec);
  let se = 0;
  for (let i = 0; i < sample.length; i++) {
    const e = chebval(sample[i], coeffs, iv) - f(sample[i]);
    se += e * e;
  }
  let maxErr = 0;
  let maxAbs = 0;
  const G = 2000;
  for (let i = 0; i <= G; i++) {
    const xo = observed.min + ((observed.max - observed.min) * i) / G;
    maxErr = Math.max(maxErr, Math.abs(chebval(xo, coeffs, iv) - f(xo)));
    const xi = iv.a + ((iv.b - iv.a) * i) / G;
    maxAbs = Math.max(maxAbs, Math.abs(chebval(xi, coeffs, iv)));
  }
  for (const bp of breakpoints(spec))
    if (bp >= observed.min && bp <= observed.max) maxErr = Math.max(maxErr, Math.abs(chebval(bp, coeffs, iv) - f(bp)));
  return { rmsData: sample.length ? Math.sqrt(se / sample.length) : 0, maxErrObserved: maxErr, maxAbsInterval: maxAbs };
}

/** Data-guided fits of every degree up to maxDeg from one QR factorisation (see lstsq.ts). */
/**
 * Data-guided fits of every degree up to maxDeg from one QR factorisation (see lstsq.ts). An even
 * activation's data is mirrored (each x also as -x, each at half the weight) on its symmetric
 * interval: the weighted least-squares solution is then even, so |a - b| gets the same value
 * whichever operand comes first.
 */
export function fitDataGuidedAll(
  spec: ActivationSpec,
  sample: Float32Array,
  iv: Interval,
  maxDeg: number,
  floor: number,
): Float64Array[] {
  const f = activationFn(spec);
  const even = isEven(spec);
  const M = Math.max(256, 8 * (maxDeg + 1));
  const nodes = chebpts1(M, iv);
  const n = even ? 2 * sample.length : sample.length;
  const xs = new Float64Array(n + M);
  const ys = new Float64Array(n + M);
  const ws = new Float64Array(n + M);
  for (let i = 0; i < n; i++) {
    const x = even && i % 2 ? -sample[i >> 1] : sample[even ? i >> 1 : i];
    xs[i] = x;
    ys[i] = f(x);
    ws[i] = (1 - floor) / n;
  }
  for (let i = 0; i < M; i++) {
    xs[n + i] = nodes[i];
    ys[n + i] = f(nodes[i]);
    ws[n + i] = floor / M;
  }
  const all = chebfitWeightedAll(xs, ys, ws, maxDeg, iv).coeffs;
  return even ? all.map(evenPart) : all;
}

export function fitUniform(spec: ActivationSpec, degree: number, iv: Interval): Float64Array {
  const c = chebInterpolate(activationFn(spec), degree, iv);
  return isEven(spec) ? evenPart(c) : c;
}

export function fitMinimax(spec: ActivationSpec, degree: number, iv: Interval): Float64Array {
  const c = remez(activationFn(spec), degree, iv, { breakpoints: breakpoints(spec), tol: 1e-7 }).coeffs;
  return isEven(spec) ? evenPart(c) : c;
}

/**
 * Fits of each requested degree by one method, with their quality on the recorded data. With
 * `channelMargin` (data-guided only, and only when the stats hold per-channel samples), every
 * channel also gets its own interval and fit (see fitChannelsAll) and the quality figures are
 * those of the per-channel fits.
 */
export function fitDegrees(
  method: FitMethod,
  spec: ActivationSpec,
  stats: ValueStats,
  iv: Interval,
  degrees: number[],
  floor: number,
  channelMargin?: number,
): Fit[] {
  const maxDeg = Math.max(...degrees);
  const all = method === 'data' ? fitDataGuidedAll(spec, stats.sample, iv, maxDeg, floor) : null;
  const ch =
    method === 'data' && channelMargin !== undefined && stats.channels
      ? fitChannelsAll(spec, stats.channels, iv, channelMargin, maxDeg, floor)
      : null;
  return degrees.map((d) => {
    const c = all ? all[d] : method === 'uniform' ? fitUniform(spec, d, iv) : fitMinimax(spec, d, iv);
    if (ch && stats.channels) {
      const channels = { intervals: ch.intervals, coeffs: ch.coeffs.map((cc) => Array.from(cc[d])) };
      return {
        method,
        degree: d,
        interval: iv,
        coeffs: Array.from(c),
        channels,
        ...assessChannels(spec, channels, stats.channels),
      };
    }
    const q = assessFit(spec, c, iv, stats.sample, stats);
    return { method, degree: d, interval: iv, coeffs: Array.from(c), ...q };
  });
}

/**
 * Per-channel data-guided fits of every degree up to maxDeg: channel c is fitted on its own
 * sample over its own observed range. A layer's channels often occupy quite different parts of
 * the layer's range (a Dense unit whose inputs stay in [-1, 8] next to one reaching -17), so a
 * narrower interval per channel buys accuracy at the same degree. Under CKKS it costs no level:
 * the per-channel affine map to [-1, 1] folds into the previous linear layer's per-output weights
 * as the layer-wide one does, and per-channel coefficients are per-ciphertext constants or
 * plaintext vectors in the same multiplications as scalar ones.
 *
 * A channel's extremes come from fewer values than the layer's, so held-out values overshoot
 * them more often, and a polynomial grows fast outside its interval (|T_d(t)| ~ (t + sqrt(t^2-1))^d).
 * Each channel's interval is therefore its range widened by `margin` of its own width plus
 * CHANNEL_PAD of the layer interval's width, clipped to the layer interval `layer`. A pad of 5%
 * removed the degree-15 losses that 0-2% left on the MNIST MLP and ResNet examples
 * (bench/fitQuality), but on ResNet-20 (CIFAR-10) held-out values overshot single channels' ranges
 * by 10-30% of the channel's width in every layer, unapproximated; 15% keeps every held-out value
 * bounded there (see analysis/fitStage.ts).
 */
export function fitChannelsAll(
  spec: ActivationSpec,
  ch: ChannelSamples,
  layer: Interval,
  margin: number,
  maxDeg: number,
  floor: number,
): { intervals: Interval[]; coeffs: Float64Array[][] } {
  const pad = CHANNEL_PAD * (layer.b - layer.a);
  const intervals = ch.samples.map((_, c) => {
    const own = chooseInterval({ min: ch.min[c], max: ch.max[c] }, margin, spec);
    const iv = { a: Math.max(layer.a, own.a - pad), b: Math.min(layer.b, own.b + pad) };
    return isEven(spec) ? symmetric(iv) : iv;
  });
  return {
    intervals,
    coeffs: ch.samples.map((sample, c) => fitDataGuidedAll(spec, sample, intervals[c], maxDeg, floor)),
  };
}

export const CHANNEL_PAD = 0.15;

/** Quality of per-channel fits: RMS over all channels' samples, worst channel for the maxima. */
export function assessChannels(spec: ActivationSpec, fits: ChannelFits, ch: ChannelSamples): FitQuality {
  let se = 0;
  let n = 0;
  let maxErr = 0;
  let maxAbs = 0;
  fits.coeffs.forEach((coeffs, c) => {
    const q = assessFit(spec, coeffs, fits.intervals[c], ch.samples[c], { min: ch.min[c], max: ch.max[c] });
    se += q.rmsData * q.rmsData * ch.samples[c].length;
    n += ch.samples[c].length;
    maxErr = Math.max(maxErr, q.maxErrObserved);
    maxAbs = Math.max(maxAbs, q.maxAbsInterval);
  });
  return { rmsData: n ? Math.sqrt(se / n) : 0, maxErrObserved: maxErr, maxAbsInterval: maxAbs };
}

/** A fit as the executor's polynomial activation, with an optional per-channel offset. */
export function polyOf(fit: Fit, offset?: Float32Array | null): PolyActivation {
  return {
    coeffs: fit.coeffs,
    a: fit.interval.a,
    b: fit.interval.b,
    channels: fit.channels,
    channelOffset: offset ?? undefined,
  };
}

/** Every activation's polynomial, with its offset if it has one: what the executor replaces. */
export function polysOf(
  acts: { id: number }[],
  fits: Map<number, Fit>,
  offsets: Map<number, Float32Array | null>,
): Map<number, PolyActivation> {
  return new Map(acts.map((a) => [a.id, polyOf(fits.get(a.id)!, offsets.get(a.id))]));
}
