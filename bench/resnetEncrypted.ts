/**
 * ResNets encrypted end to end (issue 28): the models trained by others in ../shared/peer analysed
 * as `he-approx analyze` does by default (2,000 calibration and 2,000 held-out CIFAR-10 images,
 * budget 1.0 pp, planned for bootstrapping since they are deeper than SEAL's chain), then run
 * under CKKS on Lattigo with 128-bit parameters (N=2^16, Lattigo's bootstrapping set), one image
 * per run, its channels side by side:
 *   resnet20  ResNet-20, ONNX exported from PyTorch (option-A shortcuts)
 *   resnet8   MLPerf Tiny's ResNet-8, Keras .h5 (1x1-convolution shortcuts; raw 0..255 input)
 * Per image: label, the original, approximated and encrypted predictions, the max logit error;
 * per model: bootstraps planned and executed, levels, the precision each bootstrap kept, seconds
 * per image and per layer, key generation, key sizes and peak memory; the uniform baseline's plan
 * beside it, and the field's published figures, labelled as theirs.
 *
 *   node dist/bench/resnetEncrypted.js [resnet20 resnet8] [--samples 8] [--calib 2000] [--heldout 2000]
 *     [--reuse]  (reuse out/bench-resnet/<model>.json from an earlier run instead of analysing again)
 *     [--one-thread]  (then the first image again with the engine on one thread: the worker pool's speed-up)
 */
import * as os from 'os';
import * as fs from 'fs';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { describePacking } from '../src/cli/encryptedTable';
import type { EncryptedModelReport, Report } from '../src/core/report';
import { numberArg } from './args';

const ROOT = path.resolve(__dirname, '..', '..');
const PEER = process.env.HE_APPROX_PEER ?? path.resolve(ROOT, '..', 'shared', 'peer');
const CIFAR = path.join(PEER, 'cifar10-jpeg');
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const OUT = path.join(ROOT, 'out', 'bench-resnet');

const MODELS: Record<string, { file: string; options: Record<string, unknown> }> = {
  resnet20: { file: path.join(PEER, 'resnet-cifar10', 'resnet20.onnx'), options: { normalize: IMAGENET } },
  resnet8: { file: path.join(PEER, 'mlperf-tiny-resnet8', 'pretrainedResnet.h5'), options: { scale: 'none' } },
};

/** The field's published ResNet-20 figures (their papers and repositories; not measured here). */
const FIELD = [
  'Lee et al. (ICML 2022, SEAL, multiplexed convolutions): uniform composite ReLU, 18 bootstraps, 2,189 s per image, 384 GB',
  'AutoFHE (USENIX Security 2024): 5 to 11 bootstraps after GPU-days of search and fine-tuning',
  'FHEON (2025): about 400 s per image on CPU; Rovida and Leporati (OpenFHE): under 5 minutes on a laptop',
];

const arg = numberArg;

