/**
 * he-approx's own model IR. Every model format (TensorFlow.js layers, Keras .h5/.keras, ONNX; see
 * formats/) becomes a list of nodes in topological order, channels last, with every
 * non-polynomial activation in its own `activation` node (a Dense/Conv2D with `activation:
 * 'relu'` becomes a linear node followed by an activation node; ONNX's Erf-based GELU or
 * x*Sigmoid(x) becomes one activation node), so that the data reaching each activation can be
 * captured and each activation can be replaced by a polynomial. Plain data: the executor, the
 * profiler, the exporters and the HE compiler all read the same graph and none of them knows
 * which format it came from.
 */
import { ActivationSpec } from '../numerics/activations';

/** 'same' as TensorFlow computes it, or explicit [[top, bottom], [left, right]] (ONNX pads). */
export type Padding = 'valid' | 'same' | [[number, number], [number, number]];

/**
 * Where a parameter's values sit in the model file, when it was read from one constant there (ONNX
 * initializers): value[i] = scale * constant[index[i]]. The exporter writes fine-tuned values back
 * through it; formats whose weights the graph shares by reference (tfjs, Keras) need none.
 */
export interface ParamSource {
  name: string;
  index: Int32Array;
  scale: number;
}

/** A batch normalisation's four constants in the model file, and its epsilon. */
export interface BatchNormSource {
  gamma: string;
  beta: string;
  mean: string;
  variance: string;
  eps: number;
}

export type Op =
  | { op: 'input' }
  | {
      op: 'dense';
      units: number;
      kernel: Float32Array;
      kernelShape: [number, number];
      bias: Float32Array | null;
      kernelSource?: ParamSource;
      biasSource?: ParamSource;
    }
  /** Kernel [kh, kw, cin / groups, filters]; groups > 1 is a grouped (groups = cin: depthwise) convolution. */
  | {
      op: 'conv2d';
      filters: number;
      kernel: Float32Array;
      kernelShape: [number, number, number, number];
      bias: Float32Array | null;
      strides: [number, number];
      padding: Padding;
      dilation: [number, number];
      groups?: number;
      kernelSource?: ParamSource;
      biasSource?: ParamSource;
    }
  | { op: 'avgpool'; pool: [number, number]; strides: [number, number]; padding: Padding }
  | { op: 'maxpool'; pool: [number, number]; strides: [number, number]; padding: Padding }
  | { op: 'globalavgpool' }
  | { op: 'globalmaxpool' }
  /**
   * One step of a max tree along a spatial axis (0: height, 1: width; see maxTree.ts):
   * d[q] = x[q] - x[q + offset], the axis shortened by `offset`.
   */
  | { op: 'pairdiff'; axis: 0 | 1; offset: number }
  /**
   * max(x[q], x[q + offset]) = (x[q] + x[q + offset]) / 2 + a[q] / 2 with inputs [x, a], a = |d|
   * (or the polynomial that stands in for it), the axis shortened by `offset`.
   */
  | { op: 'pairmax'; axis: 0 | 1; offset: number }
  | { op: 'flatten' }
  | { op: 'reshape'; target: number[] }
  /** BatchNormalization in inference form: y = x * scale + shift on the last axis. */
  | { op: 'batchnorm'; scale: Float32Array; shift: Float32Array; source?: BatchNormSource }
  | { op: 'add' }
  | { op: 'identity' }
  /** Per-sample axes: output axis i is input axis perm[i]. */
  | { op: 'transpose'; perm: number[] }
  /**
   * Padding of each per-sample axis by [before, after]: with `value`, or with `mode` 'edge' each
   * border value repeated (a max pooling's padding: a max over a window is unchanged by copies
   * of a value already in it).
   */
  | { op: 'pad'; pads: [number, number][]; value: number; mode?: 'edge' }
  /** Strided slice of each per-sample axis: begin (inclusive), end (exclusive), positive step. */
  | { op: 'slice'; begin: number[]; end: number[]; step: number[] }
  /** Concatenation along a per-sample axis. */
  | { op: 'concat'; axis: number }
  /** `maxTree`: the |x| of one step of a max pooling's tree (maxTree.ts). */
  | { op: 'activation'; act: ActivationSpec; maxTree?: MaxTreeStep }
  | { op: 'softmax' };

