/**
 * The analysis's memory, estimated from the graph before any tensor is made, so that a model or
 * a setting too large for this machine is refused in one line with the estimate and the limit,
 * instead of aborting the wasm heap ("memory access out of bounds") minutes in.
 *
 * The estimate is a lower bound: it counts what certainly has to fit, so it never refuses an
 * analysis that would have run. It covers the terms that grow with the model and the options:
 * - the weights, twice: the graph's Float32Arrays in the JS heap and their tensors in the backend;
 * - one batch: the executor keeps every node's value of a batch until the batch ends (see
 *   Executor.values), so batch x the sum of all nodes' per-sample sizes, in the backend;
 * - coefficient tuning's gradient tape for one sample at the lowest candidate degree
 *   (fit/tune.ts: the tape's batch shrinks to fit TAPE_BYTES, but not below one sample);
 * - the held-out cache: every held-out sample's values live where the first activation starts
 *   (HeldoutCache.build), in the JS heap.
 * The data set itself was checked when it was read (data/read.ts checkDataSize). What the
 * estimate misses (kernels' temporary copies, the heap's fragmentation) is caught when it
 * happens by `outOfMemory` below, which turns the backend's abort into the same error.
 */
import * as os from 'os';
import { UserError } from '../errors';
import { TAPE_BYTES, tapeBytesPerSample } from '../fit/tune';
import { tf } from '../model/backend';
import { Graph, activationNodes, liveAt, size } from '../model/graph';

/** The wasm backend's heap: its module declares a maximum of 65,536 pages of 64 KiB. */
export const WASM_HEAP_BYTES = 2 ** 32;

export interface MemoryEstimate {
  weights: number;
  /** Bytes per sample of one batch (all nodes' values). */
  perSampleBatch: number;
  /** Backend memory for one batch of `batchSize` samples. */
  batch: number;
  /** The tuning tape at its smallest (0 when tuning is off or the tape's budget covers it). */
  tape: number;
  /** Held-out cache: bytes per sample, and in all. */
  perSampleCache: number;
  cache: number;
  /** The node with the largest per-sample value, for the messages. */
  largest: { name: string; floats: number };
}

export interface MemoryOptions {
  heldout: number;
  batchSize: number;
  tune: boolean;
  minDegree: number;
}

export function estimateAnalysisMemory(g: Graph, o: MemoryOptions): MemoryEstimate {
  let weights = 0;
  let perSampleBatch = 0;
  let largest = { name: g.nodes[0].name, floats: 0 };
  for (const n of g.nodes) {
    for (const v of Object.values(n.spec)) if (v instanceof Float32Array) weights += v.byteLength;
    const floats = size(n.shape);
    perSampleBatch += 4 * floats;
    if (floats > largest.floats) largest = { name: n.name, floats };
  }
  const acts = activationNodes(g);
  let perSampleCache = 0;
  if (acts.length)
    for (const id of liveAt(g, acts[0].id)) if (id !== g.output) perSampleCache += 4 * size(g.nodes[id].shape);
  const tapeOne = o.tune && acts.length ? tapeBytesPerSample(acts, () => o.minDegree, g) : 0;
  return {
    weights,
    perSampleBatch,
    batch: o.batchSize * perSampleBatch,
    tape: tapeOne > TAPE_BYTES ? tapeOne : 0,
    perSampleCache,
    cache: o.heldout * perSampleCache,
    largest,
  };
}

const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;

function heapOf(backend: string, total: number): { bytes: number; name: string } {
  return backend === 'wasm'
    ? { bytes: WASM_HEAP_BYTES, name: `the ${gb(WASM_HEAP_BYTES)} the wasm backend can address` }
    : { bytes: 0.75 * total, name: `${gb(0.75 * total)} (3/4 of this machine's memory)` };
}

/**
 * Refuses an analysis whose estimate exceeds the backend's heap (wasm: 4.3 GB for the weights and
 * one batch, or the tuning tape) or 3/4 of the machine's memory (everything), naming the option
 * that brings it within the limit. Suggested sizes leave half the heap to what the estimate
 * does not count (kernels copy their operands: a transpose, a convolution's patches).
 */
