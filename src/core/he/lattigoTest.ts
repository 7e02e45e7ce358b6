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
import { latencyPacking, packSamples } from './layout';
import { LattigoChain, LattigoSpec, SECURE_LOG_N, engineChain, runOnLattigo, testLogN } from './lattigo';
import type { EncryptedTestOptions } from './layerTest';
import { emulate, recordProgram } from './lower';
import { references } from './references';
import { compileProgram, programDepth } from './program';

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
  const oneSample = o.packing === 'latency';
  const layout = oneSample ? latencyPacking(program, chain.slots) : { blocks: 1, copies: false, why: null };
  const { blocks } = layout;
  const dry = emulate(program, 1, true, undefined, undefined, blocks);
  const B = oneSample ? 1 : Math.max(1, Math.floor(chain.slots / dry.maxPeriod));
  const trace = recordProgram(program, {
    primes: chain.primes,
    levels: chain.levels,
    slots: chain.slots,
    B,
    blocks,
    refresh: boots?.refresh,
  });
  const { n, xs, per, K, result } = await references(o, g, 29);
  const runs: Float64Array[][] = [];
  const starts: number[] = [];
  for (let start = 0; start < n; start += B) {
    const cnt = Math.min(B, n - start);
    starts.push(start);
    runs.push(packSamples(program, xs.subarray(start * per, (start + cnt) * per), cnt, B, chain.slots, blocks));
  }
  // Progress per step of every run, from the engine's events.
  const steps = trace.predicted.steps.length;
  let marks = 0;
  const t0 = Date.now();
  const run = await runOnLattigo(trace, spec, runs, {
    outLength: K * B,
    precision: true,
    signal: o.signal,
    releaseConsts: true,
    onEvent: (e) => {
      if (e.type === 'keys') o.onProgress?.(0, `Lattigo keys made in ${e.seconds.toFixed(1)} s`);
      if (e.type === 'mark') {
        marks++;
        o.onProgress?.(Math.min(1, marks / (steps * runs.length)), `run ${e.run + 1}/${runs.length}: ${e.name}`);
      }
      if (e.type === 'boot')
        o.onProgress?.(
          Math.min(1, marks / (steps * runs.length)),
          `run ${e.run + 1}/${runs.length}: bootstrap ${e.index}`,
        );
    },
  });
  const wallSeconds = (Date.now() - t0) / 1000;
  const ev = run.events;
  const keys = ev.find((e) => e.type === 'keys');
  const runEvents = ev.filter((e): e is Extract<typeof e, { type: 'run' }> => e.type === 'run');
  const bootEvents = ev.filter((e): e is Extract<typeof e, { type: 'boot' }> => e.type === 'boot');
  const done = ev.find((e) => e.type === 'done');
  if (!keys || keys.type !== 'keys' || runEvents.length !== runs.length)
    throw new UserError(
      'ENGINE_FAILED',
      'the Lattigo engine ended without reporting every run',
      'run npm run build to rebuild the engine',
    );
  // Every run executed the trace's bootstraps and levels, or the plan and the engine disagree: a bug, said as such.
  const ctBoots = trace.ops.filter((op) => op.op === 'boot').length;
  for (const e of runEvents) {
    if (e.bootstraps !== ctBoots)
      throw new Error(`Lattigo executed ${e.bootstraps} bootstraps in run ${e.run}, the trace has ${ctBoots}`);
  }
  const results: SampleResult[] = new Array(n);
  run.outputs.forEach((out, i) => {
    const cnt = Math.min(B, n - starts[i]);
    for (let b = 0; b < cnt; b++)
      results[starts[i] + b] = result(
        starts[i] + b,
        Array.from({ length: K }, (_, j) => out[j * B + b]),
      );
  });
  const layerSeconds: Record<string, number> = {};
  // A step's time without the bootstraps inside it, which are listed apart as '<step> (bootstrap)':
  // the wall time while any ran (they overlap on several threads), as the engine measured it.
  let booted = 0;
  for (const e of ev) {
    if (e.type === 'boot') booted += e.seconds;
    if (e.type !== 'mark') continue;
    if (e.bootSeconds !== undefined) booted = e.bootSeconds;
    layerSeconds[e.name] = (layerSeconds[e.name] ?? 0) + (e.seconds - booted) / runs.length;
    if (booted)
      layerSeconds[`${e.name} (bootstrap)`] = (layerSeconds[`${e.name} (bootstrap)`] ?? 0) + booted / runs.length;
    booted = 0;
  }
  // Precision per refreshed value: the worst of its ciphertexts' bootstraps over all runs.
  const groups = trace.predicted.bootstrapGroups ?? [];
  const groupOf = (index: number) => {
    let k = index - 1;
    for (let g = 0; g < groups.length; g++) {
      if (k < groups[g]) return g;
      k -= groups[g];
    }
    return groups.length - 1;
  };
  const perBoot = new Map<number, number>();
  for (const e of bootEvents)
    if (e.precisionBits !== undefined)
      perBoot.set(groupOf(e.index), Math.min(perBoot.get(groupOf(e.index)) ?? Infinity, e.precisionBits));
  // Bootstraps executed: the refreshed values the engine bootstrapped in the first run (every run executed the same, checked above).
  const executed = new Set(bootEvents.filter((e) => e.run === 0).map((e) => groupOf(e.index))).size;
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
    packing: {
      kind: oneSample ? 'latency' : 'throughput',
      channelsPerCiphertext: layout.copies ? 1 : blocks,
      ...(layout.copies ? { inputCopies: blocks } : {}),
      why: layout.why,
    },
    levelsNeeded: needed,
    levelsPredicted: chain.levels - trace.predicted.outputLevel,
    levelsUsed,
    galoisSteps: trace.predicted.rotations,
    keyBytes: keys.bytes,
    ...(boots
      ? {
          bootstrapping: {
            planned: r.final.bootstraps,
            executed,
            ciphertexts: ctBoots,
            values: boots.values,
            precisionBits: [...perBoot.entries()].sort((x, y) => x[0] - y[0]).map(([, v]) => v),
            secondsPerBootstrap: bootEvents.length
              ? bootEvents.reduce((t, e) => t + e.seconds, 0) / bootEvents.length
              : 0,
          },
        }
      : {}),
    samples: results,
    agreement: results.filter((s) => s.encrypted === s.plainApproximated).length / Math.max(1, results.length),
    maxAbsErrLogits: Math.max(0, ...results.map((s) => s.maxAbsErrLogits)),
    layerSeconds,
    latencySeconds: latency,
    amortisedSecondsPerSample: wallSeconds / Math.max(1, n),
    keygenSeconds: keys.seconds,
    workers: runEvents[0].workers ?? 1,
    wallSeconds,
    peakRssMB: Math.max(
      Math.round(process.resourceUsage().maxRSS / 1024),
      Math.round(done && done.type === 'done' ? done.peakRssMB : 0),
    ),
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
