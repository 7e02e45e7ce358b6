/**
 * The sensitivity stage: a first-order screen of every candidate polynomial of every activation,
 * in one forward and one backward pass over a calibration subset, whatever the number of layers.
 *
 * For each screen sample i, the margin m_i is its label's logit minus the largest other logit
 * (without labels: the original top-1's logit minus the runner-up's); the model is right on i
 * iff m_i > 0. One backward pass gives g_L = dm/dy_L, the margin's gradient with respect to every
 * activation's output y_L, for all layers at once (the margin is a sum over samples of per-sample
 * terms, so per-sample gradients come out of one pass). Replacing activation f at layer L by the
 * polynomial p changes y_L by e = p(x) - f(x) at the recorded inputs x, so to first order
 *
 *     dm_i(L, p) = sum_j g_L[i, j] * e(x[i, j]),
 *
 * and with polynomials at several layers the changes add: D_i = sum_L dm_i(L, p_L). That gives,
 * for any choice of degrees, a predicted accuracy drop (samples whose m_i + D_i changes sign),
 * and per candidate an energy mean_i dm_i^2 for the degree selection to trade between layers
 * (selection.ts). This is the Taylor screen of pruning and quantisation sensitivity (LeCun et
 * al., "Optimal Brain Damage", 1990; Molchanov et al., CVPR 2019), applied to the margin rather
 * than the loss, since accuracy is what the budget is about. It replaces measuring every layer x
 * degree on held-out data, which costs layers x degrees partial forward passes (quadratic in
 * depth); the chosen degrees are still measured exactly (verify.ts).
 *
 * The sum over j is over every value of the layer for every sample. Where a channel has many
 * positions (a conv layer), it is computed on a grid instead: the gradient is spread onto the
 * grid nodes of the channel's range by linear interpolation weights, once per sample, and each
 * candidate's error e = p - f is needed at the grid nodes only (piecewise-linear interpolation,
 * 8 nodes per degree). The grid is laid so that the activation's kinks (ReLU's 0, ReLU6's 0 and
 * 6) are nodes: e is smooth between them, and interpolating across a kink where the inputs crowd
 * was off by 12% of the margin change on the MNIST CNN.
 */
import { CancelledError } from '../errors';
import { Dataset } from '../data/read';
import { Fit, FitMethod, polyOf } from '../fit/fit';
import { tf } from '../model/backend';
import { Executor, applyActivation } from '../model/execute';
import { GraphNode, actSpec, size } from '../model/graph';
import { activationFn, breakpoints } from '../numerics/activations';
import { chebval } from '../numerics/chebyshev';
import { polyValues } from '../numerics/polynomial';
import { gather, Progress } from '../profile/profiler';
import { ValueStats } from '../profile/stats';
import type { Candidates } from './fitStage';

export interface Screen {
  samples: number;
  /** Each screen sample's margin in the original model (right iff > 0). */
  margins: Float32Array;
  /** Whether the original model is right on each sample (all true without labels: agreement). */
  right: Uint8Array;
  /** What counts as right on each sample: its label, or the original model's top-1 without labels. */
  target: Int32Array;
  /** Per method, per activation, per candidate: each screen sample's first-order margin change. */
  dm: Map<FitMethod, Float32Array[][]>;
}

interface Cand {
  method: FitMethod;
  index: number;
  fit: Fit;
}

/** How one layer's candidates are contracted with the gradient (see the module comment). */
interface LayerPlan {
  cands: Cand[];
  C: number;
  per: number;
  f: (x: number) => number;
  /** Per channel: the first grid node, the inverse spacing and the node count; each candidate's error at the nodes (channel-major, stride B + 1). */
  grid: null | { B: number; lo: Float64Array; inv: Float64Array; nodes: Int32Array; err: Float64Array[] };
}

