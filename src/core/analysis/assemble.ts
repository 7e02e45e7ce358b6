/**
 * The report: every stage's output turned into the plain, serialisable `Report` the hosts
 * render (schema in docs/report-schema.md).
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import { ActivationCost, OpCosts, linearLevels, networkDepth, polyCost, spendSpareLevels } from '../cost/cost';
import { Fold, foldInto } from '../cost/fold';
import { planBootstraps } from '../cost/bootstrap';
import { criticalPath, fixedLevels } from '../cost/seriesParallel';
import { Fit, FitMethod, assessFit, polyOf } from '../fit/fit';
import { RING_LEVELS, ringFor } from '../he/params';
import { GraphNode, actSpec } from '../model/graph';
import { describeActivation } from '../numerics/activations';
import { ValueStats } from '../profile/stats';
import {
  DegreeResult,
  FrontierPoint,
  LayerReport,
  MethodSummary,
  REPORT_SCHEMA,
  REPORT_VERSION,
  Report,
  modelFileHashes,
} from '../report';
import type { FitStage } from './fitStage';
import { toolVersion } from '../version';
import { frontierReport, methodName } from './frontier';
import { reportOptions } from './settings';
import type { Inputs } from './inputs';
import { SearchResult, meetsBudget } from './search';
import type { Screen } from './sensitivity';
import { predictedDrop } from './sensitivity';
import type { AnalyzeOptions, Settings } from './settings';
import { Measurement, VALUE_BOUND } from './verify';

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

export { toolVersion };

export interface Assembly {
  o: AnalyzeOptions;
  s: Settings;
  inputs: Inputs;
  stats: Map<number, ValueStats>;
  fit: FitStage;
  screen: Screen;
  /** Per method, per activation, per candidate degree: its cost. */
  costs: Map<FitMethod, ActivationCost[][]>;
  foldable: boolean[];
  opCosts: OpCosts;
  backend: string;
  baseAccuracy: number;
  final: SearchResult;
  uniform: SearchResult;
  bootstrapping: boolean;
  linearDepth: number;
  /** Average pooling in place of the max poolings, measured (null without max pooling). */
  averagePooling: { accuracy: number; drop: number } | null;
  /** Frontier points measured for --frontier N and by fine-tuning inside the choice (none by default). */
  frontier: FrontierPoint[];
  /**
   * The kept fine-tuning's measured drop: the result the user deploys is the fine-tuned one (its
   * frontier point is marked). Absent when none was kept.
   */
  finetunedDrop?: number;
  timings: Record<string, number>;
}

/** What CKKS cannot evaluate as it is (softmax before the output), with the fix, and the warnings that say so. */
function incompatibilities(g: Assembly['inputs']['model']['graph']): {
  list: Report['heIncompatible'];
  warnings: string[];
} {
  const list: Report['heIncompatible'] = [];
  const warnings: string[] = [];
  for (const n of g.nodes.filter((x) => x.spec.op === 'softmax')) {
    warnings.push(
      `Layer '${n.layer}' applies softmax before the output; CKKS cannot evaluate it. Move softmax to the end or replace it.`,
    );
    list.push({
      layer: n.layer,
      className: n.className,
      problem: 'softmax before the output cannot be evaluated under CKKS (exp and division are not polynomials)',
      fix: 'move softmax to the end of the model (the client applies it after decryption) or replace it',
    });
  }
  return { list, warnings };
}

/** The max poolings as their trees run, from the final layers (null without max pooling). */
function maxPoolingReport(
  g: Assembly['inputs']['model']['graph'],
  layers: LayerReport[],
  averagePooling: Assembly['averagePooling'],
): Report['maxPooling'] {
  const trees = layers.filter((l) => l.maxTree);
  if (!trees.length || !averagePooling) return null;
  const pools = [...new Set(trees.map((l) => l.maxTree!.pool))];
  return {
    pools: pools.map((pool) => {
      const steps = trees.filter((l) => l.maxTree!.pool === pool);
      const nodes = g.nodes.filter((n) => n.name.startsWith(`${pool}/`));
      // The pooling's levels: its tree's own longest path (the steps run one after the other).
      const depth =
        steps.reduce((t, l) => t + l.chosen.depth, 0) +
        nodes.reduce((t, n) => t + (n.spec.op === 'pairmax' ? linearLevels(g, n) : 0), 0);
      return {
        pool,
        layer: steps[0].layer,
        className: steps[0].className,
        steps: steps.map((l) => l.name),
        degrees: steps.map((l) => l.chosen.degree),
        depth,
        linear: steps.every((l) => l.chosen.fold.form === 'constant'),
      };
    }),
    averagePooling,
  };
}

