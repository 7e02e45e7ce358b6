/**
 * The CNN shapes users bring, on the repository's examples trained by their seeded scripts:
 * max pooling (PyTorch -> ONNX), a MobileNet-style Keras .h5 (depthwise separable blocks) and
 * parallel branches joined by a concatenation (PyTorch -> ONNX). Each analysed end to end, its
 * headline being the model that runs under CKKS, and run under SEAL (or, for the MobileNet's
 * same-padded depthwise convolutions, each approximated operation under SEAL).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { loadDataset } from '../src/core/data/read';
import { writeOutputs } from '../src/core/export/export';
import { encryptedLayerTest } from '../src/core/he/layerTest';
import { compileProgram, encryptedModelTest, programDepth, simulateProgram } from '../src/core/he/modelTest';
import { paramsFor } from '../src/core/he/params';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';
import { Report } from '../src/core/report';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, ROOT, heldoutAccuracy, saveModel, tmpDir } from './helpers';
import { runOrt } from './onnxBuild';

const MAXPOOL = path.join(ROOT, 'examples', 'pytorch-maxpool', 'model.onnx');
const MOBILENET = path.join(ROOT, 'examples', 'keras-mobilenet', 'mobilenet.h5');
const BRANCHES = path.join(ROOT, 'examples', 'pytorch-branches', 'model.onnx');
const SIZES = { calib: 1000, heldout: 1000, seed: 5 };
const CLI = path.join(ROOT, 'bin', 'he-approx.js');
const json = (r: Report): Report => JSON.parse(JSON.stringify(r));

test('MaxPool example: polynomial max within the budget, average pooling beside it; onnxruntime scores the export; SEAL agrees on 16 images', async () => {
  const r = json(await analyze({ model: MAXPOOL, data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...SIZES }));
  const tree = r.layers.filter((l) => l.maxTree);
  assert.equal(tree.length, 2, 'a 2x2 max pooling: one step along the width, one along the height');
  assert.ok(r.final.meetsBudget, `measured drop ${r.final.measuredDrop}`);
  assert.ok(r.maxPooling && Number.isFinite(r.maxPooling.averagePooling.drop));
  assert.ok(
    r.maxPooling!.averagePooling.drop > r.final.measuredDrop,
    `average pooling ${r.maxPooling!.averagePooling.drop} pp vs the polynomial max ${r.final.measuredDrop} pp`,
  );
  assert.ok(r.final.networkDepth <= r.levelBudget && !r.bootstrapping.planned);
  // The export computes the max trees' polynomials: onnxruntime gives the reported accuracy.
  const files = writeOutputs(tmpDir(), await loadModel(MAXPOOL), r, false);
  assert.equal(await heldoutAccuracy(SIZES, (x, n) => runOrt(files.model, x, [n, 1, 28, 28])), r.final.accuracy);
  // Under SEAL: the max trees as rotations, differences and their polynomials.
  const res = await encryptedModelTest({
    model: MAXPOOL,
    report: r,
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    samples: 16,
    workers: 1,
  });
  assert.equal(res.samples.length, 16);
  assert.equal(res.agreement, 1);
  assert.ok(res.maxAbsErrLogits < 1e-3, `max logit error ${res.maxAbsErrLogits}`);
  assert.equal(res.levelsUsed, res.levelsPredicted, 'simulator plan = real consumption');
  assert.equal(res.levelsUsed, r.final.networkDepth, 'the levels the report counts are the levels SEAL uses');
});

test('a model whose max pooling alone misses the budget says so in the headline and exits 3', async () => {
  await initBackend();
  const m = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [28, 28, 1],
        filters: 4,
        kernelSize: 5,
        kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }),
      }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
    ],
  });
  const file = await saveModel(m, tmpDir());
  // Degree 1 only: each |x| a constant, the tree a linear pooling; the max pooling is the model's only non-linearity.
  const run = spawnSync(
    process.execPath,
    [CLI, 'analyze', file, '--data', MNIST_TEST_IMAGES, '--calib', '500', '--heldout', '500', '--degrees', '1'],
    { encoding: 'utf8' },
  );
  assert.equal(run.status, 3, run.stderr);
  assert.match(run.stdout, /\(0 activations, 1 max pooling as 2 \|x\|\)/);
  assert.match(run.stdout, /max pooling\s+polynomial max\s+polynomial max/);
  assert.match(run.stdout, /meets budget\s+NO/);
  assert.match(run.stdout, /max pooling as average pooling instead .*measured drop/);
});

test('MobileNet-style Keras .h5: reads as PyTorch computed it, analysed end to end with depthwise convolutions, fine-tuned, each operation under SEAL', async () => {
  await initBackend();
  // The .h5 was written from PyTorch (examples/keras-mobilenet/train.py): its logits on 16 images.
  const ref = JSON.parse(fs.readFileSync(path.join(path.dirname(MOBILENET), 'training.json'), 'utf8')).referenceLogits
    .logits as number[][];
  const model = await loadModel(MOBILENET);
  assert.ok(
    model.graph.nodes.some((n) => n.spec.op === 'conv2d' && (n.spec.groups ?? 1) > 1),
    'depthwise convolutions',
  );
  const ds = loadDataset(MNIST_TEST_IMAGES, null, [28, 28, 1]);
  const ex = new Executor(model.graph);
  const ours = ex.run(new Map([[0, tf.tensor(ds.x.subarray(0, 16 * 784), [16, 28, 28, 1])]]), 0, {}).logits;
  ex.dispose();
  let d = 0;
  ref.forEach((row, i) =>
    row.forEach((v, j) => {
      d = Math.max(d, Math.abs(ours[i * 10 + j] - v));
    }),
  );
  assert.ok(d < 1e-3, `max |he-approx - PyTorch| = ${d}`);
  // The screen, tuning and fine-tuning differentiate through every depthwise convolution.
  const r = json(
    await analyze({
      model: MOBILENET,
      data: MNIST_TEST_IMAGES,
      labels: MNIST_TEST_LABELS,
      ...SIZES,
      finetuneEpochs: 1,
    }),
  );
  assert.ok(r.final.meetsBudget, `measured drop ${r.final.measuredDrop}`);
  assert.deepEqual(
    r.layers.map((l) => l.activation),
    ['relu6', 'relu6', 'relu6', 'relu6', 'relu6'],
  );
  assert.ok(r.finetune, 'fine-tuning ran');
  assert.equal(r.finetune!.perEpoch.length, 1);
  assert.ok(
    !r.finetune!.frozen.some((f) => /conv_dw/.test(f.layer)),
    `depthwise kernels train: ${JSON.stringify(r.finetune!.frozen)}`,
  );
  const enc = await encryptedLayerTest({
    model: MOBILENET,
    report: r,
    data: MNIST_TEST_IMAGES,
    samples: 4,
    maxCiphertexts: 1,
  });
  assert.equal(enc.layers.length, 5);
  for (const l of enc.layers) {
    assert.equal(l.levelsUsed, l.levelsPredicted, l.name);
    assert.ok(l.precisionBits > 15, `${l.name}: ${l.precisionBits} bits`);
  }
});

test("branches side by side: the report's levels are the longest path, as the compiled program uses them and SEAL runs them", async () => {
  const r = json(await analyze({ model: BRANCHES, data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...SIZES }));
  assert.ok(r.final.meetsBudget, `measured drop ${r.final.measuredDrop}`);
  const g = (await loadModel(BRANCHES)).graph;
  assert.ok(g.nodes.some((n) => n.spec.op === 'concat'));
  const p = compileProgram(g, r);
  const levels = r.final.networkDepth;
  assert.equal(programDepth(p), levels);
  const params = paramsFor(32768, 19);
  const primes = params.modulusBits.slice(0, -1).map((b) => 2 ** b);
  assert.equal(
    simulateProgram(p, primes, 19).levelsUsed,
    levels,
    'the simulator on the compiled program uses the levels the report counts',
  );
  // Two branches: the sum of all activations' levels plus the linear layers' would count more.
  const sum = r.layers.reduce((t, l) => t + l.chosen.depth, 0) + r.linearDepth;
  assert.ok(levels < sum, `longest path ${levels} levels, summed ${sum}`);
  assert.ok(
    r.final.activationDepth < r.layers.reduce((t, l) => t + l.chosen.depth, 0),
    'the activation levels of the longest path, not of every layer',
  );
  const res = await encryptedModelTest({
    model: BRANCHES,
    report: r,
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    samples: 8,
    workers: 1,
  });
  assert.equal(res.agreement, 1);
  assert.equal(res.levelsUsed, levels);
});
