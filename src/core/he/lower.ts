/**
 * Lowering: a program's steps as CKKS operations on a backend, for one packing. The one place
 * that decides every rotation, product, rescale and bootstrap a program makes; run on the trace
 * recorder (trace.ts) it gives the program every engine executes, run on the plaintext simulator
 * with values it emulates the encrypted model.
 *
 * Linear layers use the hybrid diagonal method (Juvekar et al., GAZELLE, USENIX Security 2018)
 * with baby-step giant-step rotations (Halevi & Shoup 2014/2018): for y = M x with M padded to
 * m x n (m | n, powers of two), z = sum_k diag_k * rot(x, k) and y_j = sum_t z[j + t m]. Every
 * value is kept periodic in its positions, so a layer's output comes out already replicated with
 * the period the next layer reads: no masking, one level per linear layer.
 *
 * Convolutions (LoLa, Brutzkus et al., ICML 2019, style): one ciphertext per channel, each
 * image on its row-major grid; out_o = sum_dy rot(sum_c sum_dx w * rot(x_c, dx sx), dy sy), so the
 * dx rotations are shared by all output channels and the dy ones by all input channels. Average
 * pooling is rotate-and-add with its 1/p^2 folded into the next linear layer. Strides stretch the
 * grid instead of moving data. A dense layer after a convolution reads the channel ciphertexts
 * directly through the generalised diagonals.
 */
import type { PolyActivation } from '../model/execute';
import { affineLane, lanesOf, squareLane } from '../cost/fold';
import { UserError } from '../errors';
import { CkksBackend, SimBackend, SimCt } from './backend';
import { Trace, TraceRecorder } from './trace';
import { VecOps, channelLanes, evalFoldedCkks, evalPolyCkks, lanePoly } from './polyEval';
import {
  AddStep,
  ConcatStep,
  ConvStep,
  DenseStep,
  PolyStep,
  Program,
  TreeStep,
  convWeight,
  mixedSquareSigns,
  pow2,
  stepInputs,
} from './program';
import {
  GridLayout,
  Layout,
  blockLanes,
  channelAt,
  convOutLayout,
  gridCts,
  inputLayout,
  mixIndex,
  perBlock,
  placeOf,
  tapPositions,
} from './layout';

export interface Value<C> {
  cts: C[];
  layout: Layout;
  /** Pending factor (1/p^2 of pools) for the next linear step. */
  factor: number;
  /** Pending per-channel signs (channel packing's signed squares) for the next linear step. */
  signs?: Float64Array;
  /**
   * Pending per-channel factors (a max tree's sums, TreeStep 'carry'; a value scaled for the tree
   * that reads it): the true value is the held one times this, as for `factor`.
   */
  scales?: Float64Array;
}

/** A value's pending factor on grid channel c (or on input feature f of a flat value). */
export const factorOf = (x: Value<unknown>, c: number) => x.factor * (x.signs?.[c] ?? 1) * (x.scales?.[c] ?? 1);

/** The operations linear steps need beyond the polynomial evaluator's. */
export interface LinearOps<C> {
  rotate(c: C, positions: number): C;
  /** Multiply by a plaintext vector (per position, periodic), encoded at encScale, NO rescale. */
  mulVecNoRescale(c: C, v: Float64Array, encScale: number, key?: string): C;
  addRaw(a: C, b: C): C;
  /** acc + b, reusing acc's storage where the backend can (acc is not used afterwards). */
  addInto(acc: C, b: C): C;
  rescale(c: C): C;
  addVec(c: C, v: Float64Array): C;
  free(c: C): void;
}

export const TARGET_SCALE = 2 ** 40;

/**
 * Per ciphertext of x, the scale to encode a linear layer's weights at so that every product
 * lands exactly on 2^40 q_l, whatever scale that ciphertext has: channels concatenated from
 * branches whose polynomials left scales a few parts per million apart add up exactly.
 */
export function encScales<C>(be: CkksBackend<C>, x: Value<C>): number[] {
  const l = be.level(x.cts[0]);
  if (x.cts.some((c) => be.level(c) !== l))
    throw new Error("a linear layer's input ciphertexts are at different levels");
  return x.cts.map((c) => (TARGET_SCALE * be.prime(l)) / be.scale(c));
}

/** sum + term, in place, freeing the term at once (ciphertexts are megabytes each); null: no sum yet. */
export function accumulate<C>(ops: LinearOps<C>, sum: C | null, term: C): C {
  if (sum === null) return term;
  const r = ops.addInto(sum, term);
  ops.free(term);
  return r;
}

/** Per tap (dy, dx), the output positions whose tap reads the image (null: all do; layout.ts: tapPositions). */
const convTaps = (L: GridLayout, s: ConvStep) =>
  Array.from({ length: s.kh }, (_, dy) => Array.from({ length: s.kw }, (_, dx) => tapPositions(L, s, dy, dx)));

/**
 * A tap's weight as the plaintext it multiplies by, before the rotation by `shift` that brings the
 * product to the outputs: w at every position (a scalar, or the block [at, at + period) of `into`)
 * when every output's tap reads the image, else w only where an output's tap does (shifted back:
 * rot(v, shift)[q] = v[q + shift]) and 0 where it reads the padding's zeros.
 */
