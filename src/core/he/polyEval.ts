/**
 * Encrypted evaluation of a Chebyshev series by the depth-optimal BSGS plan (numerics/bsgs.ts),
 * with exact scale management:
 *
 * - every constant is encoded at the scale that makes its product land EXACTLY on a chosen
 *   target scale after the rescale (encScale = target * q_l / scale(T_i));
 * - targets propagate top-down: for p = q T_g + r the quotient q is evaluated at
 *   target * q_l / scale(T_g), so that q T_g lands on the target, and r is evaluated at the target;
 * - in T_{a+b} = 2 T_a T_b - T_{a-b}, the lower-depth T_{a-b} (it always has a level to spare) is
 *   brought to the product's scale by a multiplication by 1 at a suitable encoding scale.
 *
 * So no addition ever meets mismatched scales, and no scale is ever overwritten. Levels consumed
 * equal the plan's depth: ceil(log2(d+1)), plus one if the input's affine map is done here.
 */
import { Fold, affineLane, lanesOf, sharedSign, squareLane } from '../cost/fold';
import { PlanNode, PolyPlan, chebDivide, chebRecipe } from '../numerics/bsgs';
import { unitMap } from '../numerics/chebyshev';
import { CkksBackend } from './backend';
import type { PolyActivation } from '../numerics/polynomial';

export interface PolyInput {
  coeffs: ArrayLike<number>;
  a: number;
  b: number;
}

/** Channel c's polynomial (the layer-wide one when the activation is not fitted per channel). */
export function lanePoly(p: PolyActivation, c: number): PolyInput {
  return p.channels ? { coeffs: p.channels.coeffs[c], ...p.channels.intervals[c] } : p;
}

/**
 * The polynomials of a `width`-position layout whose first positions hold a per-channel
 * activation's channels in order; padding positions, whose values no one reads, get zero.
 */
export function channelLanes(p: PolyActivation, width: number): PolyInput[] {
  const C = p.channels?.coeffs.length ?? 0;
  return Array.from({ length: width }, (_, q) => (q < C ? lanePoly(p, q) : { coeffs: [0], a: -1, b: 1 }));
}

/**
 * Plaintext-vector operations for per-position polynomials: a vector v holds one value per
 * position of the caller's layout (periodic in v.length); the caller knows how positions map to
 * slots. mulVec rescales like mulConst; addVec adds exactly at the ciphertext's scale.
 */
export interface VecOps<C> {
  mulVec(c: C, v: Float64Array, encScale: number): C;
  addVec(c: C, v: Float64Array): C;
}

/**
 * Evaluates p(x) for the ciphertext x. With `inputIsUnit`, x already holds t = (2x - a - b)/(b - a)
 * (the affine map folded into the previous linear layer); otherwise the map costs one level here.
 *
 * `poly` may be one polynomial, or one per position (`lanes`, with `vec`): position q then uses
 * lanes[q]. All lanes share the plan and the T_i, and each constant becomes a plaintext vector in
 * the same multiplication, so levels and non-scalar multiplications are those of one polynomial.
 */
export function evalPolyCkks<C>(
  be: CkksBackend<C>,
  x: C,
  poly: PolyInput | PolyInput[],
  plan: PolyPlan,
  inputIsUnit: boolean,
  vec?: VecOps<C>,
): C {
  const lanes = Array.isArray(poly) ? poly : [poly];
  if (lanes.length > 1 && !vec) throw new Error('evalPolyCkks: per-position polynomials need vector operations');
  const e = new ChebEvaluation(be, x, lanes, vec);
  if (!inputIsUnit) e.toUnit();
  // Compute every step the plan uses up front, so that levels are known before evaluation.
  const need = new Set<number>();
  const walk = (n: PlanNode, deg: number) => {
    if (n.kind === 'leaf') {
      for (let i = 2; i <= deg; i++) need.add(i);
      return;
    }
    need.add(n.g);
    walk(n.q, deg - n.g);
    walk(n.r, n.g - 1);
  };
  walk(plan.root, plan.degree);
  [...need].sort((p, q) => p - q).forEach((i) => e.cheb(i));
  const c: Table = Array.from({ length: plan.degree + 1 }, (_, i) => Float64Array.from(lanes, (p) => p.coeffs[i] ?? 0));
  const out = e.evaluate(plan.root, c, be.scale(e.t), Infinity);
  e.temps.delete(out);
  for (const tmp of e.temps) be.free(tmp);
  return out;
}

/** Coefficients as a (degree + 1) x lanes table: cs[i][q] is lane q's coefficient of T_i. */
type Table = Float64Array[];
const isZero = (k: Float64Array) => k.every((v) => v === 0);

/**
 * One evaluation of evalPolyCkks: the Chebyshev basis T_i(t) on ciphertexts, made on demand by
 * chebRecipe's products, and the plan's tree evaluated on them, every intermediate tracked so
 * that the caller frees all but the result.
 */
class ChebEvaluation<C> {
  readonly temps = new Set<C>();
  private readonly keep: Set<C>;
  private readonly many: boolean;
  /** The input on [-1, 1]. */
  t: C;
  private readonly T: Map<number, C>;

