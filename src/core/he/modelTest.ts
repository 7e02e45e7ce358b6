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
import { packRuns, recordRuns, references, resultSummary } from './references';
import { checkHeMemory, chooseParams, threadPlan } from './params';
import { programDepth } from './program';
import { compileProgram } from './compile';
import { SealBackend } from './seal';
import { Batch, BatchJob, BatchResult, BatchRun, runBatches } from './sealRun';

export type { EncryptedModelReport, SampleResult };
export { channelPackingObstacle, programDepth } from './program';
export { compileProgram } from './compile';
export { latencyPacking, packSamples } from './layout';
export { emulateProgram, simulateProgram } from './emulate';
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
  const oneSample = o.packing === 'latency';
  const { blocks, B, trace, packing } = recordRuns(program, oneSample, {
    primes: await SealBackend.primesOf(params),
    levels: params.levels,
    slots: params.slots,
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
  const refs = await references(o, g, 29);
  const { n } = refs;
  // Batches of B samples (one sample in latency packing), run on worker threads: each thread makes
  // its own keys, so no secret ever leaves the thread that made it.
  const batchList: Batch[] = packRuns(program, refs, B, params.slots, blocks);
  // Each thread also keeps weights' plaintexts, as many as its heap leaves room for, up to a bound;
  // threads beyond what the machine's free memory holds are not started.
  const {
    threads: workers,
    plainCacheBytes,
    bytesPerThread,
  } = threadPlan(perThread, Math.max(1, Math.min(o.workers ?? defaultWorkers(), batchList.length)));
  const job: BatchJob = { trace, params, batches: batchList, plainCacheBytes };
  const tally = new BatchTally(n, B, refs.K, refs.result, o.onProgress);
  const tw = Date.now();
  // Threads even for one: node-seal's WebAssembly heap never shrinks, and a thread's goes when it ends.
  const run = await runBatchesInWorkers(job, workers, (r) => tally.add(r), o.signal);
  // Wall time of the batches alone: key generation (on all threads at once) is reported apart.
  const wallSeconds = Math.max(0, (Date.now() - tw) / 1000 - run.keygenSeconds);
  const { keygenSeconds } = run;
  const levelsPredicted = params.levels - trace.predicted.outputLevel;
  const results = tally.results;
  return {
    mode: 'model',
    createdAt: new Date().toISOString(),
    engine: 'seal',
    security: '128-bit',
    params: { ...params, samplesPerCiphertext: B },
    packing,
    levelsNeeded: needed,
    levelsPredicted,
    levelsUsed: tally.levelsUsed,
    galoisSteps,
    keyBytes: run.keyBytes,
    samples: results,
    ...resultSummary(results),
    ...tally.times(batchList.length),
    amortisedSecondsPerSample: wallSeconds / Math.max(1, n),
    keygenSeconds,
    workers,
    wallSeconds,
    memoryPerThreadMB: Math.round(bytesPerThread / 1e6),
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

/**
 * The batches' results as threads deliver them, in any order: samples by position, and per layer
 * all runs and the runs after each thread's first (which also encodes the weights).
 */
class BatchTally {
  readonly results: SampleResult[];
  levelsUsed = 0;
  private readonly layerSeconds: Record<string, number> = {};
  private readonly steadyLayerSeconds: Record<string, number> = {};
  private latency = 0;
  private done = 0;
  private firstRuns = 0;
  private firstSeconds = 0;

  constructor(
    private readonly n: number,
    private readonly B: number,
    private readonly K: number,
    private readonly result: (i: number, logits: number[]) => SampleResult,
    private readonly onProgress?: (fraction: number, message: string) => void,
  ) {
    this.results = new Array(n);
  }

  add(r: BatchResult): void {
    if (r.first) {
      this.firstRuns++;
      this.firstSeconds += r.seconds;
    } else this.latency += r.seconds;
    this.levelsUsed = r.levelsUsed;
    for (const [k, v] of Object.entries(r.layerSeconds)) {
      this.layerSeconds[k] = (this.layerSeconds[k] ?? 0) + v;
      if (!r.first) this.steadyLayerSeconds[k] = (this.steadyLayerSeconds[k] ?? 0) + v;
    }
    for (let b = 0; b < r.cnt; b++)
      this.results[r.start + b] = this.result(
        r.start + b,
        Array.from({ length: this.K }, (_, j) => r.out[j * this.B + b]),
      );
    this.done += r.cnt;
    this.onProgress?.(Math.min(1, this.done / this.n), `encrypted ${this.done}/${this.n} samples`);
  }

  /** Per layer and per run. Steady state: the batches after each thread's first, which encoded the weights once. */
  times(batches: number) {
    const { firstRuns, firstSeconds } = this;
    const steady = batches > firstRuns;
    const perRun = (m: Record<string, number>, runs: number) =>
      Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v / runs]));
    return {
      layerSeconds: steady ? perRun(this.steadyLayerSeconds, batches - firstRuns) : perRun(this.layerSeconds, batches),
      latencySeconds: steady ? this.latency / (batches - firstRuns) : firstSeconds / Math.max(1, firstRuns),
      firstRunSeconds: firstSeconds / Math.max(1, firstRuns),
    };
  }
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
