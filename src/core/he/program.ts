/**
 * The CKKS program of a whole model, compiled from the graph and the chosen polynomials: a list
 * of steps (dense, convolution, pooling, polynomial, Add, max tree, stride, concatenation) with
 * every fold applied to the weights. The compiler only; lower.ts turns the steps into CKKS
 * operations for a packing (layout.ts), trace.ts records those as the engine-independent program
 * every engine runs (SEAL in process, Lattigo in its own process, the plaintext simulator).
 *
 * Scope of this version: Dense, Conv2D (any padding and stride, grouped and depthwise; zero
 * padding before it), AveragePooling2D (stride = pool size, followed by a linear layer), global
 * average pooling before a Dense layer, BatchNormalization after a linear layer, Add (with ResNet's
 * zero-channel shortcuts), Concatenate along channels, max pooling without padding (its max tree),
 * Flatten, Dropout and polynomial activations. Anything else is refused with a clear message.
 */
import { UserError } from '../errors';
import type { PolyActivation } from '../model/execute';
import { Graph, GraphNode, consumersOf, explicitPads, size } from '../model/graph';
import { treeFeedsLinearOnly, treeOutput, treeStep } from '../model/maxTree';
import { Fold, affineLane, foldLevels, lanesOf, planFold, sharedSign, squareLane } from '../cost/fold';
import { PolyPlan, planAtDepth } from '../numerics/bsgs';
import { unitMap } from '../numerics/chebyshev';
import type { Report } from '../report';
import { polysFromReport } from '../report';

export const pow2 = (x: number) => 2 ** Math.ceil(Math.log2(Math.max(1, x)));

/**
 * A dense map y = x W + b (folds applied); W is d_in x m, row-major, d_in in Keras flatten order.
 * `outScale`: per output, the factor its weights were scaled by for the max tree that reads it (TreeStep.want).
 */
export interface DenseStep {
  kind: 'dense';
  node: number;
  name: string;
  input: number;
  dIn: number;
  m: number;
  W: Float64Array;
  b: Float64Array;
  outScale?: Float64Array;
}
/**
 * A convolution; W is [kh, kw, cin / groups, cout] row-major. `pads` [[top, bottom], [left, right]]
 * are zeros around the input (padding 'same' or explicit, and a zero padding before it), which the
 * lowering realises by masking the taps that read them (lower.ts: tapMask), at no level.
 */
export interface ConvStep {
  kind: 'conv';
  node: number;
  name: string;
  input: number;
  kh: number;
  kw: number;
  cin: number;
  cout: number;
  groups: number;
  pads: [[number, number], [number, number]];
  strides: [number, number];
  W: Float64Array;
  b: Float64Array;
  outScale?: Float64Array;
}
/** The weight of input channel c for output channel o at tap (dy, dx): 0 outside o's group. */
export function convWeight(s: ConvStep, dy: number, dx: number, c: number, o: number): number {
  const cinG = s.cin / s.groups;
  const ci = c - Math.floor(o / (s.cout / s.groups)) * cinG;
  return ci < 0 || ci >= cinG ? 0 : s.W[((dy * s.kw + dx) * cinG + ci) * s.cout + o];
}
/** Average pooling p x p with stride p: sums here, the 1/p^2 is folded into the next linear step. */
export interface PoolStep {
  kind: 'pool';
  node: number;
  name: string;
  input: number;
  p: number;
}
/** `outScale`: per channel, the factor the step's output must carry for the max tree that reads it (TreeStep.want). */
export interface PolyStep {
  kind: 'poly';
  node: number;
  name: string;
  input: number;
  poly: PolyActivation;
  degree: number;
  fold: Fold;
  plan: PolyPlan;
  outScale?: Float64Array;
}
/**
 * Inputs added channel by channel; `offsets[i]`: input i's channel 0 is output channel offsets[i]
 * (a shortcut whose channels were zero-padded, ResNet's option A: the channels it lacks are zeros).
 */
export interface AddStep {
  kind: 'add';
  node: number;
  name: string;
  inputs: number[];
  offsets: number[];
  channels: number[];
  C: number;
}
/**
 * One step of a max tree (model/maxTree.ts) on a grid value x, along an axis: d = x[q] - x[q + o]
 * (+ G, the |x|'s input map when the value before carries its factor W), |d| by the polynomial,
 * and m = r (x[q] + x[q + o]) + (T / 2) p(d) + S, which is T max(x[q], x[q + o]) + S. T and S are
 * what reads m wants (the next step's W, an activation's input map, or 1 and 0), or `carry`: m
 * keeps the factor 2 F the sum has, for the linear layers after the pooling (factorOf).
 * r = T / (2 F) is one plaintext multiplication, in parallel with the polynomial.
 */
