/**
 * A polynomial activation whose Chebyshev coefficients are trainable: coefficients = start +
 * scale * delta, with delta a tf.Variable starting at zero and scale the largest starting
 * coefficient, so that one learning rate moves every layer by the same relative amount whatever
 * its coefficients' magnitude. The interval and the per-channel offset stay fixed: the depth and
 * the folded affine maps are what the degree selection priced. Coefficient tuning (tune.ts) and
 * approximation-aware fine-tuning (finetune/finetune.ts) both train these.
 */
import { tf } from '../model/backend';
import { clenshaw } from '../model/execute';
import { Interval } from '../numerics/chebyshev';
import { PolyActivation } from '../numerics/polynomial';

export class TrainablePoly {
  /** Starting coefficients, K x C (per channel) or K. */
  readonly start: tf.Tensor;
  readonly delta: tf.Variable;
  readonly scale: number;
  readonly intervals: Interval | Interval[];
  private readonly offset: tf.Tensor | null;
  private readonly from: PolyActivation;

  constructor(p: PolyActivation) {
    this.from = p;
    const ch = p.channels;
    const K = ch ? ch.coeffs[0].length : p.coeffs.length;
    let scale = 0;
    if (ch) {
      const C = ch.coeffs.length;
      const m = new Float32Array(K * C);
      ch.coeffs.forEach((cc, c) => cc.forEach((v, k) => { m[k * C + c] = v; scale = Math.max(scale, Math.abs(v)); }));
      this.start = tf.tensor2d(m, [K, C]);
    } else {
      this.start = tf.tensor1d(Array.from(p.coeffs));
      for (let k = 0; k < K; k++) scale = Math.max(scale, Math.abs(p.coeffs[k]));
    }
    this.scale = Math.max(scale, 1e-6);
    this.delta = tf.variable(tf.zerosLike(this.start));
    this.intervals = ch ? ch.intervals : { a: p.a, b: p.b };
    this.offset = p.channelOffset ? tf.tensor1d(p.channelOffset) : null;
  }

  /** The polynomial with the current coefficients on x (differentiable in delta). */
  apply(x: tf.Tensor): tf.Tensor {
    const rows = tf.unstack(tf.add(this.start, tf.mul(this.delta, this.scale)));
    const y = clenshaw(x, this.intervals, rows.length, (k) => rows[k]);
    return this.offset ? tf.sub(y, this.offset) : y;
  }

  /** The current coefficients as plain data: same interval(s) and offset as the start. */
  current(): PolyActivation {
    const c = tf.tidy(() => tf.add(this.start, tf.mul(this.delta, this.scale)).dataSync() as Float32Array);
    const ch = this.from.channels;
    if (!ch) return { ...this.from, coeffs: Array.from(c) };
    const C = ch.coeffs.length;
    const K = ch.coeffs[0].length;
    return { ...this.from, channels: { intervals: ch.intervals, coeffs: ch.coeffs.map((_, j) => Array.from({ length: K }, (__, k) => c[k * C + j])) } };
  }

  dispose(): void {
    this.start.dispose(); this.delta.dispose(); this.offset?.dispose();
  }
}
