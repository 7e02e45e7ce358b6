/**
 * Knowledge distillation (Hinton, Vinyals & Dean 2015), shared by coefficient tuning (tune.ts) and
 * fine-tuning (finetune/finetune.ts): the approximated network learns the original network's
 * outputs on the same samples. The teacher is the original model itself, which every user has,
 * so both work without labels; with labels the two targets are mixed (Hinton et al.'s weighted
 * sum of the soft and the hard targets).
 */
import { tf } from '../model/backend';

/** The teacher's logits of the samples at positions `pick` (rows of `teacher`, `per` wide), one batch's. */
export function teacherRows(teacher: Float32Array, pick: ArrayLike<number>, per: number): Float32Array {
  const m = pick.length;
  const rows = new Float32Array(m * per);
  for (let k = 0; k < m; k++) rows.set(teacher.subarray(pick[k] * per, (pick[k] + 1) * per), k * per);
  return rows;
}

/** Logits (`per` per sample) softened by temperature T: the soft targets. */
export function softTargets(rows: Float32Array, per: number, T: number): tf.Tensor {
  return tf.softmax(tf.div(tf.tensor2d(rows, [rows.length / per, per]), T));
}

/**
 * (1 - lw) * T^2 * CE(soft, logits / T) + lw * CE(hard, logits). The T^2 keeps the soft term's
 * gradients the same size at every temperature (Hinton et al., section 2). Without `hard` (no
 * labels) the soft term alone; without `soft` (lw = 1, no teacher computed) the hard one alone.
 */
export function distillLoss(
  logits: tf.Tensor,
  soft: tf.Tensor | null,
  hard: tf.Tensor | null,
  T: number,
  lw: number,
): tf.Scalar {
  if (!soft || (hard && lw >= 1)) {
    if (!hard) throw new Error('distillLoss: neither soft nor hard targets');
    return tf.losses.softmaxCrossEntropy(hard, logits) as tf.Scalar;
  }
  const kd = tf.mul(tf.losses.softmaxCrossEntropy(soft, tf.div(logits, T)), T * T);
  if (!hard) return kd as tf.Scalar;
  return tf.add(tf.mul(kd, 1 - lw), tf.mul(tf.losses.softmaxCrossEntropy(hard, logits), lw)) as tf.Scalar;
}
