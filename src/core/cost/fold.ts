/**
 * Folding a polynomial activation's scalars into the linear layer before it.
 *
 * A Chebyshev series on [a, b] is evaluated on t = alpha x + beta. When x comes straight from a
 * linear layer that nothing else reads, that layer computes any per-channel affine map of x for
 * free (its weights and bias are scaled by it), so:
 * - degree >= 3 ('series'): the layer computes t; the series costs its plan's depth (bsgs.ts);
 * - degree 1 ('affine'): y = c0 + c1 t is itself affine in x; the layer computes y: 0 levels;
 * - degree 2 ('square'): y = A t^2 + B t + C = sign(A) u^2 + C - B^2/(4A) with
 *   u = sqrt|A| (t + B/(2A)); the layer computes u, and one squaring (1 level) plus an exact
 *   negation and addition give y. This is the square activation of CryptoNets (Gilad-Bachrach et
 *   al., ICML 2016) and LoLa at one level; Orion folds its Chebyshev prescale the same way.
 * Without such a layer (the input is shared, or comes from an Add), the map is one plaintext
 * multiplication (1 level) before the same forms: degree 1 then costs 1 level and degree 2 two.
 *
 * Per channel, the layer scales each output channel by that channel's map. The sign of A comes
 * after the square: exact where channels are separate ciphertexts (rank-3 values, one ciphertext
 * per channel) or share one sign; a flat value whose channels' signs differ needs two copies of u
 * with different signs, which only a plaintext multiplication makes, so its map is not folded.
 *
 * The square form trades the series' error for 2 |u| times CKKS's (absolute) noise; where the
 * degree-2 term is tiny against the linear one, |u| ~ |B| / (2 sqrt|A|) grows without bound, so a
 * lane that would lose more than SQUARE_MAX_LOSS_BITS is evaluated as a series instead.
 *
 * The cost model, the degree selection, the HE program and the export all take their decision
 * from planFold, so that the levels the analysis reports are the levels the program uses.
 */
import { Graph, GraphNode, consumersOf } from '../model/graph';
import { unitMap } from '../numerics/chebyshev';
import type { PolyActivation } from '../numerics/polynomial';

/** One polynomial: Chebyshev coefficients in t on [a, b]. */
export interface Lane { coeffs: ArrayLike<number>; a: number; b: number }

/** y = mul x + add. */
export interface AffineLane { mul: number; add: number }
/** u = mul x + add; y = sign u^2 + offset. */
export interface SquareLane { mul: number; add: number; sign: 1 | -1; offset: number }

export type FoldForm = 'series' | 'affine' | 'square';

export interface Fold {
  /** How the polynomial is evaluated: a Chebyshev series on t, an affine map, or a signed square. */
  form: FoldForm;
  /** The previous linear layer computes the form's input (t, y or u): no level for the map. */
  intoPrevious: boolean;
  /** Square form whose lanes' signs differ on one ciphertext: u and sign * u are both computed. */
  mixedSigns: boolean;
  /** Why a fold is not made where the degree would allow one; null when none is missing. */
  why: string | null;
}

/** Bits of precision the square form may lose against the series before the series is used. */
export const SQUARE_MAX_LOSS_BITS = 10;

const coeff = (l: Lane, i: number) => l.coeffs[i] ?? 0;

/** A degree <= 1 polynomial as y = mul x + add. */
export function affineLane(l: Lane): AffineLane {
  const { scale, shift } = unitMap(l);
  return { mul: coeff(l, 1) * scale, add: coeff(l, 1) * shift + coeff(l, 0) };
}

/**
 * A degree-2 polynomial as sign u^2 + offset with u = mul x + add, or null where that loses too
 * much precision. T_2 = 2t^2 - 1, so A = 2 c2, B = c1, C = c0 - c2 in monomials of t. Errors:
 * the series' is about (|B| + 2|A|) noise, the square's 2 |u|max noise = (2k + |B|/k) noise with
 * k = sqrt|A| (CKKS noise is absolute, so an error below 2^10 noise is accepted whatever the scale).
 */