type Round = NonNullable<SearchResult['result']>;

/** Layer l's cost in a round with `extra` plan levels, from its final coefficients (never more than its candidate's: search.ts). */
function layerCost(a: Assembly, r: Round, l: number, extra: number): ActivationCost & { fold: Fold } {
  const n = a.inputs.acts[l];
  const fit = r.fits.get(n.id)!;
  return polyCost(a.inputs.model.graph, n, polyOf(fit, r.offsets.get(n.id)), fit.degree, a.opCosts, a.s.fold, extra);
}

const spareCache = new WeakMap<Round, number[]>();
/**
 * Each layer's extra plan levels (cost.ts: spendSpareLevels) within the chain of the smallest SEAL
 * ring that holds the round's network, capped by the level budget; none when bootstrapping or
 * unless asked (--spare-levels): the encrypted test sizes its chain to the levels used, so a spent
 * level lengthens every operation's modulus: every ciphertext and key carries one more prime
 * (README, "Measurements behind the defaults").
 */
function roundExtras(a: Assembly, r: Round): number[] {
  const have = spareCache.get(r);
  if (have) return have;
  const { acts } = a.inputs;
  const g = a.inputs.model.graph;
  let extras = acts.map(() => 0);
  if (a.s.spareLevels && !a.bootstrapping) {
    const depth = networkDepth(g, new Map(acts.map((n, l) => [n.id, layerCost(a, r, l, 0).depth])));
    const ring = ringFor(depth);
    if (ring !== null)
      extras = spendSpareLevels(g, acts, (l, e) => layerCost(a, r, l, e), Math.min(RING_LEVELS[ring], a.s.levelBudget));
  }
  spareCache.set(r, extras);
  return extras;
}

/** Layer l's cost in a round, spare levels spent. */
function roundCost(a: Assembly, r: Round, l: number): ActivationCost & { fold: Fold } {
  return layerCost(a, r, l, roundExtras(a, r)[l]);
}

function summary(a: Assembly, name: string, run: SearchResult): MethodSummary {
  const { acts } = a.inputs;
  const g = a.inputs.model.graph;
  const r = run.result;
  if (!r) {
    return {
      method: name,
      degrees: {},
      activationDepth: NaN,
      networkDepth: NaN,
      nonScalarMults: NaN,
      latencyMs: NaN,
      predictedDrop: NaN,
      measuredDrop: NaN,
      accuracy: NaN,
      meetsBudget: false,
      rounds: run.rounds,
      checks: run.checks,
      attempts: run.attempts,
      safe: false,
      maxAbs: NaN,
      bootstraps: NaN,
    };
  }
  const cost = (l: number) => roundCost(a, r, l);
  const depths = new Map(acts.map((n, l) => [n.id, cost(l).depth]));
  const levels = fixedLevels(g);
  for (const [id, d] of depths) levels[id] = d;
  const critical = criticalPath(g, levels, (n) => n.spec.op === 'activation');
  // Optimal plans: the levels the degrees need, and so the bootstraps a library with bootstrapping would spend.
  const minimal = new Map(acts.map((n, l) => [n.id, layerCost(a, r, l, 0).depth]));
  return {
    method: name,
    degrees: Object.fromEntries(acts.map((n, l) => [n.name, cost(l).degree])),
    activationDepth: critical.activation,
    networkDepth: networkDepth(g, depths),
    minimalDepth: networkDepth(g, minimal),
    nonScalarMults: acts.reduce((s, _, l) => s + cost(l).nonScalarMults, 0),
    latencyMs: acts.reduce((s, _, l) => s + cost(l).latencyMs, 0),
    predictedDrop: r.pick.predictedDrop,
    measuredDrop: r.drop,
    accuracy: r.measured.accuracy,
    meetsBudget: meetsBudget(r, a.s.budget),
    rounds: run.rounds,
    checks: run.checks,
    attempts: run.attempts,
    safe: r.measured.safe,
    maxAbs: r.measured.maxAbs,
    bootstraps: planBootstraps(g, minimal, a.s.bootstrapLevels).bootstraps,
  };
}

