/**
 * Linear steps as CKKS operations: dense layers, convolutions and average poolings, for both
 * packings (layout.ts), and the value type every lowered step passes on (lower.ts runs them).
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
import type { CkksBackend } from './backend';
import { ConvStep, DenseStep, PoolStep, convWeight, pow2 } from './program';
import {
  GridLayout,
  Layout,
  convOutLayout,
  gridCts,
  gridPositions,
  homesOf,
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

/** A partial sum (a kernel row's, a block offset's) moved onto the outputs' positions (a rotation unless `by` is 0; the sum is freed). */
function shifted<C>(ops: LinearOps<C>, inner: C, by: number): C {
  if (by === 0) return inner;
  const r = ops.rotate(inner, by);
  ops.free(inner);
  return r;
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
 * product to the outputs (rot(v, shift)[q] = v[q + shift]): w at every position (a scalar, or in
 * `into` the block [at, at + period) shifted back) when every output's tap reads the image, else
 * w only where an output's tap does (`real`, from `at`, shifted back) and 0 where it reads the
 * padding's zeros.
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
    const from = (((at + shift) % length) + length) % length;
    if (into) v.fill(w, from, from + period);
    else v[0] = w;
    return v;
  }
  for (const q of real) v[(((at + q + shift) % length) + length) % length] = w;
  return v;
}

/**
 * A convolution on channel-packed ciphertexts (blocks > 1), by baby-step giant-step rotations
 * (Halevi & Shoup 2018; Lee et al., ICML 2022, for multiplexed channels). Output channel o at home
 * a_o (layout.ts: homesOf) takes sum_c sum_dy,dx w[dy,dx,c,o] x[a_c + q + dy sy + dx sx]; with
 * a_c - a_o = k period + e (k blocks, e the difference of the offsets in the block), out_j =
 * sum_k rot(sum_(i,e,dy,dx) W_(j,k,i,e,dy,dx) * B_(i,e,dy,dx), k period), each baby step B one
 * rotation of another (by e, dx sx or dy sy: the keys the layer needs anyway) and each W holding,
 * at a_o + q + k period, the weight of the channel that lands on o. Babies are shared by all
 * outputs and giants by all baby steps; a convolution costs one level, as in batch packing.
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
  const slots = K * L.period;
  const outL = convOutLayout(L, s, K);
  const encScale = encScales(be, x);
  const terms = convTerms(s, L, outL, x.cts.length);
  const [pt, pl] = [s.pads[0][0], s.pads[1][0]];
  const taps = convTaps(L, s);
  const every = outL.subs ? gridPositions(outL) : null;
  // Baby steps, made on first use from the one before them: x_i, rot by e, then dx sx, then dy sy.
  const babies = new Map<string, C>();
  const baby = (i: number, e: number, dx: number, dy: number): C => {
    const key = `${i}:${e}:${dx}:${dy}`;
    let c = babies.get(key);
    if (c) return c;
    if (dy !== pt) c = ops.rotate(baby(i, e, dx, pt), (dy - pt) * L.sy);
    else if (dx !== pl) c = ops.rotate(baby(i, e, pl, pt), (dx - pl) * L.sx);
    else c = e !== 0 ? ops.rotate(x.cts[i], e) : x.cts[i];
    if (c !== x.cts[i]) tmp(c);
    babies.set(key, c);
    return c;
  };
  const acc = (sum: C | null, term: C) => accumulate(ops, sum, term);
  const cts: C[] = [];
  for (let j = 0; j < gridCts(outL); j++) {
    let z: C | null = null;
    for (const [k, byBaby] of [...(terms.get(j) ?? new Map<number, Map<string, ConvTerm[]>>())].sort(
      (a, b) => a[0] - b[0],
    )) {
      let inner: C | null = null;
      for (const [ie, list] of byBaby) {
        const [i, e] = ie.split(':').map(Number);
        for (let dy = 0; dy < s.kh; dy++)
          for (let dx = 0; dx < s.kw; dx++) {
            const v = new Float64Array(slots);
            let nz = false;
            for (const t of list) {
              const w = convWeight(s, dy, dx, t.c, t.o) * factorOf(x, t.c);
              if (w === 0) continue;
              tapWeights(taps[dy][dx] ?? every, w, k * L.period, L.period, t.at, slots, v);
              nz = true;
            }
            if (nz)
              inner = acc(
                inner,
                ops.mulVecNoRescale(baby(i, e, dx, dy), v, encScale[i], `${s.node}:${j}:${k}:${ie}:${dy}:${dx}`),
              );
          }
      }
      if (inner !== null) z = acc(z, shifted(ops, inner, k * L.period));
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

/** Output channel o at home `at` reads input channel c. */
type ConvTerm = { at: number; o: number; c: number };

/**
 * A packed convolution's products, by output ciphertext j, giant step k (blocks) and baby step
 * "i:e" (input ciphertext, offset difference): for each output home and input channel, the
 * input home with the fewest blocks to go (a repeated channel is read from one block only).
 */
