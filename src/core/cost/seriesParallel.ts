/**
 * The network's depth as a series-parallel expression, for choosing degrees on graphs instead of
 * chains: the levels of a network are those of its longest path, so branches that run side by
 * side (a residual block's two paths, a SqueezeNet fire module's expands, a max tree's operands)
 * cost the levels of the deeper one, not their sum.
 *
 * `decompose` splits the graph at its articulation nodes (nodes every input-to-output path goes
 * through) into a series of segments; a segment whose last node reads several inputs becomes
 * one branch per input, decomposed again, when the branches share no node. That is the
 * decomposition of series-parallel graphs (Valdes, Tarjan & Lawler, SIAM J. Comput. 1982),
 * which covers chains, residual networks, Inception-style blocks and max trees. A segment whose
 * branches share nodes (not series-parallel) is bounded instead: its activations' levels added
 * on top of its longest linear path, which is never less than its true depth.
 *
 * `DepthTables` then runs the exact dynamic programme of a multiple-choice knapsack over that
 * expression (OLA, Lee et al. arXiv 2310.10349, on chains): for every depth d, the least energy
 * of choices whose depth is at most d, with a series the (min, +) convolution of its parts'
 * tables and a parallel composition the sum of its branches' tables at the same d. Exact on
 * series-parallel graphs; layers x depth^2 operations.
 */
import { Graph, GraphNode } from '../model/graph';
import { linearLevels } from './cost';

export type SpExpr =
  /** A node's own levels: an activation's by its candidate, any other node's fixed (linearLevels). */
  | { kind: 'node'; id: number }
  | { kind: 'series'; parts: SpExpr[] }
  | { kind: 'parallel'; branches: SpExpr[] }
  /** A region that is not series-parallel: its activations' levels added to its longest linear path. */
  | { kind: 'bound'; acts: number[]; fixed: number };

/** The levels every node adds outside activations, computed once (linearLevels walks consumers). */
export function fixedLevels(g: Graph): number[] {
  return g.nodes.map((n) => (n.spec.op === 'activation' ? 0 : linearLevels(g, n)));
}

/** The longest input-to-output path in levels, for per-node levels. */
export function longestPath(g: Graph, levels: ArrayLike<number>): number {
  const lv = new Float64Array(g.nodes.length);
  for (const n of g.nodes) {
    let before = 0;
    for (const i of n.inputs) if (lv[i] > before) before = lv[i];
    lv[n.id] = before + levels[n.id];
  }
  return lv[g.output];
}

/**
 * The longest path's levels split into activations' and linear layers', for per-node levels
 * (`isAct` marks activations): the activation levels a network really spends, which is less
 * than the sum of all its activations' levels where branches run side by side.
 */
export function criticalPath(
  g: Graph,
  levels: ArrayLike<number>,
  isAct: (n: GraphNode) => boolean,
): { total: number; activation: number } {
  const lv = new Float64Array(g.nodes.length);
  const act = new Float64Array(g.nodes.length);
  for (const n of g.nodes) {
    let from = -1;
    for (const i of n.inputs) if (from < 0 || lv[i] > lv[from] || (lv[i] === lv[from] && act[i] > act[from])) from = i;
    lv[n.id] = (from >= 0 ? lv[from] : 0) + levels[n.id];
    act[n.id] = (from >= 0 ? act[from] : 0) + (isAct(n) ? levels[n.id] : 0);
  }
  return { total: lv[g.output], activation: act[g.output] };
}

/** The series-parallel expression of the levels from the input's value to the output's. */
export function decompose(g: Graph): SpExpr {
  const fixed = fixedLevels(g);
  const outs: number[][] = g.nodes.map(() => []);
  for (const n of g.nodes) for (const i of new Set(n.inputs)) outs[i].push(n.id);
  const reach = (from: number, dir: 'down' | 'up', within: (v: number) => boolean): Set<number> => {
    const seen = new Set<number>([from]);
    const stack = [from];
    while (stack.length) {
      const v = stack.pop()!;
      for (const w of dir === 'down' ? outs[v] : g.nodes[v].inputs)
        if (!seen.has(w) && within(w)) {
          seen.add(w);
          stack.push(w);
        }
    }
    return seen;
  };
  /** Nodes after `src` on some path from src to `sink` (sink included), by increasing id. */
  const region = (src: number, sink: number): number[] => {
    const down = reach(src, 'down', (w) => w <= sink);
    const up = reach(sink, 'up', (w) => w > src);
    return [...down].filter((v) => v !== src && up.has(v)).sort((a, b) => a - b);
  };
  const node = (id: number): SpExpr => ({ kind: 'node', id });
  const bound = (nodes: number[]): SpExpr => {
    const inside = new Set(nodes);
    // The longest path of linear levels inside, from any entry: what no activation choice changes.
    const lv = new Map<number, number>();
    let top = 0;
    for (const v of nodes) {
      const before = Math.max(0, ...g.nodes[v].inputs.filter((i) => inside.has(i)).map((i) => lv.get(i)!));
      lv.set(v, before + fixed[v]);
      top = Math.max(top, before + fixed[v]);
    }
    return { kind: 'bound', acts: nodes.filter((v) => g.nodes[v].spec.op === 'activation'), fixed: top };
  };
  const solve = (src: number, sink: number): SpExpr => {
    if (src === sink) return { kind: 'series', parts: [] };
    const R = region(src, sink);
    const inR = new Set(R);
    // Articulations: nodes of R (not the sink) that no edge of the region jumps over.
    const cover = new Map<number, number>();
    const pos = new Map(R.map((v, k) => [v, k]));
    const diff = new Int32Array(R.length + 1);
    for (const w of R) {
      for (const u of new Set(g.nodes[w].inputs)) {
        if (u !== src && !inR.has(u)) continue;
        const a = u === src ? -1 : pos.get(u)!;
        const b = pos.get(w)!;
        if (b - a > 1) {
          diff[a + 1]++;
          diff[b]--;
        }
      }
    }
    const cuts: number[] = [];
    let run = 0;
    R.forEach((v, k) => {
      run += diff[k];
      cover.set(v, run);
      if (run === 0 && v !== sink) cuts.push(v);
    });
    const parts: SpExpr[] = [];
    let from = src;
    for (const b of [...cuts, sink]) {
      const ins = [...new Set(g.nodes[b].inputs)];
      if (ins.length === 1 && ins[0] === from) {
        parts.push(node(b));
        from = b;
        continue;
      }
      const regions = ins.map((i) => (i === from ? [] : region(from, i).filter((v) => v !== b)));
      const all = regions.flat();
      if (new Set(all).size === all.length) {
        parts.push({ kind: 'parallel', branches: ins.map((i) => solve(from, i)) });
      } else {
        parts.push(bound(region(from, b).filter((v) => v !== b)));
      }
      parts.push(node(b));
      from = b;
    }
    return parts.length === 1 ? parts[0] : { kind: 'series', parts };
  };
  return solve(g.input, g.output);
}

