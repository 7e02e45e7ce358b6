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
import { treeFeedsLinearOnly, treeInputObstacle, treeOutput, treeStep } from '../model/maxTree';
import { unitMap } from '../numerics/chebyshev';
import type { PolyActivation } from '../numerics/polynomial';

/** One polynomial: Chebyshev coefficients in t on [a, b]. */
export interface Lane {
  coeffs: ArrayLike<number>;
  a: number;
  b: number;
}

/** y = mul x + add. */
export interface AffineLane {
  mul: number;
  add: number;
}
/** u = mul x + add; y = sign u^2 + offset. */
export interface SquareLane {
  mul: number;
  add: number;
  sign: 1 | -1;
  offset: number;
}

/** 'constant': an even polynomial of degree <= 1 (a max tree's |x| as a constant: the tree is then linear pooling), which needs no level. */
export type FoldForm = 'series' | 'affine' | 'square' | 'constant';

export interface Fold {
  /** How the polynomial is evaluated: a Chebyshev series on t, an affine map, a signed square, or a constant. */
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

/**
 * Whether, and why not, the activation's input comes straight from a layer that computes any
 * per-channel affine map of it at no level, and nothing else reads: a linear layer, or the last
 * step of a max tree (its pairwise maximum's sum is scaled in parallel with its |x|, whose
 * polynomial takes the same scale into its coefficients; model/maxTree.ts).
 */
export function inputFold(g: Graph, act: GraphNode): { ok: boolean; why: string | null } {
  const step = treeStep(g, act);
  if (step) {
    if (step.step > 1) return { ok: true, why: null };
    const obstacle = treeInputObstacle(g, step);
    return obstacle
      ? { ok: false, why: `it is |a - b| of max pooling '${act.layer}', and ${obstacle}` }
      : { ok: true, why: null };
  }
  const end = treeEndBefore(g, act);
  if (end) {
    return end.ok ? { ok: true, why: null } : { ok: false, why: end.why };
  }
  const src = g.nodes[act.inputs[0]];
  if (!['dense', 'conv2d', 'batchnorm'].includes(src.spec.op)) {
    return {
      ok: false,
      why: `its input comes from ${src.className} '${src.layer}', not from a Dense, Conv2D or BatchNormalization layer that could compute the input map`,
    };
  }
  if (consumersOf(g, src.id).length !== 1)
    return {
      ok: false,
      why: `its input layer '${src.layer}' also feeds another layer, so it cannot compute this activation's map`,
    };
  return { ok: true, why: null };
}

/** The layer that computes the activation's input map when the fold is made (the report's fold.into). */
export function foldInto(g: Graph, act: GraphNode): string {
  const step = treeStep(g, act);
  if (step && step.step > 1) return `${act.layer} (step ${step.step - 1})`;
  return g.nodes[step ? step.input : act.inputs[0]].layer;
}

/** If the activation reads a max tree's output: whether that tree's last step can compute its map (it is the only reader). */
function treeEndBefore(g: Graph, act: GraphNode): { ok: boolean; why: string | null } | null {
  let id = act.inputs[0];
  while (['slice', 'flatten', 'reshape', 'identity', 'transpose'].includes(g.nodes[id].spec.op))
    id = g.nodes[id].inputs[0];
  const n = g.nodes[id];
  if (n.spec.op !== 'pairmax') return null;
  const last = treeStep(g, g.nodes[n.inputs[1]]);
  if (!last || last.next !== null || treeOutput(g, id) !== act.inputs[0]) return null;
  if (g.nodes.filter((m) => m.inputs.includes(act.inputs[0])).length !== 1)
    return {
      ok: false,
      why: `its input, max pooling '${n.layer}', also feeds another layer, so it cannot compute this activation's map`,
    };
  return { ok: true, why: null };
}

/**
 * How a max tree's |x| is evaluated (model/maxTree.ts). Series and squares take their input map
 * from the step before (the pairwise maximum's sum, scaled in parallel with its polynomial) or, for
 * the first step, from the layer before the pooling when it can scale its output at no level. A
 * constant |x| (degree <= 1 on its symmetric interval: that step is linear pooling) needs no
 * polynomial, but its step's sum must be scaled for what reads it: 1 level, unless it is the last
 * step and only linear layers read the tree (they take the factor into their weights). A tuned
 * degree-1 |x| that is not constant is an affine map by a plaintext multiplication (1 level).
 */
function treeFold(g: Graph, act: GraphNode, p: PolyActivation, degree: number, forms: boolean): Fold {
  const step = treeStep(g, act)!;
  if (isConstantPoly(p)) {
    const carry = step.next === null && treeFeedsLinearOnly(g, step.max);
    return {
      form: 'constant',
      intoPrevious: carry,
      mixedSigns: false,
      why: carry ? null : "the pairwise maximum's sum is scaled for what reads it (1 level)",
    };
  }
  const input = inputFold(g, act);
  if (degree <= 1 && forms)
    return {
      form: 'affine',
      intoPrevious: false,
      mixedSigns: false,
      why: 'a degree-1 |x| that is not constant is computed by a plaintext multiplication',
    };
  if (degree === 2 && forms && lanesOf(p).every((l) => squareLane(l) !== null))
    return { form: 'square', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  return { form: 'series', intoPrevious: input.ok, mixedSigns: false, why: input.why };
}

/**
 * How the activation's polynomial of `degree` is evaluated and what is folded into the layer
 * before it. With `forms` false (--no-fold), every degree is a series and only the input map
 * to [-1, 1] folds: he-approx's levels before folding, for libraries that evaluate only series.
 */
export function planFold(g: Graph, act: GraphNode, p: PolyActivation, degree: number, forms = true): Fold {
  if (act.spec.op === 'activation' && act.spec.maxTree) return treeFold(g, act, p, degree, forms);
  const input = inputFold(g, act);
  if (!forms) return { form: 'series', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  if (degree <= 1) return { form: 'affine', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  if (degree >= 3) return { form: 'series', intoPrevious: input.ok, mixedSigns: false, why: input.why };
  const qs = lanesOf(p).map(squareLane);
  if (qs.some((q) => q === null)) {
    return {
      form: 'series',
      intoPrevious: input.ok,
      mixedSigns: false,
      why: `its degree-2 term is too small against the linear one for a square (it would lose over ${SQUARE_MAX_LOSS_BITS} bits): evaluated as a series${input.why ? `; ${input.why}` : ''}`,
    };
  }
  // Rank-3 values hold one channel per ciphertext: each negates on its own.
  const separate = act.shape.length === 3 || !p.channels;
  if (!separate && sharedSign(qs as SquareLane[]) === null) {
    return {
      form: 'square',
      intoPrevious: false,
      mixedSigns: true,
      why: input.ok
        ? "its channels' squares take different signs on one ciphertext, so u and -u are both made by a plaintext multiplication (1 level)"
        : input.why,
    };
  }
  return { form: 'square', intoPrevious: input.ok, mixedSigns: false, why: input.why };
}

/** Levels of the form itself (polyDepth) and of its input map when not folded (affineLevel). */
export function foldLevels(f: Fold, planDepth: number): { polyDepth: number; affineLevel: number } {
  // A constant |x| of a max tree: its step's sum is scaled (1 level) unless the factor carries (intoPrevious).
  if (f.form === 'constant') return { polyDepth: 0, affineLevel: f.intoPrevious ? 0 : 1 };
  return {
    polyDepth: f.form === 'series' ? planDepth : f.form === 'square' ? 1 : 0,
    affineLevel: f.intoPrevious ? 0 : 1,
  };
}

/** True if every lane's polynomial is a constant (its coefficients beyond c_0 all zero). */
export function isConstantPoly(p: PolyActivation): boolean {
  return lanesOf(p).every((l) => Array.prototype.every.call(l.coeffs, (c: number, k: number) => k === 0 || c === 0));
}

/** What the previous linear layer hands the activation for raw input x: t, y or u if the fold is made, else x. */
export function foldedInput(l: Lane, f: Fold, x: number): number {
  if (!f.intoPrevious) return x;
  if (f.form === 'affine') {
    const q = affineLane(l);
    return q.mul * x + q.add;
  }
  if (f.form === 'square') {
    const q = squareLane(l)!;
    return q.mul * x + q.add;
  }
  const { scale, shift } = unitMap(l);
  return scale * x + shift;
}

/** Non-scalar (ciphertext x ciphertext) multiplications of the form; `planMults` is the series plan's. */
export function foldMults(f: Fold, planMults: number): number {
  return f.form === 'series' ? planMults : f.form === 'square' ? 1 : 0;
}
