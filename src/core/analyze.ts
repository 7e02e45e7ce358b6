/**
 * The analysis: profile the activations' inputs on calibration data, fit every candidate
 * polynomial, screen their sensitivity, select per-layer degrees under the accuracy and level
 * budgets, refine and verify on held-out data, tightening until the measured drop fits; the same
 * for the uniform-interval baseline. Each stage is a module of analysis/ with plain inputs and
 * outputs; this driver only sequences them, threads progress and cancellation through, and
 * times them. Pure core: no printing.
 */
import { affineFoldable, networkDepth, polyCost, publishedCosts } from './cost/cost';
import { cachedSealCosts } from './cost/sealCosts';
import { bootstrapSpec, cachedLattigoCosts } from './he/lattigoCosts';
import { UserError } from './errors';
import { Fit, FitMethod, polyOf, polysOf } from './fit/fit';
import { CostContext, costContext, measureFrontier, methodName, spreadPicks } from './analysis/frontier';
import { cheapestMeeting, withinTarget } from './analysis/choice';
import { finetuneChoice } from './analysis/finetuneChoice';
import type { FrontierPoint } from './report';
import { initBackend } from './model/backend';
import { Executor, PolyActivation } from './model/execute';
import { HeldoutCache, channelMeans, profileActivations } from './profile/profiler';
import { Report } from './report';
import { assembleReport, toolVersion } from './analysis/assemble';
import { fitStage } from './analysis/fitStage';
import { Inputs, loadInputs } from './analysis/inputs';
import { checkAnalysisMemory, outOfMemory } from './analysis/memory';
import { StageClock } from './analysis/clock';
import { refinementVariants } from './analysis/refine';
import { Round, SearchResult, meetsBudget, plainRound, roundAttempt, searchDegrees } from './analysis/search';
import { DegreeChooser, DegreePick } from './analysis/selection';
import { screenCandidates } from './analysis/sensitivity';
import { AnalyzeOptions, Settings, resolveSettings } from './analysis/settings';
import { resolveAugmentation } from './finetune/augment';
import { measureAveragePooling, measureHeldout, measureSubset } from './analysis/verify';

export { AnalyzeOptions, DEFAULT_DEGREES, SEAL_LEVELS } from './analysis/settings';
export { toolVersion };

/** What every stage of one analysis shares. */
interface Run {
  o: AnalyzeOptions;
  s: Settings;
  clock: StageClock;
  inputs: Inputs;
  ex: Executor;
}

