/**
 * Encryption cost model for CKKS.
 *
 * - A degree-d polynomial (d >= 3) costs ceil(log2(d+1)) levels with the depth-optimal baby-step
 *   giant-step plan (numerics/bsgs.ts); degree 2 costs 1 level as a signed square and degree 1
 *   none, as an affine map (fold.ts); each plus one level when its input map cannot be folded
 *   into the preceding linear layer.
 * - Non-scalar multiplications are counted from the same plan.
 * - Latency is estimated from per-operation costs at the chosen ring size: measured with
 *   node-seal on this machine when available (sealCosts.ts), else published node-seal figures.
 */
import { Graph, GraphNode, consumersOf } from '../model/graph';
import { planPolynomial } from '../numerics/bsgs';
import type { PolyActivation } from '../numerics/polynomial';
import { Fold, foldLevels, foldMults, inputFold, planFold } from './fold';

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
  /** Milliseconds: one bootstrap of a ciphertext (engines with bootstrapping only). */
  bootstrap?: number;
  /** Which library measured these: node-seal (absent: SEAL) or the Lattigo engine (he/lattigoCosts.ts). */
  engine?: 'seal' | 'lattigo';
  /** Levels of the chain they were measured on (Lattigo: between bootstraps). */
  levels?: number;
  source: string;
}

/**
 * node-seal 6 single-thread figures (node-seal BENCHMARK.md, Apple M1 Pro; see
 * shared notes field.md), used only until a measurement on this machine is cached.
 */
export function publishedCosts(ringSize: number): OpCosts {
  const mul: Record<number, number> = { 8192: 6.2, 16384: 34.2, 32768: 193.9 };
  const f = (mul[ringSize] ?? 34.2 * (ringSize / 16384) ** 2) / 34.2;
  return {
    ringSize,
    mulRelinRescale: mul[ringSize] ?? 34.2 * f,
    mulScalar: 4 * f,
    add: 0.4 * f,
    rotate: 26.5 * f,
    source: "published node-seal benchmark figures, not measured here (run 'he-approx costs' to measure)",
  };
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
  return inputFold(g, act).ok;
}

/**
 * The cost of a degree-`degree` activation evaluated as `fold` says (fold.ts: planFold); a series
 * may take a plan up to `extra` levels deeper with fewer multiplications (bsgs.ts).
 */
export function activationCost(degree: number, fold: Fold, costs: OpCosts, extra = 0): ActivationCost {
  const plan = planPolynomial(degree, fold.form === 'series' ? extra : 0);
  const { polyDepth, affineLevel } = foldLevels(fold, plan.depth);
  // Every coefficient is one scalar multiply-add; non-scalar products dominate at low levels.
  const mults = foldMults(fold, plan.nonScalarMults);
  const scalars = fold.form === 'series' ? degree + 1 : fold.form === 'constant' ? 0 : 1;
  const latency =
    mults * costs.mulRelinRescale +
    scalars * (costs.mulScalar + costs.add) +
    (affineLevel + (fold.mixedSigns ? 1 : 0)) * costs.mulScalar +
    (fold.form === 'constant' ? costs.add : 0);
  return { degree, polyDepth, affineLevel, depth: polyDepth + affineLevel, nonScalarMults: mults, latencyMs: latency };
}

/** The cost of activation `act` evaluated as the polynomial `p` of `degree`, folded where it can be. */
export function polyCost(
  g: Graph,
  act: GraphNode,
  p: PolyActivation,
  degree: number,
  costs: OpCosts,
  forms = true,
  extra = 0,
): ActivationCost & { fold: Fold } {
  const fold = planFold(g, act, p, degree, forms);
  return { ...activationCost(degree, fold, costs, extra), fold };
}

/**
 * Levels to spare: where the chosen degrees leave levels of the chain unused (`capacity`: the
 * chain of the smallest ring that holds the network, or the level budget), series take plans one
 * or two levels deeper with fewer multiplications (bsgs.ts), the largest estimated latency saving
 * per level first, as long as the network still fits. The polynomials do not change, so neither
 * does the accuracy. Returns each activation's extra levels over its optimal plan.
 */
export function spendSpareLevels(
  g: Graph,
  acts: GraphNode[],
  costAt: (l: number, extra: number) => ActivationCost,
  capacity: number,
): number[] {
  const extra = acts.map(() => 0);
  const depthWith = (l: number, e: number) =>
    networkDepth(g, new Map(acts.map((a, k) => [a.id, costAt(k, k === l ? e : extra[k]).depth])));
  for (;;) {
    let best: { l: number; e: number; gain: number } | null = null;
    for (let l = 0; l < acts.length; l++) {
      const now = costAt(l, extra[l]);
      for (let e = extra[l] + 1; e <= 2; e++) {
        const next = costAt(l, e);
        const levels = next.depth - now.depth;
        if (levels <= 0 || next.latencyMs >= now.latencyMs || depthWith(l, e) > capacity) continue;
        const gain = (now.latencyMs - next.latencyMs) / levels;
        if (!best || gain > best.gain) best = { l, e, gain };
      }
    }
    if (!best) return extra;
    extra[best.l] = best.e;
  }
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
  // Zero channels around a shortcut (ResNet's option A): packed with other channels in one
  // ciphertext, the shortcut is moved and masked by a plaintext product (he/lower.ts: addValues).
  if (s.op === 'pad' && s.value === 0 && s.mode !== 'edge' && s.pads[s.pads.length - 1].some((x) => x !== 0)) return 1;
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
    lv[n.id] = before + (n.spec.op === 'activation' ? (actDepth.get(n.id) ?? 0) : linearLevels(g, n));
  }
  return lv[g.output];
}
