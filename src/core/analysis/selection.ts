/**
 * The select stage: per-layer degrees from the sensitivity screen, under the accuracy budget and
 * the level budget.
 *
 * An exact dynamic programme over the network's series-parallel structure (a multiple-choice
 * knapsack, as in OLA, Lee et al. arXiv 2310.10349, on chains; cost/seriesParallel.ts on graphs)
 * gives, for every network depth (the longest path's levels, linear layers included), the choice
 * of least energy: the screen's mean
 * squared first-order margin change, which adds over layers when their errors are independent.
 * Accuracy itself does not add over layers (flips interact), so each of those choices is judged by
 * its predicted drop, computed from the per-sample margin changes of all its layers together
 * (sensitivity.ts), and a local search lowers that prediction at the few depths that matter. The
 * result is a frontier of choices by increasing levels and decreasing predicted drop, which the
 * search (search.ts) walks with exact measurements. The DP costs layers x depths x candidates,
 * the local search layers x candidates per move: both grow about linearly with the network.
 */
import type { ActivationCost } from '../cost/cost';
import { DepthTables, NodeChoices, SpExpr, decompose, fixedLevels, longestPath } from '../cost/seriesParallel';
import type { Graph, GraphNode } from '../model/graph';
import { Screen, energy, predictedDrop } from './sensitivity';

export interface DegreePick {
  /** Candidate index per activation. */
  picks: number[];
  /** Levels of the network's longest path with these degrees, linear layers included (the DP's cost). */
  depth: number;
  mults: number;
  /** First-order predicted drop of the whole choice on the screen samples, percentage points. */
  predictedDrop: number;
}

/** The network whose depth a choice of degrees sets: its graph and its activations (in the rows' order). */
export interface Network {
  g: Graph;
  acts: GraphNode[];
}

export class DegreeChooser {
  private readonly energies: number[][];
  readonly seen = new Map<string, DegreePick>();
  private readonly expr: SpExpr;
  private readonly fixed: number[];
  /**
   * The most levels one activation may take (planning for bootstrapping: the levels between two
   * bootstraps, since no engine here bootstraps inside a polynomial); deeper candidates are not chosen.
   */
  layerCap = Infinity;

  /**
   * @param rows per activation, per candidate: the screen's margin changes (sensitivity.ts)
   * @param costs per activation, per candidate: its levels and multiplications
   * @param net the graph, whose longest path decides a choice's levels
   */
  constructor(
    private readonly screen: Screen,
    private readonly rows: Float32Array[][],
    private readonly costs: ActivationCost[][],
    private readonly net: Network,
  ) {
    const raw = rows.map((r) => r.map(energy));
    // Scaled to [0, 1] so that the DP's absolute tolerance means the same on every model.
    const top = Math.max(1e-300, ...raw.flat());
    this.energies = raw.map((r) => r.map((e) => e / top));
    this.fixed = fixedLevels(net.g);
    this.expr = decompose(net.g);
  }

  /** The network's levels with candidate picks[l] at activation l. */
  depthOf(picks: number[]): number {
    const lv = this.fixed.slice();
    this.net.acts.forEach((a, l) => {
      lv[a.id] = this.costs[l][picks[l]].depth;
    });
    return longestPath(this.net.g, lv);
  }

  private judge(picks: number[], depth: number, mults: number): DegreePick {
    const key = picks.join(',');
    let p = this.seen.get(key);
    if (!p) {
      p = {
        picks,
        depth,
        mults,
        predictedDrop: predictedDrop(
          this.screen,
          picks.map((k, l) => this.rows[l][k]),
        ),
      };
      this.seen.set(key, p);
    }
    return p;
  }

  /** Seconds spent choosing (the select stage's time). */
  seconds = 0;

  /** For every total depth up to `maxDepth`, the DP's choice of least energy (then fewest multiplications). */
  private sweep(maxDepth: number): DegreePick[] {
    const t0 = Date.now();
    try {
      return this.sweepUntimed(maxDepth);
    } finally {
      this.seconds += (Date.now() - t0) / 1000;
    }
  }