/** Where an |x| sits in the max tree that stands in for a max pooling layer (maxTree.ts). */
export interface MaxTreeStep {
  /** Name of the max pooling node the tree replaces. */
  pool: string;
  /** Spatial axis (0: height, 1: width), the distance between the two operands, and the step's place in the tree (from 1). */
  axis: 0 | 1;
  offset: number;
  step: number;
}

export interface GraphNode {
  /** Index in `Graph.nodes` (topological order). */
  id: number;
  /** Unique node name: the layer name, or `<layer>/activation` for a split fused activation. */
  name: string;
  /** Name of the model.json layer this node comes from (for editor ranges and export). */
  layer: string;
  /** Keras class name of that layer. */
  className: string;
  inputs: number[];
  /** Per-sample output shape (no batch dimension). */
  shape: number[];
  spec: Op;
}

export interface Graph {
  name: string;
  nodes: GraphNode[];
  /** Node id of the single input and the single output (logits; a final softmax is dropped). */
  input: number;
  output: number;
  /** Per-sample input shape. */
  inputShape: number[];
  /** Notes the loader made (e.g. a dropped final softmax). */
  notes: string[];
  /** True if the final softmax was dropped: outputs are logits. */
  droppedFinalSoftmax: boolean;
  /**
   * How the model itself lays out its input, when that differs from `inputShape` (an ONNX
   * model's NCHW): its per-sample shape, and perm with inputShape[i] = modelShape[perm[i]].
   * Data files may come in either layout; flat rows are read in the model's own order.
   */
  inputLayout?: { name: string; modelShape: number[]; perm: number[] };
}

export const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** Explicit [[top, bottom], [left, right]] pads of a window (convolution, pooling), 'same' computed as TensorFlow does. */
export function explicitPads(
  pad: Padding,
  H: number,
  W: number,
  kh: number,
  kw: number,
  sh: number,
  sw: number,
): [[number, number], [number, number]] {
  if (pad === 'valid')
    return [
      [0, 0],
      [0, 0],
    ];
  if (pad !== 'same') return pad;
  const side = (L: number, k: number, s: number): [number, number] => {
    const total = Math.max((Math.ceil(L / s) - 1) * s + k - L, 0);
    return [Math.floor(total / 2), total - Math.floor(total / 2)];
  };
  return [side(H, kh, sh), side(W, kw, sw)];
}

/**
 * For an array of shape `inShape` transposed so that output axis i is input axis perm[i]: the
 * input's flat (row-major) index of each output flat index.
 */
export function transposeIndex(inShape: number[], perm: number[]): Int32Array {
  const outShape = perm.map((p) => inShape[p]);
  const inStrides = inShape.map((_, i) => size(inShape.slice(i + 1)));
  const idx = new Int32Array(size(inShape));
  const coord = new Array(outShape.length).fill(0);
  for (let o = 0; o < idx.length; o++) {
    let src = 0;
    for (let a = 0; a < outShape.length; a++) src += coord[a] * inStrides[perm[a]];
    idx[o] = src;
    for (let a = outShape.length - 1; a >= 0; a--) {
      if (++coord[a] < outShape[a]) break;
      coord[a] = 0;
    }
  }
  return idx;
}

/** Ids of the activation nodes, in topological order. */
export function activationNodes(g: Graph): GraphNode[] {
  return g.nodes.filter((n) => n.spec.op === 'activation');
}

/** The nodes that read node `id`'s output. */
export function consumersOf(g: Graph, id: number): GraphNode[] {
  return g.nodes.filter((n) => n.inputs.includes(id));
}

/** For each node, the ids of the nodes that consume it. */
export function consumers(g: Graph): number[][] {
  const out: number[][] = g.nodes.map(() => []);
  for (const n of g.nodes) for (const i of n.inputs) out[i].push(n.id);
  return out;
}

/**
 * Nodes whose values must be known to run the graph from node `cut` onward with `cut`'s inputs
 * given: produced before `cut` and consumed at or after it.
 */
export function liveAt(g: Graph, cut: number): number[] {
  const cons = consumers(g);
  const live: number[] = [];
  for (let i = 0; i < cut; i++) if (cons[i].some((c) => c >= cut) || i === g.output) live.push(i);
  return live;
}

/** The activation spec of an activation node. */
export function actSpec(n: GraphNode): ActivationSpec {
  if (n.spec.op !== 'activation') throw new Error(`node ${n.name} is not an activation`);
  return n.spec.act;
}
