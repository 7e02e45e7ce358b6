/**
 * Whole-model encrypted test: compiles the approximated model into a CKKS program, runs held-out
 * samples through it under SEAL, decrypts, and compares with the plaintext approximated model.
 *
 * Linear layers use the hybrid diagonal method (Juvekar et al., GAZELLE, USENIX Security 2018)
 * with baby-step giant-step rotations (Halevi & Shoup 2014/2018): for y = M x with M padded to
 * m x n (m | n, powers of two), z = sum_k diag_k * rot(x, k) and y_j = sum_t z[j + t m].
 * Slots are position-major with B samples interleaved (slot = position * B + sample), and every
 * value is kept periodic in its positions, so a layer's output comes out already replicated with
 * the period the next layer reads: no masking, one level per linear layer. Each activation's
 * affine input map and a following BatchNormalization fold into the dense weights.
 *
 * Scope of this version: Dense, BatchNormalization, Add, Flatten/Reshape, Dropout and polynomial
 * activations. Conv2D and pooling need a convolution packing and are refused with a clear message.
 */
import { UserError } from '../errors';
import { loadDataset, splitIndices } from '../data/read';
import { initBackend, tf } from '../model/backend';
import { Executor, PolyActivation } from '../model/execute';
import { Graph, GraphNode, size } from '../model/graph';
import { loadModel } from '../model/load';
import { planPolynomial } from '../numerics/bsgs';
import { Progress } from '../profile/profiler';
import { Report } from '../report';
import { CkksBackend, SimBackend } from './backend';
import { checkReportMatchesModel } from './layerTest';
import { chooseParams, CkksParams } from './params';
import { evalPolyCkks } from './polyEval';
import { Ct, SealBackend } from './seal';

const pow2 = (x: number) => 2 ** Math.ceil(Math.log2(Math.max(1, x)));

/** A dense map y = x W + b with the affine/BN folds applied; W is d_in x m, row-major. */
interface LinearStep { kind: 'linear'; node: number; name: string; dIn: number; m: number; W: Float64Array; b: Float64Array }
interface PolyStep { kind: 'poly'; node: number; name: string; input: number; poly: PolyActivation; degree: number; folded: boolean }
interface AddStep { kind: 'add'; node: number; name: string; inputs: number[] }
type Step = (LinearStep & { input: number }) | PolyStep | AddStep;

export interface Program {
  steps: Step[];
  /** Value id (node) holding the logits. */
  output: number;
  inputDim: number;
  /** Largest padded period any value needs; sets the samples per ciphertext. */
  maxPeriod: number;
  outputDim: number;
}

function unsupported(n: GraphNode): never {
  throw new UserError('MODEL_UNSUPPORTED', `the whole-model encrypted test does not support layer '${n.layer}' (${n.className}) yet`,
    'run he-approx encrypted-test with --layer-only to test each activation under encryption');
}

