/**
 * Runs the graph IR on TensorFlow.js, batch by batch. Any activation node can be replaced by a
 * polynomial (the approximated model), max pooling can be swapped for average pooling (the
 * HE-friendly variant), and a run can start part-way through the graph from cached values, so
 * that judging a polynomial for layer L re-runs only the network from L onward.
 */
import { tf } from './backend';
import { Graph, GraphNode, Padding, size } from './graph';
import { ActivationSpec } from '../numerics/activations';
import { Interval, unitMap } from '../numerics/chebyshev';
import type { ChannelFits } from '../fit/fit';

/** A polynomial activation: Chebyshev coefficients on [a, b] plus an optional per-channel shift. */
export interface PolyActivation {
  coeffs: ArrayLike<number>;
  a: number;
  b: number;
  /** Subtracted per channel (last axis) after the polynomial: the mean-shift correction. */
  channelOffset?: Float32Array;
  /** One polynomial per channel (last axis); when present, `coeffs`/`a`/`b` are not used. */
  channels?: ChannelFits;
}

export interface RunOptions {
  replace?: Map<number, PolyActivation>;
  /** Activations computed by the caller's function (polynomials with trainable coefficients). */
  apply?: Map<number, (x: tf.Tensor) => tf.Tensor>;
  /** Evaluate MaxPooling2D as AveragePooling2D. */
  poolAsAvg?: boolean;
}

function applyActivation(x: tf.Tensor, act: ActivationSpec): tf.Tensor {
  switch (act.kind) {
    case 'relu': return act.maxValue === undefined ? tf.relu(x) : tf.clipByValue(x, 0, act.maxValue);
    case 'relu6': return tf.relu6(x);
    case 'leakyrelu': return tf.leakyRelu(x, act.alpha ?? 0.3);
    case 'elu': return (act.alpha ?? 1) === 1 ? tf.elu(x) : tf.where(tf.greater(x, 0), x, tf.mul(act.alpha ?? 1, tf.sub(tf.exp(x), 1)));
    case 'selu': return tf.selu(x);
    case 'gelu': return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
    case 'gelu_new': return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))));
    case 'swish': return tf.mul(x, tf.sigmoid(x));
    case 'mish': return tf.mul(x, tf.tanh(tf.softplus(x)));
    case 'sigmoid': return tf.sigmoid(x);
    case 'hard_sigmoid': return tf.clipByValue(tf.add(tf.mul(x, 0.2), 0.5), 0, 1);
    case 'tanh': return tf.tanh(x);
    case 'softplus': return tf.softplus(x);
    case 'softsign': return tf.div(x, tf.add(1, tf.abs(x)));
  }
}

type Operand = number | tf.Tensor;

/**
 * Clenshaw's recurrence on tensors (see numerics/chebyshev.ts) with K coefficients coef(k), on
 * one interval (scalar map) or one interval per channel of the last axis (vector map); the
 * coefficients are scalars, or vectors over the last axis.
 */
export function clenshaw(x: tf.Tensor, iv: Interval | Interval[], K: number, coef: (k: number) => Operand): tf.Tensor {
  if (K === 1) return tf.add(tf.zerosLike(x), coef(0));
  let scale: Operand;
  let shift: Operand;
  if (Array.isArray(iv)) {
    const maps = iv.map(unitMap);
    scale = tf.tensor1d(maps.map((u) => u.scale));
    shift = tf.tensor1d(maps.map((u) => u.shift));
  } else ({ scale, shift } = unitMap(iv));
  const t = tf.tidy(() => tf.add(tf.mul(x, scale), shift));
  const t2 = tf.mul(t, 2);
  let b1: tf.Tensor = tf.zerosLike(t);
  let b2: tf.Tensor = tf.zerosLike(t);
  // Each step's temporaries are freed as soon as the step is done, so that a degree-d polynomial
  // holds 4 tensors of x's size instead of 3d until the caller's tidy ends (at degree 63 on the
  // CNN's first layer, that was most of the analysis's peak memory). Under a gradient tape this
  // is safe: tfjs keeps its own references to what the backward pass needs.
  for (let k = K - 1; k >= 1; k--) {
    const b0 = tf.tidy(() => tf.add(tf.sub(tf.mul(t2, b1), b2), coef(k)));
    b2.dispose();
    b2 = b1;
    b1 = b0;
  }
  const y = tf.tidy(() => tf.add(tf.sub(tf.mul(t, b1), b2), coef(0)));
  for (const z of [t, t2, b1, b2, scale, shift]) if (z instanceof tf.Tensor) z.dispose();
  return y;
}

