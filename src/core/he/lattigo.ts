/**
 * The Lattigo engine (engines/lattigo, a Go program built with the repository): finding its
 * binary, asking it for the chain it runs, and running a trace on it in its own process. The
 * engine only executes what the trace says; levels, scales and bootstraps are decided here
 * (lower.ts, bootstrapPlan.ts). Data crosses in files of a private folder that is removed on every
 * exit path; events (keys, layer steps, bootstraps, runs) come back as JSON lines on stdout, so
 * progress and cancellation work as for SEAL.
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../errors';
import { Trace } from './trace';

/** What the engine is asked for (engines/lattigo/params.go: Spec). */
export interface LattigoSpec {
  logN: number;
  levels: number;
  bootstrap: boolean;
  insecure?: boolean;
}
/** What it answers: its primes, slots and scale, and the security of those parameters. */
export interface LattigoChain {
  primes: number[];
  levels: number;
  slots: number;
  logScale: number;
  logQP: number;
  security: string;
  /** The bootstrapping's q0 / |m| (engines/lattigo: levelZeroError); absent without bootstrapping. */
  messageRatio?: number;
}

/** The protocol the TypeScript side speaks (engines/lattigo/main.go: Version). */
export const ENGINE_VERSION = 'he-approx-lattigo 3 ';

/** The ring of Lattigo's 128-bit bootstrapping parameters; tests use a smaller one, named insecure. */
export const SECURE_LOG_N = 16;

/**
 * The test suite's small ring, from the environment: HE_APPROX_LATTIGO_LOGN together with
 * HE_APPROX_INSECURE_TEST_PARAMS=1 (so the CLI and the editor's end-to-end tests reach it
 * without an option a user could pass by mistake); undefined otherwise.
 */
export function testLogN(env = process.env): number | undefined {
  if (env.HE_APPROX_INSECURE_TEST_PARAMS !== '1' || !env.HE_APPROX_LATTIGO_LOGN) return undefined;
  const n = Number(env.HE_APPROX_LATTIGO_LOGN);
  if (!Number.isInteger(n) || n < 12 || n > 16)
    throw new UserError(
      'OPTION_INVALID',
      `HE_APPROX_LATTIGO_LOGN=${env.HE_APPROX_LATTIGO_LOGN} is not a ring size (log2) from 12 to 16`,
      'unset it, or set it to e.g. 13',
    );
  return n;
}

/** Platform folder names, as VS Code's targets name them (linux-x64, darwin-arm64, win32-x64, ...). */
export function platformTarget(platform = process.platform, arch = process.arch): string {
  return `${platform}-${arch}`;
}

const exe = (platform = process.platform) => (platform === 'win32' ? 'he-approx-lattigo.exe' : 'he-approx-lattigo');

/** The folder of the he-approx package this module belongs to (dist/src/core/he or bundle/). */
function packageRoot(): string | null {
  for (let dir = __dirname, up = 0; up < 6; up++, dir = path.dirname(dir)) {
    try {
      if (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).name === 'he-approx') return dir;
    } catch {
      /* not here */
    }
  }
  return null;
}

/**
 * The engine binary: HE_APPROX_LATTIGO if set, else the one `npm run build` made
 * (engines/lattigo/bin/<target>/), else the one shipped in the extension's bundle
 * (bundle/engines/<target>/).
 * A clear error naming the fix when there is none.
 */
export function findEngine(): string {
  const env = process.env.HE_APPROX_LATTIGO;
  if (env) {
    if (!fs.existsSync(env))
      throw new UserError(
        'ENGINE_MISSING',
        `HE_APPROX_LATTIGO names ${env}, which does not exist`,
        'point HE_APPROX_LATTIGO at the he-approx-lattigo binary, or unset it',
      );
    return env;
  }
  const root = packageRoot();
  const target = platformTarget();
  // The build folder first: in a checkout it is what `npm run build` just made, and a bundle left
  // from an earlier `npm run package` must not shadow it; an installed VSIX has only bundle/.
  const places = root
    ? [path.join(root, 'engines', 'lattigo', 'bin', target, exe()), path.join(root, 'bundle', 'engines', target, exe())]
    : [];
  const found = places.find((p) => fs.existsSync(p));
  if (found) {
    // A VSIX unpacked by a tool that drops file modes leaves our own binary unexecutable: restore it.
    if (process.platform !== 'win32') {
      try {
        fs.accessSync(found, fs.constants.X_OK);
      } catch {
        try {
          fs.chmodSync(found, 0o755);
        } catch {
          /* the spawn error names it */
        }
      }
    }
    return found;
  }
  throw new UserError(
    'ENGINE_MISSING',
    `the Lattigo engine (bootstrapping) is not built for ${target}`,
    'install Go 1.22 or later and run npm run build:engine in the he-approx folder (the VS Code extension ships it for its platforms)',
  );
}

