/**
 * Depth-optimal baby-step giant-step plan for evaluating a Chebyshev series under CKKS.
 *
 * Every rescale consumes a level, and a multiplication by a non-integer constant needs a
 * rescale of its own. A degree-d series therefore needs at least ceil(log2(d+1)) levels, and the
 * textbook Paterson-Stockmeyer/BSGS evaluation (Han & Ki 2020; OpenFHE EvalChebyshevSeriesPS)
 * spends one more on the constants of its leaves. We plan at the optimal depth: the series is
 * split recursively, p = q * T_g + r with g a power of two (T_g from repeated doubling,
 * T_2g = 2 T_g^2 - 1), and a piece is evaluated directly, sum c_i T_i with i <= k from a shared
 * set of baby steps T_1..T_k, only where its depth budget has room for the constant's rescale.
 * A small dynamic program chooses every split and the baby-step bound k so that the number of
 * non-scalar (ciphertext x ciphertext) multiplications is minimal at that depth.
 *
 * The plan is pure data: the cost model counts it here, and the encrypted evaluator executes it.
 */

export type PlanNode =
  | { kind: 'leaf'; lo: number; hi: number }
  | { kind: 'split'; lo: number; hi: number; g: number; q: PlanNode; r: PlanNode };

export interface PolyPlan {
  degree: number;
  depth: number;
  /** Largest baby-step index k (T_1..T_k computed directly). */
  babySteps: number;
  /** Giant steps T_g (powers of two above k) the plan multiplies by. */
  giantSteps: number[];
  /** Non-scalar multiplications: baby steps + giant steps + one per split. */
  nonScalarMults: number;
  root: PlanNode;
}

/**
 * How T_i (i >= 2) is built, the rule every evaluator follows: T_2h = 2 T_h^2 - 1 for powers of
 * two, else T_{a+b} = 2 T_a T_b - T_{a-b} with a the largest power of two below i (so a > b > 0 and
 * never T_0). Balanced halves give T_i depth ceil(log2 i) (chebDepth).
 */
export type ChebRecipe = { kind: 'square'; h: number } | { kind: 'product'; a: number; b: number; diff: number };
export function chebRecipe(i: number): ChebRecipe {
  if ((i & (i - 1)) === 0) return { kind: 'square', h: i / 2 };
  const a = 2 ** (Math.ceil(Math.log2(i)) - 1);
  return { kind: 'product', a, b: i - a, diff: a - (i - a) };
}

/** Depth of T_i when built by chebRecipe. */
export function chebDepth(i: number): number {
  return i <= 1 ? 0 : Math.ceil(Math.log2(i));
}

/** Minimal levels for a degree-d polynomial (d >= 1). */
export function optimalDepth(d: number): number {
  return d <= 0 ? 0 : Math.ceil(Math.log2(d + 1));
}

interface Best {
  cost: number;
  node: PlanNode;
}

function planWith(
  degree: number,
  depth: number,
  k: number,
): { cost: number; root: PlanNode; giants: Set<number> } | null {
  const memo = new Map<string, Best | null>();
  // A piece is the span of coefficients [lo, hi] re-based to degree hi - lo; only its degree
  // and depth budget matter for the cost, so memoise on (deg, budget).
  const solve = (deg: number, budget: number): Best | null => {
    const key = `${deg},${budget}`;
    if (memo.has(key)) return memo.get(key)!;
    let best: Best | null = null;
    if (deg === 0) best = { cost: 0, node: { kind: 'leaf', lo: 0, hi: 0 } };
    else if (deg <= k && chebDepth(deg) + 1 <= budget) best = { cost: 0, node: { kind: 'leaf', lo: 0, hi: deg } };
    for (let g = 2; g <= deg; g *= 2) {
      if (chebDepth(g) + 1 > budget) break;
      const q = solve(deg - g, budget - 1);
      const r = solve(g - 1, budget);
      if (!q || !r) continue;
      const cost = 1 + q.cost + r.cost;
      if (!best || cost < best.cost) best = { cost, node: { kind: 'split', lo: 0, hi: deg, g, q: q.node, r: r.node } };
    }
    memo.set(key, best);
    return best;
  };
  const b = solve(degree, depth);
  if (!b) return null;
  const giants = new Set<number>();
  const walk = (n: PlanNode) => {
    if (n.kind === 'split') {
      if (n.g > k) giants.add(n.g);
      walk(n.q);
      walk(n.r);
    }
  };
  walk(b.node);
  return { cost: b.cost, root: b.node, giants };
}

/** Cost of computing T_2..T_k plus the giant steps (each a single squaring). */
function stepCost(k: number, giants: Set<number>): number {
  return Math.max(0, k - 1) + giants.size;
}

const planCache = new Map<string, PolyPlan>();

