/**
 * Runs the graph IR on TensorFlow.js, batch by batch. Any activation node can be replaced by a
 * polynomial (the approximated model), max pooling can be swapped for average pooling (the
 * HE-friendly variant), and a run can start part-way through the graph from cached values, so
 * that judging a polynomial for layer L re-runs only the network from L onward.
 */
import { tf } from './backend';
import { Graph, GraphNode, size } from './graph';
import { conv2d, frozenKernel, frozenParams, tfPad } from './convGrad';

export { frozenKernel, frozenParams };
import { ActivationSpec } from '../numerics/activations';
import { Interval, unitMap } from '../numerics/chebyshev';
import { PolyActivation, polyValues } from '../numerics/polynomial';

export type { PolyActivation };

export interface RunOptions {
  replace?: Map<number, PolyActivation>;
  /** Activations computed by the caller's function (polynomials with trainable coefficients). */
  apply?: Map<number, (x: tf.Tensor) => tf.Tensor>;
  /** Evaluate MaxPooling2D as AveragePooling2D. */
  poolAsAvg?: boolean;
  /**
   * Called for every activation a polynomial replaces, with its input and output values (batch x
   * per-sample, channels last) as the polynomial evaluation already holds them: statistics on
   * them cost one more loop, not one more copy of the network's activations.
   */
  inspect?: (node: number, x: Float32Array, y: Float32Array, channels: number) => void;
}

/** The exact activation on a tensor (differentiable): what a polynomial replaces. */
export function applyActivation(x: tf.Tensor, act: ActivationSpec): tf.Tensor {
  switch (act.kind) {
    case 'relu':
      return act.maxValue === undefined ? tf.relu(x) : tf.clipByValue(x, 0, act.maxValue);
    case 'relu6':
      return tf.relu6(x);
    case 'leakyrelu':
      return tf.leakyRelu(x, act.alpha ?? 0.3);
    // alpha != 1: relu(x) + alpha (exp(min(x, 0)) - 1), from operations with gradients (tf.where's
    // condition, a comparison, has none: the sensitivity screen crashed on it).
    case 'elu':
      return (act.alpha ?? 1) === 1
        ? tf.elu(x)
        : tf.add(tf.relu(x), tf.mul(act.alpha ?? 1, tf.sub(tf.exp(tf.minimum(x, 0)), 1)));
    case 'selu':
      return tf.selu(x);
    case 'gelu':
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
    case 'gelu_new':
      return tf.mul(
        tf.mul(x, 0.5),
        tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))),
      );
    case 'swish':
      return tf.mul(x, tf.sigmoid(x));
    case 'mish':
      return tf.mul(x, tf.tanh(tf.softplus(x)));
    case 'sigmoid':
      return tf.sigmoid(x);
    case 'hard_sigmoid':
      return tf.clipByValue(tf.add(tf.mul(x, 0.2), 0.5), 0, 1);
    case 'tanh':
      return tf.tanh(x);
    case 'softplus':
      return tf.softplus(x);
    case 'softsign':
      return tf.div(x, tf.add(1, tf.abs(x)));
    case 'abs':
      return tf.abs(x);
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
 * the WebAssembly backend runs those faster than operations with a broadcast vector operand,
 * transposes included (README, "Measurements behind the defaults"). Below 65,536 values per channel
 * the C x 3 x degree operations cost more to dispatch than broadcasting does, so vector
 * coefficients are used.
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
      y = clenshaw(x, ch.intervals, ch.coeffs[0].length, (k) =>
        tf.tensor1d(Array.from({ length: C }, (_, c) => ch.coeffs[c][k])),
      );
    }
  }
  if (p.channelOffset) y = tf.sub(y, tf.tensor1d(p.channelOffset));
  return y;
}

/**
 * x[:, begin:end:step, ...] on the per-sample axes, built so that it has a gradient: tfjs has
 * none for StridedSlice, and coefficient tuning and the sensitivity screen differentiate through
 * ResNets' option-A shortcuts (x[:, ::2, ::2]). A 4-D tensor strided on its spatial axes only is
 * subsampled by a 1x1 average pooling with those strides (the wasm backend's pooling and its
 * gradient are fast); any other strided axis is padded to a multiple of the step, split into
 * (length / step, step), and the first element of every step kept (rank-5+ slices are slow on
 * wasm, so this is the fallback).
 */
