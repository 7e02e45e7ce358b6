/**
 * The CKKS program of a whole model: compiled from the graph and the chosen polynomials, run on a
 * CKKS backend (SEAL, or the plaintext simulator that predicts levels and scales), with the
 * packings that lay samples out in slots. No tfjs here: the encrypted test's worker threads load
 * only this, node-seal and the polynomial evaluator.
 *
 * Linear layers use the hybrid diagonal method (Juvekar et al., GAZELLE, USENIX Security 2018)
 * with baby-step giant-step rotations (Halevi & Shoup 2014/2018): for y = M x with M padded to
 * m x n (m | n, powers of two), z = sum_k diag_k * rot(x, k) and y_j = sum_t z[j + t m].
 * Slots are position-major with B samples interleaved (slot = position * B + sample), and every
 * value is kept periodic in its positions, so a layer's output comes out already replicated with
 * the period the next layer reads: no masking, one level per linear layer. Each activation's
 * affine input map and a following BatchNormalization fold into the dense weights.
 *
 * Convolutions (LoLa, Brutzkus et al., ICML 2019, style): one ciphertext per channel, each
 * image on its row-major grid; out_o = sum_dy rot(sum_c sum_dx w * rot(x_c, dx sx), dy sy), so the
 * dx rotations are shared by all output channels and the dy ones by all input channels. Average
 * pooling is rotate-and-add with its 1/p^2 folded into the next linear layer. Strides stretch the
 * grid instead of moving data. A dense layer after a convolution reads the channel ciphertexts
 * directly through the generalised diagonals.
 *
 * Scope of this version: Dense, Conv2D (valid padding), AveragePooling2D (stride = pool size,
 * followed by a linear layer), BatchNormalization after a linear layer, Add, Flatten, Dropout and
 * polynomial activations. Anything else is refused with a clear message.
 */
import { UserError } from '../errors';
import type { PolyActivation } from '../model/execute';
import { Graph, GraphNode, consumersOf, size } from '../model/graph';
import { treeFeedsLinearOnly, treeOutput, treeStep } from '../model/maxTree';
import { Fold, affineLane, foldLevels, lanesOf, planFold, sharedSign, squareLane } from '../cost/fold';
import { PolyPlan, planAtDepth } from '../numerics/bsgs';
import { unitMap } from '../numerics/chebyshev';
import type { EncryptedModelReport, Report } from '../report';
import { polysFromReport } from '../report';
import { CkksBackend, SimBackend, SimCt } from './backend';
import { CkksParams } from './params';
import { PolyInput, VecOps, channelLanes, evalFoldedCkks, evalPolyCkks, lanePoly } from './polyEval';
import { Ct, SealBackend } from './seal';

const pow2 = (x: number) => 2 ** Math.ceil(Math.log2(Math.max(1, x)));

/**
 * A dense map y = x W + b (folds applied); W is d_in x m, row-major, d_in in Keras flatten order.
 * `outScale`: per output, the factor its weights were scaled by for the max tree that reads it (TreeStep.want).
 */
interface DenseStep { kind: 'dense'; node: number; name: string; input: number; dIn: number; m: number; W: Float64Array; b: Float64Array; outScale?: Float64Array }
/** A valid-padding convolution; W is [kh, kw, cin, cout] row-major. */
interface ConvStep { kind: 'conv'; node: number; name: string; input: number; kh: number; kw: number; cin: number; cout: number;
  strides: [number, number]; W: Float64Array; b: Float64Array; outScale?: Float64Array }
/** Average pooling p x p with stride p: sums here, the 1/p^2 is folded into the next linear step. */
interface PoolStep { kind: 'pool'; node: number; name: string; input: number; p: number }
/** `outScale`: per channel, the factor the step's output must carry for the max tree that reads it (TreeStep.want). */
interface PolyStep { kind: 'poly'; node: number; name: string; input: number; poly: PolyActivation; degree: number; fold: Fold; plan: PolyPlan; outScale?: Float64Array }
interface AddStep { kind: 'add'; node: number; name: string; inputs: number[] }
/**
 * One step of a max tree (model/maxTree.ts) on a grid value x, along an axis: d = x[q] - x[q + o]
 * (+ G, the |x|'s input map when the value before carries its factor W), |d| by the polynomial,
 * and m = r (x[q] + x[q + o]) + (T / 2) p(d) + S, which is T max(x[q], x[q + o]) + S. T and S are
 * what reads m wants (the next step's W, an activation's input map, or 1 and 0), or `carry`: m
 * keeps the factor 2 F the sum has, for the linear layers after the pooling (factorOf).
 * r = T / (2 F) is one plaintext multiplication, in parallel with the polynomial.
 */
interface TreeStep {
  kind: 'tree'; node: number; name: string; input: number; axis: 0 | 1; offset: number;
  poly: PolyActivation; degree: number; fold: Fold; plan: PolyPlan;
  /** 'factor': the next step (or tree) reads m as T x (its W); 'value': m is what reads it wants (an activation's t, u or y, or the max itself). */
  target: { T: Float64Array; S: Float64Array; kind: 'factor' | 'value' } | 'carry';
  /** The factor the value before must carry and the offset the difference adds, when fold.intoPrevious. */
  want: { W: Float64Array; G: Float64Array } | null;
}
/** A pooling's stride after its tree: every s-th position kept, by a change of layout (no data moves). */
interface StrideStep { kind: 'stride'; node: number; name: string; input: number; sh: number; sw: number; H: number; W: number }
/** Channels concatenated (one ciphertext per channel): the inputs' ciphertexts side by side. */
interface ConcatStep { kind: 'concat'; node: number; name: string; inputs: number[] }
type Step = DenseStep | ConvStep | PoolStep | PolyStep | AddStep | TreeStep | StrideStep | ConcatStep;

export interface Program {
  steps: Step[];
  /** Value id (node) holding the logits. */
  output: number;
  inputShape: number[];
  outputDim: number;
}

function unsupported(n: GraphNode, why = ''): never {
  throw new UserError('MODEL_UNSUPPORTED', `the whole-model encrypted test does not support layer '${n.layer}' (${n.className})${why ? ' ' + why : ''} yet`,
    'run he-approx encrypted-test with --layer-only to test each activation under encryption');
}

const stepInputs = (s: Step): number[] => (s.kind === 'add' || s.kind === 'concat' ? s.inputs : [s.input]);

/** An activation's polynomial from the report, and how it is evaluated (the analysis's own decision, cost/fold.ts). */
interface Chosen { poly: PolyActivation; degree: number; fold: Fold; polyDepth: number }

function chosenOf(g: Graph, report: Report, n: GraphNode): Chosen {
  const l = report.layers.find((x) => x.node === n.id);
  if (!l) throw new UserError('OPTION_INVALID', `the report has no polynomial for activation ${n.name}`, 'run he-approx analyze on this model again');
  const poly = polysFromReport({ layers: [l] }).get(l.node)!;
  return { poly, degree: l.chosen.degree, fold: planFold(g, n, poly, l.chosen.degree, report.options.fold ?? false), polyDepth: l.chosen.polyDepth };
}

/** Per channel of a C-channel value: f of the activation's lane (channel c's, or the layer's one). */
const perLane = (p: PolyActivation, C: number, f: (l: ReturnType<typeof lanesOf>[number], c: number) => number) => {
  const lanes = lanesOf(p);
  return Float64Array.from({ length: C }, (_, c) => f(lanes[p.channels ? c : 0], c));
};

/** The input map (factor W, offset G) a tree step's |x| wants when its fold takes it from the value before, for target T. */
function stepWant(c: Chosen, C: number, T: Float64Array | 'carry'): { W: Float64Array; G: Float64Array; T: Float64Array | 'carry' } | null {
  if (!c.fold.intoPrevious || (c.fold.form !== 'series' && c.fold.form !== 'square')) return null;
  if (c.fold.form === 'series') {
    const W = perLane(c.poly, C, (l) => unitMap(l).scale);
    return { W, G: perLane(c.poly, C, (l) => unitMap(l).shift), T: T === 'carry' ? W.map((w) => 2 * w) : T };
  }
  // u = sqrt(T / 2) (mul d + add), so that sign u^2 + (T / 2) offset = (T / 2) p(d). Carried (T = 2 W): W = mul^2.
  const q = perLane(c.poly, C, (l) => squareLane(l)!.mul);
  const a = perLane(c.poly, C, (l) => squareLane(l)!.add);
  if (T === 'carry') { const W = q.map((m) => m * m); return { W, G: q.map((m, i) => m * a[i]), T: W.map((w) => 2 * w) }; }
  const k = T.map((t) => Math.sqrt(t / 2));
  return { W: k.map((v, i) => v * q[i]), G: k.map((v, i) => v * a[i]), T };
}