  private sweepUntimed(maxDepth: number): DegreePick[] {
    const L = this.costs.length;
    if (L === 0) return [this.judge([], this.depthOf([]), 0)];
    const within = (c: ActivationCost) => c.depth <= this.layerCap;
    const deepest = this.depthOf(
      this.costs.map((cs) =>
        cs.reduce((k, c, j) => (within(c) && (!within(cs[k]) || c.depth > cs[k].depth) ? j : k), 0),
      ),
    );
    const D = Math.min(maxDepth, deepest);
    if (D < 0) return [];
    const choices = new Map<number, NodeChoices>(
      this.net.acts.map((a, l) => [
        a.id,
        {
          depth: this.costs[l].map((c) => (c.depth > this.layerCap ? Infinity : c.depth)),
          energy: this.energies[l],
          mults: this.costs[l].map((c) => c.nonScalarMults),
        },
      ]),
    );
    const t = new DepthTables(this.fixed, choices, D).table(this.expr);
    const index = new Map(this.net.acts.map((a, l) => [a.id, l]));
    const out: DegreePick[] = [];
    for (let d = 0; d <= D; d++) {
      if (t.e[d] === Infinity || (d > 0 && t.e[d] === t.e[d - 1] && t.m[d] === t.m[d - 1])) continue;
      const chosen = new Map<number, number>();
      t.pick(d, chosen);
      const picks = new Array<number>(L);
      for (const [id, k] of chosen) picks[index.get(id)!] = k;
      out.push(this.judge(picks, this.depthOf(picks), t.m[d]));
    }
    return out;
  }

  /**
   * Lowers a choice's predicted drop without exceeding `maxDepth`, by moving one layer to another
   * candidate or two layers at once (one up, one down, so the depth can stay), best move first,
   * until no move lowers it. The energy the DP trades is only a proxy: at a given depth the DP's
   * choice is not always the one with the least predicted drop (README, "Measurements behind the
   * defaults").
   */
  private improve(start: DegreePick, maxDepth: number): DegreePick {
    const t0 = Date.now();
    const { screen, rows } = this;
    const S = screen.samples;
    const cost = (l: number, k: number) => this.costs[l][k];
    const picks = [...start.picks];
    const D = new Float64Array(S);
    rows.forEach((r, l) => {
      const row = r[picks[l]];
      for (let i = 0; i < S; i++) D[i] += row[i];
    });
    const lostWith = (sub1: Float32Array, add1: Float32Array, sub2: Float32Array | null, add2: Float32Array | null) => {
      let lost = 0;
      for (let i = 0; i < S; i++) {
        let d = D[i] - sub1[i] + add1[i];
        if (sub2) d += add2![i] - sub2[i];
        lost += screen.right[i] - Number(screen.margins[i] + d > 0);
      }
      return lost;
    };
    let depth = start.depth;
    let mults = start.mults;
    const depthWith = (l1: number, k1: number, l2 = -1, k2 = -1) => {
      const p = [...picks];
      p[l1] = k1;
      if (l2 >= 0) p[l2] = k2;
      return this.depthOf(p);
    };
    let lost = Math.round((start.predictedDrop * S) / 100);
    type Move = { l1: number; k1: number; l2: number; k2: number; lost: number; depth: number; mults: number };
    const isBetter = (m: Move, than: Move | null) => {
      const ref = than ?? { lost, depth, mults };
      return (
        m.lost < ref.lost ||
        (m.lost === ref.lost && (m.depth < ref.depth || (m.depth === ref.depth && m.mults < ref.mults)))
      );
    };
    for (let sweep = 0; sweep < 50; sweep++) {
      let best: Move | null = null;
      // Single moves: every layer to every candidate within the depth.
      const up: Move[] = [];
      const down: Move[] = [];
      for (let l1 = 0; l1 < rows.length; l1++) {
        for (let k1 = 0; k1 < rows[l1].length; k1++) {
          if (k1 === picks[l1] || cost(l1, k1).depth > this.layerCap) continue;
          const dd = cost(l1, k1).depth - cost(l1, picks[l1]).depth;
          const move = {
            l1,
            k1,
            l2: -1,
            k2: -1,
            lost: lostWith(rows[l1][picks[l1]], rows[l1][k1], null, null),
            depth: depthWith(l1, k1),
            mults: mults - cost(l1, picks[l1]).nonScalarMults + cost(l1, k1).nonScalarMults,
          };
          if (move.depth <= maxDepth && isBetter(move, best)) best = move;
          if (dd > 0) up.push(move);
          else if (dd < 0) down.push(move);
        }
      }
      // Pairs: a layer that gains levels paired with one that gives them up, the moves that
      // help (up) or hurt (down) the least alone, a few dozen of each: the trades that keep the depth.
      const top = (ms: Move[]) => ms.sort((x, y) => x.lost - y.lost).slice(0, 24);
      for (const u of top(up)) {
        for (const v of top(down)) {
          if (u.l1 === v.l1) continue;
          const d2 = depthWith(u.l1, u.k1, v.l1, v.k1);
          if (d2 > maxDepth) continue;
          const move = {
            l1: u.l1,
            k1: u.k1,
            l2: v.l1,
            k2: v.k1,
            lost: lostWith(rows[u.l1][picks[u.l1]], rows[u.l1][u.k1], rows[v.l1][picks[v.l1]], rows[v.l1][v.k1]),
            depth: d2,
            mults: u.mults + v.mults - mults,
          };
          if (isBetter(move, best)) best = move;
        }
      }
      if (!best) break;
      for (const [l, k] of [
        [best.l1, best.k1],
        [best.l2, best.k2],
      ]) {
        if (l < 0) continue;
        const from = rows[l][picks[l]];
        const to = rows[l][k];
        for (let i = 0; i < S; i++) D[i] += to[i] - from[i];
        picks[l] = k;
      }
      ({ lost, depth, mults } = best);
    }
    this.seconds += (Date.now() - t0) / 1000;
    return this.judge(picks, depth, mults);
  }

