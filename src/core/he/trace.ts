/**
 * The engine-independent form of a program: the CKKS operations lowering (lower.ts) makes for one
 * packing, recorded once on a backend that only tracks levels and scales (TraceRecorder), as a
 * list of instructions on numbered ciphertexts plus the plaintext vectors they use. Every engine
 * runs that list: SEAL in process (sealRun.ts), Lattigo in its own process (engines/lattigo, with
 * bootstrapping), and the plaintext simulator (`simulateTrace`, with or without values). So the
 * levels, scales and bootstraps the recorder predicts are those every engine executes, and one
 * place (lowering) decides them.
 *
 * Scales are tracked exactly as the engines do (a rescale divides by the prime dropped, a product
 * multiplies the scales), from the engine's own primes, so every encoding scale lowering computes
 * from a ciphertext's scale is the one the engine would compute.
 */
import { UserError } from '../errors';
import { CkksBackend, SimBackend, SimCt } from './backend';

/** A ciphertext of the trace: inputs are 0 .. inputs - 1, every result a new number. */
export type Reg = number;

export type TraceOp =
  /** Rotation by k slots (left: slot i takes slot i + k). */
  | { op: 'rot'; out: Reg; a: Reg; k: number }
  /** Product with plaintext vector `c` encoded at scale s, not rescaled. */
  | { op: 'mulpt'; out: Reg; a: Reg; c: number; s: number }
  | { op: 'rescale'; out: Reg; a: Reg }
  /** a + b at equal levels and scales; `inPlace`: a is not read afterwards. */
  | { op: 'add'; out: Reg; a: Reg; b: Reg; inPlace?: boolean }
  | { op: 'sub'; out: Reg; a: Reg; b: Reg }
  /** a + plaintext vector c, encoded at a's scale and level. */
  | { op: 'addpt'; out: Reg; a: Reg; c: number }
  | { op: 'addc'; out: Reg; a: Reg; k: number }
  /** Ciphertext product, relinearised and rescaled. */
  | { op: 'mul'; out: Reg; a: Reg; b: Reg }
  /** Product with the constant k encoded at scale s, then rescaled. */
  | { op: 'mulc'; out: Reg; a: Reg; k: number; s: number }
  | { op: 'neg'; out: Reg; a: Reg }
  /** Primes dropped down to `level`, the scale unchanged. */
  | { op: 'drop'; out: Reg; a: Reg; level: number }
  /** A ciphertext holding k in every slot at `level` and scale s. */
  | { op: 'const'; out: Reg; k: number; level: number; s: number }
  /**
   * Bootstrapping: back to the top level, at scale s (the default scale, times levelZeroError's
   * factor for a ciphertext taken at level 0).
   */
  | { op: 'boot'; out: Reg; a: Reg; s: number }
  | { op: 'free'; a: Reg }
  /** The step named `name` ends here (per-layer time and progress). */
  | { op: 'mark'; name: string };

export interface Trace {
  /** Encrypted input ciphertexts, registers 0 .. inputs - 1, fresh at `levels` and scale `scale`. */
  inputs: number;
  /** The chain: levels of a fresh (or bootstrapped) ciphertext, its primes q_0 .. q_levels, the default scale. */
  levels: number;
  primes: number[];
  scale: number;
  /** Samples per ciphertext (slot = position * B + sample) and slots: a vector of length n holds position q's value at q mod n. */
  B: number;
  slots: number;
  ops: TraceOp[];
  /** Plaintext vectors by id, one value per position, periodic (spread over samples with B). */
  consts: Float64Array[];
  output: Reg;
  /** What the recorder predicts: the output's level and scale, bootstraps and rotation steps. */
  predicted: {
    outputLevel: number;
    outputScale: number;
    bootstraps: number;
    rotations: number[];
    steps: string[];
    /** Ciphertexts of each value refreshed, in order: the trace's bootstraps grouped by the value they refresh. */
    bootstrapGroups?: number[];
    /** The most channels one ciphertext of a channel-packed value holds (layout.ts: perCiphertext). */
    channelsPerCiphertext?: number;
  };
}

/** A trace's slot vector for plaintext vector v: slot q * B + b holds v[q mod length]. */
export function spread(v: Float64Array, B: number, slots: number): Float64Array {
  const out = new Float64Array(slots);
  for (let q = 0; q < slots / B; q++) {
    const x = v[q % v.length];
    for (let b = 0; b < B; b++) out[q * B + b] = x;
  }
  return out;
}

/** FNV-1a over a vector's bytes: plaintext vectors used several times are stored once. */
function hashVector(v: Float64Array): string {
  const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return `${v.length}:${(h >>> 0).toString(16)}`;
}

