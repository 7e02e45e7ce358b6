/**
 * ONNX operator converters, one registry keyed by op_type (onnx2torch's layout: a converter per
 * operator family). Each reads its node's inputs from the import context and returns the
 * values of its outputs; opset differences (attributes that became inputs) are handled where
 * they occur. Semantics follow the ONNX operator specification and are checked against the
 * ONNX conformance cases (test/onnx.test.ts).
 */
import { ActivationSpec } from '../../../numerics/activations';
import { Padding, size } from '../../graph';
import { outDim } from '../../passes';
import { Const, broadcastIndex, sliceBounds } from './constants';
import { ActVal, ImportContext, Val, channelsLast, identityPerm, invertPerm } from './context';
import { FusedNode } from './fuse';
import { Attrs } from './proto';

type Converter = (c: ImportContext, n: FusedNode, at: Attrs) => Val[];

const act = (id: number, perm: number[]): ActVal => ({ kind: 'act', id, perm });
const ints = (k: Const) => Array.from(k.data);

/** ONNX pads [x1_begin, x2_begin, x1_end, x2_end] (or auto_pad) as a graph Padding for a 2-D window. */
function windowPadding(
  c: ImportContext,
  n: FusedNode,
  at: Attrs,
  inHW: number[],
  k: number[],
  s: number[],
  d: number[],
): Padding {
  const auto = at.str('auto_pad', 'NOTSET');
  if (auto === 'VALID') return 'valid';
  if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    // TensorFlow's 'same' puts the odd pixel at the end, as SAME_UPPER does.
    const total = inHW.map((x, i) => Math.max(0, (Math.ceil(x / s[i]) - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x));
    if (auto === 'SAME_UPPER') return 'same';
    return [
      [Math.ceil(total[0] / 2), Math.floor(total[0] / 2)],
      [Math.ceil(total[1] / 2), Math.floor(total[1] / 2)],
    ];
  }
  if (auto !== 'NOTSET') c.fail(n, `has auto_pad '${auto}'`, 'export with explicit pads');
  const p = at.ints('pads', [0, 0, 0, 0])!;
  if (p.length !== 4)
    c.fail(n, `has ${p.length} pads; only 2-D windows are supported`, 'use 2-D convolutions and pooling (NCHW)');
  if (p.some((v) => v < 0)) c.fail(n, 'has negative pads', 'export without negative padding');
  return p.every((v) => v === 0)
    ? 'valid'
    : [
        [p[0], p[2]],
        [p[1], p[3]],
      ];
}

const windowOut = (inHW: number[], k: number[], s: number[], pad: Padding, d = [1, 1]) =>
  [0, 1].map((i) => outDim(inHW[i], k[i], s[i], pad === 'valid' || pad === 'same' ? pad : pad[i], d[i]));

/** A 4-D (NCHW) data input in channels-last layout. */
function image(c: ImportContext, n: FusedNode): ActVal {
  const x = c.act(n, 0);
  if (x.perm.length !== 3)
    c.fail(
      n,
      `gets a rank-${x.perm.length + 1} input; he-approx supports 2-D (NCHW) convolutions and pooling`,
      'use Conv2d/AvgPool2d on 4-D inputs',
    );
  return c.toPerm(n, x, channelsLast(3));
}

