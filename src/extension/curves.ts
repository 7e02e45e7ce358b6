/**
 * What the side panel plots for one layer, computed on the host with the core's numerics so that
 * the webview only draws: the histogram of the recorded inputs, the true activation and the fitted
 * polynomial over the interval, and the error between them. vscode-free (tested on plain Node).
 */
import { chebval } from '../core/numerics/chebyshev';
import { activationFn, specFromDescription } from '../core/numerics/activations';
import { LayerReport, Report } from '../core/report';
import { PublishedPoint, RESNET20_CIFAR10, isCifarResNet20 } from '../core/analysis/published';

export interface LayerCurves {
  node: string;
  /** Bin centres and the fraction of recorded inputs in each bin. */
  histogram: { x: number[]; density: number[] };
  /** Grid over the fitted interval (and the observed range, if wider). */
  x: number[];
  activation: number[];
  polynomial: number[];
  error: number[];
  interval: { a: number; b: number };
  /** For per-channel fits: which channel's polynomial is plotted (the one with the widest interval). */
  channel: { index: number; of: number } | null;
}

/** Histogram bins merged down to at most `maxBins`, so the chart stays readable. */
function coarseHistogram(l: LayerReport, maxBins: number): LayerCurves['histogram'] {
  const h = l.stats.histogram;
  const total = h.counts.reduce((s, c) => s + c, 0) || 1;
  const merge = Math.max(1, Math.ceil(h.counts.length / maxBins));
  const x: number[] = [];
  const density: number[] = [];
  for (let i = 0; i < h.counts.length; i += merge) {
    let c = 0;
    for (let j = i; j < Math.min(h.counts.length, i + merge); j++) c += h.counts[j];
    x.push(h.lo + h.width * (i + Math.min(merge, h.counts.length - i) / 2));
    density.push(c / total);
  }
  return { x, density };
}

export function layerCurves(l: LayerReport, points = 161, maxBins = 64): LayerCurves {
  const f = activationFn(specFromDescription(l.activation));
  // Per-channel fits: plot the channel whose interval is widest, the hardest one to approximate.
  const chs = l.chosen.channels;
  let k = 0;
  if (chs)
    chs.intervals.forEach((iv, j) => {
      if (iv.b - iv.a > chs.intervals[k].b - chs.intervals[k].a) k = j;
    });
  const c = chs ? { interval: chs.intervals[k], coeffs: chs.coeffs[k] } : l.chosen;
  const lo = Math.min(c.interval.a, l.stats.min);
  const hi = Math.max(c.interval.b, l.stats.max);
  const x: number[] = [];
  const activation: number[] = [];
  const polynomial: number[] = [];
  const error: number[] = [];
  for (let i = 0; i < points; i++) {
    const xi = lo + ((hi - lo) * i) / (points - 1);
    // The polynomial is only meant for its interval; outside it is clamped in the plot, as CKKS
    // has no way to evaluate it anywhere else either (held-out values outside are warned about).
    const t = Math.min(c.interval.b, Math.max(c.interval.a, xi));
    const p = chebval(t, c.coeffs, c.interval);
    x.push(xi);
    activation.push(f(xi));
    polynomial.push(p);
    error.push(p - f(xi));
  }
  return {
    node: l.name,
    histogram: coarseHistogram(l, maxBins),
    x,
    activation,
    polynomial,
    error,
    interval: c.interval,
    channel: chs ? { index: k, of: chs.coeffs.length } : null,
  };
}

export function reportCurves(report: Report): Record<string, LayerCurves> {
  const out: Record<string, LayerCurves> = {};
  for (const l of report.layers) out[l.name] = layerCurves(l);
  return out;
}

/** One method's accuracy-cost frontier as the panel draws it: measured drop against levels. */
export interface FrontierSeries {
  method: string;
  points: {
    levels: number;
    drop: number;
    ringSize: number;
    bootstraps: number;
    chosen: boolean;
    extra: boolean;
    /** Activation name -> degree: what picking the point asks the analysis for. */
    degrees: Record<string, number>;
    /** The analysis's own method's point (not the baseline's, not fine-tuned): one the panel can pick. */
    pickable: boolean;
  }[];
}

/** The report's frontier (report.frontier) per method, by increasing levels; none for older reports. */
export function frontierSeries(report: Pick<Report, 'frontier'>): FrontierSeries[] {
  const points = report.frontier?.points ?? [];
  return [...new Set(points.map((p) => p.method))].map((method) => ({
    method,
    points: points
      .filter((p) => p.method === method)
      .sort((a, b) => a.levels - b.levels)
      .map((p) => ({
        levels: p.levels,
        drop: p.measuredDrop,
        ringSize: p.ringSize,
        bootstraps: p.bootstraps,
        chosen: p.chosen,
        extra: p.source === 'frontier',
        degrees: p.degrees,
        pickable: p.source !== 'finetuned' && p.method !== 'uniform' && p.safe,
      })),
  }));
}

/** The field's published points to draw beside this model's frontier: a CIFAR ResNet-20's, else none. */
export function publishedPoints(report: Pick<Report, 'model' | 'layers'>): PublishedPoint[] {
  return isCifarResNet20(report) ? [...RESNET20_CIFAR10] : [];
}