function tapWeights(
  real: number[] | null,
  w: number,
  shift: number,
  period: number,
  at: number,
  length: number,
  into?: Float64Array,
): Float64Array {
  const v = into ?? new Float64Array(real ? length : 1);
  if (!real) {
    if (into) v.fill(w, at, at + period);
    else v[0] = w;
    return v;
  }
  for (const q of real) v[(((at + q + shift) % length) + length) % length] = w;
  return v;
}

/**
 * A convolution on channel-packed ciphertexts (blocks > 1): output channel o in block b of
 * ciphertext j gets sum_c sum_dy,dx w[dy,dx,c,o] x_c[q + dy sy + dx sx]. Input channel c reaches
 * block b by rotating its ciphertext by k blocks (k = block of c - b mod K), so
 * out_j = sum_dy rot(sum_(i,k) sum_dx W_(j,dy,i,k,dx) * rot(rot(x_i, k period), dx sx), dy sy),
 * each W a slot vector holding, per block, the weight of the channel that rotation brings there.
 * The baby steps (i, k, dx) are shared by all outputs; a convolution costs one level, as in batch packing.
 */
export function packedConv<C>(
  s: ConvStep,
  x: Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): Value<C> {
  const L = x.layout as GridLayout;
  const K = L.blocks;
  const outL = convOutLayout(L, s, K);
  const encScale = encScales(be, x);
  // For each output block and input channel, the source (ciphertext i, offset k) with the smallest
  // offset; a repeated channel is read from one block only.
  const terms = new Map<number, { j: number; b: number; c: number; o: number }[]>();
  for (let j = 0; j < gridCts(outL); j++) {
    for (let b = 0; b < K; b++) {
      const o = channelAt(outL, j, b);
      if (o < 0) continue;
      const cinG = s.cin / s.groups;
      const c0 = Math.floor(o / (s.cout / s.groups)) * cinG;
      for (let c = c0; c < c0 + cinG; c++) {
        let best = -1;
        for (let i = 0; i < x.cts.length; i++)
          for (let beta = 0; beta < K; beta++) {
            if (channelAt(L, i, beta) !== c) continue;
            const key = i * K + ((beta - b + K) % K);
            if (best < 0 || key % K < best % K) best = key;
          }
        if (best < 0) throw new Error(`${s.name}: input channel ${c} is in no block`);
        if (!terms.has(best)) terms.set(best, []);
        terms.get(best)!.push({ j, b, c, o });
      }
    }
  }
  const [pt, pl] = [s.pads[0][0], s.pads[1][0]];
  const taps = convTaps(L, s);
  const baby = new Map<number, C[]>();
  for (const key of [...terms.keys()].sort((a, b) => a - b)) {
    const i = Math.floor(key / K);
    const k = key % K;
    const base = k === 0 ? x.cts[i] : tmp(ops.rotate(x.cts[i], k * L.period));
    baby.set(
      key,
      Array.from({ length: s.kw }, (_, dx) => (dx === pl ? base : tmp(ops.rotate(base, (dx - pl) * L.sx)))),
    );
  }
  const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
  const cts: C[] = [];
  for (let j = 0; j < gridCts(outL); j++) {
    let z: C | null = null;
    for (let dy = 0; dy < s.kh; dy++) {
      let inner: C | null = null;
      for (const [key, list] of terms) {
        const mine = list.filter((t) => t.j === j);
        for (let dx = 0; dx < s.kw && mine.length; dx++) {
          const v = new Float64Array(K * L.period);
          let nz = false;
          for (const t of mine) {
            const w = convWeight(s, dy, dx, t.c, t.o) * factorOf(x, t.c);
            if (w !== 0) {
              tapWeights(taps[dy][dx], w, (dy - pt) * L.sy, L.period, t.b * L.period, K * L.period, v);
              nz = true;
            }
          }
          if (nz)
            inner = acc(
              inner,
              ops.mulVecNoRescale(
                baby.get(key)![dx],
                v,
                encScale[Math.floor(key / K)],
                `${s.node}:${j}:${dy}:${key}:${dx}`,
              ),
            );
        }
      }
      if (inner === null) continue;
      let rotated: C = inner;
      if (dy !== pt) {
        rotated = ops.rotate(inner, (dy - pt) * L.sy);
        ops.free(inner);
      }
      z = acc(z, rotated);
    }
    if (z === null) throw new Error(`layer ${s.name}: output ciphertext ${j} has an all-zero kernel`);
    const y = tmp(ops.rescale(z));
    ops.free(z);
    cts.push(
      ops.addVec(
        y,
        perBlock(outL, j, (o) => s.b[o]),
      ),
    );
  }
  return { cts, layout: outL, factor: 1 };
}

/**
 * A dense layer's end, after its products z (n positions, output r at every position = r mod
 * mPad): rescale, then add up each output's positions by rotations mPad, 2 mPad, ... < n (after the
 * rescale, so on one prime fewer: rotations commute with it), plus the bias. Periodic with mPad.
 */
export function finishDense<C>(s: DenseStep, z: C, n: number, ops: LinearOps<C>, tmp: (c: C) => C): Value<C> {
  const mPad = pow2(s.m);
  let y = ops.rescale(z);
  ops.free(z);
  for (let t = mPad; t < n; t *= 2) y = accumulate(ops, y, ops.rotate(y, t));
  tmp(y);
  const bias = new Float64Array(mPad);
  bias.set(s.b.subarray(0, s.m));
  return { cts: [ops.addVec(y, bias)], layout: { kind: 'flat', period: mPad, dim: s.m }, factor: 1 };
}

