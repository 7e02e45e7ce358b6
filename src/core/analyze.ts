/**
 * The analysis pipeline: profile the activations' inputs on calibration data, fit polynomials,
 * measure each layer's sensitivity on held-out data, choose per-layer degrees under the accuracy
 * and level budgets, refine the fits, and verify the whole approximated model on held-out data,
 * tightening the budget until the measured drop fits. The same for a uniform-interval baseline.
 * Pure core: no printing, progress through a callback, cancellation through an AbortSignal.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import { UserError } from './errors';
import { OpCosts, activationCost, affineFoldable, networkDepth, publishedCosts } from './cost/cost';
import { cachedSealCosts } from './cost/sealCosts';
import { Dataset, InputNormalization, InputPrep, InputScale, loadDataset, splitIndices } from './data/read';
import { Fit, FitMethod, assessChannels, assessFit, chooseInterval, fitDataGuidedAll, fitDegrees, fitValue, polyOf } from './fit/fit';
import { TUNE_DEFAULTS, tuneCoefficients } from './fit/tune';
import { initBackend } from './model/backend';
import { Executor, PolyActivation } from './model/execute';
import { GraphNode, actSpec, activationNodes } from './model/graph';
import { LoadedModel, loadModel } from './model/load';
import { describeActivation } from './numerics/activations';
import { HeldoutCache, Progress, captureValues, predictFull, profileActivations } from './profile/profiler';
import { CHANNEL_RESERVOIR, ChannelStats, ValueStats } from './profile/stats';
import { Rng } from './rng';
import {
  ChosenFit, DegreeResult, LayerReport, MethodSummary, REPORT_SCHEMA, REPORT_VERSION, Refinement, Report, SelectionAttempt, modelFileHashes,
} from './report';
import { Choice, Selection, selectDegrees } from './select';

export interface AnalyzeOptions {
  model: string;
  data: string;
  labels?: string | null;
  /** Held-out data from a separate file (then all of `data`, or `calib` of it, calibrates). */
  heldoutData?: string | null;
  heldoutLabels?: string | null;
  /** Accuracy budget in percentage points. */
  budget?: number;
  /** Total levels available (default: SEAL at N=32768 with a 40-bit scale). */
  levelBudget?: number;
  calib?: number;
  heldout?: number;
  seed?: number;
  scale?: InputScale;
  /** Per-channel normalisation after scaling (e.g. ImageNet's mean and std for the CIFAR ResNets). */
  normalize?: InputNormalization | null;
  degrees?: number[];
  /** Interval margin as a fraction of the observed range on each side. */
  margin?: number;
  /** Weight of the uniform floor in the data-guided fit. */
  floor?: number;
  batchSize?: number;
  reservoir?: number;
  /** Calibration samples used by the propagation-aware refit and the mean-shift correction. */
  refineSamples?: number;
  ringSize?: number;
  /** Fitting method for the final model. */
  method?: FitMethod;
  /** Data-guided fits per channel (default) or one per layer (see fitChannelsAll). */
  perChannel?: boolean;
  /** Also try coefficient tuning by distillation as a refinement (default true; see fit/tune.ts). */
  tune?: boolean;
  /** Weight of the labels' cross-entropy in tuning's loss, 0..1 (default TUNE_DEFAULTS.labelWeight;
   * 0 tunes for agreement with the original model alone). Ignored without labels. */
  tuneLabelWeight?: number;
  costs?: OpCosts;
  signal?: AbortSignal;
  onProgress?: Progress;
}

/** Levels SEAL offers at 128-bit security with 60-bit end primes and a 40-bit scale. */
export const SEAL_LEVELS: Record<number, number> = { 8192: 2, 16384: 7, 32768: 19 };

export const DEFAULT_DEGREES = [1, 2, 3, 5, 7, 11, 15, 23, 31, 47, 63];

const pct = (x: number) => 100 * x;

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

interface Stage { name: string; weight: number }

/** One selection round's outcome: the degrees, the kept refinement, and what it measured. */
interface Attempt {
  sel: Selection;
  fits: Map<number, Fit>;
  offsets: Map<number, Float32Array | null>;
  accuracy: number;
  captured: Map<number, Float32Array>;
  refinements: Refinement[];
}