/**
 * The max trees' targets and wanted maps (TreeStep), and the factor each tree's first step wants
 * from the value before it, by that value's node: its producer computes it at no level (cost/fold.ts
 * decided it could). Trees are planned from the last, since one tree's end serves the next one's start.
 */
function planTrees(g: Graph, report: Report): { steps: Map<number, Pick<TreeStep, 'target' | 'want'>>; wants: Map<number, Float64Array> } {
  const steps = new Map<number, Pick<TreeStep, 'target' | 'want'>>();
  const wants = new Map<number, Float64Array>();
  const firstWant = new Map<number, Float64Array>(); // by the tree's first pairdiff node
  const abs = g.nodes.filter((n) => n.spec.op === 'activation' && n.spec.maxTree);
  const pools = [...new Set(abs.map((n) => (n.spec as { maxTree: { pool: string } }).maxTree.pool))];
  for (const pool of pools.reverse()) {
    const tree = abs.filter((n) => (n.spec as { maxTree: { pool: string } }).maxTree.pool === pool).map((n) => treeStep(g, n)!).sort((a, b) => a.step - b.step);
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
        const act = readers.length === 1 && readers[0].spec.op === 'activation' && !readers[0].spec.maxTree ? chosenOf(g, report, readers[0]) : null;
        const nextTree = readers.map((m) => firstWant.get(m.id)).find((w) => w);
        if (act && act.fold.intoPrevious) {
          // The activation after the pooling: its input map (t, u or y) from this last step.
          const off = act.poly.channelOffset;
          const map = (l: ReturnType<typeof lanesOf>[number]) => (act.fold.form === 'series' ? { mul: unitMap(l).scale, add: unitMap(l).shift }
            : act.fold.form === 'square' ? squareLane(l)! : affineLane(l));
          T = perLane(act.poly, C, (l) => map(l).mul);
          S = perLane(act.poly, C, (l, ch) => map(l).add - (act.fold.form === 'affine' ? off?.[ch] ?? 0 : 0));
        } else if (nextTree) { T = nextTree; kind = 'factor'; }
        else if (treeFeedsLinearOnly(g, t.max)) T = 'carry';
        else T = new Float64Array(C).fill(1);
      }
      // A constant |x| whose step does not carry scales the sum (the level cost/fold.ts counts).
      if (c.fold.form === 'constant' && !c.fold.intoPrevious && T === 'carry') T = new Float64Array(C).fill(1);
      const w = stepWant(c, C, T);
      // A carried factor that the want resolved (T = 2 W) is a factor for the next reader, not the value.
      const target = w ? { T: w.T as Float64Array, S, kind: T === 'carry' ? 'factor' as const : kind } : T === 'carry' ? 'carry' as const : { T, S, kind };
      steps.set(t.max, { target, want: w ? { W: w.W, G: w.G } : null });
      next = w;
      if (t.step === 1 && w) { wants.set(t.input, w.W); firstWant.set(t.diff, w.W); firstWant.set(t.max, w.W); }
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
  const scaleOutputs = (st: DenseStep | ConvStep, f: (o: number) => [number, number]) => {
    const outs = st.kind === 'dense' ? st.m : st.cout;
    for (let k = 0; k < st.W.length; k++) st.W[k] *= f(k % outs)[0];
    for (let o = 0; o < outs; o++) { const [mul, add] = f(o); st.b[o] = st.b[o] * mul + add; }
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
    } else if (lin) { scaleOutputs(lin, (o) => [W[o], 0]); lin.outScale = W; }
    else throw new Error(`${n.name}: a max tree wants its value scaled, and nothing before it can`);
  };
  for (const n of g.nodes) {
    const s = n.spec;
    switch (s.op) {
      case 'input': break;
      case 'flatten': case 'identity': alias.set(n.id, val(n.inputs[0])); break;
      case 'reshape':
        if (g.nodes[n.inputs[0]].shape.length !== 1 || n.shape.length !== 1) unsupported(n, 'beyond flat vectors');
        alias.set(n.id, val(n.inputs[0])); break;
      case 'dense': {
        if (g.nodes[n.inputs[0]].shape.length !== 1) unsupported(n, 'on a non-flat input');
        const [dIn, m] = s.kernelShape;
        const st: DenseStep = { kind: 'dense', node: n.id, name: n.name, input: val(n.inputs[0]), dIn, m,
          W: Float64Array.from(s.kernel), b: s.bias ? Float64Array.from(s.bias) : new Float64Array(m) };
        steps.push(st);
        linearOf.set(n.id, st);
        break;
      }
      case 'conv2d': {
        if (s.padding !== 'valid') unsupported(n, "with padding 'same'");
        if (s.dilation[0] !== 1 || s.dilation[1] !== 1) unsupported(n, 'with dilation');
        if ((s.groups ?? 1) !== 1) unsupported(n, 'with groups (depthwise)');
        const [kh, kw, cin, cout] = s.kernelShape;
        const st: ConvStep = { kind: 'conv', node: n.id, name: n.name, input: val(n.inputs[0]), kh, kw, cin, cout, strides: s.strides,
          W: Float64Array.from(s.kernel), b: s.bias ? Float64Array.from(s.bias) : new Float64Array(cout) };
        steps.push(st);
        linearOf.set(n.id, st);
        break;
      }
      case 'avgpool': {
        if (s.padding !== 'valid' || s.pool[0] !== s.pool[1] || s.strides[0] !== s.pool[0] || s.strides[1] !== s.pool[1]) unsupported(n, 'other than square, valid, stride = pool size');
        // The 1/p^2 must fold into a following linear layer (through Flatten).
        let next = consumers(n.id);
        while (next.length === 1 && next[0].spec.op === 'flatten') next = consumers(next[0].id);
        if (next.length !== 1 || !['dense', 'conv2d'].includes(next[0].spec.op)) unsupported(n, 'not followed by a Dense or Conv2D layer');
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
        if (fold.intoPrevious && !fromTree && (!src || consumers(val(n.inputs[0])).length !== 1)) throw new Error(`${n.name}: the fold plan expects a linear layer before it`);
        const lanes = lanesOf(poly);
        const lane = (o: number) => lanes[poly.channels ? o : 0];
        const off = (o: number) => poly.channelOffset?.[o] ?? 0;
        if (fold.intoPrevious && fold.form === 'affine') {
          // Degree 1: the layer before computes y = mul x + add (less the mean-shift offset); nothing is left to do.
          if (!fromTree) scaleOutputs(src!, (o) => { const q = affineLane(lane(o)); return [q.mul, q.add - off(o)]; });
          alias.set(n.id, val(n.inputs[0]));
          break;
        }
        // The layer before computes t (series) or u (square) per output channel (a max tree: its last step, planTrees).
        if (fold.intoPrevious && !fromTree) {
          scaleOutputs(src!, (o) => {
            if (fold.form === 'square') { const q = squareLane(lane(o))!; return [q.mul, q.add]; }
            const { scale, shift } = unitMap(lane(o)); return [scale, shift];
          });
        }
        const st: PolyStep = { kind: 'poly', node: n.id, name: n.name, input: val(n.inputs[0]), degree, fold, poly, plan: planAtDepth(degree, polyDepth) };
        steps.push(st);
        polyOf.set(n.id, st);
        break;
      }
      case 'pairdiff': break; // compiled with its step's pairwise maximum
      case 'pairmax': {
        const a = g.nodes[n.inputs[1]];
        const t = treeStep(g, a)!;
        const c = chosenOf(g, report, a);
        if (g.nodes[t.input].shape.length !== 3) unsupported(n, 'on a value that is not an image');
        const plan = trees.steps.get(n.id)!;
        const st: TreeStep = { kind: 'tree', node: n.id, name: a.name, input: val(t.input), axis: s.axis, offset: s.offset,
          poly: c.poly, degree: c.degree, fold: c.fold, plan: planAtDepth(c.degree, c.polyDepth), ...plan };
        steps.push(st);
        treeOf.set(n.id, st);
        break;
      }
      case 'slice': {
        // A pooling's stride: positions 0, s, 2s, ... of height and width, every channel.
        const src = g.nodes[n.inputs[0]];
        const ok = src.shape.length === 3 && s.begin.every((b) => b === 0) && s.step[2] === 1 && s.end[2] === src.shape[2];
        if (!ok) unsupported(n, 'other than the stride of a pooling');
        steps.push({ kind: 'stride', node: n.id, name: n.name, input: val(n.inputs[0]), sh: s.step[0], sw: s.step[1], H: n.shape[0], W: n.shape[1] });
        break;
      }
      case 'concat': {
        if (n.shape.length !== 3 || s.axis !== 2) unsupported(n, 'other than along the channels of images');
        steps.push({ kind: 'concat', node: n.id, name: n.name, inputs: n.inputs.map(val) });
        break;
      }
      case 'pad': unsupported(n, s.mode === 'edge' ? '(the padding of a max pooling)' : '');
      case 'add': steps.push({ kind: 'add', node: n.id, name: n.name, inputs: n.inputs.map(val) }); break;
      default: unsupported(n);
    }
    giveWanted(n);
  }
  if (g.nodes[g.output].shape.length !== 1) unsupported(g.nodes[g.output], 'as the output (the output must be a flat vector)');
  return { steps, output: val(g.output), inputShape: g.inputShape, outputDim: size(g.nodes[g.output].shape) };
}

