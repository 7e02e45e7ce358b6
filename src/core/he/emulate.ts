/**
 * A program's lowering run without encryption: recorded as the trace every engine executes
 * (TraceRecorder), or run on the plaintext simulator to follow levels and scales and to emulate
 * the encrypted model slot for slot.
 */
import { UserError } from '../errors';
import { SimBackend, SimCt } from './backend';
import { Trace, TraceRecorder } from './trace';
import type { Program } from './program';
import { gridCts, inputLayout, perCiphertext, placeOf } from './layout';
import { LinearOps, TARGET_SCALE, Value, factorOf } from './linear';
import { runProgram } from './lower';

/** How a program is recorded: the engine's chain and slots, the samples per ciphertext and the packing, and its bootstraps. */
export interface RecordOptions {
  primes: number[];
  levels: number;
  slots: number;
  B: number;
  blocks?: number;
  /** Bootstraps before steps (the engine has bootstrapping): value ids by step index. */
  refresh?: Map<number, number[]>;
  /** The bootstrapping's q0 / |m| (trace.ts: levelZeroError). */
  messageRatio?: number;
}

/** The program as the trace every engine runs (trace.ts), for one packing and chain. */
export function recordProgram(p: Program, o: RecordOptions): Trace {
  const rec = new TraceRecorder(o.primes, o.levels, TARGET_SCALE, o.B, o.slots, !!o.refresh, o.messageRatio);
  const L0 = inputLayout(p, o.blocks ?? 1);
  const n = L0.kind === 'grid' ? gridCts(L0) : 1;
  const ins = Array.from({ length: n }, () => rec.input());
  const groups: number[] = [];
  let most = 1;
  const out = runProgram(
    p,
    rec,
    rec,
    ins,
    (name) => rec.mark(name),
    o.blocks ?? 1,
    (_node, v) => {
      if (v.layout.kind === 'grid' && v.layout.blocks > 1)
        most = Math.max(most, Math.min(v.layout.C, perCiphertext(v.layout)));
    },
    o.refresh
      ? { before: o.refresh, bootstrap: (c) => rec.bootstrap(c), onValue: (_id, cts) => groups.push(cts) }
      : undefined,
  );
  const t = rec.finish(out.cts[0], n);
  t.predicted.bootstrapGroups = groups;
  t.predicted.channelsPerCiphertext = most;
  return t;
}

/** Levels the program consumes, by running it on the plaintext simulator (no encryption). */
export function simulateProgram(
  p: Program,
  primes: number[],
  levels: number,
): { levelsUsed: number; finalScale: number } {
  const r = emulate(p, 1, true, undefined, { primes, levels });
  return { levelsUsed: levels - r.level, finalScale: r.scale };
}

/**
 * Runs the program on plaintext position vectors, tracking levels and scales over `chain` (default:
 * a long chain of 2^40 primes); records rotations and the largest period. A dry run skips the
 * arithmetic on values and only follows layouts, rotations, levels and scales.
 */
export function emulate(
  p: Program,
  B: number,
  dry: boolean,
  slotsIn?: Float64Array[],
  chain = { primes: new Array<number>(128).fill(2 ** 40), levels: 100 },
  blocks = 1,
  onValue?: (node: number, values: (sample: number) => Float64Array) => void,
): { out: Float64Array; steps: Set<number>; maxPeriod: number; level: number; scale: number } {
  const L0 = inputLayout(p, blocks);
  // A dry run only needs to see layouts and rotations: tiny vectors.
  const S = slotsIn ? slotsIn[0].length : 1;
  const { primes } = chain;
  const sim = new SimBackend(primes);
  const steps = new Set<number>();
  let maxP = L0.period;
  const mk = (v: Float64Array, like: { level: number; scale: number }) => ({ v, level: like.level, scale: like.scale });
  const ops: LinearOps<ReturnType<SimBackend['fresh']>> = {
    rotate: (c, k) => {
      steps.add(k);
      return dry
        ? c
        : mk(
            Float64Array.from({ length: S }, (_, i) => c.v[(((i + k * B) % S) + S) % S]),
            c,
          );
    },
    mulVecNoRescale: (c, v, s) => {
      maxP = Math.max(maxP, v.length);
      return {
        v: dry ? c.v : c.v.map((x, i) => x * v[Math.floor(i / B) % v.length]),
        level: c.level,
        scale: c.scale * s,
      };
    },
    addRaw: (a, b) =>
      dry
        ? a
        : mk(
            a.v.map((x, i) => x + b.v[i]),
            a,
          ),
    addInto: (a, b) =>
      dry
        ? a
        : mk(
            a.v.map((x, i) => x + b.v[i]),
            a,
          ),
    rescale: (c) => {
      if (c.level < 1) throw new UserError('BUDGET_INFEASIBLE', 'the program runs out of levels', 'lower some degrees');
      return { v: c.v, level: c.level - 1, scale: c.scale / primes[c.level] };
    },
    addVec: (c, v) => {
      maxP = Math.max(maxP, v.length);
      return dry
        ? c
        : mk(
            c.v.map((x, i) => x + v[Math.floor(i / B) % v.length]),
            c,
          );
    },
    free: () => undefined,
  };
  const n = L0.kind === 'grid' ? gridCts(L0) : 1;
  const ins = slotsIn ?? Array.from({ length: n }, () => new Float64Array(S));
  // A value's elements in the graph's order (channels last) for one sample, its pending factors undone.
  const decode = (v: Value<SimCt>) => (b: number) => {
    const L = v.layout;
    const n = L.kind === 'flat' ? L.dim : L.H * L.W * L.C;
    return Float64Array.from({ length: n }, (_, f) => {
      const [i, q] = placeOf(L, f);
      return v.cts[i].v[(q * B + b) % S] * factorOf(v, L.kind === 'grid' ? f % L.C : f);
    });
  };
  const out = runProgram(
    p,
    sim,
    ops,
    ins.map((v) => sim.fresh(v, chain.levels, 2 ** 40)),
    undefined,
    blocks,
    onValue ? (node, v) => onValue(node, decode(v)) : undefined,
  ).cts[0];
  return { out: out.v, steps, maxPeriod: maxP, level: out.level, scale: out.scale };
}

/**
 * Runs the program on plaintext slot vectors with exactly the packing, rotations and products the
 * encrypted run uses (a functional emulator, no encryption): checks the compiled program against
 * the model before any key is generated, and serves the tests.
 */
export function emulateProgram(p: Program, slotsIn: Float64Array[], B: number, blocks = 1): Float64Array {
  return emulate(p, B, false, slotsIn, undefined, blocks).out;
}