export async function analyze(o: AnalyzeOptions): Promise<Report> {
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const lap = (name: string, since: number) => { timings[name] = (Date.now() - since) / 1000; };
  const budget = o.budget ?? 1.0;
  const ringSize = o.ringSize ?? 32768;
  const levelBudget = o.levelBudget ?? SEAL_LEVELS[ringSize] ?? 19;
  const degrees = [...new Set(o.degrees ?? DEFAULT_DEGREES)].sort((a, b) => a - b);
  if (degrees.some((d) => !Number.isInteger(d) || d < 1 || d > 63)) {
    throw new UserError('OPTION_INVALID', `degrees must be integers in 1..63, got ${degrees.join(',')}`, 'pass --degrees like 3,5,7,15');
  }
  if (!(budget > 0)) throw new UserError('OPTION_INVALID', `accuracy budget must be positive, got ${o.budget}`, 'pass --budget in percentage points, e.g. 1.0');
  // Defaults measured on the bundled examples (bench/fitQuality): a floor of 0.001 and a 2% margin
  // gave lower drops than 0.005-0.05 / 5% for both the data-guided fit and the uniform baseline.
  const margin = o.margin ?? 0.02;
  const floor = o.floor ?? 0.001;
  const batchSize = o.batchSize ?? 256;
  const reservoir = o.reservoir ?? 16384;
  const refineSamples = o.refineSamples ?? 2048;
  const seed = o.seed ?? 1;
  const method: FitMethod = o.method ?? 'data';
  const perChannel = o.perChannel ?? true;
  const tune = o.tune ?? true;
  const labelWeight = o.tuneLabelWeight ?? TUNE_DEFAULTS.labelWeight;
  if (!(labelWeight >= 0 && labelWeight <= 1)) throw new UserError('OPTION_INVALID', `tuning label weight must be in [0, 1], got ${labelWeight}`, 'pass --tune-labels between 0 (match the original model only) and 1 (labels only)');
  if (typeof o.scale === 'number' && !(o.scale > 0 && Number.isFinite(o.scale))) {
    throw new UserError('OPTION_INVALID', `input scale must be 'auto', 'none' or a positive number, got ${o.scale}`, 'pass --input-scale auto, none or a positive divisor (setting heApprox.inputScale)');
  }
  const costs = o.costs ?? cachedSealCosts(ringSize) ?? publishedCosts(ringSize);
  const stages: Stage[] = [
    { name: 'profile', weight: 10 }, { name: 'cache', weight: 10 }, { name: 'fit', weight: 5 }, { name: 'sensitivity', weight: 45 },
    { name: 'select', weight: 25 }, { name: 'finish', weight: 5 },
  ];
  const total = stages.reduce((s, x) => s + x.weight, 0);
  const progress = (stage: string, f: number, msg: string) => {
    let before = 0;
    for (const s of stages) { if (s.name === stage) break; before += s.weight; }
    const w = stages.find((s) => s.name === stage)!.weight;
    o.onProgress?.((before + w * Math.min(1, f)) / total, msg);
  };

  let t = Date.now();
  const model: LoadedModel = await loadModel(o.model);
  const g = model.graph;
  const acts = activationNodes(g);
  const prep: InputPrep = { scale: o.scale ?? 'auto', normalize: o.normalize ?? null, layout: g.inputLayout };
  const calibDs: Dataset = loadDataset(o.data, o.labels ?? null, g.inputShape, prep);
  const heldDs: Dataset | null = o.heldoutData ? loadDataset(o.heldoutData, o.heldoutLabels ?? null, g.inputShape, prep) : null;
  if (heldDs && !!heldDs.labels !== !!calibDs.labels) {
    throw new UserError('LABELS_MISMATCH', 'labels were given for only one of --data and --heldout-data', 'pass --labels and --heldout-labels together, or neither');
  }
  let ds: Dataset;
  let split: { calib: Int32Array; heldout: Int32Array };
  let nCalib: number;
  let nHeld: number;
  if (heldDs) {
    // Two files: concatenate them so one index space serves both; no sample crosses sides.
    nCalib = o.calib ?? calibDs.count;
    nHeld = o.heldout ?? Math.min(5000, heldDs.count);
    const a = splitIndices(calibDs.count, nCalib, 0, seed).calib;
    const b = splitIndices(heldDs.count, nHeld, 0, seed + 1).calib.map((i) => i + calibDs.count);
    const x = new Float32Array(calibDs.x.length + heldDs.x.length);
    x.set(calibDs.x); x.set(heldDs.x, calibDs.x.length);
    const labels = calibDs.labels && heldDs.labels ? Int32Array.from([...calibDs.labels, ...heldDs.labels]) : null;
    ds = { sampleShape: g.inputShape, count: calibDs.count + heldDs.count, x, labels, notes: [...calibDs.notes, ...heldDs.notes] };
    split = { calib: a, heldout: b };
  } else {
    ds = calibDs;
    nCalib = o.calib ?? Math.min(5000, Math.floor(ds.count / 2));
    nHeld = o.heldout ?? Math.min(5000, ds.count - nCalib);
    split = splitIndices(ds.count, nCalib, nHeld, seed);
  }
  if (nHeld < 1) throw new UserError('OPTION_INVALID', `no held-out samples (${nHeld})`, 'pass --heldout N with N >= 1, or --heldout-data');
  lap('load', t);
  const backend = await initBackend();
  const ex = new Executor(g);
  try {
    const warnings: string[] = [];
    const notes = [...g.notes, ...ds.notes];
    if (acts.length === 0) notes.push('The model has no non-polynomial activation: nothing to approximate.');
    const heIncompatible: Report['heIncompatible'] = [];
    for (const s of g.nodes.filter((n) => n.spec.op === 'softmax')) {
      warnings.push(`Layer '${s.layer}' applies softmax before the output; CKKS cannot evaluate it. Move softmax to the end or replace it.`);
      heIncompatible.push({ layer: s.layer, className: s.className, problem: 'softmax before the output cannot be evaluated under CKKS (exp and division are not polynomials)',
        fix: 'move softmax to the end of the model (the client applies it after decryption) or replace it' });
    }

    // 1. Profile the calibration data.
    t = Date.now();
    const stats = await profileActivations(ex, ds, split.calib, { batchSize, reservoir, seed, channels: perChannel, signal: o.signal,
      onProgress: (f, m) => progress('profile', f, m) });
    lap('profile', t);

    // 2. Cache the held-out data's live values and the original predictions.
    t = Date.now();
    const cache = await HeldoutCache.build(ex, ds, split.heldout, { batchSize, signal: o.signal, onProgress: (f, m) => progress('cache', f, m) });
    const base = cache.baseline();
    lap('cache', t);

    // 3. Fit every candidate degree, data-guided and uniform.
    t = Date.now();
    const intervals = new Map<number, { a: number; b: number }>();
    const fits = new Map<number, Record<'data' | 'uniform' | 'minimax', Fit[]>>();
    acts.forEach((a, k) => {
      const st = stats.get(a.id)!;
      const iv = chooseInterval(st, margin);
      intervals.set(a.id, iv);
      fits.set(a.id, {
        data: fitDegrees('data', actSpec(a), st, iv, degrees, floor, perChannel ? margin : undefined),
        uniform: fitDegrees('uniform', actSpec(a), st, iv, degrees, floor),
        minimax: method === 'minimax' ? fitDegrees('minimax', actSpec(a), st, iv, degrees, floor) : [],
      });
      progress('fit', (k + 1) / acts.length, `fitted ${a.name}`);
    });
    lap('fit', t);

    // 4. Sensitivity: the drop when only layer L uses each fit, re-running from L on cached values.
    t = Date.now();
    const sens = new Map<number, Record<'data' | 'uniform' | 'minimax', number[]>>();
    const sensMethods: FitMethod[] = method === 'minimax' ? ['minimax', 'uniform', 'data'] : ['data', 'uniform'];
    let done = 0;
    const jobs = acts.length * degrees.length * sensMethods.length;
    for (const a of acts) {
      const r: Record<'data' | 'uniform' | 'minimax', number[]> = { data: [], uniform: [], minimax: [] };
      for (const m of sensMethods) {
        for (const fit of fits.get(a.id)![m]) {
          const { pred } = await cache.predictFrom(a.id, { replace: new Map([[a.id, polyOf(fit)]]) }, o.signal);
          r[m].push(pct(base.accuracy - cache.score(pred).accuracy));
          progress('sensitivity', ++done / jobs, `sensitivity ${a.name} ${m} degree ${fit.degree}`);
        }
      }
      sens.set(a.id, r);
    }
    lap('sensitivity', t);

    // 5. Select degrees under the budgets, refine, verify on held-out data, tighten if needed.
    t = Date.now();
    const foldable = new Map(acts.map((a) => [a.id, affineFoldable(g, a)]));
    const actCost = (a: GraphNode, d: number) => activationCost(d, foldable.get(a.id)!, costs);
    const linearDepth = networkDepth(g, new Map());
    const choicesFor = (m: FitMethod): Choice[][] => acts.map((a) => degrees.map((d, i) => {
      const c = actCost(a, d);
      return { degree: d, depth: c.depth, mults: c.nonScalarMults, drop: sens.get(a.id)![m][i] };
    }));
    const refineIdx = split.calib.slice(0, Math.min(refineSamples, split.calib.length));
    const origMeans = await originalChannelMeans(ex, ds, refineIdx, acts, batchSize, o.signal);

    const measure = async (polys: Map<number, PolyActivation>) => {
      const first = acts[0].id;
      const { pred, captured } = await cache.predictFrom(first, { replace: polys }, o.signal, acts.map((a) => a.inputs[0]));
      return { accuracy: cache.score(pred).accuracy, captured };
    };

    const runMethod = async (m: FitMethod, withRefinements: boolean) => {
      let eff = budget;
      let rounds = 0;
      let result: Attempt | null = null;
      const choices = choicesFor(m);
      const attempts: SelectionAttempt[] = [];
      const dropOf = (r: Attempt) => pct(base.accuracy - r.accuracy);
      // One round: the chosen degrees' fits and their refinements, each measured; the best kept.
      const evaluate = async (sel: Selection): Promise<Attempt> => {
        rounds++;
        const chosen = new Map(acts.map((a, i) => [a.id, fits.get(a.id)![m][sel.picks[i]]]));
        const variants: { name: Refinement['name']; description: string; fits: Map<number, Fit>; offsets: Map<number, Float32Array | null> }[] = [
          { name: 'plain', description: `each ${perChannel && m === 'data' ? 'channel' : 'layer'} fitted to the data recorded in the original model`, fits: chosen, offsets: new Map() },
        ];
        if (withRefinements && [...chosen.values()].some((f) => f.channels)) {
          // The same degrees with one polynomial per layer: kept only if it measures better.
          const layerWide = new Map(acts.map((a) => {
            const f = chosen.get(a.id)!;
            const st = stats.get(a.id)!;
            return [a.id, { ...f, channels: undefined, ...assessFit(actSpec(a), f.coeffs, f.interval, st.sample, st) }];
          }));
          variants.push({ name: 'per-layer', description: 'one polynomial per layer instead of one per channel', fits: layerWide, offsets: new Map() });
        }
        if (withRefinements && acts.length > 0) {
          const prop = await propagate(ex, ds, refineIdx, acts, chosen, origMeans, { margin, floor, batchSize, reservoir, seed, refit: true, shift: false, signal: o.signal });
          const shift = await propagate(ex, ds, refineIdx, acts, chosen, origMeans, { margin, floor, batchSize, reservoir, seed, refit: false, shift: true, signal: o.signal });
          const both = await propagate(ex, ds, refineIdx, acts, chosen, origMeans, { margin, floor, batchSize, reservoir, seed, refit: true, shift: true, signal: o.signal });
          variants.push(
            { name: 'propagation', description: 'each layer refitted, in order, to the data reaching it when the earlier layers are already approximated', ...prop },
            { name: 'mean-shift', description: 'per-channel mean error of each approximated layer subtracted (foldable into the next layer\'s bias)', ...shift },
            { name: 'propagation+mean-shift', description: 'both of the above', ...both },
          );
        }
        const measured: (Refinement & { captured: Map<number, Float32Array>; fits: Map<number, Fit>; offsets: Map<number, Float32Array | null> })[] = [];
        const measureVariant = async (v: typeof variants[number]) => {
          const polys = new Map(acts.map((a) => [a.id, polyOf(v.fits.get(a.id)!, v.offsets.get(a.id))]));
          const r = await measure(polys);
          measured.push({ name: v.name, description: v.description, accuracy: r.accuracy, measuredDrop: pct(base.accuracy - r.accuracy), kept: false,
            captured: r.captured, fits: v.fits, offsets: v.offsets });
        };
        // Keep the variant with the lowest measured drop; ties go to the simpler (earlier) one.
        const lowest = () => measured.reduce((b, v) => (v.measuredDrop < b.measuredDrop - 1e-9 ? v : b));
        for (const v of variants) await measureVariant(v);
        if (withRefinements && tune && acts.length > 0) {
          // Tune the best variant so far: all layers' coefficients together, same degrees and intervals.
          const from = lowest();
          const tuned = await tuneCoefficients(ex, ds, refineIdx, acts, from.fits, from.offsets, stats, { ...TUNE_DEFAULTS, labelWeight, seed, signal: o.signal,
            onProgress: (f, msg) => progress('select', (rounds - 1 + f) / 4, `${m}: round ${rounds}, ${msg}`) });
          await measureVariant({ name: 'tuned', description: `the ${from.name} fits' coefficients tuned together so that the approximated model's outputs match the original's on calibration data (distillation${ds.labels && labelWeight > 0 ? `, mixed with the cross-entropy against the labels at weight ${labelWeight}` : ''}; same degrees and intervals)`,
            fits: tuned, offsets: from.offsets });
        }
        const best = lowest();
        best.kept = true;
        return { sel, fits: best.fits, offsets: best.offsets, accuracy: best.accuracy, captured: best.captured,
          refinements: measured.map(({ name, description, accuracy, measuredDrop, kept }) => ({ name, description, accuracy, measuredDrop, kept })) };
      };
      const record = (r: Attempt, why: SelectionAttempt['why']) => {
        const drop = dropOf(r);
        attempts.push({ why, degrees: Object.fromEntries(acts.map((a) => [a.name, r.fits.get(a.id)!.degree])), activationDepth: r.sel.depth,
          predictedDrop: r.sel.predictedDrop, measuredDrop: drop, meetsBudget: drop <= budget + 1e-9 });
        progress('select', rounds / 4, `${m}: round ${rounds}, activation depth ${r.sel.depth}, measured drop ${drop.toFixed(2)} pp`);
        return drop;
      };
      let bestOver = null as Attempt | null;
      while (rounds < 8) {
        let sel = selectDegrees(choices, eff, levelBudget - linearDepth);
        // Nothing meets the budget even as predicted: measure the most accurate choice that fits.
        if (!sel && rounds === 0) sel = selectDegrees(choices, eff, levelBudget - linearDepth, 'accurate');
        if (!sel) break;
        const why = rounds === 0 ? 'selected' : 'tightened';
        result = await evaluate(sel);
        const drop = record(result, why);
        if (drop <= budget + 1e-9) { bestOver = null; break; }
        // Over budget: remember the best attempt in case no round meets the budget.
        if (!bestOver || result.accuracy > bestOver.accuracy) bestOver = result;
        // The additive prediction was optimistic: shrink the budget in proportion and try again.
        const next = Math.min(eff * 0.7, eff * budget / Math.max(drop, 1e-9) * 0.9);
        if (sel.predictedDrop <= 1e-12) break; // Already the most accurate choice the candidates allow.
        eff = Math.min(next, sel.predictedDrop * 0.9);
      }
      if (bestOver) result = bestOver;
      return { result, rounds, attempts };
    };

    const finalRun = await runMethod(method, true);
    const uniformRun = await runMethod('uniform', false);
    lap('select', t);
    if (!finalRun.result) {
      const least = acts.reduce((sum, a) => sum + Math.min(...degrees.map((d) => actCost(a, d).depth)), 0);
      throw new UserError('BUDGET_INFEASIBLE', `no choice of degrees in {${degrees.join(', ')}} fits ${levelBudget} levels: the linear layers need ${linearDepth} and the activations at least ${least}`,
        'raise --level-budget (or --ring-size), or allow lower degrees with --degrees');
    }

    // 6. Assemble the report.
    t = Date.now();
    const summary = (name: string, run: Awaited<ReturnType<typeof runMethod>>): MethodSummary => {
      const r = run.result;
      if (!r) {
        return { method: name, degrees: {}, activationDepth: NaN, networkDepth: NaN, nonScalarMults: NaN, latencyMs: NaN, predictedDrop: NaN,
          measuredDrop: NaN, accuracy: NaN, meetsBudget: false, rounds: run.rounds, attempts: run.attempts };
      }
      const depths = new Map(acts.map((a) => [a.id, actCost(a, r.fits.get(a.id)!.degree).depth]));
      const lat = acts.reduce((s, a) => s + actCost(a, r.fits.get(a.id)!.degree).latencyMs, 0);
      const drop = pct(base.accuracy - r.accuracy);
      return { method: name, degrees: Object.fromEntries(acts.map((a) => [a.name, r.fits.get(a.id)!.degree])), activationDepth: r.sel.depth,
        networkDepth: networkDepth(g, depths), nonScalarMults: r.sel.mults, latencyMs: lat, predictedDrop: r.sel.predictedDrop, measuredDrop: drop,
        accuracy: r.accuracy, meetsBudget: drop <= budget + 1e-9, rounds: run.rounds, attempts: run.attempts };
    };
    const fr = finalRun.result;
    const layers: LayerReport[] = acts.map((a) => {
      const st = stats.get(a.id)!;
      const act = actSpec(a);
      const fit = fr.fits.get(a.id)!;
      const c = actCost(a, fit.degree);
      const degIdx = degrees.indexOf(fit.degree);
      const vals = fr.captured.get(a.inputs[0])!;
      // Against each value's own channel interval when the fit is per channel (last axis).
      const C = a.shape[a.shape.length - 1];
      const ivs = fit.channels?.intervals;
      let outside = 0; let vmin = Infinity; let vmax = -Infinity;
      for (let k = 0; k < vals.length; k++) {
        const v = vals[k];
        if (v < vmin) vmin = v;
        if (v > vmax) vmax = v;
        const iv = ivs ? ivs[k % C] : fit.interval;
        if (!(v >= iv.a && v <= iv.b)) outside++;
      }
      const w: string[] = [];
      if (outside > 0) {
        const where = ivs ? 'outside their channels\' intervals' : `outside its interval [${fit.interval.a.toPrecision(4)}, ${fit.interval.b.toPrecision(4)}]`;
        w.push(`${outside} held-out values (${(100 * outside / vals.length).toPrecision(2)}%) reach ${a.name} ${where} (seen ${vmin.toPrecision(4)}..${vmax.toPrecision(4)}); widen it with --margin or calibrate on more data`);
      }
      const layerDrop = sens.get(a.id)![method][degIdx];
      if (layerDrop > 0.5 * budget && acts.length > 1) w.push(`${a.name} alone uses ${(100 * layerDrop / budget).toFixed(0)}% of the accuracy budget at degree ${fit.degree}`);
      const uq = assessFit(act, fit.coeffs, fit.interval, st.sample, st);
      const sensRows = (m: 'data' | 'uniform'): DegreeResult[] => fits.get(a.id)![m].map((f, k) => {
        const cc = actCost(a, f.degree);
        return { degree: f.degree, depth: cc.depth, nonScalarMults: cc.nonScalarMults, drop: sens.get(a.id)![m][k], rmsData: f.rmsData, maxErrObserved: f.maxErrObserved, maxAbsInterval: f.maxAbsInterval };
      });
      const off = fr.offsets.get(a.id);
      const chosen: ChosenFit = {
        method: fit.method, degree: fit.degree, basis: 'chebyshev', interval: fit.interval, coeffs: fit.coeffs, channelOffset: off ? Array.from(off) : null,
        channels: fit.channels ?? null,
        depth: c.depth, polyDepth: c.polyDepth, affineLevel: c.affineLevel, nonScalarMults: c.nonScalarMults, latencyMs: c.latencyMs,
        predictedDrop: layerDrop, rmsData: uq.rmsData, maxErrObserved: uq.maxErrObserved, maxAbsInterval: uq.maxAbsInterval,
        heldoutOutside: { fraction: outside / Math.max(1, vals.length), count: outside, min: vmin, max: vmax },
      };
      const ur = uniformRun.result;
      const ud = ur?.fits.get(a.id)?.degree;
      return {
        node: a.id, name: a.name, layer: a.layer, className: a.className, activation: describeActivation(act), fused: a.name.endsWith('/activation'),
        stats: { count: st.count, min: st.min, max: st.max, mean: st.mean, std: st.std, percentiles: st.percentiles, histogram: st.histogram },
        interval: intervals.get(a.id)!, affineFoldable: foldable.get(a.id)!,
        sensitivity: { data: sensRows('data'), uniform: sensRows('uniform') },
        chosen,
        uniformChosen: ud === undefined ? null : { degree: ud, depth: actCost(a, ud).depth, predictedDrop: sens.get(a.id)!.uniform[degrees.indexOf(ud)] },
        warnings: w,
      };
    });
    for (const l of layers) warnings.push(...l.warnings);
    const final = summary(method === 'data' ? 'data-guided' : method, finalRun);
    const uniform = summary('uniform', uniformRun);
    if (!final.meetsBudget) warnings.push(`The measured drop ${final.measuredDrop.toFixed(2)} pp exceeds the ${budget} pp budget even with the most accurate candidate degrees; allow higher degrees or a larger budget.`);
    if (!uniformRun.result) warnings.push(`The uniform baseline cannot meet the budget within ${levelBudget} levels.`);

    let maxPooling: Report['maxPooling'] = null;
    const pools = g.nodes.filter((n) => n.spec.op === 'maxpool');
    if (pools.length) {
      const pred = await predictFull(ex, ds, split.heldout, { poolAsAvg: true }, { batchSize, signal: o.signal });
      const acc = cache.score(pred).accuracy;
      maxPooling = { layers: pools.map((p) => p.layer), accuracyWithAveragePooling: acc, dropWithAveragePooling: pct(base.accuracy - acc) };
      for (const p of pools) {
        heIncompatible.push({ layer: p.layer, className: p.className, problem: `max pooling cannot be evaluated under CKKS (max is not a polynomial); with average pooling the accuracy drops by ${maxPooling.dropWithAveragePooling.toFixed(2)} pp`,
          fix: 'retrain with AveragePooling2D, or accept the measured drop' });
      }
      warnings.push(`MaxPooling layer(s) ${maxPooling.layers.join(', ')} cannot run under CKKS; replacing them by average pooling changes accuracy by ${maxPooling.dropWithAveragePooling.toFixed(2)} pp (not included above). Retrain with AveragePooling2D or accept the drop.`);
    }
    lap('report', t);
    timings.total = (Date.now() - t0) / 1000;
    progress('finish', 1, 'done');
    return {
      schema: REPORT_SCHEMA, version: REPORT_VERSION,
      tool: { name: 'he-approx', version: toolVersion() }, createdAt: new Date().toISOString(),
      model: { path: model.path, name: g.name, format: model.format, layout: model.keras?.layout ?? model.format, inputShape: g.inputShape, ...modelFileHashes(model.path), notes: g.notes },
      data: { path: o.data, labels: o.labels ?? null, heldoutPath: o.heldoutData ?? null, samples: ds.count, calibration: nCalib, heldout: nHeld, seed, sha256: sha256(o.data), notes: [...new Set(ds.notes)] },
      options: { inputScale: prep.scale ?? 'auto', inputNormalization: prep.normalize ?? null, budget, levelBudget, degrees, margin, floor, batchSize, reservoir, refineSamples, ringSize, method, perChannel, tune, tuneLabelWeight: tune && ds.labels ? labelWeight : 0 },
      backend, costs, metric: ds.labels ? 'top1-vs-labels' : 'agreement-with-original',
      plaintext: { accuracy: base.accuracy },
      layers, final, uniform, refinements: fr.refinements, maxPooling, heIncompatible, levelBudget, linearDepth,
      warnings, notes, timings,
    };
  } finally {
    ex.dispose();
  }
}

