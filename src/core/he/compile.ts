/**
 * The compiler of a program (program.ts): one pass over the graph's nodes, each op turned into
 * its step, with every fold applied to the weights (cost/fold.ts decided which), and the max
 * trees' wanted factors planned first (planTrees).
 */
import type { PolyActivation } from '../model/execute';
import { Graph, GraphNode, Op, consumersOf, explicitPads, size } from '../model/graph';
import { treeFeedsLinearOnly, treeOutput, treeStep } from '../model/maxTree';
import { affineLane, lanesOf, squareLane } from '../cost/fold';
import { planAtDepth } from '../numerics/bsgs';
import { unitMap } from '../numerics/chebyshev';
import type { Report } from '../report';
import { Chosen, ConvStep, DenseStep, PolyStep, Program, Step, TreeStep, chosenOf, unsupported } from './program';

/** Per channel of a C-channel value: f of the activation's lane (channel c's, or the layer's one). */
export const perLane = (
  p: PolyActivation,
  C: number,
  f: (l: ReturnType<typeof lanesOf>[number], c: number) => number,
) => {
  const lanes = lanesOf(p);
  return Float64Array.from({ length: C }, (_, c) => f(lanes[p.channels ? c : 0], c));
};

/** The input map (factor W, offset G) a tree step's |x| wants when its fold takes it from the value before, for target T. */
export function stepWant(
  c: Chosen,
  C: number,
  T: Float64Array | 'carry',
): { W: Float64Array; G: Float64Array; T: Float64Array | 'carry' } | null {
  if (!c.fold.intoPrevious || (c.fold.form !== 'series' && c.fold.form !== 'square')) return null;
  if (c.fold.form === 'series') {
    const W = perLane(c.poly, C, (l) => unitMap(l).scale);
    return { W, G: perLane(c.poly, C, (l) => unitMap(l).shift), T: T === 'carry' ? W.map((w) => 2 * w) : T };
  }
  // u = sqrt(T / 2) (mul d + add), so that sign u^2 + (T / 2) offset = (T / 2) p(d). Carried (T = 2 W): W = mul^2.
  const q = perLane(c.poly, C, (l) => squareLane(l)!.mul);
  const a = perLane(c.poly, C, (l) => squareLane(l)!.add);
  if (T === 'carry') {
    const W = q.map((m) => m * m);
    return { W, G: q.map((m, i) => m * a[i]), T: W.map((w) => 2 * w) };
  }
  const k = T.map((t) => Math.sqrt(t / 2));
  return { W: k.map((v, i) => v * q[i]), G: k.map((v, i) => v * a[i]), T };
}

/**
 * The max trees' targets and wanted maps (TreeStep), and the factor each tree's first step wants
 * from the value before it, by that value's node: its producer computes it at no level (cost/fold.ts
 * decided it could). Trees are planned from the last, since one tree's end serves the next one's start.
 */
