/**
 * The CKKS backend on Microsoft SEAL (node-seal 6, WebAssembly). Keys live in this object's
 * memory only: nothing secret is ever serialised, written or logged; `dispose()` frees them.
 */
import { loadSeal } from '../cost/sealCosts';
import { CkksBackend, OpCounts, ScaleMismatchError, newCounts } from './backend';
import { CkksParams, PLAIN_CACHE_BYTES, sealKeySizes } from './params';
import type { VecOps } from './polyEval';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;
export type Ct = Any;

const parmsKey = (pid: Any): string => (pid.values as BigUint64Array).join(',');

/** v's value if every slot holds the same one, else null. */
function constantOf(v: Float64Array): number | null {
  const k = v[0];
  for (let i = 1; i < v.length; i++) if (v[i] !== k) return null;
  return k;
}

export class SealBackend implements CkksBackend<Ct> {
  readonly counts: OpCounts = newCounts();
  readonly params: CkksParams;
  private readonly context: Any;
  private readonly encoder: Any;
  private readonly encryptor: Any;
  private readonly decryptor: Any;
  private readonly evaluator: Any;
  private readonly relinKeys: Any;
  private readonly publicKey: Any;
  private readonly primes: number[];
  private readonly parmsByLevel = new Map<number, Any>();
  private readonly levelByParms = new Map<string, number>();
  private readonly owned: Any[] = [];
  private readonly galoisKeys: Any | null;
  private readonly seal: Any;
  private readonly primesBig: bigint[];
  /** Per level: a serialised plaintext (SEAL's own bytes) and where its coefficients start. */
  private readonly constTemplates = new Map<number, { bytes: Uint8Array; offset: number } | null>();
  private readonly plainCache = new Map<string, Any>();
  private plainCacheBytes = 0;
  /** Weight plaintexts kept across batches, at most (node-seal's heap is 4 GB, shared with keys and ciphertexts). */
  plainCacheLimit = PLAIN_CACHE_BYTES;
  readonly keySizes: { publicKey: number; relinKeys: number; galoisKeys: number };

  private constructor(seal: Any, params: CkksParams, galoisSteps: number[]) {
    this.params = params;
    const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
    parms.setPolyModulusDegree(params.ringSize);
    parms.setCoeffModulus(seal.CoeffModulus.Create(params.ringSize, Int32Array.from(params.modulusBits)));
    this.context = seal.Context(parms, true, seal.SecurityLevel.tc128);
    if (!this.context.parametersSet())
      throw new Error(`SEAL rejected N=${params.ringSize} with ${params.modulusBits.join('+')} bits`);
    this.primes = Array.from(parms.coeffModulus as BigUint64Array, (q) => Number(q));
    this.primesBig = Array.from(parms.coeffModulus as BigUint64Array);
    this.seal = seal;
    this.encoder = seal.CKKSEncoder(this.context);
    const keygen = seal.KeyGenerator(this.context);
    this.publicKey = keygen.createPublicKey();
    const secretKey = keygen.secretKey();
    this.relinKeys = keygen.createRelinKeys();
    this.encryptor = seal.Encryptor(this.context, this.publicKey);
    this.decryptor = seal.Decryptor(this.context, secretKey);
    this.evaluator = seal.Evaluator(this.context);
    // Galois keys only for the rotation steps the program uses: each one is large.
    this.galoisKeys = galoisSteps.length ? keygen.createGaloisKeys(Int32Array.from(galoisSteps)) : null;
    this.keySizes = sealKeySizes(params, galoisSteps.length);
    this.owned.push(
      parms,
      keygen,
      secretKey,
      this.publicKey,
      this.relinKeys,
      this.encoder,
      this.encryptor,
      this.decryptor,
      this.evaluator,
      this.context,
    );
    if (this.galoisKeys) this.owned.push(this.galoisKeys);
    for (let cd = this.context.firstContextData; cd; cd = cd.nextContextData) {
      const pid = cd.parmsId;
      this.parmsByLevel.set(cd.chainIndex, pid);
      this.levelByParms.set(parmsKey(pid), cd.chainIndex);
      if (cd.chainIndex === 0) break;
    }
  }