/**
 * Where values live. 'flat': one ciphertext, element f at position f, periodic with `period`.
 * 'grid': element (y, x) of a channel at position y*sy + x*sx of its block (the input image's
 * row-major grid, strided by the convolutions and pools so far); other positions hold junk that no
 * later weight reads. A block is `period` positions. With blocks = 1 (batch packing) each channel
 * has its own ciphertext and positions repeat with `period`. With blocks = K > 1 (channel packing,
 * one sample: Lee et al.'s multiplexed packing, ICML 2022, without the stride interleaving) K
 * channels sit side by side in one ciphertext of K * period slots, channel c in block c mod K of
 * ciphertext floor(c / K); fewer channels than blocks repeat (block b holds channel b mod C).
 */
type GridLayout = { kind: 'grid'; C: number; H: number; W: number; sy: number; sx: number; period: number; blocks: number };
/**
 * A flat value: element f at position f, periodic with `period`. With `mix` (the program's input,
 * one sample, read by a dense layer alone) R permuted copies fill R * period positions instead:
 * position p holds element mixIndex(p), and nothing is periodic below R * period.
 */
type FlatLayout = { kind: 'flat'; period: number; dim: number; mix?: { R: number; K: number } };
type Layout = FlatLayout | GridLayout;
interface Value<C> {
  cts: C[];
  layout: Layout;
  /** Pending factor (1/p^2 of pools) for the next linear step. */
  factor: number;
  /** Pending per-channel signs (channel packing's signed squares) for the next linear step. */
  signs?: Float64Array;
  /**
   * Pending per-channel factors (a max tree's sums, TreeStep 'carry'; a value scaled for the tree
   * that reads it): the true value is the held one times this, as for `factor`.
   */
  scales?: Float64Array;
}

/** A value's pending factor on grid channel c (or on input feature f of a flat value). */
const factorOf = (x: Value<unknown>, c: number) => x.factor * (x.signs?.[c] ?? 1) * (x.scales?.[c] ?? 1);

/** The dense layer that alone reads the program's input (null: none, or not alone). */
function inputDense(p: Program): DenseStep | null {
  const readers = p.steps.filter((s) => stepInputs(s).includes(0));
  return readers.length === 1 && readers[0].kind === 'dense' ? readers[0] : null;
}

/**
 * The input's layout. blocks > 1 (latency packing, one sample): R = blocks permuted copies of a
 * flat input if a dense layer alone reads it (mixIndex), else `blocks` channel blocks of a grid.
 */
export function inputLayout(p: Program, blocks = 1): Layout {
  const shape = p.inputShape;
  const dense = blocks > 1 ? inputDense(p) : null;
  if (dense) {
    if (pow2(dense.m) % blocks) throw new Error(`${blocks} input copies for ${dense.name}'s ${pow2(dense.m)} outputs`);
    return { kind: 'flat', period: pow2(size(shape)), dim: size(shape), mix: { R: blocks, K: pow2(dense.m) / blocks } };
  }
  if (shape.length === 3) return { kind: 'grid', C: shape[2], H: shape[0], W: shape[1], sy: shape[1], sx: 1, period: pow2(shape[0] * shape[1]), blocks };
  return { kind: 'flat', period: pow2(size(shape)), dim: size(shape) };
}

/** Ciphertexts a grid value takes. */
const gridCts = (l: GridLayout) => (l.C <= l.blocks ? 1 : Math.ceil(l.C / l.blocks));

/** The channel block b of ciphertext i holds (-1: none). */
function channelAt(l: GridLayout, i: number, b: number): number {
  if (l.C <= l.blocks) return i === 0 ? b % l.C : -1;
  const c = i * l.blocks + b;
  return c < l.C ? c : -1;
}

/** Input (flat index in Keras order) -> [ciphertext, position] for a value's layout (a repeated channel: its first block). */
function placeOf(l: Layout, f: number): [number, number] {
  if (l.kind === 'flat') return [0, f];
  const c = f % l.C;
  const yx = Math.floor(f / l.C);
  const [i, b] = l.C <= l.blocks ? [0, c] : [Math.floor(c / l.blocks), c % l.blocks];
  return [i, b * l.period + Math.floor(yx / l.W) * l.sy + (yx % l.W) * l.sx];
}

/** The operations linear steps need beyond the polynomial evaluator's. */
interface LinearOps<C> {
  rotate(c: C, positions: number): C;
  /** Multiply by a plaintext vector (per position, periodic), encoded at encScale, NO rescale. */
  mulVecNoRescale(c: C, v: Float64Array, encScale: number, key?: string): C;
  addRaw(a: C, b: C): C;
  /** acc + b, reusing acc's storage where the backend can (acc is not used afterwards). */
  addInto(acc: C, b: C): C;
  rescale(c: C): C;
  addVec(c: C, v: Float64Array): C;
  free(c: C): void;
}

const TARGET_SCALE = 2 ** 40;

/**
 * Per ciphertext of x, the scale to encode a linear layer's weights at so that every product
 * lands exactly on 2^40 q_l, whatever scale that ciphertext has: channels concatenated from
 * branches whose polynomials left scales a few parts per million apart add up exactly.
 */
function encScales<C>(be: CkksBackend<C>, x: Value<C>): number[] {
  const l = be.level(x.cts[0]);
  if (x.cts.some((c) => be.level(c) !== l)) throw new Error('a linear layer\'s input ciphertexts are at different levels');
  return x.cts.map((c) => (TARGET_SCALE * be.prime(l)) / be.scale(c));
}

/** sum + term, in place, freeing the term at once (ciphertexts are megabytes each); null: no sum yet. */
function accumulate<C>(ops: LinearOps<C>, sum: C | null, term: C): C {
  if (sum === null) return term;
  const r = ops.addInto(sum, term);
  ops.free(term);
  return r;
}

/** The grid a valid convolution leaves: strides stretch the grid instead of moving data. */
function convOutLayout(L: GridLayout, s: ConvStep, blocks: number): GridLayout {
  return { kind: 'grid', C: s.cout, H: Math.floor((L.H - s.kh) / s.strides[0]) + 1, W: Math.floor((L.W - s.kw) / s.strides[1]) + 1,
    sy: L.sy * s.strides[0], sx: L.sx * s.strides[1], period: L.period, blocks };
}

/** A slot vector of a channel-packed ciphertext i: every position of block b holds f(channel of b) (0 where no channel). */
function perBlock(L: GridLayout, i: number, f: (channel: number) => number): Float64Array {
  const v = new Float64Array(L.blocks * L.period);
  for (let b = 0; b < L.blocks; b++) { const ch = channelAt(L, i, b); if (ch >= 0) v.fill(f(ch), b * L.period, (b + 1) * L.period); }
  return v;
}

/** Per-slot polynomials of channel-packed ciphertext i: block b uses its channel's (an empty block channel 0's: junk no one reads). */
function blockLanes(p: PolyActivation, L: GridLayout, i: number): PolyInput[] {
  const perChannel = Array.from({ length: L.blocks }, (_, b) => lanePoly(p, Math.max(0, channelAt(L, i, b))));
  return Array.from({ length: L.blocks * L.period }, (_, q) => perChannel[Math.floor(q / L.period)]);
}