export function checkAnalysisMemory(
  g: Graph,
  o: MemoryOptions,
  backend: string,
  total = os.totalmem(),
): MemoryEstimate {
  const e = estimateAnalysisMemory(g, o);
  const big = `the largest value, ${e.largest.name}, holds ${e.largest.floats.toLocaleString('en-US')} numbers per sample`;
  const smallerModel = 'use a smaller model or input resolution (fewer filters or units, smaller feature maps)';
  const smaller = `he-approx analyses in memory: ${smallerModel}`;
  const heap = heapOf(backend, total);
  if (e.weights + e.perSampleBatch > heap.bytes) {
    throw new UserError(
      'MEMORY_LIMIT',
      `the model needs at least ${gb(e.weights + e.perSampleBatch)} for its weights (${gb(e.weights)}) and one sample's values (${big}), more than ${heap.name}`,
      smaller,
    );
  }
  if (e.weights + e.tape > heap.bytes) {
    throw new UserError(
      'MEMORY_LIMIT',
      `coefficient tuning needs at least ${gb(e.weights + e.tape)} for the weights and one sample's gradient tape at degree ${o.minDegree} (${big}), more than ${heap.name}`,
      `pass --no-tune (the other refinements need no tape), or ${smallerModel}`,
    );
  }
  if (e.weights + e.batch > heap.bytes) {
    const fits = Math.max(1, Math.floor((heap.bytes / 2 - e.weights) / e.perSampleBatch));
    throw new UserError(
      'MEMORY_LIMIT',
      `one batch of ${o.batchSize} samples needs at least ${gb(e.weights + e.batch)} (weights ${gb(e.weights)}, values ${gb(e.batch)}; ${big}), more than ${heap.name}`,
      `pass --batch-size ${fits} or less`,
    );
  }
  const limit = 0.75 * total;
  const all = 2 * e.weights + e.batch + e.tape + e.cache;
  if (all > limit) {
    const fits = Math.floor((limit / 2 - 2 * e.weights - e.batch - e.tape) / Math.max(1, e.perSampleCache));
    const what =
      `the analysis needs at least ${gb(all)}: weights ${gb(2 * e.weights)} (JS and backend copies), one batch ${gb(e.batch + e.tape)}, ` +
      `the held-out values of ${o.heldout.toLocaleString('en-US')} samples ${gb(e.cache)}; more than ${gb(limit)} (3/4 of this machine's memory)`;
    throw new UserError(
      'MEMORY_LIMIT',
      what,
      fits >= 1 ? `pass --heldout ${fits} or fewer, or a smaller --batch-size` : smaller,
    );
  }
  return e;
}

/**
 * The backend's heap exhausted mid-run, past what the estimate counted: the wasm module aborts
 * with "memory access out of bounds" (malloc failed), the JS heap with a RangeError. Either
 * becomes a MEMORY_LIMIT error naming the stage; a wasm error with most of the heap still free
 * is not this, and stays what it is (a bug to report). Returns null for other errors.
 */
export function outOfMemory(e: unknown, stage: string, batchSize: number): UserError | null {
  const fix = `pass a smaller --batch-size (now ${batchSize}), fewer --heldout samples, or --no-tune; or analyse a smaller model`;
  if (e instanceof RangeError && /allocation failed|Invalid typed array length|Array buffer/i.test(e.message)) {
    return new UserError('MEMORY_LIMIT', `the analysis ran out of memory in its ${stage} stage (${e.message})`, fix);
  }
  const wasm = (globalThis as { WebAssembly?: { RuntimeError: new () => Error } }).WebAssembly;
  if (wasm && e instanceof wasm.RuntimeError && tf.getBackend() === 'wasm') {
    const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.byteLength ?? 0;
    if (heap >= 0.5 * WASM_HEAP_BYTES) {
      return new UserError(
        'MEMORY_LIMIT',
        `the analysis ran out of the wasm backend's memory in its ${stage} stage (heap at ${gb(heap)} of ${gb(WASM_HEAP_BYTES)})`,
        fix,
      );
    }
  }
  return null;
}