/**
 * Signed squares sign_c u^2 + offset_c on channel-packed ciphertexts whose channels' signs differ:
 * one ciphertext cannot be negated per block, so each block gets u^2 + sign_c (offset_c - shift_c)
 * and sign_c stays pending for the next linear step, which multiplies its weights by it (the
 * issue's "the sign folds into the next linear layer"). Exact: sign_c^2 = 1. `shift_c` is the
 * mean-shift correction the batch path subtracts after the polynomial.
 */
export function packedSignedSquares<C>(
  s: PolyStep,
  x: Value<C>,
  L: GridLayout,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
): Value<C> {
  if (!s.fold.intoPrevious) throw new Error(`${s.name}: a signed square on packed channels needs its input map folded`);
  const lanes = lanesOf(s.poly);
  const sq = lanes.map((l) => squareLane(l)!);
  const off = s.poly.channelOffset;
  const cts = x.cts.map((u, i) => {
    const u2 = be.mul(u, u);
    const r = ops.addVec(
      u2,
      perBlock(L, i, (ch) => sq[ch].sign * (sq[ch].offset - (off?.[ch] ?? 0))),
    );
    ops.free(u2);
    return r;
  });
  return { cts, layout: L, factor: 1, signs: Float64Array.from(sq, (q) => q.sign) };
}

/** Per position of ciphertext c of a layout, the output factor of its channel (evalFoldedCkks's post). */
export function lanePost(f: Float64Array, L: Layout, c: number): Float64Array {
  if (L.kind === 'flat') return Float64Array.from({ length: L.period }, (_, q) => f[q % f.length] ?? 1);
  if (L.blocks > 1) return perBlock(L, c, (ch) => f[ch]);
  return Float64Array.of(f[c]);
}

/** A polynomial step on each ciphertext of x (per-channel polynomials as lanes where channels share one), with the mean-shift correction. */
export function polyValue<C>(
  s: PolyStep,
  x: Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): Value<C> {
  // Per-channel polynomials: one per ciphertext (grid), or one per position (flat; padding
  // positions hold junk no later weight reads, and get the zero polynomial).
  const L = x.layout;
  const C = L.kind === 'grid' ? L.C : L.dim;
  // The output scaled for what reads it (outScale): a series' coefficients, a form's post-factor.
  // A factor pending on the input (a value scaled into a bootstrap's range) is taken by the input
  // map, which costs its plaintext multiplication anyway: the interval scaled by it.
  const pending =
    !s.fold.intoPrevious && (x.factor !== 1 || x.scales)
      ? Float64Array.from({ length: C }, (_, ch) => 1 / factorOf(x, ch))
      : null;
  const ones = new Float64Array(C).fill(1);
  const poly =
    pending || (s.outScale && s.fold.form === 'series')
      ? scaledPoly(s.poly, C, s.outScale && s.fold.form === 'series' ? s.outScale : ones, pending ?? ones)
      : s.poly;
  const lanesFor = (c: number) =>
    !poly.channels
      ? poly
      : L.kind === 'flat'
        ? channelLanes(poly, L.period)
        : L.blocks > 1
          ? blockLanes(poly, L, c)
          : lanePoly(poly, c);
  const cts = x.cts.map((ct, c) => {
    // Coefficient vectors are the same plaintexts in every run: cached by their place in the
    // evaluation (the backend's key adds the level and scale).
    let call = 0;
    const vec: VecOps<C> = {
      mulVec: (u, v, encScale) => {
        const y = ops.mulVecNoRescale(u, v, encScale, `${s.node}:${c}:${call++}`);
        const r = ops.rescale(y);
        ops.free(y);
        return r;
      },
      addVec: (u, v) => ops.addVec(u, v),
    };
    const lanes = lanesFor(c);
    const post = s.outScale && s.fold.form !== 'series' ? lanePost(s.outScale, L, c) : undefined;
    const y =
      s.fold.form === 'series'
        ? evalPolyCkks(be, ct, lanes, s.plan, s.fold.intoPrevious, vec)
        : evalFoldedCkks(be, ct, lanes, s.fold, vec, post);
    const off =
      poly.channelOffset && s.outScale && s.fold.form !== 'series'
        ? Float32Array.from(poly.channelOffset, (v, ch) => v * s.outScale![ch])
        : poly.channelOffset;
    if (!off) return y;
    tmp(y);
    // Mean-shift correction: a per-channel constant (grid), a per-block vector (channel packing) or a per-position vector (flat).
    if (L.kind === 'grid' && L.blocks === 1) return be.addConst(y, -off[c]);
    if (L.kind === 'grid')
      return ops.addVec(
        y,
        perBlock(L, c, (ch) => -off[ch]),
      );
    const v = new Float64Array(L.period);
    for (let q = 0; q < v.length; q++) v[q] = -(off[q % off.length] ?? 0);
    return ops.addVec(y, v);
  });
  return { cts, layout: x.layout, factor: 1 };
}

/**
 * Branch c of an Add, brought down to `level` at `scale`. A polynomial's output scale follows the
 * chain's primes while a linear layer's is 2^40 by construction, so a residual branch can differ
 * from the other by a few parts per million (the dense ResNet example: 2^40 vs 2^40.0000046). A
 * branch above the level takes its last step down as a product with 1 encoded at q s / s_c and a
 * rescale by q instead of a bare switch: the same level, and exactly the scale s.
 */