export function planTrees(
  g: Graph,
  report: Report,
): { steps: Map<number, Pick<TreeStep, 'target' | 'want'>>; wants: Map<number, Float64Array> } {
  const steps = new Map<number, Pick<TreeStep, 'target' | 'want'>>();
  const wants = new Map<number, Float64Array>();
  const firstWant = new Map<number, Float64Array>(); // by the tree's first pairdiff node
  const abs = g.nodes.filter((n) => n.spec.op === 'activation' && n.spec.maxTree);
  const pools = [...new Set(abs.map((n) => (n.spec as { maxTree: { pool: string } }).maxTree.pool))];
  for (const pool of pools.reverse()) {
    const tree = abs
      .filter((n) => (n.spec as { maxTree: { pool: string } }).maxTree.pool === pool)
      .map((n) => treeStep(g, n)!)
      .sort((a, b) => a.step - b.step);
    let next: { W: Float64Array } | null = null;
    for (const t of [...tree].reverse()) {
      const n = g.nodes[t.abs];
      const C = n.shape[n.shape.length - 1];
      const c = chosenOf(g, report, n);
      let T: Float64Array | 'carry';
      let S = new Float64Array(C);
      let kind: 'factor' | 'value' = 'value';
      if (t.next !== null) {
        // The next step's |x| wants its factor; one that wants none (a constant, an affine) takes the sum as it is.
        T = next ? next.W : 'carry';
        kind = 'factor';
      } else {
        const out = treeOutput(g, t.max);
        const readers = g.nodes.filter((m) => m.inputs.includes(out));
        const act =
          readers.length === 1 && readers[0].spec.op === 'activation' && !readers[0].spec.maxTree
            ? chosenOf(g, report, readers[0])
            : null;
        const nextTree = readers.map((m) => firstWant.get(m.id)).find((w) => w);
        if (act && act.fold.intoPrevious) {
          // The activation after the pooling: its input map (t, u or y) from this last step.
          const off = act.poly.channelOffset;
          const map = (l: ReturnType<typeof lanesOf>[number]) =>
            act.fold.form === 'series'
              ? { mul: unitMap(l).scale, add: unitMap(l).shift }
              : act.fold.form === 'square'
                ? squareLane(l)!
                : affineLane(l);
          T = perLane(act.poly, C, (l) => map(l).mul);
          S = perLane(act.poly, C, (l, ch) => map(l).add - (act.fold.form === 'affine' ? (off?.[ch] ?? 0) : 0));
        } else if (nextTree) {
          T = nextTree;
          kind = 'factor';
        } else if (treeFeedsLinearOnly(g, t.max)) T = 'carry';
        else T = new Float64Array(C).fill(1);
      }
      // A constant |x| whose step does not carry scales the sum (the level cost/fold.ts counts).
      if (c.fold.form === 'constant' && !c.fold.intoPrevious && T === 'carry') T = new Float64Array(C).fill(1);
      const w = stepWant(c, C, T);
      // A carried factor that the want resolved (T = 2 W) is a factor for the next reader, not the value.
      const target = w
        ? { T: w.T as Float64Array, S, kind: T === 'carry' ? ('factor' as const) : kind }
        : T === 'carry'
          ? ('carry' as const)
          : { T, S, kind };
      steps.set(t.max, { target, want: w ? { W: w.W, G: w.G } : null });
      next = w;
      if (t.step === 1 && w) {
        wants.set(t.input, w.W);
        firstWant.set(t.diff, w.W);
        firstWant.set(t.max, w.W);
      }
    }
  }
  return { steps, wants };
}

type OpOf<K extends Op['op']> = Extract<Op, { op: K }>;
type Pads = [[number, number], [number, number]];

/** Compiles graph + chosen polynomials into dense, conv, pool, polynomial, add, max tree and concat steps. */
export function compileProgram(g: Graph, report: Report): Program {
  const c = new Compiler(g, report);
  for (const n of g.nodes) c.node(n);
  return c.finish();
}

/**
 * One pass over the graph's nodes in order. Folds reach back: a BatchNormalization or an
 * activation's input map rescales the linear step before it, a max tree's wanted factor its
 * producer; zero paddings and global average poolings are remembered for the steps that read them.
 */
class Compiler {
  private readonly alias = new Map<number, number>(); // node -> value id it equals (flatten, identity)
  private readonly steps: Step[] = [];
  private readonly linearOf = new Map<number, DenseStep | ConvStep>();
  private readonly polyOf = new Map<number, PolyStep>();
  private readonly treeOf = new Map<number, TreeStep>();
  private readonly trees: ReturnType<typeof planTrees>;
  // Zero paddings folded into the convolutions that read them, zero channels into Adds, and global
  // average poolings into the dense layer after them (by node, through Flatten).
  private readonly zeroPads = new Map<number, Pads>();
  private readonly channelPads = new Map<number, number>();
  private readonly averaged = new Map<number, { H: number; W: number }>();

  constructor(
    private readonly g: Graph,
    private readonly report: Report,
  ) {
    this.trees = planTrees(g, report);
  }

  private val = (id: number) => this.alias.get(id) ?? id;
  private consumers = (id: number) => consumersOf(this.g, id);
  private shapeOf = (id: number) => this.g.nodes[id].shape;

