/**
 * Lowering: a program's steps as CKKS operations on a backend, for one packing. The one place
 * that decides every rotation, product, rescale and bootstrap a program makes; run on the trace
 * recorder (trace.ts) it gives the program every engine executes, run on the plaintext simulator
 * with values it emulates the encrypted model (emulate.ts). Linear steps are in linear.ts; this
 * module holds the polynomials, max trees, Adds and concatenations, and the driver.
 */
import { lanesOf, squareLane } from '../cost/fold';
import type { CkksBackend } from './backend';
import { VecOps, channelLanes, evalFoldedCkks, evalPolyCkks, lanePoly, scaledPoly } from './polyEval';
import { AddStep, ConcatStep, PolyStep, Program, Step, mixedSquareSigns, stepInputs } from './program';
import { GridLayout, Layout, blockLanes, gridCts, homeSlots, homesOf, inputLayout, perBlock } from './layout';
import {
  LinearOps,
  TARGET_SCALE,
  Value,
  accumulate,
  addend,
  convValue,
  denseValue,
  factorOf,
  poolValue,
} from './linear';
import { treeValue } from './lowerTree';

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
  // The sum takes the layout of an input that holds all its channels (multiplexed or not).
  const whole = xs.findIndex((_, i) => s.offsets[i] === 0 && s.channels[i] === s.C);
  const L0 = xs[Math.max(0, whole)].layout;
  const packed = L0.kind === 'grid' && L0.blocks > 1;
  const sameSubs = (l: Layout) => l.kind === 'grid' && String(l.subs ?? [0]) === String((L0 as GridLayout).subs ?? [0]);
  const masked = xs.map((x, i) => packed && (s.offsets[i] !== 0 || s.channels[i] !== s.C || !sameSubs(x.layout)));
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
 * Input i of a channel-packed Add moved to the sum's homes (output channel o from input channel
 * o - offset), zero in the homes of channels it lacks, at `level` and exactly `scale`: per output
 * ciphertext, the sum over moves (e within a block, then k blocks) of mask * rot(rot(x, e), k
 * period), rescaled once. Two rotations rather than one by e + k period: no Galois keys beyond
 * the ones the convolutions use.
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
  // For each output home, the moves "src:e:k" that bring its channel there; the move most homes
  // can use is taken, so that few rotations serve all.
  const wanted: { j: number; at: number; options: string[] }[] = [];
  const uses = new Map<string, number>();
  for (let j = 0; j < gridCts(outL); j++)
    for (const h of homesOf(outL, j)) {
      const c = h.c - s.offsets[i];
      if (h.c < 0 || c < 0 || c >= s.channels[i]) continue;
      const options: string[] = [];
      for (let src = 0; src < x.cts.length; src++)
        for (const g of homesOf(L, src)) if (g.c === c) options.push(`${src}:${g.d - h.d}:${(g.b - h.b + K) % K}`);
      options.forEach((key) => uses.set(key, (uses.get(key) ?? 0) + 1));
      wanted.push({ j, at: h.at, options });
    }
  const masks = new Map<string, Map<number, Float64Array>>();
  for (const w of wanted) {
    const key = w.options.reduce((best, k) => ((uses.get(k) ?? 0) > (uses.get(best) ?? 0) ? k : best));
    if (!masks.has(key)) masks.set(key, new Map());
    const byJ = masks.get(key)!;
    if (!byJ.has(w.j)) byJ.set(w.j, new Float64Array(K * L.period));
    const mask = byJ.get(w.j)!;
    for (const q of homeSlots(outL, w.at)) mask[q] = 1;
  }
  const down = x.cts.map((c) => be.modSwitchTo(c, level + 1));
  down.forEach((c, k) => {
    if (c !== x.cts[k]) tmp(c);
  });
  const within = new Map<string, C>();
  const sums: (C | null)[] = new Array(gridCts(outL)).fill(null);
  for (const [key, byJ] of [...masks].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const [src, e, k] = key.split(':').map(Number);
    const shifted = within.get(`${src}:${e}`) ?? (e === 0 ? down[src] : tmp(ops.rotate(down[src], e)));
    within.set(`${src}:${e}`, shifted);
    const moved = k === 0 ? shifted : tmp(ops.rotate(shifted, k * L.period));
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
    let out = stepValue(s, get, be, ops, tmp, temps);
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

/** One step's output value from its inputs' (`temps`: ciphertexts to free after the step). */
function stepValue<C>(
  s: Step,
  get: (id: number) => Value<C>,
  be: CkksBackend<C>,
  ops: LinearOps<C>,
  tmp: (c: C) => C,
  temps: C[],
): Value<C> {
  switch (s.kind) {
    case 'dense':
      return denseValue(s, get(s.input), be, ops, tmp);
    case 'conv':
      return convValue(s, get(s.input), be, ops, tmp);
    case 'pool':
      return poolValue(s, get(s.input), ops);
    case 'poly': {
      const x = get(s.input);
      if (x.signs || (s.fold.intoPrevious && (x.factor !== 1 || x.scales)))
        throw new Error('pending pool factor or signs before an activation');
      const L = x.layout;
      return L.kind === 'grid' &&
        L.blocks > 1 &&
        s.fold.form === 'square' &&
        s.poly.channels &&
        mixedSquareSigns(s.poly)
        ? packedSignedSquares(s, x, L, be, ops)
        : polyValue(s, x, be, ops, tmp);
    }
    case 'tree':
      return treeValue(s, get(s.input), be, ops, tmp);
    case 'stride': {
      // The same ciphertexts read on a sparser grid: positions 0, s, 2s, ... of each axis.
      const x = get(s.input);
      if (x.layout.kind !== 'grid') throw new Error('stride on a flat value');
      const L = x.layout;
      return { ...x, layout: { ...L, H: s.H, W: s.W, sy: L.sy * s.sh, sx: L.sx * s.sw } };
    }
    case 'concat':
      return concatValues(s, s.inputs.map(get), be);
    case 'add':
      return addValues(s, s.inputs.map(get), be, ops, tmp, temps);
  }
}