export function addend<C>(be: CkksBackend<C>, c: C, level: number, scale: number, tmp: (c: C) => C): C {
  if (be.level(c) === level || Math.abs(be.scale(c) / scale - 1) <= 1e-12) return be.modSwitchTo(c, level);
  const above = be.modSwitchTo(c, level + 1);
  if (above !== c) tmp(above);
  return be.mulConst(above, 1, (be.prime(level + 1) * scale) / be.scale(above));
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
  // F: what the held value is, per channel, times the true one.
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
  const lane = (c: number) => lanes[s.poly.channels ? c : 0];
  const off = (c: number) => s.poly.channelOffset?.[c] ?? 0;
  /** A plaintext multiplication by a per-channel vector, rescaled (to `scale` when given), then a per-channel addition. */
  const affine = (
    c: C,
    i: number,
    mul: (ch: number) => number,
    add: (ch: number) => number,
    key: string,
    scale = TARGET_SCALE,
  ): C => {
    const enc = (scale * be.prime(be.level(c))) / be.scale(c);
    const m = ops.mulVecNoRescale(c, perBlock(L, i, mul), enc, `${s.node}:${i}:${key}`);
    const y = tmp(ops.rescale(m));
    ops.free(m);
    return tmp(ops.addVec(y, perBlock(L, i, add)));
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
    // (T / 2) p(d), less (T / 2) times the mean-shift offset; null for a constant.
    let a: C | null = null;
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
      a = tmp(evalPolyCkks(be, d, ls, s.plan, !!s.want, vec));
      if (q.channelOffset)
        a = tmp(
          ops.addVec(
            a,
            perBlock(L, i, (c) => -q.channelOffset![c]),
          ),
        );
    } else if (s.fold.form === 'square') {
      const sq = (c: number) => squareLane(lane(c))!;
      const signs = new Set(
        Array.from({ length: L.blocks }, (_, b) => channelAt(L, i, b))
          .filter((c) => c >= 0)
          .map((c) => sq(c).sign),
      );
      if (signs.size > 1) throw new Error(`${s.name}: squares of both signs on one ciphertext`);
      const u = s.want
        ? d
        : affine(
            d,
            i,
            (c) => (Math.sqrt(half[c]) * sq(c).mul) / F[c],
            (c) => Math.sqrt(half[c]) * sq(c).add,
            'u',
          );
      let y = tmp(be.mul(u, u));
      if (signs.has(-1)) y = tmp(be.negate(y));
      a = tmp(
        ops.addVec(
          y,
          perBlock(L, i, (c) => half[c] * (sq(c).offset - off(c))),
        ),
      );
    } else if (s.fold.form === 'affine') {
      a = affine(
        d,
        i,
        (c) => (half[c] * affineLane(lane(c)).mul) / F[c],
        (c) => half[c] * (affineLane(lane(c)).add - off(c)),
        'y',
      );
    }
    let sum = tmp(be.add(xi, moved));
    // The sum at the target's factor, landing on the |x|'s scale when both end one level down.
    if (rescale)
      sum = affine(
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
    const k = (c: number) => (S ? S[c] : 0) + (s.fold.form === 'constant' ? half[c] * (lane(c).coeffs[0] - off(c)) : 0);
    return ops.addVec(m, perBlock(L, i, k));
  });
  return {
    cts,
    layout: outL,
    factor: 1,
    scales: s.target === 'carry' || s.target.kind === 'factor' ? T.map((t) => 1 / t) : undefined,
  };
}

/**
 * An Add. Batch packing: ciphertext c of the sum adds ciphertext c - offset of each input that has
 * it (a shortcut's zero channels are the ciphertexts it lacks). Channel packing: an input whose
 * channels are not the sum's (ResNet's option-A shortcut: zero channels around it) is moved block
 * by block to its channels' places and masked (zeros elsewhere): rotations by whole blocks and one
 * plaintext product, which is also the product that brings the shortcut down to the other branch's
 * level and scale (addend), so it costs a level only where the shortcut arrives no higher than
 * the other branch (cost/cost.ts: linearLevels charges a channel pad one level).
 */