/**
 * The factor by which Lattigo's bootstrapping multiplies a message it takes at level 0 with scale
 * s (q0 / r its target scale, r the message ratio): its ScaleDown multiplies by round(q0 / (s r))
 * and has no prime left to rescale by, and its PREC64 path drops the error factor that leaves
 * (circuits/ckks/bootstrapping/evaluator.go). The engine carries the factor in the result's scale
 * (engines/lattigo/run.go: levelZeroError), which makes the value exact again at no level.
 */
export function levelZeroError(q0: number, ratio: number, s: number): number {
  return (s * Math.round(q0 / s / ratio) * ratio) / q0;
}

/**
 * A backend that records instead of computing: levels and scales as the engine with `primes`
 * keeps them (the same arithmetic as SimBackend), strict about the same things (levels for
 * products, no rescale at level 0), and every operation appended to the trace.
 */
export class TraceRecorder implements CkksBackend<Reg> {
  readonly ops: TraceOp[] = [];
  readonly consts: Float64Array[] = [];
  private readonly constIds = new Map<string, number>();
  private readonly state = new Map<Reg, { level: number; scale: number }>();
  private next = 0;
  bootstraps = 0;
  readonly rotations = new Set<number>();

  constructor(
    readonly primes: number[],
    readonly levels: number,
    readonly scaleDefault: number,
    readonly B: number,
    readonly slots: number,
    /** Bootstrapping available (Lattigo): `boot` takes a ciphertext back to `levels`. */
    readonly canBootstrap: boolean,
    /** The bootstrapping's q0 / |m| (the engine's chain), for the scale a bootstrap returns from level 0. */
    readonly messageRatio?: number,
  ) {}

  /** A fresh input ciphertext. */
  input(): Reg {
    return this.fresh(this.levels, this.scaleDefault);
  }

  private fresh(level: number, scale: number): Reg {
    const r = this.next++;
    this.state.set(r, { level, scale });
    return r;
  }

  private s(a: Reg): { level: number; scale: number } {
    const st = this.state.get(a);
    if (!st) throw new Error(`trace: ciphertext ${a} used after it was freed`);
    return st;
  }

  private constId(v: Float64Array): number {
    const key = hashVector(v);
    let id = this.constIds.get(key);
    if (id === undefined || !this.consts[id].every((x, i) => x === v[i])) {
      id = this.consts.length;
      this.consts.push(Float64Array.from(v));
      this.constIds.set(key, id);
    }
    return id;
  }

  level(c: Reg): number {
    return this.s(c).level;
  }
  scale(c: Reg): number {
    return this.s(c).scale;
  }
  prime(level: number): number {
    return this.primes[level];
  }

  mul(a: Reg, b: Reg): Reg {
    const x = this.s(a);
    const y = this.s(b);
    if (x.level !== y.level) throw new Error(`trace: product at levels ${x.level} and ${y.level}`);
    this.needLevel(x.level);
    const out = this.fresh(x.level - 1, (x.scale * y.scale) / this.primes[x.level]);
    this.ops.push({ op: 'mul', out, a, b });
    return out;
  }

  mulConst(a: Reg, k: number, encScale: number): Reg {
    const x = this.s(a);
    this.needLevel(x.level);
    const out = this.fresh(x.level - 1, (x.scale * encScale) / this.primes[x.level]);
    this.ops.push({ op: 'mulc', out, a, k, s: encScale });
    return out;
  }

  add(a: Reg, b: Reg): Reg {
    return this.binary('add', a, b);
  }
  sub(a: Reg, b: Reg): Reg {
    return this.binary('sub', a, b);
  }

  private binary(op: 'add' | 'sub', a: Reg, b: Reg, inPlace = false): Reg {
    const x = this.s(a);
    const y = this.s(b);
    if (x.level !== y.level) throw new Error(`trace: ${op} at levels ${x.level} and ${y.level}`);
    if (Math.abs(x.scale / y.scale - 1) > 1e-12)
      throw new Error(`trace: ${op} at scales 2^${Math.log2(x.scale)} and 2^${Math.log2(y.scale)}`);
    const out = this.fresh(x.level, x.scale);
    this.ops.push(op === 'add' && inPlace ? { op, out, a, b, inPlace } : { op, out, a, b });
    return out;
  }

  negate(a: Reg): Reg {
    const x = this.s(a);
    const out = this.fresh(x.level, x.scale);
    this.ops.push({ op: 'neg', out, a });
    return out;
  }

  addConst(a: Reg, k: number): Reg {
    const x = this.s(a);
    const out = this.fresh(x.level, x.scale);
    this.ops.push({ op: 'addc', out, a, k });
    return out;
  }

  constant(k: number, level: number, scale: number): Reg {
    const out = this.fresh(level, scale);
    this.ops.push({ op: 'const', out, k, level, s: scale });
    return out;
  }

