/**
 * The fit stage: each activation's interval, and every candidate degree fitted by each method the
 * analysis compares (data-guided per channel or per layer, the uniform baseline, minimax).
 *
 * Intervals widen with depth. A polynomial grows fast outside its interval (|T_d(t)| ~
 * (|t| + sqrt(t^2 - 1))^d), and under CKKS one value beyond the modulus wraps and takes every
 * image packed in its ciphertext with it. Held-out values overshoot the calibration range more
 * the deeper the layer, because every approximated layer upstream perturbs them. Measured on
 * ResNet-20 (2,000 calibration + 2,000 held-out CIFAR-10 images): with every activation at degree
 * 7, 15 or 31, a flat 2% margin and a per-channel pad of 5% of the layer's range, one held-out
 * image left the first activation's interval and drove every later layer to Infinity; with the
 * margin growing by 1% per activation upstream and the pad at 15%, no value exceeded 29 at any
 * layer. With the mixed degrees (5 to 47) the analysis then chose, 2% + 1% per activation still
 * let one image escape at the sixth activation and cascade; 5% + 2% kept all 2,000 inside every
 * interval (largest value 26) at the same accuracy (-0.80 against -1.05 pp). On ResNet-32 one
 * held-out image reached 15% of the first activation's range beyond the calibration minimum, in
 * the original network: 10% + 2% let it out and it cascaded to 1e38; 15% + 1% let another out at
 * the 21st activation; 15% + 2% (the defaults) kept every value inside, the largest 26.
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