/** Compiles graph + chosen polynomials into linear, polynomial and add steps over flat vectors. */
export function compileProgram(g: Graph, report: Report): Program {
  const polys = new Map(report.layers.map((l) => [l.node, l]));
  const consumers = (id: number) => g.nodes.filter((m) => m.inputs.includes(id));
  const alias = new Map<number, number>(); // node -> value id it equals (flatten, identity)
  const val = (id: number) => alias.get(id) ?? id;
  const steps: Step[] = [];
  const linearOf = new Map<number, LinearStep & { input: number }>();
  let maxPeriod = pow2(size(g.inputShape));
  for (const n of g.nodes) {
    const s = n.spec;
    switch (s.op) {
      case 'input': break;
      case 'flatten': case 'reshape': case 'identity': alias.set(n.id, val(n.inputs[0])); break;
      case 'dense': {
        const inShape = g.nodes[n.inputs[0]].shape;
        if (inShape.length !== 1) unsupported(n);
        const [dIn, m] = s.kernelShape;
        const step = { kind: 'linear' as const, node: n.id, name: n.name, input: val(n.inputs[0]), dIn, m,
          W: Float64Array.from(s.kernel), b: s.bias ? Float64Array.from(s.bias) : new Float64Array(m) };
        steps.push(step);
        linearOf.set(n.id, step);
        maxPeriod = Math.max(maxPeriod, pow2(dIn), pow2(m));
        break;
      }
      case 'batchnorm': {
        const prev = linearOf.get(val(n.inputs[0]));
        if (!prev || consumers(n.inputs[0]).length !== 1) unsupported(n);
        // Fold y = x * scale + shift into the dense layer before it.
        for (let j = 0; j < prev.m; j++) {
          for (let i = 0; i < prev.dIn; i++) prev.W[i * prev.m + j] *= s.scale[j];
          prev.b[j] = prev.b[j] * s.scale[j] + s.shift[j];
        }
        alias.set(n.id, val(n.inputs[0]));
        break;
      }
      case 'activation': {
        const l = polys.get(n.id);
        if (!l) throw new UserError('OPTION_INVALID', `the report has no polynomial for activation ${n.name}`, 'run he-approx analyze on this model again');
        const src = linearOf.get(val(n.inputs[0]));
        const folded = !!src && consumers(val(n.inputs[0])).length === 1;
        const { a, b } = l.chosen.interval;
        if (folded) {
          // t = alpha x + beta computed by the dense layer itself.
          const alpha = 2 / (b - a);
          const beta = -(a + b) / (b - a);
          for (let k = 0; k < src!.W.length; k++) src!.W[k] *= alpha;
          for (let j = 0; j < src!.m; j++) src!.b[j] = alpha * src!.b[j] + beta;
        }
        steps.push({ kind: 'poly', node: n.id, name: n.name, input: val(n.inputs[0]), degree: l.chosen.degree, folded,
          poly: { coeffs: l.chosen.coeffs, a, b, channelOffset: l.chosen.channelOffset ? Float32Array.from(l.chosen.channelOffset) : undefined } });
        break;
      }
      case 'add': steps.push({ kind: 'add', node: n.id, name: n.name, inputs: n.inputs.map(val) }); break;
      default: unsupported(n);
    }
  }
  return { steps, output: val(g.output), inputDim: size(g.inputShape), maxPeriod, outputDim: size(g.nodes[g.output].shape) };
}

/** Rotation steps (in positions) a linear step needs, with its baby-step size. */
function linearRotations(dIn: number, m: number, period: number): { mPad: number; n: number; g: number; steps: number[] } {
  const mPad = pow2(m);
  const n = Math.max(pow2(dIn), mPad, period);
  const g = pow2(Math.ceil(Math.sqrt(mPad)));
  const steps = new Set<number>();
  for (let i = 1; i < Math.min(g, mPad); i++) steps.add(i);
  for (let j = g; j < mPad; j += g) steps.add(j);
  for (let t = mPad; t < n; t *= 2) steps.add(t);
  return { mPad, n, g, steps: [...steps] };
}

interface Value<C> { ct: C; period: number }

/** Executes the program on a backend whose rotations and vector constants are supplied by `ops`. */
interface LinearOps<C> {
  rotate(c: C, positions: number): C;
  /** Multiply by a plaintext vector (per position, periodic), encoded at encScale, NO rescale. */
  mulVecNoRescale(c: C, v: Float64Array, encScale: number): C;
  addRaw(a: C, b: C): C;
  rescale(c: C): C;
  addVec(c: C, v: Float64Array): C;
  free(c: C): void;
}

