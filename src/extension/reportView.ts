/**
 * Turns a core report into what the editor shows, as plain data: diagnostics, CodeLens titles and
 * hover text, anchored at layer ranges (layerRanges.ts). vscode-free: the extension host converts
 * these records into vscode.Diagnostic / CodeLens / Hover, and tests run on plain Node.
 */
import { Report, describeFold } from '../core/report';
import { deployed } from '../core/deployed';
import { LayerRanges, TextRange } from './layerRanges';

export type Severity = 'error' | 'warning' | 'information';

export interface PlainDiagnostic {
  range: TextRange;
  severity: Severity;
  message: string;
  source: 'he-approx';
  code: 'degree' | 'budget' | 'interval' | 'he-incompatible' | 'syntax' | 'not-found';
  layer?: string;
}

export interface PlainCodeLens {
  range: TextRange;
  title: string;
  layer: string;
  node: string;
}

const pp = (x: number) => `${x.toFixed(2)}%`;

type Layer = Report['layers'][number];

/** What a report layer approximates, in words: an activation, or one step of a max pooling's tree. */
/** The notification after an analysis: what was approximated, its levels and drop, against the baseline. */
export function analysisMessage(report: Report): string {
  const f = report.final;
  const trees = report.layers.filter((l) => l.maxTree).length;
  const n = report.maxPooling?.pools.length ?? 0;
  const pools = n ? ` and ${n} max pooling${n === 1 ? '' : 's'} as ${trees} |x|` : '';
  const avg = report.maxPooling
    ? `; average pooling instead: ${report.maxPooling.averagePooling.drop.toFixed(2)} pp`
    : '';
  const picked = report.options.target?.degrees ? ' (the point picked in the panel)' : '';
  const d = deployed(report);
  const tuned = d.finetuned
    ? `; after fine-tuning ${d.measuredDrop.toFixed(2)} pp (export writes the fine-tuned model to finetuned/)`
    : '';
  return `HE Approx: ${report.layers.length - trees} activations${pools} approximated; total depth ${f.networkDepth} levels${picked}; measured accuracy drop ${f.measuredDrop.toFixed(2)} pp${tuned} (budget ${report.options.budget}${avg}) vs ${report.uniform.networkDepth} levels for the uniform baseline.`;
}

/** What to do when the result misses the budget, by how it was chosen. */
export function budgetMissed(report: Report): string {
  const t = report.options.target;
  if (t?.degrees)
    return ' The budget is not met at the point picked in the panel: pick another, or go back to the cheapest within the budget.';
  if (t)
    return ' The budget is not met at the target cost: raise heApprox.targetLevels or heApprox.targetBootstraps, or set them to 0 for the cheapest choice that meets it.';
  return ' The budget is not met: raise heApprox.levelBudget or heApprox.accuracyBudget.';
}

export function layerWhat(l: Layer): string {
  const t = l.maxTree;
  return t ? `max pooling, step ${t.step}: |a - b| along the ${t.axis}` : l.activation;
}

/** Anchor for a model.json layer: its "name" value, else the start of the file. */
function anchor(ranges: LayerRanges, layer: string): { range: TextRange; found: boolean } {
  const r = ranges.layers.get(layer);
  return r ? { range: r.nameRange, found: true } : { range: { start: 0, end: 1 }, found: false };
}