  static async create(params: CkksParams, galoisSteps: number[] = []): Promise<SealBackend> {
    return new SealBackend(await loadSeal(), params, galoisSteps);
  }

  /** The primes SEAL picks for these parameters (q_0 .. q_levels and the special prime), without making keys. */
  static async primesOf(params: CkksParams): Promise<number[]> {
    const seal = await loadSeal();
    const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
    try {
      parms.setPolyModulusDegree(params.ringSize);
      parms.setCoeffModulus(seal.CoeffModulus.Create(params.ringSize, Int32Array.from(params.modulusBits)));
      return Array.from(parms.coeffModulus as BigUint64Array, (q) => Number(q));
    } finally {
      parms.delete();
    }
  }

  /** Cyclic left rotation of the slots by `steps` (a key for the step must have been generated). */
  rotate(c: Ct, steps: number): Ct {
    if (!this.galoisKeys) throw new Error('no Galois keys');
    this.counts.add++;
    return this.evaluator.rotateVector(c, steps, this.galoisKeys);
  }

  /** Multiply by a plaintext vector encoded at `encScale`, without rescaling (sums come first). */
  mulVector(c: Ct, v: Float64Array, encScale: number): Ct {
    const pt = this.plainAt(v, encScale, this.level(c));
    const out = this.evaluator.multiplyPlain(c, pt);
    pt.delete();
    return out;
  }

  /**
   * mulVector with the plaintext kept under `key` (with the level and scale) for later calls: the
   * model's weights are the same plaintexts for every sample. Kept while the cache holds less than
   * `plainCacheLimit` bytes; beyond, encoded per call as mulVector does.
   */
  mulVectorCached(c: Ct, v: () => Float64Array, encScale: number, key: string): Ct {
    const level = this.level(c);
    const k = `${key}@${level}@${encScale}`;
    const hit = this.plainCache.get(k);
    if (hit) return this.evaluator.multiplyPlain(c, hit);
    const pt = this.plainAt(v(), encScale, level);
    const out = this.evaluator.multiplyPlain(c, pt);
    const bytes = this.params.ringSize * (level + 1) * 8;
    if (this.plainCacheBytes + bytes <= this.plainCacheLimit) {
      this.plainCache.set(k, pt);
      this.plainCacheBytes += bytes;
    } else pt.delete();
    return out;
  }

  addRaw(a: Ct, b: Ct): Ct {
    return this.add(a, b);
  }

  /** a += b in place (same level and scale); returns a. */
  addInto(a: Ct, b: Ct): Ct {
    this.align(a, b);
    this.counts.add++;
    this.evaluator.add(a, b, a);
    return a;
  }

  rescale(c: Ct): Ct {
    if (this.level(c) < 1) throw new ScaleMismatchError('out of levels');
    return this.evaluator.rescaleToNext(c);
  }

  get topLevel(): number {
    return this.params.levels;
  }
  get slots(): number {
    return this.encoder.slotCount as number;
  }

  /** Per-position vector operations for the polynomial evaluator, each vector tiled over the slots (periodic in its length). */
  tiledVecOps(): VecOps<Ct> {
    const tile = (v: Float64Array) => Float64Array.from({ length: this.slots }, (_, i) => v[i % v.length]);
    return {
      mulVec: (c, v, encScale) => {
        const y = this.mulVector(c, tile(v), encScale);
        const r = this.rescale(y);
        this.free(y);
        return r;
      },
      addVec: (c, v) => this.addVector(c, tile(v)),
    };
  }

