/**
 * Which measured choice the analysis answers with, by what it costs to run rather than by its
 * level count alone, and where fine-tuning may buy a cheaper one.
 *
 * - Cost by latency: among the measured choices that meet the budget safely, the one with the
 *   lowest estimated latency (frontier.ts: pointCost), which counts the ring a level count implies
 *   (one level past a ring's chain doubles N) and the bootstraps; where a latency is unknown
 *   (bootstraps not measured), the smaller ring, then fewer bootstraps, then fewer levels.
 * - Tiers: a choice's ring and, on the bootstrapping ring, its bootstraps. Fine-tuning inside the
 *   choice (`--finetune-epochs N`) starts from the best choice of each tier cheaper than the
 *   result's, nearest first (finetuneStarts).
 * - Targets (`--target-levels N`, `--target-bootstraps N`): the choices within a cost a user must
 *   hit, of which the search measures the most accurate (withinTarget).
 */
import { planBootstraps } from '../cost/bootstrap';
import type { Graph, GraphNode } from '../model/graph';
import { CostContext, pointCost } from './frontier';
import { Round, meetsBudget } from './search';
import type { DegreePick } from './selection';
import type { Target } from './settings';

export type { Target };

export type Cost = ReturnType<typeof pointCost>;

/** A round's cost: its candidates' degrees at its levels. */
export function roundCost(c: CostContext, r: Round): Cost {
  return pickCost(c, r.pick);
}

export function pickCost(c: CostContext, p: DegreePick): Cost {
  return pointCost(
    c,
    c.acts.map((_, l) => c.candidates[l][p.picks[l]]),
    p.depth,
  );
}

/** a runs cheaper than b: by estimated latency where both are known, else by ring, bootstraps, levels. */
export function cheaper(a: Cost, b: Cost): boolean {
  const known = Number.isFinite(a.estLatencyMs) && Number.isFinite(b.estLatencyMs);
  if (known && Math.abs(a.estLatencyMs - b.estLatencyMs) > 1e-9) return a.estLatencyMs < b.estLatencyMs;
  if (a.ringSize !== b.ringSize) return a.ringSize < b.ringSize;
  if (a.bootstraps !== b.bootstraps) return a.bootstraps < b.bootstraps;
  return a.levels < b.levels;
}

/** a's tier (ring, then bootstraps on it) is below b's. */
export function tierBelow(a: Cost, b: Cost): boolean {
  return a.ringSize < b.ringSize || (a.ringSize === b.ringSize && a.bootstraps < b.bootstraps);
}

/**
 * Of the measured rounds that meet the budget safely, the cheapest to run (`cheaper`); null if
 * none does. Ties keep the earlier round (the search's own comes first).
 */
export function cheapestMeeting(c: CostContext, rounds: Round[], budget: number): Round | null {
  let best: { r: Round; cost: Cost } | null = null;
  for (const r of rounds) {
    if (!meetsBudget(r, budget)) continue;
    const cost = roundCost(c, r);
    if (!best || cheaper(cost, best.cost)) best = { r, cost };
  }
  return best?.r ?? null;
}

/** Where fine-tuning inside the choice starts in one cheaper tier. */
export interface FinetuneStart {
  cost: Cost;
  /** The best round measured in the tier (safe first, then the lowest drop), if any. */
  round: Round | null;
  /**
   * The first-order frontier's most accurate choice in the tier, when the analysis measured none
   * as deep: measured with its plain fits, the better of it and `round` is the start.
   */
  pick: DegreePick | null;
}

/** Better start of two measured rounds: safe first, then the lower drop. */
export function betterStart(a: Round | null, b: Round): Round {
  if (!a) return b;
  if (a.measured.safe !== b.measured.safe) return a.measured.safe ? a : b;
  return b.drop < a.drop ? b : a;
}

/**
 * The tiers cheaper than the result's, nearest first, at most `max`, each with its best measured
 * round and the first-order frontier's most accurate choice there (the frontier is by increasing
 * levels and decreasing predicted drop, so its last in the tier) if deeper than every measured
 * one. Fine-tuning moves weights and coefficients but never degrees, so the most accurate start of
 * a tier is where it has most to work with.
 */
export function finetuneStarts(
  c: CostContext,
  F: DegreePick[],
  rounds: Round[],
  result: Round,
  max: number,
): FinetuneStart[] {
  const top = roundCost(c, result);
  return tierStarts(c, F, rounds, (cost) => tierBelow(cost, top)).slice(0, max);
}

/**
 * --finetune-frontier: every tier the analysis measured a round in (the first-order frontier only
 * deepens a tier's start, as in finetuneStarts), cheapest first.
 */
export function frontierStarts(c: CostContext, F: DegreePick[], rounds: Round[]): FinetuneStart[] {
  return tierStarts(c, F, rounds, () => true)
    .filter((t) => t.round)
    .reverse();
}

/** A cost's tier as a key. */
export const tierKey = (x: Cost) => `${x.ringSize}/${x.bootstraps}`;

/** The tiers whose cost passes `inTier`, most expensive first, each with its start (finetuneStarts). */
function tierStarts(c: CostContext, F: DegreePick[], rounds: Round[], inTier: (x: Cost) => boolean): FinetuneStart[] {
  const byTier = new Map<string, FinetuneStart>();
  // Each round's cost once: the tiers and their deepest measured choice both read it.
  const costed = rounds.map((r) => ({ r, cost: roundCost(c, r) }));
  for (const p of F) {
    const cost = pickCost(c, p);
    if (inTier(cost)) byTier.set(tierKey(cost), { cost, round: null, pick: p });
  }
  for (const { r, cost } of costed) {
    if (!inTier(cost)) continue;
    const now = byTier.get(tierKey(cost)) ?? { cost, round: null, pick: null };
    now.round = betterStart(now.round, r);
    byTier.set(tierKey(cost), now);
  }
  for (const t of byTier.values()) {
    const mine = costed.filter((x) => tierKey(x.cost) === tierKey(t.cost));
    const deepest = Math.max(-1, ...mine.map((x) => x.r.pick.depth));
    if (t.pick && t.pick.depth <= deepest) t.pick = null;
  }
  return [...byTier.values()].sort(
    (a, b) => b.cost.ringSize - a.cost.ringSize || b.cost.bootstraps - a.cost.bootstraps,
  );
}

/**
 * The frontier's choices within the target (by the levels of the network's longest path, or by
 * the bootstraps planned at `bootstrapLevels` between them: cost/bootstrap.ts; a picked point:
 * its degrees).
 */
export function withinTarget(
  F: DegreePick[],
  t: Target,
  net: {
    g: Graph;
    acts: GraphNode[];
    depth: (l: number, k: number) => number;
    degree: (l: number, k: number) => number;
    bootstrapLevels: number;
  },
): DegreePick[] {
  return F.filter((p) => {
    if (t.levels !== undefined && p.depth > t.levels) return false;
    if (t.degrees && net.acts.some((a, l) => net.degree(l, p.picks[l]) !== t.degrees![a.name])) return false;
    if (t.bootstraps === undefined) return true;
    const depths = new Map(net.acts.map((a, l) => [a.id, net.depth(l, p.picks[l])]));
    return planBootstraps(net.g, depths, net.bootstrapLevels).bootstraps <= t.bootstraps;
  });
}
