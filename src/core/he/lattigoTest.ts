/**
 * Whole-model encrypted test on Lattigo (engines/lattigo): the program's trace run with
 * bootstrapping where the analysis placed it (bootstrapPlan.ts), so networks deeper than SEAL's
 * chain run encrypted too. The trace is the one the SEAL engine would run, recorded on Lattigo's
 * own primes; the engine reports, per run, the levels and bootstraps it executed and the precision
 * each bootstrap kept, which the report sets beside the plan's.
 */
import { UserError } from '../errors';
import { Graph } from '../model/graph';
import type { EncryptedModelReport, SampleResult } from '../report';
import { planProgramBootstraps } from './bootstrapPlan';
import { LattigoChain, LattigoSpec, SECURE_LOG_N, engineChain, runOnLattigo, testLogN } from './lattigo';
import type { EncryptedTestOptions } from './layerTest';
import { packRuns, recordRuns, references, resultSummary } from './references';
import { programDepth } from './program';
import { compileProgram } from './compile';
import type { Trace } from './trace';

export async function lattigoModelTest(o: EncryptedTestOptions, g: Graph): Promise<EncryptedModelReport> {
  const r = o.report;
  const planned = !!r.bootstrapping?.planned;
  const program = compileProgram(g, r);
  const needed = programDepth(program);
  // Between bootstraps the chain has the analysis's levels per bootstrap; without bootstrapping, the levels the program needs.
  const L = planned ? r.bootstrapping.levelsPerBootstrap : needed;
  const testRing = o.insecureLogN ?? testLogN();
  const { spec, chain } =
    testRing !== undefined
      ? withChain({ logN: testRing, levels: L, bootstrap: planned, insecure: true })
      : secureRing(L, planned, o.ringSize);
  const boots = planned ? planProgramBootstraps(g, program, r, L) : null;
  const { blocks, B, trace, packing } = recordRuns(program, o.packing === 'latency', chain, boots?.refresh);
  const refs = await references(o, g, 29);
  const { n, K } = refs;
  const runs = packRuns(program, refs, B, chain.slots, blocks);
  const t0 = Date.now();
  const run = await runOnLattigo(
    trace,
    spec,
    runs.map((x) => x.packed),
    {
      outLength: K * B,
      precision: true,
      signal: o.signal,
      releaseConsts: true,
      onEvent: progressOf(o, trace.predicted.steps.length, runs.length),
    },
  );
  const wallSeconds = (Date.now() - t0) / 1000;
  const { keys, runEvents, bootEvents, done, ctBoots } = checkedEvents(run.events, runs.length, trace);
  const results: SampleResult[] = new Array(n);
  run.outputs.forEach((out, i) => {
    const { start, cnt } = runs[i];
    for (let b = 0; b < cnt; b++)
      results[start + b] = refs.result(
        start + b,
        Array.from({ length: K }, (_, j) => out[j * B + b]),
      );
  });
  const latency = runEvents.reduce((t, e) => t + e.seconds, 0) / runEvents.length;
  const levelsUsed = chain.levels - runEvents[runEvents.length - 1].level;
  return {
    mode: 'model',
    createdAt: new Date().toISOString(),
    engine: 'lattigo',
    security: keys.security,
    params: {
      ringSize: 2 ** spec.logN,
      levels: chain.levels,
      modulusBits: [60, ...new Array<number>(chain.levels).fill(40)],
      scaleBits: 40,
      slots: chain.slots,
      samplesPerCiphertext: B,
    },
    packing,
    levelsNeeded: needed,
    levelsPredicted: chain.levels - trace.predicted.outputLevel,
    levelsUsed,
    galoisSteps: trace.predicted.rotations,
    keyBytes: keys.bytes,
    ...(boots
      ? {
          bootstrapping: {
            planned: r.final.bootstraps,
            ...bootstrapsExecuted(bootEvents, trace.predicted.bootstrapGroups ?? []),
            ciphertexts: ctBoots,
            values: boots.values,
            ...bootstrapPrecision(bootEvents, trace.predicted.bootstrapGroups ?? []),
          },
        }
      : {}),
    samples: results,
    ...resultSummary(results),
    layerSeconds: layerSecondsOf(run.events, runs.length),
    latencySeconds: latency,
    amortisedSecondsPerSample: wallSeconds / Math.max(1, n),
    keygenSeconds: keys.seconds,
    workers: runEvents[0].workers ?? 1,
    wallSeconds,
    peakRssMB: Math.max(Math.round(process.resourceUsage().maxRSS / 1024), Math.round(done ? done.peakRssMB : 0)),
  };
}

/**
 * The engine's events of a finished job, checked: keys made, every run reported, and every run
 * executed the trace's bootstraps (else the plan and the engine disagree: a bug, said as such).
 */
