/**
 * Per-operation CKKS costs measured on the Lattigo engine, with its bootstrapping, on this
 * machine, cached beside the SEAL ones (cost/sealCosts.ts). A network deeper than SEAL's chain
 * runs on Lattigo, so its analysis estimates latency from these: the activations' operation
 * counts times Lattigo's operation costs, and the bootstraps times one bootstrap's.
 *
 * The measurement is a small trace run by the engine itself (the same binary and parameters as an
 * encrypted test), one operation per step so each step's time is one operation's, on one thread
 * (as SEAL's figures are), at the top level of the chain between bootstraps; a bootstrap from
 * level 0, where programs bootstrap.
 */
import * as path from 'path';
import type { OpCosts } from '../cost/cost';
import { cacheDir, readCachedCosts, writeCachedCosts } from '../cost/sealCosts';
import { LattigoSpec, SECURE_LOG_N, engineChain, runOnLattigo } from './lattigo';
import { Trace, TraceOp, levelZeroError } from './trace';

/** The cache file of one parameter set (ring and levels between bootstraps). */
export function lattigoCostsFile(spec: LattigoSpec): string {
  return path.join(
    cacheDir(),
    `lattigo-costs-${2 ** spec.logN}-L${spec.levels}${spec.insecure ? '-insecure' : ''}.json`,
  );
}

/** The 128-bit parameters a network planned for bootstrapping every `levels` levels runs on. */
export const bootstrapSpec = (levels: number): LattigoSpec => ({ logN: SECURE_LOG_N, levels, bootstrap: true });

/** The trace that times each operation `reps` times (bootstraps `bootReps` times), one per step. */
export function costTrace(
  levels: number,
  primes: number[],
  slots: number,
  reps: number,
  bootReps: number,
  messageRatio = 0,
): Trace {
  const ops: TraceOp[] = [{ op: 'mark', name: 'start' }];
  let next = 1;
  const reg = () => next++;
  for (let r = 0; r < reps; r++) {
    const m = reg();
    ops.push({ op: 'mul', out: m, a: 0, b: 0 }, { op: 'mark', name: 'mulRelinRescale' }, { op: 'free', a: m });
    const p = reg();
    const q = reg();
    ops.push(
      { op: 'mulpt', out: p, a: 0, c: 0, s: primes[levels] },
      { op: 'rescale', out: q, a: p },
      { op: 'mark', name: 'mulScalar' },
      { op: 'free', a: p },
      { op: 'free', a: q },
    );
    const s = reg();
    ops.push({ op: 'add', out: s, a: 0, b: 0 }, { op: 'mark', name: 'add' }, { op: 'free', a: s });
    const t = reg();
    ops.push({ op: 'rot', out: t, a: 0, k: 1 }, { op: 'mark', name: 'rotate' }, { op: 'free', a: t });
  }
  for (let r = 0; r < bootReps; r++) {
    const d = reg();
    const b = reg();
    ops.push(
      { op: 'drop', out: d, a: 0, level: 0 },
      { op: 'mark', name: 'drop' },
      { op: 'boot', out: b, a: d, s: 2 ** 40 * (messageRatio ? levelZeroError(primes[0], messageRatio, 2 ** 40) : 1) },
      { op: 'mark', name: 'bootstrap' },
      { op: 'free', a: d },
      { op: 'free', a: b },
    );
  }
  return {
    inputs: 1,
    levels,
    primes,
    scale: 2 ** 40,
    B: 1,
    slots,
    ops,
    consts: [Float64Array.of(0.37)],
    output: 0,
    predicted: { outputLevel: levels, outputScale: 2 ** 40, bootstraps: bootReps, rotations: [1], steps: [] },
  };
}

/** Measures the engine's operation costs for `spec` (milliseconds, the best of the repetitions). */
export async function measureLattigoCosts(
  spec: LattigoSpec,
  o: { reps?: number; bootReps?: number; signal?: AbortSignal; onProgress?: (msg: string) => void } = {},
): Promise<OpCosts> {
  const chain = engineChain(spec);
  const reps = o.reps ?? 3;
  const bootReps = spec.bootstrap ? (o.bootReps ?? 2) : 0;
  const trace = costTrace(chain.levels, chain.primes, chain.slots, reps, bootReps, chain.messageRatio);
  const input = Float64Array.from({ length: chain.slots }, (_, i) => 0.5 * Math.sin(i));
  const best = new Map<string, number>();
  const run = await runOnLattigo(trace, spec, [[input]], {
    outLength: 1,
    signal: o.signal,
    threads: 1,
    onEvent: (e) => {
      if (e.type === 'keys') o.onProgress?.(`keys made in ${e.seconds.toFixed(1)} s`);
      if (e.type === 'mark') best.set(e.name, Math.min(best.get(e.name) ?? Infinity, 1000 * e.seconds));
      if (e.type === 'boot') o.onProgress?.(`bootstrap ${e.index}/${bootReps}: ${e.seconds.toFixed(1)} s`);
    },
  });
  // The engine's own bootstrap times exclude the step's bookkeeping; take them where present.
  const boots = run.events
    .filter((e): e is Extract<typeof e, { type: 'boot' }> => e.type === 'boot')
    .map((e) => 1000 * e.seconds);
  const ms = (name: string) => best.get(name) ?? NaN;
  return {
    ringSize: 2 ** spec.logN,
    mulRelinRescale: ms('mulRelinRescale'),
    mulScalar: ms('mulScalar'),
    add: ms('add'),
    rotate: ms('rotate'),
    ...(bootReps ? { bootstrap: boots.length ? Math.min(...boots) : ms('bootstrap') } : {}),
    engine: 'lattigo',
    levels: chain.levels,
    source: `measured with the Lattigo engine on this machine (N=2^${spec.logN}, ${chain.levels} levels${spec.bootstrap ? ' between bootstraps' : ''}, ${chain.security}, one thread, best of ${reps}${bootReps ? `, bootstrap best of ${bootReps}` : ''})`,
  };
}

/** Costs measured earlier for `spec`, or null. */
export function cachedLattigoCosts(spec: LattigoSpec): OpCosts | null {
  const positive = (x: number | undefined) => Number.isFinite(x) && x! > 0;
  return readCachedCosts(
    lattigoCostsFile(spec),
    (c) =>
      c.ringSize === 2 ** spec.logN &&
      c.engine === 'lattigo' &&
      c.levels === spec.levels &&
      [c.mulRelinRescale, c.mulScalar, c.add, c.rotate].every(positive) &&
      (!spec.bootstrap || positive(c.bootstrap)),
  );
}

/** Measures and caches (sealCosts.ts: writeCachedCosts). */
export async function measureAndCacheLattigoCosts(
  spec: LattigoSpec,
  o: Parameters<typeof measureLattigoCosts>[1] = {},
): Promise<OpCosts> {
  const c = await measureLattigoCosts(spec, o);
  writeCachedCosts(lattigoCostsFile(spec), c);
  return c;
}
