/**
 * Where a program's values live in the slots (the packings). Slots are position-major with B
 * samples interleaved (slot = position * B + sample) in batch packing; latency packing puts one
 * sample's channels side by side (Lee et al.'s multiplexed packing, ICML 2022: a block per channel,
 * and channels beyond the blocks in the gaps strides leave) or a flat input in permuted copies.
 */
import { size } from '../model/graph';
import type { PolyActivation } from '../model/execute';
import { PolyInput, lanePoly } from './polyEval';
import { ConvStep, DenseStep, Program, channelPackingObstacle, pow2, stepInputs } from './program';

/**
 * Where values live. 'flat': one ciphertext, element f at position f, periodic with `period`.
 * 'grid': element (y, x) of a channel at position y*sy + x*sx of its block (the input image's
 * row-major grid, strided by the convolutions and pools so far); other positions hold junk that no
 * later weight reads. A block is `period` positions. With blocks = 1 (batch packing) each channel
 * has its own ciphertext and positions repeat with `period`. With blocks = K > 1 (channel packing,
 * one sample: Lee et al.'s multiplexed packing, ICML 2022) K channels sit side by side in one
 * ciphertext of K * period slots, channel c in block c mod K of ciphertext floor(c / K); fewer
 * channels than blocks repeat (block b holds channel b mod C); more share blocks at the offsets
 * `subs` (homesOf) when strides have left gaps, before they take another ciphertext.
 */
export type GridLayout = {
  kind: 'grid';
  C: number;
  H: number;
  W: number;
  sy: number;
  sx: number;
  period: number;
  blocks: number;
  /**
   * Offsets within a block where further channels sit (Lee et al.'s multiplexing, ICML 2022):
   * absent or [0], one channel per block; [0, d, ...] puts channel s K + b of a ciphertext at
   * offset subs[s] of block b, in the gaps a strided grid leaves (`subOffsets`).
   */
  subs?: number[];
};
/**
 * A flat value: element f at position f, periodic with `period`. With `mix` (the program's input,
 * one sample, read by a dense layer alone) R permuted copies fill R * period positions instead:
 * position p holds element mixIndex(p), and nothing is periodic below R * period.
 */
export type FlatLayout = { kind: 'flat'; period: number; dim: number; mix?: { R: number; K: number } };
export type Layout = FlatLayout | GridLayout;
/** The dense layer that alone reads the program's input (null: none, or not alone). */
export function inputDense(p: Program): DenseStep | null {
  const readers = p.steps.filter((s) => stepInputs(s).includes(0));
  return readers.length === 1 && readers[0].kind === 'dense' ? readers[0] : null;
}

/**
 * The input's layout. blocks > 1 (latency packing, one sample): R = blocks permuted copies of a
 * flat input if a dense layer alone reads it (mixIndex), else `blocks` channel blocks of a grid.
 */
export function inputLayout(p: Program, blocks = 1): Layout {
  const shape = p.inputShape;
  const dense = blocks > 1 ? inputDense(p) : null;
  if (dense) {
    if (pow2(dense.m) % blocks) throw new Error(`${blocks} input copies for ${dense.name}'s ${pow2(dense.m)} outputs`);
    return { kind: 'flat', period: pow2(size(shape)), dim: size(shape), mix: { R: blocks, K: pow2(dense.m) / blocks } };
  }
  if (shape.length === 3)
    return {
      kind: 'grid',
      C: shape[2],
      H: shape[0],
      W: shape[1],
      sy: shape[1],
      sx: 1,
      period: pow2(shape[0] * shape[1]),
      blocks,
    };
  return { kind: 'flat', period: pow2(size(shape)), dim: size(shape) };
}

/** Channels a ciphertext of a grid value holds side by side (blocks times offsets per block). */
export const perCiphertext = (l: GridLayout) => l.blocks * (l.subs?.length ?? 1);

/** Ciphertexts a grid value takes. */
export const gridCts = (l: GridLayout) => (l.C <= l.blocks ? 1 : Math.ceil(l.C / perCiphertext(l)));

/** The grid's positions within a block, row-major (y sy + x sx). */
export function gridPositions(l: GridLayout): number[] {
  const q: number[] = [];
  for (let y = 0; y < l.H; y++) for (let x = 0; x < l.W; x++) q.push(y * l.sy + x * l.sx);
  return q;
}

/**
 * Where channels sit in ciphertext i: per block b and offset s, the slot `at` = b period +
 * subs[s] where its grid starts, and the channel there (-1: none). Channel i K S + s K + b.
 */
export function homesOf(l: GridLayout, i: number): { at: number; b: number; d: number; c: number }[] {
  const subs = l.subs ?? [0];
  const homes: { at: number; b: number; d: number; c: number }[] = [];
  for (const [si, d] of subs.entries())
    for (let b = 0; b < l.blocks; b++) {
      const c = subs.length === 1 ? channelAt(l, i, b) : i * perCiphertext(l) + si * l.blocks + b;
      homes.push({ at: b * l.period + d, b, d, c: c < l.C ? c : -1 });
    }
  return homes;
}

