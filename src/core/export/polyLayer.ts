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
    const offset = config.channel_offset ?? (config as unknown as { channelOffset?: number[] | null }).channelOffset ?? null;
    this.cfg = { ...config, channel_offset: offset };
    delete (this.cfg as unknown as { channelOffset?: unknown }).channelOffset;
    this.offset = offset ? Float32Array.from(offset) : undefined;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    const ch = this.cfg.channels;
    const channels = ch ? { intervals: ch.map((c) => ({ a: c.interval[0], b: c.interval[1] })), coeffs: ch.map((c) => c.coefficients) } : undefined;
    return tf.tidy(() => applyPoly(x, { coeffs: this.cfg.coefficients, a: this.cfg.interval[0], b: this.cfg.interval[1], channels, channelOffset: this.offset }));
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape | tf.Shape[] {
    return inputShape;
  }

  override getConfig(): tf.serialization.ConfigDict {
    const { name: _n, trainable: _t, ...rest } = this.cfg;
    return { ...super.getConfig(), ...rest } as unknown as tf.serialization.ConfigDict;
  }

  static override fromConfig<T extends tf.serialization.Serializable>(cls: tf.serialization.SerializableConstructor<T>, config: tf.serialization.ConfigDict): T {
    return new cls(config) as T;
  }
}

let registered = false;
export function registerPolyLayer(): void {
  if (registered) return;
  tf.serialization.registerClass(HEPolyActivation);
  registered = true;
}