/**
 * A valid convolution on channel-packed ciphertexts (blocks > 1): output channel o in block b of
 * ciphertext j gets sum_c sum_dy,dx w[dy,dx,c,o] x_c[q + dy sy + dx sx]. Input channel c reaches
 * block b by rotating its ciphertext by k blocks (k = block of c - b mod K), so
 * out_j = sum_dy rot(sum_(i,k) sum_dx W_(j,dy,i,k,dx) * rot(rot(x_i, k period), dx sx), dy sy),
 * each W a slot vector holding, per block, the weight of the channel that rotation brings there.
 * The baby steps (i, k, dx) are shared by all outputs; a convolution costs one level, as in batch packing.
 */
function packedConv<C>(s: ConvStep, x: Value<C>, be: CkksBackend<C>, ops: LinearOps<C>, tmp: (c: C) => C): Value<C> {
  const L = x.layout as GridLayout;
  const K = L.blocks;
  const outL = convOutLayout(L, s, K);
  const encScale = encScales(be, x);
  // For each output block and input channel, the source (ciphertext i, offset k) with the smallest
  // offset; a repeated channel is read from one block only.
  const terms = new Map<number, { j: number; b: number; c: number; o: number }[]>();
  for (let j = 0; j < gridCts(outL); j++) {
    for (let b = 0; b < K; b++) {
      const o = channelAt(outL, j, b);
      if (o < 0) continue;
      for (let c = 0; c < s.cin; c++) {
        let best = -1;
        for (let i = 0; i < x.cts.length; i++) for (let beta = 0; beta < K; beta++) {
          if (channelAt(L, i, beta) !== c) continue;
          const key = i * K + ((beta - b + K) % K);
          if (best < 0 || key % K < best % K) best = key;
        }
        if (best < 0) throw new Error(`${s.name}: input channel ${c} is in no block`);
        if (!terms.has(best)) terms.set(best, []);
        terms.get(best)!.push({ j, b, c, o });
      }
    }
  }
  const baby = new Map<number, C[]>();
  for (const key of [...terms.keys()].sort((a, b) => a - b)) {
    const i = Math.floor(key / K);
    const k = key % K;
    const base = k === 0 ? x.cts[i] : tmp(ops.rotate(x.cts[i], k * L.period));
    baby.set(key, Array.from({ length: s.kw }, (_, dx) => (dx === 0 ? base : tmp(ops.rotate(base, dx * L.sx)))));
  }
  const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
  const cts: C[] = [];
  for (let j = 0; j < gridCts(outL); j++) {
    let z: C | null = null;
    for (let dy = 0; dy < s.kh; dy++) {
      let inner: C | null = null;
      for (const [key, list] of terms) {
        const mine = list.filter((t) => t.j === j);
        for (let dx = 0; dx < s.kw && mine.length; dx++) {
          const v = new Float64Array(K * L.period);
          let nz = false;
          for (const t of mine) {
            const w = s.W[((dy * s.kw + dx) * s.cin + t.c) * s.cout + t.o] * factorOf(x, t.c);
            if (w !== 0) { v.fill(w, t.b * L.period, (t.b + 1) * L.period); nz = true; }
          }
          if (nz) inner = acc(inner, ops.mulVecNoRescale(baby.get(key)![dx], v, encScale[Math.floor(key / K)], `${s.node}:${j}:${dy}:${key}:${dx}`));
        }
      }
      if (inner === null) continue;
      let rotated: C = inner;
      if (dy > 0) { rotated = ops.rotate(inner, dy * L.sy); ops.free(inner); }
      z = acc(z, rotated);
    }
    if (z === null) throw new Error(`layer ${s.name}: output ciphertext ${j} has an all-zero kernel`);
    const y = tmp(ops.rescale(z));
    ops.free(z);
    cts.push(ops.addVec(y, perBlock(outL, j, (o) => s.b[o])));
  }
  return { cts, layout: outL, factor: 1 };
}

/**
 * A dense layer's end, after its products z (n positions, output r at every position = r mod
 * mPad): rescale, then add up each output's positions by rotations mPad, 2 mPad, ... < n (after the
 * rescale, so on one prime fewer: rotations commute with it), plus the bias. Periodic with mPad.
 */
function finishDense<C>(s: DenseStep, z: C, n: number, ops: LinearOps<C>, tmp: (c: C) => C): Value<C> {
  const mPad = pow2(s.m);
  let y = ops.rescale(z);
  ops.free(z);
  for (let t = mPad; t < n; t *= 2) y = accumulate(ops, y, ops.rotate(y, t));
  tmp(y);
  const bias = new Float64Array(mPad);
  bias.set(s.b.subarray(0, s.m));
  return { cts: [ops.addVec(y, bias)], layout: { kind: 'flat', period: mPad, dim: s.m }, factor: 1 };
}

/**
 * The input element position p of an input-copies layout holds (mPad = K R outputs of the dense
 * layer reading it, n = period inputs, R copies). The hybrid diagonal method needs mPad diagonals
 * when the input is one periodic copy; with R copies side by side it needs K = mPad / R: position p
 * holds input K (floor(p / mPad) mod n/K) + p mod K, so that the positions s = r (mod mPad) of
 * output r, each reading p = s + k for k < K, meet every input exactly once (for fixed k the copy
 * index floor(p / mPad) only shifts, mod n/K, by whether r + k passes mPad). The sum over those
 * positions (finishDense) leaves y periodic with mPad, as every later step expects; the client lays
 * the copies out when it encrypts (packSamples). The MLP's 784 -> 128 at N=16384 (R = 8): 16
 * products and 12 rotations instead of 128 and 25.
 */
const mixIndex = (p: number, K: number, mPad: number, n: number) => K * (Math.floor(p / mPad) % (n / K)) + (p % K);

/** Whether a per-channel activation's squares (cost/fold.ts) have both signs: the evaluator's test (sharedSign). */
function mixedSquareSigns(p: PolyActivation): boolean {
  return sharedSign(lanesOf(p).map((l) => squareLane(l)!)) === null;
}

/**
 * Signed squares sign_c u^2 + offset_c on channel-packed ciphertexts whose channels' signs differ:
 * one ciphertext cannot be negated per block, so each block gets u^2 + sign_c (offset_c - shift_c)
 * and sign_c stays pending for the next linear step, which multiplies its weights by it (the
 * issue's "the sign folds into the next linear layer"). Exact: sign_c^2 = 1. `shift_c` is the
 * mean-shift correction the batch path subtracts after the polynomial.
 */
function packedSignedSquares<C>(s: PolyStep, x: Value<C>, L: GridLayout, be: CkksBackend<C>, ops: LinearOps<C>): Value<C> {
  if (!s.fold.intoPrevious) throw new Error(`${s.name}: a signed square on packed channels needs its input map folded`);
  const lanes = lanesOf(s.poly);
  const sq = lanes.map((l) => squareLane(l)!);
  const off = s.poly.channelOffset;
  const cts = x.cts.map((u, i) => {
    const u2 = be.mul(u, u);
    const r = ops.addVec(u2, perBlock(L, i, (ch) => sq[ch].sign * (sq[ch].offset - (off?.[ch] ?? 0))));
    ops.free(u2);
    return r;
  });
  return { cts, layout: L, factor: 1, signs: Float64Array.from(sq, (q) => q.sign) };
}

/** Per position of ciphertext c of a layout, the output factor of its channel (evalFoldedCkks's post). */
function lanePost(f: Float64Array, L: Layout, c: number): Float64Array {
  if (L.kind === 'flat') return Float64Array.from({ length: L.period }, (_, q) => f[q % f.length] ?? 1);
  if (L.blocks > 1) return perBlock(L, c, (ch) => f[ch]);
  return Float64Array.of(f[c]);
}