function runProgram<C>(p: Program, be: CkksBackend<C>, ops: LinearOps<C>, input: C, onStep?: (name: string, seconds: number) => void): C {
  const vals = new Map<number, Value<C>>([[0, { ct: input, period: pow2(p.inputDim) }]]);
  const get = (id: number) => { const v = vals.get(id); if (!v) throw new Error(`value ${id} missing`); return v; };
  const TARGET = 2 ** 40;
  for (const s of p.steps) {
    const t0 = Date.now();
    if (s.kind === 'linear') {
      const x = get(s.input);
      const { mPad, n, g } = linearRotations(s.dIn, s.m, x.period);
      if (n % x.period !== 0) throw new Error('period mismatch');
      const l = be.level(x.ct);
      const encScale = (TARGET * be.prime(l)) / be.scale(x.ct);
      // Baby steps: rot(x, i) for i < g.
      const temps: C[] = [];
      const tmp = (c: C) => { temps.push(c); return c; };
      const baby: C[] = [x.ct];
      for (let i = 1; i < Math.min(g, mPad); i++) baby.push(tmp(ops.rotate(x.ct, i)));
      let z: C | null = null;
      for (let j = 0; j * g < mPad; j++) {
        let inner: C | null = null;
        for (let i = 0; i < g && j * g + i < mPad; i++) {
          const k = j * g + i;
          // diag_k rotated by -j g, so that the giant rotation by j g lines it up.
          const d = new Float64Array(n);
          let nz = false;
          for (let q = 0; q < n; q++) {
            const pos = (q - j * g + n) % n; // diag_k[q - j g]: rotating by +j g restores diag_k
            const row = pos % mPad;
            const col = (pos + k) % n;
            const w = row < s.m && col < s.dIn ? s.W[col * s.m + row] : 0;
            d[q] = w;
            if (w !== 0) nz = true;
          }
          if (!nz) continue;
          const term = tmp(ops.mulVecNoRescale(baby[i], d, encScale));
          inner = inner === null ? term : tmp(ops.addRaw(inner, term));
        }
        if (inner === null) continue;
        const rotated = j === 0 ? inner : tmp(ops.rotate(inner, j * g));
        z = z === null ? rotated : tmp(ops.addRaw(z, rotated));
      }
      if (z === null) throw new Error(`layer ${s.name} has an all-zero kernel`);
      for (let t = mPad; t < n; t *= 2) z = tmp(ops.addRaw(z, tmp(ops.rotate(z, t))));
      const bias = new Float64Array(mPad);
      bias.set(s.b.subarray(0, s.m));
      const y = ops.addVec(tmp(ops.rescale(z)), bias);
      for (const c of new Set(temps)) if (c !== y) ops.free(c);
      vals.set(s.node, { ct: y, period: mPad });
    } else if (s.kind === 'poly') {
      const x = get(s.input);
      let y = evalPolyCkks(be, x.ct, s.poly, planPolynomial(s.degree), s.folded);
      if (s.poly.channelOffset) {
        const off = new Float64Array(x.period);
        for (let q = 0; q < x.period; q++) off[q] = -(s.poly.channelOffset[q % s.poly.channelOffset.length] ?? 0);
        const shifted = ops.addVec(y, off);
        ops.free(y);
        y = shifted;
      }
      vals.set(s.node, { ct: y, period: x.period });
    } else {
      const xs = s.inputs.map(get);
      const period = Math.max(...xs.map((x) => x.period));
      const lvl = Math.min(...xs.map((x) => be.level(x.ct)));
      const parts = xs.map((x) => be.modSwitchTo(x.ct, lvl));
      let acc = parts[0];
      for (const part of parts.slice(1)) { const next = be.add(acc, part); if (acc !== parts[0]) ops.free(acc); acc = next; }
      parts.forEach((part, i) => { if (part !== xs[i].ct) ops.free(part); });
      vals.set(s.node, { ct: acc, period });
    }
    // Free values whose last reader has run (never the input, which the caller owns).
    const stepIndex = p.steps.indexOf(s);
    for (const [id, v] of vals) {
      if (id === 0 || id === p.output) continue;
      const later = p.steps.slice(stepIndex + 1).some((t) => (t.kind === 'add' ? t.inputs.includes(id) : t.input === id));
      if (!later && id !== s.node) { ops.free(v.ct); vals.delete(id); }
    }
    onStep?.(s.name, (Date.now() - t0) / 1000);
  }
  return get(p.output).ct;
}

