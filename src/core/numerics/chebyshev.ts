/**
 * Chebyshev-basis numerics on an interval [a, b], after numpy.polynomial.chebyshev:
 * coefficients are in increasing degree, p(x) = sum_k c[k] T_k(t) with t = (2x - a - b) / (b - a).
 * One helper (`toUnit`) owns the affine map so that no caller re-derives it.
 *
 * References: L. N. Trefethen, "Approximation Theory and Approximation Practice" (SIAM 2013),
 * ch. 3-4 (Chebyshev interpolation), and Clenshaw (1955) for stable evaluation.
 */

export interface Interval { a: number; b: number }

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
    c[j] = (j === 0 ? 1 : 2) * s / n;
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
  if (n > 1) { tCur[1] = 1; out[1] += c[1]; }
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
 * mostly idle; eight independent chains keep them busy. `npm run bench:poly` (2 cores): 1.3x
 * faster than one point at a time at degree 7, 2.7-3.2x at degrees 15-63, and 2.2-5x faster than
 * the same recurrence as TensorFlow.js operations on the wasm backend, which pass over memory once
 * per operation. (Four points interleaved were 1.7-2x slower than eight in a scratch comparison.)
 * Every point follows chebvalUnit's recurrence; the additions are grouped differently, so results
 * may differ from it in the last bit.
 */
export function chebvalStrided(xs: ArrayLike<number>, out: Float32Array | Float64Array, c: ArrayLike<number>, iv: Interval, start = 0, stride = 1): void {
  const { scale, shift } = unitMap(iv);
  const K = c.length - 1;
  const c0 = c[0];
  const n = xs.length;
  let i = start;
  if (K < 1) { for (; i < n; i += stride) out[i] = K < 0 ? 0 : c0; return; }
  const s = stride;
  for (; i + 7 * s < n; i += 8 * s) {
    // Written out in locals: V8 keeps them in registers (through arrays it ran slower than 4 points).
    const t0 = xs[i] * scale + shift; const t1 = xs[i + s] * scale + shift;
    const t2 = xs[i + 2 * s] * scale + shift; const t3 = xs[i + 3 * s] * scale + shift;
    const t4 = xs[i + 4 * s] * scale + shift; const t5 = xs[i + 5 * s] * scale + shift;
    const t6 = xs[i + 6 * s] * scale + shift; const t7 = xs[i + 7 * s] * scale + shift;
    const x0 = 2 * t0; const x1 = 2 * t1; const x2 = 2 * t2; const x3 = 2 * t3;
    const x4 = 2 * t4; const x5 = 2 * t5; const x6 = 2 * t6; const x7 = 2 * t7;
    let a0 = 0; let b0 = 0; let a1 = 0; let b1 = 0; let a2 = 0; let b2 = 0; let a3 = 0; let b3 = 0;
    let a4 = 0; let b4 = 0; let a5 = 0; let b5 = 0; let a6 = 0; let b6 = 0; let a7 = 0; let b7 = 0;
    for (let k = K; k >= 1; k--) {
      const ck = c[k];
      let u = x0 * a0 - b0 + ck; b0 = a0; a0 = u;
      u = x1 * a1 - b1 + ck; b1 = a1; a1 = u;
      u = x2 * a2 - b2 + ck; b2 = a2; a2 = u;
      u = x3 * a3 - b3 + ck; b3 = a3; a3 = u;
      u = x4 * a4 - b4 + ck; b4 = a4; a4 = u;
      u = x5 * a5 - b5 + ck; b5 = a5; a5 = u;
      u = x6 * a6 - b6 + ck; b6 = a6; a6 = u;
      u = x7 * a7 - b7 + ck; b7 = a7; a7 = u;
    }
    out[i] = t0 * a0 - b0 + c0; out[i + s] = t1 * a1 - b1 + c0;
    out[i + 2 * s] = t2 * a2 - b2 + c0; out[i + 3 * s] = t3 * a3 - b3 + c0;
    out[i + 4 * s] = t4 * a4 - b4 + c0; out[i + 5 * s] = t5 * a5 - b5 + c0;
    out[i + 6 * s] = t6 * a6 - b6 + c0; out[i + 7 * s] = t7 * a7 - b7 + c0;
  }
  for (; i < n; i += stride) out[i] = chebvalUnit(xs[i] * scale + shift, c);
}