const conv: Converter = (c, n, at) => {
  const x = image(c, n);
  const [H, W, C] = c.shapeOf(x);
  const w = c.constant(n, 1, 'weight');
  if (w.dims.length !== 4) c.fail(n, `has a weight of rank ${w.dims.length}`, 'use 2-D convolutions');
  const [O, Ig, kh, kw] = w.dims;
  const g = at.int('group', 1);
  if (Ig * g !== C || O % g !== 0)
    c.fail(
      n,
      `has weight [${w.dims}] with group ${g} for ${C} input channels`,
      're-export the model; the weight does not match its input',
    );
  const strides = (at.ints('strides', [1, 1]) ?? [1, 1]) as [number, number];
  const dilation = (at.ints('dilations', [1, 1]) ?? [1, 1]) as [number, number];
  const padding = windowPadding(c, n, at, [H, W], [kh, kw], strides, dilation);
  // ONNX [O, I/g, kh, kw] -> [kh, kw, I/g, O].
  const index = new Int32Array(w.data.length);
  for (let o = 0; o < O; o++)
    for (let i = 0; i < Ig; i++)
      for (let h = 0; h < kh; h++)
        for (let q = 0; q < kw; q++) {
          index[((h * kw + q) * Ig + i) * O + o] = ((o * Ig + i) * kh + h) * kw + q;
        }
  const kernel = Float32Array.from(index, (k) => w.data[k]);
  const b = c.optionalConstant(n, 2, 'bias');
  const [oh, ow] = windowOut([H, W], [kh, kw], strides, padding, dilation);
  const id = c.add(
    n,
    {
      op: 'conv2d',
      filters: O,
      kernel,
      kernelShape: [kh, kw, Ig, O],
      bias: b ? Float32Array.from(b.data) : null,
      strides,
      padding,
      dilation,
      ...(g !== 1 ? { groups: g } : {}),
      kernelSource: { name: n.input[1], index, scale: 1 },
      ...(b ? { biasSource: { name: n.input[2], index: identityIndex(O), scale: 1 } } : {}),
    },
    [oh, ow, O],
    [x.id],
  );
  return [act(id, x.perm)];
};

function pool(kind: 'avgpool' | 'maxpool'): Converter {
  return (c, n, at) => {
    const x = image(c, n);
    const [H, W, C] = c.shapeOf(x);
    const k = at.ints('kernel_shape', null) ?? c.fail(n, 'has no kernel_shape', 're-export the model');
    const s = (at.ints('strides', [1, 1]) ?? [1, 1]) as [number, number];
    if ((at.ints('dilations', [1, 1]) ?? [1, 1]).some((d) => d !== 1))
      c.fail(n, 'has dilations', 'use pooling without dilation');
    if (n.output.length > 1 && n.output[1] && c.uses.get(n.output[1]))
      c.fail(n, 'has its Indices output used', 'use MaxPool without indices');
    let padding = windowPadding(c, n, at, [H, W], k, s, [1, 1]);
    let input = x;
    if (Array.isArray(padding) && kind === 'avgpool') {
      const includePad = at.int('count_include_pad', 0) === 1;
      if (!includePad) {
        // Padding left out of the average is what TensorFlow's 'same' does, for its own pads.
        const total = [0, 1].map((i) => Math.max(0, (Math.ceil([H, W][i] / s[i]) - 1) * s[i] + k[i] - [H, W][i]));
        const p = padding;
        if (![0, 1].every((i) => p[i][0] === Math.floor(total[i] / 2) && p[i][1] === Math.ceil(total[i] / 2))) {
          c.fail(
            n,
            `has pads ${JSON.stringify(p)} with count_include_pad=0, which is not 'same' padding`,
            "use 'same' padding or count_include_pad=1",
          );
        }
        padding = 'same';
      } else {
        // Zero padding counted in the average (count_include_pad=1).
        const [[t, b], [l, r]] = padding;
        const id = c.add(
          n,
          {
            op: 'pad',
            pads: [
              [t, b],
              [l, r],
              [0, 0],
            ],
            value: 0,
          },
          [H + t + b, W + l + r, C],
          [x.id],
          '/pad',
        );
        input = act(id, x.perm);
        padding = 'valid';
      }
    }
    // Max pooling keeps its pads: its max tree repeats the border values (model/maxTree.ts).
    const inHW = c.shapeOf(input).slice(0, 2);
    const out = windowOut(inHW, k, s, padding);
    if (at.int('ceil_mode', 0) === 1 && padding !== 'same') {
      const pads = padding === 'valid' ? [0, 0] : padding.map(([p0, p1]) => p0 + p1);
      const ceil = [0, 1].map((i) => Math.ceil((inHW[i] + pads[i] - k[i]) / s[i]) + 1);
      if (ceil.some((v, i) => v !== out[i]))
        c.fail(n, 'uses ceil_mode=1, which changes its output size here', 'export with ceil_mode=False');
    }
    const id = c.add(n, { op: kind, pool: [k[0], k[1]], strides: s, padding }, [out[0], out[1], C], [input.id]);
    if (kind === 'maxpool') c.maxPool(n, x, id);
    return [act(id, x.perm)];
  };
}

