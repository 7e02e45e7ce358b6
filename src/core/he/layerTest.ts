/**
 * Encrypted test of each activation (`he-approx encrypted-test --layer-only`): the values that
 * reach each approximated activation in the approximated model (held-out samples) are packed into
 * CKKS ciphertexts, encrypted with SEAL, run through that layer's polynomial with the evaluator
 * the encrypted model uses, decrypted, and compared with the plaintext polynomial (the encryption
 * error) and with the true activation (the approximation error).
 */
import { REPORT_FIX } from '../reportCheck';
import { Fold, foldInto, foldLevels, foldMults, foldedInput, planFold, sharedSign, squareLane } from '../cost/fold';
import { UserError } from '../errors';
import { loadDataset, splitIndices } from '../data/read';
import { initBackend } from '../model/backend';
import { Executor } from '../model/execute';
import { Graph, actSpec } from '../model/graph';
import { loadModel, modelFilePath } from '../model/load';
import { activationFn } from '../numerics/activations';
import { planAtDepth } from '../numerics/bsgs';
import { chebval } from '../numerics/chebyshev';
import { Progress, captureValues } from '../profile/profiler';
import {
  EncryptedLayerReport,
  LayerEncryptedResult,
  LayerReport,
  Report,
  modelFileHashes,
  polysFromReport,
} from '../report';
import type { PolyActivation } from '../numerics/polynomial';

export type { EncryptedLayerReport, LayerEncryptedResult };
import { CkksBackend, SimBackend, SimCt } from './backend';
import { checkHeMemory, chooseParams } from './params';
import { PolyInput, VecOps, channelLanes, evalFoldedCkks, evalPolyCkks } from './polyEval';
import { SealBackend } from './seal';

/** What both encrypted tests take. */
export interface EncryptedTestOptions {
  model: string;
  report: Report;
  data: string;
  labels?: string | null;
  samples: number;
  /** Force a ring size (default: the smallest whose chain holds the levels needed). */
  ringSize?: number;
  /** Whole-model test: many samples per ciphertext (default) or one sample at a time, channels packed together. */
  packing?: 'throughput' | 'latency';
  /** Whole-model test: worker threads for the batches (default: one per core, at most 2; 1 runs on the calling thread). */
  workers?: number;
  /**
   * Whole-model test: the CKKS library. 'seal' (node-seal, in process) by default for a model within
   * SEAL's chain; 'lattigo' (the engine with bootstrapping, engines/lattigo) for a report planned
   * for bootstrapping, or when asked.
   */
  engine?: 'seal' | 'lattigo';
  /**
   * Lattigo at a small ring (2^12 .. 2^15) with the same chain: insecure, for tests only; refused
   * unless HE_APPROX_INSECURE_TEST_PARAMS=1.
   */
  insecureLogN?: number;
  signal?: AbortSignal;
  onProgress?: Progress;
}

export interface LayerTestOptions extends EncryptedTestOptions {
  /** At most this many ciphertexts per layer (values beyond are not tested). */
  maxCiphertexts?: number;
}

export function checkReportMatchesModel(report: Report, modelPath: string): void {
  const now = modelFileHashes(modelFilePath(modelPath));
  const sameContent = !!report.model?.contentSha256 && report.model.contentSha256 === now.contentSha256;
  if (report.model?.sha256 !== now.sha256 && !sameContent) {
    throw new UserError(
      'OPTION_INVALID',
      `the report was made for another version of this model (${report.model?.path ?? 'unknown'})`,
      'run he-approx analyze on this model again and pass its report.json',
    );
  }
}

/**
 * Once the model is loaded: the report's layers are this model's activations (or max trees' |x|),
 * folded where this model's graph folds them, and per-channel polynomials have the channels the
 * activation's output has (a report read back: core/reportCheck.ts checked the rest).
 */
export function checkReportAgainstGraph(r: Report, g: Graph, source = 'the report'): void {
  const bad = (what: string): never => {
    throw new UserError('REPORT_INVALID', `${source}: ${what}`, REPORT_FIX);
  };
  for (const l of r.layers) {
    const n = g.nodes[l.node];
    if (!n || n.spec.op !== 'activation' || n.name !== l.name)
      bad(`layer ${l.name} is not activation node ${l.node} of this model`);
    const into = l.chosen.fold.into;
    if (into !== null && into !== undefined && into !== foldInto(g, n)) {
      bad(
        `layer ${l.name} is folded into '${into}', which is not where this model's graph folds it ('${foldInto(g, n)}')`,
      );
    }
    const want = n.shape[n.shape.length - 1];
    const have = l.chosen.channels?.coeffs.length ?? l.chosen.channelOffset?.length;
    if (have !== undefined && have !== want) {
      bad(`layer ${l.name} has per-channel values for ${have} channels, and the model's activation has ${want}`);
    }
  }
}

/** The model's graph, after checking that the report was made for exactly this model file. */
export async function checkedGraph(o: EncryptedTestOptions): Promise<Graph> {
  checkReportMatchesModel(o.report, o.model);
  const g = (await loadModel(o.model)).graph;
  checkReportAgainstGraph(o.report, g);
  return g;
}

