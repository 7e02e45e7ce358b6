/**
 * Polynomial evaluation on the CPU, as the analysis does it for every approximated activation on
 * every held-out pass (execute.ts -> polyValues -> chebvalStrided): values per second of
 *   one-at-a-time  Clenshaw's recurrence for one point after another (the baseline),
 *   interleaved    chebvalStrided, eight points' recurrences interleaved (what he-approx runs),
 *   pieces         chebvalPieces, each channel's series re-expanded on 256 pieces of its interval
 *                  and run by Horner's rule per piece
 *                  (what he-approx runs from degree 11 on; tables built once, as polyValues caches
 *                  them for the batches after the first: their build time is printed apart),
 *   tfjs           the same recurrence as TensorFlow.js operations on the current backend,
 *   two cores      polyValues: interleaved or pieces, chunks on a helper thread (polyPool.ts),
 * on 16 channels x 65,536 positions of channels-last data, per-channel series, at degrees 7, 11, 15,
 * 31 and 63, with the ratios against the baseline measured in the same run (best of 5 repeats).
 *
 *   node dist/bench/polyEval.js
 */
import { chebPieces, chebvalPieces, chebvalStrided, chebvalUnit, unitMap } from '../src/core/numerics/chebyshev';
import { initBackend, tf } from '../src/core/model/backend';
import { polyValues, usesPieces } from '../src/core/numerics/polynomial';

const C = 16;
const N = C * 65536;

function best(f: () => void): number {
  f();
  let b = Infinity;
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    f();
    b = Math.min(b, Number(process.hrtime.bigint() - t) / 1e9);
  }
  return b;
}

async function main(): Promise<void> {
  const backend = await initBackend();
  const x = new Float32Array(N);
  for (let i = 0; i < N; i++) x[i] = 3 * Math.sin(i * 0.37);
  const iv = { a: -4, b: 4 };
  const { scale, shift } = unitMap(iv);
  console.log(
    `polynomial evaluation, ${C} channels x ${N / C} positions (channels last), per-channel Chebyshev series on [-4, 4]; backend ${backend}`,
  );
  console.log(
    'degree  one-at-a-time M/s  interleaved M/s  pieces M/s  tfjs M/s  two cores M/s  interleaved / one-at-a-time  pieces / interleaved  interleaved / tfjs  two cores / one core  tables built (ms)',
  );
  // The helper thread starts with the first large evaluation, once this thread yields to the event
  // loop (the analysis yields between batches); the timed loops below never yield.
  const warm = Float64Array.from({ length: 8 }, () => 1);
  polyValues(x, C, {
    coeffs: warm,
    a: iv.a,
    b: iv.b,
    channels: { intervals: new Array(C).fill(iv), coeffs: new Array(C).fill(warm) },
  });
  await new Promise((r) => setTimeout(r, 500));
  for (const d of [7, 11, 15, 31, 63]) {
    const coeffs = Array.from({ length: C }, (_, c) =>
      Float64Array.from({ length: d + 1 }, (_, k) => Math.cos(k + c) / (k + 1)),
    );
    const a = new Float32Array(N);
    const b = new Float32Array(N);
    const one = best(() => {
      for (let i = 0; i < N; i++) a[i] = chebvalUnit(x[i] * scale + shift, coeffs[i % C]);
    });
    const inter = best(() => {
      for (let c = 0; c < C; c++) chebvalStrided(x, b, coeffs[c], iv, c, C);
    });
    const p = new Float32Array(N);
    // Tables built once, as polyValues caches them for the batches that follow; their build time apart.
    const t0 = process.hrtime.bigint();
    const tables = coeffs.map((cs) => chebPieces(cs));
    const build = Number(process.hrtime.bigint() - t0) / 1e9;
    const pieces = best(() => {
      for (let c = 0; c < C; c++) chebvalPieces(x, p, coeffs[c], iv, tables[c].table, tables[c].rowLength, c, C);
    });
    for (let i = 0; i < N; i++)
      if (Math.abs(p[i] - b[i]) > 1e-5) throw new Error(`pieces and interleaved disagree at ${i}: ${p[i]} vs ${b[i]}`);
    // What polyValues runs on one core.
    const piecewise = usesPieces(d, N / C);
    const mine = piecewise ? p : b;
    const oneCore = piecewise ? pieces : inter;
    const c2 = new Float32Array(N);
    const poly = {
      coeffs: coeffs[0],
      a: iv.a,
      b: iv.b,
      channels: { intervals: coeffs.map(() => iv), coeffs: coeffs.map((cs) => Array.from(cs)) },
    };
    const two = best(() => polyValues(x, C, poly, c2));
    if (c2.some((v, i) => !Object.is(v, mine[i]))) throw new Error('two cores and one core disagree');
    let diff = 0;
    for (let i = 0; i < N; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
    if (diff > 1e-4) throw new Error(`interleaved and one-at-a-time disagree by ${diff}`);
    // Clenshaw as tensor operations: the per-channel coefficients broadcast along the last axis.
    const xt = tf.tensor2d(x, [N / C, C]);
    const ck = Array.from({ length: d + 1 }, (_, k) => tf.tensor1d(coeffs.map((cs) => cs[k])));
    const tfjs = best(() =>
      tf.tidy(() => {
        const t = tf.add(tf.mul(xt, scale), shift);
        const t2 = tf.mul(t, 2);
        let b1: tf.Tensor = tf.zerosLike(t);
        let b2: tf.Tensor = tf.zerosLike(t);
        for (let k = d; k >= 1; k--) {
          const b0 = tf.add(tf.sub(tf.mul(t2, b1), b2), ck[k]);
          b2 = b1;
          b1 = b0;
        }
        tf.add(tf.sub(tf.mul(t, b1), b2), ck[0]).dataSync();
      }),
    );
    xt.dispose();
    ck.forEach((t) => t.dispose());
    const rate = (s: number) => (N / s / 1e6).toFixed(0);
    console.log(
      `${String(d).padStart(6)}  ${rate(one).padStart(17)}  ${rate(inter).padStart(15)}  ${rate(pieces).padStart(10)}  ${rate(tfjs).padStart(8)}  ${rate(two).padStart(13)}  ${(one / inter).toFixed(2).padStart(27)}x  ${(inter / pieces).toFixed(2).padStart(19)}x  ${(tfjs / inter).toFixed(2).padStart(17)}x  ${(oneCore / two).toFixed(2).padStart(19)}x  ${(1e3 * build).toFixed(1).padStart(16)}`,
    );
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
