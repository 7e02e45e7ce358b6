/**
 * Fine-tuning inside the choice (`--finetune-epochs N`): fine-tuning moves weights and
 * coefficients, never degrees, so what it can buy is a cheaper choice than the analysis's: one
 * that misses the budget with the user's weights and meets it after a few epochs. From the best
 * choice of each tier (ring, then bootstraps) cheaper than the result's, nearest first
 * (choice.ts: finetuneStarts), each is fine-tuned and kept if it then meets the budget safely
 * with no layer costing more levels (finetuneStage.ts); the next cheaper tier is tried after a
 * kept one, and the first miss ends it. If no cheaper choice was kept, the result itself is
 * fine-tuned as before (kept when no worse). With a target (--target-levels / -bootstraps), or a
 * result that misses the budget, only the result is fine-tuned.
 *
 * A fine-tuning costs N epochs over the calibration samples, so the tiers tried are bounded
 * (MAX_CHEAPER_TRIES): on a deep network each is minutes.
 */
import type { Dataset, Split } from '../data/read';
import type { FinetunedModel } from '../finetune/finetune';
import type { Augmentation } from '../finetune/augment';
import { Fit, polysOf } from '../fit/fit';
import type { Graph, GraphNode } from '../model/graph';
import type { PolyActivation } from '../numerics/polynomial';
import type { HeldoutCache } from '../profile/profiler';
import type { FinetuneReport, FinetuneTry, FrontierPoint, SelectionAttempt } from '../report';
import {
  Cost,
  FinetuneStart,
  Target,
  betterStart,
  finetuneStarts,
  frontierStarts,
  roundCost,
  tierBelow,
  tierKey,
} from './choice';
import { CostContext, point } from './frontier';
import { finetuneStage } from './finetuneStage';
import { Round, meetsBudget, plainRound, roundAttempt, roundDegrees } from './search';
import type { DegreePick } from './selection';
import { measureHeldout } from './verify';

/** Cheaper tiers fine-tuned at most, before the result's own fine-tuning. */
export const MAX_CHEAPER_TRIES = 2;

export interface FinetuneChoiceInput {
  g: Graph;
  acts: GraphNode[];
  ds: Dataset;
  split: Split;
  cache: HeldoutCache;
  baseAccuracy: number;
  /** The method's name in reports, its cost context and first-order frontier. */
  method: string;
  c: CostContext;
  F: DegreePick[];
  /** Every round measured (the search's and --frontier's), and the analysis's result among them. */
  rounds: Round[];
  result: Round;
  target: Target | null;
  s: {
    budget: number;
    finetuneEpochs: number;
    finetuneFrontier: boolean;
    finetuneAugment: Augmentation;
    seed: number;
    batchSize: number;
  };
  signal?: AbortSignal;
  onProgress?: (f: number, msg: string) => void;
  /** Levels of activation l evaluated as polynomial p at `degree` (the cost model's). */
  layerDepth: (l: number, p: PolyActivation, degree: number) => number;
}

export interface FinetuneChoice {
  /** The result: the analysis's, or the cheaper choice that fine-tuning made meet the budget. */
  result: Round;
  report: FinetuneReport;
  model: FinetunedModel | null;
  /** Every fine-tuned choice as a frontier point (method '<method> + fine-tuning'; frontierReport marks the kept one). */
  points: FrontierPoint[];
  /** The cheaper choice's round as the search's attempts record it, if it became the result. */
  attempt: SelectionAttempt | null;
}

export async function finetuneChoice(i: FinetuneChoiceInput): Promise<FinetuneChoice> {
  if (i.s.finetuneFrontier) return finetuneFrontier(i);
  // A result over the budget has nothing cheaper worth trying: fine-tuning it is the only hope.
  const starts =
    i.target || !meetsBudget(i.result, i.s.budget)
      ? []
      : finetuneStarts(i.c, i.F, i.rounds, i.result, MAX_CHEAPER_TRIES);
  const tries: FinetuneTry[] = [];
  const points: FrontierPoint[] = [];
  const total = starts.length + 1;
  let kept: { round: Round; report: FinetuneReport; model: FinetunedModel } | null = null;
  let last: { report: FinetuneReport; model: FinetunedModel | null } | null = null;
  for (const [k, start] of starts.entries()) {
    const round = await startOf(i, start);
    const t = await tune(i, round, roundCost(i.c, round), i.s.budget, k, total, tries, points);
    last = t;
    if (!t.model) break;
    kept = { round, report: t.report, model: t.model };
  }
  if (!kept) {
    const t = await tune(i, i.result, roundCost(i.c, i.result), undefined, starts.length, total, tries, points);
    last = t;
    if (t.model) kept = { round: i.result, report: t.report, model: t.model };
  }
  return outcome(i, kept, last!, tries, points);
}

