/**
 * Select, refine, verify: the search that turns the screen's predictions into a measured
 * choice, in three tiers of cost.
 *
 * 1. The frontier (selection.ts): choices from the fewest levels to the most, each predicted
 *    (first order) more accurate than every cheaper one. Free once the screen has run.
 * 2. An exact check of a choice's plain fits on the screen's calibration samples: one forward
 *    pass over them. First order is optimistic where errors compound (README, "Measurements
 *    behind the defaults"), so the search looks with this check for the cheapest
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
  /** Every full round, in order (its best refinement): where fine-tuning inside the choice starts (analysis/choice.ts). */
  all: Round[];
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

const plainDescription = (candidates: Fit[][]) =>
  `each ${candidates[0]?.[0]?.channels ? 'channel' : 'layer'} fitted to the data recorded in the original model`;

/**
 * A round of a choice's plain fits alone, measured on held-out data (no refinements): a --frontier
 * point, or where fine-tuning inside the choice starts when the search never measured the choice.
 */
export async function plainRound(
  acts: GraphNode[],
  candidates: Fit[][],
  pick: DegreePick,
  baseAccuracy: number,
  measure: (fits: Map<number, Fit>) => Promise<Measurement>,
): Promise<Round> {
  const fits = new Map(acts.map((a, l) => [a.id, candidates[l][pick.picks[l]]]));
  const m = await measure(fits);
  const drop = 100 * (baseAccuracy - m.accuracy);
  const refinement: Refinement = {
    name: 'plain',
    description: plainDescription(candidates),
    accuracy: m.accuracy,
    measuredDrop: drop,
    kept: true,
    safe: m.safe,
  };
  return { pick, fits, offsets: new Map(), measured: m, drop, refinements: [refinement] };
}

/** A measured round meets the budget: its drop within it, and every value safe. */
export const meetsBudget = (r: Round, budget: number) => r.drop <= budget + 1e-9 && r.measured.safe;

/** A round's degrees by activation name (as reports record choices). */
export const roundDegrees = (acts: GraphNode[], r: Round) =>
  Object.fromEntries(acts.map((a) => [a.name, r.fits.get(a.id)!.degree]));

/** A round as the report's attempts record it. */
export function roundAttempt(
  acts: GraphNode[],
  r: Round,
  why: SelectionAttempt['why'],
  budget: number,
  checkedDrop: number | null = null,
): SelectionAttempt {
  return {
    why,
    degrees: roundDegrees(acts, r),
    depth: r.pick.depth,
    predictedDrop: r.pick.predictedDrop,
    checkedDrop,
    measuredDrop: r.drop,
    meetsBudget: meetsBudget(r, budget),
    safe: r.measured.safe,
  };
}

export function searchDegrees(c: SearchContext): Promise<SearchResult> {
  return new DegreeSearch(c).run();
}

/** One search along a frontier: its exact checks (cached by frontier index), its full rounds and their attempts. */
class DegreeSearch {
  private readonly F: DegreePick[];
  private readonly attempts: SelectionAttempt[] = [];
  private readonly all: Round[] = [];
  private readonly checked = new Map<number, number>();
  private rounds = 0;

  constructor(private readonly c: SearchContext) {
    this.F = c.frontier;
  }

