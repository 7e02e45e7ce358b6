/**
 * `HEPolyActivation`: a TensorFlow.js layer that evaluates a Chebyshev series on [a, b], or one
 * per channel (last axis), and subtracts an optional per-channel offset. Exported approximated models use it in place of
 * each activation; call `registerPolyLayer()` before `tf.loadLayersModel` on such a model.
 */
import { tf } from '../model/backend';
import { applyPoly } from '../model/execute';

export const POLY_LAYER_CLASS = 'HEPolyActivation';

export interface PolyLayerConfig {
  name?: string;
  basis: 'chebyshev';
  interval: [number, number];
  coefficients: number[];
  channel_offset: number[] | null;
  /** Per-channel polynomials (last axis); when present, interval and coefficients are not used. */
  channels?: { interval: [number, number]; coefficients: number[] }[] | null;
  /** The activation this polynomial replaces (documentation only). */
  replaces: string;
  degree: number;
  trainable?: boolean;
}

export class HEPolyActivation extends tf.layers.Layer {
  static readonly className = POLY_LAYER_CLASS;
  readonly cfg: PolyLayerConfig;
  private readonly offset: Float32Array | undefined;

  constructor(config: PolyLayerConfig) {
    super({ name: config.name, trainable: false });
    if (config.basis !== 'chebyshev') throw new Error(`HEPolyActivation: unknown basis ${config.basis}`);
    // tfjs turns snake_case config keys into camelCase when it deserialises a model.json.
    const offset =
      config.channel_offset ?? (config as unknown as { channelOffset?: number[] | null }).channelOffset ?? null;
    this.cfg = { ...config, channel_offset: offset };
    delete (this.cfg as unknown as { channelOffset?: unknown }).channelOffset;
    this.offset = offset ? Float32Array.from(offset) : undefined;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const ch = this.cfg.channels;
    const channels = ch
      ? { intervals: ch.map((c) => ({ a: c.interval[0], b: c.interval[1] })), coeffs: ch.map((c) => c.coefficients) }
      : undefined;
    return tf.tidy(() =>
      applyPoly(x, {
        coeffs: this.cfg.coefficients,
        a: this.cfg.interval[0],
        b: this.cfg.interval[1],
        channels,
        channelOffset: this.offset,
      }),
    );
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override getConfig(): tf.serialization.ConfigDict {
    const { name: _n, trainable: _t, ...rest } = this.cfg;
    return { ...super.getConfig(), ...rest } as unknown as tf.serialization.ConfigDict;
  }

  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config) as T;
  }
}

export const POLY_MAXPOOL_CLASS = 'HEPolyMaxPooling2D';

/** One step of a max tree: along the height or the width, operands `offset` apart, |x| by the polynomial. */
export interface PolyMaxStep {
  axis: 'height' | 'width';
  offset: number;
  poly: PolyLayerConfig;
}

export interface PolyMaxPoolConfig {
  name?: string;
  /** Edge padding [[top, bottom], [left, right]] before the tree (max pooling's padding). */
  padding: [[number, number], [number, number]];
  steps: PolyMaxStep[];
  /** Positions kept after the tree: every strides[0]-th row and strides[1]-th column, out of shape. */
  strides: [number, number];
  output: [number, number];
  /** GlobalMaxPooling2D: the [1, 1, C] result flattened to [C]. */
  global: boolean;
  replaces: string;
  trainable?: boolean;
}

/**
 * `HEPolyMaxPooling2D`: a max pooling evaluated as its tree of pairwise maxima (model/maxTree.ts),
 * max(a, b) = (a + b) / 2 + p(a - b) / 2 with p each step's polynomial for |x|: what the CKKS
 * program computes. Exported approximated models use it in place of MaxPooling2D and
 * GlobalMaxPooling2D layers; `registerPolyLayer()` registers it with HEPolyActivation.
 */
export class HEPolyMaxPooling2D extends tf.layers.Layer {
  static readonly className = POLY_MAXPOOL_CLASS;
  readonly cfg: PolyMaxPoolConfig;
  private readonly polys: HEPolyActivation[];

  constructor(config: PolyMaxPoolConfig) {
    super({ name: config.name, trainable: false });
    this.cfg = config;
    this.polys = config.steps.map((st) => new HEPolyActivation(st.poly));
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x0 = Array.isArray(inputs) ? inputs[0] : inputs;
    return tf.tidy(() => {
      const [[t, b], [l, r]] = this.cfg.padding;
      let x = x0;
      // Edge padding: each border row and column repeated.
      const edge = (v: tf.Tensor, ax: number, before: number, after: number) => {
        if (!before && !after) return v;
        const n = v.shape[ax];
        const one = (at: number, k: number) =>
          tf.tile(
            tf.slice(
              v,
              v.shape.map((_, i) => (i === ax ? at : 0)),
              v.shape.map((d, i) => (i === ax ? 1 : -1)),
            ),
            v.shape.map((_, i) => (i === ax ? k : 1)),
          );
        return tf.concat([...(before ? [one(0, before)] : []), v, ...(after ? [one(n - 1, after)] : [])], ax);
      };
      x = edge(edge(x, 1, t, b), 2, l, r);
      this.cfg.steps.forEach((st, j) => {
        const ax = st.axis === 'height' ? 1 : 2;
        const len = (x.shape[ax] as number) - st.offset;
        const size = x.shape.map((d, i) => (i === ax ? len : -1));
        const a = tf.slice(
          x,
          x.shape.map(() => 0),
          size,
        );
        const bb = tf.slice(
          x,
          x.shape.map((_, i) => (i === ax ? st.offset : 0)),
          size,
        );
        const p = this.polys[j].call(tf.sub(a, bb)) as tf.Tensor;
        x = tf.mul(tf.add(tf.add(a, bb), p), 0.5);
      });
      const [sh, sw] = this.cfg.strides;
      const [ho, wo] = this.cfg.output;
      const [n, , , c] = x.shape as [number, number, number, number];
      if (sh > 1 || sw > 1 || x.shape[1] !== ho || x.shape[2] !== wo)
        x = tf.stridedSlice(x, [0, 0, 0, 0], [n, (ho - 1) * sh + 1, (wo - 1) * sw + 1, c], [1, sh, sw, 1]);
      return this.cfg.global ? tf.reshape(x, [n, c]) : x;
    });
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    return this.cfg.global ? [s[0], s[3]] : [s[0], this.cfg.output[0], this.cfg.output[1], s[3]];
  }

  override getConfig(): tf.serialization.ConfigDict {
    const { name: _n, trainable: _t, ...rest } = this.cfg;
    return { ...super.getConfig(), ...rest } as unknown as tf.serialization.ConfigDict;
  }

  static override fromConfig<T extends tf.serialization.Serializable>(
    cls: tf.serialization.SerializableConstructor<T>,
    config: tf.serialization.ConfigDict,
  ): T {
    return new cls(config) as T;
  }
}

let registered = false;
export function registerPolyLayer(): void {
  if (registered) return;
  tf.serialization.registerClass(HEPolyActivation);
  tf.serialization.registerClass(HEPolyMaxPooling2D);
  registered = true;
}