  modSwitchTo(a: Reg, level: number): Reg {
    const x = this.s(a);
    if (level > x.level) throw new Error(`trace: cannot raise level ${x.level} to ${level}`);
    if (level === x.level) return a;
    const out = this.fresh(level, x.scale);
    this.ops.push({ op: 'drop', out, a, level });
    return out;
  }

  free(a: Reg): void {
    if (!this.state.has(a)) return;
    this.state.delete(a);
    this.ops.push({ op: 'free', a });
  }

  // ---- the linear operations lowering adds (lower.ts: LinearOps), positions in samples' units ----

  rotate(a: Reg, positions: number): Reg {
    const x = this.s(a);
    const k = (((positions * this.B) % this.slots) + this.slots) % this.slots;
    if (k === 0) throw new Error(`trace: a rotation by ${positions} positions is no rotation at ${this.slots} slots`);
    this.rotations.add(k);
    const out = this.fresh(x.level, x.scale);
    this.ops.push({ op: 'rot', out, a, k });
    return out;
  }

  mulVecNoRescale(a: Reg, v: Float64Array, encScale: number): Reg {
    const x = this.s(a);
    const out = this.fresh(x.level, x.scale * encScale);
    this.ops.push({ op: 'mulpt', out, a, c: this.constId(v), s: encScale });
    return out;
  }

  addRaw(a: Reg, b: Reg): Reg {
    return this.binary('add', a, b);
  }
  addInto(a: Reg, b: Reg): Reg {
    return this.binary('add', a, b, true);
  }

  rescale(a: Reg): Reg {
    const x = this.s(a);
    this.needLevel(x.level);
    const out = this.fresh(x.level - 1, x.scale / this.primes[x.level]);
    this.ops.push({ op: 'rescale', out, a });
    return out;
  }

  addVec(a: Reg, v: Float64Array): Reg {
    const x = this.s(a);
    const out = this.fresh(x.level, x.scale);
    this.ops.push({ op: 'addpt', out, a, c: this.constId(v) });
    return out;
  }

  bootstrap(a: Reg): Reg {
    if (!this.canBootstrap) throw new Error('trace: bootstrapping on an engine without it');
    const { level, scale } = this.s(a);
    this.bootstraps++;
    const s =
      level === 0 && this.messageRatio
        ? this.scaleDefault * levelZeroError(this.primes[0], this.messageRatio, scale)
        : this.scaleDefault;
    const out = this.fresh(this.levels, s);
    this.ops.push({ op: 'boot', out, a, s });
    return out;
  }

  mark(name: string): void {
    this.ops.push({ op: 'mark', name });
  }

  private needLevel(level: number): void {
    if (level < 1) {
      throw new UserError(
        'BUDGET_INFEASIBLE',
        'the program runs out of levels',
        'lower some degrees, or plan for bootstrapping (analyze --bootstrap)',
      );
    }
  }

  finish(output: Reg, inputs: number): Trace {
    const o = this.s(output);
    return {
      inputs,
      levels: this.levels,
      primes: this.primes,
      scale: this.scaleDefault,
      B: this.B,
      slots: this.slots,
      ops: this.ops,
      consts: this.consts,
      output,
      predicted: {
        outputLevel: o.level,
        outputScale: o.scale,
        bootstraps: this.bootstraps,
        rotations: [...this.rotations].sort((x, y) => x - y),
        steps: this.ops.filter((op): op is Extract<TraceOp, { op: 'mark' }> => op.op === 'mark').map((op) => op.name),
      },
    };
  }
}

/** What an engine must do to run a trace (the operations, slots in the engine's own units). */
export interface TraceExecutor<C> {
  rotate(a: C, k: number): C;
  mulPlain(a: C, v: Float64Array, encScale: number, constId: number): C;
  rescale(a: C): C;
  add(a: C, b: C, inPlace: boolean): C;
  sub(a: C, b: C): C;
  addPlain(a: C, v: Float64Array, constId: number): C;
  addConst(a: C, k: number): C;
  mul(a: C, b: C): C;
  mulConst(a: C, k: number, encScale: number): C;
  negate(a: C): C;
  drop(a: C, level: number): C;
  constant(k: number, level: number, scale: number): C;
  /** Back to the top level at scale s. */
  bootstrap?(a: C, s: number): C;
  free(a: C): void;
}

/**
 * Runs a trace on an executor: the inputs in registers 0 .. n - 1, `onMark` at the end of every
 * step (with its name), `signal` checked there. Returns the output ciphertext; the inputs stay
 * the caller's.
 */