export async function analyze(o: AnalyzeOptions): Promise<Report> {
  const s = resolveSettings(o);
  // Fine-tuning's share of the progress bar: about as long as the search, per few epochs (bench/finetune.ts).
  // --frontier N: each point a pass over the held-out samples, about a verify's share each.
  const clock = new StageClock(o.onProgress, {
    finetune: s.finetuneEpochs > 0 ? 10 * Math.min(s.finetuneEpochs, 10) : 0,
    frontier: 3 * s.frontier,
  });
  const inputs = await clock.timed('load', () => loadInputs(o, s));
  // Before the analysis's minutes: augmentation that cannot apply to this model's input is refused now.
  if (s.finetuneEpochs > 0) resolveAugmentation(s.finetuneAugment, inputs.ds.sampleShape);
  const backend = await initBackend();
  // Before any tensor exists: a model or setting too large for this machine is refused with the estimate.
  checkAnalysisMemory(
    inputs.model.graph,
    {
      heldout: inputs.split.heldout.length,
      batchSize: s.batchSize,
      tune: (s.tune && s.method === 'data') || s.finetuneEpochs > 0,
      minDegree: Math.min(...s.degrees),
    },
    backend,
  );
  const ex = new Executor(inputs.model.graph);
  const run: Run = { o, s, clock, inputs, ex };
  try {
    const measured = await measureCandidates(run);
    const selection = selectionOf(run, measured);
    const searched = await searchStage(run, measured, selection);
    const { bootstrapping } = searched;
    if (!searched.final.result) throw infeasible(s, selection);
    const c = costContext(inputs.model.graph, inputs.acts, measured.fit.candidates.get(s.method)!, s);
    const frontier = await frontierStage(run, measured, selection, searched, c);
    let final = byLatency(run, c, searched.final, frontier.rounds);
    const finetuned = await finetuneResult(run, measured, selection, { ...searched, final }, c, frontier.rounds);
    if (finetuned) {
      final = {
        ...final,
        result: finetuned.result,
        attempts: finetuned.attempt ? [...final.attempts, finetuned.attempt] : final.attempts,
      };
    }
    if (finetuned?.model) o.onFinetuned?.(finetuned.model);

    // The max trees are in every figure; the usual substitute, average pooling, is measured beside them.
    const source = inputs.model.sourceGraph;
    const averagePooling = source
      ? await clock.timed('report', () =>
          measureAveragePooling(
            measured.cache,
            source,
            inputs.ds,
            inputs.split.heldout,
            polysOf(inputs.acts, final.result!.fits, final.result!.offsets),
            clock.pass('report', s.batchSize, o.signal),
          ),
        )
      : null;
    // Planned for bootstrapping, the network runs on Lattigo: latency from its measured costs where cached.
    const runCosts =
      bootstrapping && !o.costs
        ? (cachedLattigoCosts(bootstrapSpec(s.bootstrapLevels)) ?? selection.opCosts)
        : selection.opCosts;
    const report = assembleReport({
      o,
      s,
      inputs,
      stats: measured.stats,
      fit: measured.fit,
      screen: measured.screen,
      costs: selection.costs,
      foldable: selection.foldable,
      opCosts: runCosts,
      backend,
      baseAccuracy: measured.baseAccuracy,
      final,
      uniform: searched.uniform,
      bootstrapping,
      linearDepth: selection.linearDepth,
      averagePooling,
      frontier: [...frontier.points, ...(finetuned?.points ?? [])],
      finetunedDrop: finetuned?.model ? finetuned.report.measuredDrop : undefined,
      timings: clock.finish(),
    });
    if (finetuned) report.finetune = finetuned.report;
    clock.progress('report', 1, 'done');
    return report;
  } catch (e) {
    throw outOfMemory(e, clock.current, s.batchSize) ?? e;
  } finally {
    ex.dispose();
  }
}

/** Profile, held-out cache, fits of every candidate degree, and their first-order sensitivity. */
async function measureCandidates({ o, s, clock, inputs, ex }: Run) {
  const { acts, ds, split } = inputs;
  // Profile the calibration samples; cache the held-out ones where the first activation starts.
  const stats = await clock.timed('profile', () =>
    profileActivations(ex, ds, split.calib, {
      ...clock.pass('profile', s.batchSize, o.signal),
      reservoir: s.reservoir,
      seed: s.seed,
      channels: s.perChannel,
    }),
  );
  const cache = await clock.timed('cache', () =>
    HeldoutCache.build(ex, ds, split.heldout, {
      ...clock.pass('cache', s.batchSize, o.signal),
      cuts: acts.length ? [acts[0].id] : [],
    }),
  );
  const baseAccuracy = cache.baseline().accuracy;
  // Fit every candidate degree; screen every candidate's sensitivity to first order.
  const fit = await clock.timed('fit', () =>
    fitStage(inputs.model.graph, acts, stats, s, (k) =>
      clock.progress('fit', (k + 1) / acts.length, `fitted ${acts[k].name}`),
    ),
  );
  const screenIdx = split.calib.slice(0, Math.min(s.screenSamples, split.calib.length));
  const screen = await clock.timed('sensitivity', () =>
    screenCandidates(ex, ds, screenIdx, acts, stats, fit.candidates, clock.pass('sensitivity', s.batchSize, o.signal)),
  );
  return { stats, cache, baseAccuracy, fit, screenIdx, screen };
}
type Measured = Awaited<ReturnType<typeof measureCandidates>>;

