/**
 * Scalar definitions of every activation he-approx approximates, written to match
 * TensorFlow.js / Keras exactly (tfjs-layers src/activations.ts, tfjs-core ops), because a fit
 * is only as good as the function it targets.
 */
import { UserError } from '../errors';

export type ActivationKind =
  | 'relu'
  | 'relu6'
  | 'leakyrelu'
  | 'elu'
  | 'selu'
  | 'gelu'
  | 'gelu_new'
  | 'swish'
  | 'mish'
  | 'sigmoid'
  | 'hard_sigmoid'
  | 'tanh'
  | 'softplus'
  | 'softsign'
  /** |x|: the non-polynomial part of max(a, b) = (a + b) / 2 + |a - b| / 2 (max pooling; model/maxTree.ts). */
  | 'abs';

export interface ActivationSpec {
  kind: ActivationKind;
  /** Slope (LeakyReLU) or scale of the negative part (ELU). */
  alpha?: number;
  /** Upper clip of a ReLU layer with `maxValue`. */
  maxValue?: number;
}

const SELU_ALPHA = 1.6732632423543772;
const SELU_SCALE = 1.0507009873554805;

/**
 * erf(x) to ~1e-13: Maclaurin series for |x| < 3 (terms peak near e^9, so about 4 of 16 digits
 * are lost to cancellation) and Lentz's continued fraction for erfc beyond (Abramowitz & Stegun 7.1.14).
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = x;
    let sum = x;
    const x2 = x * x;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  const tiny = 1e-300;
  let f = ax;
  let C = ax;
  let D = 0;
  for (let k = 1; k < 300; k++) {
    const a = k / 2;
    D = ax + a * D;
    D = D === 0 ? tiny : 1 / D;
    C = ax + a / C;
    if (C === 0) C = tiny;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return x > 0 ? 1 - erfc : erfc - 1;
}

function softplus(x: number): number {
  // log(1 + e^x) without overflow.
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}
function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** Returns the scalar function for an activation spec. */
export function activationFn(spec: ActivationSpec): (x: number) => number {
  switch (spec.kind) {
    case 'relu': {
      const mv = spec.maxValue;
      return mv === undefined ? (x) => (x > 0 ? x : 0) : (x) => (x > 0 ? Math.min(x, mv) : 0);
    }
    case 'relu6':
      return (x) => Math.min(Math.max(x, 0), 6);
    case 'leakyrelu': {
      const a = spec.alpha ?? 0.3;
      return (x) => (x > 0 ? x : a * x);
    }
    case 'elu': {
      const a = spec.alpha ?? 1;
      return (x) => (x > 0 ? x : a * Math.expm1(x));
    }
    case 'selu':
      return (x) => SELU_SCALE * (x > 0 ? x : SELU_ALPHA * Math.expm1(x));
    case 'gelu':
      return (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_new':
      return (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    case 'swish':
      return (x) => x * sigmoid(x);
    case 'mish':
      return (x) => x * Math.tanh(softplus(x));
    case 'sigmoid':
      return sigmoid;
    case 'hard_sigmoid':
      return (x) => Math.min(1, Math.max(0, 0.2 * x + 0.5));
    case 'tanh':
      return Math.tanh;
    case 'softplus':
      return softplus;
    case 'softsign':
      return (x) => x / (1 + Math.abs(x));
    case 'abs':
      return Math.abs;
  }
}

/**
 * Even activations (|x|) are fitted by even polynomials on intervals symmetric about 0: the
 * fit then computes max(a, b) the same whichever operand comes first, and an even series has
 * half the terms of a general one of its degree.
 */
export function isEven(spec: ActivationSpec): boolean {
  return spec.kind === 'abs';
}

/** Points where the function is not smooth; Remez puts grid points there. */
export function breakpoints(spec: ActivationSpec): number[] {
  switch (spec.kind) {
    case 'relu':
      return spec.maxValue === undefined ? [0] : [0, spec.maxValue];
    case 'relu6':
      return [0, 6];
    case 'leakyrelu':
    case 'elu':
    case 'selu':
      return [0];
    case 'hard_sigmoid':
      return [-2.5, 2.5];
    case 'softsign':
    case 'abs':
      return [0];
    default:
      return [];
  }
}

export function describeActivation(spec: ActivationSpec): string {
  if (spec.kind === 'leakyrelu') return `leakyrelu(alpha=${spec.alpha ?? 0.3})`;
  if (spec.kind === 'elu' && spec.alpha !== undefined && spec.alpha !== 1) return `elu(alpha=${spec.alpha})`;
  if (spec.kind === 'relu' && spec.maxValue !== undefined) return `relu(max=${spec.maxValue})`;
  return spec.kind;
}

/** Inverse of describeActivation: the spec behind a report's activation string. */
export function specFromDescription(desc: string): ActivationSpec {
  const m = /^(\w+)(?:\((alpha|max)=([-+0-9.e]+)\))?$/.exec(desc);
  // |x| is no Keras activation: it comes from max pooling (model/maxTree.ts), never from a layer's name.
  if (m && m[1] === 'abs' && !m[2]) return { kind: 'abs' };
  const base = m ? parseActivationName(m[1], 'report') : 'linear';
  if (!m || base === 'linear' || base === 'softmax')
    throw new UserError(
      'OPTION_INVALID',
      `unknown activation '${desc}' in the report`,
      'analyse the model again with this version of he-approx',
    );
  if (m[2] === 'alpha') return { ...base, alpha: Number(m[3]) };
  if (m[2] === 'max') return { ...base, maxValue: Number(m[3]) };
  return base;
}

/**
 * Maps a Keras/tfjs activation identifier to a spec. Returns 'linear' for identity, 'softmax' for
 * softmax (handled by the caller), and throws a UserError for anything unknown.
 */
export function parseActivationName(name: string, where: string): ActivationSpec | 'linear' | 'softmax' {
  const n = name.toLowerCase().replace(/[-\s]/g, '_');
  switch (n) {
    case 'linear':
    case 'none':
    case '':
      return 'linear';
    case 'softmax':
      return 'softmax';
    case 'relu':
      return { kind: 'relu' };
    case 'relu6':
      return { kind: 'relu6' };
    case 'elu':
      return { kind: 'elu' };
    case 'selu':
      return { kind: 'selu' };
    case 'gelu':
      return { kind: 'gelu' };
    case 'gelu_new':
    case 'gelu_tanh':
      return { kind: 'gelu_new' };
    case 'swish':
    case 'silu':
      return { kind: 'swish' };
    case 'mish':
      return { kind: 'mish' };
    case 'sigmoid':
      return { kind: 'sigmoid' };
    case 'hardsigmoid':
    case 'hard_sigmoid':
      return { kind: 'hard_sigmoid' };
    case 'tanh':
      return { kind: 'tanh' };
    case 'softplus':
      return { kind: 'softplus' };
    case 'softsign':
      return { kind: 'softsign' };
    case 'leakyrelu':
    case 'leaky_relu':
      return { kind: 'leakyrelu' };
    default:
      throw new UserError(
        'MODEL_UNSUPPORTED',
        `${where}: unknown activation '${name}'`,
        'use one of relu, relu6, leakyrelu, elu, selu, gelu, gelu_new, swish/silu, mish, sigmoid, hard_sigmoid, tanh, softplus, softsign, linear, softmax',
      );
  }
}