const globalMaxPool: Converter = (c, n) => {
  const x = image(c, n);
  const [H, W, C] = c.shapeOf(x);
  const id = c.add(n, { op: 'maxpool', pool: [H, W], strides: [1, 1], padding: 'valid' }, [1, 1, C], [x.id]);
  c.maxPool(n, x, id);
  return [act(id, x.perm)];
};

const globalAvgPool: Converter = (c, n) => {
  const x = image(c, n);
  const C = c.shapeOf(x)[2];
  const g = c.add(n, { op: 'globalavgpool' }, [C], [x.id]);
  // ONNX keeps [N, C, 1, 1]: channels last that is [1, 1, C].
  return [act(c.add(n, { op: 'reshape', target: [1, 1, C] }, [1, 1, C], [g], '/keepdims'), x.perm)];
};

const gemm: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  if (x.perm.length !== 1) c.fail(n, `gets a rank-${x.perm.length + 1} input`, 'flatten the input before Gemm');
  if (at.int('transA', 0) !== 0)
    c.fail(n, 'has transA=1 on the data input', 'export Linear layers as x @ W^T (transA=0)');
  const b = c.constant(n, 1, 'weight');
  const alpha = at.float('alpha', 1);
  const beta = at.float('beta', 1);
  const tb = at.int('transB', 0) === 1;
  const [K, M] = tb ? [b.dims[1], b.dims[0]] : b.dims;
  if (K !== c.shapeOf(x)[0])
    c.fail(
      n,
      `multiplies ${c.shapeOf(x)[0]} features by a [${b.dims}] weight`,
      're-export the model; the weight does not match its input',
    );
  const index = new Int32Array(K * M);
  for (let k = 0; k < K; k++) for (let m = 0; m < M; m++) index[k * M + m] = tb ? m * K + k : k * M + m;
  const kernel = Float32Array.from(index, (i) => alpha * b.data[i]);
  const cv = c.optionalConstant(n, 2, 'bias');
  let bias: Float32Array | null = null;
  let biasIndex: Int32Array | null = null;
  if (cv) {
    const dims = cv.dims.slice();
    while (dims.length > 1 && dims[0] === 1) dims.shift();
    if (dims.length > 1 || (dims.length === 1 && dims[0] !== 1 && dims[0] !== M))
      c.fail(
        n,
        `has a [${cv.dims}] bias, which varies across samples`,
        'use a bias of shape [M] (one value per output)',
      );
    biasIndex = broadcastIndex(dims, [M]);
    bias = Float32Array.from(biasIndex, (i) => beta * cv.data[i]);
  }
  return [
    act(
      c.add(
        n,
        {
          op: 'dense',
          units: M,
          kernel,
          kernelShape: [K, M],
          bias,
          kernelSource: { name: n.input[1], index, scale: alpha },
          ...(biasIndex ? { biasSource: { name: n.input[2], index: biasIndex, scale: beta } } : {}),
        },
        [M],
        [x.id],
      ),
      [0],
    ),
  ];
};

const matmul: Converter = (c, n) => {
  const x0 = c.act(n, 0);
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  const w = c.constant(n, 1, 'weight');
  const shape = c.shapeOf(x);
  if (w.dims.length !== 2 || w.dims[0] !== shape[shape.length - 1])
    c.fail(
      n,
      `multiplies [${shape}] by a [${w.dims}] weight`,
      'use MatMul with a 2-D constant weight on the last axis',
    );
  const id = c.add(
    n,
    {
      op: 'dense',
      units: w.dims[1],
      kernel: Float32Array.from(w.data),
      kernelShape: [w.dims[0], w.dims[1]],
      bias: null,
      kernelSource: { name: n.input[1], index: identityIndex(w.data.length), scale: 1 },
    },
    [...shape.slice(0, -1), w.dims[1]],
    [x.id],
  );
  return [act(id, x.perm)];
};

