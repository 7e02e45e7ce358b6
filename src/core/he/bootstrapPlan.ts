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
    throw new UserError(
      'BUDGET_INFEASIBLE',
      `${plan.tooDeep.join(', ')} need${plan.tooDeep.length === 1 ? 's' : ''} more levels than the ${L} between two bootstraps`,
      "analyse again with --bootstrap-levels at least as large as the deepest activation's levels, or lower its degree",
    );
  }
  const refresh = new Map<number, number[]>();
  const bounds = new Map<number, { node: string; bound: number }>();
  for (const r of plan.refreshes) {
    const si = p.nodeStep.get(r.node);
    const vid = p.nodeValue.get(r.value);
    if (si === undefined || vid === undefined)
      throw new Error(`bootstrap before ${g.nodes[r.node].name}: no step runs it`);
    const list = refresh.get(si) ?? [];
    if (!list.includes(vid)) list.push(vid);
    refresh.set(si, list);
    if (!bounds.has(vid)) bounds.set(vid, { node: g.nodes[r.value].name, bound: valueBound(g, p, report, r.value) });
  }
  // Values that must carry one factor (an Add's inputs and sum) are scaled together, by the
  // largest bound among their refreshed members.
  const scaled = new Map<number, boolean>();
  for (const vid of bounds.keys()) {
    if (scaled.has(vid)) continue;
    const group = factorGroup(p, vid);
    const members = [...group].filter((v) => bounds.has(v));
    const B = Math.max(...members.map((v) => bounds.get(v)!.bound));
    const ok = B > IN_RANGE && scaleGroup(p, group, 1 / B);
    for (const v of members) scaled.set(v, ok && bounds.get(v)!.bound > IN_RANGE);
  }
  const values = [...bounds].map(([vid, { node, bound }]) => ({ node, bound, scaled: scaled.get(vid) ?? false }));
  return { refresh, bootstraps: plan.bootstraps, values };
}

/**
 * The largest magnitude node r's output reaches on held-out data, as the program holds it: an
 * activation's output; a linear layer's output folded into the activation after it as that
 * activation's input map (t, u or y); an activation's input; else the network's largest value.
 */
function valueBound(g: Graph, p: Program, report: Report, r: number): number {
  // An average pooling holds its window's sum (its 1/k^2 pending for the next layer); one folded
  // into the dense layer after it (program.ts: averaged) holds its input as it is.
  const n = g.nodes[r].spec;
  const input = g.nodes[r].inputs[0];
  if (n.op === 'avgpool')
    return (
      (p.nodeValue.get(r) === p.nodeValue.get(input) ? 1 : n.pool[0] * n.pool[1]) * valueBound(g, p, report, input)
    );
  const byNode = new Map(report.layers.map((l) => [l.node, l]));
  const own = byNode.get(r);
  if (own && !own.maxTree) return Math.max(own.chosen.heldoutOutside.maxAbsOut, 1e-9);
  for (const reader of g.nodes.filter((m) => m.inputs.includes(r))) {
    const l = byNode.get(reader.id);
    if (!l || l.maxTree) continue;
    const h = l.chosen.heldoutOutside;
    if (!l.chosen.fold.intoPrevious) return Math.max(h.maxAbsIn, 1e-9);
    const poly = polysFromReport({ layers: [l] }).get(l.node)!;
    const map = (lane: ReturnType<typeof lanesOf>[number]) =>
      l.chosen.fold.form === 'series'
        ? { mul: unitMap(lane).scale, add: unitMap(lane).shift }
        : l.chosen.fold.form === 'square'
          ? squareLane(lane)!
          : affineLane(lane);
    // The map on the extremes the layer's inputs reached, lane by lane.
    return Math.max(
      1e-9,
      ...lanesOf(poly).flatMap((lane) => {
        const q = map(lane);
        return [h.min, h.max].map((x) => Math.abs(q.mul * x + q.add));
      }),
    );
  }
  return Math.max(report.final.maxAbs, 1e-9);
}