  dispose(): void {
    for (const pt of this.plainCache.values()) pt.delete();
    this.plainCache.clear();
    this.plainCacheBytes = 0;
    for (const o of this.owned.reverse()) {
      try {
        o.delete();
      } catch {
        /* freed */
      }
    }
    this.owned.length = 0;
  }

  private fill(k: number): Float64Array {
    return new Float64Array(this.slots).fill(k);
  }

  encrypt(values: ArrayLike<number>, scale = 2 ** this.params.scaleBits): Ct {
    const v = new Float64Array(this.slots);
    v.set(Array.from(values).slice(0, this.slots));
    const pt = this.encoder.encode(v, scale);
    const ct = this.encryptor.encrypt(pt);
    pt.delete();
    return ct;
  }

  decrypt(ct: Ct): Float64Array {
    const pt = this.decryptor.decrypt(ct);
    const out = this.encoder.decode(pt) as Float64Array;
    pt.delete();
    return Float64Array.from(out);
  }

  /**
   * Chain index of c's parameters, from the map built with the chain: the evaluator asks for
   * levels constantly, and each `parmsId` read makes a wasm-backed wrapper that must be freed.
   */
  level(c: Ct): number {
    const pid = c.parmsId;
    try {
      const l = this.levelByParms.get(parmsKey(pid));
      if (l === undefined) throw new Error('ciphertext parameters are not in this context');
      return l;
    } finally {
      pid.delete();
    }
  }
  scale(c: Ct): number {
    return c.scale;
  }
  prime(level: number): number {
    return this.primes[level];
  }

  private plainAt(k: number | Float64Array, scale: number, level: number): Any {
    const c = typeof k === 'number' ? k : constantOf(k);
    const fast = c === null ? null : this.constPlain(c, scale, level);
    return fast ?? this.encodeAt(typeof k === 'number' ? this.fill(k) : k, scale, level);
  }

  /** SEAL's encoder (at the top level), then switched down to `level`. */
  private encodeAt(v: Float64Array, scale: number, level: number): Any {
    const pt = this.encoder.encode(v, scale);
    if (level !== this.topLevel) this.evaluator.plainModSwitchTo(pt, this.parmsByLevel.get(level), pt);
    return pt;
  }

  /**
   * The plaintext of a constant k at `scale` on `level`, without the encoder's FFT and NTTs: a
   * constant polynomial is the same value at every NTT point, so each prime's N coefficients are
   * round(k scale) mod q_i, which is what SEAL's CKKSEncoder::encode(double) writes. node-seal
   * exposes only the vector encoder, so the plaintext is loaded from SEAL's own serialisation of a
   * plaintext on that level with its coefficients replaced (a test checks the bytes equal the
   * encoder's). Several times faster than encoding (convolutions multiply by thousands of scalars).
   * null: not representable this way (|k scale| >= 2^63), the caller encodes.
   */
  private constPlain(k: number, scale: number, level: number): Any | null {
    const x = k * scale;
    // std::round: halves away from zero.
    const r = Math.sign(x) * Math.round(Math.abs(x));
    if (!Number.isFinite(r) || Math.abs(r) >= 2 ** 63) return null;
    if (!this.constTemplates.has(level)) {
      const pt = this.encodeAt(this.fill(0), scale, level);
      const bytes = pt.saveArray(this.seal.ComprModeType.none) as Uint8Array;
      pt.delete();
      const offset = bytes.length - this.params.ringSize * (level + 1) * 8;
      this.constTemplates.set(level, offset > 0 && offset % 8 === 0 ? { bytes, offset } : null);
    }
    const t = this.constTemplates.get(level);
    if (!t) return null;
    const buf = t.bytes.slice();
    const N = this.params.ringSize;
    const data = new BigUint64Array(buf.buffer, t.offset, N * (level + 1));
    const v = BigInt(r);
    for (let i = 0; i <= level; i++) {
      const q = this.primesBig[i];
      let m = v % q;
      if (m < 0n) m += q;
      data.fill(m, i * N, (i + 1) * N);
    }
    const pt = this.seal.PlainText();
    pt.loadArray(this.context, buf);
    pt.setScale(scale);
    return pt;
  }