const batchNorm: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  if (at.int('training_mode', 0) !== 0 || (c.opset < 7 && at.int('is_test', 0) === 0 && at.has('is_test')))
    c.fail(n, 'is in training mode', 'export the model in eval mode (model.eval())');
  if (c.opset < 9 && at.int('spatial', 1) !== 1)
    c.fail(n, 'normalises per position (spatial=0)', 'export with per-channel BatchNormalization');
  const x = c.toPerm(n, x0, channelsLast(x0.perm.length));
  const [gamma, beta, mean, variance] = [1, 2, 3, 4].map(
    (i) => c.constant(n, i, ['scale', 'bias', 'mean', 'variance'][i - 1]).data,
  );
  const eps = at.float('epsilon', 1e-5);
  const C = gamma.length;
  const scale = new Float32Array(C);
  const shift = new Float32Array(C);
  for (let i = 0; i < C; i++) {
    scale[i] = gamma[i] / Math.sqrt(variance[i] + eps);
    shift[i] = beta[i] - mean[i] * scale[i];
  }
  const source = { gamma: n.input[1], beta: n.input[2], mean: n.input[3], variance: n.input[4], eps };
  return [act(c.add(n, { op: 'batchnorm', scale, shift, source }, c.shapeOf(x), [x.id]), x.perm)];
};

/** 0, 1, ..., n - 1: a parameter read from its constant as it is. */
const identityIndex = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

function activation(spec: (c: ImportContext, n: FusedNode, at: Attrs) => ActivationSpec | null): Converter {
  return (c, n, at) => {
    const x = c.act(n, 0);
    const s = spec(c, n, at);
    return [s ? c.activation(n, x, s) : x];
  };
}

function clipSpec(c: ImportContext, n: FusedNode, at: Attrs): ActivationSpec {
  const bound = (i: number, attr: string, d: number) => {
    if (c.opset < 11) return at.float(attr, d);
    const v = c.optionalConstant(n, i, `${attr} bound`);
    return v ? v.data[0] : d;
  };
  const lo = bound(1, 'min', -Infinity);
  const hi = bound(2, 'max', Infinity);
  if (lo !== 0)
    c.fail(
      n,
      `clips to [${lo}, ${hi}], which is not a ReLU`,
      'he-approx approximates Clip(0, max) (ReLU, ReLU6); replace other clips',
    );
  return hi === 6 ? { kind: 'relu6' } : hi === Infinity ? { kind: 'relu' } : { kind: 'relu', maxValue: hi };
}

const SELU = { alpha: 1.67326319217681884765625, gamma: 1.05070102214813232421875 };

/** Element-wise Add/Sub/Mul/Div: two data tensors (Add only), or data and a scalar or per-channel constant. */
function arithmetic(op: 'Add' | 'Sub' | 'Mul' | 'Div'): Converter {
  return (c, n) => {
    const a = c.input(n, 0);
    const b = c.input(n, 1);
    if (a.kind === 'act' && b.kind === 'act') {
      if (op !== 'Add')
        c.fail(
          n,
          'combines two data tensors; he-approx supports Add of two tensors (residual connections) and arithmetic with constants',
          'replace the operation, or export a model whose activations are single operators or known patterns (GELU, SiLU, Mish)',
        );
      const y = c.toPerm(n, b, a.perm);
      if (c.shapeOf(a).join() !== c.shapeOf(y).join())
        c.fail(
          n,
          `adds shapes [${c.logical(a)}] and [${c.logical(b)}]`,
          'add tensors of equal shape (broadcasting between data tensors is not supported)',
        );
      return [act(c.add(n, { op: 'add' }, c.shapeOf(a), [a.id, y.id]), a.perm)];
    }
    if (a.kind === 'const' && b.kind === 'const')
      c.fail(
        n,
        'has only constant inputs but was not folded',
        'report this model; it should have been folded at import',
      );
    const x = (a.kind === 'act' ? a : b) as ActVal;
    const k = (a.kind === 'const' ? a : b) as Extract<Val, { kind: 'const' }>;
    const constFirst = a.kind === 'const';
    if (op === 'Div' && constFirst)
      c.fail(n, 'divides a constant by the data', 'he-approx supports division by constants only');
    const v = channelVector(c, n, x, k.c);
    const C = v.length;
    const scale = new Float32Array(C).fill(1);
    const shift = new Float32Array(C);
    for (let i = 0; i < C; i++) {
      if (op === 'Add') shift[i] = v[i];
      else if (op === 'Sub') {
        if (constFirst) {
          scale[i] = -1;
          shift[i] = v[i];
        } else shift[i] = -v[i];
      } else if (op === 'Mul') scale[i] = v[i];
      else scale[i] = 1 / v[i];
    }
    // MatMul + Add (PyTorch's Linear on >2-D inputs, tf2onnx's Dense): the constant is the bias.
    const src = c.nodes[x.id];
    if (
      op === 'Add' &&
      (src.spec.op === 'dense' || src.spec.op === 'conv2d') &&
      !src.spec.bias &&
      c.uses.get(n.input[constFirst ? 1 : 0]) === 1
    ) {
      src.spec.bias = shift;
      return [x];
    }
    return [act(c.add(n, { op: 'batchnorm', scale, shift }, c.shapeOf(x), [x.id]), x.perm)];
  };
}