/** One polynomial on `iv` with scalar coefficients. */
const clenshawOn = (x: tf.Tensor, c: ArrayLike<number>, iv: Interval) => clenshaw(x, iv, c.length, (k) => c[k]);

/**
 * The polynomial activation on a tensor. Per-channel polynomials on large tensors run channel
 * by channel on contiguous channel-major slices, where every operation has a scalar operand:
 * the WebAssembly backend runs those ~2.5x faster than operations with a broadcast vector
 * operand (measured on the CNN example's first layer, 173k values per channel and batch, at
 * degree 63; the transposes cost less than that). Below 65,536 values per channel the C x 3 x
 * degree operations cost more to dispatch than broadcasting does, so vector coefficients are used.
 */
export function applyPoly(x: tf.Tensor, p: PolyActivation): tf.Tensor {
  return tf.tidy(() => applyPolyUntidied(x, p));
}

function applyPolyUntidied(x: tf.Tensor, p: PolyActivation): tf.Tensor {
  const ch = p.channels;
  let y: tf.Tensor;
  if (!ch) y = clenshawOn(x, p.coeffs, p);
  else {
    const C = x.shape[x.rank - 1];
    if (x.size / C >= 65536) {
      // Channel-major, so that each channel is one contiguous slice.
      const parts = tf.unstack(tf.transpose(tf.reshape(x, [-1, C])));
      const ys = parts.map((xc, c) => clenshawOn(xc, ch.coeffs[c], ch.intervals[c]));
      y = tf.reshape(tf.transpose(tf.stack(ys)), x.shape);
    } else {
      y = clenshaw(x, ch.intervals, ch.coeffs[0].length, (k) => tf.tensor1d(Array.from({ length: C }, (_, c) => ch.coeffs[c][k])));
    }
  }
  if (p.channelOffset) y = tf.sub(y, tf.tensor1d(p.channelOffset));
  return y;
}

/** tfjs padding: 'valid', 'same', or explicit [[0, 0], [top, bottom], [left, right], [0, 0]]. */
function tfPad(p: Padding): 'valid' | 'same' | [[number, number], [number, number], [number, number], [number, number]] {
  return p === 'valid' || p === 'same' ? p : [[0, 0], p[0], p[1], [0, 0]];
}

/**
 * Convolution with groups: groups = 1 is tf.conv2d; groups = input channels (depthwise, the
 * kernel [kh, kw, 1, cin * mult] is tfjs's depthwise [kh, kw, cin, mult] with the same bytes);
 * anything between runs each group on its slice of channels and concatenates.
 */
function conv2d(x: tf.Tensor4D, k: tf.Tensor4D, strides: [number, number], pad: Padding, dil: [number, number], groups: number): tf.Tensor {
  if (groups === 1) return tf.conv2d(x, k, strides, tfPad(pad), 'NHWC', dil);
  const cin = x.shape[3];
  const [kh, kw, cg, cout] = k.shape;
  if (groups === cin) return tf.depthwiseConv2d(x, tf.reshape(k, [kh, kw, cin, cout / cin]) as tf.Tensor4D, strides, tfPad(pad), 'NHWC', dil);
  const og = cout / groups;
  const parts = Array.from({ length: groups }, (_, g) => tf.conv2d(tf.slice(x, [0, 0, 0, g * cg], [-1, -1, -1, cg]),
    tf.slice(k, [0, 0, 0, g * og], [-1, -1, -1, og]), strides, tfPad(pad), 'NHWC', dil));
  return tf.concat(parts, 3);
}

export class Executor {
  readonly graph: Graph;
  private readonly params = new Map<number, tf.Tensor[]>();

  constructor(graph: Graph) {
    this.graph = graph;
    for (const n of graph.nodes) {
      const s = n.spec;
      if (s.op === 'dense') this.params.set(n.id, [tf.tensor2d(s.kernel, s.kernelShape), ...(s.bias ? [tf.tensor1d(s.bias)] : [])]);
      else if (s.op === 'conv2d') this.params.set(n.id, [tf.tensor4d(s.kernel, s.kernelShape), ...(s.bias ? [tf.tensor1d(s.bias)] : [])]);
      else if (s.op === 'batchnorm') this.params.set(n.id, [tf.tensor1d(s.scale), tf.tensor1d(s.shift)]);
    }
  }

  dispose(): void {
    for (const ts of this.params.values()) ts.forEach((t) => t.dispose());
    this.params.clear();
  }