function layerReports(a: Assembly, fr: NonNullable<SearchResult['result']>): LayerReport[] {
  const { acts } = a.inputs;
  const { s, screen } = a;
  const dropAlone = (m: FitMethod, l: number, k: number) => predictedDrop(screen, [screen.dm.get(m)![l][k]]);
  return acts.map((n, l) => {
    const st = a.stats.get(n.id)!;
    const act = actSpec(n);
    const fit = fr.fits.get(n.id)!;
    const k = fr.pick.picks[l];
    const c = roundCost(a, fr, l);
    const range = fr.measured.layers[l];
    const layerDrop = dropAlone(s.method, l, k);
    const w = layerWarnings(a, n, fit, range, st, layerDrop);
    const uq = assessFit(act, fit.coeffs, fit.interval, st.sample, st);
    const rows = (m: 'data' | 'uniform'): DegreeResult[] =>
      a.fit.candidates.get(m)![l].map((f, j) => ({
        degree: f.degree,
        depth: a.costs.get(m)![l][j].depth,
        nonScalarMults: a.costs.get(m)![l][j].nonScalarMults,
        drop: dropAlone(m, l, j),
        rmsData: f.rmsData,
        maxErrObserved: f.maxErrObserved,
        maxAbsInterval: f.maxAbsInterval,
      }));
    const off = fr.offsets.get(n.id);
    const ur = a.uniform.result;
    const uk = ur?.pick.picks[l];
    return {
      node: n.id,
      name: n.name,
      layer: n.layer,
      className: n.className,
      activation: describeActivation(act),
      fused: n.name.endsWith('/activation'),
      stats: {
        count: st.count,
        min: st.min,
        max: st.max,
        mean: st.mean,
        std: st.std,
        percentiles: st.percentiles,
        histogram: st.histogram,
      },
      interval: a.fit.intervals[l],
      affineFoldable: a.foldable[l],
      sensitivity: { data: rows('data'), uniform: rows('uniform') },
      chosen: {
        method: fit.method,
        degree: fit.degree,
        basis: 'chebyshev',
        interval: fit.interval,
        coeffs: fit.coeffs,
        channelOffset: off ? Array.from(off) : null,
        channels: fit.channels ?? null,
        depth: c.depth,
        polyDepth: c.polyDepth,
        affineLevel: c.affineLevel,
        fold: {
          ...c.fold,
          into: c.fold.intoPrevious && c.fold.form !== 'constant' ? foldInto(a.inputs.model.graph, n) : null,
        },
        nonScalarMults: c.nonScalarMults,
        latencyMs: c.latencyMs,
        predictedDrop: layerDrop,
        rmsData: uq.rmsData,
        maxErrObserved: uq.maxErrObserved,
        maxAbsInterval: uq.maxAbsInterval,
        heldoutOutside: {
          fraction: range.fractionOutside,
          count: range.valuesOutside,
          samples: range.samplesOutside,
          min: range.min,
          max: range.max,
          maxAbsIn: range.maxAbsIn,
          maxAbsOut: range.maxAbsOut,
          nonFinite: range.nonFinite,
        },
      },
      uniformChosen:
        uk === undefined || !ur
          ? null
          : {
              degree: roundCost(a, ur, l).degree,
              depth: roundCost(a, ur, l).depth,
              predictedDrop: dropAlone('uniform', l, uk),
            },
      maxTree: treeOf(n),
      warnings: w,
    };
  });
}