/**
 * A constant operand as one value per channel (the data's physical last axis), if it is a scalar
 * or varies along that axis only; anything else (a full-size constant) is refused.
 */
function channelVector(c: ImportContext, n: FusedNode, x: ActVal, k: Const): Float64Array {
  const L = c.logical(x);
  const full = [1, ...L];
  let dims = k.dims.slice();
  while (dims.length > full.length && dims[0] === 1) dims = dims.slice(1);
  const r = Math.max(dims.length, full.length);
  const padded = [...new Array(r - dims.length).fill(1), ...dims];
  if (padded.length !== full.length || padded.some((d, i) => d !== 1 && d !== full[i]) || padded[0] !== 1) {
    c.fail(
      n,
      `broadcasts a [${k.dims}] constant against data of shape [N, ${L}]`,
      'use scalar or per-channel constants',
    );
  }
  const idx = broadcastIndex(padded.slice(1), L);
  const chanAxis = x.perm[x.perm.length - 1];
  const C = L[chanAxis];
  const v = new Float64Array(C);
  const seen = new Uint8Array(C);
  const stridesL = L.map((_, i) => L.slice(i + 1).reduce((p, q) => p * q, 1));
  for (let f = 0; f < idx.length; f++) {
    const ch = Math.floor(f / stridesL[chanAxis]) % C;
    const val = k.data[idx[f]];
    if (!seen[ch]) {
      v[ch] = val;
      seen[ch] = 1;
    } else if (v[ch] !== val) {
      c.fail(
        n,
        `has a [${k.dims}] constant that varies along more than the channel axis`,
        'he-approx supports scalar and per-channel constants in element-wise arithmetic',
      );
    }
  }
  return v;
}

const flatten: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  const axis = at.int('axis', 1);
  if ((axis < 0 ? axis + x0.perm.length + 1 : axis) !== 1)
    c.fail(n, `flattens from axis ${axis}`, 'flatten from axis 1 (keep the batch axis)');
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  return [act(c.add(n, { op: 'flatten' }, [size(c.shapeOf(x))], [x.id]), [0])];
};

const reshape: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  // Before opset 5 the target shape was an attribute.
  const t: Const =
    c.opset < 5 ? { dims: [], data: Float64Array.from(at.ints('shape', []) ?? []) } : c.constant(n, 1, 'target shape');
  const dims = ints(t);
  const b = dims[0];
  const batchOk =
    b === -1 ||
    t.dynamic?.[0] ||
    (b === 0 && at.int('allowzero', 0) === 0) ||
    (c.fixedBatch !== null && b === c.fixedBatch);
  if (!batchOk || t.dynamic?.slice(1).some((d) => d))
    c.fail(
      n,
      `reshapes to [${dims}], which changes the batch axis`,
      'keep the batch axis first (e.g. x.view(x.size(0), -1)) and export with a dynamic batch',
    );
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  const L = c.shapeOf(x);
  const rest = dims.slice(1).map((d, i) => (d === 0 && at.int('allowzero', 0) === 0 ? L[i] : d));
  const known = rest.filter((d) => d !== -1).reduce((p, q) => p * q, 1);
  const target = rest.map((d) => (d === -1 ? size(L) / known : d));
  if (size(target) !== size(L) || target.some((d) => !Number.isInteger(d) || d < 0))
    c.fail(n, `reshapes [N, ${L}] to [${dims}]`, 're-export the model; the target shape does not fit');
  return [act(c.add(n, { op: 'reshape', target }, target, [x.id]), identityPerm(target.length))];
};