export function addValues<C>(
  s: AddStep,
  xs: Value<C>[],
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
  temps: C[],
): Value<C> {
  if (xs.some((x) => x.signs)) throw new Error(`${s.name}: pending signs at an Add`);
  const pend = xs.map((x, i) => Float64Array.from({ length: s.channels[i] }, (_, c) => factorOf(x, c)));
  // Every input must hold its channels at the same factor as the others hold them.
  const F = new Float64Array(s.C).fill(NaN);
  pend.forEach((f, i) =>
    f.forEach((v, c) => {
      const o = c + s.offsets[i];
      if (Number.isNaN(F[o])) F[o] = v;
      else if (Math.abs(v / F[o] - 1) > 1e-9)
        throw new Error(`${s.name}: its inputs carry different factors on channel ${o}`);
    }),
  );
  F.forEach((v, o) => {
    if (Number.isNaN(v)) F[o] = 1;
  });
  const L0 = xs[0].layout;
  const packed = L0.kind === 'grid' && L0.blocks > 1;
  const masked = xs.map((_, i) => packed && (s.offsets[i] !== 0 || s.channels[i] !== s.C));
  const lvl = Math.min(...xs.map((x, i) => be.level(x.cts[0]) - (masked[i] ? 1 : 0)));
  const at = xs.findIndex((x, i) => !masked[i] && be.level(x.cts[0]) === lvl);
  const scale = at >= 0 ? be.scale(xs[at].cts[0]) : TARGET_SCALE;
  const outL: Layout =
    L0.kind === 'flat' ? { ...L0, period: Math.max(...xs.map((x) => x.layout.period)) } : { ...L0, C: s.C };
  // Channel packing: the sum's ciphertexts; batch packing: one per channel, or the inputs' own.
  const nOut = packed
    ? gridCts(outL as GridLayout)
    : outL.kind === 'grid' && s.channels.some((c) => c !== s.C)
      ? s.C
      : xs[0].cts.length;
  const parts: C[][] = Array.from({ length: nOut }, () => []);
  xs.forEach((x, i) => {
    if (masked[i]) {
      maskedChannels(s, i, x, outL as GridLayout, lvl, scale, be, ops, tmp).forEach((c, j) => {
        if (c) parts[j].push(c);
      });
      return;
    }
    for (let j = 0; j < nOut; j++) {
      const src = packed ? j : j - s.offsets[i];
      if (src < 0 || src >= x.cts.length) continue;
      const part = addend(be, x.cts[src], lvl, scale, tmp);
      if (part !== x.cts[src]) temps.push(part);
      parts[j].push(part);
    }
  });
  const cts = parts.map((list, j) => {
    if (!list.length) throw new Error(`${s.name}: output ciphertext ${j} has no input`);
    let acc = list[0];
    for (const part of list.slice(1)) acc = tmp(be.add(acc, part));
    return acc;
  });
  const scales = F.some((v) => v !== 1) ? F : undefined;
  return { cts, factor: 1, scales, layout: outL };
}

/**
 * Input i of a channel-packed Add moved to the sum's blocks (output channel o from input channel
 * o - offset), zero in the blocks of channels it lacks, at `level` and exactly `scale`: per
 * output ciphertext, the sum over block rotations k of mask_k * rot(x, k blocks), rescaled once.
 */
function maskedChannels<C>(
  s: AddStep,
  i: number,
  x: Value<C>,
  outL: GridLayout,
  level: number,
  scale: number,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): (C | null)[] {
  const L = x.layout as GridLayout;
  const K = L.blocks;
  if (outL.blocks !== K || outL.period !== L.period) throw new Error(`${s.name}: its inputs are packed differently`);
  // For each output block, the (ciphertext, rotation) pairs that bring its channel there; the
  // pair most blocks can use is taken, so that few rotations serve all.
  const wanted: { j: number; b: number; options: number[] }[] = [];
  const uses = new Map<number, number>();
  for (let j = 0; j < gridCts(outL); j++)
    for (let b = 0; b < K; b++) {
      const c = channelAt(outL, j, b) - s.offsets[i];
      if (c < 0 || c >= s.channels[i]) continue;
      const options: number[] = [];
      for (let src = 0; src < x.cts.length; src++)
        for (let beta = 0; beta < K; beta++)
          if (channelAt(L, src, beta) === c) options.push(src * K + ((beta - b + K) % K));
      options.forEach((key) => uses.set(key, (uses.get(key) ?? 0) + 1));
      wanted.push({ j, b, options });
    }
  const masks = new Map<number, Map<number, Float64Array>>();
  for (const w of wanted) {
    const key = w.options.reduce((best, k) => ((uses.get(k) ?? 0) > (uses.get(best) ?? 0) ? k : best));
    if (!masks.has(key)) masks.set(key, new Map());
    const byJ = masks.get(key)!;
    if (!byJ.has(w.j)) byJ.set(w.j, new Float64Array(K * L.period));
    byJ.get(w.j)!.fill(1, w.b * L.period, (w.b + 1) * L.period);
  }
  const down = x.cts.map((c) => be.modSwitchTo(c, level + 1));
  down.forEach((c, k) => {
    if (c !== x.cts[k]) tmp(c);
  });
  const sums: (C | null)[] = new Array(gridCts(outL)).fill(null);
  for (const [key, byJ] of [...masks].sort((a, b) => a[0] - b[0])) {
    const src = Math.floor(key / K);
    const k = key % K;
    const moved = k === 0 ? down[src] : tmp(ops.rotate(down[src], k * L.period));
    const enc = (scale * be.prime(level + 1)) / be.scale(moved);
    for (const [j, mask] of byJ)
      sums[j] = accumulate(ops, sums[j], ops.mulVecNoRescale(moved, mask, enc, `${s.node}:mask:${i}:${key}:${j}`));
  }
  return sums.map((z) => {
    if (z === null) return null;
    const y = tmp(ops.rescale(z));
    ops.free(z);
    return y;
  });
}

/** Channel ciphertexts of several values side by side (batch packing), brought to one level and scale. */
export function concatValues<C>(s: ConcatStep, xs: Value<C>[], be: CkksBackend<C>): Value<C> {
  const ls = xs.map((x) => x.layout);
  if (ls.some((l) => l.kind !== 'grid' || l.blocks !== 1))
    throw new Error(`${s.name}: concatenation needs one ciphertext per channel`);
  if (xs.some((x) => x.factor !== 1 || x.signs || x.scales))
    throw new Error(`${s.name}: pending factors at a concatenation`);
  const all = xs.flatMap((x) => x.cts);
  const lvl = Math.min(...all.map((c) => be.level(c)));
  // One level for all; the scales stay each ciphertext's own (a linear layer reads them: encScales).
  const cts = all.map((c) => be.modSwitchTo(c, lvl));
  const L0 = ls[0] as GridLayout;
  return { cts, factor: 1, layout: { ...L0, C: ls.reduce((t, l) => t + (l as GridLayout).C, 0) } };
}

