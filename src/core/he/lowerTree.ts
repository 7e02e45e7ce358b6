/**
 * A max pooling's tree of pairwise maxima (model/maxTree.ts) as CKKS operations: each step is
 * max(a, b) = (a + b) / 2 + |a - b| / 2, with |x| a polynomial in one of the fold forms
 * (cost/fold.ts), carrying the per-channel factors the compiler planned (compile.ts: planTrees).
 */
import { affineLane, lanesOf, squareLane } from '../cost/fold';
import type { CkksBackend } from './backend';
import { VecOps, evalPolyCkks, lanePoly, scaledPoly } from './polyEval';
import type { TreeStep } from './program';
import { GridLayout, blockLanes, channelAt, homesOf, perBlock } from './layout';
import { LinearOps, TARGET_SCALE, Value, addend, factorOf } from './linear';

/** What every ciphertext of one tree step shares. */
interface TreeRun<C> {
  s: TreeStep;
  L: GridLayout;
  be: CkksBackend<C>;
  ops: LinearOps<C>;
  tmp: (c: C) => C;
  /** What the held value is, per channel, times the true one. */
  F: Float64Array;
  /** Half the target's factor T per channel: the |x| computes (T / 2) |d|. */
  half: Float64Array;
  lane: (c: number) => ReturnType<typeof lanesOf>[number];
  off: (c: number) => number;
  /** A plaintext multiplication by a per-channel vector, rescaled (to `scale` when given), then a per-channel addition. */
  affine: (c: C, i: number, mul: (ch: number) => number, add: (ch: number) => number, key: string, scale?: number) => C;
}

/**
 * One step of a max tree (TreeStep) on every ciphertext of a grid value: the difference and the
 * sum of each position and the one `offset` further along the axis (one rotation), |x| of the
 * difference by its form, the sum scaled (in parallel) and both added, at the target's factor.
 * Levels: the form's (cost/fold.ts), the sum's scaling hidden under them unless the |x| is a constant.
 */
export function treeValue<C>(
  s: TreeStep,
  x: Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): Value<C> {
  const L = x.layout;
  if (L.kind !== 'grid') throw new Error(`${s.name}: a max tree on a flat value`);
  if (x.signs) throw new Error(`${s.name}: pending signs before a max tree`);
  const F = Float64Array.from({ length: L.C }, (_, c) => 1 / factorOf(x, c));
  if (s.want && s.want.W.some((w, c) => Math.abs(w / F[c] - 1) > 1e-9))
    throw new Error(`${s.name}: the value before does not carry the factor the plan gave it`);
  const T = s.target === 'carry' ? F.map((f) => 2 * f) : s.target.T;
  const half = T.map((t) => t / 2);
  const r = T.map((t, c) => t / (2 * F[c]));
  const rescale = (s.fold.form === 'constant' && !s.fold.intoPrevious) || r.some((v) => Math.abs(v - 1) > 1e-12);
  const shift = s.offset * (s.axis === 1 ? L.sx : L.sy);
  const outL: GridLayout = { ...L, H: s.axis === 0 ? L.H - s.offset : L.H, W: s.axis === 1 ? L.W - s.offset : L.W };
  const lanes = lanesOf(s.poly);
  const t: TreeRun<C> = {
    s,
    L,
    be,
    ops,
    tmp,
    F,
    half,
    lane: (c) => lanes[s.poly.channels ? c : 0],
    off: (c) => s.poly.channelOffset?.[c] ?? 0,
    affine: (c, i, mul, add, key, scale = TARGET_SCALE) => {
      const enc = (scale * be.prime(be.level(c))) / be.scale(c);
      const m = ops.mulVecNoRescale(c, perBlock(L, i, mul), enc, `${s.node}:${i}:${key}`);
      const y = tmp(ops.rescale(m));
      ops.free(m);
      return tmp(ops.addVec(y, perBlock(L, i, add)));
    },
  };
  const cts = x.cts.map((xi, i) => {
    const moved = tmp(ops.rotate(xi, shift));
    let d = tmp(be.sub(xi, moved));
    if (s.want) {
      const G = s.want.G;
      d = tmp(
        ops.addVec(
          d,
          perBlock(L, i, (c) => G[c]),
        ),
      );
    }
    const a = halfAbs(t, d, i);
    let sum = tmp(be.add(xi, moved));
    // The sum at the target's factor, landing on the |x|'s scale when both end one level down.
    if (rescale)
      sum = t.affine(
        sum,
        i,
        (c) => r[c],
        () => 0,
        'r',
        a !== null && be.level(a) === be.level(sum) - 1 ? be.scale(a) : TARGET_SCALE,
      );
    let m = sum;
    if (a !== null) {
      const lvl = Math.min(be.level(a), be.level(sum));
      const scale = be.scale(be.level(a) === lvl ? a : sum);
      m = tmp(be.add(tmp(addend(be, sum, lvl, scale, tmp)), tmp(addend(be, a, lvl, scale, tmp))));
    }
    const S = s.target === 'carry' ? null : s.target.S;
    const k = (c: number) =>
      (S ? S[c] : 0) + (s.fold.form === 'constant' ? half[c] * (t.lane(c).coeffs[0] - t.off(c)) : 0);
    return ops.addVec(m, perBlock(L, i, k));
  });
  return {
    cts,
    layout: outL,
    factor: 1,
    scales: s.target === 'carry' || s.target.kind === 'factor' ? T.map((v) => 1 / v) : undefined,
  };
}

