/**
 * Select, refine, verify: the search that turns the screen's predictions into a measured
 * choice, in three tiers of cost.
 *
 * 1. The frontier (selection.ts): choices from the fewest levels to the most, each predicted
 *    (first order) more accurate than every cheaper one. Free once the screen has run.
 * 2. An exact check of a choice's plain fits on the screen's calibration samples: one forward
 *    pass over them. First order is optimistic where errors compound (on ResNet-20 a 56-level
 *    choice predicted 0.9 pp and lost 10), so the search looks with this check for the cheapest
 *    choice that passes, from the first-order guess: down from it by galloping when it passes,
 *    up from it by bisection when it fails.
 * 3. A full round: that choice's refinements (refine.ts), each measured on held-out data
 *    (verify.ts), the best safe one kept. If it misses the budget, the check's threshold is
 *    lowered by the miss and the search moves to more accurate choices; if it meets the budget
 *    with the refinements' help, cheaper choices whose check passes within that help get one
 *    round too.
 * Every tier costs a fixed number of passes over the data whatever the depth, and the tiers are
 * bounded (at most 4 full rounds), so the search is linear in the network's size.
 */
import type { Fit, FitMethod } from '../fit/fit';
import type { Refinement, SelectionAttempt } from '../report';
import type { GraphNode } from '../model/graph';
import type { Variant } from './refine';
import type { DegreePick } from './selection';
import type { Measurement } from './verify';

export interface Round {
  pick: DegreePick;
  fits: Map<number, Fit>;
  offsets: Map<number, Float32Array | null>;
  measured: Measurement;
  /** Drop measured on held-out data, percentage points. */
  drop: number;
  refinements: Refinement[];
}

export interface SearchResult {
  /** The kept round: the cheapest that met the budget safely, else the best measured. */
  result: Round | null;
  rounds: number;
  /** Exact checks on the screen samples (tier 2). */
  checks: number;
  attempts: SelectionAttempt[];
}

type Measured = Variant & { measured: Measurement; drop: number; safe: boolean };

export interface SearchContext {
  acts: GraphNode[];
  method: FitMethod;
  candidates: Fit[][];
  /** Per layer, per candidate: its levels (the DP's costs). */
  costs: { depth: number }[][];
  /** Levels of layer l with a variant's fit: a refinement must not cost more than its candidate (fold.ts). */
  layerDepth: (l: number, fit: Fit, offset: Float32Array | null | undefined) => number;
  budget: number;
  /** Choices by increasing levels and decreasing predicted drop (DegreeChooser.frontier). */
  frontier: DegreePick[];
  /** Accuracy of the original model on the held-out samples. */
  baseAccuracy: number;
  /** Tier 2: the exact drop of plain fits on the screen samples, percentage points. */
  check: (fits: Map<number, Fit>) => Promise<number>;
  /** The variants of one choice to measure, the plain fits first (refine.ts). */
  variants: (plain: Variant, measured: Measured[]) => AsyncGenerator<Variant>;
  measure: (v: Variant) => Promise<Measurement>;
  onRound?: (round: number, message: string) => void;
}

const MAX_ROUNDS = 4;

/** Better of two measured results: safe before unsafe, then the lower drop; ties keep `a`. */
function better<T extends { drop: number; measured: Measurement }>(a: T | null, b: T): T {
  if (!a) return b;
  if (a.measured.safe !== b.measured.safe) return a.measured.safe ? a : b;
  return b.drop < a.drop - 1e-9 ? b : a;
}