/** Select: the frontier of choices, within SEAL's chain or, deeper, planned for bootstrapping. */
function selectionOf({ o, s, inputs }: Run, { fit, screen }: Measured) {
  const { acts } = inputs;
  const g = inputs.model.graph;
  const opCosts = o.costs ?? cachedSealCosts(s.ringSize) ?? publishedCosts(s.ringSize);
  const foldable = acts.map((a) => affineFoldable(g, a));
  // Per method: a degree-2 candidate's cost depends on its coefficients (fold.ts).
  const costs = new Map(
    [...fit.candidates].map(([m, cs]) => [
      m,
      acts.map((a, l) => cs[l].map((f) => polyCost(g, a, polyOf(f), f.degree, opCosts, s.fold))),
    ]),
  );
  const linearDepth = networkDepth(g, new Map());
  // Degrees are chosen by the network's depth (its longest path), branches side by side.
  const choosers = new Map(
    [...fit.candidates.keys()].map((m) => [
      m,
      new DegreeChooser(screen, screen.dm.get(m)!, costs.get(m)!, { g, acts }),
    ]),
  );
  // Planned for bootstrapping, no activation may take more levels than lie between two bootstraps.
  const frontierOf = (m: FitMethod, maxDepth: number) => {
    const c = choosers.get(m)!;
    c.layerCap = maxDepth === Infinity ? s.bootstrapLevels : Infinity;
    return c.frontier(s.budget, maxDepth);
  };
  const layerDepth = (l: number, p: PolyActivation, degree: number) =>
    polyCost(g, acts[l], p, degree, opCosts, s.fold).depth;
  return { opCosts, foldable, costs, linearDepth, choosers, frontierOf, layerDepth };
}
type Selection = ReturnType<typeof selectionOf>;

/**
 * Search: exact checks on the screen samples, then refine and verify on held-out data; deeper
 * (planned for bootstrapping) when SEAL's chain does not hold a choice that meets the budget;
 * then the uniform baseline's search at the same depth.
 */
async function searchStage(run: Run, measured: Measured, sel: Selection) {
  const { o, s, clock, inputs, ex } = run;
  const { acts, ds } = inputs;
  const { fit, cache, screen, screenIdx, baseAccuracy } = measured;
  const meets = (depth: number) => sel.frontierOf(s.method, depth).some((p) => p.predictedDrop <= s.budget + 1e-9);
  // A target decides the chain itself: a bootstrap count, or more levels than SEAL's chain holds.
  let bootstrapping = s.target
    ? s.bootstrap || s.target.bootstraps !== undefined || (s.target.levels ?? 0) > s.levelBudget
    : s.bootstrap ||
      (!s.levelBudgetGiven &&
        acts.length > 0 &&
        (sel.linearDepth > s.levelBudget || !meets(s.levelBudget)) &&
        meets(Infinity));
  const frontierFor = (m: FitMethod, maxDepth: number) =>
    targetFrontier(run, sel, fit.candidates.get(m)!, m, sel.frontierOf(m, maxDepth));
  if (s.target && acts.length && !frontierFor(s.method, bootstrapping ? Infinity : s.levelBudget).length)
    throw offTarget(s, sel, bootstrapping);

  // Where the search's progress stands: the tuning refinement reports at the current round's.
  const at = { search: 0.05 };
  const refined = await refinements(run, measured, at);
  const search = (m: FitMethod, maxDepth: number) =>
    searchDegrees({
      acts,
      method: m,
      candidates: fit.candidates.get(m)!,
      layerDepth: (l, f, off) => sel.layerDepth(l, polyOf(f, off), f.degree),
      costs: sel.costs.get(m)!,
      frontier: frontierFor(m, maxDepth),
      budget: s.budget,
      baseAccuracy,
      check: (fits) =>
        clock.timed('verify', () =>
          clock.timed('checks', () =>
            measureSubset(ex, ds, screenIdx, screen.right, screen.target, fits, {
              batchSize: s.batchSize,
              signal: o.signal,
            }),
          ),
        ),
      variants:
        m === 'data'
          ? refined
          : async function* plainOnly(plain) {
              yield plain;
            },
      measure: (v) =>
        clock.timed('verify', () => measureHeldout(cache, acts, polysOf(acts, v.fits, v.offsets), o.signal)),
      onRound: (r, msg) => {
        at.search = Math.min(0.95, m === s.method ? 0.05 + (0.6 * r) / 4 : 0.65 + (0.3 * r) / 4);
        clock.progress('search', at.search, msg);
      },
    });
  const tSearch = Date.now();
  let final = await search(s.method, bootstrapping ? Infinity : s.levelBudget);
  // First order found the chain enough and measurement did not: without a level budget of the
  // user's, the deeper choices a library with bootstrapping runs get their search too.
  const met = (r: SearchResult) => !!r.result && meetsBudget(r.result, s.budget);
  if (!bootstrapping && !s.levelBudgetGiven && !s.target && acts.length > 0 && !met(final)) {
    const deeper = await search(s.method, Infinity);
    if (met(deeper)) {
      final = {
        ...deeper,
        rounds: final.rounds + deeper.rounds,
        checks: final.checks + deeper.checks,
        attempts: [...final.attempts, ...deeper.attempts],
        all: [...final.all, ...deeper.all],
      };
      bootstrapping = true;
    }
  }
  const tUniform = Date.now();
  const uniform = s.method === 'uniform' ? final : await search('uniform', bootstrapping ? Infinity : s.levelBudget);
  clock.add('uniformSearch', (Date.now() - tUniform) / 1000);
  clock.add(
    'select',
    [...sel.choosers.values()].reduce((sum, c) => sum + c.seconds, 0),
  );
  clock.add('search', (Date.now() - tSearch) / 1000);
  return { final, uniform, bootstrapping };
}