/** One choice per activation node: its levels, energy and multiplications. */
export interface NodeChoices {
  depth: number[];
  energy: number[];
  mults: number[];
}

interface Table {
  /** Least energy, then multiplications, with at most d levels. */
  e: Float64Array;
  m: Float64Array;
  /** Writes the choices behind entry d into `picks` (activation node id -> candidate). */
  pick(d: number, picks: Map<number, number>): void;
}

const TOL = 1e-15;
const better = (e: number, m: number, e0: number, m0: number) => e < e0 - TOL || (Math.abs(e - e0) <= TOL && m < m0);

/** The DP over a series-parallel expression (see the file comment). */
export class DepthTables {
  constructor(
    private readonly fixed: number[],
    private readonly choices: Map<number, NodeChoices>,
    private readonly D: number,
  ) {}

  table(x: SpExpr): Table {
    const D = this.D;
    switch (x.kind) {
      case 'node': {
        const c = this.choices.get(x.id);
        const e = new Float64Array(D + 1).fill(Infinity);
        const m = new Float64Array(D + 1).fill(Infinity);
        if (!c) {
          const f = this.fixed[x.id];
          for (let d = f; d <= D; d++) {
            e[d] = 0;
            m[d] = 0;
          }
          return { e, m, pick: () => undefined };
        }
        const arg = new Int32Array(D + 1).fill(-1);
        for (let d = 0; d <= D; d++) {
          c.depth.forEach((dk, k) => {
            if (dk <= d && better(c.energy[k], c.mults[k], e[d], m[d])) {
              e[d] = c.energy[k];
              m[d] = c.mults[k];
              arg[d] = k;
            }
          });
        }
        return {
          e,
          m,
          pick: (d, picks) => {
            picks.set(x.id, arg[d]);
          },
        };
      }
      case 'series': {
        let acc: Table = { e: new Float64Array(D + 1), m: new Float64Array(D + 1), pick: () => undefined };
        for (const p of x.parts) acc = this.series(acc, this.table(p));
        return acc;
      }
      case 'parallel': {
        const ts = x.branches.map((b) => this.table(b));
        const e = new Float64Array(D + 1);
        const m = new Float64Array(D + 1);
        for (const t of ts)
          for (let d = 0; d <= D; d++) {
            e[d] += t.e[d];
            m[d] += t.m[d];
          }
        return { e, m, pick: (d, picks) => ts.forEach((t) => t.pick(d, picks)) };
      }
      case 'bound': {
        // Activations' levels add (a chain), on top of the region's linear levels.
        let acc: Table = { e: new Float64Array(D + 1), m: new Float64Array(D + 1), pick: () => undefined };
        for (const id of x.acts) acc = this.series(acc, this.table({ kind: 'node', id }));
        const e = new Float64Array(D + 1).fill(Infinity);
        const m = new Float64Array(D + 1).fill(Infinity);
        for (let d = x.fixed; d <= D; d++) {
          e[d] = acc.e[d - x.fixed];
          m[d] = acc.m[d - x.fixed];
        }
        const inner = acc;
        return { e, m, pick: (d, picks) => inner.pick(d - x.fixed, picks) };
      }
    }
  }

  private series(a: Table, b: Table): Table {
    const D = this.D;
    const e = new Float64Array(D + 1).fill(Infinity);
    const m = new Float64Array(D + 1).fill(Infinity);
    const split = new Int32Array(D + 1).fill(-1);
    for (let i = 0; i <= D; i++) {
      if (a.e[i] === Infinity) continue;
      for (let j = 0; i + j <= D; j++) {
        if (b.e[j] === Infinity) continue;
        const ne = a.e[i] + b.e[j];
        const nm = a.m[i] + b.m[j];
        if (better(ne, nm, e[i + j], m[i + j])) {
          e[i + j] = ne;
          m[i + j] = nm;
          split[i + j] = i;
        }
      }
    }
    // At most d levels: carry the best of fewer levels up.
    for (let d = 1; d <= D; d++)
      if (better(e[d - 1], m[d - 1], e[d], m[d])) {
        e[d] = e[d - 1];
        m[d] = m[d - 1];
        split[d] = -2 - (d - 1);
      }
    const at = (d: number): number => (split[d] <= -2 ? at(-2 - split[d]) : d);
    return {
      e,
      m,
      pick: (d, picks) => {
        const dd = at(d);
        const i = split[dd];
        if (i < 0) return;
        a.pick(i, picks);
        b.pick(dd - i, picks);
      },
    };
  }
}
