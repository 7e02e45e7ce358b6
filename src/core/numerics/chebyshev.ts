/**
 * Chebyshev-basis numerics on an interval [a, b], after numpy.polynomial.chebyshev:
 * coefficients are in increasing degree, p(x) = sum_k c[k] T_k(t) with t = (2x - a - b) / (b - a).
 * One helper (`toUnit`) owns the affine map so that no caller re-derives it.
 *
 * References: L. N. Trefethen, "Approximation Theory and Approximation Practice" (SIAM 2013),
 * ch. 3-4 (Chebyshev interpolation), and Clenshaw (1955) for stable evaluation.
 */

export interface Interval {
  a: number;
  b: number;
}

/** Affine map from [a, b] to [-1, 1]. */
export function toUnit(x: number, iv: Interval): number {
  return (2 * x - iv.a - iv.b) / (iv.b - iv.a);
}

/** The same map as t = scale * x + shift, for evaluators that apply it as one multiply-add. */
export function unitMap(iv: Interval): { scale: number; shift: number } {
  return { scale: 2 / (iv.b - iv.a), shift: -(iv.a + iv.b) / (iv.b - iv.a) };
}

/** Evaluates sum c[k] T_k(t) for t in [-1, 1] by Clenshaw's recurrence (backward-stable). */
export function chebvalUnit(t: number, c: ArrayLike<number>): number {
  const n = c.length;
  if (n === 0) return 0;
  if (n === 1) return c[0];
  let b1 = 0;
  let b2 = 0;
  const t2 = 2 * t;
  for (let k = n - 1; k >= 1; k--) {
    const b0 = c[k] + t2 * b1 - b2;
    b2 = b1;
    b1 = b0;
  }
  return c[0] + t * b1 - b2;
}

/** Evaluates the Chebyshev series at x in the interval's coordinates. */
export function chebval(x: number, c: ArrayLike<number>, iv: Interval): number {
  return chebvalUnit(toUnit(x, iv), c);
}

/** Chebyshev points of the first kind on [a, b] (numpy chebpts1 mapped), in increasing order. */
export function chebpts1(n: number, iv: Interval = { a: -1, b: 1 }): Float64Array {
  const x = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const t = -Math.cos((Math.PI * (k + 0.5)) / n);
    x[k] = ((iv.b - iv.a) * t + iv.a + iv.b) / 2;
  }
  return x;
}

/**
 * Chebyshev interpolant of degree `deg` of f on [a, b] through the deg+1 Chebyshev points of the
 * first kind (numpy chebinterpolate): c_j = (2 - [j=0]) / (n) * sum_k f(x_k) T_j(t_k).
 * This is the uniform-interval baseline (Orion; OpenFHE EvalChebyshevFunction).
 */
export function chebInterpolate(f: (x: number) => number, deg: number, iv: Interval): Float64Array {
  const n = deg + 1;
  const fx = new Float64Array(n);
  const theta = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    theta[k] = (Math.PI * (k + 0.5)) / n;
    const t = Math.cos(theta[k]);
    fx[k] = f(((iv.b - iv.a) * t + iv.a + iv.b) / 2);
  }
  const c = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let k = 0; k < n; k++) s += fx[k] * Math.cos(j * theta[k]);
    c[j] = ((j === 0 ? 1 : 2) * s) / n;
  }
  return c;
}

/** Derivative coefficients (numpy chebder) in the unit variable t. */
export function chebderUnit(c: ArrayLike<number>): Float64Array {
  const n = c.length - 1;
  if (n <= 0) return new Float64Array(1);
  const d = new Float64Array(n);
  const cc = Float64Array.from(c);
  for (let j = n; j >= 2; j--) {
    d[j - 1] = 2 * j * cc[j];
    cc[j - 2] += (j * cc[j]) / (j - 2);
  }
  if (n >= 1) d[0] = cc[1];
  return d;
}

/** Converts Chebyshev coefficients (unit variable) to monomial coefficients in t (numpy cheb2poly). */
export function cheb2poly(c: ArrayLike<number>): Float64Array {
  const n = c.length;
  const out = new Float64Array(n);
  let tPrev = new Float64Array(n); // T_{k-1}
  let tCur = new Float64Array(n); // T_k
  tPrev[0] = 1;
  if (n > 0) out[0] += c[0];
  if (n > 1) {
    tCur[1] = 1;
    out[1] += c[1];
  }
  for (let k = 2; k < n; k++) {
    const tNext = new Float64Array(n);
    for (let i = 0; i < n - 1; i++) tNext[i + 1] += 2 * tCur[i];
    for (let i = 0; i < n; i++) tNext[i] -= tPrev[i];
    for (let i = 0; i < n; i++) out[i] += c[k] * tNext[i];
    tPrev = tCur;
    tCur = tNext;
  }
  return out;
}