  /** For tests: the plaintext bytes of constant k by the fast path and by SEAL's encoder. */
  constantBytes(k: number, scale: number, level: number): { fast: Uint8Array; encoder: Uint8Array } {
    const a = this.constPlain(k, scale, level);
    const b = this.encodeAt(this.fill(k), scale, level);
    const none = this.seal.ComprModeType.none;
    const out = {
      fast: a ? (a.saveArray(none) as Uint8Array) : new Uint8Array(0),
      encoder: b.saveArray(none) as Uint8Array,
    };
    a?.delete();
    b.delete();
    return out;
  }

  mul(a: Ct, b: Ct): Ct {
    if (this.level(a) !== this.level(b))
      throw new ScaleMismatchError(`level mismatch ${this.level(a)} vs ${this.level(b)}`);
    if (this.level(a) < 1) throw new ScaleMismatchError('out of levels');
    this.counts.mul++;
    const out = this.evaluator.multiply(a, b);
    this.evaluator.relinearize(out, this.relinKeys, out);
    this.evaluator.rescaleToNext(out, out);
    return out;
  }

  mulConst(a: Ct, k: number, encScale: number): Ct {
    if (this.level(a) < 1) throw new ScaleMismatchError('out of levels');
    this.counts.mulConst++;
    const pt = this.plainAt(k, encScale, this.level(a));
    const out = this.evaluator.multiplyPlain(a, pt);
    pt.delete();
    this.evaluator.rescaleToNext(out, out);
    return out;
  }

  /** Removes floating-point rounding between scales that are equal by construction (relative 1e-12). */
  private align(a: Ct, b: Ct): void {
    if (this.level(a) !== this.level(b))
      throw new ScaleMismatchError(`level mismatch ${this.level(a)} vs ${this.level(b)}`);
    if (Math.abs(a.scale / b.scale - 1) > 1e-12)
      throw new ScaleMismatchError(`scale mismatch 2^${Math.log2(a.scale)} vs 2^${Math.log2(b.scale)}`);
    if (a.scale !== b.scale) b.setScale(a.scale);
  }

  add(a: Ct, b: Ct): Ct {
    this.align(a, b);
    this.counts.add++;
    return this.evaluator.add(a, b);
  }
  sub(a: Ct, b: Ct): Ct {
    this.align(a, b);
    this.counts.add++;
    return this.evaluator.sub(a, b);
  }

  negate(a: Ct): Ct {
    return this.evaluator.negate(a) as Ct;
  }

  addConst(a: Ct, k: number): Ct {
    this.counts.addConst++;
    const pt = this.plainAt(k, a.scale, this.level(a));
    const out = this.evaluator.addPlain(a, pt);
    pt.delete();
    return out;
  }

  /** Adds a per-slot plaintext vector (e.g. per-channel offsets), exactly at a's scale. */
  addVector(a: Ct, v: Float64Array): Ct {
    const pt = this.plainAt(v, a.scale, this.level(a));
    const out = this.evaluator.addPlain(a, pt);
    pt.delete();
    return out;
  }

  constant(k: number, level: number, scale: number): Ct {
    const pt = this.plainAt(k, scale, this.topLevel);
    const ct = this.encryptor.encrypt(pt);
    pt.delete();
    return this.modSwitchTo(ct, level, true);
  }

  modSwitchTo(a: Ct, level: number, consume = false): Ct {
    const l = this.level(a);
    if (level > l) throw new ScaleMismatchError(`cannot raise level ${l} to ${level}`);
    if (level === l) return a;
    this.counts.modSwitch++;
    const out = this.evaluator.cipherModSwitchTo(a, this.parmsByLevel.get(level));
    if (consume) a.delete();
    return out;
  }

  free(c: Ct): void {
    c.delete();
  }
}