function checkedEvents(ev: EngineEvent[], runs: number, trace: Trace) {
  const keys = ev.find((e): e is Extract<EngineEvent, { type: 'keys' }> => e.type === 'keys');
  const runEvents = ev.filter((e): e is Extract<EngineEvent, { type: 'run' }> => e.type === 'run');
  const bootEvents = ev.filter((e): e is BootEvent => e.type === 'boot');
  const done = ev.find((e): e is Extract<EngineEvent, { type: 'done' }> => e.type === 'done');
  if (!keys || runEvents.length !== runs)
    throw new UserError(
      'ENGINE_FAILED',
      'the Lattigo engine ended without reporting every run',
      'run npm run build to rebuild the engine',
    );
  const ctBoots = trace.ops.filter((op) => op.op === 'boot').length;
  for (const e of runEvents) {
    if (e.bootstraps !== ctBoots)
      throw new Error(`Lattigo executed ${e.bootstraps} bootstraps in run ${e.run}, the trace has ${ctBoots}`);
  }
  return { keys, runEvents, bootEvents, done, ctBoots };
}

/** Progress per step of every run, from the engine's events. */
function progressOf(o: EncryptedTestOptions, steps: number, runs: number) {
  let marks = 0;
  return (e: EngineEvent) => {
    if (e.type === 'keys') o.onProgress?.(0, `Lattigo keys made in ${e.seconds.toFixed(1)} s`);
    if (e.type === 'mark') {
      marks++;
      o.onProgress?.(Math.min(1, marks / (steps * runs)), `run ${e.run + 1}/${runs}: ${e.name}`);
    }
    if (e.type === 'boot')
      o.onProgress?.(Math.min(1, marks / (steps * runs)), `run ${e.run + 1}/${runs}: bootstrap ${e.index}`);
  };
}

type EngineEvent = Awaited<ReturnType<typeof runOnLattigo>>['events'][number];
type BootEvent = Extract<EngineEvent, { type: 'boot' }>;

/**
 * Per step, its time without the bootstraps inside it, which are listed apart as '<step>
 * (bootstrap)': the wall time while any ran (they overlap on several threads), as the engine
 * measured it. Means over the runs.
 */
function layerSecondsOf(ev: EngineEvent[], runs: number): Record<string, number> {
  const layerSeconds: Record<string, number> = {};
  let booted = 0;
  for (const e of ev) {
    if (e.type === 'boot') booted += e.seconds;
    if (e.type !== 'mark') continue;
    if (e.bootSeconds !== undefined) booted = e.bootSeconds;
    layerSeconds[e.name] = (layerSeconds[e.name] ?? 0) + (e.seconds - booted) / runs;
    if (booted) layerSeconds[`${e.name} (bootstrap)`] = (layerSeconds[`${e.name} (bootstrap)`] ?? 0) + booted / runs;
    booted = 0;
  }
  return layerSeconds;
}

/** The refreshed value (by the trace's groups of ciphertexts per bootstrapped value) bootstrap `index` (from 1) belongs to. */
function groupOf(groups: number[], index: number): number {
  let k = index - 1;
  for (let g = 0; g < groups.length; g++) {
    if (k < groups[g]) return g;
    k -= groups[g];
  }
  return groups.length - 1;
}

/** Bootstraps executed: the refreshed values the engine bootstrapped in the first run (every run executed the same, checked above). */
const bootstrapsExecuted = (boots: BootEvent[], groups: number[]) => ({
  executed: new Set(boots.filter((e) => e.run === 0).map((e) => groupOf(groups, e.index))).size,
});

/** Precision per refreshed value (the worst of its ciphertexts' bootstraps over all runs), and the mean bootstrap time. */
function bootstrapPrecision(boots: BootEvent[], groups: number[]) {
  const perBoot = new Map<number, number>();
  for (const e of boots)
    if (e.precisionBits !== undefined) {
      const g = groupOf(groups, e.index);
      perBoot.set(g, Math.min(perBoot.get(g) ?? Infinity, e.precisionBits));
    }
  return {
    precisionBits: [...perBoot.entries()].sort((x, y) => x[0] - y[0]).map(([, v]) => v),
    secondsPerBootstrap: boots.length ? boots.reduce((t, e) => t + e.seconds, 0) / boots.length : 0,
  };
}

/**
 * 128-bit parameters for L levels: N=2^16 with bootstrapping (Lattigo's sets); without, the
 * smallest ring whose chain the engine accepts as 128-bit secure (or the ring asked for).
 */
function secureRing(L: number, bootstrap: boolean, ringSize?: number): { spec: LattigoSpec; chain: LattigoChain } {
  const rings = bootstrap ? [SECURE_LOG_N] : ringSize ? [Math.log2(ringSize)] : [14, 15, SECURE_LOG_N];
  for (let i = 0; ; i++) {
    try {
      return withChain({ logN: rings[i], levels: L, bootstrap });
    } catch (e) {
      if (!(e instanceof UserError && e.code === 'BUDGET_INFEASIBLE') || i === rings.length - 1) throw e;
    }
  }
}

const withChain = (spec: LattigoSpec) => ({ spec, chain: engineChain(spec) });
