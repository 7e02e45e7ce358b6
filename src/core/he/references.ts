/**
 * What the whole-model encrypted tests compare with: the test samples and the plaintext models'
 * logits (the original and the approximated, float32 tfjs), shared by the SEAL and Lattigo runs.
 */
import { tf } from '../model/backend';
import { Executor } from '../model/execute';
import { Graph, size } from '../model/graph';
import { gather } from '../profile/profiler';
import type { SampleResult } from '../report';
import { EncryptedTestOptions, testSamples } from './layerTest';

/** The plaintext references of the test samples: the original model's and the approximated model's logits (float32, tfjs). */
export async function references(o: EncryptedTestOptions, g: Graph, seedOffset: number) {
  const { ds, n, idx, polys } = await testSamples(o, g, seedOffset);
  const ex = new Executor(g);
  const xs = gather(ds, idx, 0, n);
  const xt = tf.tensor(xs, [n, ...g.inputShape]);
  const orig = ex.run(new Map([[g.input, xt]]), 0, {}).logits;
  const approx = ex.run(new Map([[g.input, xt]]), 0, { replace: polys }).logits;
  xt.dispose();
  ex.dispose();
  const K = size(g.nodes[g.output].shape);
  const argmax = (a: ArrayLike<number>, off: number) => {
    let b = 0;
    for (let j = 1; j < K; j++) if (a[off + j] > a[off + b]) b = j;
    return b;
  };
  /** Sample i's result from its decrypted logits. */
  const result = (i: number, logits: number[]): SampleResult => {
    let err = 0;
    for (let j = 0; j < K; j++) err = Math.max(err, Math.abs(logits[j] - approx[i * K + j]));
    return {
      index: idx[i],
      label: ds.labels ? ds.labels[idx[i]] : null,
      plainOriginal: argmax(orig, i * K),
      plainApproximated: argmax(approx, i * K),
      encrypted: argmax(logits, 0),
      maxAbsErrLogits: err,
    };
  };
  return { ds, n, idx, xs, per: size(g.inputShape), K, result };
}
