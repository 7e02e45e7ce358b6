/**
 * Polynomial activations evaluated on two cores. On a deep network the analysis spends about as
 * long in the polynomials as in the convolutions (ResNet-32 at degrees 15-31: 28% of the CPU
 * profile in chebvalStrided, as much as in XNNPACK's convolution kernel), and TensorFlow.js's
 * wasm backend runs on one core, so the second core sits idle. Here a large evaluation is cut
 * into chunks that the calling thread and a helper thread take in turn until none is left.
 *
 * The call stays synchronous (the executor's forward pass calls it between two backend ops): the
 * threads meet through SharedArrayBuffers and Atomics.wait/notify, and new buffers reach the
 * helper by receiveMessageOnPort, synchronously, when an evaluation outgrows the old ones.
 * The helper runs the evaluators' own source (Function.prototype.toString, so that it works
 * the same from tsc's output and from the extension's bundle), and chunks start on multiples of 8
 * rows, so every value gets the very operations it gets on one thread: results are
 * identical bit for bit (test/numerics.test.ts checks it).
 *
 * HE_APPROX_THREADS=1 keeps everything on the calling thread; so does a one-core machine.
 */
import * as os from 'os';
import { MessageChannel, MessagePort, Worker } from 'worker_threads';
import { PIECES, chebPieces, chebvalPieces, chebvalStrided, chebvalUnit, unitMap } from './chebyshev';

/** Below this many multiply-adds (values x coefficients) waking the helper costs more than it saves. */
const MIN_WORK = 1 << 18;
/** How long the caller waits for a chunk the helper took before doing it itself (a helper that died). */
const WAIT_MS = 60_000;

interface Buffers {
  xs: SharedArrayBuffer;
  out: SharedArrayBuffer;
  coeffs: SharedArrayBuffer;
  ivs: SharedArrayBuffer;
  tables: SharedArrayBuffer;
}

/** A series' piecewise re-expansion, or none. */
type Pieces = ReturnType<typeof chebPieces> | null;

/**
 * ctrl's slots: the job number posted, the job's shape (ROW: the pieces' row length, 0 for whole
 * series), and the claim word (see claim), taken by
 * compare-and-swap, so that a thread still on an earlier job can never claim a chunk of the next.
 */
const SEQ = 0;
const ROW = 1;
const N = 2;
const CH = 3;
const K1 = 4;
const PER = 5;
const NEXT = 6;
const ROWS = 7;
/** Chunks per evaluation: both threads take the next free one, so a busy second core costs nothing. */
const MAX_CHUNKS = 32;

/** The helper's loop: wait for a job number, take free chunks until none is left, flag each one done. */
function helperSource(): string {
  // The three functions in a scope of their own: in the minified bundle their names are short and
  // must not meet the loop's.
  return `
const claim = ${claim.toString()};
const [__he_strided, __he_pieces] = (() => {
${unitMap.toString()}
${chebvalUnit.toString()}
${chebvalStrided.toString()}
${chebvalPieces.toString()}
return [${chebvalStrided.name}, ${chebvalPieces.name}];
})();
(() => {
  const { workerData, receiveMessageOnPort } = require('worker_threads');
  const strided = __he_strided;
  const pieces = __he_pieces;
  const ctrl = new Int32Array(workerData.ctrl);
  const flags = new Int32Array(workerData.flags);
  const port = workerData.port;
  let b = null;
  let seq = 0;
  for (;;) {
    Atomics.wait(ctrl, ${SEQ}, seq);
    seq = Atomics.load(ctrl, ${SEQ});
    for (let m; (m = receiveMessageOnPort(port)); ) b = { xs: new Float32Array(m.message.xs), out: new Float32Array(m.message.out), coeffs: new Float64Array(m.message.coeffs), ivs: new Float64Array(m.message.ivs), tables: new Float64Array(m.message.tables) };
    const n = ctrl[${N}], C = ctrl[${CH}], K1 = ctrl[${K1}], perChannel = ctrl[${PER}], rows = ctrl[${ROWS}], R = ctrl[${ROW}], T = ${PIECES} * R;
    const one = (xs, out, k, start, stride) => {
      const c = b.coeffs.subarray(k * K1, (k + 1) * K1), iv = { a: b.ivs[2 * k], b: b.ivs[2 * k + 1] };
      if (R) pieces(xs, out, c, iv, b.tables.subarray(k * T, (k + 1) * T), R, start, stride);
      else strided(xs, out, c, iv, start, stride);
    };
    for (let k; (k = claim(ctrl, seq)) >= 0; ) {
      const lo = k * rows * C, hi = Math.min(n, (k + 1) * rows * C);
      const xs = b.xs.subarray(lo, hi), out = b.out.subarray(lo, hi);
      if (perChannel) for (let c = 0; c < C; c++) one(xs, out, c, c, C);
      else one(xs, out, 0, 0, 1);
      Atomics.store(flags, k, seq);
      Atomics.notify(flags, k);
    }
  }
})();`;
}