export function toolVersion(): string {
  try {
    // package.json sits two levels above dist/src/core.
    return JSON.parse(fs.readFileSync(require.resolve('../../../package.json'), 'utf8')).version;
  } catch {
    return '0.0.0';
  }
}

/** Per-channel (last axis) mean of each activation's exact output in the original model. */
export async function originalChannelMeans(ex: Executor, ds: Dataset, idx: Int32Array, acts: GraphNode[], batchSize: number, signal?: AbortSignal): Promise<Map<number, Float64Array>> {
  const vals = await captureValues(ex, ds, idx, acts.map((a) => a.id), {}, { batchSize, signal });
  return new Map(acts.map((a) => [a.id, channelMeans(vals.get(a.id)!, a.shape[a.shape.length - 1], (x) => x)]));
}

function channelMeans(vals: Float32Array, C: number, f: (x: number, c: number) => number): Float64Array {
  const sum = new Float64Array(C);
  for (let i = 0; i < vals.length; i++) sum[i % C] += f(vals[i], i % C);
  const n = vals.length / C;
  for (let c = 0; c < C; c++) sum[c] /= n;
  return sum;
}

/**
 * Walks the activations in order with the earlier ones already approximated (and corrected), so
 * each layer sees the data that really reaches it in the approximated network (errors propagate):
 * - refit: fit the layer again, at its chosen degree, to that data (interval widened if needed);
 * - shift: subtract the per-channel difference between the mean approximated output and the mean
 *   original output, a constant that folds into the next linear layer's bias at no level cost.
 */
