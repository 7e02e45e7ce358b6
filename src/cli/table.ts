/** Renders a report as plain-text tables for the terminal. */
import { Report, describeFold } from '../core/report';
import { DEFAULT_BOOTSTRAP_LEVELS } from '../core/analysis/settings';
import { NESTED_STAGES, STAGE_ORDER } from '../core/analysis/clock';
import { describeAugmentation } from '../core/finetune/augment';

function pad(cells: string[][], right: boolean[]): string {
  const w = cells[0].map((_, j) => Math.max(...cells.map((r) => r[j].length)));
  return cells
    .map((r) =>
      r
        .map((c, j) => (right[j] ? c.padStart(w[j]) : c.padEnd(w[j])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');
const p2 = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(2) + '%' : '-');
const g3 = (x: number) =>
  !Number.isFinite(x)
    ? '-'
    : Math.abs(x) >= 1e5
      ? x.toExponential(1)
      : Math.abs(x) >= 100
        ? x.toFixed(0)
        : x.toPrecision(3);

/** The per-activation table, its legend and each layer's form and fold. */
function layerTable(r: Report): string[] {
  const out: string[] = [];
  const rows = [
    [
      'layer',
      'activation',
      'interval',
      'degree',
      'depth',
      'mults',
      'est. ms',
      'drop alone',
      'rms err',
      'out (samples)',
      'max |x|',
      'uniform deg/depth',
    ],
  ];
  for (const l of r.layers) {
    const c = l.chosen;
    rows.push([
      l.name,
      l.activation,
      `[${g3(c.interval.a)}, ${g3(c.interval.b)}]`,
      String(c.degree),
      String(c.depth) + (c.affineLevel ? '*' : ''),
      String(c.nonScalarMults),
      c.latencyMs.toFixed(0),
      f2(c.predictedDrop),
      c.rmsData.toExponential(1),
      String(c.heldoutOutside.samples) + (c.heldoutOutside.nonFinite ? ' !' : ''),
      g3(Math.max(c.heldoutOutside.maxAbsIn, c.heldoutOutside.maxAbsOut)),
      l.uniformChosen ? `${l.uniformChosen.degree}/${l.uniformChosen.depth}` : 'n/a',
    ]);
  }
  out.push(pad(rows, [false, false, false, true, true, true, true, true, true, true, true, true]));
  out.push(
    `drop alone: predicted by the first-order screen on ${r.screen.samples} calibration samples (standard error about ${f2(r.screen.standardErrorPp)} pp); ` +
      'out (samples): held-out samples with a value outside the interval; max |x|: largest magnitude in or out of the activation on held-out data',
  );
  if (r.layers.some((l) => l.chosen.affineLevel))
    out.push('* includes one level for an input scaling that cannot be folded into the previous layer');
  // Where the levels come from: the forms and folds (cost/fold.ts), one line per layer.
  for (const l of r.layers) out.push(`  ${l.name}: ${describeFold(l.chosen)}`);
  out.push('');
  return out;
}

/** The chosen result beside the uniform baseline, row by row. */
function comparison(r: Report): string[][] {
  const s = [r.final, r.uniform];
  const cmp: string[][] = [
    ['', r.final.method, 'uniform baseline'],
    ['activation depth (levels)', ...s.map((m) => String(m.activationDepth))],
    [
      'network depth (levels)',
      ...s.map(
        (m) =>
          String(m.networkDepth) +
          (m.minimalDepth !== undefined && m.minimalDepth < m.networkDepth ? ` (${m.minimalDepth} needed)` : ''),
      ),
    ],
    ['non-scalar multiplications', ...s.map((m) => String(m.nonScalarMults))],
    [
      'est. latency per ciphertext (ms)',
      ...s.map((m) => (Number.isFinite(m.latencyMs) ? m.latencyMs.toFixed(0) : '-')),
    ],
    ['predicted drop (pp)', ...s.map((m) => f2(m.predictedDrop))],
    ['measured drop (pp)', ...s.map((m) => f2(m.measuredDrop))],
    ['accuracy, all polynomials', ...s.map((m) => p2(m.accuracy))],
    ['values within CKKS range', ...s.map((m) => (m.safe ? `yes (max ${g3(m.maxAbs)})` : 'NO'))],
    [
      `bootstraps (every ${r.bootstrapping.levelsPerBootstrap} levels)`,
      ...s.map((m) => (Number.isFinite(m.bootstraps) ? String(m.bootstraps) : '-')),
    ],
    // Measured on the engine that bootstraps (he-approx costs --engine lattigo): what the count costs.
    ...(r.bootstrapping.planned && r.costs.bootstrap
      ? [
          [
            'est. bootstrap time per ciphertext (s)',
            ...s.map((m) =>
              Number.isFinite(m.bootstraps) ? ((m.bootstraps * r.costs.bootstrap!) / 1000).toFixed(0) : '-',
            ),
          ],
        ]
      : []),
    ['meets budget', ...s.map((m) => (m.meetsBudget ? 'yes' : 'NO'))],
  ];
  // Max pooling is in every figure above, as its polynomial max trees: say so where the answer is.
  if (r.maxPooling) cmp.splice(cmp.length - 1, 0, ['max pooling', 'polynomial max', 'polynomial max']);
  return cmp;
}

/** The accuracy-cost frontier: per method, the best measured choice at each cost. */
function frontierTable(r: Report): string[] {
  const rows = [['method', 'levels', 'N', 'bootstraps', 'est. ms', 'measured drop', 'meets budget']];
  for (const p of r.frontier!.points)
    rows.push([
      p.method + (p.chosen ? ' *' : '') + (p.source === 'frontier' ? ' +' : ''),
      String(p.levels),
      String(p.ringSize),
      String(p.bootstraps),
      Number.isFinite(p.estLatencyMs) ? p.estLatencyMs.toFixed(0) : '-',
      f2(p.measuredDrop),
      p.meetsBudget ? 'yes' : 'no',
    ]);
  const n = r.frontier!.measured;
  const how = n ? `+ one of the ${n} choices --frontier measured` : '--frontier N measures N more choices';
  return [
    `accuracy-cost frontier (the best measured on held-out data at each cost; * the result; ${how}):`,
    pad(rows, [false, true, true, true, true, true, false]),
  ];
}

/** Which epoch's model the fine-tuning line judges, when a validation part chose it. */
function chosenEpoch(ft: NonNullable<Report['finetune']>): string {
  if (!ft.validationSamples || ft.chosenEpoch === undefined) return '';
  return `; epoch ${ft.chosenEpoch} chosen on ${ft.validationSamples} validation samples`;
}

/** Fine-tuning inside the choice: every choice fine-tuned, and the cheaper result it bought. */
function finetuneTries(r: Report): string[] {
  const ft = r.finetune!;
  const out: string[] = [];
  const where = (x: { levels: number; ringSize: number; bootstraps: number }) =>
    `${x.levels} levels, N=${x.ringSize}${x.bootstraps ? `, ${x.bootstraps} bootstraps` : ''}`;
  const kept = ft.tries?.find((t) => t.kept);
  if (ft.from && kept)
    out.push(
      `fine-tuning bought a cheaper result: ${where(kept)} at ${f2(kept.measuredDrop)} pp after fine-tuning, where the analysis alone chose ${where(ft.from)} (${f2(ft.from.measuredDrop)} pp)`,
    );
  if ((ft.tries?.length ?? 0) > 1 || ft.from)
    for (const t of ft.tries ?? [])
      out.push(
        `  tried ${where(t)}: ${f2(t.startDrop)} -> ${f2(t.measuredDrop)} pp (${t.seconds.toFixed(0)} s), ${t.kept ? 'kept' : `not kept: ${t.why}`}`,
      );
  return out;
}

export function renderReport(r: Report): string {
  const out: string[] = [];
  const metric = r.metric === 'top1-vs-labels' ? 'top-1 vs labels' : 'agreement with the original model (no labels)';
  const levels = r.bootstrapping.planned
    ? `bootstrapping every ${r.bootstrapping.levelsPerBootstrap} levels (${r.options.bootstrap ? 'as asked' : `deeper than SEAL's ${r.levelBudget} at N=${r.options.ringSize}`})`
    : `${r.levelBudget} levels (N=${r.options.ringSize})`;
  const target = r.options.target
    ? `, target: at most ${r.options.target.levels !== undefined ? `${r.options.target.levels} levels` : `${r.options.target.bootstraps} bootstraps`}`
    : '';
  const trees = r.layers.filter((l) => l.maxTree).length;
  const what = trees
    ? `${r.layers.length - trees} activations, ${r.maxPooling?.pools.length ?? 0} max pooling as ${trees} |x|`
    : `${r.layers.length} activations`;
  out.push(
    `he-approx ${r.tool.version}: ${r.model.name} (${what}), ${r.options.method === 'data' ? `data-guided${r.options.perChannel ? ' per-channel' : ''}` : r.options.method} fit, budget ${r.options.budget} pp, ${levels}${target}, backend ${r.backend}`,
  );
  out.push(
    `data: ${r.data.calibration} calibration + ${r.data.heldout} held-out samples (seed ${r.data.seed}); accuracy = ${metric}`,
  );
  out.push(`plaintext accuracy: ${p2(r.plaintext.accuracy)}`);
  out.push('');
  out.push(...layerTable(r));
  out.push(pad(comparison(r), [false, true, true]));
  out.push('');
  out.push(
    'refinements (measured on held-out data; * kept, ! unsafe): ' +
      r.refinements.map((x) => `${x.name} ${f2(x.measuredDrop)}${x.kept ? '*' : ''}${x.safe ? '' : '!'}`).join(' | '),
  );
  if (r.frontier?.points.length) out.push(...frontierTable(r));
  const ft = r.finetune;
  if (ft) {
    out.push(
      `fine-tuning (${ft.epochs} epochs, ${ft.seconds.toFixed(0)} s; weights and coefficients, same degrees and levels${ft.labelWeight === 0 ? "; no labels: on the original model's outputs" : ''}${ft.augment ? `; images augmented: ${describeAugmentation(ft.augment)}` : ''}): measured drop ${f2(ft.analysisDrop)} -> ${f2(ft.measuredDrop)} pp` +
        ` (per epoch ${ft.perEpoch.map((e) => `${f2(e.measuredDrop)}${e.safe ? '' : ' unsafe'}`).join(', ')}${chosenEpoch(ft)})${ft.safe ? '' : ', values UNSAFE'}; ${ft.kept ? 'kept' : ft.levelsUp?.length ? `not kept: its coefficients would cost ${ft.levelsUp.join(', ')} more levels` : "not kept: the analysis's result is better or safer"}` +
        `${ft.exported ? `, written to ${ft.exported}` : ''}`,
    );
    out.push(...finetuneTries(r));
    if (ft.notExported) out.push(`note: ${ft.notExported}`);
    for (const f of ft.frozen) out.push(`note: fine-tuning kept ${f.layer}'s kernel fixed (${f.reason})`);
  }
  const t = r.timings;
  out.push(
    `stages (s): ${STAGE_ORDER.filter((k) => !NESTED_STAGES.has(k) && t[k] !== undefined)
      .map((k) => `${k} ${t[k].toFixed(1)}`)
      .join(', ')}`,
  );
  if (r.maxPooling) {
    for (const p of r.maxPooling.pools)
      out.push(
        `max pooling ${p.layer}: ${p.steps.length} pairwise-max steps, |x| degrees ${p.degrees.join(', ')}, ${p.depth} levels${p.linear ? ' (linear pooling: every |x| a constant)' : ''}`,
      );
    out.push(
      `max pooling as average pooling instead (the usual substitute, same polynomials elsewhere): measured drop ${f2(r.maxPooling.averagePooling.drop)} pp (accuracy ${p2(r.maxPooling.averagePooling.accuracy)}), against ${f2(r.final.measuredDrop)} pp with the polynomial max`,
    );
  }
  out.push(
    `latency estimates: ${r.costs.source}` +
      (r.bootstrapping.planned && r.costs.engine !== 'lattigo'
        ? `; planned for bootstrapping, the network runs on Lattigo: 'he-approx costs --engine lattigo${r.bootstrapping.levelsPerBootstrap === DEFAULT_BOOTSTRAP_LEVELS ? '' : ` --bootstrap-levels ${r.bootstrapping.levelsPerBootstrap}`}' measures its costs and bootstrap time`
        : ''),
  );
  for (const n of r.notes) out.push(`note: ${n}`);
  for (const w of r.warnings) out.push(`warning: ${w}`);
  out.push(`time: ${r.timings.total.toFixed(1)} s`);
  return out.join('\n');
}