  constructor(
    private readonly be: CkksBackend<C>,
    private readonly x: C,
    private readonly lanes: PolyInput[],
    private readonly vec?: VecOps<C>,
  ) {
    this.keep = new Set<C>([x]);
    this.many = lanes.length > 1;
    this.t = x;
    this.T = new Map<number, C>([[1, x]]);
  }

  private track(c: C): C {
    if (!this.keep.has(c)) this.temps.add(c);
    return c;
  }

  /** One constant per lane: a scalar when there is one lane, a plaintext vector otherwise. */
  private mulK(c: C, k: Float64Array, encScale: number): C {
    return this.many ? this.vec!.mulVec(c, k, encScale) : this.be.mulConst(c, k[0], encScale);
  }

  private addK(c: C, k: Float64Array): C {
    return this.many ? this.vec!.addVec(c, k) : this.be.addConst(c, k[0]);
  }

  /** t = alpha x + beta per lane (unitMap), one level. */
  toUnit(): void {
    const { be, x } = this;
    const maps = this.lanes.map(unitMap);
    const alpha = Float64Array.from(maps, (u) => u.scale);
    const beta = Float64Array.from(maps, (u) => u.shift);
    // Encoding alpha at q_l keeps the scale exactly: scale * q_l / q_l.
    const scaled = this.track(this.mulK(x, alpha, be.prime(be.level(x))));
    this.t = this.track(this.addK(scaled, beta));
    this.T.set(1, this.t);
  }

  cheb(i: number): C {
    const have = this.T.get(i);
    if (have !== undefined) return have;
    const { be } = this;
    const track = (c: C) => this.track(c);
    const r = chebRecipe(i);
    let v: C;
    if (r.kind === 'square') {
      const h = this.cheb(r.h);
      const sq = track(be.mul(h, h));
      v = track(be.addConst(track(be.add(sq, sq)), -1));
    } else {
      const A = this.cheb(r.a);
      const B = this.cheb(r.b);
      const lvl = Math.min(be.level(A), be.level(B));
      const prod = track(be.mul(track(be.modSwitchTo(A, lvl)), track(be.modSwitchTo(B, lvl))));
      const twice = track(be.add(prod, prod));
      const R = this.cheb(r.diff);
      const target = be.scale(twice);
      const Rs = track(be.mulConst(R, 1, (target * be.prime(be.level(R))) / be.scale(R)));
      v = track(be.sub(twice, track(be.modSwitchTo(Rs, be.level(twice)))));
    }
    this.T.set(i, v);
    return v;
  }

  private divide(cs: Table, g: number): { q: Table; r: Table } {
    const parts = this.lanes.map((_, q) =>
      chebDivide(
        cs.map((k) => k[q]),
        g,
      ),
    );
    const col = (pick: 'q' | 'r') =>
      Array.from({ length: parts[0][pick].length }, (_, i) => Float64Array.from(parts, (p) => p[pick][i]));
    return { q: col('q'), r: col('r') };
  }

  private predict(n: PlanNode, c: Table): number {
    const { be } = this;
    if (n.kind === 'leaf') {
      let l = Infinity;
      for (let i = 1; i < c.length; i++) if (!isZero(c[i])) l = Math.min(l, be.level(this.cheb(i)) - 1);
      return l;
    }
    const { q, r } = this.divide(c, n.g);
    return Math.min(Math.min(this.predict(n.q, q), be.level(this.cheb(n.g))) - 1, this.predict(n.r, r));
  }

  /** Result at level min(predict, hint) and exactly at `target` scale. */
  evaluate(n: PlanNode, c: Table, target: number, hint: number): C {
    const { be } = this;
    const track = (x: C) => this.track(x);
    if (n.kind === 'leaf') return this.leaf(c, target, hint);
    const { q, r } = this.divide(c, n.g);
    const Tg = this.cheb(n.g);
    const lm = Math.min(this.predict(n.q, q), be.level(Tg), hint + 1);
    const qv = this.evaluate(n.q, q, (target * be.prime(lm)) / be.scale(Tg), lm);
    const prod = track(be.mul(track(be.modSwitchTo(qv, lm)), track(be.modSwitchTo(Tg, lm))));
    const rv = this.evaluate(n.r, r, target, be.level(prod));
    const l = Math.min(be.level(prod), be.level(rv));
    return track(be.add(track(be.modSwitchTo(prod, l)), track(be.modSwitchTo(rv, l))));
  }