  private node(n: GraphNode, ins: tf.Tensor[], opts: RunOptions): tf.Tensor {
    const s = n.spec;
    const x = ins[0];
    const p = this.params.get(n.id) ?? [];
    switch (s.op) {
      case 'input': return x;
      case 'dense': {
        const flat = x.rank === 2 ? x : tf.reshape(x, [-1, x.shape[x.rank - 1]]);
        let y = tf.matMul(flat as tf.Tensor2D, p[0] as tf.Tensor2D);
        if (p[1]) y = tf.add(y, p[1]);
        return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), s.units]);
      }
      case 'conv2d': {
        let y = conv2d(x as tf.Tensor4D, p[0] as tf.Tensor4D, s.strides, s.padding, s.dilation, s.groups ?? 1);
        if (p[1]) y = tf.add(y, p[1]);
        return y;
      }
      case 'avgpool': return tf.avgPool(x as tf.Tensor4D, s.pool, s.strides, s.padding as 'valid' | 'same');
      case 'maxpool': return opts.poolAsAvg ? tf.avgPool(x as tf.Tensor4D, s.pool, s.strides, s.padding as 'valid' | 'same') : tf.maxPool(x as tf.Tensor4D, s.pool, s.strides, s.padding as 'valid' | 'same');
      case 'transpose': return tf.transpose(x, [0, ...s.perm.map((a) => a + 1)]);
      case 'pad': return tf.pad(x, [[0, 0], ...s.pads], s.value);
      case 'slice': return tf.stridedSlice(x, [0, ...s.begin], [x.shape[0], ...s.end], [1, ...s.step]);
      case 'concat': return tf.concat(ins, s.axis + 1);
      case 'globalavgpool': return tf.mean(x, [1, 2]);
      case 'flatten': return tf.reshape(x, [x.shape[0], -1]);
      case 'reshape': return tf.reshape(x, [x.shape[0], ...s.target]);
      case 'batchnorm': return tf.add(tf.mul(x, p[0]), p[1]);
      case 'add': return ins.slice(1).reduce((a, b) => tf.add(a, b), x);
      case 'identity': return x;
      case 'softmax': return tf.softmax(x);
      case 'activation': {
        const fn = opts.apply?.get(n.id);
        if (fn) return fn(x);
        const poly = opts.replace?.get(n.id);
        return poly ? applyPoly(x, poly) : applyActivation(x, s.act);
      }
    }
  }

  /**
   * Runs nodes `from`..end of the graph on one batch. `given` holds the batch's values for every
   * node live at `from` (for from = 0: the input). Returns the output (logits) and copies of the
   * `capture`d nodes' values, as Float32Arrays of batch x per-sample size.
   */
  run(given: Map<number, tf.Tensor>, from: number, opts: RunOptions, capture: Iterable<number> = []): { logits: Float32Array; captured: Map<number, Float32Array> } {
    const want = new Set(capture);
    const captured = new Map<number, Float32Array>();
    let logits: Float32Array | null = null;
    tf.tidy(() => {
      const vals = this.values(given, from, opts, (i, v) => { if (want.has(i)) captured.set(i, v.dataSync() as Float32Array); });
      for (const i of want) if (!captured.has(i) && vals.has(i)) captured.set(i, vals.get(i)!.dataSync() as Float32Array);
      logits = vals.get(this.graph.output)!.dataSync() as Float32Array;
    });
    return { logits: logits!, captured };
  }

  /**
   * The output tensor (logits) of nodes `from`..end on one batch, for use inside the caller's
   * tf.tidy or gradient computation (nothing is disposed or copied here).
   */
  forward(given: Map<number, tf.Tensor>, from: number, opts: RunOptions): tf.Tensor {
    return this.values(given, from, opts).get(this.graph.output)!;
  }

  private values(given: Map<number, tf.Tensor>, from: number, opts: RunOptions, each?: (i: number, v: tf.Tensor) => void): Map<number, tf.Tensor> {
    const vals = new Map(given);
    for (let i = from; i < this.graph.nodes.length; i++) {
      const n = this.graph.nodes[i];
      if (vals.has(i) && i !== from) continue;
      if (n.spec.op === 'input') { if (!vals.has(i)) throw new Error('input value missing'); }
      else vals.set(i, this.node(n, n.inputs.map((j) => {
        const v = vals.get(j);
        if (!v) throw new Error(`value of node ${this.graph.nodes[j].name} missing when running from ${this.graph.nodes[from].name}`);
        return v;
      }), opts));
      each?.(i, vals.get(i)!);
    }
    return vals;
  }

  /** Shape with batch for node `id`'s values. */
  batchShape(id: number, batch: number): number[] {
    return [batch, ...this.graph.nodes[id].shape];
  }

  perSample(id: number): number {
    return size(this.graph.nodes[id].shape);
  }
}