/**
 * Bootstraps a program makes (planned from the graph by cost/bootstrap.ts and mapped to steps by
 * the compiler): before step i, every ciphertext of each listed value is refreshed, and the
 * refreshed value serves every later reader.
 */
export interface Refresh<C> {
  before: Map<number, number[]>;
  bootstrap: (c: C) => C;
  onValue?: (valueId: number, ciphertexts: number) => void;
}

export function runProgram<C>(
  p: Program,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  inputs: C[],
  onStep?: (name: string, seconds: number) => void,
  blocks = 1,
  onValue?: (node: number, v: Value<C>) => void,
  refresh?: Refresh<C>,
): Value<C> {
  const vals = new Map<number, Value<C>>([[0, { cts: inputs, layout: inputLayout(p, blocks), factor: 1 }]]);
  const get = (id: number) => {
    const v = vals.get(id);
    if (!v) throw new Error(`value ${id} missing`);
    return v;
  };
  for (const [si, s] of p.steps.entries()) {
    const t0 = Date.now();
    const temps: C[] = [];
    // Bootstraps planned before this step; the old ciphertexts go with the step's temporaries
    // (unless another value holds them; the input is the caller's).
    for (const id of refresh?.before.get(si) ?? []) {
      const v = get(id);
      refresh!.onValue?.(id, v.cts.length);
      vals.set(id, { ...v, cts: v.cts.map((c) => refresh!.bootstrap(c)) });
      if (id !== 0) temps.push(...v.cts);
    }
    const tmp = (c: C) => {
      temps.push(c);
      return c;
    };
    let out: Value<C>;
    if (s.kind === 'dense') {
      // The hybrid diagonal method (Halevi-Shoup; m < n): z = sum_k P_k * rot(x, k) over D
      // diagonals, P_k[q] = W[input at q + k][q mod mPad], then each output's positions summed.
      const x = get(s.input);
      const mPad = pow2(s.m);
      const L = x.layout;
      // For each ciphertext, input index at each position (-1: junk, never read), and n, the
      // positions the diagonals run over. Input copies (mixLayout) hold an input at every position
      // of R n and need D = mPad / R diagonals; otherwise one position per input, D = mPad.
      let n: number;
      let at: Int32Array[];
      let D = mPad;
      if (L.kind === 'flat' && L.mix) {
        const { R, K } = L.mix;
        n = R * L.period;
        D = K;
        at = [
          Int32Array.from({ length: n }, (_, q) => {
            const f = mixIndex(q, K, mPad, L.period);
            return f < s.dIn ? f : -1;
          }),
        ];
      } else {
        const pos = Array.from({ length: s.dIn }, (_, f) => placeOf(L, f));
        n = Math.max(L.period, mPad, pow2(Math.max(...pos.map(([, q]) => q)) + 1));
        at = x.cts.map(() => new Int32Array(n).fill(-1));
        pos.forEach(([c, q], f) => {
          at[c][q] = f;
        });
      }
      // Baby steps are per input ciphertext, giant steps shared: with C ciphertexts the rotations
      // are C (g - 1) + D / g - 1, least near g = sqrt(D / C) (16 channels into 64 outputs:
      // g = 2, 47 rotations instead of 123 at g = sqrt(D)), and g Galois keys (giant steps below).
      const rotations = (gg: number) => x.cts.length * (gg - 1) + Math.ceil(D / gg) - 1;
      let g = 1;
      for (let gg = 2; gg <= D; gg *= 2) if (rotations(gg) < rotations(g)) g = gg;
      const encScale = encScales(be, x);
      const baby = x.cts.map((ct) => [
        ct,
        ...Array.from({ length: Math.min(g, D) - 1 }, (_, i) => tmp(ops.rotate(ct, i + 1))),
      ]);
      const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
      // Giant steps in Horner form, z = inner_0 + rot(inner_1 + rot(inner_2 + ..., g), g): the same
      // rotations as rot(inner_j, j g) each, all by g, so one Galois key serves them all.
      let z: C | null = null;
      for (let j = Math.ceil(D / g) - 1; j >= 0; j--) {
        if (z !== null) {
          const r = ops.rotate(z, g);
          ops.free(z);
          z = r;
        }
        let inner: C | null = null;
        for (let c = 0; c < x.cts.length; c++) {
          for (let i = 0; i < g && j * g + i < D; i++) {
            const k = j * g + i;
            // diag_k rotated by -j g, so that the giant rotation by j g lines it up.
            const d = new Float64Array(n);
            let nz = false;
            for (let q = 0; q < n; q++) {
              const idx = (q - j * g + n) % n;
              const row = idx % mPad;
              const f = at[c][(idx + k) % n];
              if (row < s.m && f >= 0) {
                d[q] = s.W[f * s.m + row] * factorOf(x, x.layout.kind === 'grid' ? f % x.layout.C : f);
                if (d[q] !== 0) nz = true;
              }
            }
            if (nz) inner = acc(inner, ops.mulVecNoRescale(baby[c][i], d, encScale[c], `${s.node}:${j}:${c}:${i}`));
          }
        }
        if (inner !== null) z = acc(z, inner);
      }
      if (z === null) throw new Error(`layer ${s.name} has an all-zero kernel`);
      out = finishDense(s, z, n, ops, tmp);
    } else if (s.kind === 'conv' && (get(s.input).layout as GridLayout).blocks > 1) {
      out = packedConv(s, get(s.input), be, ops, tmp);
    } else if (s.kind === 'conv') {
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('conv on a flat value');
      const L = x.layout;
      const encScale = encScales(be, x);
      const [pt, pl] = [s.pads[0][0], s.pads[1][0]];
      const taps = convTaps(L, s);
      // Baby steps over kernel columns, shared by every output channel (of the input's group).
      const baby = x.cts.map((ct) =>
        Array.from({ length: s.kw }, (_, dx) => (dx === pl ? ct : tmp(ops.rotate(ct, (dx - pl) * L.sx)))),
      );
      const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
      const cts: C[] = [];
      const cinG = s.cin / s.groups;
      for (let o = 0; o < s.cout; o++) {
        let z: C | null = null;
        const c0 = Math.floor(o / (s.cout / s.groups)) * cinG;
        for (let dy = 0; dy < s.kh; dy++) {
          let inner: C | null = null;
          for (let c = c0; c < c0 + cinG; c++)
            for (let dx = 0; dx < s.kw; dx++) {
              const w = convWeight(s, dy, dx, c, o) * factorOf(x, c);
              if (w !== 0)
                inner = acc(
                  inner,
                  ops.mulVecNoRescale(
                    baby[c][dx],
                    tapWeights(taps[dy][dx], w, (dy - pt) * L.sy, L.period, 0, L.period),
                    encScale[c],
                  ),
                );
            }
          if (inner === null) continue;
          let rotated: C = inner;
          if (dy !== pt) {
            rotated = ops.rotate(inner, (dy - pt) * L.sy);
            ops.free(inner);
          }
          z = acc(z, rotated);
        }
        if (z === null) throw new Error(`layer ${s.name}: output channel ${o} has an all-zero kernel`);
        const y = ops.rescale(z);
        ops.free(z);
        cts.push(be.addConst(y, s.b[o]));
        ops.free(y);
      }
      out = { cts, factor: 1, layout: convOutLayout(L, s, 1) };
    } else if (s.kind === 'pool') {
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('pool on a flat value');
      const L = x.layout;
      const cts = x.cts.map((ct) => {
        let row = ct;
        for (let b = 1; b < s.p; b++) {
          const r = ops.rotate(ct, b * L.sx);
          row = row === ct ? ops.addRaw(ct, r) : ops.addInto(row, r);
          ops.free(r);
        }
        let sum = row;
        for (let a = 1; a < s.p; a++) {
          const r = ops.rotate(row, a * L.sy);
          sum = sum === row ? ops.addRaw(row, r) : ops.addInto(sum, r);
          ops.free(r);
        }
        if (sum !== row && row !== ct) ops.free(row);
        return sum;
      });
      out = {
        cts,
        factor: x.factor / (s.p * s.p),
        signs: x.signs,
        scales: x.scales,
        layout: { ...L, H: Math.floor(L.H / s.p), W: Math.floor(L.W / s.p), sy: L.sy * s.p, sx: L.sx * s.p },
      };
    } else if (s.kind === 'poly') {
      const x = get(s.input);
      if (x.signs || (s.fold.intoPrevious && (x.factor !== 1 || x.scales)))
        throw new Error('pending pool factor or signs before an activation');
      const L = x.layout;
      out =
        L.kind === 'grid' && L.blocks > 1 && s.fold.form === 'square' && s.poly.channels && mixedSquareSigns(s.poly)
          ? packedSignedSquares(s, x, L, be, ops)
          : polyValue(s, x, be, ops, tmp);
    } else if (s.kind === 'tree') {
      out = treeValue(s, get(s.input), be, ops, tmp);
    } else if (s.kind === 'stride') {
      // The same ciphertexts read on a sparser grid: positions 0, s, 2s, ... of each axis.
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('stride on a flat value');
      const L = x.layout;
      out = { ...x, layout: { ...L, H: s.H, W: s.W, sy: L.sy * s.sh, sx: L.sx * s.sw } };
    } else if (s.kind === 'concat') {
      out = concatValues(s, s.inputs.map(get), be);
    } else {
      out = addValues(s, s.inputs.map(get), be, ops, tmp, temps);
    }
    if ((s.kind === 'dense' || s.kind === 'conv' || s.kind === 'poly') && s.outScale)
      out = { ...out, scales: s.outScale.map((w) => 1 / w) };
    vals.set(s.node, out);
    onValue?.(s.node, out);
    // Free values whose last reader has run (never the input, which the caller owns), and
    // temporaries: but no ciphertext a live value still holds (a stride or a concatenation
    // passes its input's ciphertexts on).
    for (const [id] of vals) {
      if (id === 0 || id === p.output || id === s.node) continue;
      if (!p.steps.slice(si + 1).some((t) => stepInputs(t).includes(id))) {
        temps.push(...vals.get(id)!.cts);
        vals.delete(id);
      }
    }
    const held = new Set([...vals.values()].flatMap((v) => v.cts));
    for (const c of new Set(temps)) if (!held.has(c)) ops.free(c);
    onStep?.(s.name, (Date.now() - t0) / 1000);
  }
  return get(p.output);
}