export interface TreeStep {
  kind: 'tree';
  node: number;
  name: string;
  input: number;
  axis: 0 | 1;
  offset: number;
  poly: PolyActivation;
  degree: number;
  fold: Fold;
  plan: PolyPlan;
  /** 'factor': the next step (or tree) reads m as T x (its W); 'value': m is what reads it wants (an activation's t, u or y, or the max itself). */
  target: { T: Float64Array; S: Float64Array; kind: 'factor' | 'value' } | 'carry';
  /** The factor the value before must carry and the offset the difference adds, when fold.intoPrevious. */
  want: { W: Float64Array; G: Float64Array } | null;
}
/** A pooling's stride after its tree: every s-th position kept, by a change of layout (no data moves). */
export interface StrideStep {
  kind: 'stride';
  node: number;
  name: string;
  input: number;
  sh: number;
  sw: number;
  H: number;
  W: number;
}
/** Channels concatenated (one ciphertext per channel): the inputs' ciphertexts side by side. */
export interface ConcatStep {
  kind: 'concat';
  node: number;
  name: string;
  inputs: number[];
}
export type Step = DenseStep | ConvStep | PoolStep | PolyStep | AddStep | TreeStep | StrideStep | ConcatStep;

export interface Program {
  steps: Step[];
  /** The value each graph node's output is (an alias's: the value it equals), and the step each node is part of. */
  nodeValue: Map<number, number>;
  nodeStep: Map<number, number>;
  /** Value id (node) holding the logits. */
  output: number;
  inputShape: number[];
  outputDim: number;
}

export function unsupported(n: GraphNode, why = ''): never {
  throw new UserError(
    'MODEL_UNSUPPORTED',
    `the whole-model encrypted test does not support layer '${n.layer}' (${n.className})${why ? ' ' + why : ''} yet`,
    'run he-approx encrypted-test with --layer-only to test each activation under encryption',
  );
}

export const stepInputs = (s: Step): number[] => (s.kind === 'add' || s.kind === 'concat' ? s.inputs : [s.input]);

/** An activation's polynomial from the report, and how it is evaluated (the analysis's own decision, cost/fold.ts). */
export interface Chosen {
  poly: PolyActivation;
  degree: number;
  fold: Fold;
  polyDepth: number;
}

export function chosenOf(g: Graph, report: Report, n: GraphNode): Chosen {
  const l = report.layers.find((x) => x.node === n.id);
  if (!l)
    throw new UserError(
      'OPTION_INVALID',
      `the report has no polynomial for activation ${n.name}`,
      'run he-approx analyze on this model again',
    );
  const poly = polysFromReport({ layers: [l] }).get(l.node)!;
  return {
    poly,
    degree: l.chosen.degree,
    fold: planFold(g, n, poly, l.chosen.degree, report.options.fold ?? false),
    polyDepth: l.chosen.polyDepth,
  };
}

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

