/**
 * CKKS parameters at 128-bit security (HomomorphicEncryption.org standard, as enforced by SEAL's
 * CoeffModulus bounds): a modulus chain of 60-bit special primes at both ends and 40-bit primes,
 * one per level, between. Max log Q: N=8192 -> 218 bits (2 levels), 16384 -> 438 (7),
 * 32768 -> 881 (19). SEAL has no bootstrapping, so a whole computation must fit one chain.
 */
import { UserError } from '../errors';

export const RING_LEVELS: Record<number, number> = { 8192: 2, 16384: 7, 32768: 19 };
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
  return { ringSize, levels, modulusBits: [60, ...new Array<number>(levels).fill(SCALE_BITS), 60], scaleBits: SCALE_BITS, slots: ringSize / 2 };
}

/**
 * The smallest ring (or the requested one) whose chain holds `needed` levels. Refuses with the
 * levels needed and available, and what to lower, when even N=32768 is too small.
 */
export function chooseParams(needed: number, what: string, lower: string[], ringSize?: number): CkksParams {
  const rings = ringSize ? [ringSize] : [8192, 16384, 32768];
  for (const n of rings) {
    const avail = RING_LEVELS[n];
    if (avail === undefined) throw new UserError('OPTION_INVALID', `ring size ${n} is not supported`, 'pass --ring-size 8192, 16384 or 32768');
    if (needed <= avail) return paramsFor(n, needed);
  }
  const n = rings[rings.length - 1];
  throw new UserError('BUDGET_INFEASIBLE', `${what} needs ${needed} levels but CKKS at N=${n} with 128-bit security offers ${RING_LEVELS[n]}`,
    lower.length ? `lower the degree of ${lower.join(', ')} (he-approx analyze --level-budget ${RING_LEVELS[n]})` : 'use a larger ring size');
}