/** Warnings about one activation: held-out values outside its interval or beyond CKKS, a constant input, a large share of the budget. */
function layerWarnings(
  a: Assembly,
  n: GraphNode,
  fit: Fit,
  range: Measurement['layers'][number],
  st: ValueStats,
  layerDrop: number,
): string[] {
  const { s } = a;
  const w: string[] = [];
  if (range.samplesOutside > 0) {
    const where = fit.channels
      ? "outside their channels' intervals"
      : `outside its interval [${fit.interval.a.toPrecision(4)}, ${fit.interval.b.toPrecision(4)}]`;
    w.push(
      `${range.valuesOutside} held-out values in ${range.samplesOutside} samples (${(100 * range.fractionOutside).toPrecision(2)}% of values) reach ${n.name} ${where} (seen ${range.min.toPrecision(4)}..${range.max.toPrecision(4)}, largest magnitude out ${range.maxAbsOut.toPrecision(3)}); widen it with --margin or calibrate on more data`,
    );
  }
  if (range.nonFinite > 0 || Math.max(range.maxAbsIn, range.maxAbsOut) >= VALUE_BOUND) {
    w.push(
      `held-out values at ${n.name} ${range.nonFinite ? 'are not finite' : `reach ${Math.max(range.maxAbsIn, range.maxAbsOut).toPrecision(3)}`}, beyond the ${VALUE_BOUND} a CKKS ciphertext holds with a 40-bit scale: the polynomials upstream extrapolate; raise --margin or --margin-growth`,
    );
  }
  if (st.max - st.min <= 1e-6 * Math.max(1, Math.abs(st.max))) {
    w.push(
      `${n.name} receives the constant ${st.min.toPrecision(4)} on every calibration sample (a dead layer?): its polynomial is fitted on a degenerate interval; check the layer before and the calibration data`,
    );
  }
  if (layerDrop > 0.5 * s.budget && a.inputs.acts.length > 1)
    w.push(
      `${n.name} alone uses ${((100 * layerDrop) / s.budget).toFixed(0)}% of the accuracy budget at degree ${fit.degree} (predicted)`,
    );
  return w;
}

/** Where an |x| sits in its max pooling's tree, for the report (null for an activation). */
function treeOf(n: GraphNode): LayerReport['maxTree'] {
  const t = n.spec.op === 'activation' ? n.spec.maxTree : undefined;
  return t ? { pool: t.pool, axis: t.axis === 0 ? 'height' : 'width', offset: t.offset, step: t.step } : null;
}

export function screenStandardError(budgetPp: number, samples: number): number {
  const p = Math.min(0.5, Math.max(budgetPp / 100, 1 / samples));
  return 100 * Math.sqrt((p * (1 - p)) / samples);
}

/** Warnings about the whole result: a missed budget, unsafe values, a uniform baseline that cannot meet the budget. */
function reportWarnings(a: Assembly, final: MethodSummary): string[] {
  const { s } = a;
  const warnings: string[] = [];
  const tuned = a.finetunedDrop;
  if (final.measuredDrop > s.budget + 1e-9 && tuned !== undefined && tuned <= s.budget + 1e-9) {
    warnings.push(
      `With your weights the measured drop ${final.measuredDrop.toFixed(2)} pp exceeds the ${s.budget} pp budget; the fine-tuned weights measure ${tuned.toFixed(2)} pp, within it: deploy the fine-tuned model (--out writes it to finetuned/).`,
    );
  } else if (final.measuredDrop > s.budget + 1e-9) {
    warnings.push(
      `The measured drop ${final.measuredDrop.toFixed(2)} pp exceeds the ${s.budget} pp budget: it is the best of the ${final.rounds} choices the search measured on held-out data; ` +
        `allow higher degrees (--degrees), more levels (--level-budget, --ring-size) or a larger budget.`,
    );
  }
  if (!final.safe)
    warnings.push(
      `Held-out values of the approximated model leave what a CKKS ciphertext holds (|x| < ${VALUE_BOUND}): an encrypted run would be corrupted. Raise --margin or --margin-growth.`,
    );
  if (!a.uniform.result)
    warnings.push(
      `The uniform baseline cannot meet the budget within ${a.bootstrapping ? 'the candidate degrees' : `${s.levelBudget} levels`}.`,
    );
  return warnings;
}

