/**
 * ONNX operator converters, one registry keyed by op_type (onnx2torch's layout: a converter per
 * operator family: opsLayers.ts, opsShape.ts, and here activations and arithmetic). Each reads
 * its node's inputs from the import context and returns the values of its outputs; opset differences (attributes that became inputs) are handled where
 * they occur. Semantics follow the ONNX operator specification and are checked against the
 * ONNX conformance cases (test/onnx.test.ts).
 */
import { ActivationSpec } from '../../../numerics/activations';
import { Const, broadcastIndex } from './constants';
import { ActVal, Converter, ImportContext, Val, act } from './context';
import { batchNorm, conv, gemm, globalAvgPool, globalMaxPool, matmul, pool } from './opsLayers';
import { concat, flatten, pad, passThrough, reshape, shape, slice, softmax, squeezeLike, transpose } from './opsShape';
import { FusedNode } from './fuse';
import { Attrs } from './proto';

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
