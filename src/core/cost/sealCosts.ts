/**
 * Per-operation CKKS costs measured with node-seal (Microsoft SEAL compiled to WebAssembly) on
 * this machine, once per ring size, and cached in the user's cache folder. The latency estimates
 * of the analysis multiply these by the operation counts of each polynomial's evaluation plan.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { OpCosts } from './cost';

/** Bit sizes of the modulus chain: 60-bit special primes at both ends, `levels` scale primes between. */
export function modulusBits(levels: number, scaleBits = 40): number[] {
  return [60, ...new Array<number>(levels).fill(scaleBits), 60];
}

export function cacheDir(): string {
  const base = process.env.HE_APPROX_CACHE_DIR ?? process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return process.env.HE_APPROX_CACHE_DIR ? base : path.join(base, 'he-approx');
}

// node-seal ships its own types; we keep to the handful of calls used here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Seal = any;

let sealPromise: Promise<Seal> | null = null;
/** Loads node-seal once (the wasm is inlined in this entry point: nothing to copy when bundling). */
export function loadSeal(): Promise<Seal> {
  if (!sealPromise) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use: its wasm is megabytes
    const factory = require('node-seal/throws_wasm_node_umd.js');
    sealPromise = (factory.default ?? factory)();
  }
  return sealPromise!;
}

const LEVELS: Record<number, number> = { 8192: 2, 16384: 7, 32768: 19 };

/** Measures multiply+relinearise+rescale, scalar multiply+rescale, add and one rotation at the top level. */
export async function measureSealCosts(ringSize: number, reps = 3): Promise<OpCosts> {
  const seal = await loadSeal();
  const levels = LEVELS[ringSize];
  if (levels === undefined) throw new Error(`no modulus chain for ring size ${ringSize}`);
  const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
  parms.setPolyModulusDegree(ringSize);
  parms.setCoeffModulus(seal.CoeffModulus.Create(ringSize, Int32Array.from(modulusBits(levels))));
  const context = seal.Context(parms, true, seal.SecurityLevel.tc128);
  const made: { delete: () => void }[] = [parms, context];
  try {
    const encoder = seal.CKKSEncoder(context);
    const keygen = seal.KeyGenerator(context);
    const pk = keygen.createPublicKey();
    const relin = keygen.createRelinKeys();
    const galois = keygen.createGaloisKeys(Int32Array.from([1]));
    const encryptor = seal.Encryptor(context, pk);
    const evaluator = seal.Evaluator(context);
    made.push(encoder, keygen, pk, relin, galois, encryptor, evaluator);
    const scale = 2 ** 40;
    const slots = encoder.slotCount as number;
    const values = Float64Array.from({ length: slots }, (_, i) => Math.sin(i));
    const pt = encoder.encode(values, scale);
    const ct = encryptor.encrypt(pt);
    const c = encoder.encode(
      Float64Array.from({ length: slots }, () => 0.37),
      scale,
    );
    made.push(pt, ct, c);
    const time = (op: () => { delete: () => void } | void): number => {
      let best = Infinity;
      for (let r = 0; r < reps; r++) {
        const t0 = process.hrtime.bigint();
        const out = op();
        best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
        if (out) out.delete();
      }
      return best;
    };
    const mulRelinRescale = time(() => {
      const x = evaluator.multiply(ct, ct);
      evaluator.relinearize(x, relin, x);
      evaluator.rescaleToNext(x, x);
      return x;
    });
    const mulScalar = time(() => {
      const x = evaluator.multiplyPlain(ct, c);
      evaluator.rescaleToNext(x, x);
      return x;
    });
    const add = time(() => evaluator.add(ct, ct));
    const rotate = time(() => evaluator.rotateVector(ct, 1, galois));
    return {
      ringSize,
      mulRelinRescale,
      mulScalar,
      add,
      rotate,
      source: `measured with node-seal ${seal.Version ?? ''} on this machine (best of ${reps}, top level)`.replace(
        '  ',
        ' ',
      ),
    };
  } finally {
    for (const m of made.reverse()) {
      try {
        m.delete();
      } catch {
        /* already freed */
      }
    }
  }
}

export function costsCacheFile(ringSize: number): string {
  return path.join(cacheDir(), `seal-costs-${ringSize}.json`);
}

/** Costs cached in `file` that pass `ok`, saying where they were cached; null if none (not measured yet, or damaged). */
export function readCachedCosts(file: string, ok: (c: OpCosts) => boolean): OpCosts | null {
  try {
    const c = JSON.parse(fs.readFileSync(file, 'utf8')) as OpCosts;
    if (ok(c)) return { ...c, source: `${c.source}; cached in ${file}` };
  } catch {
    /* not cached yet */
  }
  return null;
}

/** Caches measured costs in `file`; an unwritable cache only costs a re-measurement next time. */
export function writeCachedCosts(file: string, c: OpCosts): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(c, null, 2) + '\n');
  } catch {
    /* measured again next time */
  }
}

/** Costs measured earlier on this machine, or null. */
export function cachedSealCosts(ringSize: number): OpCosts | null {
  return readCachedCosts(costsCacheFile(ringSize), (c) => c.ringSize === ringSize && c.mulRelinRescale > 0);
}

/**
 * Measures the costs for `ringSize` and caches them. At the larger rings this takes tens of
 * seconds and over a gigabyte (relinearisation and Galois keys), so the analysis never does it
 * implicitly: `he-approx costs`.
 */
export async function measureAndCacheSealCosts(ringSize: number): Promise<OpCosts> {
  const c = await measureSealCosts(ringSize);
  writeCachedCosts(costsCacheFile(ringSize), c);
  return c;
}
