/**
 * The SEAL engine: runs batches of a program's trace (trace.ts) on this thread with keys of its
 * own (node-seal). The trace is the one every engine runs; this file only maps its operations to
 * SEAL's, with the weights' plaintexts encoded once per thread and reused by later batches.
 */
import { UserError } from '../errors';
import type { EncryptedModelReport } from '../report';
import { CkksParams } from './params';
import { Ct, SealBackend } from './seal';
import { Trace, TraceExecutor, runTrace, spread } from './trace';

/** Samples packed for one run of the program. */
export interface Batch {
  start: number;
  cnt: number;
  packed: Float64Array[];
}
/** Everything a thread needs to run batches: plain data, so that it crosses to a worker as it is. */
export interface BatchJob {
  trace: Trace;
  params: CkksParams;
  batches: Batch[];
  plainCacheBytes?: number;
}
/** One batch's decrypted output slots and timings. */
export interface BatchResult {
  start: number;
  cnt: number;
  out: Float64Array;
  seconds: number;
  levelsUsed: number;
  layerSeconds: Record<string, number>;
  /** The thread's first batch, which also encodes the weights' plaintexts the later ones reuse. */
  first: boolean;
}
export interface BatchRun {
  keygenSeconds: number;
  keyBytes: EncryptedModelReport['keyBytes'];
  primes: number[];
}

/** The trace's operations on SEAL (no bootstrapping: SEAL has none). */
export function sealExecutor(be: SealBackend, t: Trace): TraceExecutor<Ct> {
  const slots = be.slots;
  return {
    rotate: (a, k) => be.rotate(a, k),
    // Weights are the same plaintexts for every batch: encoded once, while memory allows.
    mulPlain: (a, v, s, id) => be.mulVectorCached(a, () => spread(v, t.B, slots), s, `c${id}`),
    rescale: (a) => be.rescale(a),
    add: (a, b, inPlace) => (inPlace ? be.addInto(a, b) : be.addRaw(a, b)),
    sub: (a, b) => be.sub(a, b),
    addPlain: (a, v) => be.addVector(a, spread(v, t.B, slots)),
    addConst: (a, k) => be.addConst(a, k),
    mul: (a, b) => be.mul(a, b),
    mulConst: (a, k, s) => be.mulConst(a, k, s),
    negate: (a) => be.negate(a),
    drop: (a, level) => be.modSwitchTo(a, level),
    constant: (k, level, s) => be.constant(k, level, s),
    free: (a) => be.free(a),
  };
}

/** Runs batches on this thread with keys of its own; `onBatch` sees each batch as it finishes. */
export async function runBatches(
  job: BatchJob,
  onBatch: (r: BatchResult) => void,
  signal?: AbortSignal,
): Promise<BatchRun> {
  const { trace, params } = job;
  const tk = Date.now();
  const be = await SealBackend.create(params, trace.predicted.rotations);
  if (job.plainCacheBytes !== undefined) be.plainCacheLimit = job.plainCacheBytes;
  const keygenSeconds = (Date.now() - tk) / 1000;
  try {
    const primes = Array.from({ length: params.levels + 1 }, (_, l) => be.prime(l));
    if (primes.some((q, l) => q !== trace.primes[l]))
      throw new Error("the trace was recorded for other primes than SEAL's");
    const ex = sealExecutor(be, trace);
    for (const [bi, batch] of job.batches.entries()) {
      if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
      const layerSeconds: Record<string, number> = {};
      const t0 = Date.now();
      let tStep = t0;
      const cts = batch.packed.map((v) => be.encrypt(v));
      const out = runTrace(
        trace,
        ex,
        cts,
        (name) => {
          const now = Date.now();
          layerSeconds[name] = (layerSeconds[name] ?? 0) + (now - tStep) / 1000;
          tStep = now;
        },
        signal,
      );
      const seconds = (Date.now() - t0) / 1000;
      const levelsUsed = params.levels - be.level(out);
      const dec = be.decrypt(out);
      cts.forEach((c) => be.free(c));
      be.free(out);
      onBatch({ start: batch.start, cnt: batch.cnt, out: dec, seconds, levelsUsed, layerSeconds, first: bi === 0 });
    }
    return { keygenSeconds, keyBytes: be.keySizes, primes };
  } finally {
    be.dispose();
  }
}
