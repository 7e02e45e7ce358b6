/**
 * The accuracy–cost frontier: for each cost the analysis reached, the best choice of degrees it
 * measured there on held-out data, per method. A cost is the network's levels, the SEAL ring that
 * chain needs (each step past a ring's chain doubles N, and every operation costs about twice as
 * much), the bootstraps beyond SEAL's largest chain, and the latency these imply.
 *
 * By default the points are the search's own rounds (no extra pass over the data); `--frontier N`
 * measures N more choices of the first-order frontier (selection.ts), spread over the levels from
 * the cheapest choice to the uniform baseline's, each with its plain fits on the held-out samples.
 */
import { OpCosts, polyCost, publishedCosts } from '../cost/cost';
import { planBootstraps } from '../cost/bootstrap';
import { cachedSealCosts } from '../cost/sealCosts';
import { Fit, FitMethod, polyOf } from '../fit/fit';
import { ringFor } from '../he/params';
import { bootstrapSpec, cachedLattigoCosts } from '../he/lattigoCosts';
import type { Graph, GraphNode } from '../model/graph';
import type { FrontierPoint, FrontierReport, SelectionAttempt } from '../report';
import type { DegreePick } from './selection';
import type { Round } from './search';

/** The ring bootstrapping runs at (Lattigo's 128-bit parameters, engines/lattigo/params.go). */
export const BOOTSTRAP_RING = 65536;

/** What a choice's cost is computed from. */
export interface CostContext {
  g: Graph;
  acts: GraphNode[];
  /** Per activation, the candidate fits of the choice's method (their degrees name the choice). */
  candidates: Fit[][];
  fold?: boolean;
  bootstrapLevels: number;
  /** Costs on the bootstrapping ring (Lattigo's, measured, where cached; `bootstrap` in ms). */
  bootstrapped: OpCosts;
  /** Costs on a SEAL ring: measured where cached (read once per ring), else published. */
  sealCosts: (ring: number) => OpCosts;
}

/**
 * A point's cost for a choice of `levels` levels: on the smallest SEAL ring that holds them (costs
 * measured there where cached), else on the bootstrapping ring with its bootstraps' time.
 */
export function pointCost(
  c: CostContext,
  fits: Fit[],
  levels: number,
): Pick<FrontierPoint, 'levels' | 'ringSize' | 'bootstraps' | 'estLatencyMs'> {
  const ring = ringFor(levels);
  const costs = ring ? c.sealCosts(ring) : c.bootstrapped;
  const layers = c.acts.map((a, l) => polyCost(c.g, a, polyOf(fits[l]), fits[l].degree, costs, c.fold));
  const activations = layers.reduce((t, x) => t + x.latencyMs, 0);
  // Bootstraps at `bootstrapLevels` levels between them (cost/bootstrap.ts), from the same layers' levels.
  const bootstraps = ring
    ? 0
    : planBootstraps(c.g, new Map(c.acts.map((a, l) => [a.id, layers[l].depth])), c.bootstrapLevels).bootstraps;
  return {
    levels,
    ringSize: ring ?? BOOTSTRAP_RING,
    bootstraps,
    estLatencyMs: activations + (ring ? 0 : bootstraps * (costs.bootstrap ?? NaN)),
  };
}

/** The candidate fits of a choice named by its degrees (a search attempt records degrees by activation name). */
export function fitsOf(c: CostContext, degrees: Record<string, number>): Fit[] | null {
  const fits = c.acts.map((a, l) => c.candidates[l].find((f) => f.degree === degrees[a.name]));
  return fits.every((f) => f) ? (fits as Fit[]) : null;
}

/** A measured choice as a frontier point, at its cost. */
export function point(
  c: CostContext,
  method: string,
  degrees: Record<string, number>,
  fits: Fit[],
  levels: number,
  m: { drop: number; safe: boolean },
  budget: number,
  source: FrontierPoint['source'],
): FrontierPoint {
  return {
    method,
    degrees,
    ...pointCost(c, fits, levels),
    measuredDrop: m.drop,
    safe: m.safe,
    meetsBudget: m.drop <= budget + 1e-9 && m.safe,
    source,
    chosen: false,
  };
}

/** A frontier point from one of the search's measured rounds. */
export function attemptPoint(
  c: CostContext,
  method: string,
  a: SelectionAttempt,
  budget: number,
): FrontierPoint | null {
  const fits = fitsOf(c, a.degrees);
  if (!fits) return null;
  return point(c, method, a.degrees, fits, a.depth, { drop: a.measuredDrop, safe: a.safe }, budget, 'search');
}

/**
 * N choices of the frontier `F` (by increasing levels) spread over [the cheapest, the first at or
 * above `upTo` levels]: evenly by position, the ends included, each level count once.
 */