function stridedSlice(x: tf.Tensor, begin: number[], end: number[], step: number[]): tf.Tensor {
  let y = tf.slice(x, [0, ...begin], [-1, ...end.map((e, i) => e - begin[i])]);
  if (step.every((st) => st === 1)) return y;
  if (y.rank === 4 && step[2] === 1) return tf.avgPool(y as tf.Tensor4D, [1, 1], [step[0], step[1]], 'valid');
  step.forEach((st, i) => {
    if (st === 1) return;
    const ax = i + 1;
    const len = y.shape[ax];
    const out = Math.ceil(len / st);
    if (out * st > len)
      y = tf.pad(y, y.shape.map((_, k) => (k === ax ? [0, out * st - len] : [0, 0])) as [number, number][]);
    const split = [...y.shape.slice(0, ax), out, st, ...y.shape.slice(ax + 1)];
    y = tf.reshape(
      tf.slice(
        tf.reshape(y, split),
        split.map(() => 0),
        split.map((d, k) => (k === ax + 1 ? 1 : d)),
      ),
      [...y.shape.slice(0, ax), out, ...y.shape.slice(ax + 1)],
    );
  });
  return y;
}

/** x[q] and x[q + offset] along per-sample axis `axis`, for every q with both in range (a max tree's step; maxTree.ts). */
function pairOperands(x: tf.Tensor, axis: number, offset: number): [tf.Tensor, tf.Tensor] {
  const ax = axis + 1;
  const len = x.shape[ax] - offset;
  const size = x.shape.map((d, k) => (k === ax ? len : -1));
  const begin = x.shape.map((_, k) => (k === ax ? offset : 0));
  return [
    tf.slice(
      x,
      x.shape.map(() => 0),
      size,
    ),
    tf.slice(x, begin, size),
  ];
}

/** Padding that repeats each border value (max pooling's padding; maxTree.ts), from slices, tiles and a concatenation: all have gradients. */
function edgePad(x: tf.Tensor, pads: [number, number][]): tf.Tensor {
  let y = x;
  pads.forEach(([before, after], i) => {
    const ax = i + 1;
    if (!before && !after) return;
    const n = y.shape[ax];
    const edge = (at: number, times: number) =>
      tf.tile(
        tf.slice(
          y,
          y.shape.map((_, k) => (k === ax ? at : 0)),
          y.shape.map((d, k) => (k === ax ? 1 : -1)),
        ),
        y.shape.map((_, k) => (k === ax ? times : 1)),
      );
    y = tf.concat([...(before ? [edge(0, before)] : []), y, ...(after ? [edge(n - 1, after)] : [])], ax);
  });
  return y;
}

export interface ExecutorOptions {
  /**
   * Weights as tf.Variables (fine-tuning): every dense, convolution and batch-norm parameter
   * except those frozenParams() names, which stay constants.
   */
  trainable?: boolean;
}

export class Executor {
  readonly graph: Graph;
  private readonly params = new Map<number, tf.Tensor[]>();

  constructor(graph: Graph, opts: ExecutorOptions = {}) {
    this.graph = graph;
    const t = opts.trainable ?? false;
    const v = (x: tf.Tensor, train = t): tf.Tensor => (train ? tf.variable(x) : x);
    for (const n of graph.nodes) {
      const s = n.spec;
      if (s.op === 'dense')
        this.params.set(n.id, [v(tf.tensor2d(s.kernel, s.kernelShape)), ...(s.bias ? [v(tf.tensor1d(s.bias))] : [])]);
      else if (s.op === 'conv2d')
        this.params.set(n.id, [
          v(tf.tensor4d(s.kernel, s.kernelShape), t && !frozenKernel(n)),
          ...(s.bias ? [v(tf.tensor1d(s.bias))] : []),
        ]);
      else if (s.op === 'batchnorm')
        this.params.set(n.id, [
          v(tf.tensor1d(s.scale), t && !frozenParams(n)),
          v(tf.tensor1d(s.shift), t && !frozenParams(n)),
        ]);
    }
  }

  /** The trainable weights (empty unless built with `trainable`). */
  variables(): tf.Variable[] {
    return [...this.params.values()].flat().filter((p): p is tf.Variable => p instanceof tf.Variable);
  }