function convTerms(
  s: ConvStep,
  L: GridLayout,
  outL: GridLayout,
  n: number,
): Map<number, Map<number, Map<string, ConvTerm[]>>> {
  const K = L.blocks;
  const inHomes = new Map<number, { i: number; b: number; d: number }[]>();
  for (let i = 0; i < n; i++)
    for (const h of homesOf(L, i)) {
      if (h.c < 0) continue;
      if (!inHomes.has(h.c)) inHomes.set(h.c, []);
      inHomes.get(h.c)!.push({ i, b: h.b, d: h.d });
    }
  const cinG = s.cin / s.groups;
  const terms = new Map<number, Map<number, Map<string, ConvTerm[]>>>();
  for (let j = 0; j < gridCts(outL); j++)
    for (const h of homesOf(outL, j)) {
      if (h.c < 0) continue;
      const c0 = Math.floor(h.c / (s.cout / s.groups)) * cinG;
      for (let c = c0; c < c0 + cinG; c++) {
        const src = inHomes.get(c);
        if (!src) throw new Error(`${s.name}: input channel ${c} is in no block`);
        const from = src.reduce((best, t) => ((t.b - h.b + K) % K < (best.b - h.b + K) % K ? t : best));
        const k = (from.b - h.b + K) % K;
        const byK = terms.get(j) ?? new Map<number, Map<string, ConvTerm[]>>();
        terms.set(j, byK);
        const byBaby = byK.get(k) ?? new Map<string, ConvTerm[]>();
        byK.set(k, byBaby);
        const key = `${from.i}:${from.d - h.d}`;
        if (!byBaby.has(key)) byBaby.set(key, []);
        byBaby.get(key)!.push({ at: h.at, o: h.c, c });
      }
    }
  return terms;
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
 * A dense layer by the hybrid diagonal method (Halevi-Shoup; m < n): z = sum_k P_k * rot(x, k)
 * over D diagonals, P_k[q] = W[input at q + k][q mod mPad], then each output's positions summed.
 */
export function denseValue<C>(
  s: DenseStep,
  x: Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): Value<C> {
  const mPad = pow2(s.m);
  const { n, at, D } = diagonalPositions(s, x.layout, x.cts.length);
  // Baby steps are per input ciphertext, giant steps shared: with C ciphertexts the rotations
  // are C (g - 1) + D / g - 1, least near g = sqrt(D / C), with g Galois keys (giant steps below).
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
  return finishDense(s, z, n, ops, tmp);
}

/**
 * For each ciphertext of a dense layer's input, the input index at each position (-1: junk,
 * never read), and n, the positions the diagonals run over. Input copies (mixLayout) hold an
 * input at every position of R n and need D = mPad / R diagonals; otherwise one position per
 * input, D = mPad.
 */
function diagonalPositions(s: DenseStep, L: Layout, cts: number): { n: number; at: Int32Array[]; D: number } {
  const mPad = pow2(s.m);
  if (L.kind === 'flat' && L.mix) {
    const { R, K } = L.mix;
    const n = R * L.period;
    const at = Int32Array.from({ length: n }, (_, q) => {
      const f = mixIndex(q, K, mPad, L.period);
      return f < s.dIn ? f : -1;
    });
    return { n, at: [at], D: K };
  }
  const pos = Array.from({ length: s.dIn }, (_, f) => placeOf(L, f));
  const n = Math.max(L.period, mPad, pow2(Math.max(...pos.map(([, q]) => q)) + 1));
  const at = Array.from({ length: cts }, () => new Int32Array(n).fill(-1));
  pos.forEach(([c, q], f) => {
    at[c][q] = f;
  });
  return { n, at, D: mPad };
}

/** A convolution in batch packing (one ciphertext per channel): LoLa's shared baby steps (above). */
export function convValue<C>(
  s: ConvStep,
  x: Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
): Value<C> {
  if (x.layout.kind !== 'grid') throw new Error('conv on a flat value');
  const L = x.layout;
  if (L.blocks > 1) return packedConv(s, x, be, ops, tmp);
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
      if (inner !== null) z = acc(z, shifted(ops, inner, (dy - pt) * L.sy));
    }
    if (z === null) throw new Error(`layer ${s.name}: output channel ${o} has an all-zero kernel`);
    const y = ops.rescale(z);
    ops.free(z);
    cts.push(be.addConst(y, s.b[o]));
    ops.free(y);
  }
  return { cts, factor: 1, layout: convOutLayout(L, s, 1) };
}

/** Average pooling p x p, stride p: rotate-and-add along rows, then columns; the 1/p^2 stays pending. */
export function poolValue<C>(s: PoolStep, x: Value<C>, ops: LinearOps<C>): Value<C> {
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
  return {
    cts,
    factor: x.factor / (s.p * s.p),
    signs: x.signs,
    scales: x.scales,
    layout: { ...L, H: Math.floor(L.H / s.p), W: Math.floor(L.W / s.p), sy: L.sy * s.p, sx: L.sx * s.p },
  };
}