export function runTrace<C>(
  t: Trace,
  ex: TraceExecutor<C>,
  inputs: C[],
  onMark?: (name: string) => void,
  signal?: AbortSignal,
): C {
  if (inputs.length !== t.inputs) throw new Error(`trace wants ${t.inputs} input ciphertexts, got ${inputs.length}`);
  const regs = new Map<Reg, C>(inputs.map((c, i) => [i, c]));
  const get = (r: Reg) => {
    const c = regs.get(r);
    if (c === undefined) throw new Error(`trace: register ${r} is not live`);
    return c;
  };
  for (const op of t.ops) {
    switch (op.op) {
      case 'rot':
        regs.set(op.out, ex.rotate(get(op.a), op.k));
        break;
      case 'mulpt':
        regs.set(op.out, ex.mulPlain(get(op.a), t.consts[op.c], op.s, op.c));
        break;
      case 'rescale':
        regs.set(op.out, ex.rescale(get(op.a)));
        break;
      case 'add':
        regs.set(op.out, ex.add(get(op.a), get(op.b), !!op.inPlace));
        if (op.inPlace) regs.delete(op.a);
        break;
      case 'sub':
        regs.set(op.out, ex.sub(get(op.a), get(op.b)));
        break;
      case 'addpt':
        regs.set(op.out, ex.addPlain(get(op.a), t.consts[op.c], op.c));
        break;
      case 'addc':
        regs.set(op.out, ex.addConst(get(op.a), op.k));
        break;
      case 'mul':
        regs.set(op.out, ex.mul(get(op.a), get(op.b)));
        break;
      case 'mulc':
        regs.set(op.out, ex.mulConst(get(op.a), op.k, op.s));
        break;
      case 'neg':
        regs.set(op.out, ex.negate(get(op.a)));
        break;
      case 'drop':
        regs.set(op.out, ex.drop(get(op.a), op.level));
        break;
      case 'const':
        regs.set(op.out, ex.constant(op.k, op.level, op.s));
        break;
      case 'boot':
        if (!ex.bootstrap)
          throw new UserError(
            'MODEL_UNSUPPORTED',
            'this program needs bootstrapping, which the engine does not have',
            'run it with --engine lattigo',
          );
        regs.set(op.out, ex.bootstrap(get(op.a), op.s));
        break;
      case 'free': {
        const c = regs.get(op.a);
        // An input belongs to the caller; a register an in-place sum took is gone already.
        if (c !== undefined && op.a >= t.inputs) ex.free(c);
        regs.delete(op.a);
        break;
      }
      case 'mark':
        if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
        onMark?.(op.name);
        break;
    }
  }
  return get(t.output);
}

/**
 * The trace on the plaintext simulator: exact values on slot vectors (when `inputs` are given)
 * and the levels and scales the engines keep, checked strictly. Returns the output ciphertext.
 */
export function simulateTrace(t: Trace, inputs?: Float64Array[], onBootstrap?: (slots: Float64Array) => void): SimCt {
  const sim = new SimBackend(t.primes);
  const S = inputs ? t.slots : 1;
  const cts = (inputs ?? Array.from({ length: t.inputs }, () => new Float64Array(1))).map((v) =>
    sim.fresh(v, t.levels, t.scale),
  );
  const vec = (v: Float64Array) => (inputs ? spread(v, t.B, t.slots) : new Float64Array(1));
  const ex: TraceExecutor<SimCt> = {
    rotate: (a, k) => (inputs ? { ...a, v: Float64Array.from({ length: S }, (_, i) => a.v[(i + k) % S]) } : a),
    mulPlain: (a, v, s) => {
      const w = vec(v);
      return { v: a.v.map((x, i) => x * w[i]), level: a.level, scale: a.scale * s };
    },
    rescale: (a) => {
      if (a.level < 1) throw new UserError('BUDGET_INFEASIBLE', 'the program runs out of levels', 'lower some degrees');
      return { v: a.v, level: a.level - 1, scale: a.scale / t.primes[a.level] };
    },
    add: (a, b) => sim.add(a, b),
    sub: (a, b) => sim.sub(a, b),
    addPlain: (a, v) => {
      const w = vec(v);
      return { v: a.v.map((x, i) => x + w[i]), level: a.level, scale: a.scale };
    },
    addConst: (a, k) => sim.addConst(a, k),
    mul: (a, b) => sim.mul(a, b),
    mulConst: (a, k, s) => sim.mulConst(a, k, s),
    negate: (a) => sim.negate(a),
    drop: (a, level) => sim.modSwitchTo(a, level),
    constant: (k, level, s) => ({ v: new Float64Array(S).fill(k), level, scale: s }),
    bootstrap: (a, s) => {
      onBootstrap?.(a.v);
      return { v: a.v, level: t.levels, scale: s };
    },
    free: () => undefined,
  };
  return runTrace(t, ex, cts);
}
