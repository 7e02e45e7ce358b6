/**
 * The analysis on the repository's own PyTorch (ONNX) and Keras examples, as users run it: the
 * budget is met as measured, the approximated model is written back in the user's format (ONNX
 * with the polynomials as plain ONNX arithmetic; tfjs for Keras files) and, run by onnxruntime
 * or tfjs, gives the accuracy the report states; bad Keras and ONNX files are one-line errors.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { writeOutputs } from '../src/core/export/export';
import { registerPolyLayer } from '../src/core/export/polyLayer';
import { initBackend, tf } from '../src/core/model/backend';
import { loadModel } from '../src/core/model/load';
import {
  MNIST_TEST_IMAGES,
  MNIST_TEST_LABELS,
  ROOT,
  expectUserErrorAsync,
  heldoutAccuracy,
  tfjsLoad,
  tmpDir,
} from './helpers';
import { runOrt } from './onnxBuild';

const ONNX_EXAMPLE = path.join(ROOT, 'examples', 'pytorch-cnn', 'model.onnx');
const H5_EXAMPLE = path.join(ROOT, 'examples', 'keras', 'mnist-resnet.h5');
const KERAS3_EXAMPLE = path.join(ROOT, 'examples', 'keras', 'mnist-silu.keras');
const SIZES = { calib: 1000, heldout: 1000, seed: 5 };

test('PyTorch example (ONNX): meets the budget; the exported ONNX runs in onnxruntime with the reported accuracy', async () => {
  const r = await analyze({ model: ONNX_EXAMPLE, data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...SIZES });
  assert.equal(r.model.format, 'onnx');
  assert.deepEqual(
    r.layers.map((l) => l.activation),
    ['relu', 'swish', 'gelu'],
    "torch's SiLU and GELU patterns are single activations",
  );
  assert.ok(r.final.meetsBudget, `measured drop ${r.final.measuredDrop}`);
  assert.ok(r.final.activationDepth < r.uniform.activationDepth);
  assert.ok(
    r.data.notes.some((n) => /NCHW order/.test(n)),
    r.data.notes.join('; '),
  );
  const dir = tmpDir();
  const files = writeOutputs(dir, await loadModel(ONNX_EXAMPLE), r, false);
  assert.equal(path.basename(files.model), 'model.onnx');
  // MNIST has one channel, so NHWC and NCHW batches have the same bytes.
  const acc = await heldoutAccuracy(SIZES, (x, n) => runOrt(files.model, x, [n, 1, 28, 28]));
  assert.equal(acc, r.final.accuracy, `onnxruntime on the exported model: ${acc}, report: ${r.final.accuracy}`);
  const original = await heldoutAccuracy(SIZES, (x, n) => runOrt(ONNX_EXAMPLE, x, [n, 1, 28, 28]));
  assert.equal(
    original,
    r.plaintext.accuracy,
    'the original model in onnxruntime scores the reported plaintext accuracy',
  );
});

test('Keras .h5 example: meets the budget; the exported tfjs model computes the reported accuracy', async () => {
  await initBackend();
  registerPolyLayer();
  const r = await analyze({ model: H5_EXAMPLE, data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...SIZES });
  assert.equal(r.model.format, 'keras-h5');
  assert.ok(r.final.meetsBudget, `measured drop ${r.final.measuredDrop}`);
  const files = writeOutputs(tmpDir(), await loadModel(H5_EXAMPLE), r, false);
  const exported = await tfjsLoad(files.model);
  const acc = await heldoutAccuracy(SIZES, async (x, n) =>
    tf.tidy(() => (exported.predict(tf.tensor4d(x, [n, 28, 28, 1])) as tf.Tensor).dataSync()),
  );
  assert.equal(acc, r.final.accuracy);
});

test('Keras 3 .keras example: analysed like its TensorFlow.js original', async () => {
  const opts = { data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...SIZES, degrees: [3, 7], tune: false };
  const r = await analyze({ model: KERAS3_EXAMPLE, ...opts });
  const ref = await analyze({ model: path.join(ROOT, 'examples', 'mnist-silu', 'model.json'), ...opts });
  assert.equal(r.model.format, 'keras');
  assert.equal(r.plaintext.accuracy, ref.plaintext.accuracy);
  assert.deepEqual(r.final.degrees, ref.final.degrees);
  assert.equal(r.final.accuracy, ref.final.accuracy);
});

test('bad Keras files: truncated, not HDF5, weights only, an archive without weights', async () => {
  const dir = tmpDir();
  const h5 = fs.readFileSync(H5_EXAMPLE);
  const trunc = path.join(dir, 'truncated.h5');
  fs.writeFileSync(trunc, h5.subarray(0, Math.floor(h5.length / 3)));
  await expectUserErrorAsync(() => loadModel(trunc), 'MODEL_UNREADABLE', /cannot be opened as HDF5|truncated/);
  const text = path.join(dir, 'text.h5');
  fs.writeFileSync(text, 'not hdf5');
  await expectUserErrorAsync(() => loadModel(text), 'MODEL_UNREADABLE', /not an HDF5 file/);
  const { zipSync, unzipSync } = await import('fflate');
  const entries = unzipSync(fs.readFileSync(KERAS3_EXAMPLE));
  delete entries['model.weights.h5'];
  const noWeights = path.join(dir, 'noweights.keras');
  fs.writeFileSync(noWeights, zipSync(entries));
  await expectUserErrorAsync(() => loadModel(noWeights), 'WEIGHTS_MISSING', /has no model\.weights\.h5/);
  const notZip = path.join(dir, 'notzip.keras');
  fs.writeFileSync(notZip, 'PK but not really');
  await expectUserErrorAsync(() => loadModel(notZip), 'MODEL_UNREADABLE', /not a readable \.keras/);
});

test('CLI: an ONNX model end to end (exit 0, model.onnx written) and a corrupt one (one line, exit 2)', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, 'bin', 'he-approx.js'), ...args], {
      encoding: 'utf8',
      cwd: ROOT,
      timeout: 300000,
    });
  const out = tmpDir();
  const ok = cli(
    'analyze',
    ONNX_EXAMPLE,
    '--data',
    MNIST_TEST_IMAGES,
    '--calib',
    '300',
    '--heldout',
    '300',
    '--degrees',
    '3,7',
    '--no-tune',
    '--out',
    out,
    '--quiet',
  );
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /\/act3\/Mul_1\s+gelu/);
  assert.ok(fs.existsSync(path.join(out, 'model.onnx')) && fs.existsSync(path.join(out, 'coefficients.json')));
  const bad = path.join(tmpDir(), 'bad.onnx');
  fs.writeFileSync(bad, fs.readFileSync(ONNX_EXAMPLE).subarray(0, 5000));
  const r = cli('analyze', bad, '--data', MNIST_TEST_IMAGES);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^he-approx: error: bad\.onnx is not a readable ONNX model.*Fix: /);
});