function print(name: string, r: Report, e: EncryptedModelReport): void {
  const b = e.bootstrapping!;
  console.log(
    `${name}: Lattigo, N=${e.params.ringSize}, ${e.params.levels} levels between bootstraps, ${e.security} security; ${describePacking(e)}`,
  );
  console.log('  image  label  original  approximated  encrypted  max logit error');
  for (const s of e.samples) {
    console.log(
      `  ${String(s.index).padStart(5)}  ${String(s.label ?? '-').padStart(5)}  ${String(s.plainOriginal).padStart(8)}  ${String(s.plainApproximated).padStart(12)}  ${String(s.encrypted).padStart(9)}  ${s.maxAbsErrLogits.toExponential(2)}`,
    );
  }
  console.log(
    `  agreement with the approximated model ${(100 * e.agreement).toFixed(1)}% (${e.samples.filter((s) => s.encrypted === s.plainApproximated).length}/${e.samples.length}), max logit error ${e.maxAbsErrLogits.toExponential(2)}`,
  );
  console.log(
    `  bootstraps: planned ${b.planned}, executed ${b.executed} (${b.ciphertexts} ciphertexts per image), ${b.secondsPerBootstrap.toFixed(1)} s each; ` +
      `levels predicted ${e.levelsPredicted}, used ${e.levelsUsed} after the last`,
  );
  // The analysis' estimate, from Lattigo's operation costs cached by `he-approx costs --engine lattigo`.
  if (r.costs.engine === 'lattigo' && r.costs.bootstrap) {
    console.log(
      `  the analysis estimated one bootstrap at ${(r.costs.bootstrap / 1000).toFixed(1)} s (one thread, ${r.final.bootstraps} per ciphertext: ${((r.final.bootstraps * r.costs.bootstrap) / 1000).toFixed(0)} s); measured ${b.secondsPerBootstrap.toFixed(1)} s each`,
    );
  } else {
    console.log(
      `  the analysis had no Lattigo costs (${r.costs.source}): run he-approx costs --engine lattigo first for its estimates`,
    );
  }
  console.log(`  precision kept by each bootstrap (bits): ${b.precisionBits.map((x) => x.toFixed(1)).join(', ')}`);
  console.log(
    `  values scaled into [-1, 1] before their bootstrap: ${b.values.filter((v) => v.scaled).length} of ${b.values.length}; ` +
      `left as they are: ${
        b.values
          .filter((v) => !v.scaled)
          .map((v) => `${v.node} (|x| <= ${v.bound.toFixed(2)})`)
          .join(', ') || 'none'
      }`,
  );
  console.log(
    `  seconds per image ${e.latencySeconds.toFixed(1)} (${e.workers} threads), key generation ${e.keygenSeconds.toFixed(1)} s, whole test ${(e.wallSeconds ?? 0).toFixed(0)} s`,
  );
  const k = e.keyBytes;
  console.log(
    `  keys: Galois ${(k.galoisKeys / 1e6).toFixed(0)} MB (${e.galoisSteps.length} steps), bootstrapping ${((k.bootstrappingKeys ?? 0) / 1e9).toFixed(1)} GB; peak memory ${(e.peakRssMB / 1024).toFixed(1)} GB`,
  );
  const layers = Object.entries(e.layerSeconds).sort((x, y) => y[1] - x[1]);
  console.log(`  per layer (s, slowest first): ${layers.map(([n, v]) => `${n} ${v.toFixed(1)}`).join(', ')}`);
  console.log(
    `  the plan: ${r.final.networkDepth} levels, ${r.final.bootstraps} bootstraps, measured drop ${r.final.measuredDrop.toFixed(2)} pp; ` +
      `the uniform baseline: ${r.uniform.networkDepth} levels, ${r.uniform.bootstraps} bootstraps, ${r.uniform.measuredDrop.toFixed(2)} pp (not run encrypted here)`,
  );
}

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(PEER, 'README.md')))
    throw new Error(
      `${PEER} is missing: this benchmark needs the shared peer models (../shared/peer, or HE_APPROX_PEER=<folder>)`,
    );
  if (process.env.HE_APPROX_INSECURE_TEST_PARAMS)
    throw new Error('unset HE_APPROX_INSECURE_TEST_PARAMS: this benchmark measures 128-bit parameters');
  const samples = arg('samples', 8);
  const calib = arg('calib', 2000);
  const heldout = arg('heldout', 2000);
  const names = process.argv
    .slice(2)
    .filter((a, k, all) => !a.startsWith('--') && !['--samples', '--calib', '--heldout'].includes(all[k - 1] ?? ''));
  fs.mkdirSync(OUT, { recursive: true });
  console.log(
    `ResNets encrypted end to end: he-approx's plan (${calib} calibration + ${heldout} held-out CIFAR-10 images, budget 1.0 pp), ${samples} test images each, ${os.cpus().length} cores`,
  );
  for (const name of names.length ? names : ['resnet20', 'resnet8']) {
    const m = MODELS[name];
    if (!m) throw new Error(`unknown model ${name}: resnet20 or resnet8`);
    const cached = path.join(OUT, `${name}.json`);
    let r: Report;
    if (process.argv.includes('--reuse') && fs.existsSync(cached)) {
      r = JSON.parse(fs.readFileSync(cached, 'utf8')) as Report;
      console.log(`\n${name}: the plan from ${path.relative(ROOT, cached)}`);
    } else {
      const t0 = Date.now();
      r = JSON.parse(
        JSON.stringify(
          await analyze({
            model: m.file,
            data: path.join(CIFAR, 'train10k-x-uint8-nhwc.npy'),
            labels: path.join(CIFAR, 'train10k-y.npy'),
            heldoutData: path.join(CIFAR, 'test-x-uint8-nhwc.npy'),
            heldoutLabels: path.join(CIFAR, 'test-y.npy'),
            calib,
            heldout,
            budget: 1.0,
            ...m.options,
          }),
        ),
      ) as Report;
      fs.writeFileSync(cached, JSON.stringify(r));
      console.log(`\n${name}: analysed in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
    const e = await encryptedModelTest({
      model: m.file,
      report: r,
      data: path.join(CIFAR, 'test-x-uint8-nhwc.npy'),
      labels: path.join(CIFAR, 'test-y.npy'),
      samples,
      packing: 'latency',
      engine: 'lattigo',
      onProgress: (_f, msg) => {
        if (/keys|: bootstrap 1$|run \d+\/\d+: [^ ]+$/.test(msg) && !/\(bootstrap\)/.test(msg))
          process.stderr.write(`  [${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
      },
    });
    print(name, r, e);
    if (process.argv.includes('--one-thread')) {
      // The same first image on one thread: what the worker pool buys, measured in the same run.
      process.env.HE_APPROX_ENGINE_THREADS = '1';
      const one = await encryptedModelTest({
        model: m.file,
        report: r,
        data: path.join(CIFAR, 'test-x-uint8-nhwc.npy'),
        labels: path.join(CIFAR, 'test-y.npy'),
        samples: 1,
        packing: 'latency',
        engine: 'lattigo',
      });
      delete process.env.HE_APPROX_ENGINE_THREADS;
      console.log(
        `  one thread, image ${one.samples[0].index}: ${one.latencySeconds.toFixed(1)} s; ${e.workers} threads: ${e.latencySeconds.toFixed(1)} s per image -> ${(one.latencySeconds / e.latencySeconds).toFixed(2)}x`,
      );
    }
  }
  console.log('\nThe field on ResNet-20 (their figures, not measured here):');
  for (const f of FIELD) console.log(`  ${f}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