/** The choice's outcome: the kept fine-tuning's round as the result (else the analysis's), and its report. */
function outcome(
  i: FinetuneChoiceInput,
  kept: { round: Round; report: FinetuneReport; model: FinetunedModel } | null,
  last: { report: FinetuneReport },
  tries: FinetuneTry[],
  points: FrontierPoint[],
): FinetuneChoice {
  const report = { ...(kept?.report ?? last.report), tries, from: null as FinetuneReport['from'] };
  const result = kept?.round ?? i.result;
  let attempt: SelectionAttempt | null = null;
  if (result !== i.result) {
    const from = roundCost(i.c, i.result);
    report.from = { degrees: roundDegrees(i.acts, i.result), ...pick(from), measuredDrop: i.result.drop };
    attempt = roundAttempt(i.acts, result, 'finetuned', i.s.budget);
  }
  return { result, report, model: kept?.model ?? null, points, attempt };
}

/**
 * --finetune-frontier: the frontier with fine-tuning. The best start of every tier the analysis
 * measured (frontierStarts), cheapest first, is fine-tuned whatever the tiers below it did; the
 * result's tier from the result itself. The result is the cheapest tier kept within the budget
 * below the result's (none with a target), else the result, its own fine-tuning kept when no
 * worse. Every try is a frontier point marked as fine-tuned, so the report holds both curves.
 */
async function finetuneFrontier(i: FinetuneChoiceInput): Promise<FinetuneChoice> {
  const top = roundCost(i.c, i.result);
  // The result among the rounds, so that its tier is always one of the starts.
  const starts = frontierStarts(i.c, i.F, [...i.rounds, i.result]);
  const tries: FinetuneTry[] = [];
  const points: FrontierPoint[] = [];
  let cheaper: { round: Round; report: FinetuneReport; model: FinetunedModel } | null = null;
  let own: { round: Round; report: FinetuneReport; model: FinetunedModel | null } | null = null;
  for (const [k, start] of starts.entries()) {
    const mine = tierKey(start.cost) === tierKey(top);
    const round = mine ? i.result : await startOf(i, start);
    const cost = roundCost(i.c, round);
    const t = await tune(i, round, cost, mine ? undefined : i.s.budget, k, starts.length, tries, points);
    if (mine) own = { round, ...t };
    else if (t.model && !cheaper && !i.target && tierBelow(cost, top))
      cheaper = { round, report: t.report, model: t.model };
  }
  const kept = cheaper ?? (own!.model ? { round: own!.round, report: own!.report, model: own!.model } : null);
  return outcome(i, kept, own!, tries, points);
}

/** A tier's start: its best measured round, or the first-order frontier's deeper choice if that measures better. */
async function startOf(i: FinetuneChoiceInput, start: FinetuneStart): Promise<Round> {
  return start.pick ? betterStart(start.round, await startRound(i, start.pick)) : start.round!;
}

const pick = (x: Cost) => ({ levels: x.levels, ringSize: x.ringSize, bootstraps: x.bootstraps });

/** A tier's start that the analysis never measured: its plain fits, measured on held-out data. */
function startRound(i: FinetuneChoiceInput, p: DegreePick): Promise<Round> {
  return plainRound(i.acts, i.c.candidates, p, i.baseAccuracy, (fits: Map<number, Fit>) =>
    measureHeldout(i.cache, i.acts, polysOf(i.acts, fits, new Map()), i.signal),
  );
}

/** One fine-tuning from `round`, recorded as a try and a frontier point. */
async function tune(
  i: FinetuneChoiceInput,
  round: Round,
  cost: Cost,
  keepAtMost: number | undefined,
  k: number,
  total: number,
  tries: FinetuneTry[],
  points: FrontierPoint[],
): Promise<{ report: FinetuneReport; model: FinetunedModel | null }> {
  const where = `${cost.levels} levels, N=${cost.ringSize}${cost.bootstraps ? `, ${cost.bootstraps} bootstraps` : ''}`;
  const t = await finetuneStage({
    g: i.g,
    acts: i.acts,
    ds: i.ds,
    split: i.split,
    round,
    baseAccuracy: i.baseAccuracy,
    epochs: i.s.finetuneEpochs,
    augment: i.s.finetuneAugment,
    seed: i.s.seed,
    batchSize: i.s.batchSize,
    signal: i.signal,
    keepAtMost,
    layerDepth: (l, p) => i.layerDepth(l, p, round.fits.get(i.acts[l].id)!.degree),
    onProgress: (f, msg) => i.onProgress?.((k + f) / total, `${where}: ${msg}`),
  });
  const r = t.report;
  const why = r.kept
    ? null
    : !r.safe
      ? 'values beyond what CKKS holds'
      : r.levelsUp?.length
        ? `its coefficients would cost ${r.levelsUp.join(', ')} more levels`
        : keepAtMost === undefined
          ? "the analysis's result is better"
          : 'over the budget';
  const degrees = roundDegrees(i.acts, round);
  tries.push({
    degrees,
    ...pick(cost),
    estLatencyMs: cost.estLatencyMs,
    startDrop: round.drop,
    measuredDrop: r.measuredDrop,
    safe: r.safe,
    kept: r.kept,
    seconds: r.seconds,
    why,
  });
  const fits = i.acts.map((_, l) => i.c.candidates[l][round.pick.picks[l]]);
  points.push(
    point(
      i.c,
      `${i.method} + fine-tuning`,
      degrees,
      fits,
      cost.levels,
      { drop: r.measuredDrop, safe: r.safe },
      i.s.budget,
      'finetuned',
    ),
  );
  return t;
}