/** The engine's version line; a binary of another protocol is refused. */
export function engineVersion(bin = findEngine()): string {
  const r = spawnSync(bin, ['version'], { encoding: 'utf8' });
  const out = (r.stdout ?? '').trim();
  if (r.error || r.status !== 0 || !out.startsWith(ENGINE_VERSION)) {
    throw new UserError(
      'ENGINE_MISSING',
      `${bin} is not a he-approx Lattigo engine of this version (${r.error?.message ?? (out || `exit ${r.status}`)})`,
      'run npm run build in the he-approx folder to rebuild it',
    );
  }
  return out;
}

/**
 * The chain the engine runs programs on for `spec`. Insecure (small-ring) parameters only when
 * HE_APPROX_INSECURE_TEST_PARAMS=1 (the test suite): never for a reported run otherwise.
 */
export function engineChain(spec: LattigoSpec, bin = findEngine()): LattigoChain {
  if (spec.insecure && process.env.HE_APPROX_INSECURE_TEST_PARAMS !== '1') {
    throw new UserError(
      'OPTION_INVALID',
      'insecure test parameters were asked for outside the test suite',
      'leave them out: reported runs use 128-bit parameters',
    );
  }
  engineVersion(bin);
  const r = spawnSync(bin, ['chain', JSON.stringify(spec)], { encoding: 'utf8' });
  const out = (r.stdout ?? '').trim();
  let msg: { type?: string; message?: string } & Partial<LattigoChain> = {};
  try {
    msg = JSON.parse(out.split('\n').pop() ?? '{}');
  } catch {
    /* below */
  }
  if (r.status !== 0 || msg.type === 'error' || !msg.primes) {
    throw new UserError(
      'BUDGET_INFEASIBLE',
      `the Lattigo engine cannot run ${spec.levels} levels at N=2^${spec.logN}${spec.bootstrap ? ' with bootstrapping' : ''}: ${msg.message ?? (r.stderr || out || `exit ${r.status}`).trim()}`,
      spec.bootstrap
        ? "analyse again with --bootstrap-levels 9 or fewer (Lattigo's 128-bit bootstrapping parameters at N=2^16)"
        : 'lower the degrees so the model needs fewer levels',
    );
  }
  return msg as LattigoChain;
}

/** An event the engine reports while it runs (engines/lattigo/run.go: emit). */
export type EngineEvent =
  | {
      type: 'keys';
      seconds: number;
      security: string;
      bytes: { publicKey: number; relinKeys: number; galoisKeys: number; bootstrappingKeys: number };
    }
  | { type: 'mark'; run: number; name: string; seconds: number; bootSeconds?: number }
  | {
      type: 'boot';
      run: number;
      index: number;
      seconds: number;
      level: number;
      maxError?: number;
      precisionBits?: number;
    }
  | { type: 'run'; run: number; seconds: number; level: number; logScale: number; bootstraps: number; workers?: number }
  | { type: 'done'; peakRssMB: number }
  | { type: 'error'; message: string };

export interface EngineRun {
  /** Decrypted output slots of each run (the first `outLength`). */
  outputs: Float64Array[];
  events: EngineEvent[];
}

/**
 * The trace's constants as runs: for each, (count, value) pairs of float64s, and where its pairs
 * start and how many there are. A channel-packed layer's weight vector holds one value per block
 * of a channel's positions (zeros where a padded tap reads nothing), so a ResNet's thousands of
 * slot vectors at N=2^16, gigabytes as they are, shrink to a few megabytes; the engine expands
 * each when it encodes it.
 */
export function constRuns(consts: Float64Array[]): { data: Float64Array; offsets: [number, number][] } {
  const out: number[] = [];
  const offsets: [number, number][] = [];
  for (const c of consts) {
    const start = out.length;
    for (let i = 0; i < c.length;) {
      let j = i + 1;
      while (j < c.length && Object.is(c[j], c[i])) j++;
      out.push(j - i, c[i]);
      i = j;
    }
    offsets.push([start, (out.length - start) / 2]);
  }
  return { data: Float64Array.from(out), offsets };
}

/** The job folder the engine reads: plaintext vectors as runs, inputs as float64 little-endian, the trace as JSON. */
function writeJob(
  dir: string,
  trace: Trace,
  spec: LattigoSpec,
  runs: Float64Array[][],
  o: { outLength: number; precision?: boolean; releaseConsts?: boolean },
): void {
  const { data, offsets } = constRuns(trace.consts);
  fs.writeFileSync(path.join(dir, 'consts.bin'), Buffer.from(data.buffer, data.byteOffset, data.byteLength), {
    mode: 0o600,
  });
  if (o.releaseConsts) trace.consts.length = 0;
  const inputs = new Float64Array(runs.length * trace.inputs * trace.slots);
  runs.forEach((r, i) => r.forEach((v, j) => inputs.set(v, (i * trace.inputs + j) * trace.slots)));
  fs.writeFileSync(path.join(dir, 'inputs.bin'), Buffer.from(inputs.buffer), { mode: 0o600 });
  const job = {
    spec,
    inputs: trace.inputs,
    output: trace.output,
    B: trace.B,
    ops: trace.ops,
    consts: offsets,
    runs: runs.length,
    outLength: o.outLength,
    rotations: trace.predicted.rotations,
    precision: !!o.precision,
  };
  fs.writeFileSync(path.join(dir, 'job.json'), JSON.stringify(job), { mode: 0o600 });
}