const transpose: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const p = at.ints('perm', null) ?? Array.from({ length: r }, (_, i) => r - 1 - i);
  if (p[0] !== 0) c.fail(n, `moves the batch axis (perm [${p}])`, 'keep the batch axis first');
  const q = p.slice(1).map((v) => v - 1);
  const inv = invertPerm(q);
  // Only the bookkeeping changes: graph axis i still holds the same data.
  return [
    act(
      x.id,
      x.perm.map((a) => inv[a]),
    ),
  ];
};

/** ONNX axis (with batch) of a data tensor -> graph axis; the batch axis is refused. */
function graphAxis(c: ImportContext, n: FusedNode, x: ActVal, axis: number): number {
  const r = x.perm.length + 1;
  const a = axis < 0 ? axis + r : axis;
  if (a <= 0 || a >= r)
    c.fail(n, `works on axis ${axis} (the batch axis or out of range)`, 'operate on per-sample axes only');
  return x.perm.indexOf(a - 1);
}

const slice: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const L = c.logical(x);
  const r = L.length + 1;
  let starts: number[];
  let ends: number[];
  let axes: number[];
  let steps: number[];
  if (c.opset < 10) {
    starts = at.ints('starts', [])!;
    ends = at.ints('ends', [])!;
    axes = at.ints('axes', null) ?? starts.map((_, i) => i);
    steps = starts.map(() => 1);
  } else {
    starts = ints(c.constant(n, 1, 'starts'));
    ends = ints(c.constant(n, 2, 'ends'));
    axes = n.input[3] ? ints(c.constant(n, 3, 'axes')) : starts.map((_, i) => i);
    steps = n.input[4] ? ints(c.constant(n, 4, 'steps')) : starts.map(() => 1);
  }
  const phys = c.shapeOf(x);
  const begin = phys.map(() => 0);
  const end = phys.slice();
  const step = phys.map(() => 1);
  axes.forEach((ax, k) => {
    const a = ax < 0 ? ax + r : ax;
    if (a === 0) {
      if (starts[k] !== 0 || ends[k] < 2 ** 31 - 1 || steps[k] !== 1)
        c.fail(n, 'slices the batch axis', 'slice per-sample axes only');
      return;
    }
    if (steps[k] <= 0) c.fail(n, `has step ${steps[k]}`, 'use positive slice steps');
    const g = graphAxis(c, n, x, a);
    const [s, e] = sliceBounds(L[a - 1], starts[k], ends[k], steps[k]);
    begin[g] = s;
    end[g] = Math.max(s, e);
    step[g] = steps[k];
  });
  const shape = phys.map((_, i) => Math.ceil((end[i] - begin[i]) / step[i]));
  return [act(c.add(n, { op: 'slice', begin, end, step }, shape, [x.id]), x.perm)];
};

const pad: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const mode = at.str('mode', 'constant');
  if (mode !== 'constant')
    c.fail(
      n,
      `pads in mode '${mode}'`,
      'use constant (zero) padding; CKKS cannot compute reflect or edge padding cheaply',
    );
  let pads: number[];
  let value = 0;
  let axes = Array.from({ length: r }, (_, i) => i);
  if (c.opset < 11) {
    pads = at.ints('pads', [])!;
    value = at.float('value', 0);
  } else {
    pads = ints(c.constant(n, 1, 'pads'));
    const v = c.optionalConstant(n, 2, 'padding value');
    if (v) value = v.data[0] ?? 0;
    if (n.input[3]) axes = ints(c.constant(n, 3, 'axes')).map((a) => (a < 0 ? a + r : a));
  }
  if (pads.length !== 2 * axes.length)
    c.fail(n, `has ${pads.length} pads for ${axes.length} axes`, 're-export the model');
  if (pads.every((v) => v === 0)) return [x];
  const phys = c.shapeOf(x);
  const gp: [number, number][] = phys.map(() => [0, 0]);
  axes.forEach((a, k) => {
    const [b, e] = [pads[k], pads[k + axes.length]];
    if (b < 0 || e < 0) c.fail(n, 'has negative pads (cropping)', 'use Slice to crop');
    if (a === 0) {
      if (b || e) c.fail(n, 'pads the batch axis', 'pad per-sample axes only');
      return;
    }
    gp[graphAxis(c, n, x, a)] = [b, e];
  });
  return [
    act(
      c.add(
        n,
        { op: 'pad', pads: gp, value },
        phys.map((d, i) => d + gp[i][0] + gp[i][1]),
        [x.id],
      ),
      x.perm,
    ),
  ];
};