/** A polynomial step on each ciphertext of x (per-channel polynomials as lanes where channels share one), with the mean-shift correction. */
function polyValue<C>(s: PolyStep, x: Value<C>, be: CkksBackend<C>, ops: LinearOps<C>, tmp: (c: C) => C): Value<C> {
  // Per-channel polynomials: one per ciphertext (grid), or one per position (flat; padding
  // positions hold junk no later weight reads, and get the zero polynomial).
  const L = x.layout;
  const cts = x.cts.map((ct, c) => {
    // Coefficient vectors are the same plaintexts in every run: cached by their place in the
    // evaluation (the backend's key adds the level and scale).
    let call = 0;
    const vec: VecOps<C> = {
      mulVec: (u, v, encScale) => { const y = ops.mulVecNoRescale(u, v, encScale, `${s.node}:${c}:${call++}`); const r = ops.rescale(y); ops.free(y); return r; },
      addVec: (u, v) => ops.addVec(u, v),
    };
    // Output scaled for a max tree (outScale): a series' coefficients, a form's post-factor.
    const C = L.kind === 'grid' ? L.C : s.poly.channels?.coeffs.length ?? 1;
    const poly = s.outScale && s.fold.form === 'series' ? scaledPoly(s.poly, C, s.outScale, new Float64Array(C).fill(1)) : s.poly;
    const lanes = !poly.channels ? poly : L.kind === 'flat' ? channelLanes(poly, L.period) : L.blocks > 1 ? blockLanes(poly, L, c) : lanePoly(poly, c);
    const post = s.outScale && s.fold.form !== 'series' ? lanePost(s.outScale, L, c) : undefined;
    const y = s.fold.form === 'series' ? evalPolyCkks(be, ct, lanes, s.plan, s.fold.intoPrevious, vec) : evalFoldedCkks(be, ct, lanes, s.fold, vec, post);
    const off = poly.channelOffset && s.outScale && s.fold.form !== 'series' ? Float32Array.from(poly.channelOffset, (v, ch) => v * s.outScale![ch]) : poly.channelOffset;
    if (!off) return y;
    tmp(y);
    // Mean-shift correction: a per-channel constant (grid), a per-block vector (channel packing) or a per-position vector (flat).
    if (L.kind === 'grid' && L.blocks === 1) return be.addConst(y, -off[c]);
    if (L.kind === 'grid') return ops.addVec(y, perBlock(L, c, (ch) => -off[ch]));
    const v = new Float64Array(L.period);
    for (let q = 0; q < v.length; q++) v[q] = -(off[q % off.length] ?? 0);
    return ops.addVec(y, v);
  });
  return { cts, layout: x.layout, factor: 1 };
}

/**
 * Branch c of an Add, brought down to `level` at `scale`. A polynomial's output scale follows the
 * chain's primes while a linear layer's is 2^40 by construction, so a residual branch can differ
 * from the other by a few parts per million (the dense ResNet example: 2^40 vs 2^40.0000046). A
 * branch above the level takes its last step down as a product with 1 encoded at q s / s_c and a
 * rescale by q instead of a bare switch: the same level, and exactly the scale s.
 */
function addend<C>(be: CkksBackend<C>, c: C, level: number, scale: number, tmp: (c: C) => C): C {
  if (be.level(c) === level || Math.abs(be.scale(c) / scale - 1) <= 1e-12) return be.modSwitchTo(c, level);
  const above = be.modSwitchTo(c, level + 1);
  if (above !== c) tmp(above);
  return be.mulConst(above, 1, (be.prime(level + 1) * scale) / be.scale(above));
}

/**
 * The polynomial p with every channel's coefficients (and mean-shift offset) times `out[c]`, and
 * its interval times `x[c]`: on x[c] t it computes out[c] p(t). Per channel even when p is one
 * per layer, since the factors differ by channel.
 */
function scaledPoly(p: PolyActivation, C: number, out: Float64Array, x: Float64Array): PolyActivation {
  const lanes = lanesOf(p);
  const lane = (c: number) => lanes[p.channels ? c : 0];
  return {
    coeffs: [0], a: -1, b: 1,
    channels: { intervals: Array.from({ length: C }, (_, c) => ({ a: lane(c).a * x[c], b: lane(c).b * x[c] })),
      coeffs: Array.from({ length: C }, (_, c) => Array.from(lane(c).coeffs, (v) => v * out[c])) },
    channelOffset: p.channelOffset ? Float32Array.from(p.channelOffset, (v, c) => v * out[c]) : undefined,
  };
}

/**
 * One step of a max tree (TreeStep) on every ciphertext of a grid value: the difference and the
 * sum of each position and the one `offset` further along the axis (one rotation), |x| of the
 * difference by its form, the sum scaled (in parallel) and both added, at the target's factor.
 * Levels: the form's (cost/fold.ts), the sum's scaling hidden under them unless the |x| is a constant.
 */
function treeValue<C>(s: TreeStep, x: Value<C>, be: CkksBackend<C>, ops: LinearOps<C>, tmp: (c: C) => C): Value<C> {
  const L = x.layout;
  if (L.kind !== 'grid') throw new Error(`${s.name}: a max tree on a flat value`);
  if (x.signs) throw new Error(`${s.name}: pending signs before a max tree`);
  // F: what the held value is, per channel, times the true one.
  const F = Float64Array.from({ length: L.C }, (_, c) => 1 / factorOf(x, c));
  if (s.want && s.want.W.some((w, c) => Math.abs(w / F[c] - 1) > 1e-9)) throw new Error(`${s.name}: the value before does not carry the factor the plan gave it`);
  const T = s.target === 'carry' ? F.map((f) => 2 * f) : s.target.T;
  const half = T.map((t) => t / 2);
  const r = T.map((t, c) => t / (2 * F[c]));
  const rescale = (s.fold.form === 'constant' && !s.fold.intoPrevious) || r.some((v) => Math.abs(v - 1) > 1e-12);
  const shift = s.offset * (s.axis === 1 ? L.sx : L.sy);
  const outL: GridLayout = { ...L, H: s.axis === 0 ? L.H - s.offset : L.H, W: s.axis === 1 ? L.W - s.offset : L.W };
  const lanes = lanesOf(s.poly);
  const lane = (c: number) => lanes[s.poly.channels ? c : 0];
  const off = (c: number) => s.poly.channelOffset?.[c] ?? 0;
  /** A plaintext multiplication by a per-channel vector, rescaled (to `scale` when given), then a per-channel addition. */
  const affine = (c: C, i: number, mul: (ch: number) => number, add: (ch: number) => number, key: string, scale = TARGET_SCALE): C => {
    const enc = (scale * be.prime(be.level(c))) / be.scale(c);
    const m = ops.mulVecNoRescale(c, perBlock(L, i, mul), enc, `${s.node}:${i}:${key}`);
    const y = tmp(ops.rescale(m));
    ops.free(m);
    return tmp(ops.addVec(y, perBlock(L, i, add)));
  };
  const cts = x.cts.map((xi, i) => {
    const moved = tmp(ops.rotate(xi, shift));
    let d = tmp(be.sub(xi, moved));
    if (s.want) { const G = s.want.G; d = tmp(ops.addVec(d, perBlock(L, i, (c) => G[c]))); }
    // (T / 2) p(d), less (T / 2) times the mean-shift offset; null for a constant.
    let a: C | null = null;
    if (s.fold.form === 'series') {
      const q = scaledPoly(s.poly, L.C, half, s.want ? new Float64Array(L.C).fill(1) : F);
      const ls = L.blocks > 1 ? blockLanes(q, L, i) : lanePoly(q, channelAt(L, i, 0));
      let call = 0;
      const vec: VecOps<C> = {
        mulVec: (u, v, encScale) => { const y = ops.mulVecNoRescale(u, v, encScale, `${s.node}:${i}:p${call++}`); const res = ops.rescale(y); ops.free(y); return res; },
        addVec: (u, v) => ops.addVec(u, v),
      };
      a = tmp(evalPolyCkks(be, d, ls, s.plan, !!s.want, vec));
      if (q.channelOffset) a = tmp(ops.addVec(a, perBlock(L, i, (c) => -q.channelOffset![c])));
    } else if (s.fold.form === 'square') {
      const sq = (c: number) => squareLane(lane(c))!;
      const signs = new Set(Array.from({ length: L.blocks }, (_, b) => channelAt(L, i, b)).filter((c) => c >= 0).map((c) => sq(c).sign));
      if (signs.size > 1) throw new Error(`${s.name}: squares of both signs on one ciphertext`);
      const u = s.want ? d : affine(d, i, (c) => (Math.sqrt(half[c]) * sq(c).mul) / F[c], (c) => Math.sqrt(half[c]) * sq(c).add, 'u');
      let y = tmp(be.mul(u, u));
      if (signs.has(-1)) y = tmp(be.negate(y));
      a = tmp(ops.addVec(y, perBlock(L, i, (c) => half[c] * (sq(c).offset - off(c)))));
    } else if (s.fold.form === 'affine') {
      a = affine(d, i, (c) => (half[c] * affineLane(lane(c)).mul) / F[c], (c) => half[c] * (affineLane(lane(c)).add - off(c)), 'y');
    }
    let sum = tmp(be.add(xi, moved));
    // The sum at the target's factor, landing on the |x|'s scale when both end one level down.
    if (rescale) sum = affine(sum, i, (c) => r[c], () => 0, 'r', a !== null && be.level(a) === be.level(sum) - 1 ? be.scale(a) : TARGET_SCALE);
    let m = sum;
    if (a !== null) {
      const lvl = Math.min(be.level(a), be.level(sum));
      const scale = be.scale(be.level(a) === lvl ? a : sum);
      m = tmp(be.add(tmp(addend(be, sum, lvl, scale, tmp)), tmp(addend(be, a, lvl, scale, tmp))));
    }
    const S = s.target === 'carry' ? null : s.target.S;
    const k = (c: number) => (S ? S[c] : 0) + (s.fold.form === 'constant' ? half[c] * (lane(c).coeffs[0] - off(c)) : 0);
    return ops.addVec(m, perBlock(L, i, k));
  });
  return { cts, layout: outL, factor: 1, scales: s.target === 'carry' || s.target.kind === 'factor' ? T.map((t) => 1 / t) : undefined };
}