/** The refinements of the data-guided fits (refine.ts), from the original activations' means on the refinement samples. */
async function refinements({ o, s, clock, inputs, ex }: Run, { fit, stats }: Measured, at: { search: number }) {
  const { acts, ds, split } = inputs;
  const refineIdx = split.calib.slice(0, Math.min(s.refineSamples, split.calib.length));
  const origMeans =
    s.method === 'data' && acts.length
      ? await clock.timed('refine', () =>
          channelMeans(
            ex,
            ds,
            refineIdx,
            acts.map((a) => a.id),
            {},
            {
              batchSize: s.batchSize,
              signal: o.signal,
              onProgress: (f) => clock.progress('search', 0.05 * f, "original activations' means"),
            },
          ),
        )
      : new Map();
  return refinementVariants({
    ex,
    ds,
    idx: refineIdx,
    acts,
    stats,
    margins: fit.margins,
    origMeans,
    floor: s.floor,
    batchSize: s.batchSize,
    reservoir: s.reservoir,
    seed: s.seed,
    tune: s.tune,
    labelWeight: s.labelWeight,
    signal: o.signal,
    onTuneProgress: (_f, msg) => clock.progress('search', at.search, msg),
    timed: (f) => clock.timed('refine', f),
  });
}

/** --frontier N: more choices of the method's frontier measured on held-out data (frontier.ts). */
async function frontierStage(
  { o, s, clock, inputs }: Run,
  { fit, cache, baseAccuracy }: Measured,
  sel: Selection,
  { final, uniform, bootstrapping }: Searched,
  c: CostContext,
): Promise<{ points: FrontierPoint[]; rounds: Round[] }> {
  if (s.frontier <= 0) return { points: [], rounds: [] };
  const { acts } = inputs;
  const picks = spreadPicks(
    sel.frontierOf(s.method, bootstrapping ? Infinity : s.levelBudget),
    s.frontier,
    uniform.result?.pick.depth ?? Infinity,
  );
  const measure = (p: DegreePick) =>
    plainRound(acts, fit.candidates.get(s.method)!, p, baseAccuracy, (fits) =>
      measureHeldout(cache, acts, polysOf(acts, fits, new Map()), o.signal),
    );
  return clock.timed('frontier', () =>
    measureFrontier(c, methodName(s.method), picks, final.attempts, s.budget, measure, (k, n) =>
      clock.progress('frontier', k / n, `frontier: ${k} of ${n} choices measured`),
    ),
  );
}
type Searched = Awaited<ReturnType<typeof searchStage>>;

/**
 * Cost by latency (choice.ts): of the rounds measured that meet the budget, the search's and
 * --frontier's, the cheapest to run is the result. A target's result stays the target's.
 */
