/**
 * Where a program bootstraps, and how it brings values into the bootstrapping's input range.
 *
 * The places are the analysis's own (cost/bootstrap.ts: lazy placement on the graph, the count the
 * report gives), mapped to the program's steps: before a step, the value a node computes is
 * refreshed, and serves every later reader. The lowering executes exactly these, so the
 * bootstraps an engine runs are the ones the report counts.
 *
 * Lattigo's bootstrapping is precise for values of magnitude up to about 1 (its EvalMod is tuned
 * for messages in [-1, 1]; measured here at N=2^13: 25 bits for |x| <= 1, 14 bits for |x| <= 50).
 * A refreshed value bounded by B > 1 on held-out data is therefore computed B times smaller by the
 * step that makes it, at no level (a linear layer's weights, a polynomial's coefficients: the
 * step's outScale), and the factor stays pending for the steps that read it (a linear layer's
 * weights, an activation's input map), when every reader can take it. A value whose producer or
 * readers cannot is bootstrapped as it is; the engine reports the precision each bootstrap kept.
 */
import { affineLane, lanesOf, squareLane } from '../cost/fold';
import { planBootstraps } from '../cost/bootstrap';
import { UserError } from '../errors';
import { Graph } from '../model/graph';
import { unitMap } from '../numerics/chebyshev';
import { Report, polysFromReport } from '../report';
import { Program, stepInputs } from './program';

export interface ProgramBootstraps {
  /** Value ids to bootstrap before each step (lower.ts: Refresh). */
  refresh: Map<number, number[]>;
  /** Refreshes of a value (the report's count), and the values refreshed with the bound they were scaled by (1: not scaled). */
  bootstraps: number;
  values: { node: string; bound: number; scaled: boolean }[];
}

/** Values below this bound are bootstrapped as they are. */
const IN_RANGE = 1.5;

/**
 * The bootstraps of program `p` (compiled from `g` with `report`'s polynomials) at `L` levels
 * between bootstraps; sets outScale on the producers of values it scales.
 */
export function planProgramBootstraps(g: Graph, p: Program, report: Report, L: number): ProgramBootstraps {
  const depth = new Map(report.layers.map((l) => [l.node, l.chosen.depth]));
  const plan = planBootstraps(g, depth, L);
  if (plan.tooDeep.length) {
    throw new UserError('BUDGET_INFEASIBLE', `${plan.tooDeep.join(', ')} need${plan.tooDeep.length === 1 ? 's' : ''} more levels than the ${L} between two bootstraps`,
      'analyse again with --bootstrap-levels at least as large as the deepest activation\'s levels, or lower its degree');
  }
  const refresh = new Map<number, number[]>();
  const values: ProgramBootstraps['values'] = [];
  const done = new Set<number>();
  for (const r of plan.refreshes) {
    const si = p.nodeStep.get(r.node);
    const vid = p.nodeValue.get(r.value);
    if (si === undefined || vid === undefined) throw new Error(`bootstrap before ${g.nodes[r.node].name}: no step runs it`);
    const list = refresh.get(si) ?? [];
    if (!list.includes(vid)) list.push(vid);
    refresh.set(si, list);
    if (done.has(vid)) continue;
    done.add(vid);
    const bound = valueBound(g, report, r.value);
    values.push({ node: g.nodes[r.value].name, bound, scaled: bound > IN_RANGE && scaleProducer(p, vid, 1 / bound) });
  }
  return { refresh, bootstraps: plan.bootstraps, values };
}

/**
 * The largest magnitude node r's output reaches on held-out data, as the program holds it: an
 * activation's output; a linear layer's output folded into the activation after it as that
 * activation's input map (t, u or y); an activation's input; else the network's largest value.
 */