/**
 * Evaluates one series at xs[start], xs[start + stride], ... into the same positions of `out`
 * (may alias `xs`): one channel of a channels-last array. Eight points run through Clenshaw's
 * recurrence together: each step of one point's recurrence waits for its previous step (a
 * multiply, a subtract and an add in a chain), so one chain leaves the CPU's floating-point units
 * mostly idle; eight independent chains keep them busy (`npm run bench:poly` measures it against
 * one point at a time and against the same recurrence as TensorFlow.js operations, which pass
 * over memory once per operation; four chains were slower than eight).
 * Every point follows chebvalUnit's recurrence; the additions are grouped differently, so results
 * may differ from it in the last bit.
 */
export function chebvalStrided(
  xs: ArrayLike<number>,
  out: Float32Array | Float64Array,
  c: ArrayLike<number>,
  iv: Interval,
  start = 0,
  stride = 1,
): void {
  const { scale, shift } = unitMap(iv);
  const K = c.length - 1;
  const c0 = c[0];
  const n = xs.length;
  let i = start;
  if (K < 1) {
    for (; i < n; i += stride) out[i] = K < 0 ? 0 : c0;
    return;
  }
  const s = stride;
  for (; i + 7 * s < n; i += 8 * s) {
    // Written out in locals: V8 keeps them in registers (through arrays it ran slower than 4 points).
    const t0 = xs[i] * scale + shift;
    const t1 = xs[i + s] * scale + shift;
    const t2 = xs[i + 2 * s] * scale + shift;
    const t3 = xs[i + 3 * s] * scale + shift;
    const t4 = xs[i + 4 * s] * scale + shift;
    const t5 = xs[i + 5 * s] * scale + shift;
    const t6 = xs[i + 6 * s] * scale + shift;
    const t7 = xs[i + 7 * s] * scale + shift;
    const x0 = 2 * t0;
    const x1 = 2 * t1;
    const x2 = 2 * t2;
    const x3 = 2 * t3;
    const x4 = 2 * t4;
    const x5 = 2 * t5;
    const x6 = 2 * t6;
    const x7 = 2 * t7;
    let a0 = 0;
    let b0 = 0;
    let a1 = 0;
    let b1 = 0;
    let a2 = 0;
    let b2 = 0;
    let a3 = 0;
    let b3 = 0;
    let a4 = 0;
    let b4 = 0;
    let a5 = 0;
    let b5 = 0;
    let a6 = 0;
    let b6 = 0;
    let a7 = 0;
    let b7 = 0;
    for (let k = K; k >= 1; k--) {
      const ck = c[k];
      let u = x0 * a0 - b0 + ck;
      b0 = a0;
      a0 = u;
      u = x1 * a1 - b1 + ck;
      b1 = a1;
      a1 = u;
      u = x2 * a2 - b2 + ck;
      b2 = a2;
      a2 = u;
      u = x3 * a3 - b3 + ck;
      b3 = a3;
      a3 = u;
      u = x4 * a4 - b4 + ck;
      b4 = a4;
      a4 = u;
      u = x5 * a5 - b5 + ck;
      b5 = a5;
      a5 = u;
      u = x6 * a6 - b6 + ck;
      b6 = a6;
      a6 = u;
      u = x7 * a7 - b7 + ck;
      b7 = a7;
      a7 = u;
    }
    out[i] = t0 * a0 - b0 + c0;
    out[i + s] = t1 * a1 - b1 + c0;
    out[i + 2 * s] = t2 * a2 - b2 + c0;
    out[i + 3 * s] = t3 * a3 - b3 + c0;
    out[i + 4 * s] = t4 * a4 - b4 + c0;
    out[i + 5 * s] = t5 * a5 - b5 + c0;
    out[i + 6 * s] = t6 * a6 - b6 + c0;
    out[i + 7 * s] = t7 * a7 - b7 + c0;
  }
  for (; i < n; i += stride) out[i] = chebvalUnit(xs[i] * scale + shift, c);
}

/** Equal pieces of [-1, 1] in a piecewise re-expansion (chebPieces). */
export const PIECES = 256;