/** Compiles graph + chosen polynomials into dense, conv, pool, polynomial, add, max tree and concat steps. */
export function compileProgram(g: Graph, report: Report): Program {
  const consumers = (id: number) => consumersOf(g, id);
  const alias = new Map<number, number>(); // node -> value id it equals (flatten, identity)
  const val = (id: number) => alias.get(id) ?? id;
  const steps: Step[] = [];
  const linearOf = new Map<number, DenseStep | ConvStep>();
  const polyOf = new Map<number, PolyStep>();
  const treeOf = new Map<number, TreeStep>();
  const trees = planTrees(g, report);
  // Zero paddings folded into the convolutions that read them, zero channels into Adds, and global
  // average poolings into the dense layer after them (by node, through Flatten).
  const zeroPads = new Map<number, [[number, number], [number, number]]>();
  const channelPads = new Map<number, number>();
  const averaged = new Map<number, { H: number; W: number }>();
  const averagedGrid = (n: GraphNode) => {
    const [H, W] = g.nodes[n.inputs[0]].shape;
    let readers = consumers(n.id);
    const chain = [n.id];
    while (readers.length === 1 && (readers[0].spec.op === 'flatten' || readers[0].spec.op === 'identity')) {
      chain.push(readers[0].id);
      readers = consumers(readers[0].id);
    }
    if (readers.length !== 1 || readers[0].spec.op !== 'dense') unsupported(n, 'not followed by a Dense layer');
    for (const id of chain) averaged.set(id, { H, W });
    alias.set(n.id, val(n.inputs[0]));
  };
  const scaleOutputs = (st: DenseStep | ConvStep, f: (o: number) => [number, number]) => {
    const outs = st.kind === 'dense' ? st.m : st.cout;
    for (let k = 0; k < st.W.length; k++) st.W[k] *= f(k % outs)[0];
    for (let o = 0; o < outs; o++) {
      const [mul, add] = f(o);
      st.b[o] = st.b[o] * mul + add;
    }
  };
  /**
   * A max tree's first step wants node n's value scaled per channel (planTrees): its producer does
   * it, a linear layer by its weights, a polynomial by its coefficients (a tree's end was planned
   * with it).
   */
  const giveWanted = (n: GraphNode) => {
    const W = trees.wants.get(n.id);
    if (!W || !['dense', 'conv2d', 'batchnorm', 'activation'].includes(n.spec.op)) return;
    const v = val(n.id);
    const lin = linearOf.get(v);
    const poly = polyOf.get(v);
    if (poly) {
      poly.outScale = W;
      // A square's u comes from the layer before: sqrt(W) u squares to W u^2 (the offset is scaled at run time).
      const src = linearOf.get(poly.input);
      if (poly.fold.form === 'square' && poly.fold.intoPrevious && src) scaleOutputs(src, (o) => [Math.sqrt(W[o]), 0]);
    } else if (lin) {
      scaleOutputs(lin, (o) => [W[o], 0]);
      lin.outScale = W;
    } else throw new Error(`${n.name}: a max tree wants its value scaled, and nothing before it can`);
  };
  for (const n of g.nodes) {
    const s = n.spec;
    switch (s.op) {
      case 'input':
        break;
      case 'flatten':
      case 'identity':
        alias.set(n.id, val(n.inputs[0]));
        break;
      case 'reshape':
        if (g.nodes[n.inputs[0]].shape.length !== 1 || n.shape.length !== 1) unsupported(n, 'beyond flat vectors');
        alias.set(n.id, val(n.inputs[0]));
        break;
      case 'dense': {
        if (g.nodes[n.inputs[0]].shape.length !== 1) unsupported(n, 'on a non-flat input');
        const [dIn, m] = s.kernelShape;
        const mean = averaged.get(n.inputs[0]);
        // After a global average pooling: a dense layer on the whole grid, each weight repeated at
        // every position with the mean's 1/(H W) (no level, no rotation beyond the dense layer's).
        const W = mean
          ? Float64Array.from(
              { length: mean.H * mean.W * dIn * m },
              (_, k) => s.kernel[k % (dIn * m)] / (mean.H * mean.W),
            )
          : Float64Array.from(s.kernel);
        const st: DenseStep = {
          kind: 'dense',
          node: n.id,
          name: n.name,
          input: val(n.inputs[0]),
          dIn: mean ? mean.H * mean.W * dIn : dIn,
          m,
          W,
          b: s.bias ? Float64Array.from(s.bias) : new Float64Array(m),
        };
        steps.push(st);
        linearOf.set(n.id, st);
        break;
      }
      case 'conv2d': {
        if (s.dilation[0] !== 1 || s.dilation[1] !== 1) unsupported(n, 'with dilation');
        const [kh, kw, cinG, cout] = s.kernelShape;
        const groups = s.groups ?? 1;
        const before = zeroPads.get(n.inputs[0]);
        const [H, W] = g.nodes[n.inputs[0]].shape;
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
          input: val(n.inputs[0]),
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
        steps.push(st);
        linearOf.set(n.id, st);
        break;
      }
      case 'globalavgpool':
        averagedGrid(n);
        break;
      case 'avgpool': {
        // A window over the whole grid is a global average pooling.
        const [H, W] = g.nodes[n.inputs[0]].shape;
        if (s.padding === 'valid' && s.pool[0] === H && s.pool[1] === W) {
          averagedGrid(n);
          break;
        }
        if (
          s.padding !== 'valid' ||
          s.pool[0] !== s.pool[1] ||
          s.strides[0] !== s.pool[0] ||
          s.strides[1] !== s.pool[1]
        )
          unsupported(n, 'other than square, valid, stride = pool size');
        // The 1/p^2 must fold into a following linear layer (through Flatten).
        let next = consumers(n.id);
        while (next.length === 1 && next[0].spec.op === 'flatten') next = consumers(next[0].id);
        if (next.length !== 1 || !['dense', 'conv2d'].includes(next[0].spec.op))
          unsupported(n, 'not followed by a Dense or Conv2D layer');
        steps.push({ kind: 'pool', node: n.id, name: n.name, input: val(n.inputs[0]), p: s.pool[0] });
        break;
      }
      case 'batchnorm': {
        const prev = linearOf.get(val(n.inputs[0]));
        if (!prev || consumers(n.inputs[0]).length !== 1) unsupported(n, 'not right after a Dense or Conv2D layer');
        scaleOutputs(prev, (o) => [s.scale[o], s.shift[o]]);
        alias.set(n.id, val(n.inputs[0]));
        break;
      }
      case 'activation': {
        if (s.maxTree) break; // compiled with its step's pairwise maximum
        const { poly, degree, fold, polyDepth } = chosenOf(g, report, n);
        const fromTree = treeOf.has(val(n.inputs[0]));
        const src = linearOf.get(val(n.inputs[0]));
        if (fold.intoPrevious && !fromTree && (!src || consumers(val(n.inputs[0])).length !== 1))
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
          alias.set(n.id, val(n.inputs[0]));
          break;
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
          input: val(n.inputs[0]),
          degree,
          fold,
          poly,
          plan: planAtDepth(degree, polyDepth),
        };
        steps.push(st);
        polyOf.set(n.id, st);
        break;
      }
      case 'pairdiff':
        break; // compiled with its step's pairwise maximum
      case 'pairmax': {
        const a = g.nodes[n.inputs[1]];
        const t = treeStep(g, a)!;
        const c = chosenOf(g, report, a);
        if (g.nodes[t.input].shape.length !== 3) unsupported(n, 'on a value that is not an image');
        const plan = trees.steps.get(n.id)!;
        const st: TreeStep = {
          kind: 'tree',
          node: n.id,
          name: a.name,
          input: val(t.input),
          axis: s.axis,
          offset: s.offset,
          poly: c.poly,
          degree: c.degree,
          fold: c.fold,
          plan: planAtDepth(c.degree, c.polyDepth),
          ...plan,
        };
        steps.push(st);
        treeOf.set(n.id, st);
        break;
      }
      case 'slice': {
        // A pooling's stride: positions 0, s, 2s, ... of height and width, every channel.
        const src = g.nodes[n.inputs[0]];
        const ok =
          src.shape.length === 3 && s.begin.every((b) => b === 0) && s.step[2] === 1 && s.end[2] === src.shape[2];
        if (!ok) unsupported(n, 'other than the stride of a pooling');
        steps.push({
          kind: 'stride',
          node: n.id,
          name: n.name,
          input: val(n.inputs[0]),
          sh: s.step[0],
          sw: s.step[1],
          H: n.shape[0],
          W: n.shape[1],
        });
        break;
      }
      case 'concat': {
        if (n.shape.length !== 3 || s.axis !== 2) unsupported(n, 'other than along the channels of images');
        steps.push({ kind: 'concat', node: n.id, name: n.name, inputs: n.inputs.map(val) });
        break;
      }
      case 'pad': {
        if (s.mode === 'edge') unsupported(n, '(the padding of a max pooling)');
        const [ph, pw, pc] = s.pads;
        const readers = consumers(n.id);
        if (
          s.value === 0 &&
          pc[0] === 0 &&
          pc[1] === 0 &&
          readers.length &&
          readers.every((r) => r.spec.op === 'conv2d')
        ) {
          // Zeros around an image before convolutions (Keras's ZeroPadding2D): their padding.
          zeroPads.set(n.id, [
            [ph[0], ph[1]],
            [pw[0], pw[1]],
          ]);
        } else if (
          s.value === 0 &&
          ph.every((x) => x === 0) &&
          pw.every((x) => x === 0) &&
          readers.length &&
          readers.every((r) => r.spec.op === 'add')
        ) {
          // Zero channels on a shortcut (ResNet's option A): the Add takes the channels it has.
          channelPads.set(n.id, pc[0]);
        } else unsupported(n, 'other than zeros read by convolutions, or zero channels read by an Add');
        alias.set(n.id, val(n.inputs[0]));
        break;
      }
      case 'add': {
        const C = n.shape[n.shape.length - 1];
        const channels = n.inputs.map((i) => {
          const m = g.nodes[channelPads.has(i) ? g.nodes[i].inputs[0] : i];
          return m.shape[m.shape.length - 1];
        });
        steps.push({
          kind: 'add',
          node: n.id,
          name: n.name,
          inputs: n.inputs.map(val),
          offsets: n.inputs.map((i) => channelPads.get(i) ?? 0),
          channels,
          C,
        });
        break;
      }
      default:
        unsupported(n);
    }
    giveWanted(n);
  }
  if (g.nodes[g.output].shape.length !== 1)
    unsupported(g.nodes[g.output], 'as the output (the output must be a flat vector)');
  const nodeValue = new Map(g.nodes.map((n) => [n.id, val(n.id)]));
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
  for (const pad of channelPads.keys()) nodeStep.set(pad, nodeStep.get(consumers(pad)[0].id)!);
  return {
    steps,
    nodeValue,
    nodeStep,
    output: val(g.output),
    inputShape: g.inputShape,
    outputDim: size(g.nodes[g.output].shape),
  };
}