  /** The graph with the current weights: plain data, for another executor, an export or a report. */
  currentGraph(): Graph {
    const nodes = this.graph.nodes.map((n): GraphNode => {
      const p = this.params.get(n.id);
      if (!p) return n;
      const d = p.map((t) => Float32Array.from(t.dataSync() as Float32Array));
      const s = n.spec;
      if (s.op === 'dense') return { ...n, spec: { ...s, kernel: d[0], bias: s.bias ? d[1] : null } };
      if (s.op === 'conv2d') return { ...n, spec: { ...s, kernel: d[0], bias: s.bias ? d[1] : null } };
      if (s.op === 'batchnorm') return { ...n, spec: { ...s, scale: d[0], shift: d[1] } };
      return n;
    });
    return { ...this.graph, nodes };
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
      case 'input':
        return x;
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
      case 'avgpool':
        return tf.avgPool(x as tf.Tensor4D, s.pool, s.strides, tfPad(s.padding));
      case 'maxpool':
        return (opts.poolAsAvg ? tf.avgPool : tf.maxPool)(x as tf.Tensor4D, s.pool, s.strides, tfPad(s.padding));
      case 'globalmaxpool':
        return opts.poolAsAvg ? tf.mean(x, [1, 2]) : tf.max(x, [1, 2]);
      case 'pairdiff':
        return tf.sub(...pairOperands(x, s.axis, s.offset));
      case 'pairmax':
        return tf.mul(tf.add(tf.add(...pairOperands(x, s.axis, s.offset)), ins[1]), 0.5);
      case 'transpose':
        return tf.transpose(x, [0, ...s.perm.map((a) => a + 1)]);
      case 'pad':
        return s.mode === 'edge' ? edgePad(x, s.pads) : tf.pad(x, [[0, 0], ...s.pads], s.value);
      case 'slice':
        return stridedSlice(x, s.begin, s.end, s.step);
      case 'concat':
        return tf.concat(ins, s.axis + 1);
      case 'globalavgpool':
        return tf.mean(x, [1, 2]);
      case 'flatten':
        return tf.reshape(x, [x.shape[0], -1]);
      case 'reshape':
        return tf.reshape(x, [x.shape[0], ...s.target]);
      case 'batchnorm':
        return tf.add(tf.mul(x, p[0]), p[1]);
      case 'add':
        return ins.slice(1).reduce((a, b) => tf.add(a, b), x);
      case 'identity':
        return x;
      case 'softmax':
        return tf.softmax(x);
      case 'activation': {
        const fn = opts.apply?.get(n.id);
        if (fn) return fn(x);
        const poly = opts.replace?.get(n.id);
        if (!poly) return applyActivation(x, s.act);
        const xv = x.dataSync() as Float32Array;
        const C = x.shape[x.rank - 1];
        const yv = polyValues(xv, C, poly);
        opts.inspect?.(n.id, xv, yv, C);
        return tf.tensor(yv, x.shape);
      }
    }
  }

  /**
   * Runs nodes `from`..end of the graph on one batch. `given` holds the batch's values for every
   * node live at `from` (for from = 0: the input). Returns the output (logits) and copies of the
   * `capture`d nodes' values, as Float32Arrays of batch x per-sample size.
   */
  run(
    given: Map<number, tf.Tensor>,
    from: number,
    opts: RunOptions,
    capture: Iterable<number> = [],
  ): { logits: Float32Array; captured: Map<number, Float32Array> } {
    const want = new Set(capture);
    const captured = new Map<number, Float32Array>();
    let logits: Float32Array | null = null;
    tf.tidy(() => {
      const vals = this.values(given, from, opts, (i, v) => {
        if (want.has(i)) captured.set(i, v.dataSync() as Float32Array);
      });
      for (const i of want)
        if (!captured.has(i) && vals.has(i)) captured.set(i, vals.get(i)!.dataSync() as Float32Array);
      logits = vals.get(this.graph.output)!.dataSync() as Float32Array;
    });
    return { logits: logits!, captured };
  }

  /**
   * Runs nodes `from`..`until` (inclusive) on one batch and returns copies of the `capture`d
   * nodes' values: one segment of the network, for passes that walk it cut by cut (the
   * propagation refit) instead of running to the output for every activation.
   */
  runSegment(
    given: Map<number, tf.Tensor>,
    from: number,
    until: number,
    opts: RunOptions,
    capture: Iterable<number>,
  ): Map<number, Float32Array> {
    const want = new Set(capture);
    const captured = new Map<number, Float32Array>();
    tf.tidy(() => {
      const vals = this.values(
        given,
        from,
        opts,
        (i, v) => {
          if (want.has(i)) captured.set(i, v.dataSync() as Float32Array);
        },
        until,
      );
      for (const i of want)
        if (!captured.has(i) && vals.has(i)) captured.set(i, vals.get(i)!.dataSync() as Float32Array);
    });
    return captured;
  }

  /**
   * The output tensor (logits) of nodes `from`..end on one batch, for use inside the caller's
   * tf.tidy or gradient computation (nothing is disposed or copied here).
   */
  forward(given: Map<number, tf.Tensor>, from: number, opts: RunOptions): tf.Tensor {
    return this.values(given, from, opts).get(this.graph.output)!;
  }

  private values(
    given: Map<number, tf.Tensor>,
    from: number,
    opts: RunOptions,
    each?: (i: number, v: tf.Tensor) => void,
    until = this.graph.nodes.length - 1,
  ): Map<number, tf.Tensor> {
    const vals = new Map(given);
    for (let i = from; i <= until; i++) {
      const n = this.graph.nodes[i];
      if (vals.has(i) && i !== from) continue;
      if (n.spec.op === 'input') {
        if (!vals.has(i)) throw new Error('input value missing');
      } else
        vals.set(
          i,
          this.node(
            n,
            n.inputs.map((j) => {
              const v = vals.get(j);
              if (!v)
                throw new Error(
                  `value of node ${this.graph.nodes[j].name} missing when running from ${this.graph.nodes[from].name}`,
                );
              return v;
            }),
            opts,
          ),
        );
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