export function squareLane(l: Lane): SquareLane | null {
  const A = 2 * coeff(l, 2);
  const B = coeff(l, 1);
  const C = coeff(l, 0) - coeff(l, 2);
  if (A === 0) return B === 0 ? { mul: 0, add: 0, sign: 1, offset: C } : null;
  const k = Math.sqrt(Math.abs(A));
  if (2 * k + Math.abs(B) / k > 2 ** SQUARE_MAX_LOSS_BITS * Math.max(Math.abs(B) + 2 * Math.abs(A), 1)) return null;
  const s = B / (2 * A);
  const { scale, shift } = unitMap(l);
  return { mul: k * scale, add: k * (shift + s), sign: A > 0 ? 1 : -1, offset: C - A * s * s };
}

/** The activation's polynomials, one per channel (or the layer's one). */
export function lanesOf(p: PolyActivation): Lane[] {
  return p.channels ? p.channels.coeffs.map((c, i) => ({ coeffs: c, ...p.channels!.intervals[i] })) : [p];
}

/** A lane that computes nothing (padding positions): u = 0. */
const isZeroLane = (q: SquareLane) => q.mul === 0 && q.add === 0;

/** The sign every non-zero lane shares, or null if they differ. */
export function sharedSign(qs: SquareLane[]): 1 | -1 | null {
  const signs = new Set(qs.filter((q) => !isZeroLane(q)).map((q) => q.sign));
  return signs.size > 1 ? null : signs.has(-1) ? -1 : 1;
}

/** Whether, and why not, the activation's input comes straight from a linear layer nothing else reads. */
export function inputFold(g: Graph, act: GraphNode): { ok: boolean; why: string | null } {
  const src = g.nodes[act.inputs[0]];
  if (!['dense', 'conv2d', 'batchnorm'].includes(src.spec.op)) {
    return { ok: false, why: `its input comes from ${src.className} '${src.layer}', not from a Dense, Conv2D or BatchNormalization layer that could compute the input map` };
  }
  if (consumersOf(g, src.id).length !== 1) return { ok: false, why: `its input layer '${src.layer}' also feeds another layer, so it cannot compute this activation's map` };
  return { ok: true, why: null };
}

/**
 * How the activation's polynomial of `degree` is evaluated and what is folded into the layer
 * before it. With `forms` false (--no-fold), every degree is a series and only the input map
 * to [-1, 1] folds: he-approx's levels before folding, for libraries that evaluate only series.
 */
export function planFold(g: Graph, act: GraphNode, p: PolyActivation, degree: number, forms = true): Fold {
  const input = inputFold(g, act);
  if (!forms) return { form: 'series', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  if (degree <= 1) return { form: 'affine', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  if (degree >= 3) return { form: 'series', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  const qs = lanesOf(p).map(squareLane);
  if (qs.some((q) => q === null)) {
    return { form: 'series', intoPrevious: input.ok, mixedSigns: false,
      why: `its degree-2 term is too small against the linear one for a square (it would lose over ${SQUARE_MAX_LOSS_BITS} bits): evaluated as a series${input.why ? `; ${input.why}` : ''}` };
  }
  // Rank-3 values hold one channel per ciphertext: each negates on its own.
  const separate = act.shape.length === 3 || !p.channels;
  if (!separate && sharedSign(qs as SquareLane[]) === null) {
    return { form: 'square', intoPrevious: false, mixedSigns: true,
      why: input.ok ? 'its channels\' squares take different signs on one ciphertext, so u and -u are both made by a plaintext multiplication (1 level)' : input.why };
  }
  return { form: 'square', intoPrevious: input.ok, mixedSigns: false, why: input.why };
}

/** Levels of the form itself (polyDepth) and of its input map when not folded (affineLevel). */
export function foldLevels(f: Fold, planDepth: number): { polyDepth: number; affineLevel: number } {
  return { polyDepth: f.form === 'series' ? planDepth : f.form === 'square' ? 1 : 0, affineLevel: f.intoPrevious ? 0 : 1 };
}

/** What the previous linear layer hands the activation for raw input x: t, y or u if the fold is made, else x. */
export function foldedInput(l: Lane, f: Fold, x: number): number {
  if (!f.intoPrevious) return x;
  if (f.form === 'affine') { const q = affineLane(l); return q.mul * x + q.add; }
  if (f.form === 'square') { const q = squareLane(l)!; return q.mul * x + q.add; }
  const { scale, shift } = unitMap(l);
  return scale * x + shift;
}

/** Non-scalar (ciphertext x ciphertext) multiplications of the form; `planMults` is the series plan's. */
export function foldMults(f: Fold, planMults: number): number {
  return f.form === 'series' ? planMults : f.form === 'square' ? 1 : 0;
}