/** Syntax errors of the file if it has any (with or without a report), else the report's diagnostics. */
export function reportDiagnostics(report: Report | null, ranges: LayerRanges): PlainDiagnostic[] {
  const out: PlainDiagnostic[] = ranges.errors.map((e) => ({
    range: e.range,
    severity: 'error' as const,
    source: 'he-approx' as const,
    code: 'syntax' as const,
    message: `${e.message}: the model file is not valid JSON; fix it (or restore it) and analyse again`,
  }));
  if (ranges.errors.length || !report) return out;
  const budget = report.options.budget;
  for (const l of report.layers) {
    const { range, found } = anchor(ranges, l.layer);
    const c = l.chosen;
    const where = found ? '' : ` (layer '${l.layer}' not found in this file)`;
    out.push({
      range,
      severity: 'information',
      source: 'he-approx',
      code: found ? 'degree' : 'not-found',
      layer: l.layer,
      message: `${layerWhat(l)} → degree ${c.degree}, depth ${c.depth}, predicted accuracy drop ${pp(c.predictedDrop)}${where}`,
    });
    if (c.predictedDrop > 0.5 * budget && report.layers.length > 1) {
      out.push({
        range,
        severity: 'warning',
        source: 'he-approx',
        code: 'budget',
        layer: l.layer,
        message: `${layerWhat(l)} alone uses ${Math.round((100 * c.predictedDrop) / budget)}% of the ${budget}-point accuracy budget at degree ${c.degree}`,
      });
    }
    if (c.heldoutOutside.count > 0) {
      out.push({
        range,
        severity: 'warning',
        source: 'he-approx',
        code: 'interval',
        layer: l.layer,
        message: `${c.heldoutOutside.count} held-out values (${(100 * c.heldoutOutside.fraction).toPrecision(2)}%) fall outside ${c.channels ? "their channels' fitted intervals" : `the fitted interval [${c.interval.a.toPrecision(4)}, ${c.interval.b.toPrecision(4)}]`} (seen ${c.heldoutOutside.min.toPrecision(4)}..${c.heldoutOutside.max.toPrecision(4)}); widen the margin or calibrate on more data`,
      });
    }
  }
  for (const h of report.heIncompatible ?? []) {
    const { range } = anchor(ranges, h.layer);
    out.push({
      range,
      severity: 'error',
      source: 'he-approx',
      code: 'he-incompatible',
      layer: h.layer,
      message: `${h.className} '${h.layer}': ${h.problem}. Fix: ${h.fix}`,
    });
  }
  return out;
}

/** One lens per activation, and one per max pooling for its whole tree (its steps' degrees, their levels). */
export function reportCodeLenses(report: Report, ranges: LayerRanges): PlainCodeLens[] {
  const out: PlainCodeLens[] = [];
  for (const l of report.layers.filter((x) => ranges.layers.has(x.layer))) {
    const range = ranges.layers.get(l.layer)!.nameRange;
    if (!l.maxTree) {
      out.push({
        range,
        layer: l.layer,
        node: l.name,
        title: `degree ${l.chosen.degree} · depth ${l.chosen.depth} · Δacc ${pp(l.chosen.predictedDrop)} · Show fit`,
      });
      continue;
    }
    const pool = report.maxPooling?.pools.find((p) => p.pool === l.maxTree!.pool);
    if (!pool || pool.steps[0] !== l.name) continue;
    out.push({
      range,
      layer: l.layer,
      node: l.name,
      title: `max pooling as polynomials: |x| degrees ${pool.degrees.join(', ')} · depth ${pool.depth} · Show fit`,
    });
  }
  return out;
}

/** Markdown for a hover on a layer; the link opens the panel on that layer. */
export function reportHover(report: Report, layer: string): string | null {
  const ls = report.layers.filter((l) => l.layer === layer);
  if (!ls.length) return null;
  return ls
    .map((l) => {
      const c = l.chosen;
      const args = encodeURIComponent(JSON.stringify([l.name]));
      return [
        `**${l.name}**: ${layerWhat(l)} → Chebyshev polynomial of degree ${c.degree} (${c.method === 'data' ? 'data-guided' : c.method} fit)`,
        '',
        ...(l.maxTree
          ? [
              `- max(a, b) = (a + b)/2 + |a - b|/2 with this polynomial for |x|, on the differences of neighbours ${l.maxTree.offset} apart that reach it (an even fit on a symmetric interval)`,
            ]
          : []),
        ...(c.channels
          ? [
              `- one polynomial per channel (${c.channels.coeffs.length}), each on its own range within the layer's interval`,
            ]
          : []),
        `- interval [${c.interval.a.toPrecision(4)}, ${c.interval.b.toPrecision(4)}]; inputs seen ${l.stats.min.toPrecision(4)}..${l.stats.max.toPrecision(4)} (mean ${l.stats.mean.toPrecision(3)}, std ${l.stats.std.toPrecision(3)})`,
        `- error: RMS on the data ${c.rmsData.toExponential(2)}, max on the observed range ${c.maxErrObserved.toExponential(2)}; max |p| on the interval ${c.maxAbsInterval.toPrecision(3)}`,
        `- cost: ${c.depth} levels${c.affineLevel ? ' (one for the input scaling)' : ''}, ${c.nonScalarMults} ciphertext multiplications, about ${c.latencyMs.toFixed(0)} ms per ciphertext`,
        `- evaluated as ${describeFold(c)}`,
        `- predicted accuracy drop of this layer alone: ${pp(c.predictedDrop)}; uniform baseline needs degree ${l.uniformChosen?.degree ?? '-'}`,
        '',
        `[Show fit](command:heApprox.showPanel?${args})`,
      ].join('\n');
    })
    .join('\n\n---\n\n');
}
