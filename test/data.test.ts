/** Calibration data readers, checks and the split. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { loadDataset, readArray, splitIndices } from '../src/core/data/read';
import { writeNpy } from '../src/core/data/npy';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, ROOT, tmpDir, expectUserError } from './helpers';

const fx = (f: string) => path.join(ROOT, 'test', 'fixtures', f);

test('.npy files written by numpy: float64, uint8, int64; Fortran order refused', () => {
  const a = readArray(fx('f64_2x3x4.npy'));
  assert.deepEqual(a.shape, [2, 3, 4]);
  assert.ok(Math.abs(a.data[23] - 23 / 7) < 1e-15);
  const u = readArray(fx('u8_3x2x2.npy'));
  assert.equal(u.dtype, 'uint8');
  assert.equal(u.data[11], 220);
  assert.deepEqual(Array.from(readArray(fx('i64_labels.npy')).data), [3, 1, 2]);
  expectUserError(() => readArray(fx('f32_fortran.npy')), 'DATA_UNREADABLE', /Fortran order/);
});

test('uint8 data is scaled to [0, 1] by default and checked against the model input', () => {
  const ds = loadDataset(fx('u8_3x2x2.npy'), fx('i64_labels.npy'), [2, 2, 1]);
  assert.equal(ds.count, 3);
  assert.ok(Math.abs(ds.x[11] - 220 / 255) < 1e-7);
  assert.deepEqual(Array.from(ds.labels!), [3, 1, 2]);
  assert.ok(ds.notes.some((n) => /divided by 255/.test(n)));
  const raw = loadDataset(fx('u8_3x2x2.npy'), null, [4], 'none');
  assert.equal(raw.x[11], 220);
  expectUserError(
    () => loadDataset(fx('u8_3x2x2.npy'), null, [28, 28, 1]),
    'DATA_SHAPE',
    /\[3, 2, 2\].*\[N, 28, 28, 1\]/,
  );
  expectUserError(
    () => loadDataset(fx('u8_3x2x2.npy'), fx('f64_2x3x4.npy'), [2, 2]),
    'LABELS_MISMATCH',
    /2 labels but .* 3 samples/,
  );
});

test('MNIST idx, CSV (with header) and JSON readers', () => {
  const mn = loadDataset(MNIST_TEST_IMAGES, MNIST_TEST_LABELS, [28, 28, 1]);
  assert.equal(mn.count, 10000);
  assert.equal(mn.labels![0], 7); // The first MNIST test digit is a 7.
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'd.csv'), 'a,b,c\n1,2,3\n4,5,6.5\n');
  const c = loadDataset(path.join(dir, 'd.csv'), null, [3]);
  assert.deepEqual(Array.from(c.x), [1, 2, 3, 4, 5, 6.5]);
  fs.writeFileSync(path.join(dir, 'd.json'), JSON.stringify([[[1, 2]], [[3, 4]]]));
  assert.deepEqual(readArray(path.join(dir, 'd.json')).shape, [2, 1, 2]);
  fs.writeFileSync(path.join(dir, 'ragged.csv'), '1,2\n3\n');
  expectUserError(() => readArray(path.join(dir, 'ragged.csv')), 'DATA_SHAPE', /row 2 has 1 values/);
  fs.writeFileSync(path.join(dir, 'bad.csv'), '1,2\n3,x\n');
  expectUserError(() => readArray(path.join(dir, 'bad.csv')), 'DATA_UNREADABLE', /'x' is not a number/);
  // A first sample with one damaged cell is not a header: refused, not silently dropped.
  fs.writeFileSync(path.join(dir, 'typo.csv'), '1,2,3o\n4,5,6\n');
  expectUserError(() => readArray(path.join(dir, 'typo.csv')), 'DATA_UNREADABLE', /line 1: '3o' is not a number/);
  fs.writeFileSync(path.join(dir, 'half.csv'), 'x,y,3,4\n1,2,3,4\n');
  assert.deepEqual(readArray(path.join(dir, 'half.csv')).shape, [1, 4], 'a row that is half names is a header');
});

test('NaN or Inf in data is refused with the sample index', () => {
  const dir = tmpDir();
  const x = new Float32Array(12).fill(0.5);
  x[7] = NaN;
  fs.writeFileSync(path.join(dir, 'nan.npy'), writeNpy([3, 4], x));
  expectUserError(
    () => loadDataset(path.join(dir, 'nan.npy'), null, [4]),
    'DATA_NONFINITE',
    /sample 1 holds NaN at position 3/,
  );
  x[7] = Infinity;
  fs.writeFileSync(path.join(dir, 'inf.npy'), writeNpy([3, 4], x));
  expectUserError(() => loadDataset(path.join(dir, 'inf.npy'), null, [4]), 'DATA_NONFINITE', /Infinity/);
});

test('split: disjoint, sized, reproducible by seed', () => {
  const a = splitIndices(100, 30, 20, 7);
  const b = splitIndices(100, 30, 20, 7);
  const c = splitIndices(100, 30, 20, 8);
  assert.equal(a.calib.length, 30);
  assert.equal(a.heldout.length, 20);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.calib, c.calib);
  const seen = new Set([...a.calib, ...a.heldout]);
  assert.equal(seen.size, 50);
  expectUserError(() => splitIndices(10, 8, 5, 1), 'OPTION_INVALID', /exceeds the 10 samples/);
});

test("NCHW models: NCHW and NHWC arrays both land channels last; flat rows in the model's order; other shapes are refused; per-channel normalisation", () => {
  const dir = tmpDir();
  // Two samples of a [C=2, H=2, W=3] (NCHW) model; value = 100 c + 10 h + w (+ 1000 per sample).
  const nchw = new Float32Array(2 * 12);
  for (let s = 0; s < 2; s++)
    for (let c = 0; c < 2; c++)
      for (let h = 0; h < 2; h++)
        for (let w = 0; w < 3; w++) nchw[s * 12 + c * 6 + h * 3 + w] = 1000 * s + 100 * c + 10 * h + w;
  const nhwc = new Float32Array(24);
  for (let s = 0; s < 2; s++)
    for (let c = 0; c < 2; c++)
      for (let h = 0; h < 2; h++)
        for (let w = 0; w < 3; w++) nhwc[s * 12 + (h * 3 + w) * 2 + c] = nchw[s * 12 + c * 6 + h * 3 + w];
  const layout = { name: 'NCHW', modelShape: [2, 2, 3], perm: [1, 2, 0] };
  const file = (name: string, shape: number[], data: Float32Array) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, writeNpy(shape, data));
    return f;
  };
  const a = loadDataset(file('nchw.npy', [2, 2, 2, 3], nchw), null, [2, 3, 2], { layout });
  const b = loadDataset(file('nhwc.npy', [2, 2, 3, 2], nhwc), null, [2, 3, 2], { layout });
  const flat = loadDataset(file('flat.npy', [2, 12], nchw), null, [2, 3, 2], { layout });
  assert.deepEqual(Array.from(a.x), Array.from(nhwc));
  assert.deepEqual(Array.from(b.x), Array.from(nhwc));
  assert.deepEqual(Array.from(flat.x), Array.from(nhwc), "flat rows are the model's (NCHW) order");
  assert.ok(a.notes.some((n) => /NCHW samples converted to channels last/.test(n)));
  expectUserError(
    () => loadDataset(file('odd.npy', [2, 3, 2, 2], nchw), null, [2, 3, 2], { layout }),
    'DATA_SHAPE',
    /neither layout.*\[N, 2, 2, 3\] \(NCHW\) or \[N, 2, 3, 2\] \(channels last\)/,
  );
  // (x / 10 - mean[c]) / std[c], c the last (channel) axis.
  const n = loadDataset(file('n.npy', [2, 2, 3, 2], nhwc), null, [2, 3, 2], {
    layout,
    scale: 10,
    normalize: { mean: [1, 2], std: [2, 4] },
  });
  for (let i = 0; i < 24; i++) assert.ok(Math.abs(n.x[i] - (nhwc[i] / 10 - [1, 2][i % 2]) / [2, 4][i % 2]) < 1e-5);
  expectUserError(
    () => loadDataset(file('m.npy', [2, 2, 3, 2], nhwc), null, [2, 3, 2], { normalize: { mean: [1, 2, 3], std: [1] } }),
    'OPTION_INVALID',
    /3 values but the model's input has 2 channels/,
  );
  expectUserError(
    () => loadDataset(file('z.npy', [2, 2, 3, 2], nhwc), null, [2, 3, 2], { normalize: { mean: [0], std: [0] } }),
    'OPTION_INVALID',
    /must be positive/,
  );
});

test('a data file too large to read is refused before reading, with its size and the limit', () => {
  // Sparse: 3 GB of nothing on disk, beyond the 2 GB Node reads into one buffer.
  const f = path.join(tmpDir(), 'huge.npy');
  fs.writeFileSync(f, writeNpy([2, 2], new Float32Array(4)));
  fs.truncateSync(f, 3 * 2 ** 30);
  expectUserError(
    () => readArray(f),
    'DATA_UNREADABLE',
    /huge\.npy is 3\.0 GB; he-approx reads data files of up to 2\.0 GB/,
  );
  expectUserError(() => loadDataset(f, null, [2]), 'DATA_UNREADABLE', /3\.0 GB/);
});