/** A linear step's outputs times k (its weights and bias). */
function scaleLinear(st: Extract<Program['steps'][number], { kind: 'dense' | 'conv' }>, k: number): void {
  for (let i = 0; i < st.W.length; i++) st.W[i] *= k;
  for (let o = 0; o < st.b.length; o++) st.b[o] *= k;
}

/** Channels of value `vid` (features of a flat one): per-channel factors cover them all. */
function channelsOf(p: Program, vid: number): number {
  const st = p.steps.find((s) => s.node === vid);
  if (!st) return p.inputShape[p.inputShape.length - 1];
  if (st.kind === 'conv') return st.cout;
  if (st.kind === 'dense') return st.m;
  if (st.kind === 'add') return st.C;
  if (st.kind === 'concat') return st.inputs.reduce((t, i) => t + channelsOf(p, i), 0);
  return channelsOf(p, st.input);
}

/** Steps whose output holds their input's factor as it is: it moves with the value. */
const passes = (s: Program['steps'][number]) => s.kind === 'add' || s.kind === 'stride' || s.kind === 'pool';

/**
 * The values that hold the same factor as value `vid`: through an Add (its inputs and its sum
 * hold one factor on each channel), a stride or a pooling (which pass their input's on).
 */
function factorGroup(p: Program, vid: number): Set<number> {
  const group = new Set([vid]);
  const todo = [vid];
  const link = (v: number) => {
    if (!group.has(v)) {
      group.add(v);
      todo.push(v);
    }
  };
  while (todo.length) {
    const v = todo.pop()!;
    const producer = p.steps.find((s) => s.node === v);
    if (producer && passes(producer)) stepInputs(producer).forEach(link);
    for (const reader of p.steps) if (passes(reader) && stepInputs(reader).includes(v)) link(reader.node);
  }
  return group;
}

/**
 * Makes the steps computing the values of `group` compute them times `k` at no level, when each
 * is a linear layer or a polynomial with no other factor asked of it, and every step reading them
 * from outside the group takes a pending factor (a linear layer's weights, an activation's input
 * map, a max tree's difference). Returns whether it did.
 */
function scaleGroup(p: Program, group: Set<number>, k: number): boolean {
  if (group.has(0) || group.has(p.output)) return false;
  const producers = p.steps.filter((s) => group.has(s.node) && !passes(s));
  const readers = p.steps.filter((s) => !group.has(s.node) && stepInputs(s).some((i) => group.has(i)));
  const takes = readers.every(
    (s) =>
      s.kind === 'dense' ||
      s.kind === 'conv' ||
      (s.kind === 'poly' && !s.fold.intoPrevious && s.fold.form !== 'constant') ||
      (s.kind === 'tree' && !s.want),
  );
  if (!takes) return false;
  const only = (v: number) => p.steps.filter((s) => stepInputs(s).includes(v)).length === 1;
  // A square whose u the layer before computes: that layer computes sqrt(k) u (evalFoldedCkks scales the offset).
  const roots: Extract<Program['steps'][number], { kind: 'dense' | 'conv' }>[] = [];
  for (const st of producers) {
    if ((st.kind !== 'dense' && st.kind !== 'conv' && st.kind !== 'poly') || st.outScale) return false;
    if (st.kind === 'poly' && st.fold.form === 'square' && st.fold.intoPrevious) {
      const lin = p.steps.find((s) => s.node === st.input);
      if (!lin || (lin.kind !== 'dense' && lin.kind !== 'conv') || lin.outScale || !only(st.input)) return false;
      roots.push(lin);
    }
  }
  for (const lin of roots) scaleLinear(lin, Math.sqrt(k));
  for (const st of producers) {
    if (st.kind === 'poly') {
      const C = channelsOf(p, st.node);
      st.outScale = new Float64Array(C).fill(k);
    } else if (st.kind === 'dense' || st.kind === 'conv') {
      scaleLinear(st, k);
      st.outScale = new Float64Array(st.kind === 'dense' ? st.m : st.cout).fill(k);
    }
  }
  return true;
}
