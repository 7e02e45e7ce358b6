/**
 * Deep-network benchmark (issue 12): `he-approx analyze` as a user runs it on the models trained
 * by others in ../shared/peer, each in its own child process (so each peak RSS is its own), in
 * one run:
 *   resnet20  ResNet-20 on CIFAR-10, ONNX exported from PyTorch (19 ReLUs)
 *   resnet32  ResNet-32, the same (31 ReLUs): time about linear in depth means about 31/19 = 1.6x
 *   resnet8   MLPerf Tiny's ResNet-8, Keras .h5 (7 ReLUs; raw 0..255 input)
 * with 2,000 calibration images (CIFAR-10 training JPEGs) and 2,000 held-out images (test JPEGs),
 * budget 1.0 pp. Prints wall time, the time of every stage, peak RSS, the levels and bootstraps of
 * the chosen degrees and of the uniform baseline, the measured drops, and the ResNet-32 / ResNet-20
 * time ratio.
 *
 * With both ResNet-20 and ResNet-32, ResNet-20 runs a second time after ResNet-32 and the ratio
 * is against the mean of its two runs (--once: each model once).
 *
 *   node dist/bench/deep.js [resnet20 resnet32 resnet8] [--calib 2000] [--heldout 2000] [--once]
 */
import * as os from 'os';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { STAGE_ORDER } from '../src/core/analysis/clock';
import { numberArg } from './args';

const ROOT = path.resolve(__dirname, '..', '..');
const PEER = process.env.HE_APPROX_PEER ?? path.resolve(ROOT, '..', 'shared', 'peer');
const CIFAR = path.join(PEER, 'cifar10-jpeg');
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

const MODELS: Record<string, { file: string; options: Record<string, unknown> }> = {
  resnet20: { file: path.join(PEER, 'resnet-cifar10', 'resnet20.onnx'), options: { normalize: IMAGENET } },
  resnet32: { file: path.join(PEER, 'resnet-cifar10', 'resnet32.onnx'), options: { normalize: IMAGENET } },
  resnet8: { file: path.join(PEER, 'mlperf-tiny-resnet8', 'pretrainedResnet.h5'), options: { scale: 'none' } },
};

const arg = numberArg;

async function child(name: string, calib: number, heldout: number): Promise<void> {
  const { analyze } = await import('../src/core/analyze');
  const m = MODELS[name];
  const r = await analyze({
    model: m.file,
    data: path.join(CIFAR, 'train10k-x-uint8-nhwc.npy'),
    labels: path.join(CIFAR, 'train10k-y.npy'),
    heldoutData: path.join(CIFAR, 'test-x-uint8-nhwc.npy'),
    heldoutLabels: path.join(CIFAR, 'test-y.npy'),
    calib,
    heldout,
    budget: 1.0,
    ...m.options,
  });
  const summary = (s: typeof r.final) => ({
    activationDepth: s.activationDepth,
    networkDepth: s.networkDepth,
    bootstraps: s.bootstraps,
    measuredDrop: s.measuredDrop,
    meetsBudget: s.meetsBudget,
    safe: s.safe,
    maxAbs: s.maxAbs,
    rounds: s.rounds,
    checks: s.checks,
  });
  process.stdout.write(
    JSON.stringify({
      name,
      activations: r.layers.length,
      plaintext: r.plaintext.accuracy,
      bootstrapping: r.bootstrapping,
      timings: r.timings,
      final: summary(r.final),
      uniform: summary(r.uniform),
      degrees: Object.values(r.final.degrees),
      samplesOutside: r.layers.reduce((s, l) => s + l.chosen.heldoutOutside.samples, 0),
      peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    }) + '\n',
  );
}

type Result = {
  name: string;
  activations: number;
  plaintext: number;
  timings: Record<string, number>;
  final: Record<string, number | boolean>;
  uniform: Record<string, number | boolean>;
  degrees: number[];
  samplesOutside: number;
  peakRssMB: number;
  bootstrapping: { planned: boolean; levelsPerBootstrap: number };
};