/**
 * The slots a channel's vector entries fill from its home `at`: the whole block with one channel
 * per block (its junk positions take the channel's values too, as before multiplexing), only the
 * grid's positions when channels share a block.
 */
export function homeSlots(l: GridLayout, at: number): number[] {
  if (!l.subs || l.subs.length === 1) return Array.from({ length: l.period }, (_, q) => at + q);
  return gridPositions(l).map((q) => at + q);
}

/**
 * Offsets for `count` channels per block of a strided grid (Lee et al.'s multiplexed packing,
 * ICML 2022): 0 and the smallest further offsets d whose shifted grid meets neither the grid nor
 * another offset's and stays inside the block. Fewer when the gaps hold fewer.
 */
export function subOffsets(l: GridLayout, count: number): number[] {
  const grid = gridPositions(l);
  const last = Math.max(...grid);
  const used = new Uint8Array(l.period);
  grid.forEach((q) => (used[q] = 1));
  const subs = [0];
  for (let d = 1; d < l.period - last && subs.length < count; d++) {
    if (grid.some((q) => used[q + d])) continue;
    grid.forEach((q) => (used[q + d] = 1));
    subs.push(d);
  }
  return subs;
}

/** The channel block b of ciphertext i holds (-1: none). */
export function channelAt(l: GridLayout, i: number, b: number): number {
  if (l.C <= l.blocks) return i === 0 ? b % l.C : -1;
  const c = i * l.blocks + b;
  return c < l.C ? c : -1;
}

/** Input (flat index in Keras order) -> [ciphertext, position] for a value's layout (a repeated channel: its first block). */
export function placeOf(l: Layout, f: number): [number, number] {
  if (l.kind === 'flat') return [0, f];
  const c = f % l.C;
  const yx = Math.floor(f / l.C);
  const per = perCiphertext(l);
  const [i, r] = l.C <= l.blocks ? [0, c] : [Math.floor(c / per), c % per];
  const at = (r % l.blocks) * l.period + (l.subs?.[Math.floor(r / l.blocks)] ?? 0);
  return [i, at + Math.floor(yx / l.W) * l.sy + (yx % l.W) * l.sx];
}

/**
 * The grid a convolution leaves: strides stretch the grid instead of moving data; output (y, x)
 * sits where input (s y, s x) was, whatever the padding (the taps reach back by the pads).
 */
export function convOutLayout(L: GridLayout, s: ConvStep, blocks: number): GridLayout {
  const [[pt, pb], [pl, pr]] = s.pads;
  const out: GridLayout = {
    kind: 'grid',
    C: s.cout,
    H: Math.floor((L.H + pt + pb - s.kh) / s.strides[0]) + 1,
    W: Math.floor((L.W + pl + pr - s.kw) / s.strides[1]) + 1,
    sy: L.sy * s.strides[0],
    sx: L.sx * s.strides[1],
    period: L.period,
    blocks,
  };
  // More channels than blocks: into the gaps strides left, before another ciphertext.
  if (blocks > 1 && s.cout > blocks) {
    const subs = subOffsets(out, Math.ceil(s.cout / blocks));
    if (subs.length > 1) out.subs = subs;
  }
  return out;
}

/**
 * Where tap (dy, dx) of a padded convolution reads zeros: for output (y, x) the input
 * (s y + dy - top, s x + dx - left) lies outside the image. Null when every output's tap reads the
 * image (every tap of a valid convolution): a scalar weight then does. Otherwise the positions of
 * the outputs whose tap is real, in the input grid's positions, for a masked weight vector.
 */
export function tapPositions(L: GridLayout, s: ConvStep, dy: number, dx: number): number[] | null {
  const out = convOutLayout(L, s, L.blocks);
  const [sh, sw] = s.strides;
  const iy = (y: number) => sh * y + dy - s.pads[0][0];
  const ix = (x: number) => sw * x + dx - s.pads[1][0];
  const inside = (v: number, n: number) => v >= 0 && v < n;
  if (inside(iy(0), L.H) && inside(iy(out.H - 1), L.H) && inside(ix(0), L.W) && inside(ix(out.W - 1), L.W)) return null;
  const q: number[] = [];
  for (let y = 0; y < out.H; y++) {
    if (!inside(iy(y), L.H)) continue;
    for (let x = 0; x < out.W; x++) if (inside(ix(x), L.W)) q.push(y * out.sy + x * out.sx);
  }
  return q;
}

/** A slot vector of a channel-packed ciphertext i: each channel home's slots (homeSlots) hold f(its channel), 0 elsewhere. */
export function perBlock(L: GridLayout, i: number, f: (channel: number) => number): Float64Array {
  const v = new Float64Array(L.blocks * L.period);
  for (const h of homesOf(L, i)) {
    if (h.c < 0) continue;
    const w = f(h.c);
    for (const q of homeSlots(L, h.at)) v[q] = w;
  }
  return v;
}