/**
 * The next free chunk of job `seq`, or -1 when none is left or the job is no longer `seq`. The
 * claim word (ctrl[6]; a literal, since the helper runs this function's source) is
 * seq << 12 | chunks << 6 | next: the bound comes from the word itself, so a thread that read the
 * next job's shape half-written can never claim anything (the job it read was already complete).
 */
function claim(ctrl: Int32Array, seq: number): number {
  for (;;) {
    const cur = Atomics.load(ctrl, 6);
    const k = cur & 0x3f;
    if (cur >>> 12 !== seq || k >= ((cur >>> 6) & 0x3f)) return -1;
    if (Atomics.compareExchange(ctrl, 6, cur, cur + 1) === cur) return k;
  }
}

class Helper {
  private readonly ctrl = new Int32Array(new SharedArrayBuffer(8 * 4));
  private readonly flags = new Int32Array(new SharedArrayBuffer(MAX_CHUNKS * 4));
  private readonly port: MessagePort;
  private readonly worker: Worker;
  private seq = 0;
  private bufs: Buffers | null = null;
  private view: {
    xs: Float32Array;
    out: Float32Array;
    coeffs: Float64Array;
    ivs: Float64Array;
    tables: Float64Array;
  } | null = null;
  dead = false;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(helperSource(), {
      eval: true,
      workerData: { ctrl: this.ctrl.buffer, flags: this.flags.buffer, port: port2 },
      transferList: [port2],
    });
    this.worker.unref();
    this.port.unref();
    this.worker.on('error', () => {
      this.dead = true;
    });
    this.worker.on('exit', () => {
      this.dead = true;
    });
  }

  /** Room for n values and the coefficients; new buffers go to the helper with the next job. */
  private ensure(n: number, nc: number, ni: number, nt: number): void {
    const b = this.bufs;
    if (
      b &&
      b.xs.byteLength >= 4 * n &&
      b.coeffs.byteLength >= 8 * nc &&
      b.ivs.byteLength >= 8 * ni &&
      b.tables.byteLength >= 8 * nt
    )
      return;
    const grow = (old: number, need: number) => Math.max(need, 2 * old);
    const nb: Buffers = {
      xs: new SharedArrayBuffer(grow(b?.xs.byteLength ?? 0, 4 * n)),
      out: new SharedArrayBuffer(grow(b?.out.byteLength ?? 0, 4 * n)),
      coeffs: new SharedArrayBuffer(grow(b?.coeffs.byteLength ?? 0, 8 * nc)),
      ivs: new SharedArrayBuffer(grow(b?.ivs.byteLength ?? 0, 8 * ni)),
      tables: new SharedArrayBuffer(grow(b?.tables.byteLength ?? 0, 8 * Math.max(1, nt))),
    };
    this.bufs = nb;
    this.view = {
      xs: new Float32Array(nb.xs),
      out: new Float32Array(nb.out),
      coeffs: new Float64Array(nb.coeffs),
      ivs: new Float64Array(nb.ivs),
      tables: new Float64Array(nb.tables),
    };
    this.port.postMessage(nb);
  }

  /**
   * Evaluates x (rows of C channels) in chunks of `rows` rows: this thread and the helper each take
   * the next free chunk until none is left; then this thread collects the helper's chunks.
   */
  run(
    x: Float32Array,
    out: Float32Array,
    C: number,
    coeffs: ArrayLike<number>[],
    ivs: { a: number; b: number }[],
    perChannel: boolean,
    rows: number,
    local: (x: Float32Array, out: Float32Array) => void,
    pieces: Pieces[] | null,
  ): number {
    const K = coeffs[0].length;
    const chunks = Math.ceil(x.length / C / rows);
    // Every series' rows padded to the longest with leading zeros, which leave Horner's rule's values as they are (chebPieces).
    const R = pieces ? Math.max(...pieces.map((p) => p!.rowLength)) : 0;
    this.ensure(x.length, coeffs.length * K, 2 * ivs.length, coeffs.length * PIECES * R);
    const v = this.view!;
    v.xs.set(x);
    coeffs.forEach((c, k) => v.coeffs.set(c, k * K));
    if (pieces) {
      v.tables.fill(0, 0, coeffs.length * PIECES * R);
      pieces.forEach((p, k) => {
        if (p!.rowLength === R) v.tables.set(p!.table, k * PIECES * R);
        else
          for (let j = 0; j < PIECES; j++)
            v.tables.set(
              p!.table.subarray(j * p!.rowLength, (j + 1) * p!.rowLength),
              (k * PIECES + j + 1) * R - p!.rowLength,
            );
      });
    }
    ivs.forEach((iv, k) => {
      v.ivs[2 * k] = iv.a;
      v.ivs[2 * k + 1] = iv.b;
    });
    const ctrl = this.ctrl;
    ctrl[ROW] = R;
    ctrl[N] = x.length;
    ctrl[CH] = C;
    ctrl[K1] = K;
    ctrl[PER] = perChannel ? 1 : 0;
    ctrl[ROWS] = rows;
    this.seq = this.seq === 0x7ffff ? 1 : this.seq + 1;
    Atomics.store(ctrl, NEXT, (this.seq << 12) | (chunks << 6));
    Atomics.store(ctrl, SEQ, this.seq);
    Atomics.notify(ctrl, SEQ);
    const mine = new Uint8Array(chunks);
    const part = (k: number) => [k * rows * C, Math.min(x.length, (k + 1) * rows * C)] as const;
    for (let k; (k = claim(ctrl, this.seq)) >= 0;) {
      const [lo, hi] = part(k);
      local(x.subarray(lo, hi), out.subarray(lo, hi));
      mine[k] = 1;
    }
    let theirs = 0;
    for (let k = 0; k < chunks; k++) {
      if (mine[k]) continue;
      const [lo, hi] = part(k);
      const deadline = Date.now() + WAIT_MS;
      while (Atomics.load(this.flags, k) !== this.seq && !this.dead && Date.now() < deadline)
        Atomics.wait(this.flags, k, Atomics.load(this.flags, k), 1000);
      if (Atomics.load(this.flags, k) === this.seq) {
        out.set(v.out.subarray(lo, hi), lo);
        theirs++;
        continue;
      }
      // The helper died or stalls: never trust it again; this chunk is done here.
      this.dead = true;
      local(x.subarray(lo, hi), out.subarray(lo, hi));
    }
    return theirs;
  }
}

