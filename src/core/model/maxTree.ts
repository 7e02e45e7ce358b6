/**
 * Max pooling as polynomials: every MaxPool / GlobalMaxPool node becomes a tree of pairwise
 * maxima, max(a, b) = (a + b) / 2 + |a - b| / 2, with each |x| an activation node of its own. The
 * analysis then treats those |x| as it treats ReLUs: it records the differences that really reach
 * them, fits each a data-guided (even) polynomial, chooses its degree under the depth budget, and
 * measures the model with all of them in place. With the exact |x| the tree computes the max
 * exactly, so the original model is unchanged.
 *
 * A k x k window is separable: the max over the window is the max along the width of the maxima
 * along the height. Along one axis the tree slides: step j combines m(q) and m(q + o_j), where
 * m covers w_j consecutive values and o_j = min(w_j, k - w_j), so that after ceil(log2 k) steps
 * every position q holds the max of x[q .. q + k - 1] (windows may overlap: max(x, x) = x). The
 * pooling's stride then keeps every s-th position. This is what a CKKS program computes with
 * rotations: every position at once, the stride a change of layout (he/program.ts), so the
 * values the fits see are the values the encrypted program evaluates its polynomials on.
 *
 * Padding ('same', ONNX pads) repeats the border values ('edge'): a copy of a value already in
 * the window leaves its max unchanged, where TensorFlow's -infinity would be no number a
 * polynomial can take.
 */
import { UserError } from '../errors';
import { Graph, GraphNode, Op, Padding, explicitPads } from './graph';

/** The operands' distances of a sliding max over k values: o_j = min(w_j, k - w_j), w_1 = 1, w_{j+1} = w_j + o_j. */
export function treeOffsets(k: number): number[] {
  const out: number[] = [];
  for (let w = 1; w < k;) {
    const o = Math.min(w, k - w);
    out.push(o);
    w += o;
  }
  return out;
}

/** The steps of a max tree over a window [kh, kw]: along the width first, then the height. */
export function treeSteps(kh: number, kw: number): { axis: 0 | 1; offset: number }[] {
  return [
    ...treeOffsets(kw).map((offset) => ({ axis: 1 as const, offset })),
    ...treeOffsets(kh).map((offset) => ({ axis: 0 as const, offset })),
  ];
}

/** True if the graph has max pooling to expand. */
export function hasMaxPooling(g: Graph): boolean {
  return g.nodes.some((n) => n.spec.op === 'maxpool' || n.spec.op === 'globalmaxpool');
}

/**
 * A max pooling's input with its padding, by edge values (a max over a window is unchanged by
 * copies of its values): the pad node's id (x when there is none) and the padded height and width.
 */
function edgePadded(
  n: GraphNode,
  padding: Padding,
  x: number,
  [H, W, C]: number[],
  [kh, kw]: number[],
  [sh, sw]: number[],
  add: (from: GraphNode, suffix: string, spec: Op, shape: number[], inputs: number[]) => number,
): [number, number, number] {
  const [[t, b], [l, r]] = explicitPads(padding, H, W, kh, kw, sh, sw);
  if (t >= kh || b >= kh || l >= kw || r >= kw) {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `max pooling '${n.layer}' pads a ${kh}x${kw} window by ${JSON.stringify([
        [t, b],
        [l, r],
      ])}: a window could hold padding only`,
      'use pads smaller than the window (as ONNX requires)',
    );
  }
  if (t + b + l + r === 0) return [x, H, W];
  const pad: Op = {
    op: 'pad',
    pads: [
      [t, b],
      [l, r],
      [0, 0],
    ],
    value: 0,
    mode: 'edge',
  };
  return [add(n, 'pad', pad, [H + t + b, W + l + r, C], [x]), H + t + b, W + l + r];
}

/**
 * The graph with every max pooling expanded into its tree (see the file comment); the same graph
 * when there is none. Node names keep the pooling's name as a prefix and its layer and class, so
 * that reports and the editor find the pooling layer.
 */