/** Levels the program consumes, by running it on the plaintext simulator (no encryption). */
export function simulateProgram(p: Program, primes: number[], levels: number): { levelsUsed: number; finalScale: number } {
  const sim = new SimBackend(primes);
  const ops: LinearOps<ReturnType<SimBackend['fresh']>> = {
    rotate: (c) => c,
    mulVecNoRescale: (c, _v, s) => ({ v: c.v, level: c.level, scale: c.scale * s }),
    addRaw: (a) => a,
    rescale: (c) => { if (c.level < 1) throw new UserError('BUDGET_INFEASIBLE', 'the program runs out of levels', 'lower some degrees'); return { v: c.v, level: c.level - 1, scale: c.scale / primes[c.level] }; },
    addVec: (c) => c,
    free: () => undefined,
  };
  const out = runProgram(p, sim, ops, sim.fresh([0], levels, 2 ** 40));
  return { levelsUsed: levels - out.level, finalScale: out.scale };
}

/**
 * Runs the program on plaintext slot vectors with exactly the packing, rotations and products the
 * encrypted run uses (a functional emulator, no encryption): checks the compiled program against
 * the model before any key is generated, and serves the tests.
 */
export function emulateProgram(p: Program, slotsIn: Float64Array, B: number): Float64Array {
  const S = slotsIn.length;
  const primes = new Array<number>(64).fill(2 ** 40);
  const sim = new SimBackend(primes);
  const mk = (v: Float64Array, like: { level: number; scale: number }) => ({ v, level: like.level, scale: like.scale });
  const ops: LinearOps<ReturnType<SimBackend['fresh']>> = {
    rotate: (c, k) => mk(Float64Array.from({ length: S }, (_, i) => c.v[(i + k * B) % S]), c),
    mulVecNoRescale: (c, v, s) => ({ v: c.v.map((x, i) => x * v[Math.floor(i / B) % v.length]), level: c.level, scale: c.scale * s }),
    addRaw: (a, b) => mk(a.v.map((x, i) => x + b.v[i]), a),
    rescale: (c) => ({ v: c.v, level: c.level - 1, scale: c.scale / 2 ** 40 }),
    addVec: (c, v) => mk(c.v.map((x, i) => x + v[Math.floor(i / B) % v.length]), c),
    free: () => undefined,
  };
  return runProgram(p, sim, ops, sim.fresh(slotsIn, 60, 2 ** 40)).v;
}

/** Packs samples position-major: slot q*B + b holds sample b's value at position q mod P. */
export function packSamples(xs: Float32Array, per: number, count: number, B: number, slots: number): Float64Array {
  const P = pow2(per);
  const out = new Float64Array(slots);
  for (let q = 0; q < slots / B; q++) for (let b = 0; b < count; b++) {
    const pos = q % P;
    out[q * B + b] = pos < per ? xs[b * per + pos] : 0;
  }
  return out;
}

/** Levels the program needs: linear steps 1, polynomials their depth (+1 if not folded), adds 0. */
export function programDepth(p: Program): number {
  const depth = new Map<number, number>([[0, 0]]);
  for (const s of p.steps) {
    if (s.kind === 'linear') depth.set(s.node, (depth.get(s.input) ?? 0) + 1);
    else if (s.kind === 'poly') depth.set(s.node, (depth.get(s.input) ?? 0) + planPolynomial(s.degree).depth + (s.folded ? 0 : 1));
    else depth.set(s.node, Math.max(...s.inputs.map((i) => depth.get(i) ?? 0)));
  }
  return depth.get(p.output) ?? 0;
}

export interface SampleResult {
  index: number;
  label: number | null;
  plainOriginal: number;
  plainApproximated: number;
  encrypted: number;
  maxAbsErrLogits: number;
}

export interface EncryptedModelReport {
  mode: 'model';
  createdAt: string;
  params: CkksParams & { samplesPerCiphertext: number };
  levelsNeeded: number;
  levelsPredicted: number;
  levelsUsed: number;
  galoisSteps: number[];
  keyBytes: { publicKey: number; relinKeys: number; galoisKeys: number };
  samples: SampleResult[];
  /** Fraction of samples whose encrypted top-1 equals the plaintext approximated model's. */
  agreement: number;
  maxAbsErrLogits: number;
  layerSeconds: Record<string, number>;
  /** Seconds for one ciphertext (B samples) through the whole program. */
  latencySeconds: number;
  amortisedSecondsPerSample: number;
  keygenSeconds: number;
  peakRssMB: number;
}

