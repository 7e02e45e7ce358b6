/**
 * Minimax (best uniform) polynomial approximation by the Remez exchange algorithm, in the
 * Chebyshev basis on [a, b]. Method: E. Ya. Remez (1934); implementation after Pachon & Trefethen,
 * "Barycentric-Remez algorithms for best polynomial approximation in the chebfun system"
 * (BIT 2009): multiple exchange of a reference of n+2 alternating error extrema, found on a dense
 * grid (which includes the function's breakpoints) and refined by golden-section search.
 */
import { Interval, chebvalUnit } from './chebyshev';

export interface MinimaxResult {
  coeffs: Float64Array;
  /** max |f - p| over [a, b], measured on the final dense grid after refinement. */
  maxError: number;
  /** Levelled error |E| of the last reference system. */
  levelledError: number;
  iterations: number;
  converged: boolean;
}

function solve(M: Float64Array, rhs: Float64Array, n: number): Float64Array {
  // Gaussian elimination with partial pivoting on an n x n row-major system.
  const A = Float64Array.from(M);
  const b = Float64Array.from(rhs);
  for (let k = 0; k < n; k++) {
    let p = k;
    for (let i = k + 1; i < n; i++) if (Math.abs(A[i * n + k]) > Math.abs(A[p * n + k])) p = i;
    if (p !== k) {
      for (let j = 0; j < n; j++) {
        const t = A[k * n + j];
        A[k * n + j] = A[p * n + j];
        A[p * n + j] = t;
      }
      const t = b[k];
      b[k] = b[p];
      b[p] = t;
    }
    const piv = A[k * n + k];
    if (piv === 0) continue;
    for (let i = k + 1; i < n; i++) {
      const f = A[i * n + k] / piv;
      if (f === 0) continue;
      for (let j = k; j < n; j++) A[i * n + j] -= f * A[k * n + j];
      b[i] -= f * b[k];
    }
  }
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i];
    for (let j = i + 1; j < n; j++) s -= A[i * n + j] * x[j];
    x[i] = A[i * n + i] === 0 ? 0 : s / A[i * n + i];
  }
  return x;
}

export function remez(
  f: (x: number) => number,
  deg: number,
  iv: Interval,
  opts: { breakpoints?: number[]; maxIter?: number; tol?: number } = {},
): MinimaxResult {
  const n = deg;
  const g = (t: number) => f(((iv.b - iv.a) * t + iv.a + iv.b) / 2);
  const maxIter = opts.maxIter ?? 60;
  const tol = opts.tol ?? 1e-9;
  const grid = remezGrid(n, iv, opts.breakpoints ?? []);
  const fg = grid.map(g);
  // Initial reference: Chebyshev extrema of T_{n+1}, bent slightly off-centre. A symmetric
  // reference gives a zero levelled error for even functions (|x|, GELU - x/2) and stalls.
  let ref = new Float64Array(n + 2);
  for (let i = 0; i < n + 2; i++) {
    const t = -Math.cos((Math.PI * i) / (n + 1));
    ref[i] = t + 0.01 * (1 - t * t);
  }
  let coeffs = new Float64Array(n + 1);
  let E = 0;
  let maxErr = Infinity;
  let it = 0;
  let converged = false;
  for (; it < maxIter; it++) {
    const N = n + 2;
    const sol = levelledSolve(ref, n, g);
    coeffs = sol.slice(0, n + 1);
    E = sol[n + 1];
    const ext = localExtrema(grid, fg, coeffs, g);
    maxErr = Math.max(...ext.map((x) => Math.abs(x.e)));
    // Reduce to n+2 alternating points (chebfun's rule: drop the smallest, with a neighbour if interior).
    while (ext.length > N) {
      let k = 0;
      for (let i = 1; i < ext.length; i++) if (Math.abs(ext[i].e) < Math.abs(ext[k].e)) k = i;
      if (k === 0 || k === ext.length - 1) ext.splice(k, 1);
      else if (Math.abs(ext[k - 1].e) < Math.abs(ext[k + 1].e)) ext.splice(k - 1, 2);
      else ext.splice(k, 2);
    }
    if (ext.length < N) break; // Degenerate: the error already equioscillates on fewer points.
    const minErr = Math.min(...ext.map((x) => Math.abs(x.e)));
    ref = Float64Array.from(ext.map((x) => x.t));
    if ((maxErr - minErr) / maxErr < tol) {
      converged = true;
      it++;
      break;
    }
  }
  return { coeffs, maxError: maxErr, levelledError: Math.abs(E), iterations: it, converged };
}