/** Levels the program consumes, by running it on the plaintext simulator (no encryption). */
/** How a program is recorded: the engine's chain and slots, the samples per ciphertext and the packing, and its bootstraps. */
export interface RecordOptions {
  primes: number[];
  levels: number;
  slots: number;
  B: number;
  blocks?: number;
  /** Bootstraps before steps (the engine has bootstrapping): value ids by step index. */
  refresh?: Map<number, number[]>;
}

/** The program as the trace every engine runs (trace.ts), for one packing and chain. */
export function recordProgram(p: Program, o: RecordOptions): Trace {
  const rec = new TraceRecorder(o.primes, o.levels, TARGET_SCALE, o.B, o.slots, !!o.refresh);
  const L0 = inputLayout(p, o.blocks ?? 1);
  const n = L0.kind === 'grid' ? gridCts(L0) : 1;
  const ins = Array.from({ length: n }, () => rec.input());
  const groups: number[] = [];
  const out = runProgram(
    p,
    rec,
    rec,
    ins,
    (name) => rec.mark(name),
    o.blocks ?? 1,
    undefined,
    o.refresh
      ? { before: o.refresh, bootstrap: (c) => rec.bootstrap(c), onValue: (_id, cts) => groups.push(cts) }
      : undefined,
  );
  const t = rec.finish(out.cts[0], n);
  t.predicted.bootstrapGroups = groups;
  return t;
}