/**
 * Starts the engine on a job folder: its JSON events (one per stdout line) are collected and
 * passed on; it resolves on a clean exit and rejects with one line naming why it stopped
 * (cancelled, out of memory, a Go panic, or the engine's own error event).
 */
function startEngine(
  bin: string,
  dir: string,
  o: { onEvent?: (e: EngineEvent) => void; signal?: AbortSignal; threads?: number },
  events: EngineEvent[],
  resolve: () => void,
  reject: (e: Error) => void,
): ChildProcess {
  const stderr: string[] = [];
  const env = o.threads ? { ...process.env, HE_APPROX_ENGINE_THREADS: String(o.threads) } : process.env;
  const child = spawn(bin, ['run', dir], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const abort = () => child.kill('SIGKILL');
  o.signal?.addEventListener('abort', abort);
  let buf = '';
  child.stdout!.on('data', (b: Buffer) => {
    buf += b.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      try {
        const e = JSON.parse(line) as EngineEvent;
        events.push(e);
        o.onEvent?.(e);
      } catch {
        stderr.push(line);
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => stderr.push(b.toString('utf8')));
  child.on('error', (e) =>
    reject(
      new UserError(
        'ENGINE_FAILED',
        `the Lattigo engine could not start: ${e.message}`,
        'run npm run build in the he-approx folder to rebuild it',
      ),
    ),
  );
  child.on('close', (code, sig) => {
    o.signal?.removeEventListener('abort', abort);
    if (o.signal?.aborted) {
      reject(new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again'));
      return;
    }
    const err = events.find((e): e is Extract<EngineEvent, { type: 'error' }> => e.type === 'error');
    if (code === 0 && !err) {
      resolve();
      return;
    }
    const oom = sig === 'SIGKILL' || /out of memory|cannot allocate/i.test(stderr.join(''));
    // A Go runtime failure (a panic) says what on stderr: its first line names it.
    const panic = stderr
      .join('')
      .split('\n')
      .find((l) => /^(panic|fatal error):/.test(l));
    reject(
      new UserError(
        'ENGINE_FAILED',
        `the Lattigo engine stopped${err ? `: ${err.message}` : sig ? ` (signal ${sig}${oom ? ', most likely out of memory' : ''})` : ` (exit code ${code}${panic ? `: ${panic}` : ''})`}`,
        oom
          ? 'free memory (bootstrapping keys at N=2^16 take several GB) or test fewer samples'
          : 'run npm run build to rebuild the engine; if it persists, report the message',
      ),
    );
  });
  return child;
}

/**
 * Runs `trace` on the engine for each run's packed inputs (one vector of `slots` per input
 * ciphertext). Cancelling kills the process; the private folder goes on every exit path.
 */
export async function runOnLattigo(
  trace: Trace,
  spec: LattigoSpec,
  runs: Float64Array[][],
  o: {
    outLength: number;
    precision?: boolean;
    onEvent?: (e: EngineEvent) => void;
    signal?: AbortSignal;
    bin?: string;
    /** Empty trace.consts once they are written: a ResNet's take gigabytes that the engine, not this process, needs while it runs. */
    releaseConsts?: boolean;
    /** Worker threads of the engine (default: one per core for long traces, HE_APPROX_ENGINE_THREADS). */
    threads?: number;
  },
): Promise<EngineRun> {
  const bin = o.bin ?? findEngine();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'he-approx-lattigo-'));
  let child: ChildProcess | null = null;
  try {
    writeJob(dir, trace, spec, runs, o);
    const events: EngineEvent[] = [];
    await new Promise<void>((resolve, reject) => {
      if (o.signal?.aborted) {
        reject(new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again'));
        return;
      }
      child = startEngine(bin, dir, o, events, resolve, reject);
    });
    const raw = fs.readFileSync(path.join(dir, 'outputs.bin'));
    const all = new Float64Array(raw.buffer, raw.byteOffset, raw.byteLength / 8);
    const outputs = runs.map((_, i) => Float64Array.from(all.subarray(i * o.outLength, (i + 1) * o.outLength)));
    return { outputs, events };
  } finally {
    const c = child as ChildProcess | null;
    if (c && c.exitCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