  node(n: GraphNode): void {
    const s = n.spec;
    switch (s.op) {
      case 'input':
      case 'pairdiff': // compiled with its step's pairwise maximum
        break;
      case 'flatten':
      case 'identity':
        this.alias.set(n.id, this.val(n.inputs[0]));
        break;
      case 'reshape':
        if (this.shapeOf(n.inputs[0]).length !== 1 || n.shape.length !== 1) unsupported(n, 'beyond flat vectors');
        this.alias.set(n.id, this.val(n.inputs[0]));
        break;
      case 'dense':
        this.dense(n, s);
        break;
      case 'conv2d':
        this.conv(n, s);
        break;
      case 'globalavgpool':
        this.averagedGrid(n);
        break;
      case 'avgpool':
        this.avgpool(n, s);
        break;
      case 'batchnorm': {
        const prev = this.linearOf.get(this.val(n.inputs[0]));
        if (!prev || this.consumers(n.inputs[0]).length !== 1)
          unsupported(n, 'not right after a Dense or Conv2D layer');
        scaleOutputs(prev, (o) => [s.scale[o], s.shift[o]]);
        this.alias.set(n.id, this.val(n.inputs[0]));
        break;
      }
      case 'activation':
        if (!s.maxTree) this.activation(n); // a tree's |x| is compiled with its step's pairwise maximum
        break;
      case 'pairmax':
        this.pairmax(n, s);
        break;
      case 'slice':
        this.slice(n, s);
        break;
      case 'concat':
        if (n.shape.length !== 3 || s.axis !== 2) unsupported(n, 'other than along the channels of images');
        this.steps.push({ kind: 'concat', node: n.id, name: n.name, inputs: n.inputs.map(this.val) });
        break;
      case 'pad':
        this.pad(n, s);
        break;
      case 'add':
        this.add(n);
        break;
      default:
        unsupported(n);
    }
    this.giveWanted(n);
  }

  finish(): Program {
    const { g, steps } = this;
    if (g.nodes[g.output].shape.length !== 1)
      unsupported(g.nodes[g.output], 'as the output (the output must be a flat vector)');
    const nodeValue = new Map(g.nodes.map((n) => [n.id, this.val(n.id)]));
    const nodeStep = new Map<number, number>();
    steps.forEach((st, i) => {
      nodeStep.set(st.node, i);
      // A tree step is also its difference and its |x|.
      if (st.kind === 'tree') {
        const a = g.nodes[g.nodes[st.node].inputs[1]];
        nodeStep.set(a.id, i);
        nodeStep.set(a.inputs[0], i);
      }
    });
    // A shortcut's zero channels are its Add's (a bootstrap planned before them runs before the Add).
    for (const pad of this.channelPads.keys()) nodeStep.set(pad, nodeStep.get(this.consumers(pad)[0].id)!);
    return {
      steps,
      nodeValue,
      nodeStep,
      output: this.val(g.output),
      inputShape: g.inputShape,
      outputDim: size(g.nodes[g.output].shape),
    };
  }

  private averagedGrid(n: GraphNode): void {
    const [H, W] = this.shapeOf(n.inputs[0]);
    let readers = this.consumers(n.id);
    const chain = [n.id];
    while (readers.length === 1 && (readers[0].spec.op === 'flatten' || readers[0].spec.op === 'identity')) {
      chain.push(readers[0].id);
      readers = this.consumers(readers[0].id);
    }
    if (readers.length !== 1 || readers[0].spec.op !== 'dense') unsupported(n, 'not followed by a Dense layer');
    for (const id of chain) this.averaged.set(id, { H, W });
    this.alias.set(n.id, this.val(n.inputs[0]));
  }

  /**
   * A max tree's first step wants node n's value scaled per channel (planTrees): its producer does
   * it, a linear layer by its weights, a polynomial by its coefficients (a tree's end was planned
   * with it).
   */
  private giveWanted(n: GraphNode): void {
    const W = this.trees.wants.get(n.id);
    if (!W || !['dense', 'conv2d', 'batchnorm', 'activation'].includes(n.spec.op)) return;
    const v = this.val(n.id);
    const lin = this.linearOf.get(v);
    const poly = this.polyOf.get(v);
    if (poly) {
      poly.outScale = W;
      // A square's u comes from the layer before: sqrt(W) u squares to W u^2 (the offset is scaled at run time).
      const src = this.linearOf.get(poly.input);
      if (poly.fold.form === 'square' && poly.fold.intoPrevious && src) scaleOutputs(src, (o) => [Math.sqrt(W[o]), 0]);
    } else if (lin) {
      scaleOutputs(lin, (o) => [W[o], 0]);
      lin.outScale = W;
    } else throw new Error(`${n.name}: a max tree wants its value scaled, and nothing before it can`);
  }