function planLayer(a: GraphNode, st: ValueStats, cands: Cand[], mode: ScreenOptions['contraction']): LayerPlan {
  const C = a.shape[a.shape.length - 1];
  const per = size(a.shape);
  const f = activationFn(actSpec(a));
  const positions = per / C;
  const maxDeg = Math.max(...cands.map((c) => c.fit.degree));
  const B = Math.min(512, Math.max(64, 8 * maxDeg));
  const direct = positions * cands.reduce((s, c) => s + c.fit.degree + 4, 0);
  const viaGrid = 4 * positions + (B + 1) * cands.length;
  if (mode === 'direct' || (mode !== 'grid' && direct <= viaGrid)) return { cands, C, per, f, grid: null };
  // The grid spans every value the screen can meet (its samples are calibration samples, inside
  // the recorded range) and every candidate's interval, with the kinks on nodes.
  const kinks = breakpoints(actSpec(a));
  const lo = new Float64Array(C);
  const inv = new Float64Array(C);
  const nodes = new Int32Array(C);
  for (let c = 0; c < C; c++) {
    let a0 = st.channels ? st.channels.min[c] : st.min;
    let b0 = st.channels ? st.channels.max[c] : st.max;
    for (const k of cands) {
      const iv = k.fit.channels ? k.fit.channels.intervals[c] : k.fit.interval;
      a0 = Math.min(a0, iv.a);
      b0 = Math.max(b0, iv.b);
    }
    let h = Math.max(b0 - a0, 1e-12) / B;
    const inside = kinks.filter((x) => x > a0 && x < b0);
    if (inside.length >= 2)
      h =
        (inside[inside.length - 1] - inside[0]) / Math.max(1, Math.round((inside[inside.length - 1] - inside[0]) / h));
    if (inside.length) a0 = inside[0] - Math.ceil((inside[0] - a0) / h) * h;
    lo[c] = a0;
    inv[c] = 1 / h;
    nodes[c] = Math.max(1, Math.min(B + 2, Math.ceil((b0 - a0) / h - 1e-9)));
  }
  const stride = B + 3;
  const err = cands.map((k) => {
    const e = new Float64Array(C * stride);
    for (let c = 0; c < C; c++) {
      const coeffs = k.fit.channels ? k.fit.channels.coeffs[c] : k.fit.coeffs;
      const iv = k.fit.channels ? k.fit.channels.intervals[c] : k.fit.interval;
      for (let b = 0; b <= nodes[c]; b++) {
        const x = lo[c] + b / inv[c];
        e[c * stride + b] = chebval(x, coeffs, iv) - f(x);
      }
    }
    return e;
  });
  return { cands, C, per, f, grid: { B: stride - 1, lo, inv, nodes, err } };
}

/** Adds each candidate's dm for samples [offset, offset + n) of one batch. */
function contract(
  p: LayerPlan,
  X: Float32Array,
  G: Float32Array,
  n: number,
  out: Float32Array[],
  offset: number,
): void {
  const { C, per } = p;
  if (!p.grid) {
    const fx = new Float32Array(X.length);
    for (let j = 0; j < X.length; j++) fx[j] = p.f(X[j]);
    const px = new Float32Array(X.length);
    p.cands.forEach((k, ci) => {
      polyValues(X, C, polyOf(k.fit), px);
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = i * per; j < (i + 1) * per; j++) s += G[j] * (px[j] - fx[j]);
        out[ci][offset + i] = s;
      }
    });
    return;
  }
  const { B, lo, inv, nodes, err } = p.grid;
  const W = new Float64Array(C * (B + 1));
  for (let i = 0; i < n; i++) {
    W.fill(0);
    for (let j = 0; j < per; j++) {
      const c = j % C;
      const u = (X[i * per + j] - lo[c]) * inv[c];
      const b = Math.min(nodes[c] - 1, Math.max(0, Math.floor(u)));
      const t = Math.min(1, Math.max(0, u - b));
      const g = G[i * per + j];
      const at = c * (B + 1) + b;
      W[at] += g * (1 - t);
      W[at + 1] += g * t;
    }
    for (let ci = 0; ci < p.cands.length; ci++) {
      const e = err[ci];
      let s = 0;
      for (let q = 0; q < W.length; q++) s += W[q] * e[q];
      out[ci][offset + i] = s;
    }
  }
}

export interface ScreenOptions {
  batchSize: number;
  /** How the gradient meets the errors: per value, on a grid, or whichever costs less (default). */
  contraction?: 'auto' | 'direct' | 'grid';
  signal?: AbortSignal;
  onProgress?: Progress;
}