let helper: Helper | null | undefined;
let jobs = 0;

/** Evaluations the helper thread took a part of so far (tests check that it is used). */
export function twoCoreJobs(): number {
  return jobs;
}

/** Threads the compute may use: HE_APPROX_THREADS, else the machine's cores (fine-tuning's helper reads it too). */
export function allowedThreads(): number {
  return Number(process.env.HE_APPROX_THREADS ?? os.cpus().length);
}

function getHelper(): Helper | null {
  if (helper === undefined) {
    helper = allowedThreads() >= 2 && typeof SharedArrayBuffer === 'function' ? new Helper() : null;
  }
  if (helper?.dead) helper = null;
  return helper;
}

/**
 * Evaluates `coeffs` (one series, or one per channel when perChannel) on x into out, the second
 * half of the samples on the helper thread when the work is large enough; `local` evaluates a
 * part on this thread. Returns false when it did nothing (small work, or no helper) so that the
 * caller evaluates everything itself.
 */
export function evaluateOnTwoCores(
  x: Float32Array,
  out: Float32Array,
  C: number,
  coeffs: ArrayLike<number>[],
  ivs: { a: number; b: number }[],
  perChannel: boolean,
  local: (x: Float32Array, out: Float32Array) => void,
  pieces: Pieces[] | null = null,
): boolean {
  const rows = x.length / C;
  if (x.length * coeffs[0].length < MIN_WORK || rows < 16) return false;
  const h = getHelper();
  if (!h) return false;
  // Chunks of a multiple of 8 rows: every value meets the same 8-point blocks of chebvalStrided
  // as on one thread (the last chunk holds the tail).
  const chunkRows = 8 * Math.ceil(rows / 8 / Math.min(MAX_CHUNKS, Math.floor(rows / 8)));
  if (h.run(x, out, C, coeffs, ivs, perChannel, chunkRows, local, pieces) > 0) jobs++;
  return true;
}
