/**
 * ONNX converters of the layers with weights and windows: Conv, AveragePool / MaxPool, the global
 * poolings, Gemm / MatMul and BatchNormalization (ops.ts registers them).
 */
import { Padding } from '../../graph';
import { outDim } from '../../passes';
import { broadcastIndex } from './constants';
import { ActVal, Converter, ImportContext, act, channelsLast, identityPerm } from './context';
import { FusedNode } from './fuse';
import { Attrs } from './proto';

/** 0, 1, ..., n - 1: a parameter read from its constant as it is. */
const identityIndex = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

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

export const conv: Converter = (c, n, at) => {
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

export function pool(kind: 'avgpool' | 'maxpool'): Converter {
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

export const globalMaxPool: Converter = (c, n) => {
  const x = image(c, n);
  const [H, W, C] = c.shapeOf(x);
  const id = c.add(n, { op: 'maxpool', pool: [H, W], strides: [1, 1], padding: 'valid' }, [1, 1, C], [x.id]);
  c.maxPool(n, x, id);
  return [act(id, x.perm)];
};

export const globalAvgPool: Converter = (c, n) => {
  const x = image(c, n);
  const C = c.shapeOf(x)[2];
  const g = c.add(n, { op: 'globalavgpool' }, [C], [x.id]);
  // ONNX keeps [N, C, 1, 1]: channels last that is [1, 1, C].
  return [act(c.add(n, { op: 'reshape', target: [1, 1, C] }, [1, 1, C], [g], '/keepdims'), x.perm)];
};

export const gemm: Converter = (c, n, at) => {
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

export const matmul: Converter = (c, n) => {
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

export const batchNorm: Converter = (c, n, at) => {
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