  private dense(n: GraphNode, s: OpOf<'dense'>): void {
    if (this.shapeOf(n.inputs[0]).length !== 1) unsupported(n, 'on a non-flat input');
    const [dIn, m] = s.kernelShape;
    const mean = this.averaged.get(n.inputs[0]);
    // After a global average pooling: a dense layer on the whole grid, each weight repeated at
    // every position with the mean's 1/(H W) (no level, no rotation beyond the dense layer's).
    const W = mean
      ? Float64Array.from({ length: mean.H * mean.W * dIn * m }, (_, k) => s.kernel[k % (dIn * m)] / (mean.H * mean.W))
      : Float64Array.from(s.kernel);
    const st: DenseStep = {
      kind: 'dense',
      node: n.id,
      name: n.name,
      input: this.val(n.inputs[0]),
      dIn: mean ? mean.H * mean.W * dIn : dIn,
      m,
      W,
      b: s.bias ? Float64Array.from(s.bias) : new Float64Array(m),
    };
    this.steps.push(st);
    this.linearOf.set(n.id, st);
  }

  private conv(n: GraphNode, s: OpOf<'conv2d'>): void {
    if (s.dilation[0] !== 1 || s.dilation[1] !== 1) unsupported(n, 'with dilation');
    const [kh, kw, cinG, cout] = s.kernelShape;
    const groups = s.groups ?? 1;
    const before = this.zeroPads.get(n.inputs[0]);
    const [H, W] = this.shapeOf(n.inputs[0]);
    const own = explicitPads(s.padding, H, W, kh, kw, s.strides[0], s.strides[1]);
    const pads: ConvStep['pads'] = before
      ? [
          [own[0][0] + before[0][0], own[0][1] + before[0][1]],
          [own[1][0] + before[1][0], own[1][1] + before[1][1]],
        ]
      : own;
    const st: ConvStep = {
      kind: 'conv',
      node: n.id,
      name: n.name,
      input: this.val(n.inputs[0]),
      kh,
      kw,
      cin: cinG * groups,
      cout,
      groups,
      pads,
      strides: s.strides,
      W: Float64Array.from(s.kernel),
      b: s.bias ? Float64Array.from(s.bias) : new Float64Array(cout),
    };
    this.steps.push(st);
    this.linearOf.set(n.id, st);
  }

  private avgpool(n: GraphNode, s: OpOf<'avgpool'>): void {
    // A window over the whole grid is a global average pooling.
    const [H, W] = this.shapeOf(n.inputs[0]);
    if (s.padding === 'valid' && s.pool[0] === H && s.pool[1] === W) return this.averagedGrid(n);
    if (s.padding !== 'valid' || s.pool[0] !== s.pool[1] || s.strides[0] !== s.pool[0] || s.strides[1] !== s.pool[1])
      unsupported(n, 'other than square, valid, stride = pool size');
    // The 1/p^2 must fold into a following linear layer (through Flatten).
    let next = this.consumers(n.id);
    while (next.length === 1 && next[0].spec.op === 'flatten') next = this.consumers(next[0].id);
    if (next.length !== 1 || !['dense', 'conv2d'].includes(next[0].spec.op))
      unsupported(n, 'not followed by a Dense or Conv2D layer');
    this.steps.push({ kind: 'pool', node: n.id, name: n.name, input: this.val(n.inputs[0]), p: s.pool[0] });
  }

  private activation(n: GraphNode): void {
    const { poly, degree, fold, polyDepth } = chosenOf(this.g, this.report, n);
    const input = this.val(n.inputs[0]);
    const fromTree = this.treeOf.has(input);
    const src = this.linearOf.get(input);
    if (fold.intoPrevious && !fromTree && (!src || this.consumers(input).length !== 1))
      throw new Error(`${n.name}: the fold plan expects a linear layer before it`);
    const lanes = lanesOf(poly);
    const lane = (o: number) => lanes[poly.channels ? o : 0];
    const off = (o: number) => poly.channelOffset?.[o] ?? 0;
    if (fold.intoPrevious && fold.form === 'affine') {
      // Degree 1: the layer before computes y = mul x + add (less the mean-shift offset); nothing is left to do.
      if (!fromTree)
        scaleOutputs(src!, (o) => {
          const q = affineLane(lane(o));
          return [q.mul, q.add - off(o)];
        });
      this.alias.set(n.id, input);
      return;
    }
    // The layer before computes t (series) or u (square) per output channel (a max tree: its last step, planTrees).
    if (fold.intoPrevious && !fromTree) {
      scaleOutputs(src!, (o) => {
        if (fold.form === 'square') {
          const q = squareLane(lane(o))!;
          return [q.mul, q.add];
        }
        const { scale, shift } = unitMap(lane(o));
        return [scale, shift];
      });
    }
    const st: PolyStep = {
      kind: 'poly',
      node: n.id,
      name: n.name,
      input,
      degree,
      fold,
      poly,
      plan: planAtDepth(degree, polyDepth),
    };
    this.steps.push(st);
    this.polyOf.set(n.id, st);
  }

