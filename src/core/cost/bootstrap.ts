/**
 * Bootstraps a CKKS library with bootstrapping would need for a network, given how many levels
 * it offers between two bootstraps (OpenFHE and Lattigo at N = 2^16 leave about 10 after
 * bootstrapping with their default parameters; Orion plans ResNet-20 with 10). SEAL has no
 * bootstrapping, so a network deeper than its chain can only be run elsewhere; this is the figure
 * AutoFHE and Orion report for ResNet-20.
 *
 * Placement is lazy and greedy, in topological order: every value carries the levels it has
 * left (a fresh input has L); a node that consumes k levels needs k left on each input, and an
 * input with fewer is bootstrapped first (once: the refreshed value serves all its consumers).
 * On a chain this is the least number of bootstraps (delaying a bootstrap never costs one more);
 * on a residual block the shortcut is refreshed only when it arrives at the Add with fewer
 * levels than the block's output. A node deeper than L (a polynomial of depth > L, or an affine
 * map plus a polynomial) must be split by bootstraps inside: ceil(k / L) - 1 more.
 */
import { Graph, GraphNode, Op } from '../model/graph';
import { linearLevels } from './cost';

/** Nodes that take no level and only move or combine their one input's slots. */
const MOVES = new Set<Op['op']>(['pairdiff', 'slice', 'flatten', 'reshape', 'identity', 'transpose', 'pad']);

export interface BootstrapPlan {
  levelsPerBootstrap: number;
  bootstraps: number;
  /** Names of the nodes whose inputs are refreshed, in order (a node appears once per bootstrap). */
  before: string[];
  /**
   * Each refresh between nodes: before node `node` runs, the value of node `value` is bootstrapped
   * (and serves every later reader), in order. The HE program bootstraps exactly these (he/lower.ts).
   */
  refreshes: { node: number; value: number }[];
  /** Nodes deeper than L levels (each needs bootstraps inside it, which no engine here makes). */
  tooDeep: string[];
}

export function planBootstraps(g: Graph, actDepth: Map<number, number>, L: number): BootstrapPlan {
  const left = new Array<number>(g.nodes.length).fill(L);
  let bootstraps = 0;
  const before: string[] = [];
  const refreshes: BootstrapPlan['refreshes'] = [];
  const tooDeep: string[] = [];
  const cost = (n: GraphNode) => (n.spec.op === 'activation' ? (actDepth.get(n.id) ?? 0) : linearLevels(g, n));
  for (const n of g.nodes) {
    if (!n.inputs.length) continue;
    const k = cost(n);
    const need = Math.min(k, L);
    for (const i of new Set(n.inputs)) {
      if (left[i] < need) {
        // Refresh the value where its levels ran out, above nodes that only move or subtract it
        // (a max tree's difference, a stride, a flatten): one bootstrap then serves every reader.
        const chain = [i];
        while (
          MOVES.has(g.nodes[chain[0]].spec.op) &&
          g.nodes[chain[0]].inputs.length === 1 &&
          cost(g.nodes[chain[0]]) === 0
        )
          chain.unshift(g.nodes[chain[0]].inputs[0]);
        for (const c of chain) left[c] = L;
        bootstraps++;
        before.push(n.name);
        refreshes.push({ node: n.id, value: chain[0] });
      }
    }
    const inside = k > L ? Math.ceil(k / L) - 1 : 0;
    if (inside) tooDeep.push(n.name);
    bootstraps += inside;
    for (let b = 0; b < inside; b++) before.push(n.name);
    const avail = Math.min(...n.inputs.map((i) => left[i]));
    left[n.id] = inside ? L * (inside + 1) - k : avail - k;
  }
  return { levelsPerBootstrap: L, bootstraps, before, refreshes, tooDeep };
}