export async function searchDegrees(c: SearchContext): Promise<SearchResult> {
  const F = c.frontier;
  const attempts: SelectionAttempt[] = [];
  const pct = (acc: number) => 100 * (c.baseAccuracy - acc);
  const plainFits = (p: DegreePick) => new Map(c.acts.map((a, l) => [a.id, c.candidates[l][p.picks[l]]]));
  if (!F.length) return { result: null, rounds: 0, checks: 0, attempts };

  const checked = new Map<number, number>();
  const check = async (i: number) => {
    if (!checked.has(i)) checked.set(i, await c.check(plainFits(F[i])));
    return checked.get(i)!;
  };
  /**
   * The cheapest index in [lo, hi] whose check is at most t, from `guess` (the check falls along
   * the frontier, nearly monotonically).
   * - The guess passes and is first order's (`near`): the answer is at or below it, and usually
   *   at it: the choices below are predicted over the budget, and where first order errs it is
   *   mostly optimistic (of 76 checks logged on the four MNIST examples and ResNet-8/20/32, 53
   *   exceeded its prediction, 14 fell below). So the search gallops down (guess - 1, - 3, - 7, ...)
   *   and bisects the last step: 2 checks when the guess is the answer, where bisecting all of
   *   [lo, guess] took about log2(guess) (ResNet-32's uniform search: 8 checks, 7 of them below
   *   its passing guess; ResNet-8's data-guided one: 6, 5 below). Of the seven searches there
   *   whose guess passed, six ended at it, one (the CNN's) 3 below, which galloping takes one
   *   check more to find.
   *   Any other passing guess (the relaxed search's, at its top) is bisected below.
   * - The guess fails: the answer lies above at a distance first order does not tell, so the
   *   search bisects (guess, hi], assuming `hi` passes and checking it only if it ends there: the
   *   most expensive choice usually passes and is usually not the answer, so checking it first
   *   cost a pass over the screen samples for nothing (on ResNet-20, one of 8 checks).
   */
  const cheapest = async (t: number, lo: number, hi: number, guess: number, near: boolean): Promise<number | null> => {
    if (lo > hi) return null;
    const g = Math.min(hi, Math.max(lo, guess));
    let a: number;
    let b: number;
    const passes = (await check(g)) <= t;
    if (passes && !near) {
      a = lo;
      b = g;
    } else if (passes) {
      // Exponential search down: b passes; stop at the first failure below it.
      b = g;
      for (let step = 1; ; step *= 2) {
        if (b === lo) return lo;
        const m = Math.max(lo, b - step);
        if ((await check(m)) <= t) b = m;
        else {
          a = m + 1;
          break;
        }
      }
    } else {
      if (g === hi) return null;
      a = g + 1;
      b = hi;
    }
    while (a < b) {
      const m = Math.floor((a + b) / 2);
      if ((await check(m)) <= t) b = m;
      else a = m + 1;
    }
    return (await check(b)) <= t ? b : null;
  };

  let rounds = 0;
  const full = async (i: number, why: SelectionAttempt['why']): Promise<Round | null> => {
    rounds++;
    const pick = F[i];
    const plain: Variant = {
      name: 'plain',
      description: `each ${c.candidates[0]?.[0]?.channels ? 'channel' : 'layer'} fitted to the data recorded in the original model`,
      fits: plainFits(pick),
      offsets: new Map(),
    };
    const measured: Measured[] = [];
    let best: Measured | null = null;
    for await (const v of c.variants(plain, measured)) {
      // Refined coefficients can break a degree-2 fold the choice's levels count on.
      const over = c.acts.findIndex(
        (a, l) => c.layerDepth(l, v.fits.get(a.id)!, v.offsets.get(a.id)) > c.costs[l][pick.picks[l]].depth,
      );
      if (over >= 0) {
        c.onRound?.(
          rounds,
          `${c.method}: round ${rounds}, ${v.name} skipped: it would cost ${c.acts[over].name} more levels`,
        );
        continue;
      }
      const m = await c.measure(v);
      const entry = { ...v, measured: m, drop: pct(m.accuracy), safe: m.safe };
      measured.push(entry);
      best = better(best, entry);
      c.onRound?.(
        rounds,
        `${c.method}: round ${rounds}, ${v.name} measured ${entry.drop.toFixed(2)} pp${m.safe ? '' : ' (values beyond what CKKS holds)'}`,
      );
    }
    if (!best) return null;
    const round: Round = {
      pick,
      fits: best.fits,
      offsets: best.offsets,
      measured: best.measured,
      drop: best.drop,
      refinements: measured.map((v) => ({
        name: v.name,
        description: v.description,
        accuracy: v.measured.accuracy,
        measuredDrop: v.drop,
        kept: v === best,
        safe: v.safe,
      })),
    };
    attempts.push({
      why,
      degrees: Object.fromEntries(c.acts.map((a, l) => [a.name, c.candidates[l][pick.picks[l]].degree])),
      depth: pick.depth,
      predictedDrop: pick.predictedDrop,
      checkedDrop: checked.get(i) ?? null,
      measuredDrop: round.drop,
      meetsBudget: meets(round),
      safe: round.measured.safe,
    });
    return round;
  };
  const meets = (r: Round) => r.drop <= c.budget + 1e-9 && r.measured.safe;

  // The first-order guess, then the cheapest choice whose exact check meets the budget.
  const last = F.length - 1;
  const guess = F.findIndex((p) => p.predictedDrop <= c.budget + 1e-9);
  let i = (await cheapest(c.budget, 0, last, guess < 0 ? last : guess, guess >= 0)) ?? last;
  let threshold = c.budget;
  let kept: Round | null = null;
  let keptAt = -1;
  while (rounds < MAX_ROUNDS) {
    const round = await full(i, rounds === 0 ? 'selected' : 'tightened');
    if (!round) break;
    if (meets(round)) {
      kept = round;
      keptAt = i;
      break;
    }
    if (!kept || better(kept, round) === round) {
      kept = round;
      keptAt = i;
    }
    // Held-out data found the check optimistic by the miss: ask the check for that much less.
    const miss = round.measured.safe ? round.drop - c.budget : Math.max(c.budget, round.drop);
    threshold = Math.min(threshold, (await check(i)) - Math.max(miss, 0.1));
    const next = i < last ? ((await cheapest(threshold, i + 1, last, i + 1, false)) ?? last) : null;
    if (next === null || next === i) break;
    i = next;
  }
  // The refinements may have won back part of the plain fits' drop; a cheaper choice whose check
  // passes within that gain gets one round.
  if (kept && meets(kept) && keptAt > 0 && rounds < MAX_ROUNDS) {
    const plainDrop = kept.refinements.find((r) => r.name === 'plain')?.measuredDrop ?? kept.drop;
    const gain = plainDrop - kept.drop;
    if (gain > 0) {
      const j = await cheapest(c.budget + gain, 0, keptAt - 1, keptAt - 1, false);
      if (j !== null) {
        const round = await full(j, 'relaxed');
        if (round && meets(round)) kept = round;
      }
    }
  }
  return { result: kept, rounds, checks: checked.size, attempts };
}
