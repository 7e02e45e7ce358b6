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

/** Depth of T_i when built by T_{a+b} = 2 T_a T_b - T_{|a-b|} from balanced halves. */
export function chebDepth(i: number): number {
  return i <= 1 ? 0 : Math.ceil(Math.log2(i));
}

/** Minimal levels for a degree-d polynomial (d >= 1). */
export function optimalDepth(d: number): number {
  return d <= 0 ? 0 : Math.ceil(Math.log2(d + 1));
}

interface Best { cost: number; node: PlanNode }

function planWith(degree: number, depth: number, k: number): { cost: number; root: PlanNode; giants: Set<number> } | null {
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
  const walk = (n: PlanNode) => { if (n.kind === 'split') { if (n.g > k) giants.add(n.g); walk(n.q); walk(n.r); } };
  walk(b.node);
  return { cost: b.cost, root: b.node, giants };
}

/** Cost of computing T_2..T_k plus the giant steps (each a single squaring). */
function stepCost(k: number, giants: Set<number>): number {
  return Math.max(0, k - 1) + giants.size;
}

const planCache = new Map<number, PolyPlan>();

/** The cheapest depth-optimal plan for a degree-d Chebyshev series. */
export function planPolynomial(degree: number): PolyPlan {
  const cached = planCache.get(degree);
  if (cached) return cached;
  const depth = optimalDepth(degree);
  let best: PolyPlan | null = null;
  for (let k = 1; k <= Math.max(1, degree); k++) {
    const p = planWith(degree, depth, k);
    if (!p) continue;
    // Giant steps at or below k are baby steps already; those above need T_{g/2} first.
    const giants = new Set<number>();
    for (const g of p.giants) for (let h = g; h > k; h /= 2) giants.add(h);
    const total = stepCost(k, giants) + p.cost;
    if (!best || total < best.nonScalarMults) {
      best = { degree, depth, babySteps: k, giantSteps: [...giants].sort((a, b) => a - b), nonScalarMults: total, root: p.root };
    }
  }
  if (!best) throw new Error(`no plan for degree ${degree}`);
  planCache.set(degree, best);
  return best;
}
