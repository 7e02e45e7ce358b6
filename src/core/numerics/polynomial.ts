/**
 * A polynomial activation as plain data, and its evaluation on plain values. The executor, the
 * fitters, the report and the CKKS evaluator all take this one type, so that none of them needs
 * another's module to name it (the fit and execute modules used to import each other for it).
 */
import { Interval, PIECES, chebPieces, chebvalPieces, chebvalStrided } from './chebyshev';
import { evaluateOnTwoCores } from './polyPool';

/** One polynomial per channel (last axis): channel c uses coeffs[c] on intervals[c]. */
export interface ChannelFits {
  intervals: Interval[];
  coeffs: number[][];
}

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
 * by chebvalStrided (from degree 11 on many points, chebvalPieces): what the executor runs when a
 * polynomial replaces an activation outside any gradient computation. Several times faster than
 * the same recurrence as tensor operations (see chebvalStrided), which matters when a deep
 * network's every activation runs at degree 31 on thousands of images.
 */
export function polyValues(
  x: Float32Array,
  C: number,
  p: PolyActivation,
  out = new Float32Array(x.length),
): Float32Array {
  const ch = p.channels;
  const series = ch ? ch.coeffs : [p.coeffs];
  const ivs: Interval[] = ch ? ch.intervals : [p];
  const sameLength = series.every((c) => c.length === series[0].length);
  // High degrees on many points: each series re-expanded on pieces of its interval (chebPieces).
  const pieces = sameLength ? piecesFor(series, x.length / series.length) : null;
  const one = (xs: Float32Array, o: Float32Array, k: number, start: number, stride: number) => {
    const pc = pieces?.[k];
    if (pc) chebvalPieces(xs, o, series[k], ivs[k], pc.table, pc.rowLength, start, stride);
    else chebvalStrided(xs, o, series[k], ivs[k], start, stride);
  };
  const local = (xs: Float32Array, o: Float32Array) => {
    if (ch) for (let c = 0; c < C; c++) one(xs, o, c, c, C);
    else one(xs, o, 0, 0, 1);
  };
  // Large evaluations take both cores (polyPool.ts); same values to the bit.
  if (!(sameLength && evaluateOnTwoCores(x, out, C, series, ivs, !!ch, local, pieces))) local(x, out);
  const off = p.channelOffset;
  if (off) for (let i = 0; i < out.length; i += C) for (let c = 0; c < C; c++) out[i + c] -= off[c];
  return out;
}

/** Tables by coefficient array, with the coefficients they were built from (an array changed in place is built again). */
const piecesCache = new WeakMap<object, { coeffs: Float64Array; pieces: ReturnType<typeof chebPieces> }>();

/**
 * Whether polyValues evaluates series of this degree on this many points each by their piecewise
 * re-expansion (chebvalPieces): from degree 11 (bench:poly: faster than chebvalStrided from 11 on,
 * about even at 7), on at least PIECES x (degree + 1) points per series. A table costs about
 * 3 PIECES (d + 1)^2 operations to build and saves about 2 (d + 1) per point at degree 31, so one
 * call of that size pays back about two thirds of it; the tables are cached, and the analysis
 * evaluates each polynomial on every batch of a pass (4-8 batches of 256 samples) and on pass
 * after pass. With four times that bound (before), ResNet-32's 8x8 stage (64 channels, 16,384
 * points per channel in a batch) ran its degree-31 polynomials on the whole series, at a third of
 * the pieces' rate.
 */
export function usesPieces(degree: number, perSeries: number): boolean {
  return degree >= 11 && perSeries >= PIECES * (degree + 1);
}

/**
 * Each series' piecewise re-expansion where it pays (usesPieces; the series of one length), cached
 * per coefficient array: the executor evaluates the same activation batch after batch. Null when
 * not used.
 */
function piecesFor(series: ArrayLike<number>[], perSeries: number): ReturnType<typeof chebPieces>[] | null {
  if (!usesPieces((series[0]?.length ?? 0) - 1, perSeries)) return null;
  return series.map((c) => {
    const hit = piecesCache.get(c);
    if (hit && hit.coeffs.every((v, k) => Object.is(v, c[k]))) return hit.pieces;
    const pieces = chebPieces(c);
    piecesCache.set(c, { coeffs: Float64Array.from(c), pieces });
    return pieces;
  });
}