function valueBound(g: Graph, report: Report, r: number): number {
  // An average pooling holds its window's sum (its 1/k^2 pending for the next layer).
  const n = g.nodes[r].spec;
  if (n.op === 'avgpool') return n.pool[0] * n.pool[1] * valueBound(g, report, g.nodes[r].inputs[0]);
  const byNode = new Map(report.layers.map((l) => [l.node, l]));
  const own = byNode.get(r);
  if (own && !own.maxTree) return Math.max(own.chosen.heldoutOutside.maxAbsOut, 1e-9);
  for (const reader of g.nodes.filter((m) => m.inputs.includes(r))) {
    const l = byNode.get(reader.id);
    if (!l || l.maxTree) continue;
    const h = l.chosen.heldoutOutside;
    if (!l.chosen.fold.intoPrevious) return Math.max(h.maxAbsIn, 1e-9);
    const poly = polysFromReport({ layers: [l] }).get(l.node)!;
    const map = (lane: ReturnType<typeof lanesOf>[number]) => (l.chosen.fold.form === 'series' ? { mul: unitMap(lane).scale, add: unitMap(lane).shift }
      : l.chosen.fold.form === 'square' ? squareLane(lane)! : affineLane(lane));
    // The map on the extremes the layer's inputs reached, lane by lane.
    return Math.max(1e-9, ...lanesOf(poly).flatMap((lane) => { const q = map(lane); return [h.min, h.max].map((x) => Math.abs(q.mul * x + q.add)); }));
  }
  return Math.max(report.final.maxAbs, 1e-9);
}

/** A linear step's outputs times k (its weights and bias). */
function scaleLinear(st: Extract<Program['steps'][number], { kind: 'dense' | 'conv' }>, k: number): void {
  for (let i = 0; i < st.W.length; i++) st.W[i] *= k;
  for (let o = 0; o < st.b.length; o++) st.b[o] *= k;
}

/**
 * Makes the step computing value `vid` compute it times `k` at no level, when it is a linear
 * layer or a polynomial with no other factor asked of it, and every step reading it takes a
 * pending factor. Returns whether it did.
 */
function scaleProducer(p: Program, vid: number, k: number): boolean {
  let producer = p.steps.find((s) => s.node === vid);
  const readers = p.steps.filter((s) => stepInputs(s).includes(vid));
  const takes = readers.every((s) => s.kind === 'dense' || s.kind === 'conv' || s.kind === 'pool'
    || (s.kind === 'poly' && !s.fold.intoPrevious && s.fold.form !== 'constant') || (s.kind === 'tree' && !s.want));
  if (!takes || vid === p.output) return false;
  // Through steps that carry a factor (an average pooling's sums, a stride), to the step that can scale.
  while (producer && (producer.kind === 'pool' || producer.kind === 'stride')) {
    const input = producer.input;
    if (input === 0 || p.steps.filter((s) => stepInputs(s).includes(input)).length !== 1) return false;
    producer = p.steps.find((s) => s.node === input);
  }
  if (!producer || (producer.kind !== 'dense' && producer.kind !== 'conv' && producer.kind !== 'poly') || producer.outScale) return false;
  const C = producer.kind === 'dense' ? producer.m : producer.kind === 'conv' ? producer.cout : (producer.poly.channels?.coeffs.length ?? 1);
  const factor = new Float64Array(C).fill(k);
  if (producer.kind === 'poly') {
    // A square whose u the layer before computes: that layer computes sqrt(k) u (evalFoldedCkks scales the offset).
    if (producer.fold.form === 'square' && producer.fold.intoPrevious) {
      const input = producer.input;
      const lin = p.steps.find((s) => s.node === input);
      if (!lin || (lin.kind !== 'dense' && lin.kind !== 'conv') || lin.outScale || p.steps.filter((s) => stepInputs(s).includes(input)).length !== 1) return false;
      scaleLinear(lin, Math.sqrt(k));
    }
    producer.outScale = factor;
  } else {
    scaleLinear(producer, k);
    producer.outScale = factor;
  }
  return true;
}