/**
 * The cheapest plan for a degree-d Chebyshev series within `extra` levels above the optimal depth
 * ceil(log2(d+1)), at the least depth that reaches that count. A level more lets leaves be larger
 * and splits fewer (31: 13 -> 11 multiplications, 63: 18 -> 16: OpenFHE's counts at its depth).
 */
export function planPolynomial(degree: number, extra = 0): PolyPlan {
  const key = `${degree},${extra}`;
  const cached = planCache.get(key);
  if (cached) return cached;
  let best = extra > 0 ? planPolynomial(degree, extra - 1) : null;
  const depth = optimalDepth(degree) + extra;
  for (let k = 1; k <= Math.max(1, degree); k++) {
    const p = planWith(degree, depth, k);
    if (!p) continue;
    // Giant steps at or below k are baby steps already; those above need T_{g/2} first.
    const giants = new Set<number>();
    for (const g of p.giants) for (let h = g; h > k; h /= 2) giants.add(h);
    const total = stepCost(k, giants) + p.cost;
    if (!best || total < best.nonScalarMults) {
      best = {
        degree,
        depth,
        babySteps: k,
        giantSteps: [...giants].sort((a, b) => a - b),
        nonScalarMults: total,
        root: p.root,
      };
    }
  }
  if (!best) throw new Error(`no plan for degree ${degree}`);
  planCache.set(key, best);
  return best;
}

/** The plan a report's layer of `degree` at `polyDepth` levels uses (the optimal depth for older reports). */
export function planAtDepth(degree: number, polyDepth: number): PolyPlan {
  return planPolynomial(degree, Math.max(0, polyDepth - optimalDepth(degree)));
}

/** Arithmetic the plan needs; numbers (tests, simulation) or ciphertexts (encrypted evaluation). */
export interface PlanArith<T> {
  /** Non-scalar product (ciphertext x ciphertext): one level. */
  mul(a: T, b: T): T;
  /** Product with a real constant: one level (a rescale). */
  mulConst(a: T, c: number): T;
  /** Product with a small integer: no level. */
  mulInt(a: T, k: number): T;
  add(a: T, b: T): T;
  sub(a: T, b: T): T;
  addConst(a: T, c: number): T;
}

/**
 * Chebyshev long division by T_g: p = q T_g + r with deg r < g, using
 * T_n = 2 T_g T_{n-g} - T_{|n-2g|} on the leading term until the degree drops below g.
 */
export function chebDivide(c: ArrayLike<number>, g: number): { q: Float64Array; r: Float64Array } {
  const p = Float64Array.from(c);
  const n = p.length - 1;
  if (n < g) return { q: new Float64Array(1), r: p };
  const q = new Float64Array(n - g + 1);
  for (let k = n; k >= g; k--) {
    const ck = p[k];
    if (ck === 0) continue;
    p[k] = 0;
    if (k === g) {
      q[0] += ck;
      continue;
    }
    q[k - g] += 2 * ck;
    p[Math.abs(k - 2 * g)] -= ck;
  }
  return { q, r: p.slice(0, g) };
}

/**
 * Evaluates the Chebyshev series `coeffs` (unit variable) at `t` following `plan`.
 * `t` must already be the input mapped to [-1, 1].
 */
export function evaluatePlan<T>(plan: PolyPlan, coeffs: ArrayLike<number>, t: T, ar: PlanArith<T>): T {
  const T = new Map<number, T>([[1, t]]);
  const cheb = (i: number): T => {
    const have = T.get(i);
    if (have !== undefined) return have;
    const r = chebRecipe(i);
    let v: T;
    if (r.kind === 'square') {
      const h = cheb(r.h);
      v = ar.addConst(ar.mulInt(ar.mul(h, h), 2), -1);
    } else {
      v = ar.sub(ar.mulInt(ar.mul(cheb(r.a), cheb(r.b)), 2), cheb(r.diff));
    }
    T.set(i, v);
    return v;
  };
  // Baby steps first, so their multiplications are shared by every leaf.
  for (let i = 2; i <= plan.babySteps; i++) cheb(i);
  const leaf = (c: Float64Array): T => {
    let acc: T | null = null;
    for (let i = 1; i < c.length; i++) {
      if (c[i] === 0) continue;
      const term = ar.mulConst(cheb(i), c[i]);
      acc = acc === null ? term : ar.add(acc, term);
    }
    if (acc === null) acc = ar.mulConst(t, 0);
    return ar.addConst(acc, c[0] ?? 0);
  };
  const run = (node: PlanNode, c: Float64Array): T => {
    if (node.kind === 'leaf') return leaf(c);
    const { q, r } = chebDivide(c, node.g);
    const qv = run(node.q, q);
    const rv = run(node.r, r);
    return ar.add(ar.mul(qv, cheb(node.g)), rv);
  };
  const c = Float64Array.from(coeffs);
  const padded = c.length - 1 < plan.degree ? Float64Array.from({ length: plan.degree + 1 }, (_, i) => c[i] ?? 0) : c;
  return run(plan.root, padded);
}