/** Whether a per-channel activation's squares (cost/fold.ts) have both signs: the evaluator's test (sharedSign). */
export function mixedSquareSigns(p: PolyActivation): boolean {
  return sharedSign(lanesOf(p).map((l) => squareLane(l)!)) === null;
}

/**
 * Why the program cannot run channel-packed (null: it can): the input must be an image grid, and
 * channels whose squares have different signs share a ciphertext, so their signs must be taken by
 * the linear step that reads them.
 */
export function channelPackingObstacle(p: Program): string | null {
  if (p.inputShape.length !== 3) return 'the input is a flat vector (one sample already fills the slots it needs)';
  if (!p.steps.some((s) => s.kind === 'conv'))
    return 'no convolution reads the image grid (its first layer flattens it)';
  if (p.steps.some((s) => s.kind === 'concat'))
    return 'channels are concatenated (a concatenation runs with one ciphertext per channel)';
  // Signed squares leave their signs to the next linear step (packedSignedSquares): through pools only.
  for (const s of p.steps) {
    if (s.kind !== 'poly' || s.fold.form !== 'square' || !s.poly.channels || !mixedSquareSigns(s.poly)) continue;
    if (!s.fold.intoPrevious) return `${s.name}'s channels square with both signs and its input map is not folded`;
    let readers = p.steps.filter((t) => stepInputs(t).includes(s.node));
    while (readers.length === 1 && readers[0].kind === 'pool') {
      const pool = readers[0];
      readers = p.steps.filter((t) => stepInputs(t).includes(pool.node));
    }
    if (s.node === p.output || readers.length !== 1 || (readers[0].kind !== 'conv' && readers[0].kind !== 'dense')) {
      return `${s.name}'s channels square with both signs, and only a convolution or dense layer after it can take the signs`;
    }
  }
  return null;
}

/** Levels the program needs: linear steps 1, pools 0, polynomials their form's depth (+1 if the input map is not folded). */
export function programDepth(p: Program): number {
  const depth = new Map<number, number>([[0, 0]]);
  for (const s of p.steps) {
    // A shortcut's zero channels: a masked product on that input (lower.ts: addValues).
    const d =
      s.kind === 'add'
        ? Math.max(
            ...s.inputs.map((i, k) => (depth.get(i) ?? 0) + (s.offsets[k] !== 0 || s.channels[k] !== s.C ? 1 : 0)),
          )
        : Math.max(...stepInputs(s).map((i) => depth.get(i) ?? 0));
    depth.set(
      s.node,
      d + (s.kind === 'dense' || s.kind === 'conv' ? 1 : s.kind === 'poly' || s.kind === 'tree' ? polyStepDepth(s) : 0),
    );
  }
  return depth.get(p.output) ?? 0;
}

export function polyStepDepth(s: PolyStep | TreeStep): number {
  const { polyDepth, affineLevel } = foldLevels(s.fold, s.plan.depth);
  return polyDepth + affineLevel;
}