export async function screenCandidates(
  ex: Executor,
  ds: Dataset,
  idx: Int32Array,
  acts: GraphNode[],
  stats: Map<number, ValueStats>,
  candidates: Candidates,
  o: ScreenOptions,
): Promise<Screen> {
  const S = idx.length;
  const g = ex.graph;
  const K = size(g.nodes[g.output].shape);
  const margins = new Float32Array(S);
  const right = new Uint8Array(S);
  const targets = new Int32Array(S);
  const dm = new Map<FitMethod, Float32Array[][]>(
    [...candidates].map(([m, fits]) => [m, fits.map((row) => row.map(() => new Float32Array(S)))]),
  );
  const plans = acts.map((a, k) => {
    const cands: Cand[] = [];
    for (const [method, fits] of candidates) fits[k].forEach((fit, index) => cands.push({ method, index, fit }));
    return planLayer(a, stats.get(a.id)!, cands, o.contraction);
  });
  const bs = Math.min(o.batchSize, 64);
  for (let s = 0; s < S; s += bs) {
    if (o.signal?.aborted) throw new CancelledError();
    const n = Math.min(bs, S - s);
    const inputs: Float32Array[] = new Array(acts.length);
    let grads: Float32Array[] = [];
    // Results leave the tidy through `grads`, not its return value: tf.tidy walks what it returns
    // looking for tensors, element by element through typed arrays (seconds per batch on a ResNet).
    tf.tidy(() => {
      const x = tf.tensor(gather(ds, idx, s, n), [n, ...ds.sampleShape]);
      const deltas = acts.map((a) => tf.zeros([n, ...a.shape]));
      const objective = (...d: tf.Tensor[]) => {
        const apply = new Map(
          acts.map((a, k) => [
            a.id,
            (v: tf.Tensor) => {
              inputs[k] = v.dataSync() as Float32Array;
              return tf.add(applyActivation(v, actSpec(a)), d[k]);
            },
          ]),
        );
        const z = ex.forward(new Map([[g.input, x]]), 0, { apply });
        const zv = z.dataSync();
        const mask = new Float32Array(n * K);
        for (let i = 0; i < n; i++) {
          const row = zv.subarray(i * K, (i + 1) * K);
          let top = 0;
          for (let j = 1; j < K; j++) if (row[j] > row[top]) top = j;
          const target = ds.labels ? ds.labels[idx[s + i]] : top;
          let other = target === 0 ? 1 : 0;
          for (let j = 0; j < K; j++) if (j !== target && row[j] > row[other]) other = j;
          // Without labels the original top-1 is right by definition, ties included.
          margins[s + i] = ds.labels ? row[target] - row[other] : Math.max(row[target] - row[other], 1e-30);
          right[s + i] = Number(margins[s + i] > 0);
          targets[s + i] = target;
          mask[i * K + target] = 1;
          mask[i * K + other] = -1;
        }
        return tf.sum(tf.mul(z, tf.tensor2d(mask, [n, K]))) as tf.Scalar;
      };
      grads = tf
        .grads(objective)(deltas)
        .map((t) => t.dataSync() as Float32Array);
    });
    acts.forEach((_, k) => {
      const out = plans[k].cands.map((c) => dm.get(c.method)![k][c.index]);
      contract(plans[k], inputs[k], grads[k], n, out, s);
    });
    o.onProgress?.((s + n) / S, `sensitivity screen ${s + n}/${S} samples`);
    await new Promise<void>((r) => setImmediate(r));
  }
  return { samples: S, margins, right, target: targets, dm };
}

/**
 * Predicted accuracy drop (percentage points) on the screen samples with the given rows of
 * margin changes (one per approximated layer; the others exact), to first order.
 */
export function predictedDrop(screen: Screen, rows: Float32Array[]): number {
  let lost = 0;
  for (let i = 0; i < screen.samples; i++) {
    let d = 0;
    for (const r of rows) d += r[i];
    lost += screen.right[i] - Number(screen.margins[i] + d > 0);
  }
  return (100 * lost) / screen.samples;
}

/** Mean squared first-order margin change: the additive cost the degree selection trades. */
export function energy(row: Float32Array): number {
  let s = 0;
  for (let i = 0; i < row.length; i++) s += row[i] * row[i];
  return s / Math.max(1, row.length);
}