/** Notes: the model's and the data's, how max pooling runs, and why (and how) the network is planned for bootstrapping. */
function reportNotes(
  a: Assembly,
  final: MethodSummary,
  uniform: MethodSummary,
  maxPooling: Report['maxPooling'],
): string[] {
  const { s, inputs } = a;
  const notes = [...inputs.model.graph.notes, ...inputs.ds.notes];
  if (maxPooling) {
    const n = maxPooling.pools.reduce((t, p) => t + p.steps.length, 0);
    notes.push(
      `Max pooling (${maxPooling.pools.map((p) => `'${p.layer}'`).join(', ')}) runs as trees of pairwise maxima, max(a, b) = (a + b)/2 + |a - b|/2, whose ${n} |x| are fitted to the differences that reach them and chosen like activations: every figure above includes them. ` +
        `Average pooling in their place (with the same polynomials elsewhere) measured ${maxPooling.averagePooling.drop.toFixed(2)} pp.`,
    );
    for (const p of maxPooling.pools)
      if (p.linear)
        notes.push(
          `Max pooling '${p.layer}': every |x| of its tree is a constant (degree 1 or less): it runs as a linear (average-like) pooling plus a constant, at no level, because that measured within the budget at less cost.`,
        );
  }
  if (!inputs.acts.length) notes.push('The model has no non-polynomial activation: nothing to approximate.');
  if (a.bootstrapping) {
    const why = s.bootstrap
      ? 'As asked (--bootstrap), it is planned'
      : `The network needs more levels than SEAL's ${s.levelBudget} at N=${s.ringSize} (linear layers alone: ${a.linearDepth}), or its choices within them miss the budget; it is planned`;
    notes.push(
      `${why} for a CKKS library with bootstrapping (${s.bootstrapLevels} levels between bootstraps, --bootstrap-levels): ${final.bootstraps} bootstraps with the chosen degrees, ${uniform.bootstraps} with the uniform baseline's. ` +
        '`encrypted-test` runs it on Lattigo, bootstrapping where the plan says (SEAL has no bootstrapping); `--layer-only` tests each activation.',
    );
  }
  return notes;
}

/** The report's frontier: both searches' rounds (the method's and the uniform baseline's) and the points measured besides. */
function reportFrontier(a: Assembly, final: MethodSummary) {
  const runs: [FitMethod, SearchResult][] = [[a.s.method, a.final]];
  if (a.s.method !== 'uniform') runs.push(['uniform', a.uniform]);
  const searches = runs.map(([method, run]) => ({
    method,
    candidates: a.fit.candidates.get(method)!,
    attempts: run.attempts,
  }));
  const method = a.finetunedDrop !== undefined ? `${final.method} + fine-tuning` : final.method;
  return frontierReport(a.inputs.model.graph, a.inputs.acts, a.s, searches, a.frontier, {
    method,
    degrees: final.degrees,
  });
}

export function assembleReport(a: Assembly): Report {
  const { o, s, inputs } = a;
  const { model, ds, split } = inputs;
  const g = model.graph;
  const fr = a.final.result!;
  const layers = layerReports(a, fr);
  const incompatible = incompatibilities(g);
  const maxPooling = maxPoolingReport(g, layers, a.averagePooling);
  const final = summary(a, methodName(s.method), a.final);
  const uniform = summary(a, 'uniform', a.uniform);
  const warnings = [...incompatible.warnings, ...layers.flatMap((l) => l.warnings), ...reportWarnings(a, final)];
  const notes = reportNotes(a, final, uniform, maxPooling);
  return {
    schema: REPORT_SCHEMA,
    version: REPORT_VERSION,
    tool: { name: 'he-approx', version: toolVersion() },
    createdAt: new Date().toISOString(),
    model: {
      path: model.path,
      name: g.name,
      format: model.format,
      layout: model.keras?.layout ?? model.format,
      inputShape: g.inputShape,
      ...modelFileHashes(model.path),
      notes: g.notes,
    },
    data: {
      path: o.data,
      labels: o.labels ?? null,
      heldoutPath: o.heldoutData ?? null,
      samples: ds.count,
      calibration: split.calib.length,
      heldout: split.heldout.length,
      seed: s.seed,
      sha256: sha256(o.data),
      notes: [...new Set(ds.notes)],
    },
    options: reportOptions(a.s, a.inputs.prep, !!a.inputs.ds.labels),
    backend: a.backend,
    costs: a.opCosts,
    metric: ds.labels ? 'top1-vs-labels' : 'agreement-with-original',
    plaintext: { accuracy: a.baseAccuracy },
    layers,
    final,
    uniform,
    refinements: fr.refinements,
    frontier: reportFrontier(a, final),
    maxPooling,
    heIncompatible: incompatible.list,
    levelBudget: s.levelBudget,
    linearDepth: a.linearDepth,
    bootstrapping: { planned: a.bootstrapping, levelsPerBootstrap: s.bootstrapLevels },
    valueBound: VALUE_BOUND,
    // A predicted drop counts flips among the screen's samples: near a budget's worth of flips
    // (rate p), its binomial standard error.
    screen: { samples: a.screen.samples, standardErrorPp: screenStandardError(s.budget, a.screen.samples) },
    warnings,
    notes,
    timings: a.timings,
  };
}
