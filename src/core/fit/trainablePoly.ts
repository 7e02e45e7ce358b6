/**
 * A polynomial activation whose Chebyshev coefficients are trainable: coefficients = start +
 * scale * delta, with delta a tf.Variable starting at zero and scale the largest starting
 * coefficient (times `perTerm`'s factor, below), so that one learning rate moves every layer by
 * the same relative amount whatever its coefficients' magnitude. The interval and the
 * per-channel offset stay fixed: the depth and the folded affine maps are what the degree
 * selection priced. Coefficient tuning (tune.ts) and
 * approximation-aware fine-tuning (finetune/finetune.ts) both train these.
 */
import { tf } from '../model/backend';
import { clenshaw } from '../model/execute';
import { Interval } from '../numerics/chebyshev';
import { PolyActivation, polyTerms } from '../numerics/polynomial';

export class TrainablePoly {
  /** Starting coefficients, K x C (per channel) or K. */
  readonly start: tf.Tensor;
  readonly delta: tf.Variable;
  readonly scale: number;
  readonly intervals: Interval | Interval[];
  private readonly offset: tf.Tensor | null;
  private readonly from: PolyActivation;

  /**
   * `perTerm`: divide the scale by the number of coefficients K. Adam moves every coefficient by
   * about the step size at each step whatever its gradient, and since |T_k| <= 1 on the interval,
   * K coefficients moved by s move the polynomial by up to K * s: a degree-31 polynomial eight
   * times as far as a degree-3 one at the same step size. Per term, every polynomial moves by at
   * most the step size (relative to its largest coefficient) whatever its degree. Fine-tuning
   * needs it (ResNet-20, degrees 7-31, coefficients alone at a relative step of 3e-3: cross-entropy
   * 0.48 -> 16.6 in ten steps, values beyond 1e38); coefficient tuning's steps were chosen without.
   */
  constructor(p: PolyActivation, perTerm = false) {
    this.from = p;
    const ch = p.channels;
    const K = polyTerms(p);
    let scale = 0;
    if (ch) {
      const C = ch.coeffs.length;
      const m = new Float32Array(K * C);
      ch.coeffs.forEach((cc, c) =>
        cc.forEach((v, k) => {
          m[k * C + c] = v;
          scale = Math.max(scale, Math.abs(v));
        }),
      );
      this.start = tf.tensor2d(m, [K, C]);
    } else {
      this.start = tf.tensor1d(Array.from(p.coeffs));
      for (let k = 0; k < K; k++) scale = Math.max(scale, Math.abs(p.coeffs[k]));
    }
    this.scale = Math.max(scale, 1e-6) / (perTerm ? K : 1);
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
    return {
      ...this.from,
      channels: {
        intervals: ch.intervals,
        coeffs: ch.coeffs.map((_, j) => Array.from({ length: K }, (__, k) => c[k * C + j])),
      },
    };
  }

  dispose(): void {
    this.start.dispose();
    this.delta.dispose();
    this.offset?.dispose();
  }
}