  private leaf(c: Table, target: number, hint: number): C {
    const { be, many } = this;
    const track = (x: C) => this.track(x);
    let acc: C | null = null;
    for (let i = 1; i < c.length; i++) {
      if (isZero(c[i])) continue;
      const Ti = this.cheb(i);
      const term = track(this.mulK(Ti, c[i], (target * be.prime(be.level(Ti))) / be.scale(Ti)));
      if (acc === null) acc = term;
      else {
        const l = Math.min(be.level(acc), be.level(term));
        acc = track(be.add(track(be.modSwitchTo(acc, l)), track(be.modSwitchTo(term, l))));
      }
    }
    // A constant piece: a fresh encryption of c_0 (a product with 0 would be transparent in SEAL).
    if (acc === null) {
      const k = track(be.constant(many ? 0 : c[0][0], Math.min(hint, be.level(this.t)), target));
      return many && !isZero(c[0]) ? track(this.addK(k, c[0])) : k;
    }
    acc = track(be.modSwitchTo(acc, Math.min(be.level(acc), hint)));
    return !isZero(c[0]) ? track(this.addK(acc, c[0])) : acc;
  }
}

/**
 * Evaluates a degree-1 or degree-2 polynomial in its folded form (cost/fold.ts) on x. With
 * fold.intoPrevious, x already holds the form's input (y for 'affine', u for 'square'), computed
 * by the previous linear layer; otherwise x is the raw input and one plaintext multiplication
 * (1 level) makes it. 'square' then costs one squaring: 1 level. Lanes as in evalPolyCkks.
 */
export function evalFoldedCkks<C>(
  be: CkksBackend<C>,
  x: C,
  poly: PolyInput | PolyInput[],
  fold: Fold,
  vec?: VecOps<C>,
  post?: Float64Array,
): C {
  const lanes = Array.isArray(poly) ? poly : [poly];
  if (lanes.length > 1 && !vec) throw new Error('evalFoldedCkks: per-position polynomials need vector operations');
  const many = lanes.length > 1;
  // Encoding the multiplier at q_l keeps the scale exactly: scale * q_l / q_l.
  const mulK = (c: C, k: Float64Array) =>
    many ? vec!.mulVec(c, k, be.prime(be.level(c))) : be.mulConst(c, k[0], be.prime(be.level(c)));
  const addK = (c: C, k: Float64Array) => (many ? vec!.addVec(c, k) : be.addConst(c, k[0]));
  const affine = (c: C, mul: Float64Array, add: Float64Array) => {
    const m = mulK(c, mul);
    const r = addK(m, add);
    be.free(m);
    return r;
  };
  // `post`: per lane, a positive factor on the output (for a max tree after it): an affine map's
  // mul and add times it, a square's u times its square root and its offset times it.
  const p = (i: number) => post?.[post.length === 1 ? 0 : i] ?? 1;
  if (fold.form === 'affine') {
    if (fold.intoPrevious) return x;
    const ls = lanes.map(affineLane);
    return affine(
      x,
      Float64Array.from(ls, (q, i) => q.mul * p(i)),
      Float64Array.from(ls, (q, i) => q.add * p(i)),
    );
  }
  if (fold.form !== 'square') throw new Error(`evalFoldedCkks: form ${fold.form} is a series`);
  const qs = lanes.map((l, i) => {
    const q = squareLane(l);
    if (!q) throw new Error('evalFoldedCkks: a lane has no square form');
    const k = Math.sqrt(p(i));
    return { ...q, mul: q.mul * k, add: q.add * k, offset: q.offset * p(i) };
  });
  const sign = sharedSign(qs);
  if (sign === null && !fold.mixedSigns)
    throw new Error("evalFoldedCkks: lanes' signs differ, and the plan did not expect it");
  const mul = Float64Array.from(qs, (q) => q.mul);
  const add = Float64Array.from(qs, (q) => q.add);
  const u = fold.intoPrevious ? x : affine(x, mul, add);
  // Mixed signs: u times (sign u), both from x by plaintext multiplications at the same level.
  const v = fold.mixedSigns
    ? affine(
        x,
        mul.map((m, i) => m * qs[i].sign),
        add.map((a, i) => a * qs[i].sign),
      )
    : u;
  let sq = be.mul(u, v);
  if (!fold.mixedSigns && sign === -1) {
    const n = be.negate(sq);
    be.free(sq);
    sq = n;
  }
  const out = addK(
    sq,
    Float64Array.from(qs, (q) => q.offset),
  );
  be.free(sq);
  if (u !== x) be.free(u);
  if (v !== u) be.free(v);
  return out;
}

/**
 * The polynomial p with every channel's coefficients (and mean-shift offset) times `out[c]`, and
 * its interval times `x[c]`: on x[c] t it computes out[c] p(t). Per channel even when p is one
 * per layer, since the factors differ by channel.
 */
export function scaledPoly(p: PolyActivation, C: number, out: Float64Array, x: Float64Array): PolyActivation {
  const lanes = lanesOf(p);
  const lane = (c: number) => lanes[p.channels ? c : 0];
  return {
    coeffs: [0],
    a: -1,
    b: 1,
    channels: {
      intervals: Array.from({ length: C }, (_, c) => ({ a: lane(c).a * x[c], b: lane(c).b * x[c] })),
      coeffs: Array.from({ length: C }, (_, c) => Array.from(lane(c).coeffs, (v) => v * out[c])),
    },
    channelOffset: p.channelOffset ? Float32Array.from(p.channelOffset, (v, c) => v * out[c]) : undefined,
  };
}
