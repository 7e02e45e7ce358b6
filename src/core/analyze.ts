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
import { FitMethod, polyOf, polysOf } from './fit/fit';
import { initBackend } from './model/backend';
import { Executor } from './model/execute';
import { HeldoutCache, channelMeans, profileActivations } from './profile/profiler';
import { Report } from './report';
import { assembleReport, toolVersion } from './analysis/assemble';
import { finetuneStage } from './analysis/finetuneStage';
import { fitStage } from './analysis/fitStage';
import { loadInputs } from './analysis/inputs';
import { checkAnalysisMemory, outOfMemory } from './analysis/memory';
import { StageClock } from './analysis/clock';
import { refinementVariants } from './analysis/refine';
import { searchDegrees } from './analysis/search';
import { DegreeChooser } from './analysis/selection';
import { screenCandidates } from './analysis/sensitivity';
import { AnalyzeOptions, resolveSettings } from './analysis/settings';
import { measureAveragePooling, measureHeldout, measureSubset } from './analysis/verify';

export { AnalyzeOptions, DEFAULT_DEGREES, SEAL_LEVELS } from './analysis/settings';
export { toolVersion };

export async function analyze(o: AnalyzeOptions): Promise<Report> {
  const s = resolveSettings(o);
  // Fine-tuning's share of the progress bar: about as long as the search, per few epochs (bench/finetune.ts).
  const clock = new StageClock(o.onProgress, {
    finetune: s.finetuneEpochs > 0 ? 10 * Math.min(s.finetuneEpochs, 10) : 0,
  });
  const inputs = await clock.timed('load', () => loadInputs(o, s));
  const { model, acts, ds, split } = inputs;
  const g = model.graph;
  if (s.finetuneEpochs > 0 && !ds.labels) {
    throw new UserError(
      'OPTION_INVALID',
      'fine-tuning trains on labels, and the data has none',
      'pass --labels with the calibration data, or leave out --finetune-epochs',
    );
  }
  const backend = await initBackend();
  // Before any tensor exists: a model or setting too large for this machine is refused with the estimate.
  checkAnalysisMemory(
    g,
    {
      heldout: split.heldout.length,
      batchSize: s.batchSize,
      tune: (s.tune && s.method === 'data') || s.finetuneEpochs > 0,
      minDegree: Math.min(...s.degrees),
    },
    backend,
  );
  const ex = new Executor(g);
  try {
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
      fitStage(g, acts, stats, s, (k) => clock.progress('fit', (k + 1) / acts.length, `fitted ${acts[k].name}`)),
    );
    const screenIdx = split.calib.slice(0, Math.min(s.screenSamples, split.calib.length));
    const screen = await clock.timed('sensitivity', () =>
      screenCandidates(
        ex,
        ds,
        screenIdx,
        acts,
        stats,
        fit.candidates,
        clock.pass('sensitivity', s.batchSize, o.signal),
      ),
    );

    // Select: the frontier of choices, within SEAL's chain or, deeper, planned for bootstrapping.
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
    const meets = (depth: number) => frontierOf(s.method, depth).some((p) => p.predictedDrop <= s.budget + 1e-9);
    let bootstrapping =
      s.bootstrap ||
      (!s.levelBudgetGiven &&
        acts.length > 0 &&
        (linearDepth > s.levelBudget || !meets(s.levelBudget)) &&
        meets(Infinity));

    // Search: exact checks on the screen samples, then refine and verify on held-out data.
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
    let searchAt = 0.05;
    const refined = refinementVariants({
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
      onTuneProgress: (_f, msg) => clock.progress('search', searchAt, msg),
      timed: (f) => clock.timed('refine', f),
    });
    const search = (m: FitMethod, maxDepth: number) =>
      searchDegrees({
        acts,
        method: m,
        candidates: fit.candidates.get(m)!,
        layerDepth: (l, f, off) => polyCost(g, acts[l], polyOf(f, off), f.degree, opCosts, s.fold).depth,
        costs: costs.get(m)!,
        frontier: frontierOf(m, maxDepth),
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
          searchAt = Math.min(0.95, m === s.method ? 0.05 + (0.6 * r) / 4 : 0.65 + (0.3 * r) / 4);
          clock.progress('search', searchAt, msg);
        },
      });
    const tSearch = Date.now();
    let final = await search(s.method, bootstrapping ? Infinity : s.levelBudget);
    // First order found the chain enough and measurement did not: without a level budget of the
    // user's, the deeper choices a library with bootstrapping runs get their search too.
    const met = (r: typeof final) => !!r.result && r.result.drop <= s.budget + 1e-9 && r.result.measured.safe;
    if (!bootstrapping && !s.levelBudgetGiven && acts.length > 0 && !met(final)) {
      const deeper = await search(s.method, Infinity);
      if (met(deeper)) {
        final = {
          ...deeper,
          rounds: final.rounds + deeper.rounds,
          checks: final.checks + deeper.checks,
          attempts: [...final.attempts, ...deeper.attempts],
        };
        bootstrapping = true;
      }
    }
    const tUniform = Date.now();
    const uniform = s.method === 'uniform' ? final : await search('uniform', bootstrapping ? Infinity : s.levelBudget);
    clock.add('uniformSearch', (Date.now() - tUniform) / 1000);
    clock.add(
      'select',
      [...choosers.values()].reduce((sum, c) => sum + c.seconds, 0),
    );
    clock.add('search', (Date.now() - tSearch) / 1000);
    if (!final.result) {
      const cs = costs.get(s.method)!;
      const least = choosers
        .get(s.method)!
        .depthOf(cs.map((c) => c.reduce((k, x, j) => (x.depth < c[k].depth ? j : k), 0)));
      throw new UserError(
        'BUDGET_INFEASIBLE',
        `no choice of degrees in {${s.degrees.join(', ')}} fits ${s.levelBudget} levels: the linear layers need ${linearDepth} and the network with its least activation levels ${least}`,
        s.levelBudgetGiven
          ? 'raise --level-budget, or allow lower degrees with --degrees'
          : 'raise --level-budget (or --ring-size), or allow lower degrees with --degrees',
      );
    }

    // Optional: fine-tune weights and coefficients from the chosen result (same degrees and levels).
    const finetuned =
      s.finetuneEpochs > 0
        ? await clock.timed('finetune', () =>
            finetuneStage({
              g,
              acts,
              ds,
              split,
              round: final.result!,
              baseAccuracy,
              epochs: s.finetuneEpochs,
              seed: s.seed,
              batchSize: s.batchSize,
              signal: o.signal,
              layerDepth: (l, p) =>
                polyCost(g, acts[l], p, final.result!.fits.get(acts[l].id)!.degree, opCosts, s.fold).depth,
              onProgress: (f, msg) => clock.progress('finetune', f, msg),
            }),
          )
        : null;
    if (finetuned?.model) o.onFinetuned?.(finetuned.model);

    // The max trees are in every figure; the usual substitute, average pooling, is measured beside them.
    const source = model.sourceGraph;
    const averagePooling = source
      ? await clock.timed('report', () =>
          measureAveragePooling(
            cache,
            source,
            ds,
            split.heldout,
            polysOf(acts, final.result!.fits, final.result!.offsets),
            clock.pass('report', s.batchSize, o.signal),
          ),
        )
      : null;
    // Planned for bootstrapping, the network runs on Lattigo: latency from its measured costs where cached.
    const runCosts =
      bootstrapping && !o.costs ? (cachedLattigoCosts(bootstrapSpec(s.bootstrapLevels)) ?? opCosts) : opCosts;
    const report = assembleReport({
      o,
      s,
      inputs,
      stats,
      fit,
      screen,
      costs,
      foldable,
      opCosts: runCosts,
      backend,
      baseAccuracy,
      final,
      uniform,
      bootstrapping,
      linearDepth,
      averagePooling,
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
