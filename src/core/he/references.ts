/**
 * What the whole-model encrypted tests share (SEAL's modelTest.ts, Lattigo's lattigoTest.ts): the
 * packing and the recorded trace for an engine's chain, the test samples packed per run, the
 * plaintext models' logits they are compared with (the original and the approximated, float32
 * tfjs), and the summary of the decrypted results.
 */
import { tf } from '../model/backend';
import { Executor } from '../model/execute';
import { Graph, size } from '../model/graph';
import { gather } from '../profile/profiler';
import type { EncryptedModelReport, SampleResult } from '../report';
import { recordProgram, emulate } from './emulate';
import { latencyPacking, packSamples } from './layout';
import type { Program } from './program';
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

/** An engine's chain as the recorder needs it. */
export interface RunChain {
  primes: number[];
  levels: number;
  slots: number;
  /** The bootstrapping's q0 / |m| (Lattigo with bootstrapping). */
  messageRatio?: number;
}

/**
 * The packing and the trace an engine runs. Throughput: as many samples per ciphertext as the
 * largest period allows, one ciphertext per channel. Latency: one sample, its channels side by
 * side (channel packing) or a flat input in permuted copies (input copies) where the program
 * allows it, else one sample in the batch layout. A dry run gives the largest period, hence the
 * samples per ciphertext; the program is then recorded as the trace (trace.ts) on the engine's
 * own primes, so that keys are made for exactly the rotations it makes and the levels it uses are
 * predicted before any key exists.
 */
export function recordRuns(program: Program, latency: boolean, chain: RunChain, refresh?: Map<number, number[]>) {
  const layout = latency ? latencyPacking(program, chain.slots) : { blocks: 1, copies: false, why: null };
  const { blocks } = layout;
  const dry = emulate(program, 1, true, undefined, undefined, blocks);
  const B = latency ? 1 : Math.max(1, Math.floor(chain.slots / dry.maxPeriod));
  const trace = recordProgram(program, { ...chain, B, blocks, refresh });
  const packing: EncryptedModelReport['packing'] = {
    kind: latency ? 'latency' : 'throughput',
    channelsPerCiphertext: layout.copies ? 1 : blocks,
    ...(!layout.copies && (trace.predicted.channelsPerCiphertext ?? 1) > blocks
      ? { multiplexed: trace.predicted.channelsPerCiphertext }
      : {}),
    ...(layout.copies ? { inputCopies: blocks } : {}),
    why: layout.why,
  };
  return { blocks, B, trace, packing };
}

/** The test samples in runs of B (one sample in latency packing), each packed into its input slot vectors. */
export function packRuns(
  program: Program,
  refs: { n: number; xs: Float32Array; per: number },
  B: number,
  slots: number,
  blocks: number,
): { start: number; cnt: number; packed: Float64Array[] }[] {
  const runs = [];
  for (let start = 0; start < refs.n; start += B) {
    const cnt = Math.min(B, refs.n - start);
    const xs = refs.xs.subarray(start * refs.per, (start + cnt) * refs.per);
    runs.push({ start, cnt, packed: packSamples(program, xs, cnt, B, slots, blocks) });
  }
  return runs;
}

/** Agreement of the encrypted predictions with the plaintext approximated model's, and the largest logit error. */
export const resultSummary = (results: SampleResult[]) => ({
  agreement: results.filter((r) => r.encrypted === r.plainApproximated).length / Math.max(1, results.length),
  maxAbsErrLogits: Math.max(0, ...results.map((r) => r.maxAbsErrLogits)),
});