export async function propagate(ex: Executor, ds: Dataset, idx: Int32Array, acts: GraphNode[], chosen: Map<number, Fit>, origMeans: Map<number, Float64Array>,
  o: { margin: number; floor: number; batchSize: number; reservoir: number; seed: number; refit: boolean; shift: boolean; signal?: AbortSignal }):
  Promise<{ fits: Map<number, Fit>; offsets: Map<number, Float32Array | null> }> {
  const fits = new Map<number, Fit>();
  const offsets = new Map<number, Float32Array | null>();
  const replace = new Map<number, PolyActivation>();
  for (const a of acts) {
    let fit = chosen.get(a.id)!;
    const act = actSpec(a);
    const needValues = o.refit || o.shift;
    const vals = needValues ? (await captureValues(ex, ds, idx, [a.inputs[0]], { replace }, { batchSize: o.batchSize, signal: o.signal })).get(a.inputs[0])! : null;
    const C = a.shape[a.shape.length - 1];
    if (o.refit && vals) {
      const st = sampleStats(vals, o.reservoir, o.seed);
      const iv = union(chooseInterval(st, o.margin), fit.interval);
      const c = fitDataGuidedAll(act, st.sample, iv, fit.degree, o.floor)[fit.degree];
      fit = { ...fit, interval: iv, coeffs: Array.from(c), ...assessFit(act, c, iv, st.sample, st) };
      if (fit.channels) {
        const cs = new ChannelStats(C, CHANNEL_RESERVOIR, o.seed);
        cs.add(vals);
        const ch = cs.result();
        const intervals = fit.channels.intervals.map((old, k) => union(chooseInterval({ min: ch.min[k], max: ch.max[k] }, o.margin), old));
        const channels = { intervals, coeffs: ch.samples.map((smp, k) => Array.from(fitDataGuidedAll(act, smp, intervals[k], fit.degree, o.floor)[fit.degree])) };
        fit = { ...fit, channels, ...assessChannels(act, channels, ch) };
      }
    }
    let off: Float32Array | null = null;
    if (o.shift && vals) {
      const approx = channelMeans(vals, C, (x, c) => fitValue(fit, c, x));
      const orig = origMeans.get(a.id)!;
      off = Float32Array.from(approx, (v, c) => v - orig[c]);
    }
    fits.set(a.id, fit);
    offsets.set(a.id, off);
    replace.set(a.id, polyOf(fit, off));
  }
  return { fits, offsets };
}

const union = (p: { a: number; b: number }, q: { a: number; b: number }) => ({ a: Math.min(p.a, q.a), b: Math.max(p.b, q.b) });

/** Min/max and a seeded uniform random sample (with replacement) of captured values, enough to refit. */
function sampleStats(vals: Float32Array, k: number, seed: number): ValueStats {
  let min = Infinity; let max = -Infinity;
  for (let i = 0; i < vals.length; i++) { if (vals[i] < min) min = vals[i]; if (vals[i] > max) max = vals[i]; }
  const n = Math.min(k, vals.length);
  const sample = new Float32Array(n);
  // Random positions, not a stride: a stride that divides the per-sample size would pick the
  // same pixel and channel of every sample.
  const rng = new Rng(seed);
  for (let i = 0; i < n; i++) sample[i] = vals[rng.int(vals.length)];
  return { count: vals.length, min, max, mean: 0, std: 0, percentiles: {}, histogram: { lo: min, width: 0, counts: [] }, sample };
}