/** Channel ciphertexts of several values side by side (batch packing), brought to one level and scale. */
function concatValues<C>(s: ConcatStep, xs: Value<C>[], be: CkksBackend<C>): Value<C> {
  const ls = xs.map((x) => x.layout);
  if (ls.some((l) => l.kind !== 'grid' || l.blocks !== 1)) throw new Error(`${s.name}: concatenation needs one ciphertext per channel`);
  if (xs.some((x) => x.factor !== 1 || x.signs || x.scales)) throw new Error(`${s.name}: pending factors at a concatenation`);
  const all = xs.flatMap((x) => x.cts);
  const lvl = Math.min(...all.map((c) => be.level(c)));
  // One level for all; the scales stay each ciphertext's own (a linear layer reads them: encScales).
  const cts = all.map((c) => be.modSwitchTo(c, lvl));
  const L0 = ls[0] as GridLayout;
  return { cts, factor: 1, layout: { ...L0, C: ls.reduce((t, l) => t + (l as GridLayout).C, 0) } };
}

function runProgram<C>(p: Program, be: CkksBackend<C>, ops: LinearOps<C>, inputs: C[], onStep?: (name: string, seconds: number) => void, blocks = 1,
  onValue?: (node: number, v: Value<C>) => void): Value<C> {
  const vals = new Map<number, Value<C>>([[0, { cts: inputs, layout: inputLayout(p, blocks), factor: 1 }]]);
  const get = (id: number) => { const v = vals.get(id); if (!v) throw new Error(`value ${id} missing`); return v; };
  for (const [si, s] of p.steps.entries()) {
    const t0 = Date.now();
    const temps: C[] = [];
    const tmp = (c: C) => { temps.push(c); return c; };
    let out: Value<C>;
    if (s.kind === 'dense') {
      // The hybrid diagonal method (Halevi-Shoup; m < n): z = sum_k P_k * rot(x, k) over D
      // diagonals, P_k[q] = W[input at q + k][q mod mPad], then each output's positions summed.
      const x = get(s.input);
      const mPad = pow2(s.m);
      const L = x.layout;
      // For each ciphertext, input index at each position (-1: junk, never read), and n, the
      // positions the diagonals run over. Input copies (mixLayout) hold an input at every position
      // of R n and need D = mPad / R diagonals; otherwise one position per input, D = mPad.
      let n: number;
      let at: Int32Array[];
      let D = mPad;
      if (L.kind === 'flat' && L.mix) {
        const { R, K } = L.mix;
        n = R * L.period;
        D = K;
        at = [Int32Array.from({ length: n }, (_, q) => { const f = mixIndex(q, K, mPad, L.period); return f < s.dIn ? f : -1; })];
      } else {
        const pos = Array.from({ length: s.dIn }, (_, f) => placeOf(L, f));
        n = Math.max(L.period, mPad, pow2(Math.max(...pos.map(([, q]) => q)) + 1));
        at = x.cts.map(() => new Int32Array(n).fill(-1));
        pos.forEach(([c, q], f) => { at[c][q] = f; });
      }
      // Baby steps are per input ciphertext, giant steps shared: with C ciphertexts the rotations
      // are C (g - 1) + D / g - 1, least near g = sqrt(D / C) (16 channels into 64 outputs:
      // g = 2, 47 rotations instead of 123 at g = sqrt(D)), and g Galois keys (giant steps below).
      const rotations = (gg: number) => x.cts.length * (gg - 1) + Math.ceil(D / gg) - 1;
      let g = 1;
      for (let gg = 2; gg <= D; gg *= 2) if (rotations(gg) < rotations(g)) g = gg;
      const encScale = encScales(be, x);
      const baby = x.cts.map((ct) => [ct, ...Array.from({ length: Math.min(g, D) - 1 }, (_, i) => tmp(ops.rotate(ct, i + 1)))]);
      const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
      // Giant steps in Horner form, z = inner_0 + rot(inner_1 + rot(inner_2 + ..., g), g): the same
      // rotations as rot(inner_j, j g) each, all by g, so one Galois key serves them all.
      let z: C | null = null;
      for (let j = Math.ceil(D / g) - 1; j >= 0; j--) {
        if (z !== null) { const r = ops.rotate(z, g); ops.free(z); z = r; }
        let inner: C | null = null;
        for (let c = 0; c < x.cts.length; c++) {
          for (let i = 0; i < g && j * g + i < D; i++) {
            const k = j * g + i;
            // diag_k rotated by -j g, so that the giant rotation by j g lines it up.
            const d = new Float64Array(n);
            let nz = false;
            for (let q = 0; q < n; q++) {
              const idx = (q - j * g + n) % n;
              const row = idx % mPad;
              const f = at[c][(idx + k) % n];
              if (row < s.m && f >= 0) { d[q] = s.W[f * s.m + row] * factorOf(x, x.layout.kind === 'grid' ? f % x.layout.C : f); if (d[q] !== 0) nz = true; }
            }
            if (nz) inner = acc(inner, ops.mulVecNoRescale(baby[c][i], d, encScale[c], `${s.node}:${j}:${c}:${i}`));
          }
        }
        if (inner !== null) z = acc(z, inner);
      }
      if (z === null) throw new Error(`layer ${s.name} has an all-zero kernel`);
      out = finishDense(s, z, n, ops, tmp);
    } else if (s.kind === 'conv' && (get(s.input).layout as GridLayout).blocks > 1) {
      out = packedConv(s, get(s.input), be, ops, tmp);
    } else if (s.kind === 'conv') {
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('conv on a flat value');
      const L = x.layout;
      const encScale = encScales(be, x);
      // Baby steps over kernel columns, shared by every output channel.
      const baby = x.cts.map((ct) => Array.from({ length: s.kw }, (_, dx) => (dx === 0 ? ct : tmp(ops.rotate(ct, dx * L.sx)))));
      const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
      const cts: C[] = [];
      for (let o = 0; o < s.cout; o++) {
        let z: C | null = null;
        for (let dy = 0; dy < s.kh; dy++) {
          let inner: C | null = null;
          for (let c = 0; c < s.cin; c++) for (let dx = 0; dx < s.kw; dx++) {
            const w = s.W[((dy * s.kw + dx) * s.cin + c) * s.cout + o] * factorOf(x, c);
            if (w !== 0) inner = acc(inner, ops.mulVecNoRescale(baby[c][dx], Float64Array.of(w), encScale[c]));
          }
          if (inner === null) continue;
          let rotated: C = inner;
          if (dy > 0) { rotated = ops.rotate(inner, dy * L.sy); ops.free(inner); }
          z = acc(z, rotated);
        }
        if (z === null) throw new Error(`layer ${s.name}: output channel ${o} has an all-zero kernel`);
        const y = ops.rescale(z);
        ops.free(z);
        cts.push(be.addConst(y, s.b[o]));
        ops.free(y);
      }
      out = { cts, factor: 1, layout: convOutLayout(L, s, 1) };
    } else if (s.kind === 'pool') {
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('pool on a flat value');
      const L = x.layout;
      const cts = x.cts.map((ct) => {
        let row = ct;
        for (let b = 1; b < s.p; b++) { const r = ops.rotate(ct, b * L.sx); row = row === ct ? ops.addRaw(ct, r) : ops.addInto(row, r); ops.free(r); }
        let sum = row;
        for (let a = 1; a < s.p; a++) { const r = ops.rotate(row, a * L.sy); sum = sum === row ? ops.addRaw(row, r) : ops.addInto(sum, r); ops.free(r); }
        if (sum !== row && row !== ct) ops.free(row);
        return sum;
      });
      out = { cts, factor: x.factor / (s.p * s.p), signs: x.signs, scales: x.scales, layout: { ...L, H: Math.floor(L.H / s.p), W: Math.floor(L.W / s.p), sy: L.sy * s.p, sx: L.sx * s.p } };
    } else if (s.kind === 'poly') {
      const x = get(s.input);
      if (x.factor !== 1 || x.signs || x.scales) throw new Error('pending pool factor or signs before an activation');
      const L = x.layout;
      out = L.kind === 'grid' && L.blocks > 1 && s.fold.form === 'square' && s.poly.channels && mixedSquareSigns(s.poly)
        ? packedSignedSquares(s, x, L, be, ops) : polyValue(s, x, be, ops, tmp);
    } else if (s.kind === 'tree') {
      out = treeValue(s, get(s.input), be, ops, tmp);
    } else if (s.kind === 'stride') {
      // The same ciphertexts read on a sparser grid: positions 0, s, 2s, ... of each axis.
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('stride on a flat value');
      const L = x.layout;
      out = { ...x, layout: { ...L, H: s.H, W: s.W, sy: L.sy * s.sh, sx: L.sx * s.sw } };
    } else if (s.kind === 'concat') {
      out = concatValues(s, s.inputs.map(get), be);
    } else {
      const xs = s.inputs.map(get);
      if (xs.some((x) => x.signs || x.scales)) throw new Error(`${s.name}: pending signs or factors at an Add`);
      const lvl = Math.min(...xs.map((x) => be.level(x.cts[0])));
      const scale = be.scale(xs.find((x) => be.level(x.cts[0]) === lvl)!.cts[0]);
      const cts = xs[0].cts.map((_, c) => {
        const parts = xs.map((x) => addend(be, x.cts[c], lvl, scale, tmp));
        let acc = parts[0];
        for (const part of parts.slice(1)) acc = tmp(be.add(acc, part));
        parts.forEach((part, i) => { if (part !== xs[i].cts[c]) temps.push(part); });
        return acc;
      });
      const ls = xs.map((x) => x.layout);
      out = { cts, factor: xs[0].factor, layout: ls[0].kind === 'flat' ? { ...ls[0], period: Math.max(...ls.map((q) => q.period)) } : ls[0] };
    }
    if ((s.kind === 'dense' || s.kind === 'conv' || s.kind === 'poly') && s.outScale) out = { ...out, scales: s.outScale.map((w) => 1 / w) };
    vals.set(s.node, out);
    onValue?.(s.node, out);
    // Free values whose last reader has run (never the input, which the caller owns), and
    // temporaries: but no ciphertext a live value still holds (a stride or a concatenation
    // passes its input's ciphertexts on).
    for (const [id] of vals) {
      if (id === 0 || id === p.output || id === s.node) continue;
      if (!p.steps.slice(si + 1).some((t) => stepInputs(t).includes(id))) { temps.push(...vals.get(id)!.cts); vals.delete(id); }
    }
    const held = new Set([...vals.values()].flatMap((v) => v.cts));
    for (const c of new Set(temps)) if (!held.has(c)) ops.free(c);
    onStep?.(s.name, (Date.now() - t0) / 1000);
  }
  return get(p.output);
}