export function expandMaxPooling(g: Graph): Graph {
  if (!hasMaxPooling(g)) return g;
  const nodes: GraphNode[] = [];
  const newId = new Map<number, number>();
  const add = (from: GraphNode, suffix: string, spec: Op, shape: number[], inputs: number[]): number => {
    nodes.push({
      id: nodes.length,
      name: `${from.name}/${suffix}`,
      layer: from.layer,
      className: from.className,
      inputs,
      shape,
      spec,
    });
    return nodes.length - 1;
  };
  for (const n of g.nodes) {
    const s = n.spec;
    if (s.op !== 'maxpool' && s.op !== 'globalmaxpool') {
      nodes.push({ ...n, id: nodes.length, inputs: n.inputs.map((i) => newId.get(i)!) });
      newId.set(n.id, nodes.length - 1);
      continue;
    }
    const src = g.nodes[n.inputs[0]];
    if (src.shape.length !== 3) {
      throw new UserError(
        'MODEL_UNSUPPORTED',
        `max pooling '${n.layer}' reads a rank-${src.shape.length + 1} tensor`,
        'he-approx evaluates 2-D max pooling on [H, W, C] feature maps; use MaxPooling2D on images',
      );
    }
    let [H, W, C] = src.shape;
    const [kh, kw] = s.op === 'maxpool' ? s.pool : [H, W];
    const [sh, sw] = s.op === 'maxpool' ? s.strides : [1, 1];
    let x = newId.get(src.id)!;
    if (s.op === 'maxpool') [x, H, W] = edgePadded(n, s.padding, x, [H, W, C], [kh, kw], [sh, sw], add);
    const steps = treeSteps(kh, kw);
    steps.forEach(({ axis, offset }, j) => {
      const name = `${axis === 1 ? 'w' : 'h'}${j + 1}`;
      if (axis === 1) W -= offset;
      else H -= offset;
      const shape = [H, W, C];
      const d = add(n, `${name}/diff`, { op: 'pairdiff', axis, offset }, shape, [x]);
      const a = add(
        n,
        name,
        { op: 'activation', act: { kind: 'abs' }, maxTree: { pool: n.name, axis, offset, step: j + 1 } },
        shape,
        [d],
      );
      x = add(n, `${name}/max`, { op: 'pairmax', axis, offset }, shape, [x, a]);
    });
    // Every position holds its window's max; the stride keeps the windows the pooling takes.
    const [Ho, Wo] = s.op === 'maxpool' ? [n.shape[0], n.shape[1]] : [1, 1];
    if (Ho !== H || Wo !== W) {
      if ((Ho - 1) * sh >= H || (Wo - 1) * sw >= W)
        throw new Error(`${n.name}: the max tree's ${H}x${W} maxima cannot give ${Ho}x${Wo} outputs`);
      x = add(
        n,
        'stride',
        { op: 'slice', begin: [0, 0, 0], end: [(Ho - 1) * sh + 1, (Wo - 1) * sw + 1, C], step: [sh, sw, 1] },
        [Ho, Wo, C],
        [x],
      );
    }
    if (s.op === 'globalmaxpool') x = add(n, 'flatten', { op: 'flatten' }, [C], [x]);
    newId.set(n.id, x);
  }
  return { ...g, nodes, input: newId.get(g.input)!, output: newId.get(g.output)! };
}

/** An |x| of a max tree in its graph: its step, and the nodes around it. */
export interface TreeStepNodes {
  pool: string;
  step: number;
  /** Steps of the whole tree. */
  steps: number;
  /** The step's difference, |x| and pairwise maximum nodes, and the value the step reads. */
  diff: number;
  abs: number;
  max: number;
  input: number;
  /** The next step's |x| node, or null for the last step. */
  next: number | null;
}

/** The tree step an |x| activation node is, or null for any other node. */
export function treeStep(g: Graph, n: GraphNode): TreeStepNodes | null {
  const t = n.spec.op === 'activation' ? n.spec.maxTree : undefined;
  if (!t) return null;
  const diff = n.inputs[0];
  const input = g.nodes[diff].inputs[0];
  const max = g.nodes.find((m) => m.spec.op === 'pairmax' && m.inputs[1] === n.id);
  if (!max) throw new Error(`${n.name}: no pairwise maximum reads it`);
  const same = g.nodes.filter((m) => m.spec.op === 'activation' && m.spec.maxTree?.pool === t.pool);
  const next = same.find((m) => m.spec.op === 'activation' && m.spec.maxTree!.step === t.step + 1);
  return {
    pool: t.pool,
    step: t.step,
    steps: same.length,
    diff,
    abs: n.id,
    max: max.id,
    input,
    next: next?.id ?? null,
  };
}

/** Nodes a pending factor passes through unchanged in meaning (it scales their output as it scaled their input). */
const CARRIES_FACTOR = new Set<Op['op']>(['slice', 'flatten', 'reshape', 'identity', 'transpose']);

/**
 * The value a tree's last step leaves, past the nodes that only move it (the stride, a global
 * pooling's flatten): what the pooling's consumers read.
 */
export function treeOutput(g: Graph, lastMax: number): number {
  let id = lastMax;
  for (;;) {
    const cons = g.nodes.filter((m) => m.inputs.includes(id));
    if (cons.length !== 1 || !CARRIES_FACTOR.has(cons[0].spec.op) || id === g.output) return id;
    id = cons[0].id;
  }
}

/**
 * True if only linear layers (Dense, Conv2D) read the tree's output: they take any per-channel
 * factor into their weights, so the last step may leave one (he/program.ts).
 */
export function treeFeedsLinearOnly(g: Graph, lastMax: number): boolean {
  const out = treeOutput(g, lastMax);
  if (out === g.output) return false;
  const cons = g.nodes.filter((m) => m.inputs.includes(out));
  return cons.length > 0 && cons.every((m) => m.spec.op === 'dense' || m.spec.op === 'conv2d');
}

/**
 * Why the value a tree's first step reads cannot be scaled at no level, or null when it can: a
 * Dense or Conv2D layer (its weights), a BatchNormalization right after one, an activation's
 * polynomial (its coefficients) or another tree's last step, read by nothing but this tree.
 */
export function treeInputObstacle(g: Graph, t: TreeStepNodes): string | null {
  const x = g.nodes[t.input];
  const readers = g.nodes
    .filter((m) => m.inputs.includes(x.id))
    .map((m) => m.id)
    .sort((a, b) => a - b);
  if (readers.length !== 2 || readers[0] !== t.diff || readers[1] !== t.max)
    return `its input '${x.layer}' also feeds other layers`;
  const s = x.spec;
  if (s.op === 'dense' || s.op === 'conv2d' || s.op === 'activation' || s.op === 'pairmax') return null;
  if (s.op === 'batchnorm' && ['dense', 'conv2d'].includes(g.nodes[x.inputs[0]].spec.op)) return null;
  return `its input comes from ${x.className} '${x.layer}', which cannot scale it at no level`;
}