const concat: Converter = (c, n, at) => {
  const ins = n.input.map((_, i) => c.input(n, i));
  if (ins.some((v) => v.kind !== 'act'))
    c.fail(n, 'concatenates data with constants', 'concatenate data tensors only (zero-padding channels is a Pad)');
  const first = ins[0] as ActVal;
  const xs = (ins as ActVal[]).map((v) => c.toPerm(n, v, first.perm));
  const g = graphAxis(c, n, first, at.int('axis', c.opset < 4 ? 1 : 0));
  const shapes = xs.map((v) => c.shapeOf(v));
  if (shapes.some((s) => s.some((d, i) => i !== g && d !== shapes[0][i])))
    c.fail(n, 'concatenates tensors whose other axes differ', 're-export the model');
  const shape = shapes[0].slice();
  shape[g] = shapes.reduce((s, q) => s + q[g], 0);
  return [
    act(
      c.add(
        n,
        { op: 'concat', axis: g },
        shape,
        xs.map((v) => v.id),
      ),
      first.perm,
    ),
  ];
};

const softmax: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const axis = at.int('axis', c.opset < 13 ? 1 : -1);
  const a = axis < 0 ? axis + r : axis;
  if (c.opset < 13 ? a !== r - 1 : false)
    c.fail(n, `applies softmax over axes ${a}.. of a rank-${r} tensor`, 'apply softmax over the last axis');
  if (graphAxis(c, n, x, a) !== x.perm.length - 1)
    c.fail(
      n,
      `applies softmax over axis ${axis}, not the channel axis`,
      'apply softmax over the class axis of [N, classes] logits',
    );
  return [act(c.add(n, { op: 'softmax' }, c.shapeOf(x), [x.id]), x.perm)];
};

const passThrough: Converter = (c, n, at) => {
  if (n.op_type === 'Dropout' && n.output[1] && c.uses.get(n.output[1]))
    c.fail(n, 'has its mask output used', 'export the model in eval mode');
  if (n.op_type === 'Cast' && ![1, 10, 11].includes(at.int('to', 1)))
    c.fail(n, `casts the data to ONNX type ${at.int('to', 1)}`, 'keep the data in floating point');
  return [c.act(n, 0)];
};

const squeezeLike: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  const L = c.shapeOf(x);
  const r = L.length + 1;
  const raw = c.opset >= 13 ? (n.input[1] ? ints(c.constant(n, 1, 'axes')) : null) : at.ints('axes', null);
  let target: number[];
  if (n.op_type === 'Squeeze') {
    const axes = (raw ?? L.map((d, i) => (d === 1 ? i + 1 : -1)).filter((a) => a > 0)).map((a) => (a < 0 ? a + r : a));
    if (axes.includes(0) || axes.some((a) => L[a - 1] !== 1))
      c.fail(n, 'squeezes the batch axis or an axis longer than 1', 'squeeze per-sample axes of length 1');
    target = L.filter((_, i) => !axes.includes(i + 1));
  } else {
    const rr = r + (raw?.length ?? 0);
    const axes = (raw ?? []).map((a) => (a < 0 ? a + rr : a));
    if (axes.includes(0)) c.fail(n, 'adds an axis before the batch axis', 'keep the batch axis first');
    target = [];
    let k = 0;
    for (let i = 1; i < rr; i++) target.push(axes.includes(i) ? 1 : L[k++]);
  }
  return [act(c.add(n, { op: 'reshape', target }, target, [x.id]), identityPerm(target.length))];
};