/** Dense grid on [-1, 1]: Chebyshev-clustered and uniform points plus the breakpoints, sorted, without repeats. */
function remezGrid(n: number, iv: Interval, breakpoints: number[]): Float64Array {
  const G = Math.max(4000, 200 * (n + 2));
  const pts: number[] = [];
  for (let i = 0; i <= G; i++) {
    pts.push(-Math.cos((Math.PI * i) / G));
    pts.push(-1 + (2 * i) / G);
  }
  for (const bp of breakpoints) {
    const t = (2 * bp - iv.a - iv.b) / (iv.b - iv.a);
    if (t > -1 && t < 1) pts.push(t);
  }
  pts.sort((x, y) => x - y);
  return Float64Array.from(pts.filter((v, i) => i === 0 || v !== pts[i - 1]));
}

/**
 * The Remez step's linear system on the reference points: sum_k c_k T_k(t_i) + (-1)^i E = g(t_i),
 * solved for the n + 1 Chebyshev coefficients and the levelled error E (the last entry).
 */
function levelledSolve(ref: Float64Array, n: number, g: (t: number) => number): Float64Array {
  const N = n + 2;
  const M = new Float64Array(N * N);
  const rhs = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const t = ref[i];
    let tp = 1;
    let tc = t;
    M[i * N] = 1;
    if (n >= 1) M[i * N + 1] = t;
    for (let k = 2; k <= n; k++) {
      const tn = 2 * t * tc - tp;
      M[i * N + k] = tn;
      tp = tc;
      tc = tn;
    }
    M[i * N + n + 1] = i % 2 === 0 ? 1 : -1;
    rhs[i] = g(t);
  }
  return solve(M, rhs, N);
}

/** The error's local extrema on the grid: one per run of equal error sign, refined by golden-section search. */
function localExtrema(
  grid: Float64Array,
  fg: Float64Array,
  coeffs: Float64Array,
  g: (t: number) => number,
): { t: number; e: number }[] {
  const err = (t: number) => g(t) - chebvalUnit(t, coeffs);
  const ext: { t: number; e: number }[] = [];
  let runStart = 0;
  const flush = (lo: number, hi: number) => {
    let best = lo;
    for (let i = lo; i <= hi; i++)
      if (Math.abs(fg[i] - chebvalUnit(grid[i], coeffs)) > Math.abs(fg[best] - chebvalUnit(grid[best], coeffs)))
        best = i;
    const s = Math.sign(fg[best] - chebvalUnit(grid[best], coeffs)) || 1;
    let l = grid[Math.max(best - 1, 0)];
    let r = grid[Math.min(best + 1, grid.length - 1)];
    const phi = (Math.sqrt(5) - 1) / 2;
    let x1 = r - phi * (r - l);
    let x2 = l + phi * (r - l);
    let f1 = s * err(x1);
    let f2 = s * err(x2);
    for (let k = 0; k < 40 && r - l > 1e-15; k++) {
      if (f1 < f2) {
        l = x1;
        x1 = x2;
        f1 = f2;
        x2 = l + phi * (r - l);
        f2 = s * err(x2);
      } else {
        r = x2;
        x2 = x1;
        f2 = f1;
        x1 = r - phi * (r - l);
        f1 = s * err(x1);
      }
    }
    const cand = [grid[best], x1, x2];
    let bt = cand[0];
    let be = s * err(bt);
    for (const c of cand) {
      const v = s * err(c);
      if (v > be) {
        be = v;
        bt = c;
      }
    }
    ext.push({ t: bt, e: s * be });
  };
  let prevSign = Math.sign(fg[0] - chebvalUnit(grid[0], coeffs));
  for (let i = 1; i < grid.length; i++) {
    const sgn = Math.sign(fg[i] - chebvalUnit(grid[i], coeffs));
    if (sgn !== 0 && prevSign !== 0 && sgn !== prevSign) {
      flush(runStart, i - 1);
      runStart = i;
    }
    if (sgn !== 0) prevSign = sgn;
  }
  flush(runStart, grid.length - 1);
  return ext;
}
