/**
 * Convolutions for the executor (execute.ts) with gradients that TensorFlow.js's wasm backend
 * lacks or computes slowly: the kernel's gradient as a correlation of the input with the
 * dilated output gradient, depthwise kernels per channel; and which kernels fine-tuning keeps
 * fixed.
 */
import { tf } from './backend';
import { GraphNode, Padding, explicitPads } from './graph';

/** tfjs padding: 'valid', 'same', or explicit [[0, 0], [top, bottom], [left, right], [0, 0]]. */
export function tfPad(
  p: Padding,
): 'valid' | 'same' | [[number, number], [number, number], [number, number], [number, number]] {
  return p === 'valid' || p === 'same' ? p : [[0, 0], p[0], p[1], [0, 0]];
}

/** dy with s - 1 zeros inserted between neighbours along H and W: length (L - 1) * s + 1. */
function dilate(dy: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  let y: tf.Tensor4D = dy;
  const [n, Ho, Wo, C] = dy.shape;
  if (sw > 1) {
    const z = tf.zerosLike(y);
    y = tf.slice(
      tf.reshape(tf.stack([y, ...Array<tf.Tensor>(sw - 1).fill(z)], 3), [n, Ho, Wo * sw, C]),
      [0, 0, 0, 0],
      [-1, -1, (Wo - 1) * sw + 1, -1],
    ) as tf.Tensor4D;
  }
  if (sh > 1) {
    const W2 = y.shape[2];
    const z = tf.zerosLike(y);
    y = tf.slice(
      tf.reshape(tf.stack([y, ...Array<tf.Tensor>(sh - 1).fill(z)], 2), [n, Ho * sh, W2, C]),
      [0, 0, 0, 0],
      [-1, (Ho - 1) * sh + 1, -1, -1],
    ) as tf.Tensor4D;
  }
  return y;
}

/**
 * tf.conv2d whose gradient with respect to its input is itself a tf.conv2d: the transposed
 * convolution written as a stride-1 convolution of the zero-dilated output gradient with the
 * spatially flipped kernel, its in/out channels swapped, at the kernel's own dilation (Dumoulin &
 * Visin, "A guide to convolution arithmetic", 2016, sec. 4 and 5). The wasm backend's own
 * Conv2DBackpropInput is a plain loop, several times slower than its Conv2D (README,
 * "Measurements behind the defaults"), and tfjs has no gradient at all for dilated convolutions; the
 * sensitivity screen and coefficient tuning differentiate through every convolution. A trainable
 * kernel (fine-tuning) gets its gradient from a convolution too (kernelGrad).
 */