/** (T / 2) p(d) on ciphertext i, less (T / 2) times the mean-shift offset, by the fold's form; null for a constant. */
function halfAbs<C>(t: TreeRun<C>, d: C, i: number): C | null {
  const { s, L, be, ops, tmp, F, half, lane, off } = t;
  if (s.fold.form === 'series') {
    const q = scaledPoly(s.poly, L.C, half, s.want ? new Float64Array(L.C).fill(1) : F);
    const ls = L.blocks > 1 ? blockLanes(q, L, i) : lanePoly(q, channelAt(L, i, 0));
    let call = 0;
    const vec: VecOps<C> = {
      mulVec: (u, v, encScale) => {
        const y = ops.mulVecNoRescale(u, v, encScale, `${s.node}:${i}:p${call++}`);
        const res = ops.rescale(y);
        ops.free(y);
        return res;
      },
      addVec: (u, v) => ops.addVec(u, v),
    };
    const a = tmp(evalPolyCkks(be, d, ls, s.plan, !!s.want, vec));
    if (!q.channelOffset) return a;
    return tmp(
      ops.addVec(
        a,
        perBlock(L, i, (c) => -q.channelOffset![c]),
      ),
    );
  }
  if (s.fold.form === 'square') {
    const sq = (c: number) => squareLane(lane(c))!;
    const signs = new Set(
      homesOf(L, i)
        .map((h) => h.c)
        .filter((c) => c >= 0)
        .map((c) => sq(c).sign),
    );
    if (signs.size > 1) throw new Error(`${s.name}: squares of both signs on one ciphertext`);
    const u = s.want
      ? d
      : t.affine(
          d,
          i,
          (c) => (Math.sqrt(half[c]) * sq(c).mul) / F[c],
          (c) => Math.sqrt(half[c]) * sq(c).add,
          'u',
        );
    let y = tmp(be.mul(u, u));
    if (signs.has(-1)) y = tmp(be.negate(y));
    return tmp(
      ops.addVec(
        y,
        perBlock(L, i, (c) => half[c] * (sq(c).offset - off(c))),
      ),
    );
  }
  if (s.fold.form === 'affine')
    return t.affine(
      d,
      i,
      (c) => (half[c] * affineLane(lane(c)).mul) / F[c],
      (c) => half[c] * (affineLane(lane(c)).add - off(c)),
      'y',
    );
  return null;
}
