/**
 * A polynomial activation as plain data, and its evaluation on plain values. The executor, the
 * fitters, the report and the CKKS evaluator all take this one type, so that none of them needs
 * another's module to name it (the fit and execute modules used to import each other for it).
 */
import { Interval, chebvalStrided } from './chebyshev';
import { evaluateOnTwoCores } from './polyPool';

/** One polynomial per channel (last axis): channel c uses coeffs[c] on intervals[c]. */
export interface ChannelFits { intervals: Interval[]; coeffs: number[][] }

/** A polynomial activation: Chebyshev coefficients on [a, b] plus an optional per-channel shift. */
export interface PolyActivation {
  coeffs: ArrayLike<number>;
  a: number;
  b: number;
  /** Subtracted per channel (last axis) after the polynomial: the mean-shift correction. */
  channelOffset?: Float32Array;
  /** One polynomial per channel (last axis); when present, `coeffs`/`a`/`b` are not used. */
  channels?: ChannelFits;
}

/** The number of Chebyshev coefficients of each of the activation's polynomials (degree + 1). */
export function polyTerms(p: PolyActivation): number {
  return p.channels ? p.channels.coeffs[0].length : p.coeffs.length;
}

/**
 * The polynomial activation on plain values (channels last, C channels), in float64 arithmetic
 * by chebvalStrided: what the executor runs when a polynomial replaces an activation outside any
 * gradient computation. Several times faster than the same recurrence as tensor operations (see
 * chebvalStrided), which matters when a deep network's every activation runs at degree 31 on
 * thousands of images.
 */
export function polyValues(x: Float32Array, C: number, p: PolyActivation, out = new Float32Array(x.length)): Float32Array {
  const ch = p.channels;
  const local = (xs: Float32Array, o: Float32Array) => {
    if (ch) for (let c = 0; c < C; c++) chebvalStrided(xs, o, ch.coeffs[c], ch.intervals[c], c, C);
    else chebvalStrided(xs, o, p.coeffs, p, 0, 1);
  };
  // Large evaluations take both cores (polyPool.ts); same values to the bit.
  const series = ch ? ch.coeffs : [p.coeffs];
  const sameLength = series.every((c) => c.length === series[0].length);
  if (!(sameLength && evaluateOnTwoCores(x, out, C, series, ch ? ch.intervals : [p], !!ch, local))) local(x, out);
  const off = p.channelOffset;
  if (off) for (let i = 0; i < out.length; i += C) for (let c = 0; c < C; c++) out[i + c] -= off[c];
  return out;
}
