/**
 * The CKKS program of a whole model, compiled from the graph and the chosen polynomials: a list
 * of steps (dense, convolution, pooling, polynomial, Add, max tree, stride, concatenation) with
 * every fold applied to the weights. The steps only (compile.ts compiles them); lower.ts turns them into CKKS
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
import type { Graph, GraphNode } from '../model/graph';
import { Fold, foldLevels, lanesOf, planFold, sharedSign, squareLane } from '../cost/fold';
import type { Report } from '../report';
import { polysFromReport } from '../report';
import type { PolyPlan } from '../numerics/bsgs';

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