/**
 * The same polynomial re-expanded on each of PIECES equal pieces of [-1, 1], for evaluation on
 * many points: on a short piece a polynomial's Chebyshev coefficients decay fast, so each piece's
 * series is cut where the rest adds at most 2^-45 sum |c| (far below a float32 result's rounding,
 * 2^-24 of it). Degrees 15, 31 and 63 drop to about 6-7, 6-9 and 8-13 per piece. The restriction
 * of a degree-d polynomial to a piece is its interpolant at d + 1 Chebyshev points of that piece,
 * exactly (Trefethen, ATAP ch. 3-4: coefficients from values by the discrete cosine transform), as
 * Chebfun's `restrict` does. Each piece's short series is then turned into monomials of the
 * piece's own coordinate y in [-1, 1] (cheb2poly), for Horner's rule: one multiply and one add per
 * coefficient where Clenshaw's recurrence takes a multiply and two adds, and no second carried
 * value (`npm run bench:poly`). On [-1, 1] and at these degrees that conversion is harmless: the
 * monomial coefficients of T_k grow like (1 + sqrt 2)^k, and the cut-off series' high coefficients
 * are tiny, so Horner's rounding stays far below the cut (the test holds the result to 2^-44 sum |c|).
 *
 * Layout: PIECES rows of R numbers (R = 1 + the largest piece degree): a row's monomial
 * coefficients from the highest degree down, after leading zeros where its degree is lower
 * (Horner over leading zeros gives exactly zero until the first coefficient, so a longer row
 * changes no value: the two-core pool pads rows to one length). `degrees` holds each piece's degree.
 */
export function chebPieces(c: ArrayLike<number>): { table: Float64Array; rowLength: number; degrees: Int32Array } {
  const d = Math.max(0, c.length - 1);
  const n = d + 1;
  const M = PIECES;
  const cosines = new Float64Array(n * n);
  for (let k = 0; k < n; k++) for (let i = 0; i < n; i++) cosines[k * n + i] = Math.cos((Math.PI * k * (i + 0.5)) / n);
  // Chebyshev points of the first kind on [-1, 1], the same for every piece.
  const nodes = Float64Array.from({ length: n }, (_, i) => Math.cos((Math.PI * (i + 0.5)) / n));
  let norm = 0;
  for (let k = 0; k <= d; k++) norm += Math.abs(c[k]);
  const tol = 2 ** -45 * norm;
  const rows: Float64Array[] = [];
  const degrees = new Int32Array(M);
  const v = new Float64Array(n);
  const local = new Float64Array(n);
  for (let j = 0; j < M; j++) {
    const center = -1 + (2 * j + 1) / M;
    for (let i = 0; i < n; i++) v[i] = chebvalUnit(center + nodes[i] / M, c);
    for (let k = 0; k < n; k++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += v[i] * cosines[k * n + i];
      local[k] = ((k === 0 ? 1 : 2) * s) / n;
    }
    let m = d;
    for (let tail = 0; m > 0 && tail + Math.abs(local[m]) <= tol; m--) tail += Math.abs(local[m]);
    degrees[j] = m;
    rows.push(cheb2poly(local.subarray(0, m + 1)));
  }
  const R = 1 + Math.max(...degrees);
  const table = new Float64Array(M * R);
  for (let j = 0; j < M; j++) {
    const row = rows[j];
    const at = j * R + R - row.length;
    for (let k = 0; k < row.length; k++) table[at + k] = row[row.length - 1 - k];
  }
  return { table, rowLength: R, degrees };
}

/**
 * chebvalStrided for a series re-expanded by chebPieces (`table`, rows of `R`): each point runs
 * its piece's monomials by Horner's rule in the piece's coordinate, eight points together (as in
 * chebvalStrided, eight independent chains keep the floating-point units busy). Points outside
 * [a, b] (and NaN) take the whole series, as chebvalUnit evaluates it: the pieces cover only the
 * interval, and a polynomial's values outside it must stay exact.
 */