function conv2dFastGrad(
  x: tf.Tensor4D,
  k: tf.Tensor4D,
  strides: [number, number],
  pad: Padding,
  dil: [number, number] = [1, 1],
): tf.Tensor {
  const [kh, kw] = k.shape;
  const [sh, sw] = strides;
  const [dh, dw] = dil;
  const [ekh, ekw] = [(kh - 1) * dh + 1, (kw - 1) * dw + 1];
  const [, H, W] = x.shape;
  const pads = explicitPads(pad, H, W, ekh, ekw, sh, sw);
  const [[pt], [pl]] = pads;
  if (pt > ekh - 1 || pl > ekw - 1) return tf.conv2d(x, k, strides, tfPad(pad), 'NHWC', dil);
  const inputGrad = (dy: tf.Tensor4D, kk: tf.Tensor4D) => {
    const d = dilate(dy, sh, sw);
    const back = tf.transpose(tf.reverse(kk, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
    return tf.conv2d(d, back, 1, backPads(d, H, W, ekh, ekw, pt, pl), 'NHWC', dil);
  };
  const value = (xx: tf.Tensor, kk: tf.Tensor) =>
    tf.conv2d(xx as tf.Tensor4D, kk as tf.Tensor4D, strides, tfPad(pad), 'NHWC', dil);
  return withGrads(x, k, value, inputGrad, (xx, dy) => kernelGrad(xx, dy, kh, kw, strides, pads, dil));
}

/**
 * The explicit pads of the backward (stride-1) convolution of d, the zero-dilated output gradient,
 * that give exactly x's H x W: rows and columns a stride dropped get zero gradient.
 */
function backPads(
  d: tf.Tensor4D,
  H: number,
  W: number,
  ekh: number,
  ekw: number,
  pt: number,
  pl: number,
): [[number, number], [number, number], [number, number], [number, number]] {
  const top = ekh - 1 - pt;
  const left = ekw - 1 - pl;
  return [
    [0, 0],
    [top, H - d.shape[1] - top + ekh - 1],
    [left, W - d.shape[2] - left + ekw - 1],
    [0, 0],
  ];
}

/**
 * The operation `value(x, k)` with the given gradients: for x always; for k only when it is a
 * trainable variable (fine-tuning), since a kernel's gradient costs a convolution of its own and
 * the sensitivity screen and coefficient tuning need only the input's. Both are saved for the
 * backward pass (tfjs may dispose them before then otherwise).
 */
function withGrads(
  x: tf.Tensor4D,
  k: tf.Tensor,
  value: (x: tf.Tensor, k: tf.Tensor) => tf.Tensor,
  inputGrad: (dy: tf.Tensor4D, k: tf.Tensor4D) => tf.Tensor,
  kGrad: (x: tf.Tensor4D, dy: tf.Tensor4D) => tf.Tensor,
): tf.Tensor {
  const trainable = k instanceof tf.Variable && k.trainable;
  // The kernel is an input too (saved): a kernel sliced for a group of channels is disposed with
  // the forward pass otherwise. A constant's gradient is zero and never used.
  const f = tf.customGrad(((xx: tf.Tensor, kk: tf.Tensor, save: (ts: tf.Tensor[]) => void) => {
    save([xx, kk]);
    return {
      value: value(xx, kk),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
        inputGrad(dy as tf.Tensor4D, saved[1] as tf.Tensor4D),
        trainable ? kGrad(saved[0] as tf.Tensor4D, dy as tf.Tensor4D) : tf.zerosLike(saved[1]),
      ],
    };
  }) as Parameters<typeof tf.customGrad>[0]);
  return f(x, k);
}

/**
 * The gradient of a convolution's loss with respect to its kernel, as a convolution:
 * dK[i, j, ci, co] = sum over n, h, w of xp[n, h*sh + i*dh, w*sw + j*dw, ci] * dy[n, h, w, co], with
 * xp the padded input. That is a stride-1 convolution of xp with the images as channels
 * ([ci, Hp, Wp, n]) by dy as the kernel ([Ho, Wo, n, co]) dilated by the strides; its outputs at
 * (i*dh, j*dw) are dK (the filter-gradient identity of Dumoulin & Visin 2016, as cuDNN's
 * backward-filter computes it).
 */
function kernelGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  kh: number,
  kw: number,
  strides: [number, number],
  pads: [[number, number], [number, number]],
  dil: [number, number] = [1, 1],
): tf.Tensor4D {
  const [[pt, pb], [pl, pr]] = pads;
  const xp = tf.pad(x, [
    [0, 0],
    [pt, Math.max(pb, 0)],
    [pl, Math.max(pr, 0)],
    [0, 0],
  ]);
  const xs = tf.transpose(xp, [3, 1, 2, 0]) as tf.Tensor4D;
  const ks = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D;
  const full = tf.conv2d(xs, ks, 1, 'valid', 'NHWC', strides);
  const [ci, , , co] = full.shape;
  const taps =
    dil[0] === 1 && dil[1] === 1
      ? tf.slice(full, [0, 0, 0, 0], [-1, kh, kw, -1])
      : tf.stridedSlice(
          full,
          [0, 0, 0, 0],
          [ci, (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1, co],
          [1, dil[0], dil[1], 1],
        );
  return tf.transpose(taps, [1, 2, 0, 3]) as tf.Tensor4D;
}

/**
 * A depthwise convolution (kernel [kh, kw, 1, cin * mult], the graph's layout, which is tfjs's
 * [kh, kw, cin, mult] with the same bytes) with gradients the wasm backend can compute: it has no
 * DepthwiseConv2dNativeBackpropInput or ...Filter kernel (MobileNets crashed in the sensitivity
 * screen). The input gradient is, as for conv2dFastGrad, a stride-1 depthwise convolution of the
 * zero-dilated output gradient with the flipped kernel, each of the cin * mult output channels on
 * its own, then summed over each input channel's mult outputs. The kernel gradient is one
 * reduction per tap: dK[i, j, c, m] = sum over n, h, w of xp[n, h*sh + i*dh, w*sw + j*dw, c] *
 * dy[n, h, w, c * mult + m].
 */
function depthwiseFastGrad(
  x: tf.Tensor4D,
  k: tf.Tensor4D,
  strides: [number, number],
  pad: Padding,
  dil: [number, number],
): tf.Tensor {
  const [kh, kw, , cout] = k.shape;
  const [N, H, W, cin] = x.shape;
  const M = cout / cin;
  const [sh, sw] = strides;
  const [dh, dw] = dil;
  const [ekh, ekw] = [(kh - 1) * dh + 1, (kw - 1) * dw + 1];
  const pads = explicitPads(pad, H, W, ekh, ekw, sh, sw);
  const [[pt, pb], [pl, pr]] = pads;
  const value = (xx: tf.Tensor, kk: tf.Tensor) =>
    tf.depthwiseConv2d(
      xx as tf.Tensor4D,
      tf.reshape(kk, [kh, kw, cin, M]) as tf.Tensor4D,
      strides,
      tfPad(pad),
      'NHWC',
      dil,
    );
  if (pt > ekh - 1 || pl > ekw - 1) return value(x, k);
  const inputGrad = (dy: tf.Tensor4D, kk: tf.Tensor4D) => {
    const d = dilate(dy, sh, sw);
    const back = tf.reshape(tf.reverse(kk, [0, 1]), [kh, kw, cout, 1]) as tf.Tensor4D;
    const y = tf.depthwiseConv2d(d, back, 1, backPads(d, H, W, ekh, ekw, pt, pl), 'NHWC', dil);
    return M === 1 ? y : tf.sum(tf.reshape(y, [N, H, W, cin, M]), 4);
  };
  const kGrad = (xx: tf.Tensor4D, dy: tf.Tensor4D) => {
    const xp = tf.pad(xx, [
      [0, 0],
      [pt, Math.max(pb, 0)],
      [pl, Math.max(pr, 0)],
      [0, 0],
    ]);
    const [, Ho, Wo] = dy.shape;
    const rows = dy.shape[0] * Ho * Wo;
    const g = tf.reshape(dy, [rows, cin, M]);
    const taps: tf.Tensor[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const xs = tf.stridedSlice(
          xp,
          [0, i * dh, j * dw, 0],
          [xx.shape[0], i * dh + (Ho - 1) * sh + 1, j * dw + (Wo - 1) * sw + 1, cin],
          [1, sh, sw, 1],
        );
        taps.push(tf.sum(tf.mul(tf.reshape(xs, [rows, cin, 1]), g), 0));
      }
    }
    return tf.reshape(tf.stack(taps), [kh, kw, 1, cout]);
  };
  return withGrads(x, k, value, inputGrad, kGrad);
}