  private pairmax(n: GraphNode, s: OpOf<'pairmax'>): void {
    const a = this.g.nodes[n.inputs[1]];
    const t = treeStep(this.g, a)!;
    const c = chosenOf(this.g, this.report, a);
    if (this.shapeOf(t.input).length !== 3) unsupported(n, 'on a value that is not an image');
    const st: TreeStep = {
      kind: 'tree',
      node: n.id,
      name: a.name,
      input: this.val(t.input),
      axis: s.axis,
      offset: s.offset,
      poly: c.poly,
      degree: c.degree,
      fold: c.fold,
      plan: planAtDepth(c.degree, c.polyDepth),
      ...this.trees.steps.get(n.id)!,
    };
    this.steps.push(st);
    this.treeOf.set(n.id, st);
  }

  private slice(n: GraphNode, s: OpOf<'slice'>): void {
    // A pooling's stride: positions 0, s, 2s, ... of height and width, every channel.
    const src = this.g.nodes[n.inputs[0]];
    const ok = src.shape.length === 3 && s.begin.every((b) => b === 0) && s.step[2] === 1 && s.end[2] === src.shape[2];
    if (!ok) unsupported(n, 'other than the stride of a pooling');
    this.steps.push({
      kind: 'stride',
      node: n.id,
      name: n.name,
      input: this.val(n.inputs[0]),
      sh: s.step[0],
      sw: s.step[1],
      H: n.shape[0],
      W: n.shape[1],
    });
  }

  private pad(n: GraphNode, s: OpOf<'pad'>): void {
    if (s.mode === 'edge') unsupported(n, '(the padding of a max pooling)');
    const [ph, pw, pc] = s.pads;
    const readers = this.consumers(n.id);
    const readBy = (op: string) => readers.length > 0 && readers.every((r) => r.spec.op === op);
    if (s.value === 0 && pc[0] === 0 && pc[1] === 0 && readBy('conv2d')) {
      // Zeros around an image before convolutions (Keras's ZeroPadding2D): their padding.
      this.zeroPads.set(n.id, [
        [ph[0], ph[1]],
        [pw[0], pw[1]],
      ]);
    } else if (s.value === 0 && ph.every((x) => x === 0) && pw.every((x) => x === 0) && readBy('add')) {
      // Zero channels on a shortcut (ResNet's option A): the Add takes the channels it has.
      this.channelPads.set(n.id, pc[0]);
    } else unsupported(n, 'other than zeros read by convolutions, or zero channels read by an Add');
    this.alias.set(n.id, this.val(n.inputs[0]));
  }

  private add(n: GraphNode): void {
    const channels = n.inputs.map((i) => {
      const m = this.g.nodes[this.channelPads.has(i) ? this.g.nodes[i].inputs[0] : i];
      return m.shape[m.shape.length - 1];
    });
    this.steps.push({
      kind: 'add',
      node: n.id,
      name: n.name,
      inputs: n.inputs.map(this.val),
      offsets: n.inputs.map((i) => this.channelPads.get(i) ?? 0),
      channels,
      C: n.shape[n.shape.length - 1],
    });
  }
}

/** Scales a linear step's outputs o by f(o) = [mul, add]: its weights by mul, its bias to b mul + add. */
function scaleOutputs(st: DenseStep | ConvStep, f: (o: number) => [number, number]): void {
  const outs = st.kind === 'dense' ? st.m : st.cout;
  for (let k = 0; k < st.W.length; k++) st.W[k] *= f(k % outs)[0];
  for (let o = 0; o < outs; o++) {
    const [mul, add] = f(o);
    st.b[o] = st.b[o] * mul + add;
  }
}
