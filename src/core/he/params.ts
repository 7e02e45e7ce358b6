/**
 * CKKS parameters at 128-bit security (HomomorphicEncryption.org standard, as enforced by SEAL's
 * CoeffModulus bounds): a modulus chain of 60-bit special primes at both ends and 40-bit primes,
 * one per level, between. Max log Q: N=8192 -> 218 bits (2 levels), 16384 -> 438 (7),
 * 32768 -> 881 (19). SEAL has no bootstrapping, so a whole computation must fit one chain.
 */
import * as os from 'os';
import { UserError } from '../errors';

export const RING_LEVELS: Record<number, number> = { 8192: 2, 16384: 7, 32768: 19 };

/** The smallest ring whose 128-bit chain holds `levels`; null: none does (the network needs bootstrapping). */
export function ringFor(levels: number): number | null {
  const rings = Object.keys(RING_LEVELS)
    .map(Number)
    .sort((a, b) => a - b);
  return rings.find((n) => RING_LEVELS[n] >= levels) ?? null;
}
export const SCALE_BITS = 40;

export interface CkksParams {
  ringSize: number;
  levels: number;
  /** Bit sizes of the chain, first to last (the last is the special key-switching prime). */
  modulusBits: number[];
  scaleBits: number;
  slots: number;
}

export function paramsFor(ringSize: number, levels: number): CkksParams {
  return {
    ringSize,
    levels,
    modulusBits: [60, ...new Array<number>(levels).fill(SCALE_BITS), 60],
    scaleBits: SCALE_BITS,
    slots: ringSize / 2,
  };
}

/**
 * The smallest ring (or the requested one) whose chain holds `needed` levels. Refuses with the
 * levels needed and available, and what to lower, when even N=32768 is too small.
 */
export function chooseParams(needed: number, what: string, lower: string[], ringSize?: number): CkksParams {
  const rings = ringSize ? [ringSize] : [8192, 16384, 32768];
  for (const n of rings) {
    const avail = RING_LEVELS[n];
    if (avail === undefined)
      throw new UserError('OPTION_INVALID', `ring size ${n} is not supported`, 'pass --ring-size 8192, 16384 or 32768');
    if (needed <= avail) return paramsFor(n, needed);
  }
  const n = rings[rings.length - 1];
  throw new UserError(
    'BUDGET_INFEASIBLE',
    `${what} needs ${needed} levels but CKKS at N=${n} with 128-bit security offers ${RING_LEVELS[n]}`,
    lower.length
      ? `lower the degree of ${lower.join(', ')} (he-approx analyze --level-budget ${RING_LEVELS[n]})`
      : 'use a larger ring size',
  );
}

/** Bytes of a fresh ciphertext: two polynomials of N 64-bit coefficients per prime of the data chain. */
export function ciphertextBytes(p: CkksParams): number {
  return 2 * (p.modulusBits.length - 1) * p.ringSize * 8;
}

/**
 * In-memory sizes of SEAL's keys, from its layout (serialising large keys to measure them would
 * copy them inside the 4 GB wasm heap): a key-switching key holds, per data prime, a
 * 2-polynomial ciphertext over all primes; the public key is one such ciphertext.
 */
export function sealKeySizes(
  p: CkksParams,
  rotations: number,
): { publicKey: number; relinKeys: number; galoisKeys: number } {
  const allPrimes = p.modulusBits.length;
  const ct = 2 * allPrimes * p.ringSize * 8;
  const ksk = (allPrimes - 1) * ct;
  return { publicKey: ct, relinKeys: ksk, galoisKeys: rotations * ksk };
}

/** Weights' plaintexts an encrypted-test thread keeps across its runs, at most (seal.ts, mulVectorCached). */
export const PLAIN_CACHE_BYTES = 400e6;

/** node-seal's 32-bit WebAssembly memory, less room for SEAL's own pools and temporaries. */
export const SEAL_HEAP_BYTES = 3.2e9;

/**
 * SEAL's memory for a test, estimated before any key is generated: its keys (sealKeySizes) and
 * `ciphertexts` live ciphertexts. Refused, with the estimate and the limit, when it exceeds
 * node-seal's 4 GB WebAssembly memory or the memory the machine has free (`free`: os.freemem()
 * unless a test passes another): SEAL would abort half-way, or the system start killing processes.
 */
export function checkHeMemory(
  p: CkksParams,
  rotations: number,
  ciphertexts: number,
  fix: string,
  free = os.freemem(),
): number {
  const ct = ciphertextBytes(p);
  const k = sealKeySizes(p, rotations);
  const keys = k.publicKey + k.relinKeys + k.galoisKeys;
  const bytes = keys + ciphertexts * ct;
  const gb = (x: number) => `${(x / 1e9).toFixed(1)} GB`;
  const what = `the encrypted test at N=${p.ringSize} with ${p.levels} levels needs about ${gb(bytes)} (keys ${gb(keys)}${rotations ? ` with ${rotations} rotation steps` : ''}, ${ciphertexts} ciphertexts of ${(ct / 1e6).toFixed(0)} MB)`;
  if (bytes > SEAL_HEAP_BYTES)
    throw new UserError('MEMORY_LIMIT', `${what}, more than node-seal's 4 GB WebAssembly memory allows`, fix);
  if (bytes > 0.9 * free)
    throw new UserError(
      'MEMORY_LIMIT',
      `${what}, but this machine has ${gb(free)} free`,
      `free memory (close other programs), or ${fix}`,
    );
  return bytes;
}

/**
 * Threads and per-thread plaintext cache for a run whose thread needs `perThread` bytes (keys and
 * ciphertexts, checkHeMemory): the cache gets what node-seal's heap leaves, up to its bound, and no
 * more threads start than `free` bytes of the machine's memory hold (at least one: checkHeMemory
 * has refused a run that one thread cannot hold).
 */
export function threadPlan(
  perThread: number,
  wanted: number,
  free = os.freemem(),
): { threads: number; plainCacheBytes: number; bytesPerThread: number } {
  const plainCacheBytes = Math.max(0, Math.min(PLAIN_CACHE_BYTES, SEAL_HEAP_BYTES - perThread));
  const bytesPerThread = perThread + plainCacheBytes;
  return {
    threads: Math.max(1, Math.min(wanted, Math.floor((0.9 * free) / bytesPerThread))),
    plainCacheBytes,
    bytesPerThread,
  };
}
