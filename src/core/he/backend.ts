/**
 * What the CKKS polynomial evaluator needs from a backend, and a plaintext simulator of it.
 *
 * Levels are SEAL chain indices: a ciphertext at level l holds primes q_0..q_l; a rescale divides
 * by q_l and lands at level l - 1. Scales are tracked exactly (as SEAL does): the evaluator never
 * "snaps" a scale to 2^40, because SEAL's 40-bit primes differ from 2^40 by up to ~2e-5 at
 * N=32768, and snapping would add that relative error at every mismatched addition.
 */
export interface CkksBackend<C> {
  level(c: C): number;
  scale(c: C): number;
  /** The prime q_l dropped by a rescale from level l. */
  prime(level: number): number;
  /** Ciphertext x ciphertext at equal levels, then relinearise and rescale. */
  mul(a: C, b: C): C;
  /** Multiply by the real constant k encoded at scale `encScale`, then rescale. */
  mulConst(a: C, k: number, encScale: number): C;
  /** a + b (or a - b) at equal levels and equal scales. */
  add(a: C, b: C): C;
  sub(a: C, b: C): C;
  /** -a, exact (no level, same scale). */
  negate(a: C): C;
  /** a + k, with k encoded at a's scale and level (exact, no level). */
  addConst(a: C, k: number): C;
  /** A ciphertext holding the constant k in every slot, at `level` and exactly `scale`. */
  constant(k: number, level: number, scale: number): C;
  /** Drops primes (no rescale; the scale is unchanged) down to `level`. */
  modSwitchTo(a: C, level: number): C;
  /** Frees a ciphertext the evaluator no longer needs (no-op for the simulator). */
  free(c: C): void;
}

/** Counts of the operations an evaluation performed (the instrumented evaluator). */
export interface OpCounts {
  mul: number;
  mulConst: number;
  add: number;
  addConst: number;
  modSwitch: number;
}

export function newCounts(): OpCounts {
  return { mul: 0, mulConst: 0, add: 0, addConst: 0, modSwitch: 0 };
}

export class ScaleMismatchError extends Error {}

/** A simulated ciphertext: exact values, a level and a scale. */
export interface SimCt {
  v: Float64Array;
  level: number;
  scale: number;
}

/**
 * Plaintext simulator: the same level and scale bookkeeping as SEAL, with exact arithmetic and
 * no noise, and strict checks (equal levels for products, equal scales for sums, no product at
 * level 0). Used to plan before encrypting and in tests against the real run.
 */
export class SimBackend implements CkksBackend<SimCt> {
  readonly counts = newCounts();
  constructor(private readonly primes: number[]) {}
  level(c: SimCt): number {
    return c.level;
  }
  scale(c: SimCt): number {
    return c.scale;
  }
  prime(level: number): number {
    return this.primes[level];
  }
  fresh(values: ArrayLike<number>, level: number, scale: number): SimCt {
    this.width = values.length;
    return { v: Float64Array.from(values), level, scale };
  }
  private needLevels(a: SimCt, b: SimCt): void {
    if (a.level !== b.level) throw new ScaleMismatchError(`level mismatch ${a.level} vs ${b.level}`);
  }
  private needScales(a: SimCt, b: SimCt): void {
    if (Math.abs(a.scale / b.scale - 1) > 1e-12)
      throw new ScaleMismatchError(
        `scale mismatch 2^${Math.log2(a.scale).toFixed(6)} vs 2^${Math.log2(b.scale).toFixed(6)}`,
      );
  }
  mul(a: SimCt, b: SimCt): SimCt {
    this.needLevels(a, b);
    if (a.level < 1) throw new ScaleMismatchError('out of levels');
    this.counts.mul++;
    return { v: a.v.map((x, i) => x * b.v[i]), level: a.level - 1, scale: (a.scale * b.scale) / this.primes[a.level] };
  }
  mulConst(a: SimCt, k: number, encScale: number): SimCt {
    if (a.level < 1) throw new ScaleMismatchError('out of levels');
    this.counts.mulConst++;
    return { v: a.v.map((x) => x * k), level: a.level - 1, scale: (a.scale * encScale) / this.primes[a.level] };
  }
  add(a: SimCt, b: SimCt): SimCt {
    this.needLevels(a, b);
    this.needScales(a, b);
    this.counts.add++;
    return { v: a.v.map((x, i) => x + b.v[i]), level: a.level, scale: a.scale };
  }
  sub(a: SimCt, b: SimCt): SimCt {
    this.needLevels(a, b);
    this.needScales(a, b);
    this.counts.add++;
    return { v: a.v.map((x, i) => x - b.v[i]), level: a.level, scale: a.scale };
  }
  negate(a: SimCt): SimCt {
    return { v: a.v.map((x) => -x), level: a.level, scale: a.scale };
  }
  addConst(a: SimCt, k: number): SimCt {
    this.counts.addConst++;
    return { v: a.v.map((x) => x + k), level: a.level, scale: a.scale };
  }
  modSwitchTo(a: SimCt, level: number): SimCt {
    if (level > a.level) throw new ScaleMismatchError(`cannot raise level ${a.level} to ${level}`);
    if (level === a.level) return a;
    this.counts.modSwitch++;
    return { v: a.v, level, scale: a.scale };
  }
  constant(k: number, level: number, scale: number): SimCt {
    return { v: new Float64Array(this.width).fill(k), level, scale };
  }
  width = 1;
  free(): void {
    /* nothing to free */
  }
}