export interface ModelTestOptions {
  model: string;
  report: Report;
  data: string;
  labels?: string | null;
  samples: number;
  ringSize?: number;
  onProgress?: Progress;
  signal?: AbortSignal;
}

export async function encryptedModelTest(o: ModelTestOptions): Promise<EncryptedModelReport> {
  checkReportMatchesModel(o.report, o.model);
  const model = loadModel(o.model);
  const g = model.graph;
  const program = compileProgram(g, o.report);
  const needed = programDepth(program);
  const lower = [...o.report.layers].sort((x, y) => y.chosen.depth - x.chosen.depth).slice(0, 2).map((l) => l.name);
  const params = chooseParams(needed, 'the approximated model', lower, o.ringSize);
  const B = Math.max(1, Math.floor(params.slots / program.maxPeriod));
  // Rotation steps in slots (positions times B), for the Galois keys.
  const steps = new Set<number>();
  const period = new Map<number, number>([[0, pow2(program.inputDim)]]);
  for (const s of program.steps) {
    if (s.kind === 'linear') {
      const r = linearRotations(s.dIn, s.m, period.get(s.input)!);
      r.steps.forEach((x) => steps.add(x * B));
      period.set(s.node, r.mPad);
    } else if (s.kind === 'poly') period.set(s.node, period.get(s.input)!);
    else period.set(s.node, Math.max(...s.inputs.map((i) => period.get(i)!)));
  }
  const galoisSteps = [...steps].sort((a, b) => a - b);
  await initBackend();
  const ds = loadDataset(o.data, o.labels ?? null, g.inputShape);
  const n = Math.min(o.samples, ds.count);
  const idx = splitIndices(ds.count, n, 0, o.report.data.seed + 29).calib;
  // Plaintext references: the original model and the approximated model (float32, tfjs).
  const ex = new Executor(g);
  const polys = new Map<number, PolyActivation>(o.report.layers.map((l) => [l.node, { coeffs: l.chosen.coeffs, a: l.chosen.interval.a, b: l.chosen.interval.b,
    channelOffset: l.chosen.channelOffset ? Float32Array.from(l.chosen.channelOffset) : undefined }]));
  const per = size(g.inputShape);
  const xs = new Float32Array(n * per);
  idx.forEach((k, i) => xs.set(ds.x.subarray(k * per, (k + 1) * per), i * per));
  const xt = tf.tensor(xs, [n, ...g.inputShape]);
  const orig = ex.run(new Map([[g.input, xt]]), 0, {}).logits;
  const approx = ex.run(new Map([[g.input, xt]]), 0, { replace: polys }).logits;
  xt.dispose();
  ex.dispose();
  const K = program.outputDim;
  const argmax = (a: ArrayLike<number>, off: number) => { let b = 0; for (let j = 1; j < K; j++) if (a[off + j] > a[off + b]) b = j; return b; };

  const tk = Date.now();
  const be = await SealBackend.create(params, galoisSteps);
  const keygenSeconds = (Date.now() - tk) / 1000;
  const sim = simulateProgram(program, Array.from({ length: params.levels + 1 }, (_, l) => be.prime(l)), params.levels);
  const results: SampleResult[] = [];
  const layerSeconds: Record<string, number> = {};
  let latency = 0;
  let levelsUsed = 0;
  try {
    const ops: LinearOps<Ct> = {
      rotate: (c, posSteps) => be.rotate(c, posSteps * B),
      mulVecNoRescale: (c, v, s) => be.mulVector(c, spread(v, B, be.slots), s),
      addRaw: (a, b) => be.addRaw(a, b),
      rescale: (c) => be.rescale(c),
      addVec: (c, v) => be.addVector(c, spread(v, B, be.slots)),
      free: (c) => be.free(c),
    };
    for (let start = 0; start < n; start += B) {
      if (o.signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
      const cnt = Math.min(B, n - start);
      // Slot (position q, sample b) = q * B + b, inputs replicated with their padded period.
      const slotsV = packSamples(xs.subarray(start * per, (start + cnt) * per), per, cnt, B, be.slots);
      const t0 = Date.now();
      const ct = be.encrypt(slotsV);
      const out = runProgram(program, be, ops, ct, (name, sec) => { layerSeconds[name] = (layerSeconds[name] ?? 0) + sec; });
      latency += (Date.now() - t0) / 1000;
      levelsUsed = params.levels - be.level(out);
      const dec = be.decrypt(out);
      be.free(ct);
      be.free(out);
      for (let b = 0; b < cnt; b++) {
        const i = start + b;
        const logits = Array.from({ length: K }, (_, j) => dec[j * B + b]);
        let err = 0;
        for (let j = 0; j < K; j++) err = Math.max(err, Math.abs(logits[j] - approx[i * K + j]));
        results.push({ index: idx[i], label: ds.labels ? ds.labels[idx[i]] : null, plainOriginal: argmax(orig, i * K),
          plainApproximated: argmax(approx, i * K), encrypted: argmax(logits, 0), maxAbsErrLogits: err });
      }
      o.onProgress?.(Math.min(1, (start + cnt) / n), `encrypted ${start + cnt}/${n} samples`);
    }
  } finally {
    be.dispose();
  }
  const batches = Math.ceil(n / B);
  return {
    mode: 'model', createdAt: new Date().toISOString(), params: { ...params, samplesPerCiphertext: B },
    levelsNeeded: needed, levelsPredicted: sim.levelsUsed, levelsUsed, galoisSteps, keyBytes: be.keySizes as EncryptedModelReport['keyBytes'],
    samples: results, agreement: results.filter((r) => r.encrypted === r.plainApproximated).length / Math.max(1, results.length),
    maxAbsErrLogits: Math.max(0, ...results.map((r) => r.maxAbsErrLogits)),
    layerSeconds: Object.fromEntries(Object.entries(layerSeconds).map(([k, v]) => [k, v / batches])),
    latencySeconds: latency / batches, amortisedSecondsPerSample: latency / Math.max(1, n), keygenSeconds,
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

/** Spreads a per-position vector (periodic in its length) over slots: slot q*B+b = v[q mod len]. */
function spread(v: Float64Array, B: number, slots: number): Float64Array {
  const out = new Float64Array(slots);
  for (let q = 0; q < slots / B; q++) { const x = v[q % v.length]; for (let b = 0; b < B; b++) out[q * B + b] = x; }
  return out;
}

export function renderModelTest(r: EncryptedModelReport): string {
  const lines: string[] = [];
  lines.push(`encrypted whole-model test (SEAL CKKS, N=${r.params.ringSize}, ${r.params.levels} levels, 40-bit scale, 128-bit security, ${r.params.samplesPerCiphertext} samples per ciphertext)`);
  lines.push('sample  label  original  approximated  encrypted  max |logit err|');
  for (const s of r.samples) {
    lines.push(`${String(s.index).padStart(6)}  ${String(s.label ?? '-').padStart(5)}  ${String(s.plainOriginal).padStart(8)}  ${String(s.plainApproximated).padStart(12)}  ${String(s.encrypted).padStart(9)}  ${s.maxAbsErrLogits.toExponential(2).padStart(15)}`);
  }
  lines.push(`encrypted top-1 = plaintext approximated top-1 on ${(100 * r.agreement).toFixed(1)}% of ${r.samples.length} samples; max logit error ${r.maxAbsErrLogits.toExponential(2)}`);
  lines.push(`levels: needed ${r.levelsNeeded}, simulator predicted ${r.levelsPredicted}, used ${r.levelsUsed}, available ${r.params.levels}`);
  lines.push(`time per layer (s): ${Object.entries(r.layerSeconds).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
  lines.push(`latency ${r.latencySeconds.toFixed(2)} s per ciphertext; amortised ${r.amortisedSecondsPerSample.toFixed(3)} s per sample; key generation ${r.keygenSeconds.toFixed(1)} s`);
  lines.push(`keys: public ${(r.keyBytes.publicKey / 1e6).toFixed(1)} MB, relinearisation ${(r.keyBytes.relinKeys / 1e6).toFixed(1)} MB, Galois ${(r.keyBytes.galoisKeys / 1e6).toFixed(1)} MB (${r.galoisSteps.length} rotation steps); peak memory ${r.peakRssMB} MB`);
  return lines.join('\n');
}
