/** Renders a report as plain-text tables for the terminal. */
import { Report } from '../core/report';

function pad(cells: string[][], right: boolean[]): string {
  const w = cells[0].map((_, j) => Math.max(...cells.map((r) => r[j].length)));
  return cells.map((r) => r.map((c, j) => (right[j] ? c.padStart(w[j]) : c.padEnd(w[j]))).join('  ').trimEnd()).join('\n');
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');
const p2 = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(2) + '%' : '-');
const g3 = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3));

export function renderReport(r: Report): string {
  const out: string[] = [];
  const metric = r.metric === 'top1-vs-labels' ? 'top-1 vs labels' : 'agreement with the original model (no labels)';
  out.push(`he-approx ${r.tool.version}: ${r.model.name} (${r.layers.length} activations), ${r.options.method === 'data' ? `data-guided${r.options.perChannel ? ' per-channel' : ''}` : r.options.method} fit, budget ${r.options.budget} pp, ${r.levelBudget} levels (N=${r.options.ringSize}), backend ${r.backend}`);
  out.push(`data: ${r.data.calibration} calibration + ${r.data.heldout} held-out samples (seed ${r.data.seed}); accuracy = ${metric}`);
  out.push(`plaintext accuracy: ${p2(r.plaintext.accuracy)}`);
  out.push('');
  const rows = [['layer', 'activation', 'interval', 'degree', 'depth', 'mults', 'est. ms', 'drop alone', 'rms err', 'uniform deg/depth']];
  for (const l of r.layers) {
    const c = l.chosen;
    rows.push([l.name, l.activation, `[${g3(c.interval.a)}, ${g3(c.interval.b)}]`, String(c.degree), String(c.depth) + (c.affineLevel ? '*' : ''),
      String(c.nonScalarMults), c.latencyMs.toFixed(0), f2(c.predictedDrop), c.rmsData.toExponential(1),
      l.uniformChosen ? `${l.uniformChosen.degree}/${l.uniformChosen.depth}` : 'n/a']);
  }
  out.push(pad(rows, [false, false, false, true, true, true, true, true, true, true]));
  if (r.layers.some((l) => l.chosen.affineLevel)) out.push('* includes one level for an input scaling that cannot be folded into the previous layer');
  out.push('');
  const s = [r.final, r.uniform];
  const cmp = [['', r.final.method, 'uniform baseline'],
    ['activation depth (levels)', ...s.map((m) => String(m.activationDepth))],
    ['network depth (levels)', ...s.map((m) => String(m.networkDepth))],
    ['non-scalar multiplications', ...s.map((m) => String(m.nonScalarMults))],
    ['est. latency per ciphertext (ms)', ...s.map((m) => (Number.isFinite(m.latencyMs) ? m.latencyMs.toFixed(0) : '-'))],
    ['predicted drop (pp)', ...s.map((m) => f2(m.predictedDrop))],
    ['measured drop (pp)', ...s.map((m) => f2(m.measuredDrop))],
    ['accuracy, all polynomials', ...s.map((m) => p2(m.accuracy))],
    ['meets budget', ...s.map((m) => (m.meetsBudget ? 'yes' : 'NO'))]];
  out.push(pad(cmp, [false, true, true]));
  out.push('');
  out.push('refinements (measured on held-out data; * kept): ' + r.refinements.map((x) => `${x.name} ${f2(x.measuredDrop)}${x.kept ? '*' : ''}`).join(' | '));
  if (r.maxPooling) out.push(`max pooling -> average pooling: accuracy ${p2(r.maxPooling.accuracyWithAveragePooling)} (drop ${f2(r.maxPooling.dropWithAveragePooling)} pp)`);
  out.push(`latency estimates: ${r.costs.source}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  for (const w of r.warnings) out.push(`warning: ${w}`);
  out.push(`time: ${r.timings.total.toFixed(1)} s`);
  return out.join('\n');
}