export function simulateProgram(
  p: Program,
  primes: number[],
  levels: number,
): { levelsUsed: number; finalScale: number } {
  const r = emulate(p, 1, true, undefined, { primes, levels });
  return { levelsUsed: levels - r.level, finalScale: r.scale };
}

/**
 * Runs the program on plaintext position vectors, tracking levels and scales over `chain` (default:
 * a long chain of 2^40 primes); records rotations and the largest period. A dry run skips the
 * arithmetic on values and only follows layouts, rotations, levels and scales.
 */
export function emulate(
  p: Program,
  B: number,
  dry: boolean,
  slotsIn?: Float64Array[],
  chain = { primes: new Array<number>(128).fill(2 ** 40), levels: 100 },
  blocks = 1,
  onValue?: (node: number, values: (sample: number) => Float64Array) => void,
): { out: Float64Array; steps: Set<number>; maxPeriod: number; level: number; scale: number } {
  const L0 = inputLayout(p, blocks);
  // A dry run only needs to see layouts and rotations: tiny vectors.
  const S = slotsIn ? slotsIn[0].length : 1;
  const { primes } = chain;
  const sim = new SimBackend(primes);
  const steps = new Set<number>();
  let maxP = L0.period;
  const mk = (v: Float64Array, like: { level: number; scale: number }) => ({ v, level: like.level, scale: like.scale });
  const ops: LinearOps<ReturnType<SimBackend['fresh']>> = {
    rotate: (c, k) => {
      steps.add(k);
      return dry
        ? c
        : mk(
            Float64Array.from({ length: S }, (_, i) => c.v[(((i + k * B) % S) + S) % S]),
            c,
          );
    },
    mulVecNoRescale: (c, v, s) => {
      maxP = Math.max(maxP, v.length);
      return {
        v: dry ? c.v : c.v.map((x, i) => x * v[Math.floor(i / B) % v.length]),
        level: c.level,
        scale: c.scale * s,
      };
    },
    addRaw: (a, b) =>
      dry
        ? a
        : mk(
            a.v.map((x, i) => x + b.v[i]),
            a,
          ),
    addInto: (a, b) =>
      dry
        ? a
        : mk(
            a.v.map((x, i) => x + b.v[i]),
            a,
          ),
    rescale: (c) => {
      if (c.level < 1) throw new UserError('BUDGET_INFEASIBLE', 'the program runs out of levels', 'lower some degrees');
      return { v: c.v, level: c.level - 1, scale: c.scale / primes[c.level] };
    },
    addVec: (c, v) => {
      maxP = Math.max(maxP, v.length);
      return dry
        ? c
        : mk(
            c.v.map((x, i) => x + v[Math.floor(i / B) % v.length]),
            c,
          );
    },
    free: () => undefined,
  };
  const n = L0.kind === 'grid' ? gridCts(L0) : 1;
  const ins = slotsIn ?? Array.from({ length: n }, () => new Float64Array(S));
  // A value's elements in the graph's order (channels last) for one sample, its pending factors undone.
  const decode = (v: Value<SimCt>) => (b: number) => {
    const L = v.layout;
    const n = L.kind === 'flat' ? L.dim : L.H * L.W * L.C;
    return Float64Array.from({ length: n }, (_, f) => {
      const [i, q] = placeOf(L, f);
      return v.cts[i].v[(q * B + b) % S] * factorOf(v, L.kind === 'grid' ? f % L.C : f);
    });
  };
  const out = runProgram(
    p,
    sim,
    ops,
    ins.map((v) => sim.fresh(v, chain.levels, 2 ** 40)),
    undefined,
    blocks,
    onValue ? (node, v) => onValue(node, decode(v)) : undefined,
  ).cts[0];
  return { out: out.v, steps, maxPeriod: maxP, level: out.level, scale: out.scale };
}

/**
 * Runs the program on plaintext slot vectors with exactly the packing, rotations and products the
 * encrypted run uses (a functional emulator, no encryption): checks the compiled program against
 * the model before any key is generated, and serves the tests.
 */
export function emulateProgram(p: Program, slotsIn: Float64Array[], B: number, blocks = 1): Float64Array {
  return emulate(p, B, false, slotsIn, undefined, blocks).out;
}