const shape: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const full = [-1, ...c.logical(x)];
  const r = full.length;
  const norm = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const s = norm(at.int('start', 0));
  const e = norm(at.int('end', r));
  const dims = full.slice(s, e);
  const dynamic = Uint8Array.from(dims.map((_, i) => (i + s === 0 ? 1 : 0)));
  return [
    {
      kind: 'const',
      c: { dims: [dims.length], data: Float64Array.from(dims), dynamic: dynamic.some((d) => d) ? dynamic : undefined },
    },
  ];
};

export const CONVERTERS: Record<string, Converter> = {
  Conv: conv,
  AveragePool: pool('avgpool'),
  MaxPool: pool('maxpool'),
  GlobalMaxPool: globalMaxPool,
  GlobalAveragePool: globalAvgPool,
  Gemm: gemm,
  MatMul: matmul,
  BatchNormalization: batchNorm,
  Relu: activation(() => ({ kind: 'relu' })),
  LeakyRelu: activation((c, n, at) => ({ kind: 'leakyrelu', alpha: at.float('alpha', 0.01) })),
  Elu: activation((c, n, at) => ({ kind: 'elu', alpha: at.float('alpha', 1) })),
  Selu: activation((c, n, at) => {
    if (
      Math.abs(at.float('alpha', SELU.alpha) - SELU.alpha) > 1e-6 ||
      Math.abs(at.float('gamma', SELU.gamma) - SELU.gamma) > 1e-6
    )
      c.fail(n, 'has non-standard alpha/gamma', 'use the standard SELU constants');
    return { kind: 'selu' };
  }),
  Sigmoid: activation(() => ({ kind: 'sigmoid' })),
  Tanh: activation(() => ({ kind: 'tanh' })),
  Softplus: activation(() => ({ kind: 'softplus' })),
  Softsign: activation(() => ({ kind: 'softsign' })),
  HardSigmoid: activation((c, n, at) => {
    if (Math.abs(at.float('beta', 0.5) - 0.5) > 1e-7)
      c.fail(
        n,
        `has beta ${at.float('beta', 0.5)}`,
        'he-approx supports HardSigmoid with beta 0.5 (Keras and PyTorch both use it)',
      );
    const alpha = at.float('alpha', 0.2);
    return Math.abs(alpha - 0.2) < 1e-7 ? { kind: 'hard_sigmoid' } : { kind: 'hard_sigmoid', alpha };
  }),
  Clip: activation(clipSpec),
  Gelu: activation((c, n, at) => (at.str('approximate', 'none') === 'tanh' ? { kind: 'gelu_new' } : { kind: 'gelu' })),
  Mish: activation(() => ({ kind: 'mish' })),
  HeActivation: activation((c, n) => ({ kind: n.kind as ActivationSpec['kind'] })),
  Add: arithmetic('Add'),
  Sub: arithmetic('Sub'),
  Mul: arithmetic('Mul'),
  Div: arithmetic('Div'),
  Flatten: flatten,
  Reshape: reshape,
  Transpose: transpose,
  Slice: slice,
  Pad: pad,
  Concat: concat,
  Softmax: softmax,
  Identity: passThrough,
  Dropout: passThrough,
  Cast: passThrough,
  Squeeze: squeezeLike,
  Unsqueeze: squeezeLike,
  Shape: shape,
};

/** Fixes for operators that have none here, beyond the generic one. */
export const UNSUPPORTED_HINTS: Record<string, string> = {
  Erf: 'Erf is supported only inside the GELU pattern x * 0.5 * (1 + erf(x / sqrt(2))); export nn.GELU() as it is',
  LSTM: 'recurrent layers are not supported; he-approx handles feed-forward CNNs and MLPs',
  GRU: 'recurrent layers are not supported; he-approx handles feed-forward CNNs and MLPs',
  RNN: 'recurrent layers are not supported; he-approx handles feed-forward CNNs and MLPs',
  ReduceMax: 'max is not a polynomial; CKKS cannot evaluate it',
  PRelu: 'replace PReLU by LeakyReLU with a fixed slope, or by ReLU',
  ConvTranspose: 'transposed convolutions are not supported yet',
  Resize: 'resizing is not supported; remove Upsample/Resize from the model',
  Upsample: 'resizing is not supported; remove Upsample/Resize from the model',
};
