/**
 * Weighted least squares in the Chebyshev basis, solved by Householder QR of the weighted
 * Vandermonde matrix (Golub & Van Loan, "Matrix Computations", 4th ed., sec. 5.3: never the
 * normal equations, whose condition number is the square of the matrix's).
 *
 * Householder QR processes columns left to right, so the factorisation of the first k+1 columns
 * is a prefix of the full one: a single QR of the degree-`maxDeg` matrix yields the weighted
 * least-squares fit of EVERY degree 0..maxDeg (R[:k+1,:k+1] c = (Q^T y)[:k+1]).
 */
import { Interval, toUnit } from './chebyshev';

export interface WeightedFits {
  /** coeffs[d] is the degree-d fit (length d+1), increasing degree, unit variable. */
  coeffs: Float64Array[];
  /** Weighted RMS residual of each degree's fit (weights normalised to sum 1). */
  rms: Float64Array;
  /** Estimated 2-norm condition number of R for the largest degree. */
  condition: number;
}

/**
 * Fits y ~ sum c_k T_k(t(x)) minimising sum w_i (y_i - p(x_i))^2, for all degrees up to maxDeg.
 * Points with zero weight do not influence the fit (numpy's weighted-fit invariant).
 */
export function chebfitWeightedAll(
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  ws: ArrayLike<number>,
  maxDeg: number,
  iv: Interval,
): WeightedFits {
  const m0 = xs.length;
  let wsum = 0;
  for (let i = 0; i < m0; i++) {
    if (!(ws[i] >= 0) || !Number.isFinite(ws[i])) throw new Error(`chebfitWeightedAll: weight ${i} is ${ws[i]}`);
    wsum += ws[i];
  }
  // Keep only rows with positive weight; they alone define the problem.
  const rows: number[] = [];
  for (let i = 0; i < m0; i++) if (ws[i] > 0) rows.push(i);
  const m = rows.length;
  const n = maxDeg + 1;
  if (m < n) throw new Error(`chebfitWeightedAll: ${m} weighted points cannot determine degree ${maxDeg}`);
  // Column-major weighted Vandermonde A (m x n) and weighted rhs b.
  const A = new Float64Array(m * n);
  const b = new Float64Array(m);
  for (let r = 0; r < m; r++) {
    const i = rows[r];
    const sw = Math.sqrt(ws[i] / wsum);
    const t = toUnit(xs[i], iv);
    let tPrev = 1;
    let tCur = t;
    A[r] = sw;
    if (n > 1) A[m + r] = sw * t;
    for (let k = 2; k < n; k++) {
      const tNext = 2 * t * tCur - tPrev;
      A[k * m + r] = sw * tNext;
      tPrev = tCur;
      tCur = tNext;
    }
    b[r] = sw * ys[i];
  }
  const rdiag = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const col = k * m;
    let norm = 0;
    for (let r = k; r < m; r++) norm += A[col + r] * A[col + r];
    norm = Math.sqrt(norm);
    if (norm === 0) {
      rdiag[k] = 0;
      continue;
    }
    const alpha = A[col + k] > 0 ? -norm : norm;
    // v = x - alpha e1, stored in place of column k below the diagonal.
    A[col + k] -= alpha;
    let vnorm2 = 0;
    for (let r = k; r < m; r++) vnorm2 += A[col + r] * A[col + r];
    rdiag[k] = alpha;
    if (vnorm2 === 0) continue;
    const apply = (vecOff: number, arr: Float64Array) => {
      let dot = 0;
      for (let r = k; r < m; r++) dot += A[col + r] * arr[vecOff + r];
      const s = (2 * dot) / vnorm2;
      for (let r = k; r < m; r++) arr[vecOff + r] -= s * A[col + r];
    };
    for (let j = k + 1; j < n; j++) apply(j * m, A);
    apply(0, b);
  }
  // b now holds Q^T y; the tail sum of squares gives each degree's residual.
  const rms = new Float64Array(n);
  let tail = 0;
  for (let r = n; r < m; r++) tail += b[r] * b[r];
  for (let d = n - 1; d >= 0; d--) {
    rms[d] = Math.sqrt(tail);
    tail += b[d] * b[d];
  }
  const coeffs: Float64Array[] = [];
  for (let d = 0; d < n; d++) {
    const c = new Float64Array(d + 1);
    for (let i = d; i >= 0; i--) {
      let s = b[i];
      for (let j = i + 1; j <= d; j++) s -= A[j * m + i] * c[j];
      c[i] = rdiag[i] === 0 ? 0 : s / rdiag[i];
    }
    coeffs.push(c);
  }
  let dmax = 0;
  let dmin = Infinity;
  for (let k = 0; k < n; k++) {
    dmax = Math.max(dmax, Math.abs(rdiag[k]));
    dmin = Math.min(dmin, Math.abs(rdiag[k]));
  }
  return { coeffs, rms, condition: dmin === 0 ? Infinity : dmax / dmin };
}
