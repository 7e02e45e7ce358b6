/** Numerics against numpy reference values (test/fixtures/gen_numpy.py) and known constants. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { cheb2poly, chebInterpolate, chebderUnit, chebvalUnit, chebval } from '../src/core/numerics/chebyshev';
import { chebfitWeightedAll } from '../src/core/numerics/lstsq';
import { remez } from '../src/core/numerics/remez';
import { activationFn, erf } from '../src/core/numerics/activations';
import { Rng } from '../src/core/rng';
import { PIECES, chebPieces, chebvalPieces, chebvalStrided } from '../src/core/numerics/chebyshev';
import { polyValues, usesPieces } from '../src/core/numerics/polynomial';
import { twoCoreJobs } from '../src/core/numerics/polyPool';
import * as os from 'os';

const ref = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', 'test', 'fixtures', 'numpy-chebyshev.json'), 'utf8'),
);

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++)
    assert.ok(Math.abs(a[i] - b[i]) <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

test('chebval (Clenshaw) matches numpy.polynomial.chebyshev.chebval', () => {
  const { coeffs, x, y } = ref.chebval;
  close(
    x.map((t: number) => chebvalUnit(t, coeffs)),
    y,
    1e-13,
    'chebval',
  );
});

test('chebval on [a, b] is chebval on [-1, 1] after the affine map', () => {
  const c = [0.3, -1.2, 0.7, 0.05];
  for (const x of [-3, -1, 0.5, 2])
    assert.ok(Math.abs(chebval(x, c, { a: -3, b: 2 }) - chebvalUnit((2 * x + 1) / 5, c)) < 1e-14);
});

test('Chebyshev interpolation matches numpy chebinterpolate', () => {
  for (const r of ref.interpolate) {
    const f = r.fn === 'tanh' ? Math.tanh : (x: number) => Math.max(x, 0);
    close(chebInterpolate(f, r.deg, { a: -1, b: 1 }), r.coeffs, 1e-12, `${r.fn} degree ${r.deg}`);
  }
});

test('weighted least squares matches numpy chebfit with weights', () => {
  const { x, y, w2, fits } = ref.wlsq;
  const all = chebfitWeightedAll(x, y, w2, 15, { a: -1, b: 1 });
  for (const d of Object.keys(fits)) close(all.coeffs[Number(d)], fits[d], 1e-9, `degree ${d}`);
});

test('cheb2poly and chebder match numpy', () => {
  close(cheb2poly(ref.cheb2poly.coeffs), ref.cheb2poly.poly, 1e-12, 'cheb2poly');
  close(chebderUnit(ref.chebder.coeffs), ref.chebder.der, 1e-12, 'chebder');
});

test('weighted fit invariants: zero weights ignore points, weight scale is irrelevant, polynomials are exact', () => {
  const rng = new Rng(3);
  const n = 200;
  const x = Array.from({ length: n }, () => rng.next() * 4 - 2);
  const y = x.map((v) => Math.tanh(v) + (rng.next() - 0.5) * 0.1);
  const half = x.map((_, i) => (i % 2 === 0 ? 1 : 0));
  const xe = x.filter((_, i) => i % 2 === 0);
  const ye = y.filter((_, i) => i % 2 === 0);
  const iv = { a: -2, b: 2 };
  // numpy's invariant: zero weight on half the points recovers the fit of the other half.
  close(
    chebfitWeightedAll(x, y, half, 7, iv).coeffs[7],
    chebfitWeightedAll(
      xe,
      ye,
      xe.map(() => 1),
      7,
      iv,
    ).coeffs[7],
    1e-10,
    'zero-weight',
  );
  const w = x.map(() => 0.5 + rng.next());
  close(
    chebfitWeightedAll(x, y, w, 9, iv).coeffs[9],
    chebfitWeightedAll(
      x,
      y,
      w.map((v) => v * 1000),
      9,
      iv,
    ).coeffs[9],
    1e-10,
    'scale',
  );
  // A degree-5 polynomial is recovered exactly by any fit of degree >= 5.
  const p = [0.5, -1, 0.25, 0.3, -0.2, 0.1];
  const yp = x.map((v) => chebval(v, p, iv));
  close(chebfitWeightedAll(x, yp, w, 8, iv).coeffs[8], [...p, 0, 0, 0], 1e-10, 'exact');
  // Residual RMS decreases with the degree (nested least squares).
  const rms = chebfitWeightedAll(x, y, w, 12, iv).rms;
  for (let d = 1; d < rms.length; d++) assert.ok(rms[d] <= rms[d - 1] + 1e-15, `rms not monotone at ${d}`);
});

test('Remez reproduces the minimax error of |x| on [-1, 1] (Bernstein; values in field notes)', () => {
  const known: [number, number][] = [
    [2, 0.125],
    [4, 0.0676],
    [8, 0.0347],
    [16, 0.0175],
    [32, 0.00875],
  ];
  for (const [n, e] of known) {
    const r = remez(Math.abs, n, { a: -1, b: 1 }, { breakpoints: [0] });
    assert.ok(Math.abs(r.maxError - e) / e < 0.01, `degree ${n}: ${r.maxError} vs ${e}`);
    // Equioscillation: the levelled error equals the max error.
    assert.ok(Math.abs(r.levelledError - r.maxError) / r.maxError < 1e-5, `degree ${n} not levelled`);
  }
  // n * E_n(|x|) tends to Bernstein's constant 0.2801694990...
  const r64 = remez(Math.abs, 62, { a: -1, b: 1 }, { breakpoints: [0] });
  assert.ok(Math.abs(62 * r64.maxError - 0.28017) < 0.003, `62 E_62 = ${62 * r64.maxError}`);
});

test('Chebyshev interpolation is within a small factor of minimax for ReLU, and minimax beats it', () => {
  const relu = activationFn({ kind: 'relu' });
  for (const n of [4, 8, 16]) {
    const iv = { a: -1, b: 1 };
    const mm = remez(relu, n, iv, { breakpoints: [0] }).maxError;
    const ci = chebInterpolate(relu, n, iv);
    let e = 0;
    for (let i = 0; i <= 4000; i++) {
      const x = -1 + i / 2000;
      e = Math.max(e, Math.abs(chebval(x, ci, iv) - relu(x)));
    }
    assert.ok(e >= mm * 0.999 && e <= 3 * mm, `degree ${n}: interpolation ${e} vs minimax ${mm}`);
  }
});

test('erf matches reference values (Abramowitz & Stegun table 7.1)', () => {
  const table: [number, number][] = [
    [0, 0],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3.5, 0.9999992569016276],
  ];
  for (const [x, v] of table) {
    assert.ok(Math.abs(erf(x) - v) < 1e-12, `erf(${x})`);
    assert.ok(Math.abs(erf(-x) + v) < 1e-12, `erf(-${x})`);
  }
});

test('polynomial activations on two cores give the values of one core, bit for bit', async () => {
  const rng = new Rng(7);
  const C = 12;
  const rows = 5003; // not a multiple of 8 or 16: the chunks and the tails must still line up
  const x = Float32Array.from({ length: rows * C }, () => 8 * rng.next() - 4);
  x[17] = NaN;
  x[C * 4000 + 3] = Infinity;
  x[C * 4999] = 1e30;
  const before = twoCoreJobs();
  // What polyValues runs on one thread for one series (xs.length / stride points of it): its pieces or the whole series.
  const oneThread = (
    xs: Float32Array,
    out: Float32Array,
    c: number[],
    iv: { a: number; b: number },
    start: number,
    stride: number,
  ) => {
    if (usesPieces(c.length - 1, xs.length / stride)) {
      const pc = chebPieces(c);
      chebvalPieces(xs, out, c, iv, pc.table, pc.rowLength, start, stride);
    } else chebvalStrided(xs, out, c, iv, start, stride);
  };
  // The helper thread starts in the background: until it runs, this thread takes every chunk.
  for (let round = 0; round < 50; round++) {
    for (const d of [7, 11, 31]) {
      const coeffs = Array.from({ length: C }, (_, c) =>
        Array.from({ length: d + 1 }, (_, k) => Math.cos(3 * k + c + round) / (k + 1)),
      );
      const intervals = coeffs.map((_, c) => ({ a: -3 - 0.1 * c, b: 3 + 0.2 * c }));
      const one = new Float32Array(x.length);
      for (let c = 0; c < C; c++) oneThread(x, one, coeffs[c], intervals[c], c, C);
      const two = polyValues(x, C, { coeffs: coeffs[0], a: -3, b: 3, channels: { intervals, coeffs } });
      for (let i = 0; i < x.length; i++)
        assert.ok(Object.is(two[i], one[i]), `degree ${d}, value ${i}: ${two[i]} vs ${one[i]}`);
      // One series for the layer, stride 1: at degree 31 enough points for the piecewise evaluator.
      const single = new Float32Array(x.length);
      oneThread(x, single, coeffs[1], intervals[1], 0, 1);
      const twoSingle = polyValues(x, C, { coeffs: coeffs[1], a: intervals[1].a, b: intervals[1].b });
      for (let i = 0; i < x.length; i++)
        assert.ok(Object.is(twoSingle[i], single[i]), `degree ${d}, one series, value ${i}`);
      if (d >= 11) {
        // Per channel with enough points per channel for the pieces, whose tables the pool pads to one row length.
        const C3 = 3;
        const x3 = Float32Array.from({ length: 33001 * C3 }, () => 8 * rng.next() - 4);
        assert.ok(usesPieces(d, 33001));
        const c3 = coeffs.slice(0, C3).map((c, k) => c.map((v, j) => v * (j > 8 + 4 * k ? 1e-3 : 1)));
        const ivs3 = intervals.slice(0, C3);
        const one3 = new Float32Array(x3.length);
        for (let c = 0; c < C3; c++) oneThread(x3, one3, c3[c], ivs3[c], c, C3);
        const two3 = polyValues(x3, C3, { coeffs: c3[0], a: -3, b: 3, channels: { intervals: ivs3, coeffs: c3 } });
        for (let i = 0; i < x3.length; i++)
          assert.ok(Object.is(two3[i], one3[i]), `degree ${d}, pieces per channel, value ${i}`);
      }
    }
    if (round >= 3 && twoCoreJobs() > before) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (os.cpus().length >= 2 && process.env.HE_APPROX_THREADS !== '1')
    assert.ok(twoCoreJobs() > before, 'the helper thread took part');
});

test('piecewise re-expansion: the same polynomial to 2^-44 of sum |c| inside the interval, the whole series outside', () => {
  const rng = new Rng(11);
  for (const d of [11, 15, 24, 31, 63]) {
    const c = Array.from({ length: d + 1 }, (_, k) => (2 * rng.next() - 1) / (k + 1));
    const iv = { a: -2.5, b: 4 };
    const pc = chebPieces(c);
    const degrees = Array.from(pc.degrees);
    assert.equal(degrees.length, PIECES);
    assert.equal(pc.rowLength, 1 + Math.max(...degrees));
    assert.ok(
      Math.max(...degrees) < Math.max(8, d / 2),
      `degree ${d}: pieces of degree at most ${Math.max(...degrees)}`,
    );
    // Points inside, on the pieces' edges and the interval's ends, outside, and not finite.
    const pts = [
      iv.a,
      iv.b,
      ...Array.from({ length: PIECES + 1 }, (_, j) => iv.a + (j * (iv.b - iv.a)) / PIECES),
      ...Array.from({ length: 4000 }, () => iv.a - 1 + (iv.b - iv.a + 2) * rng.next()),
      NaN,
      Infinity,
      -Infinity,
    ];
    const x = Float64Array.from(pts);
    const got = new Float64Array(x.length);
    chebvalPieces(x, got, c, iv, pc.table, pc.rowLength);
    const norm = c.reduce((s, v) => s + Math.abs(v), 0);
    for (let i = 0; i < x.length; i++) {
      const want = chebval(x[i], c, iv);
      if (!Number.isFinite(want)) {
        assert.ok(
          Object.is(got[i], want) || (Number.isNaN(got[i]) && Number.isNaN(want)),
          `degree ${d} at ${x[i]}: ${got[i]} vs ${want}`,
        );
        continue;
      }
      const inside = x[i] >= iv.a && x[i] <= iv.b;
      // Outside the interval the whole series runs: equal up to rounding of values that grow fast there.
      const tol = inside ? 2 ** -44 * norm : 1e-12 * Math.max(norm, Math.abs(want));
      assert.ok(Math.abs(got[i] - want) <= tol, `degree ${d} at ${x[i]}: ${got[i]} vs ${want}`);
    }
  }
});