// eslint-disable-next-line max-lines-per-function -- eight Horner chains written out (ARCHITECTURE.md, "Rules")
export function chebvalPieces(
  xs: ArrayLike<number>,
  out: Float32Array | Float64Array,
  c: ArrayLike<number>,
  iv: Interval,
  table: Float64Array,
  R: number,
  start = 0,
  stride = 1,
): void {
  const { scale, shift } = unitMap(iv);
  const M = table.length / R;
  const h = M / 2;
  const n = xs.length;
  const s = stride;
  // The piece holding a point at u = (t + 1) M / 2 (clamped: points outside are redone below).
  const piece = (u: number) => (u >= 0 ? (u < M ? u | 0 : M - 1) : 0);
  let i = start;
  for (; i + 7 * s < n; i += 8 * s) {
    const t0 = xs[i] * scale + shift;
    const t1 = xs[i + s] * scale + shift;
    const t2 = xs[i + 2 * s] * scale + shift;
    const t3 = xs[i + 3 * s] * scale + shift;
    const t4 = xs[i + 4 * s] * scale + shift;
    const t5 = xs[i + 5 * s] * scale + shift;
    const t6 = xs[i + 6 * s] * scale + shift;
    const t7 = xs[i + 7 * s] * scale + shift;
    const u0 = (t0 + 1) * h;
    const u1 = (t1 + 1) * h;
    const u2 = (t2 + 1) * h;
    const u3 = (t3 + 1) * h;
    const u4 = (t4 + 1) * h;
    const u5 = (t5 + 1) * h;
    const u6 = (t6 + 1) * h;
    const u7 = (t7 + 1) * h;
    const j0 = piece(u0);
    const j1 = piece(u1);
    const j2 = piece(u2);
    const j3 = piece(u3);
    const j4 = piece(u4);
    const j5 = piece(u5);
    const j6 = piece(u6);
    const j7 = piece(u7);
    // Row starts, and each point in its piece's coordinate on [-1, 1].
    const o0 = j0 * R;
    const o1 = j1 * R;
    const o2 = j2 * R;
    const o3 = j3 * R;
    const o4 = j4 * R;
    const o5 = j5 * R;
    const o6 = j6 * R;
    const o7 = j7 * R;
    const y0 = 2 * (u0 - j0) - 1;
    const y1 = 2 * (u1 - j1) - 1;
    const y2 = 2 * (u2 - j2) - 1;
    const y3 = 2 * (u3 - j3) - 1;
    const y4 = 2 * (u4 - j4) - 1;
    const y5 = 2 * (u5 - j5) - 1;
    const y6 = 2 * (u6 - j6) - 1;
    const y7 = 2 * (u7 - j7) - 1;
    let a0 = table[o0];
    let a1 = table[o1];
    let a2 = table[o2];
    let a3 = table[o3];
    let a4 = table[o4];
    let a5 = table[o5];
    let a6 = table[o6];
    let a7 = table[o7];
    for (let k = 1; k < R; k++) {
      a0 = a0 * y0 + table[o0 + k];
      a1 = a1 * y1 + table[o1 + k];
      a2 = a2 * y2 + table[o2 + k];
      a3 = a3 * y3 + table[o3 + k];
      a4 = a4 * y4 + table[o4 + k];
      a5 = a5 * y5 + table[o5 + k];
      a6 = a6 * y6 + table[o6 + k];
      a7 = a7 * y7 + table[o7 + k];
    }
    out[i] = t0 >= -1 && t0 <= 1 ? a0 : chebvalUnit(t0, c);
    out[i + s] = t1 >= -1 && t1 <= 1 ? a1 : chebvalUnit(t1, c);
    out[i + 2 * s] = t2 >= -1 && t2 <= 1 ? a2 : chebvalUnit(t2, c);
    out[i + 3 * s] = t3 >= -1 && t3 <= 1 ? a3 : chebvalUnit(t3, c);
    out[i + 4 * s] = t4 >= -1 && t4 <= 1 ? a4 : chebvalUnit(t4, c);
    out[i + 5 * s] = t5 >= -1 && t5 <= 1 ? a5 : chebvalUnit(t5, c);
    out[i + 6 * s] = t6 >= -1 && t6 <= 1 ? a6 : chebvalUnit(t6, c);
    out[i + 7 * s] = t7 >= -1 && t7 <= 1 ? a7 : chebvalUnit(t7, c);
  }
  for (; i < n; i += stride) {
    const t = xs[i] * scale + shift;
    if (!(t >= -1 && t <= 1)) {
      out[i] = chebvalUnit(t, c);
      continue;
    }
    const u = (t + 1) * h;
    const j = piece(u);
    const y = 2 * (u - j) - 1;
    let a = table[j * R];
    for (let k = 1; k < R; k++) a = a * y + table[j * R + k];
    out[i] = a;
  }
}