function run(name: string, calib: number, heldout: number): Result {
  const r = spawnSync(process.execPath, [__filename, '--child', name, String(calib), String(heldout)], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--child');
  if (i > 0) return child(process.argv[i + 1], Number(process.argv[i + 2]), Number(process.argv[i + 3]));
  if (!fs.existsSync(path.join(PEER, 'README.md')))
    throw new Error(
      `${PEER} is missing: this benchmark needs the shared peer models (../shared/peer, or HE_APPROX_PEER=<folder>)`,
    );
  const calib = arg('calib', 2000);
  const heldout = arg('heldout', 2000);
  const names = process.argv
    .slice(2)
    .filter((a, k, all) => !a.startsWith('--') && !['--calib', '--heldout'].includes(all[k - 1] ?? ''));
  const asked = names.length ? names : ['resnet20', 'resnet32', 'resnet8'];
  // ResNet-20 runs again right after ResNet-32 and the ratio is taken against the mean of its two
  // runs: the machine's speed drifts by 10-25% within minutes (one run's profile stage, which
  // no choice of degrees touches, took 1.24x longer on ResNet-32 than the network's size
  // explains), and a run before and after cancels a steady drift. --once runs each model once.
  const bracket = asked.includes('resnet20') && asked.includes('resnet32') && !process.argv.includes('--once');
  const todo = bracket ? asked.flatMap((n) => (n === 'resnet32' ? [n, 'resnet20'] : [n])) : asked;
  console.log(
    `deep-network benchmark: he-approx analyze, ${calib} calibration + ${heldout} held-out CIFAR-10 images, budget 1.0 pp (${os.cpus().length} cores)`,
  );
  const results: Result[] = [];
  for (const name of todo) {
    const r = run(name, calib, heldout);
    results.push(r);
    const f = r.final;
    const u = r.uniform;
    const t = r.timings;
    const again = results.filter((x) => x.name === name).length > 1 ? ', again after resnet32' : '';
    console.log(
      `\n${name}${again} (${r.activations} activations, plaintext ${(100 * r.plaintext).toFixed(2)}% on the JPEG test images${r.bootstrapping.planned ? `, planned for bootstrapping every ${r.bootstrapping.levelsPerBootstrap} levels` : ''})`,
    );
    console.log(
      `  time ${t.total.toFixed(0)} s, peak RSS ${(r.peakRssMB / 1024).toFixed(2)} GB; stages (s): ${STAGE_ORDER.filter(
        (k) => k !== 'finetune',
      )
        .map((k) => `${k} ${(t[k] ?? 0).toFixed(1)}`)
        .join(', ')}`,
    );
    console.log(
      `  data-guided: ${f.activationDepth} activation / ${f.networkDepth} network levels, ${f.bootstraps} bootstraps, measured drop ${Number(f.measuredDrop).toFixed(2)} pp, ` +
        `${f.meetsBudget ? 'meets' : 'MISSES'} the budget, values ${f.safe ? `safe (max ${Number(f.maxAbs).toFixed(1)})` : 'UNSAFE'}, ${r.samplesOutside} held-out samples outside an interval; ${f.rounds} rounds, ${f.checks} checks`,
    );
    console.log(
      `  uniform:     ${u.activationDepth} activation / ${u.networkDepth} network levels, ${u.bootstraps} bootstraps, measured drop ${Number(u.measuredDrop).toFixed(2)} pp, ${u.meetsBudget ? 'meets' : 'MISSES'} the budget; ${u.rounds} rounds, ${u.checks} checks`,
    );
    console.log(`  degrees: ${r.degrees.join(', ')}`);
  }
  const r20s = results.filter((r) => r.name === 'resnet20');
  const r20 = r20s[0];
  const r32 = results.find((r) => r.name === 'resnet32');
  if (r20 && r32) {
    // Per stage, the mean over ResNet-20's runs (one, or the two around ResNet-32).
    const mean = (k: string) => r20s.reduce((sum, r) => sum + (r.timings[k] ?? 0), 0) / r20s.length;
    const runs =
      r20s.length > 1
        ? ` (the mean of ResNet-20's runs before and after it, ${r20s.map((r) => `${r.timings.total.toFixed(0)} s`).join(' and ')})`
        : '';
    console.log(
      `\nResNet-32 / ResNet-20 time: ${(r32.timings.total / mean('total')).toFixed(2)}x${runs} for ${(r32.activations / r20.activations).toFixed(2)}x the activations (target: within 1.7x)`,
    );
    console.log(
      `  by stage: ${Object.keys(r32.timings)
        .filter((k) => k !== 'total' && mean(k) > 0.5)
        .map((k) => `${k} ${(r32.timings[k] / mean(k)).toFixed(2)}x`)
        .join(', ')}`,
    );
  }
  if (r20) {
    // What the field reports for the same network (see ../shared/notes/field.md): AutoFHE (Ao and
    // Boddeti, USENIX Security'24) searches per-layer polynomials and fine-tunes the network for
    // GPU-days, reaching 0.70 pp below the original ResNet-20 with 5 bootstraps. Our aim is as few
    // bootstraps within 1.0 pp without retraining.
    const f = r20.final;
    console.log(
      `\nResNet-20 against the field: AutoFHE 5 bootstraps at 0.70 pp below the original, after GPU-days of search and fine-tuning; ` +
        `he-approx ${f.bootstraps} bootstraps at ${Number(f.measuredDrop).toFixed(2)} pp, no retraining, ${(r20.timings.total / 60).toFixed(1)} minutes on ${os.cpus().length} cores ` +
        `(${Number(f.bootstraps) - 5 > 0 ? `${Number(f.bootstraps) - 5} bootstraps more than AutoFHE` : `${5 - Number(f.bootstraps)} fewer than AutoFHE`}, ` +
        `${r20.bootstrapping.levelsPerBootstrap} levels between bootstraps)`,
    );
  }
  for (const [k, r] of results.entries()) {
    const ok =
      r.peakRssMB < 4096 &&
      r.final.meetsBudget === true &&
      Number(r.final.networkDepth) < Number(r.uniform.networkDepth) &&
      Number(r.final.bootstraps) < Number(r.uniform.bootstraps);
    // The time target is ResNet-20's (and its smaller cousin's); ResNet-32's is the ratio above.
    const timeOk = r.name === 'resnet32' || r.timings.total <= 600;
    console.log(
      `${r.name}${results.findIndex((x) => x.name === r.name) < k ? ' (again)' : ''}: meets the budget with fewer levels and fewer bootstraps than uniform, under 4 GB: ${ok ? 'yes' : 'NO'}` +
        `${r.name === 'resnet32' ? '' : `; within 10 minutes: ${timeOk ? 'yes' : 'NO'}`}`,
    );
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