/** What both encrypted tests run on: the data, a seeded choice of test samples, the report's polynomials. */
export async function testSamples(o: EncryptedTestOptions, g: Graph, seedOffset: number) {
  await initBackend();
  const opt = o.report.options;
  const ds = loadDataset(o.data, o.labels ?? null, g.inputShape, {
    scale: opt.inputScale ?? 'auto',
    normalize: opt.inputNormalization ?? null,
    layout: g.inputLayout,
  });
  const n = Math.min(o.samples, ds.count);
  const idx = splitIndices(ds.count, n, 0, o.report.data.seed + seedOffset).calib;
  return { ds, n, idx, polys: polysFromReport(o.report) };
}

/** The layer result of a constant polynomial: no ciphertext, no level, the approximation error on the values. */
function constantLayer(
  l: Report['layers'][number],
  p: PolyActivation,
  vals: Float32Array,
  f: (x: number) => number,
): LayerEncryptedResult {
  const C = p.channels?.coeffs.length ?? 1;
  let err = 0;
  for (let i = 0; i < vals.length; i++) {
    const c = p.channels ? p.channels.coeffs[i % C][0] : p.coeffs[0];
    err = Math.max(err, Math.abs(c - (p.channelOffset?.[i % p.channelOffset.length] ?? 0) - f(vals[i])));
  }
  return {
    name: l.name,
    degree: l.chosen.degree,
    values: vals.length,
    ciphertexts: 0,
    ringSize: 0,
    levelsAvailable: 0,
    levelsUsed: 0,
    levelsPredicted: 0,
    simulatorScaleMatches: true,
    nonScalarMults: 0,
    maxAbsErrVsPlainPoly: 0,
    precisionBits: 60,
    maxAbsErrVsActivation: err,
    secondsPerCiphertext: 0,
    keyBytes: { publicKey: 0, relinKeys: 0 },
  };
}

/** One activation to test: its report entry (index k of the report's layers), polynomial, fold, input values and the activation itself. */
interface LayerCase {
  layer: LayerReport;
  index: number;
  poly: PolyActivation;
  fold: Fold;
  vals: Float32Array;
  f: (x: number) => number;
}

/** Errors of one decrypted value y of input x against the plaintext polynomial and the activation. */
function compare(
  err: { poly: number; act: number; tested: number },
  x: number,
  y: number,
  lane: PolyInput,
  f: (x: number) => number,
): void {
  err.poly = Math.max(err.poly, Math.abs(y - chebval(x, lane.coeffs, lane)));
  err.act = Math.max(err.act, Math.abs(y - f(x)));
  err.tested++;
}

/**
 * One activation under SEAL: its input values packed into ciphertexts, channel q of each value
 * row in slot r * P + q (P: the channel count rounded up to a power of two, so that P divides the
 * slot count), the polynomial evaluated as the whole-model program would, decrypted and compared
 * with the plaintext polynomial and the activation; levels and scales checked against a one-slot
 * simulation.
 */