export function spreadPicks(F: DegreePick[], n: number, upTo: number): DegreePick[] {
  if (!F.length || n <= 0) return [];
  let last = F.findIndex((p) => p.depth >= upTo);
  if (last < 0) last = F.length - 1;
  const out: DegreePick[] = [];
  const seen = new Set<number>();
  for (let k = 0; k < n; k++) {
    const i = n === 1 ? last : Math.round((k * last) / (n - 1));
    if (!seen.has(F[i].depth)) {
      seen.add(F[i].depth);
      out.push(F[i]);
    }
  }
  return out;
}

/**
 * Per method, the best safe measured point at each level count, kept only where it is better than
 * every cheaper one: the frontier a user picks from (the analysis's result always). Sorted by
 * method (as given), then levels.
 */
export function paretoFront(points: FrontierPoint[]): FrontierPoint[] {
  const out: FrontierPoint[] = [];
  for (const method of [...new Set(points.map((p) => p.method))]) {
    const mine = points
      .filter((p) => p.method === method && p.safe)
      .sort((a, b) => a.levels - b.levels || a.measuredDrop - b.measuredDrop);
    let best = Infinity;
    for (const p of mine) {
      if (p.measuredDrop >= best - 1e-9 && !p.chosen) continue;
      best = Math.min(best, p.measuredDrop);
      out.push(p);
    }
  }
  return out;
}

/** The context of one method's choices: its candidate fits, and the bootstrapping ring's costs. */
export function costContext(
  g: Graph,
  acts: GraphNode[],
  candidates: Fit[][],
  s: { fold?: boolean; bootstrapLevels: number },
): CostContext {
  const bootstrapped = cachedLattigoCosts(bootstrapSpec(s.bootstrapLevels)) ?? publishedCosts(BOOTSTRAP_RING);
  const seal = new Map<number, OpCosts>();
  const sealCosts = (ring: number) => {
    if (!seal.has(ring)) seal.set(ring, cachedSealCosts(ring) ?? publishedCosts(ring));
    return seal.get(ring)!;
  };
  return { g, acts, candidates, fold: s.fold, bootstrapLevels: s.bootstrapLevels, bootstrapped, sealCosts };
}

/**
 * --frontier N: N choices of the method's first-order frontier (spreadPicks) that the search did
 * not measure, each measured with its plain fits on the held-out samples (search.ts: plainRound);
 * their rounds too, since one may become the result (choice.ts: cheapestMeeting).
 */
export async function measureFrontier(
  c: CostContext,
  method: string,
  picks: DegreePick[],
  measured: SelectionAttempt[],
  budget: number,
  measure: (p: DegreePick) => Promise<Round>,
  onPoint?: (k: number, n: number) => void,
): Promise<{ points: FrontierPoint[]; rounds: Round[] }> {
  const done = new Set(measured.map((a) => JSON.stringify(a.degrees)));
  const points: FrontierPoint[] = [];
  const rounds: Round[] = [];
  for (const [k, p] of picks.entries()) {
    const fits = c.acts.map((_, l) => c.candidates[l][p.picks[l]]);
    const degrees = Object.fromEntries(c.acts.map((a, l) => [a.name, fits[l].degree]));
    if (done.has(JSON.stringify(degrees))) continue;
    const r = await measure(p);
    rounds.push(r);
    points.push(point(c, method, degrees, fits, p.depth, { drop: r.drop, safe: r.measured.safe }, budget, 'frontier'));
    onPoint?.(k + 1, picks.length);
  }
  return { points, rounds };
}

/** A method as reports name it. */
export const methodName = (m: FitMethod) => (m === 'data' ? 'data-guided' : m);

/**
 * The report's frontier: the rounds both searches measured anyway and the points --frontier N and
 * fine-tuning inside the choice measured (`extra`), each at its cost; per method the best at each
 * cost, the result marked.
 */
export function frontierReport(
  g: Graph,
  acts: GraphNode[],
  s: { fold?: boolean; bootstrapLevels: number; budget: number },
  searches: { method: FitMethod; candidates: Fit[][]; attempts: SelectionAttempt[] }[],
  extra: FrontierPoint[],
  final: { method: string; degrees: Record<string, number> },
): FrontierReport {
  const points = [
    ...searches.flatMap(({ method, candidates, attempts }) => {
      const c = costContext(g, acts, candidates, s);
      // A --frontier point that became the result is an attempt too: its point is the extra one.
      return attempts.flatMap((t) =>
        t.why === 'frontier' ? [] : (attemptPoint(c, methodName(method), t, s.budget) ?? []),
      );
    }),
    ...extra,
  ];
  const key = JSON.stringify(final.degrees);
  for (const p of points) p.chosen = p.method === final.method && JSON.stringify(p.degrees) === key;
  // A choice recorded twice (a search round that fine-tuning started from is a 'finetuned' attempt too) counts once.
  const seen = new Set<string>();
  const once = points.filter((p) => {
    const k = `${p.method}|${JSON.stringify(p.degrees)}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return { points: paretoFront(once), measured: extra.filter((p) => p.source === 'frontier').length };
}