function byLatency({ s, inputs }: Run, c: CostContext, final: SearchResult, extra: Round[]): SearchResult {
  if (s.target || !final.result) return final;
  const best = cheapestMeeting(c, [final.result, ...final.all, ...extra], s.budget);
  if (!best || best === final.result) return final;
  const attempts = extra.includes(best)
    ? [...final.attempts, roundAttempt(inputs.acts, best, 'frontier', s.budget)]
    : final.attempts;
  return { ...final, result: best, attempts };
}

/** With a target, the frontier's most accurate choice within it (the search then measures that one); else F. */
function targetFrontier(
  { s, inputs }: Run,
  sel: Selection,
  candidates: Fit[][],
  m: FitMethod,
  F: DegreePick[],
): DegreePick[] {
  if (!s.target) return F;
  // A picked point names the method's degrees; the baseline is held to its cost only.
  const t = m === s.method ? s.target : { ...s.target, degrees: undefined };
  const within = withinTarget(F, t, {
    g: inputs.model.graph,
    acts: inputs.acts,
    depth: (l, k) => sel.costs.get(m)![l][k].depth,
    degree: (l, k) => candidates[l][k].degree,
    bootstrapLevels: s.bootstrapLevels,
  });
  return within.slice(-1);
}

/** No choice within the target: the refusal names the least any choice needs. */
function offTarget(s: Settings, sel: Selection, bootstrapping: boolean): UserError {
  const F = sel.frontierOf(s.method, bootstrapping ? Infinity : s.levelBudget);
  const what =
    s.target!.levels !== undefined
      ? `--target-levels ${s.target!.levels}`
      : `--target-bootstraps ${s.target!.bootstraps}`;
  return new UserError(
    'BUDGET_INFEASIBLE',
    `no choice of degrees in {${s.degrees.join(', ')}} is within ${what}: the cheapest needs ${F[0]?.depth ?? '?'} levels (the linear layers alone ${sel.linearDepth})`,
    s.target!.levels !== undefined
      ? 'raise --target-levels, or allow lower degrees with --degrees'
      : 'raise --target-bootstraps, lower --degrees, or pass --bootstrap-levels for a library with more levels between bootstraps',
  );
}

/** No choice fits the level budget: the refusal names the least levels any choice needs. */
function infeasible(s: Settings, sel: Selection): UserError {
  const cs = sel.costs.get(s.method)!;
  const least = sel.choosers
    .get(s.method)!
    .depthOf(cs.map((c) => c.reduce((k, x, j) => (x.depth < c[k].depth ? j : k), 0)));
  return new UserError(
    'BUDGET_INFEASIBLE',
    `no choice of degrees in {${s.degrees.join(', ')}} fits ${s.levelBudget} levels: the linear layers need ${sel.linearDepth} and the network with its least activation levels ${least}`,
    s.levelBudgetGiven
      ? 'raise --level-budget, or allow lower degrees with --degrees'
      : 'raise --level-budget (or --ring-size), or allow lower degrees with --degrees',
  );
}

/**
 * Optional: fine-tuning inside the choice (finetuneChoice.ts): from cheaper choices than the
 * result first, kept where they then meet the budget, else from the result.
 */
function finetuneResult(
  { o, s, clock, inputs }: Run,
  measured: Measured,
  sel: Selection,
  { final, bootstrapping }: Searched,
  c: CostContext,
  extra: Round[],
) {
  if (s.finetuneEpochs <= 0) return null;
  const { acts } = inputs;
  return clock.timed('finetune', () =>
    finetuneChoice({
      g: inputs.model.graph,
      acts,
      ds: inputs.ds,
      split: inputs.split,
      cache: measured.cache,
      baseAccuracy: measured.baseAccuracy,
      method: methodName(s.method),
      c,
      F: sel.frontierOf(s.method, bootstrapping ? Infinity : s.levelBudget),
      rounds: [...final.all, ...extra],
      result: final.result!,
      target: s.target,
      s,
      signal: o.signal,
      layerDepth: sel.layerDepth,
      onProgress: (f, msg) => clock.progress('finetune', f, msg),
    }),
  );
}