  async run(): Promise<SearchResult> {
    const { c, F } = this;
    if (!F.length) return { result: null, rounds: 0, checks: 0, attempts: this.attempts, all: this.all };
    // The first-order guess, then the cheapest choice whose exact check meets the budget.
    const last = F.length - 1;
    const guess = F.findIndex((p) => p.predictedDrop <= c.budget + 1e-9);
    let i = (await this.cheapest(c.budget, 0, last, guess < 0 ? last : guess, guess >= 0)) ?? last;
    let threshold = c.budget;
    let kept: Round | null = null;
    let keptAt = -1;
    while (this.rounds < MAX_ROUNDS) {
      const round = await this.full(i, this.rounds === 0 ? 'selected' : 'tightened');
      if (!round) break;
      if (this.meets(round)) {
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
      threshold = Math.min(threshold, (await this.check(i)) - Math.max(miss, 0.1));
      const next = i < last ? ((await this.cheapest(threshold, i + 1, last, i + 1, false)) ?? last) : null;
      if (next === null || next === i) break;
      i = next;
    }
    if (kept && this.meets(kept) && keptAt > 0 && this.rounds < MAX_ROUNDS) kept = await this.relaxed(kept, keptAt);
    return { result: kept, rounds: this.rounds, checks: this.checked.size, attempts: this.attempts, all: this.all };
  }

  /**
   * The refinements may have won back part of the plain fits' drop; a cheaper choice whose check
   * passes within that gain gets one round, kept if it meets the budget.
   */
  private async relaxed(kept: Round, keptAt: number): Promise<Round> {
    const plainDrop = kept.refinements.find((r) => r.name === 'plain')?.measuredDrop ?? kept.drop;
    const gain = plainDrop - kept.drop;
    if (gain <= 0) return kept;
    const j = await this.cheapest(this.c.budget + gain, 0, keptAt - 1, keptAt - 1, false);
    if (j === null) return kept;
    const round = await this.full(j, 'relaxed');
    return round && this.meets(round) ? round : kept;
  }

  private meets(r: Round): boolean {
    return meetsBudget(r, this.c.budget);
  }

  private plainFits(p: DegreePick): Map<number, Fit> {
    return new Map(this.c.acts.map((a, l) => [a.id, this.c.candidates[l][p.picks[l]]]));
  }

  private async check(i: number): Promise<number> {
    if (!this.checked.has(i)) this.checked.set(i, await this.c.check(this.plainFits(this.F[i])));
    return this.checked.get(i)!;
  }

  /**
   * The cheapest index in [lo, hi] whose check is at most t, from `guess` (the check falls along
   * the frontier, nearly monotonically).
   * - The guess passes and is first order's (`near`): the answer is at or below it, and usually
   *   at it: the choices below are predicted over the budget, and where first order errs it is
   *   mostly optimistic (checks logged on the MNIST examples and the peer ResNets mostly exceeded
   *   their prediction). So the search gallops down (guess - 1, - 3, - 7, ...) and bisects the
   *   last step: 2 checks when the guess is the answer, where bisecting all of [lo, guess] takes
   *   about log2(guess).
   *   Any other passing guess (the relaxed search's, at its top) is bisected below.
   * - The guess fails: the answer lies above at a distance first order does not tell, so the
   *   search bisects (guess, hi], assuming `hi` passes and checking it only if it ends there: the
   *   most expensive choice usually passes and is usually not the answer, so checking it first
   *   would cost a pass over the screen samples for nothing.
   */
  private async cheapest(t: number, lo: number, hi: number, guess: number, near: boolean): Promise<number | null> {
    if (lo > hi) return null;
    const g = Math.min(hi, Math.max(lo, guess));
    let a: number;
    let b: number;
    const passes = (await this.check(g)) <= t;
    if (passes && !near) {
      a = lo;
      b = g;
    } else if (passes) {
      // Exponential search down: b passes; stop at the first failure below it.
      b = g;
      for (let step = 1; ; step *= 2) {
        if (b === lo) return lo;
        const m = Math.max(lo, b - step);
        if ((await this.check(m)) <= t) b = m;
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
      if ((await this.check(m)) <= t) b = m;
      else a = m + 1;
    }
    return (await this.check(b)) <= t ? b : null;
  }

  /** A full round on frontier choice i: its refinements measured on held-out data, the best safe one kept. */
  private async full(i: number, why: SelectionAttempt['why']): Promise<Round | null> {
    const { c } = this;
    const rounds = ++this.rounds;
    const pick = this.F[i];
    const plain: Variant = {
      name: 'plain',
      description: plainDescription(c.candidates),
      fits: this.plainFits(pick),
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
      const entry = { ...v, measured: m, drop: 100 * (c.baseAccuracy - m.accuracy), safe: m.safe };
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
    this.attempts.push(roundAttempt(c.acts, round, why, c.budget, this.checked.get(i) ?? null));
    this.all.push(round);
    return round;
  }
}
