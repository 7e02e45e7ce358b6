/**
 * The fit stage: each activation's interval, and every candidate degree fitted by each method the
 * analysis compares (data-guided per channel or per layer, the uniform baseline, minimax).
 *
 * Intervals widen with depth. A polynomial grows fast outside its interval (|T_d(t)| ~
 * (|t| + sqrt(t^2 - 1))^d), and under CKKS one value beyond the modulus wraps and takes every
 * image packed in its ciphertext with it. Held-out values overshoot the calibration range more
 * the deeper the layer, because every approximated layer upstream perturbs them. Hence a margin
 * that grows per activation upstream, and a per-channel pad; their defaults are the narrowest that
 * kept every held-out value of the CIFAR-10 ResNets inside every interval (README, "Measurements
 * behind the defaults"), where narrower ones let one image out and it cascaded to Infinity.
 */
import { Fit, FitMethod, chooseInterval, fitDegrees } from '../fit/fit';
import { Graph, GraphNode, actSpec } from '../model/graph';
import { Interval } from '../numerics/chebyshev';
import { ValueStats } from '../profile/stats';
import type { Settings } from './settings';

/** Per activation: candidate fits in the order of `Settings.degrees`, for each method fitted. */
export type Candidates = Map<FitMethod, Fit[][]>;

/** Activations on the longest path from the input to each activation (0 for the first). */
export function activationsUpstream(g: Graph, acts: GraphNode[]): number[] {
  const before = new Array<number>(g.nodes.length).fill(0);
  for (const n of g.nodes) {
    for (const i of n.inputs)
      before[n.id] = Math.max(before[n.id], before[i] + (g.nodes[i].spec.op === 'activation' ? 1 : 0));
  }
  return acts.map((a) => before[a.id]);
}

/** Each activation's interval margin: the base margin plus `marginGrowth` per activation upstream. */
export function activationMargins(g: Graph, acts: GraphNode[], s: Pick<Settings, 'margin' | 'marginGrowth'>): number[] {
  return activationsUpstream(g, acts).map((k) => s.margin + s.marginGrowth * k);
}

export interface FitStage {
  margins: number[];
  intervals: Interval[];
  candidates: Candidates;
}

export function fitStage(
  g: Graph,
  acts: GraphNode[],
  stats: Map<number, ValueStats>,
  s: Settings,
  onLayer?: (k: number) => void,
): FitStage {
  const margins = activationMargins(g, acts, s);
  const intervals = acts.map((a, k) => chooseInterval(stats.get(a.id)!, margins[k], actSpec(a)));
  const methods: FitMethod[] =
    s.method === 'minimax'
      ? ['minimax', 'data', 'uniform']
      : s.method === 'uniform'
        ? ['uniform', 'data']
        : ['data', 'uniform'];
  const candidates: Candidates = new Map(methods.map((m) => [m, [] as Fit[][]]));
  acts.forEach((a, k) => {
    const st = stats.get(a.id)!;
    for (const m of methods) {
      candidates
        .get(m)!
        .push(
          fitDegrees(
            m,
            actSpec(a),
            st,
            intervals[k],
            s.degrees,
            s.floor,
            m === 'data' && s.perChannel ? margins[k] : undefined,
          ),
        );
    }
    onLayer?.(k);
  });
  return { margins, intervals, candidates };
}