/** Levels the program consumes, by running it on the plaintext simulator (no encryption). */
export function simulateProgram(p: Program, primes: number[], levels: number): { levelsUsed: number; finalScale: number } {
  const r = emulate(p, 1, true, undefined, { primes, levels });
  return { levelsUsed: levels - r.level, finalScale: r.scale };
}

/**
 * Runs the program on plaintext position vectors, tracking levels and scales over `chain` (default:
 * a long chain of 2^40 primes); records rotations and the largest period. A dry run skips the
 * arithmetic on values and only follows layouts, rotations, levels and scales.
 */
export function emulate(p: Program, B: number, dry: boolean, slotsIn?: Float64Array[], chain = { primes: new Array<number>(128).fill(2 ** 40), levels: 100 }, blocks = 1,
  onValue?: (node: number, values: (sample: number) => Float64Array) => void):
  { out: Float64Array; steps: Set<number>; maxPeriod: number; level: number; scale: number } {
  const L0 = inputLayout(p, blocks);
  // A dry run only needs to see layouts and rotations: tiny vectors.
  const S = slotsIn ? slotsIn[0].length : 1;
  const { primes } = chain;
  const sim = new SimBackend(primes);
  const steps = new Set<number>();
  let maxP = L0.period;
  const mk = (v: Float64Array, like: { level: number; scale: number }) => ({ v, level: like.level, scale: like.scale });
  const ops: LinearOps<ReturnType<SimBackend['fresh']>> = {
    rotate: (c, k) => { steps.add(k); return dry ? c : mk(Float64Array.from({ length: S }, (_, i) => c.v[(i + k * B) % S]), c); },
    mulVecNoRescale: (c, v, s) => {
      maxP = Math.max(maxP, v.length);
      return { v: dry ? c.v : c.v.map((x, i) => x * v[Math.floor(i / B) % v.length]), level: c.level, scale: c.scale * s };
    },
    addRaw: (a, b) => (dry ? a : mk(a.v.map((x, i) => x + b.v[i]), a)),
    addInto: (a, b) => (dry ? a : mk(a.v.map((x, i) => x + b.v[i]), a)),
    rescale: (c) => {
      if (c.level < 1) throw new UserError('BUDGET_INFEASIBLE', 'the program runs out of levels', 'lower some degrees');
      return { v: c.v, level: c.level - 1, scale: c.scale / primes[c.level] };
    },
    addVec: (c, v) => { maxP = Math.max(maxP, v.length); return dry ? c : mk(c.v.map((x, i) => x + v[Math.floor(i / B) % v.length]), c); },
    free: () => undefined,
  };
  const n = L0.kind === 'grid' ? gridCts(L0) : 1;
  const ins = slotsIn ?? Array.from({ length: n }, () => new Float64Array(S));
  // A value's elements in the graph's order (channels last) for one sample, its pending factors undone.
  const decode = (v: Value<SimCt>) => (b: number) => {
    const L = v.layout;
    const n = L.kind === 'flat' ? L.dim : L.H * L.W * L.C;
    return Float64Array.from({ length: n }, (_, f) => {
      const [i, q] = placeOf(L, f);
      return v.cts[i].v[(q * B + b) % S] * factorOf(v, L.kind === 'grid' ? f % L.C : f);
    });
  };
  const out = runProgram(p, sim, ops, ins.map((v) => sim.fresh(v, chain.levels, 2 ** 40)), undefined, blocks, onValue ? (node, v) => onValue(node, decode(v)) : undefined).cts[0];
  return { out: out.v, steps, maxPeriod: maxP, level: out.level, scale: out.scale };
}

/**
 * Runs the program on plaintext slot vectors with exactly the packing, rotations and products the
 * encrypted run uses (a functional emulator, no encryption): checks the compiled program against
 * the model before any key is generated, and serves the tests.
 */
export function emulateProgram(p: Program, slotsIn: Float64Array[], B: number, blocks = 1): Float64Array {
  return emulate(p, B, false, slotsIn, undefined, blocks).out;
}

/**
 * Packs samples, one slot vector per input ciphertext. Batch packing (blocks = 1): position-major,
 * slot q*B + b holds sample b's value at position q mod P (P: the input layout's period). Latency
 * packing (blocks > 1, one sample): `blocks` permuted copies of a flat input read by a dense layer
 * (mixIndex), or else channel blocks: block b of ciphertext i holds its channel's grid
 * (`channelAt`), a channel repeated in every block that holds it.
 */