/**
 * Convolution with groups: groups = 1 is tf.conv2d; groups = input channels (depthwise, the
 * kernel [kh, kw, 1, cin * mult] is tfjs's depthwise [kh, kw, cin, mult] with the same bytes);
 * anything between runs each group on its slice of channels and concatenates.
 */
export function conv2d(
  x: tf.Tensor4D,
  k: tf.Tensor4D,
  strides: [number, number],
  pad: Padding,
  dil: [number, number],
  groups: number,
): tf.Tensor {
  if (groups === 1) return conv2dFastGrad(x, k, strides, pad, dil);
  const cin = x.shape[3];
  const [, , cg, cout] = k.shape;
  if (groups === cin) return depthwiseFastGrad(x, k, strides, pad, dil);
  const og = cout / groups;
  const parts = Array.from({ length: groups }, (_, g) =>
    conv2dFastGrad(
      tf.slice(x, [0, 0, 0, g * cg], [-1, -1, -1, cg]),
      tf.slice(k, [0, 0, 0, g * og], [-1, -1, -1, og]) as tf.Tensor4D,
      strides,
      pad,
      dil,
    ),
  );
  return tf.concat(parts, 3);
}

/**
 * Why a layer's kernel cannot be trained here, or null: the wasm backend has gradients for plain,
 * dilated and depthwise convolutions' kernels (kernelGrad, depthwiseFastGrad above), none for a
 * grouped one's (each group's kernel is a slice of the layer's) or past a pad wider than the kernel.
 */
export function frozenKernel(n: GraphNode): string | null {
  const s = n.spec;
  if (s.op !== 'conv2d') return null;
  // Depthwise: groups = input channels, one input channel per group ([kh, kw, 1, cin * mult]).
  if ((s.groups ?? 1) !== 1 && s.kernelShape[2] !== 1)
    return 'grouped convolution: no kernel gradient on the wasm backend';
  const [kh, kw] = s.kernelShape;
  const [ekh, ekw] = [(kh - 1) * s.dilation[0] + 1, (kw - 1) * s.dilation[1] + 1];
  if (s.padding !== 'valid' && s.padding !== 'same' && (s.padding[0][0] > ekh - 1 || s.padding[1][0] > ekw - 1))
    return 'padding wider than the kernel: no kernel gradient on the wasm backend';
  return null;
}

/**
 * Why a layer's parameters stay fixed when the rest trains, or null: its kernel (frozenKernel),
 * or a scale and shift that are not a BatchNormalization's (an ONNX model's own Mul/Add by
 * constants, input normalisation): arithmetic the user wrote, not weights.
 */
export function frozenParams(n: GraphNode): string | null {
  if (n.spec.op === 'batchnorm' && n.className !== 'BatchNormalization')
    return `a constant ${n.className} in the model's arithmetic, not a trained weight`;
  return frozenKernel(n);
}
