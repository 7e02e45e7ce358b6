/**
 * Encryption cost model for CKKS.
 *
 * - A degree-d polynomial costs ceil(log2(d+1)) levels with the depth-optimal baby-step
 *   giant-step plan (numerics/bsgs.ts), plus one level when the affine map of its input to
 *   [-1, 1] cannot be folded into the preceding linear layer.
 * - Non-scalar multiplications are counted from the same plan.
 * - Latency is estimated from per-operation costs at the chosen ring size: measured with
 *   node-seal on this machine when available (sealCosts.ts), else published node-seal figures.
 */
import { Graph, GraphNode, consumersOf } from '../model/graph';
import { planPolynomial } from '../numerics/bsgs';

export interface OpCosts {
  ringSize: number;
  /** Milliseconds: ciphertext multiply + relinearise + rescale, at the top level. */
  mulRelinRescale: number;
  /** Milliseconds: plaintext-scalar multiply + rescale. */
  mulScalar: number;
  /** Milliseconds: ciphertext add. */
  add: number;
  /** Milliseconds: one rotation (Galois automorphism + key switch). */
  rotate: number;
  source: string;
}

/**
 * node-seal 6 single-thread figures (node-seal BENCHMARK.md, Apple M1 Pro; see
 * shared notes field.md), used only until a measurement on this machine is cached.
 */
export function publishedCosts(ringSize: number): OpCosts {
  const mul: Record<number, number> = { 8192: 6.2, 16384: 34.2, 32768: 193.9 };
  const f = (mul[ringSize] ?? 34.2 * (ringSize / 16384) ** 2) / 34.2;
  return { ringSize, mulRelinRescale: mul[ringSize] ?? 34.2 * f, mulScalar: 4 * f, add: 0.4 * f, rotate: 26.5 * f,
    source: "published node-seal benchmark figures, not measured here (run 'he-approx costs' to measure)" };
}

export interface ActivationCost {
  degree: number;
  /** Levels for the polynomial itself. */
  polyDepth: number;
  /** Extra level for an affine map that cannot be folded into the previous layer. */
  affineLevel: number;
  depth: number;
  nonScalarMults: number;
  /** Estimated latency of one ciphertext through this activation, milliseconds. */
  latencyMs: number;
}

/** True if the activation's input comes straight from a linear layer used by nothing else. */
export function affineFoldable(g: Graph, act: GraphNode): boolean {
  const src = g.nodes[act.inputs[0]];
  if (!['dense', 'conv2d', 'batchnorm'].includes(src.spec.op)) return false;
  return consumersOf(g, src.id).length === 1;
}

export function activationCost(degree: number, foldable: boolean, costs: OpCosts): ActivationCost {
  const plan = planPolynomial(degree);
  const affine = foldable ? 0 : 1;
  // Every coefficient is one scalar multiply-add; non-scalar products dominate at low levels.
  const latency = plan.nonScalarMults * costs.mulRelinRescale + (degree + 1) * (costs.mulScalar + costs.add) + affine * costs.mulScalar;
  return { degree, polyDepth: plan.depth, affineLevel: affine, depth: plan.depth + affine, nonScalarMults: plan.nonScalarMults, latencyMs: latency };
}

/** Levels a node consumes outside activations: linear layers with plaintext weights. */
export function linearLevels(g: Graph, n: GraphNode): number {
  const s = n.spec;
  if (s.op === 'dense' || s.op === 'conv2d') return 1;
  if (s.op === 'avgpool' || s.op === 'globalavgpool' || s.op === 'maxpool') {
    // The 1/k^2 factor folds into the next linear layer's weights when one follows.
    const next = consumersOf(g, n.id);
    const linearNext = next.length === 1 && ['dense', 'conv2d', 'flatten', 'reshape'].includes(next[0].spec.op);
    return linearNext ? 0 : 1;
  }
  if (s.op === 'batchnorm') {
    const prev = g.nodes[n.inputs[0]];
    return ['dense', 'conv2d'].includes(prev.spec.op) ? 0 : 1;
  }
  return 0;
}

/** Longest path in levels from input to output, given each activation's depth. */
export function networkDepth(g: Graph, actDepth: Map<number, number>): number {
  const lv = new Array<number>(g.nodes.length).fill(0);
  for (const n of g.nodes) {
    const before = n.inputs.length ? Math.max(...n.inputs.map((i) => lv[i])) : 0;
    lv[n.id] = before + (n.spec.op === 'activation' ? actDepth.get(n.id) ?? 0 : linearLevels(g, n));
  }
  return lv[g.output];
}