export function packSamples(p: Program, xs: Float32Array, count: number, B: number, slots: number, blocks = 1): Float64Array[] {
  const L = inputLayout(p, blocks);
  const per = size(p.inputShape);
  if (L.kind === 'flat' && L.mix) {
    const { R, K } = L.mix;
    if (count !== 1 || B !== 1 || slots % (R * L.period)) throw new Error('input copies hold one sample in copies that fill the slots');
    const v = new Float64Array(slots);
    for (let q = 0; q < slots; q++) { const f = mixIndex(q % (R * L.period), K, K * R, L.period); if (f < per) v[q] = xs[f]; }
    return [v];
  }
  if (L.kind === 'grid' && blocks > 1) {
    if (count !== 1 || B !== 1 || blocks * L.period !== slots) throw new Error('channel packing holds one sample in blocks that fill the slots');
    const outs = Array.from({ length: gridCts(L) }, () => new Float64Array(slots));
    for (let f = 0; f < per; f++) {
      const pos = placeOf(L, f)[1] % L.period;
      for (let i = 0; i < outs.length; i++) for (let b = 0; b < blocks; b++) if (channelAt(L, i, b) === f % L.C) outs[i][b * L.period + pos] = xs[f];
    }
    return outs;
  }
  const C = L.kind === 'grid' ? L.C : 1;
  const outs = Array.from({ length: C }, () => new Float64Array(slots));
  for (let f = 0; f < per; f++) {
    const [c, pos] = placeOf(L, f);
    for (let q = pos; q < slots / B; q += L.period) for (let b = 0; b < count; b++) outs[c][q * B + b] = xs[b * per + f];
  }
  return outs;
}

/**
 * Why the program cannot run channel-packed (null: it can): the input must be an image grid, and
 * channels whose squares have different signs share a ciphertext, so their signs must be taken by
 * the linear step that reads them.
 */
export function channelPackingObstacle(p: Program): string | null {
  if (p.inputShape.length !== 3) return 'the input is a flat vector (one sample already fills the slots it needs)';
  if (!p.steps.some((s) => s.kind === 'conv')) return 'no convolution reads the image grid (its first layer flattens it)';
  if (p.steps.some((s) => s.kind === 'concat')) return 'channels are concatenated (a concatenation runs with one ciphertext per channel)';
  // Signed squares leave their signs to the next linear step (packedSignedSquares): through pools only.
  for (const s of p.steps) {
    if (s.kind !== 'poly' || s.fold.form !== 'square' || !s.poly.channels || !mixedSquareSigns(s.poly)) continue;
    if (!s.fold.intoPrevious) return `${s.name}'s channels square with both signs and its input map is not folded`;
    let readers = p.steps.filter((t) => stepInputs(t).includes(s.node));
    while (readers.length === 1 && readers[0].kind === 'pool') { const pool = readers[0]; readers = p.steps.filter((t) => stepInputs(t).includes(pool.node)); }
    if (s.node === p.output || readers.length !== 1 || (readers[0].kind !== 'conv' && readers[0].kind !== 'dense')) {
      return `${s.name}'s channels square with both signs, and only a convolution or dense layer after it can take the signs`;
    }
  }
  return null;
}

/**
 * How latency packing lays out one sample in `slots`: permuted copies of a flat input that a dense
 * layer alone reads (`copies`, mixIndex), or else channel blocks of an image grid; `blocks` 1 and
 * `why` when neither applies.
 */
export function latencyPacking(p: Program, slots: number): { blocks: number; copies: boolean; why: string | null } {
  const dense = inputDense(p);
  const n = pow2(size(p.inputShape));
  if (dense) {
    const R = slots % n === 0 ? Math.min(slots / n, pow2(dense.m)) : 1;
    return R > 1 ? { blocks: R, copies: true, why: null } : { blocks: 1, copies: false, why: `one copy of the input fills the ${slots} slots` };
  }
  const obstacle = channelPackingObstacle(p);
  if (obstacle) return { blocks: 1, copies: false, why: obstacle };
  const L = inputLayout(p);
  if (slots % L.period) return { blocks: 1, copies: false, why: `${slots} slots do not hold whole channels of ${L.period} positions` };
  return { blocks: slots / L.period, copies: false, why: null };
}

/** Levels the program needs: linear steps 1, pools 0, polynomials their form's depth (+1 if the input map is not folded). */
export function programDepth(p: Program): number {
  const depth = new Map<number, number>([[0, 0]]);
  for (const s of p.steps) {
    const d = Math.max(...stepInputs(s).map((i) => depth.get(i) ?? 0));
    depth.set(s.node, d + (s.kind === 'dense' || s.kind === 'conv' ? 1 : s.kind === 'poly' || s.kind === 'tree' ? polyStepDepth(s) : 0));
  }
  return depth.get(p.output) ?? 0;
}

function polyStepDepth(s: PolyStep | TreeStep): number {
  const { polyDepth, affineLevel } = foldLevels(s.fold, s.plan.depth);
  return polyDepth + affineLevel;
}

/** Samples packed for one run of the program. */
export interface Batch { start: number; cnt: number; packed: Float64Array[] }
/** Everything a thread needs to run batches: plain data, so that it crosses to a worker as it is. */
export interface BatchJob { program: Program; params: CkksParams; galoisSteps: number[]; B: number; blocks: number; batches: Batch[]; plainCacheBytes?: number }
/** One batch's decrypted output slots and timings. */
export interface BatchResult {
  start: number; cnt: number; out: Float64Array; seconds: number; levelsUsed: number; layerSeconds: Record<string, number>;
  /** The thread's first batch, which also encodes the weights' plaintexts the later ones reuse. */
  first: boolean;
}
export interface BatchRun { keygenSeconds: number; keyBytes: EncryptedModelReport['keyBytes']; primes: number[] }

/** Runs batches on this thread with keys of its own; `onBatch` sees each batch as it finishes. */
export async function runBatches(job: BatchJob, onBatch: (r: BatchResult) => void, signal?: AbortSignal): Promise<BatchRun> {
  const { program, params, galoisSteps, B, blocks } = job;
  const tk = Date.now();
  const be = await SealBackend.create(params, galoisSteps);
  if (job.plainCacheBytes !== undefined) be.plainCacheLimit = job.plainCacheBytes;
  const keygenSeconds = (Date.now() - tk) / 1000;
  try {
    const ops: LinearOps<Ct> = {
      rotate: (c, posSteps) => be.rotate(c, posSteps * B),
      // Weights (keyed) are the same plaintexts for every batch: encoded once, while memory allows.
      mulVecNoRescale: (c, v, s, key) => (key ? be.mulVectorCached(c, () => spread(v, B, be.slots), s, key) : be.mulVector(c, spread(v, B, be.slots), s)),
      addRaw: (a, b) => be.addRaw(a, b),
      addInto: (a, b) => be.addInto(a, b),
      rescale: (c) => be.rescale(c),
      addVec: (c, v) => be.addVector(c, spread(v, B, be.slots)),
      free: (c) => be.free(c),
    };
    for (const [bi, batch] of job.batches.entries()) {
      if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
      const layerSeconds: Record<string, number> = {};
      const t0 = Date.now();
      const cts = batch.packed.map((v) => be.encrypt(v));
      const out = runProgram(program, be, ops, cts, (name, sec) => { layerSeconds[name] = (layerSeconds[name] ?? 0) + sec; }, blocks).cts[0];
      const seconds = (Date.now() - t0) / 1000;
      const levelsUsed = params.levels - be.level(out);
      const dec = be.decrypt(out);
      cts.forEach((c) => be.free(c));
      be.free(out);
      onBatch({ start: batch.start, cnt: batch.cnt, out: dec, seconds, levelsUsed, layerSeconds, first: bi === 0 });
    }
    return { keygenSeconds, keyBytes: be.keySizes, primes: Array.from({ length: params.levels + 1 }, (_, l) => be.prime(l)) };
  } finally {
    be.dispose();
  }
}

/** Spreads a per-position vector (periodic in its length) over slots: slot q*B+b = v[q mod len]. */
function spread(v: Float64Array, B: number, slots: number): Float64Array {
  const out = new Float64Array(slots);
  for (let q = 0; q < slots / B; q++) { const x = v[q % v.length]; for (let b = 0; b < B; b++) out[q * B + b] = x; }
  return out;
}
