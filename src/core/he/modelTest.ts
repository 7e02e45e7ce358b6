/**
 * Whole-model encrypted test: compiles the approximated model into a CKKS program (program.ts),
 * runs held-out samples through it under SEAL on worker threads (or, planned for bootstrapping or
 * when asked, on Lattigo: lattigoTest.ts), decrypts, and compares with the plaintext approximated model.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { UserError } from '../errors';
import { EncryptedModelReport, SampleResult } from '../report';
import { EncryptedTestOptions, checkedGraph } from './layerTest';
import { references } from './references';
import { checkHeMemory, chooseParams, threadPlan } from './params';
import { compileProgram, programDepth } from './program';
import { latencyPacking, packSamples } from './layout';
import { emulate, recordProgram } from './lower';
import { SealBackend } from './seal';
import { Batch, BatchJob, BatchResult, BatchRun, runBatches } from './sealRun';

export type { EncryptedModelReport, SampleResult };
export { channelPackingObstacle, compileProgram, programDepth } from './program';
export { latencyPacking, packSamples } from './layout';
export { emulateProgram, simulateProgram } from './lower';
export type { Program } from './program';

export type ModelTestOptions = EncryptedTestOptions;

export async function encryptedModelTest(o: ModelTestOptions): Promise<EncryptedModelReport> {
  const g = await checkedGraph(o);
  const planned = !!o.report.bootstrapping?.planned;
  if ((o.engine ?? (planned ? 'lattigo' : 'seal')) === 'lattigo')
    return (await import('./lattigoTest')).lattigoModelTest(o, g);
  if (planned) {
    throw new UserError(
      'BUDGET_INFEASIBLE',
      `${o.report.model.name} needs ${o.report.final.networkDepth} levels, more than SEAL's ${o.report.levelBudget} at N=${o.report.options.ringSize}, and SEAL has no bootstrapping (the analysis planned it for a library with bootstrapping: ${o.report.final.bootstraps} bootstraps every ${o.report.bootstrapping.levelsPerBootstrap} levels)`,
      'run it on Lattigo, which bootstraps: encrypted-test --engine lattigo (the default for such a report), or test each activation with --layer-only',
    );
  }
  const program = compileProgram(g, o.report);
  const needed = programDepth(program);
  const lower = [...o.report.layers]
    .sort((x, y) => y.chosen.depth - x.chosen.depth)
    .slice(0, 2)
    .map((l) => l.name);
  const params = chooseParams(needed, 'the approximated model', lower, o.ringSize);
  // Throughput: as many samples per ciphertext as the largest period allows, one ciphertext per
  // channel. Latency: one sample, its channels side by side (channel packing) or a flat input in
  // permuted copies (input copies) where the program allows it, else one sample in the batch layout.
  const oneSample = o.packing === 'latency';
  const layout = oneSample ? latencyPacking(program, params.slots) : { blocks: 1, copies: false, why: null };
  const { blocks } = layout;
  // A dry run gives the largest period, hence the samples per ciphertext; the program is then
  // recorded as the trace SEAL runs (trace.ts), on SEAL's own primes: Galois keys are generated
  // for exactly the rotations it makes, and the levels it uses are predicted before any key exists.
  const dry = emulate(program, 1, true, undefined, undefined, blocks);
  const B = oneSample ? 1 : Math.max(1, Math.floor(params.slots / dry.maxPeriod));
  const trace = recordProgram(program, {
    primes: await SealBackend.primesOf(params),
    levels: params.levels,
    slots: params.slots,
    B,
    blocks,
  });
  const galoisSteps = trace.predicted.rotations;
  // node-seal runs in 32-bit WebAssembly: keys, ciphertexts and temporaries share 4 GB, and the
  // machine may have less free. Refuse before generating keys rather than let SEAL abort half-way.
  // Live ciphertexts: a value is one ciphertext per channel; a layer holds its input, its output
  // and a residual branch's, plus the polynomial evaluator's powers (about 16).
  const channels = Math.max(1, ...g.nodes.map((nd) => (nd.shape.length === 3 ? nd.shape[2] : 1)));
  const perThread = checkHeMemory(
    params,
    galoisSteps.length,
    3 * channels + 16,
    `lower the degrees of ${lower.join(', ')} so the model needs fewer levels, or test per activation with --layer-only`,
  );
  const { n, xs, per, K, result } = await references(o, g, 29);

  // Batches of B samples (one sample in latency packing), run on worker threads: each thread makes
  // its own keys, so no secret ever leaves the thread that made it.
  const batchList: Batch[] = [];
  for (let start = 0; start < n; start += B) {
    const cnt = Math.min(B, n - start);
    batchList.push({
      start,
      cnt,
      packed: packSamples(program, xs.subarray(start * per, (start + cnt) * per), cnt, B, params.slots, blocks),
    });
  }
  // Each thread also keeps weights' plaintexts, as many as its heap leaves room for, up to a bound;
  // threads beyond what the machine's free memory holds are not started.
  const {
    threads: workers,
    plainCacheBytes,
    bytesPerThread,
  } = threadPlan(perThread, Math.max(1, Math.min(o.workers ?? defaultWorkers(), batchList.length)));
  const job: BatchJob = { trace, params, batches: batchList, plainCacheBytes };
  // By sample position: threads deliver batches in any order.
  const results: SampleResult[] = new Array(n);
  // Per layer: all runs, and the runs after each thread's first (which also encodes the weights).
  const layerSeconds: Record<string, number> = {};
  const steadyLayerSeconds: Record<string, number> = {};
  let latency = 0;
  let levelsUsed = 0;
  let done = 0;
  let firstRuns = 0;
  let firstSeconds = 0;
  const onBatch = (r: BatchResult) => {
    if (r.first) {
      firstRuns++;
      firstSeconds += r.seconds;
    } else latency += r.seconds;
    levelsUsed = r.levelsUsed;
    for (const [k, v] of Object.entries(r.layerSeconds)) {
      layerSeconds[k] = (layerSeconds[k] ?? 0) + v;
      if (!r.first) steadyLayerSeconds[k] = (steadyLayerSeconds[k] ?? 0) + v;
    }
    for (let b = 0; b < r.cnt; b++)
      results[r.start + b] = result(
        r.start + b,
        Array.from({ length: K }, (_, j) => r.out[j * B + b]),
      );
    done += r.cnt;
    o.onProgress?.(Math.min(1, done / n), `encrypted ${done}/${n} samples`);
  };
  const tw = Date.now();
  // Threads even for one: node-seal's WebAssembly heap never shrinks, and a thread's goes when it ends.
  const run = await runBatchesInWorkers(job, workers, onBatch, o.signal);
  // Wall time of the batches alone: key generation (on all threads at once) is reported apart.
  const wallSeconds = Math.max(0, (Date.now() - tw) / 1000 - run.keygenSeconds);
  const { keygenSeconds } = run;
  const levelsPredicted = params.levels - trace.predicted.outputLevel;
  const batches = batchList.length;
  return {
    mode: 'model',
    createdAt: new Date().toISOString(),
    engine: 'seal',
    security: '128-bit',
    params: { ...params, samplesPerCiphertext: B },
    packing: {
      kind: oneSample ? 'latency' : 'throughput',
      channelsPerCiphertext: layout.copies ? 1 : blocks,
      ...(layout.copies ? { inputCopies: blocks } : {}),
      why: layout.why,
    },
    levelsNeeded: needed,
    levelsPredicted,
    levelsUsed,
    galoisSteps,
    keyBytes: run.keyBytes,
    samples: results,
    agreement: results.filter((r) => r.encrypted === r.plainApproximated).length / Math.max(1, results.length),
    maxAbsErrLogits: Math.max(0, ...results.map((r) => r.maxAbsErrLogits)),
    layerSeconds:
      batches > firstRuns
        ? Object.fromEntries(Object.entries(steadyLayerSeconds).map(([k, v]) => [k, v / (batches - firstRuns)]))
        : Object.fromEntries(Object.entries(layerSeconds).map(([k, v]) => [k, v / batches])),
    // Steady state: the batches after each thread's first, which encoded the weights once.
    latencySeconds: batches > firstRuns ? latency / (batches - firstRuns) : firstSeconds / Math.max(1, firstRuns),
    firstRunSeconds: firstSeconds / Math.max(1, firstRuns),
    amortisedSecondsPerSample: wallSeconds / Math.max(1, n),
    keygenSeconds,
    workers,
    wallSeconds,
    memoryPerThreadMB: Math.round(bytesPerThread / 1e6),
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

/** Threads for the encrypted test: one per core, at most 2 (memory: each holds its own keys). HE_APPROX_HE_WORKERS overrides. */
export function defaultWorkers(): number {
  const env = Number(process.env.HE_APPROX_HE_WORKERS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.max(1, Math.min(2, os.availableParallelism?.() ?? os.cpus().length));
}

/**
 * Runs batches on `n` worker threads (batches dealt round-robin), each with its own SEAL context
 * and keys: key generation runs on both cores at once, and no key is serialised. Cancelling
 * terminates the threads.
 */
async function runBatchesInWorkers(
  job: BatchJob,
  n: number,
  onBatch: (r: BatchResult) => void,
  signal?: AbortSignal,
): Promise<BatchRun> {
  const script = path.join(__dirname, 'batchWorker.js');
  // Without the compiled thread script (the sources run through a TypeScript loader): this thread.
  if (!fs.existsSync(script)) return runBatches(job, onBatch, signal);
  const threads: Worker[] = [];
  const runs = Array.from(
    { length: n },
    (_, w) =>
      new Promise<BatchRun>((resolve, reject) => {
        const mine: BatchJob = { ...job, batches: job.batches.filter((_, i) => i % n === w) };
        const worker = new Worker(script, { workerData: mine });
        threads.push(worker);
        worker.on(
          'message',
          (m: { batch?: BatchResult; done?: BatchRun; error?: { code: string; message: string; fix: string } }) => {
            if (m.batch) onBatch(m.batch);
            else if (m.done) resolve(m.done);
            else if (m.error)
              reject(
                m.error.code
                  ? new UserError(m.error.code as never, m.error.message, m.error.fix)
                  : new Error(m.error.message),
              );
          },
        );
        worker.on('error', reject);
        worker.on('exit', (code) =>
          reject(
            new UserError('CANCELLED', `encrypted test thread stopped (exit code ${code})`, 'run the command again'),
          ),
        );
      }),
  );
  const abort = () => threads.forEach((t) => void t.terminate());
  signal?.addEventListener('abort', abort);
  try {
    const all = await Promise.all(runs);
    if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
    return { ...all[0], keygenSeconds: Math.max(...all.map((r) => r.keygenSeconds)) };
  } catch (e) {
    if (signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
    throw e;
  } finally {
    signal?.removeEventListener('abort', abort);
    abort();
  }
}

export function renderModelTest(r: EncryptedModelReport): string {
  const lines: string[] = [];
  const lib = r.engine === 'lattigo' ? `Lattigo CKKS${r.bootstrapping ? ' with bootstrapping' : ''}` : 'SEAL CKKS';
  lines.push(
    `encrypted whole-model test (${lib}, N=${r.params.ringSize}, ${r.params.levels} levels${r.bootstrapping ? ' between bootstraps' : ''}, 40-bit scale, ${r.security ?? '128-bit'} security, ${describePacking(r)})`,
  );
  lines.push('sample  label  original  approximated  encrypted  max |logit err|');
  for (const s of r.samples) {
    lines.push(
      `${String(s.index).padStart(6)}  ${String(s.label ?? '-').padStart(5)}  ${String(s.plainOriginal).padStart(8)}  ${String(s.plainApproximated).padStart(12)}  ${String(s.encrypted).padStart(9)}  ${s.maxAbsErrLogits.toExponential(2).padStart(15)}`,
    );
  }
  lines.push(
    `encrypted top-1 = plaintext approximated top-1 on ${(100 * r.agreement).toFixed(1)}% of ${r.samples.length} samples; max logit error ${r.maxAbsErrLogits.toExponential(2)}`,
  );
  const b = r.bootstrapping;
  if (b) {
    lines.push(
      `bootstraps: planned ${b.planned}, executed ${b.executed} (${b.ciphertexts} ciphertexts per run, ${b.secondsPerBootstrap.toFixed(1)} s each); ` +
        `precision kept by each: ${b.precisionBits.map((x) => x.toFixed(1)).join(', ')} bits`,
    );
    lines.push(
      `values refreshed: ${b.values.map((v) => `${v.node} (|x| <= ${v.bound.toPrecision(3)}${v.scaled ? ', scaled into [-1, 1]' : ''})`).join(', ')}`,
    );
    lines.push(
      `levels after the last bootstrap: predicted ${r.levelsPredicted}, used ${r.levelsUsed}, of ${r.params.levels} between bootstraps`,
    );
  } else {
    lines.push(
      `levels: needed ${r.levelsNeeded}, simulator predicted ${r.levelsPredicted}, used ${r.levelsUsed}, available ${r.params.levels}`,
    );
  }
  lines.push(
    `time per layer (s): ${Object.entries(r.layerSeconds)
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join(', ')}`,
  );
  const per =
    (r.params.samplesPerCiphertext === 1
      ? 'per sample (one sample per run)'
      : `per ciphertext of ${r.params.samplesPerCiphertext} samples`) +
    (r.firstRunSeconds !== undefined && Math.abs(r.firstRunSeconds - r.latencySeconds) > 0.005
      ? ` (first run ${r.firstRunSeconds.toFixed(2)} s: it also encodes the weights)`
      : '');
  const threads = r.workers && r.workers > 1 ? ` on ${r.workers} threads` : '';
  lines.push(
    `latency ${r.latencySeconds.toFixed(2)} s ${per}; amortised ${r.amortisedSecondsPerSample.toFixed(3)} s per sample${threads}; key generation ${r.keygenSeconds.toFixed(1)} s`,
  );
  lines.push(
    `keys: public ${(r.keyBytes.publicKey / 1e6).toFixed(1)} MB, relinearisation ${(r.keyBytes.relinKeys / 1e6).toFixed(1)} MB, Galois ${(r.keyBytes.galoisKeys / 1e6).toFixed(1)} MB (${r.galoisSteps.length} rotation steps)` +
      (r.keyBytes.bootstrappingKeys ? `, bootstrapping ${(r.keyBytes.bootstrappingKeys / 1e6).toFixed(0)} MB` : '') +
      `; peak memory ${r.peakRssMB} MB` +
      (r.memoryPerThreadMB ? ` (estimated ${r.memoryPerThreadMB} MB per thread, weights' plaintexts included)` : ''),
  );
  return lines.join('\n');
}

/** The packing, as the CLI and the extension print it. */
export function describePacking(r: EncryptedModelReport): string {
  const p = r.packing;
  if (!p || p.kind === 'throughput')
    return `throughput packing: ${r.params.samplesPerCiphertext} samples per ciphertext, one ciphertext per channel`;
  if (p.inputCopies)
    return `latency packing: one sample, ${p.inputCopies} permuted copies of its input in one ciphertext (the first dense layer's diagonals split among them)`;
  if (p.channelsPerCiphertext > 1)
    return `latency packing: one sample, ${p.channelsPerCiphertext} channels per ciphertext`;
  return `latency packing: one sample per ciphertext${p.why ? ` (channels not packed together: ${p.why})` : ''}`;
}
