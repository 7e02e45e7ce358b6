/**
 * The SEAL engine: runs batches of a program on this thread with keys of its own (node-seal).
 */
import { UserError } from '../errors';
import type { EncryptedModelReport } from '../report';
import { CkksParams } from './params';
import { LinearOps, runProgram } from './lower';
import { Program } from './program';
import { Ct, SealBackend } from './seal';

/** Samples packed for one run of the program. */
export interface Batch { start: number; cnt: number; packed: Float64Array[] }
/** Everything a thread needs to run batches: plain data, so that it crosses to a worker as it is. */
export interface BatchJob { program: Program; params: CkksParams; galoisSteps: number[]; B: number; blocks: number; batches: Batch[]; plainCacheBytes?: number }
/** One batch's decrypted output slots and timings. */
export interface BatchResult {
  start: number; cnt: number; out: Float64Array; seconds: number; levelsUsed: number; layerSeconds: Record<string, number>;
  /** The thread's first batch, which also encodes the weights' plaintexts the later ones reuse. */
  first: boolean;
}
export interface BatchRun { keygenSeconds: number; keyBytes: EncryptedModelReport['keyBytes']; primes: number[] }

/** Runs batches on this thread with keys of its own; `onBatch` sees each batch as it finishes. */
export async function runBatches(job: BatchJob, onBatch: (r: BatchResult) => void, signal?: AbortSignal): Promise<BatchRun> {
  const { program, params, galoisSteps, B, blocks } = job;
  const tk = Date.now();
  const be = await SealBackend.create(params, galoisSteps);
  if (job.plainCacheBytes !== undefined) be.plainCacheLimit = job.plainCacheBytes;
  const keygenSeconds = (Date.now() - tk) / 1000;
  try {
    const ops: LinearOps<Ct> = {
      rotate: (c, posSteps) => be.rotate(c, posSteps * B),
      // Weights (keyed) are the same plaintexts for every batch: encoded once, while memory allows.
      mulVecNoRescale: (c, v, s, key) => (key ? be.mulVectorCached(c, () => spread(v, B, be.slots), s, key) : be.mulVector(c, spread(v, B, be.slots), s)),
      addRaw: (a, b) => be.addRaw(a, b),
      addInto: (a, b) => be.addInto(a, b),
      rescale: (c) => be.rescale(c),
      addVec: (c, v) => be.addVector(c, spread(v, B, be.slots)),
      free: (c) => be.free(c),
    };
    for (const [bi, batch] of job.batches.entries()) {
      if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
      const layerSeconds: Record<string, number> = {};
      const t0 = Date.now();
      const cts = batch.packed.map((v) => be.encrypt(v));
      const out = runProgram(program, be, ops, cts, (name, sec) => { layerSeconds[name] = (layerSeconds[name] ?? 0) + sec; }, blocks).cts[0];
      const seconds = (Date.now() - t0) / 1000;
      const levelsUsed = params.levels - be.level(out);
      const dec = be.decrypt(out);
      cts.forEach((c) => be.free(c));
      be.free(out);
      onBatch({ start: batch.start, cnt: batch.cnt, out: dec, seconds, levelsUsed, layerSeconds, first: bi === 0 });
    }
    return { keygenSeconds, keyBytes: be.keySizes, primes: Array.from({ length: params.levels + 1 }, (_, l) => be.prime(l)) };
  } finally {
    be.dispose();
  }
}

/** Spreads a per-position vector (periodic in its length) over slots: slot q*B+b = v[q mod len]. */
export function spread(v: Float64Array, B: number, slots: number): Float64Array {
  const out = new Float64Array(slots);
  for (let q = 0; q < slots / B; q++) { const x = v[q % v.length]; for (let b = 0; b < B; b++) out[q * B + b] = x; }
  return out;
}
