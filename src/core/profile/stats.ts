/**
 * Streaming statistics of the values reaching one activation: exact count/min/max/mean/std,
 * an exact histogram whose bins widen by powers of two as the range grows (so it never needs
 * the range in advance and never re-reads data), and a uniform reservoir sample (Vitter's
 * Algorithm R, ACM TOMS 1985) for percentiles and for fitting.
 */
import { Rng } from '../rng';

export interface Histogram {
  lo: number;
  width: number;
  counts: number[];
}

export interface ValueStats {
  count: number;
  min: number;
  max: number;
  mean: number;
  std: number;
  /** Percentiles estimated from the reservoir sample. */
  percentiles: Record<string, number>;
  histogram: Histogram;
  /** Uniform random sample of the values (at most the reservoir size). */
  sample: Float32Array;
  /** Per channel (last axis): exact range and a uniform sample, for per-channel fits. */
  channels?: ChannelSamples;
}

/** Values kept per channel: 16x oversampling at degree 63; 2048 fitted no better on the examples (bench/fitQuality) and took twice as long. */
export const CHANNEL_RESERVOIR = 1024;

export interface ChannelSamples {
  min: Float32Array;
  max: Float32Array;
  samples: Float32Array[];
}

/**
 * Exact min/max and a uniform reservoir sample (Algorithm R) per channel, the channel being the
 * last axis of the values (a Dense unit, a Conv2D filter): each channel can then get its own
 * interval and polynomial, which a CKKS evaluation applies at no extra level (see fit.ts).
 */
export class ChannelStats {
  private readonly min: Float32Array;
  private readonly max: Float32Array;
  private readonly res: Float32Array[];
  private readonly seen: Float64Array;
  private readonly rng: Rng;

  constructor(
    readonly C: number,
    readonly perChannel: number,
    seed: number,
  ) {
    this.min = new Float32Array(C).fill(Infinity);
    this.max = new Float32Array(C).fill(-Infinity);
    this.res = Array.from({ length: C }, () => new Float32Array(perChannel));
    this.seen = new Float64Array(C);
    this.rng = new Rng(seed);
  }

  add(values: Float32Array): void {
    const C = this.C;
    const R = this.perChannel;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) continue;
      const c = i % C;
      if (v < this.min[c]) this.min[c] = v;
      if (v > this.max[c]) this.max[c] = v;
      const n = ++this.seen[c];
      if (n <= R) this.res[c][n - 1] = v;
      else {
        const j = Math.floor(this.rng.next() * n);
        if (j < R) this.res[c][j] = v;
      }
    }
  }

  result(): ChannelSamples {
    const empty = (c: number) => this.seen[c] === 0;
    return {
      min: this.min.map((v, c) => (empty(c) ? 0 : v)),
      max: this.max.map((v, c) => (empty(c) ? 0 : v)),
      samples: this.res.map((r, c) => r.slice(0, Math.min(this.seen[c], this.perChannel))),
    };
  }
}

export const HISTOGRAM_BINS = 256;
const BINS = HISTOGRAM_BINS;

export class StreamingStats {
  private count = 0;
  private sum = 0;
  private sumSq = 0;
  private min = Infinity;
  private max = -Infinity;
  private lo = 0;
  private width = 0;
  private readonly bins = new Float64Array(BINS);
  private readonly reservoir: Float32Array;
  private filled = 0;
  private readonly rng: Rng;
  private nonFinite = 0;

  constructor(reservoirSize: number, seed: number) {
    this.reservoir = new Float32Array(reservoirSize);
    this.rng = new Rng(seed);
  }

  /** Number of NaN/Inf values seen (they are not counted in the statistics). */
  get nonFiniteCount(): number {
    return this.nonFinite;
  }

  add(values: Float32Array): void {
    let bmin = Infinity;
    let bmax = -Infinity;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) {
        this.nonFinite++;
        continue;
      }
      if (v < bmin) bmin = v;
      if (v > bmax) bmax = v;
    }
    if (bmin > bmax) return;
    this.cover(bmin, bmax);
    const R = this.reservoir.length;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (!Number.isFinite(v)) continue;
      this.count++;
      this.sum += v;
      this.sumSq += v * v;
      this.bins[Math.min(BINS - 1, Math.floor((v - this.lo) / this.width))]++;
      if (this.filled < R) this.reservoir[this.filled++] = v;
      else {
        const j = Math.floor(this.rng.next() * this.count);
        if (j < R) this.reservoir[j] = v;
      }
    }
    if (bmin < this.min) this.min = bmin;
    if (bmax > this.max) this.max = bmax;
  }

  /** Widens the histogram (doubling the bin width, merging bins) until [vmin, vmax] fits. */
  private cover(vmin: number, vmax: number): void {
    if (this.width === 0) {
      let w = 2 ** Math.ceil(Math.log2(Math.max((vmax - vmin) / BINS, 2 ** -24)));
      while (Math.floor(vmin / w) * w + BINS * w <= vmax) w *= 2;
      this.width = w;
      this.lo = Math.floor(vmin / w) * w;
      return;
    }
    if (vmin >= this.lo && vmax < this.lo + BINS * this.width) return;
    const needLo = Math.min(vmin, this.lo);
    const needHi = Math.max(vmax, this.lo + (BINS - 0.5) * this.width);
    let w = this.width;
    let lo: number;
    do {
      w *= 2;
      lo = Math.floor(needLo / w) * w;
    } while (lo + BINS * w <= needHi);
    const old = Float64Array.from(this.bins);
    this.bins.fill(0);
    for (let i = 0; i < BINS; i++) {
      if (old[i] === 0) continue;
      // Old bin edges are multiples of the old width, hence aligned with the new, wider bins.
      const centre = this.lo + (i + 0.5) * this.width;
      this.bins[Math.floor((centre - lo) / w)] += old[i];
    }
    this.lo = lo;
    this.width = w;
  }

  result(): ValueStats {
    const n = this.count;
    const mean = n ? this.sum / n : 0;
    const variance = n ? Math.max(0, this.sumSq / n - mean * mean) : 0;
    const sample = this.reservoir.slice(0, this.filled);
    const sorted = Float32Array.from(sample).sort();
    const pct = (p: number) =>
      sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;
    const percentiles: Record<string, number> = {};
    for (const p of [0.1, 1, 5, 25, 50, 75, 95, 99, 99.9]) percentiles[`p${p}`] = pct(p);
    let first = 0;
    let last = BINS - 1;
    while (first < last && this.bins[first] === 0) first++;
    while (last > first && this.bins[last] === 0) last--;
    return {
      count: n,
      min: n ? this.min : 0,
      max: n ? this.max : 0,
      mean,
      std: Math.sqrt(variance),
      percentiles,
      histogram: {
        lo: this.lo + first * this.width,
        width: this.width,
        counts: Array.from(this.bins.subarray(first, last + 1)),
      },
      sample,
    };
  }
}