  /**
   * Choices from the fewest levels to the most: at each depth the DP's choice of least energy,
   * kept when it has less energy than every cheaper one (so the list runs from the cheapest to the
   * most accurate), and at the few depths just below the cheapest choice predicted to meet
   * `target`, before it, the one `improve` finds if that predicts a lower drop.
   * Energy, not the predicted drop, orders the list: near the accurate end the predicted drops of
   * different choices differ by less than their noise, and a list cut at the least predicted drop
   * stopped short of the budget on ResNet-20. The search (search.ts)
   * walks this list with exact measurements.
   */
  frontier(target: number, maxDepth: number): DegreePick[] {
    const all = this.sweep(maxDepth);
    const energyOf = (p: DegreePick) => p.picks.reduce((t, k, l) => t + this.energies[l][k], 0);
    const dp: DegreePick[] = [];
    let least = Infinity;
    for (const p of all) {
      const e = energyOf(p);
      if (e < least - 1e-15) {
        dp.push(p);
        least = e;
      }
    }
    const ok = dp.filter((p) => p.predictedDrop <= target + 1e-9);
    const top = ok.length ? ok[0].depth : dp.length ? dp[dp.length - 1].depth : -1;
    const near = dp.filter((p) => p.depth <= top).slice(-8);
    // At those depths both the improved choice (lower predicted drop) and the DP's (less energy);
    // the check decides between them. The improved one may even have fewer levels.
    const out: DegreePick[] = [];
    for (const p of dp) {
      if (near.includes(p)) {
        const better = this.improve(p, p.depth);
        if (better.predictedDrop < p.predictedDrop - 1e-9) out.push(better);
      }
      out.push(p);
    }
    const seen = new Set<string>();
    return (
      out
        .filter((p) => {
          const k = p.picks.join(',');
          if (seen.has(k)) return false;
          seen.add(k);
          return true;
        })
        // Within a depth the more accurate last, so that the checks fall along the list and bisection holds.
        .sort((p, q) => p.depth - q.depth || q.predictedDrop - p.predictedDrop)
    );
  }
}
