/** The CLI as a user runs it: exit codes, one-line errors without stack traces, outputs. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { writeNpy } from '../src/core/data/npy';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, ROOT, assertOneLineError, cli, example, tmpDir } from './helpers';

test('analyze on the MLP example: table on stdout, outputs written, exit 0', () => {
  const out = tmpDir();
  const r = cli(
    'analyze',
    example('mnist-mlp'),
    '--data',
    MNIST_TEST_IMAGES,
    '--labels',
    MNIST_TEST_LABELS,
    '--calib',
    '2000',
    '--heldout',
    '2000',
    '--out',
    out,
    '--quiet',
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /plaintext accuracy: \d+\.\d\d%/);
  assert.match(r.out, /measured drop \(pp\)/);
  assert.match(r.out, /dense_Dense1\/activation\s+relu/);
  for (const f of ['report.json', 'coefficients.json', 'model/model.json', 'model/weights.bin'])
    assert.ok(fs.existsSync(path.join(out, f)), f);
  const again = cli(
    'analyze',
    example('mnist-mlp'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '500',
    '--heldout',
    '500',
    '--out',
    out,
    '--quiet',
  );
  assertOneLineError(again, /report\.json already exists/);
});

test("analyze --per-layer / --no-tune / --tune-labels: one polynomial per layer, no tuning, the labels' weight, said in the table and the JSON report", () => {
  const args = [
    'analyze',
    example('mnist-mlp'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '500',
    '--heldout',
    '500',
    '--degrees',
    '3,7',
    '--quiet',
  ];
  const table = cli(...args, '--per-layer');
  assert.equal(table.code, 0, table.err);
  assert.match(table.out, /data-guided fit,/);
  const perLayer = JSON.parse(cli(...args, '--per-layer', '--json').out);
  assert.equal(perLayer.options.perChannel, false);
  assert.ok(perLayer.layers.every((l: { chosen: { channels: unknown } }) => l.chosen.channels === null));
  const perChannel = cli(...args);
  assert.match(perChannel.out, /data-guided per-channel fit,/);
  assert.match(perChannel.out, /refinements .* tuned \d/);
  const untuned = JSON.parse(cli(...args, '--no-tune', '--json').out);
  assert.equal(untuned.options.tune, false);
  assert.ok(!untuned.refinements.some((x: { name: string }) => x.name === 'tuned'));
  const labelled = [...args, '--labels', MNIST_TEST_LABELS, '--json'];
  assert.equal(JSON.parse(cli(...labelled).out).options.tuneLabelWeight, 0.5);
  const distilled = JSON.parse(cli(...labelled, '--tune-labels', '0').out);
  assert.equal(distilled.options.tuneLabelWeight, 0);
  assert.doesNotMatch(distilled.refinements.find((x: { name: string }) => x.name === 'tuned').description, /labels/);
  assertOneLineError(cli(...labelled, '--tune-labels', '2'), /--tune-labels.*\[0, 1\]/);
});

test('bad input: one line naming problem and fix, non-zero exit, no stack trace', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'corrupt.json'), '{"modelTopology": ');
  const shape = path.join(dir, 'shape.npy');
  fs.writeFileSync(shape, writeNpy([4, 10], new Float32Array(40)));
  const nan = path.join(dir, 'nan.npy');
  const v = new Float32Array(4 * 784);
  v[900] = NaN;
  fs.writeFileSync(nan, writeNpy([4, 28, 28, 1], v));
  const noshard = path.join(dir, 'noshard');
  fs.mkdirSync(noshard);
  fs.copyFileSync(example('mnist-mlp'), path.join(noshard, 'model.json'));
  const unknown = path.join(dir, 'unknown');
  fs.mkdirSync(unknown);
  const j = JSON.parse(fs.readFileSync(example('mnist-mlp'), 'utf8'));
  j.modelTopology.config.layers.splice(1, 0, { class_name: 'GRU', config: { name: 'gru', units: 3 } });
  fs.writeFileSync(path.join(unknown, 'model.json'), JSON.stringify(j));
  fs.copyFileSync(path.join(path.dirname(example('mnist-mlp')), 'weights.bin'), path.join(unknown, 'weights.bin'));

  assertOneLineError(cli('analyze', path.join(dir, 'corrupt.json'), '--data', MNIST_TEST_IMAGES), /not valid JSON/);
  assertOneLineError(cli('analyze', path.join(dir, 'missing.json'), '--data', MNIST_TEST_IMAGES), /does not exist/);
  assertOneLineError(
    cli('analyze', path.join(noshard, 'model.json'), '--data', MNIST_TEST_IMAGES),
    /weight shard 'weights\.bin'.*missing/,
  );
  assertOneLineError(
    cli('analyze', path.join(unknown, 'model.json'), '--data', MNIST_TEST_IMAGES),
    /'gru' \(GRU\) is not supported/,
  );
  assertOneLineError(cli('analyze', example('mnist-mlp'), '--data', shape), /10 values per sample.*784 per sample/);
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', nan, '--calib', '2', '--heldout', '2'),
    /sample 1 holds NaN/,
  );
  assertOneLineError(cli('analyze', example('mnist-mlp')), /no calibration data given/);
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--budget', 'lots'),
    /--budget lots is not a positive number/,
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--frobnicate'),
    /unknown option --frobnicate/,
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--bootstrap-levels', '1'),
    /--bootstrap-levels 1 is not an integer >= 2/,
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--margin-growth', '3'),
    /--margin-growth 3 is not a fraction in \[0, 1\]/,
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--screen-samples', '0'),
    /--screen-samples 0 is not a positive integer/,
  );
  assertOneLineError(
    cli(
      'analyze',
      example('mnist-mlp'),
      '--data',
      MNIST_TEST_IMAGES,
      '--labels',
      path.join(ROOT, 'test', 'fixtures', 'i64_labels.npy'),
    ),
    /3 labels but .* 10000 samples/,
  );
  assertOneLineError(cli('frob'), /unknown command 'frob'/);
});

test("issue 14's two reports (one NaN in a weight shard, --out naming a file), labels the model cannot output and weights that overflow are one-line errors", () => {
  const dir = tmpDir();
  const src = path.dirname(example('mnist-mlp'));
  const nanModel = path.join(dir, 'nan-weights');
  fs.mkdirSync(nanModel);
  fs.copyFileSync(path.join(src, 'model.json'), path.join(nanModel, 'model.json'));
  const bin = fs.readFileSync(path.join(src, 'weights.bin'));
  bin.writeFloatLE(NaN, 4 * 1000);
  fs.writeFileSync(path.join(nanModel, 'weights.bin'), bin);
  assertOneLineError(
    cli(
      'analyze',
      path.join(nanModel, 'model.json'),
      '--data',
      MNIST_TEST_IMAGES,
      '--calib',
      '100',
      '--heldout',
      '100',
    ),
    /layer 'dense_Dense1' has 1 NaN or infinite value in its kernel.*Fix: .*export the model again/,
  );
  // One stderr line (assertOneLineError) also means no progress was printed: the analysis never started.
  const file = path.join(dir, 'results.txt');
  fs.writeFileSync(file, "the user's notes");
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--out', file),
    /--out .*results\.txt is a file, not a folder/,
  );
  assert.equal(fs.readFileSync(file, 'utf8'), "the user's notes");
  const earlier = path.join(dir, 'earlier');
  fs.mkdirSync(earlier);
  fs.writeFileSync(path.join(earlier, 'report.json'), '{}');
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--out', earlier),
    /report\.json already exists.*--force/,
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--out', path.join(file, 'sub')),
    /results\.txt is a file, not a folder/,
  );
  assert.equal(fs.readFileSync(path.join(earlier, 'report.json'), 'utf8'), '{}');
  // Finite weights that overflow float32 on real data: every statistic after would be nonsense.
  const huge = path.join(dir, 'overflow');
  fs.mkdirSync(huge);
  fs.copyFileSync(path.join(src, 'model.json'), path.join(huge, 'model.json'));
  const hb = fs.readFileSync(path.join(src, 'weights.bin'));
  for (let i = 0; i < 784 * 128; i++) hb.writeFloatLE(3e38, 4 * i);
  fs.writeFileSync(path.join(huge, 'weights.bin'), hb);
  // Found while profiling, so after the progress lines: --quiet leaves the error alone.
  assertOneLineError(
    cli(
      'analyze',
      path.join(huge, 'model.json'),
      '--data',
      MNIST_TEST_IMAGES,
      '--calib',
      '100',
      '--heldout',
      '100',
      '--quiet',
    ),
    /values reaching dense_Dense1\/activation are not finite.*Fix: check the input preprocessing/,
  );
  // Labels counted from 1: class 10 of a 10-class model would only have lowered the accuracies.
  const oneBased = path.join(dir, 'labels-from-1.npy');
  fs.writeFileSync(
    oneBased,
    writeNpy(
      [10000],
      Float32Array.from({ length: 10000 }, (_, i) => 1 + (i % 10)),
    ),
  );
  assertOneLineError(
    cli('analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--labels', oneBased),
    /labels-from-1\.npy: sample 9 is labelled 10, but the model has 10 classes \(0\.\.9\).*subtract 1/,
  );
});

test('a dead layer (the same value on every sample) is analysed with a warning that names it', () => {
  const dir = tmpDir();
  const src = path.dirname(example('mnist-mlp'));
  fs.copyFileSync(path.join(src, 'model.json'), path.join(dir, 'model.json'));
  const b = fs.readFileSync(path.join(src, 'weights.bin'));
  for (let i = 0; i < 784 * 128; i++) b.writeFloatLE(0, 4 * i);
  for (let i = 784 * 128; i < 784 * 128 + 128; i++) b.writeFloatLE(0.5, 4 * i);
  fs.writeFileSync(path.join(dir, 'weights.bin'), b);
  const r = cli(
    'analyze',
    path.join(dir, 'model.json'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '200',
    '--heldout',
    '200',
    '--json',
  );
  assert.equal(r.code, 0, r.err);
  const report = JSON.parse(r.out);
  assert.ok(
    report.warnings.some((w: string) =>
      /dense_Dense1\/activation receives the constant 0\.5000 on every calibration sample/.test(w),
    ),
    report.warnings.join('\n'),
  );
  assert.ok(
    !report.warnings.some((w: string) => /dense_Dense2\/activation receives the constant/.test(w)),
    'only the dead layer is named',
  );
});

test('help and version', () => {
  const h = cli('help');
  assert.equal(h.code, 0);
  assert.match(h.out, /usage: he-approx analyze/);
  // Every option of both commands, with its default where it has one.
  assert.match(
    h.out,
    /options for analyze:[\s\S]*--bootstrap-levels <v>\s+levels usable between bootstraps[\s\S]*--bootstrap\s+plan for bootstrapping/,
  );
  assert.match(
    h.out,
    /options for encrypted-test:[\s\S]*--engine <v>\s+CKKS library .*\(default lattigo for a report planned for bootstrapping, else seal\)/,
  );
  const sub = cli('encrypted-test', '--help');
  assert.equal(sub.code, 0);
  assert.equal(sub.out, h.out, "a command's --help prints the usage");
  assert.match(cli('version').out, /^he-approx \d+\.\d+\.\d+/);
});

test('encrypted-test: missing or foreign reports are one-line errors', () => {
  const dir = tmpDir();
  assertOneLineError(
    cli('encrypted-test', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES),
    /no analysis report given/,
  );
  assertOneLineError(
    cli('encrypted-test', example('mnist-mlp'), '--report', path.join(dir, 'none.json'), '--data', MNIST_TEST_IMAGES),
    /report .*none\.json does not exist/,
  );
  fs.writeFileSync(path.join(dir, 'other.json'), JSON.stringify({ schema: 'something-else' }));
  assertOneLineError(
    cli('encrypted-test', example('mnist-mlp'), '--report', path.join(dir, 'other.json'), '--data', MNIST_TEST_IMAGES),
    /not a he-approx report/,
  );
  const out = path.join(dir, 'cnn');
  const a = cli(
    'analyze',
    example('mnist-cnn'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '500',
    '--heldout',
    '500',
    '--degrees',
    '3,7,15',
    '--out',
    out,
    '--quiet',
  );
  assert.ok(a.code === 0 || a.code === 3, a.err);
  assertOneLineError(
    cli('encrypted-test', example('mnist-mlp'), '--report', path.join(out, 'report.json'), '--data', MNIST_TEST_IMAGES),
    /another version of this model/,
  );
  assertOneLineError(
    cli(
      'encrypted-test',
      example('mnist-cnn'),
      '--report',
      path.join(out, 'report.json'),
      '--data',
      MNIST_TEST_IMAGES,
      '--latency',
      '--throughput',
    ),
    /two packings at once.*Fix: pass one of them/,
  );
  assertOneLineError(
    cli(
      'encrypted-test',
      example('mnist-cnn'),
      '--report',
      path.join(out, 'report.json'),
      '--data',
      MNIST_TEST_IMAGES,
      '--latency',
      '--layer-only',
    ),
    /--latency applies to the whole-model test/,
  );
});

test('encrypted-test: a model deeper than N=32768 allows, and data of the wrong shape, are refused before encrypting', () => {
  const out = path.join(tmpDir(), 'deep');
  // Degree 63 everywhere: 3 x 6 + 4 linear levels = 22 > 19.
  const a = cli(
    'analyze',
    example('mnist-cnn'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '300',
    '--heldout',
    '300',
    '--degrees',
    '63',
    '--level-budget',
    '30',
    '--out',
    out,
    '--quiet',
  );
  assert.ok(a.code === 0 || a.code === 3, a.err);
  assertOneLineError(
    cli(
      'encrypted-test',
      example('mnist-cnn'),
      '--report',
      path.join(out, 'report.json'),
      '--data',
      MNIST_TEST_IMAGES,
      '--samples',
      '1',
    ),
    /needs 22 levels but CKKS at N=32768 with 128-bit security offers 19.*Fix: lower the degree of/,
  );
  const bad = path.join(tmpDir(), 'bad.npy');
  fs.writeFileSync(bad, writeNpy([2, 10], new Float32Array(20)));
  assertOneLineError(
    cli(
      'encrypted-test',
      example('mnist-cnn'),
      '--report',
      path.join(out, 'report.json'),
      '--data',
      bad,
      '--layer-only',
    ),
    /10 values per sample.*784 per sample/,
  );
});

test('a model too large for the memory is refused before any tensor exists, with the estimate, the limit and the option that fits', () => {
  // 100,000 3x3 filters on MNIST: 7.6 MB of weights, but 67.6 million values per sample after the
  // convolution: 256 samples would need 138 GB of the wasm backend's 4.3 GB (before this check the
  // run died minutes in with "memory access out of bounds").
  const dir = tmpDir();
  const F = 100000;
  const kernel = new Float32Array(9 * F).map((_v, i) => Math.sin(i) * 0.1);
  const dense = new Float32Array(F * 10).map((_v, i) => Math.cos(i) * 0.01);
  fs.writeFileSync(path.join(dir, 'w.bin'), Buffer.concat([Buffer.from(kernel.buffer), Buffer.from(dense.buffer)]));
  fs.writeFileSync(
    path.join(dir, 'model.json'),
    JSON.stringify({
      format: 'layers-model',
      modelTopology: {
        class_name: 'Sequential',
        config: {
          name: 'wide',
          layers: [
            {
              class_name: 'Conv2D',
              config: {
                name: 'conv',
                filters: F,
                kernel_size: [3, 3],
                strides: [1, 1],
                padding: 'valid',
                activation: 'relu',
                use_bias: false,
                batch_input_shape: [null, 28, 28, 1],
              },
            },
            { class_name: 'GlobalAveragePooling2D', config: { name: 'gap' } },
            { class_name: 'Dense', config: { name: 'out', units: 10, activation: 'softmax', use_bias: false } },
          ],
        },
      },
      weightsManifest: [
        {
          paths: ['w.bin'],
          weights: [
            { name: 'conv/kernel', shape: [3, 3, 1, F], dtype: 'float32' },
            { name: 'out/kernel', shape: [F, 10], dtype: 'float32' },
          ],
        },
      ],
    }),
  );
  const out = path.join(tmpDir(), 'out');
  const r = cli('analyze', path.join(dir, 'model.json'), '--data', MNIST_TEST_IMAGES, '--out', out);
  assertOneLineError(
    r,
    /one batch of 256 samples needs at least 138\.\d GB \(weights 0\.0 GB, values 138\.\d GB; the largest value, conv, holds 67,600,000 numbers per sample\), more than the 4\.3 GB the wasm backend can address\. Fix: pass --batch-size \d+ or less/,
  );
  assert.ok(!fs.existsSync(out), 'nothing written');
});

test("analyze --finetune-epochs: without labels it learns the original model's outputs; with labels the table reports each epoch's measured drop and the JSON report the fine-tuning", () => {
  const base = [
    'analyze',
    example('mnist-mlp'),
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '500',
    '--heldout',
    '500',
    '--degrees',
    '3,7',
    '--no-tune',
    '--quiet',
  ];
  const unlabelled = tmpDir();
  const u = cli(...base, '--finetune-epochs', '1', '--out', unlabelled);
  assert.ok(u.code === 0 || u.code === 3, u.err);
  assert.match(
    u.out,
    /fine-tuning \(1 epochs, \d+ s; weights and coefficients, same degrees and levels; no labels: on the original model's outputs\)/,
  );
  const ur = JSON.parse(fs.readFileSync(path.join(unlabelled, 'report.json'), 'utf8'));
  assert.equal(ur.finetune.labelWeight, 0);
  assert.equal(ur.finetune.perEpoch.length, 1);
  assertOneLineError(cli(...base, '--labels', MNIST_TEST_LABELS, '--finetune-epochs', '-1'), /--finetune-epochs/);
  const out = tmpDir();
  const r = cli(...base, '--labels', MNIST_TEST_LABELS, '--finetune-epochs', '2', '--out', out);
  assert.ok(r.code === 0 || r.code === 3, r.err);
  assert.match(
    r.out,
    /fine-tuning \(2 epochs, \d+ s; weights and coefficients, same degrees and levels\): measured drop -?\d+\.\d\d -> -?\d+\.\d\d pp \(per epoch -?\d+\.\d\d( unsafe)?, -?\d+\.\d\d( unsafe)?(; epoch [12] chosen on 50 validation samples)?\)/,
  );
  const rep = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
  assert.equal(rep.finetune.perEpoch.length, 2);
  // 500 calibration samples: a tenth kept out to choose the epoch; the chosen one is the best safe one there.
  assert.equal(rep.finetune.validationSamples, 50);
  type Epoch = {
    epoch: number;
    measuredDrop: number;
    safe: boolean;
    validationAccuracy: number;
    validationSafe: boolean;
  };
  const eps: Epoch[] = rep.finetune.perEpoch;
  // Safe on validation and on held-out first, then validation accuracy.
  const ok = (e: Epoch) => Number(e.validationSafe && e.safe);
  const best = [...eps].sort((a, b) => ok(b) - ok(a) || b.validationAccuracy - a.validationAccuracy)[0];
  assert.equal(eps.find((e) => e.epoch === rep.finetune.chosenEpoch)!.validationAccuracy, best.validationAccuracy);
  assert.equal(rep.finetune.measuredDrop, eps.find((e) => e.epoch === rep.finetune.chosenEpoch)!.measuredDrop);
  assert.equal(rep.finetune.layers.length, rep.layers.length);
  assert.equal(rep.finetune.kept, rep.finetune.safe && rep.finetune.measuredDrop <= rep.finetune.analysisDrop + 1e-9);
  // Kept: written beside the analysis's model; not kept: nothing written for it.
  assert.equal(fs.existsSync(path.join(out, 'finetuned', 'model.json')), rep.finetune.kept);
  assert.equal(rep.finetune.exported, rep.finetune.kept ? path.join('finetuned', 'model.json') : null);
});