/** Per-slot polynomials of channel-packed ciphertext i: each home's slots its channel's (elsewhere channel 0's: junk no one reads). */
export function blockLanes(p: PolyActivation, L: GridLayout, i: number): PolyInput[] {
  const lanes = new Array<PolyInput>(L.blocks * L.period).fill(lanePoly(p, 0));
  for (const h of homesOf(L, i)) {
    if (h.c <= 0) continue;
    const lane = lanePoly(p, h.c);
    for (const q of homeSlots(L, h.at)) lanes[q] = lane;
  }
  return lanes;
}

/**
 * The input element position p of an input-copies layout holds (mPad = K R outputs of the dense
 * layer reading it, n = period inputs, R copies). The hybrid diagonal method needs mPad diagonals
 * when the input is one periodic copy; with R copies side by side it needs K = mPad / R: position p
 * holds input K (floor(p / mPad) mod n/K) + p mod K, so that the positions s = r (mod mPad) of
 * output r, each reading p = s + k for k < K, meet every input exactly once (for fixed k the copy
 * index floor(p / mPad) only shifts, mod n/K, by whether r + k passes mPad). The sum over those
 * positions (finishDense) leaves y periodic with mPad, as every later step expects; the client lays
 * the copies out when it encrypts (packSamples). The MLP's 784 -> 128 at N=16384 (R = 8): 16
 * products and 12 rotations instead of 128 and 25.
 */
export const mixIndex = (p: number, K: number, mPad: number, n: number) =>
  K * (Math.floor(p / mPad) % (n / K)) + (p % K);

/**
 * Packs samples, one slot vector per input ciphertext. Batch packing (blocks = 1): position-major,
 * slot q*B + b holds sample b's value at position q mod P (P: the input layout's period). Latency
 * packing (blocks > 1, one sample): `blocks` permuted copies of a flat input read by a dense layer
 * (mixIndex), or else channel blocks: block b of ciphertext i holds its channel's grid
 * (`channelAt`), a channel repeated in every block that holds it.
 */
export function packSamples(
  p: Program,
  xs: Float32Array,
  count: number,
  B: number,
  slots: number,
  blocks = 1,
): Float64Array[] {
  const L = inputLayout(p, blocks);
  const per = size(p.inputShape);
  if (L.kind === 'flat' && L.mix) {
    const { R, K } = L.mix;
    if (count !== 1 || B !== 1 || slots % (R * L.period))
      throw new Error('input copies hold one sample in copies that fill the slots');
    const v = new Float64Array(slots);
    for (let q = 0; q < slots; q++) {
      const f = mixIndex(q % (R * L.period), K, K * R, L.period);
      if (f < per) v[q] = xs[f];
    }
    return [v];
  }
  if (L.kind === 'grid' && blocks > 1) {
    if (count !== 1 || B !== 1 || blocks * L.period !== slots)
      throw new Error('channel packing holds one sample in blocks that fill the slots');
    const outs = Array.from({ length: gridCts(L) }, () => new Float64Array(slots));
    for (let f = 0; f < per; f++) {
      const pos = placeOf(L, f)[1] % L.period;
      for (let i = 0; i < outs.length; i++)
        for (let b = 0; b < blocks; b++) if (channelAt(L, i, b) === f % L.C) outs[i][b * L.period + pos] = xs[f];
    }
    return outs;
  }
  const C = L.kind === 'grid' ? L.C : 1;
  const outs = Array.from({ length: C }, () => new Float64Array(slots));
  for (let f = 0; f < per; f++) {
    const [c, pos] = placeOf(L, f);
    for (let q = pos; q < slots / B; q += L.period)
      for (let b = 0; b < count; b++) outs[c][q * B + b] = xs[b * per + f];
  }
  return outs;
}

/**
 * How latency packing lays out one sample in `slots`: permuted copies of a flat input that a dense
 * layer alone reads (`copies`, mixIndex), or else channel blocks of an image grid; `blocks` 1 and
 * `why` when neither applies.
 */
export function latencyPacking(p: Program, slots: number): { blocks: number; copies: boolean; why: string | null } {
  const dense = inputDense(p);
  const n = pow2(size(p.inputShape));
  if (dense) {
    const R = slots % n === 0 ? Math.min(slots / n, pow2(dense.m)) : 1;
    return R > 1
      ? { blocks: R, copies: true, why: null }
      : { blocks: 1, copies: false, why: `one copy of the input fills the ${slots} slots` };
  }
  const obstacle = channelPackingObstacle(p);
  if (obstacle) return { blocks: 1, copies: false, why: obstacle };
  const L = inputLayout(p);
  if (slots % L.period)
    return { blocks: 1, copies: false, why: `${slots} slots do not hold whole channels of ${L.period} positions` };
  return { blocks: slots / L.period, copies: false, why: null };
}