async function sealLayer(o: LayerTestOptions, t: LayerCase): Promise<LayerEncryptedResult> {
  const { layer: l, poly, fold, vals, f } = t;
  const plan = planAtDepth(l.chosen.degree, l.chosen.polyDepth);
  const { polyDepth, affineLevel } = foldLevels(fold, plan.depth);
  const params = chooseParams(
    polyDepth + affineLevel,
    `layer ${l.name} (degree ${l.chosen.degree})`,
    [l.name],
    o.ringSize,
  );
  // Keys (no rotations) and the evaluator's ciphertexts: the input, its powers and the output.
  checkHeMemory(params, 0, 16, `lower the degree of ${l.name} (fewer levels, smaller keys)`);
  const be = await SealBackend.create(params);
  try {
    const slots = be.slots;
    const C = poly.channels?.coeffs.length ?? 1;
    const P = poly.channels ? 2 ** Math.ceil(Math.log2(C)) : 1;
    const lanes = poly.channels ? channelLanes(poly, P) : [poly];
    const vec = be.tiledVecOps();
    const rows = Math.floor(vals.length / C);
    const rowsPerCt = slots / P;
    const chunks = Math.min(Math.ceil(rows / rowsPerCt), o.maxCiphertexts ?? 8);
    const err = { poly: 0, act: 0, tested: 0, secs: 0, levelsUsed: 0 };
    const sim = new SimBackend(Array.from({ length: params.levels + 1 }, (_, i) => be.prime(i)));
    // A one-slot simulation predicts levels and scales; its vector constants are lane 0's.
    const simVec: VecOps<SimCt> = {
      mulVec: (c, v, e) => sim.mulConst(c, v[0], e),
      addVec: (c, v) => sim.addConst(c, v[0]),
    };
    const evaluate = <C>(b: CkksBackend<C>, x: C, ls: PolyInput[], v: VecOps<C>) =>
      fold.form === 'series' ? evalPolyCkks(b, x, ls, plan, fold.intoPrevious, v) : evalFoldedCkks(b, x, ls, fold, v);
    // A square whose channels' signs differ is negated per channel ciphertext in the model
    // (rank-3 values); channels share a ciphertext here, so each sign's channels get their own.
    const signOf = (lp: PolyInput) => squareLane(lp)?.sign ?? 1;
    const groups =
      fold.form === 'square' && !fold.mixedSigns && !sharedSign(lanes.map((lp) => squareLane(lp)!)) ? [1, -1] : [0];
    const zero: PolyInput = { coeffs: [0], a: -1, b: 1 };
    const groupLanes = (sign: number) => lanes.map((lp) => (sign === 0 || signOf(lp) === sign ? lp : zero));
    const simOut = evaluate(
      sim,
      sim.fresh([0.25], params.levels, 2 ** params.scaleBits),
      groupLanes(groups[0]),
      simVec,
    );
    let scaleMatches = true;
    for (const [gi, sign] of groups.entries())
      for (let c = 0; c < chunks; c++) {
        if (o.signal?.aborted) throw new UserError('CANCELLED', 'encrypted test cancelled', 'run the command again');
        const mine = (q: number) => sign === 0 || signOf(lanes[q]) === sign;
        const r0 = c * rowsPerCt;
        const r1 = Math.min(rows, r0 + rowsPerCt);
        const input = new Float64Array(slots);
        for (let r = r0; r < r1; r++) {
          for (let q = 0; q < C; q++)
            if (mine(q)) input[(r - r0) * P + q] = foldedInput(lanes[q], fold, vals[r * C + q]);
        }
        const ts = Date.now();
        const ct = be.encrypt(input);
        const out = evaluate(be, ct, groupLanes(sign), vec);
        err.secs += (Date.now() - ts) / 1000;
        err.levelsUsed = params.levels - be.level(out);
        scaleMatches &&= out.scale === simOut.scale && be.level(out) === simOut.level;
        const dec = be.decrypt(out);
        be.free(ct);
        if (out !== ct) be.free(out);
        for (let r = r0; r < r1; r++)
          for (let q = 0; q < C; q++) if (mine(q)) compare(err, vals[r * C + q], dec[(r - r0) * P + q], lanes[q], f);
        o.onProgress?.(
          (t.index + (gi * chunks + c + 1) / (chunks * groups.length)) / o.report.layers.length,
          `${l.name}: ciphertext ${gi * chunks + c + 1}/${chunks * groups.length}`,
        );
      }
    return {
      name: l.name,
      degree: l.chosen.degree,
      values: err.tested,
      ciphertexts: chunks * groups.length,
      ringSize: params.ringSize,
      levelsAvailable: params.levels,
      levelsUsed: err.levelsUsed,
      levelsPredicted: params.levels - simOut.level,
      simulatorScaleMatches: scaleMatches,
      nonScalarMults: foldMults(fold, plan.nonScalarMults),
      maxAbsErrVsPlainPoly: err.poly,
      precisionBits: -Math.log2(Math.max(err.poly, 2 ** -60)),
      maxAbsErrVsActivation: err.act,
      secondsPerCiphertext: err.secs / Math.max(1, chunks * groups.length),
      keyBytes: be.keySizes,
    };
  } finally {
    be.dispose();
  }
}

export async function encryptedLayerTest(o: LayerTestOptions): Promise<EncryptedLayerReport> {
  const t0 = Date.now();
  const g = await checkedGraph(o);
  const { ds, n, idx, polys } = await testSamples(o, g, 17);
  const ex = new Executor(g);
  const results: LayerEncryptedResult[] = [];
  try {
    for (const [k, l] of o.report.layers.entries()) {
      const node = g.nodes[l.node];
      if (!node || node.name !== l.name)
        throw new UserError(
          'OPTION_INVALID',
          `layer ${l.name} of the report is not in the model`,
          'run he-approx analyze on this model again',
        );
      const vals = (
        await captureValues(ex, ds, idx, [node.inputs[0]], { replace: polys }, { batchSize: 256, signal: o.signal })
      ).get(node.inputs[0])!;
      const poly = polys.get(l.node)!;
      // What the previous linear layer folds in (cost/fold.ts) it computes in plaintext here: encrypt its output.
      const fold = planFold(g, node, poly, l.chosen.degree, o.report.options.fold ?? false);
      // A max tree's constant |x|: nothing is evaluated on ciphertexts (its step adds the constant).
      results.push(
        fold.form === 'constant'
          ? constantLayer(l, poly, vals, activationFn(actSpec(node)))
          : await sealLayer(o, { layer: l, index: k, poly, fold, vals, f: activationFn(actSpec(node)) }),
      );
    }
  } finally {
    ex.dispose();
  }
  return {
    mode: 'layer',
    createdAt: new Date().toISOString(),
    samples: n,
    scaleBits: 40,
    security: '128-bit (HomomorphicEncryption.org standard via SEAL CoeffModulus bounds)',
    layers: results,
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    seconds: (Date.now() - t0) / 1000,
  };
}
