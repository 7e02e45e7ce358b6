/**
 * Per-layer degree selection under an accuracy budget and a level budget, by exact dynamic
 * programming (a multiple-choice knapsack, as in OLA, Lee et al. arXiv 2310.10349).
 *
 * Each activation L offers candidate degrees d with a cost (levels, non-scalar multiplications)
 * and a measured sensitivity drop(L, d): the accuracy drop when only L is approximated at degree d.
 * Assuming drops add up, we choose one degree per layer minimising total levels, then total
 * multiplications, subject to sum of drops <= budget and total levels <= level budget. The DP runs
 * over exact integer states (levels, multiplications) keeping the least total drop in each, so the
 * optimum is exact, not greedy. Negative measured drops (noise) count as zero.
 */
export interface Choice {
  degree: number;
  depth: number;
  mults: number;
  drop: number;
}

export interface Selection {
  /** Index into each layer's choice list. */
  picks: number[];
  depth: number;
  mults: number;
  predictedDrop: number;
}

/**
 * `mode` 'cheapest' (default): least depth, then multiplications, with predicted drop <= budget.
 * 'accurate': least predicted drop within maxDepth (then least depth, multiplications), for when
 * no choice meets the budget and the user should see the best the candidates allow.
 */
export function selectDegrees(
  layers: Choice[][],
  budget: number,
  maxDepth: number,
  mode: 'cheapest' | 'accurate' = 'cheapest',
): Selection | null {
  const L = layers.length;
  if (L === 0) return { picks: [], depth: 0, mults: 0, predictedDrop: 0 };
  const D = layers.reduce((s, c) => s + Math.max(...c.map((x) => x.depth)), 0);
  const M = layers.reduce((s, c) => s + Math.max(...c.map((x) => x.mults)), 0);
  const W = M + 1;
  // best[l][d*W+m] = least total drop of layers < l with depth d and mults m; from[] backtracks.
  let best = new Float64Array((D + 1) * W).fill(Infinity);
  best[0] = 0;
  const from: Int32Array[] = [];
  for (let l = 0; l < L; l++) {
    const next = new Float64Array((D + 1) * W).fill(Infinity);
    const arg = new Int32Array((D + 1) * W).fill(-1);
    for (let s = 0; s < best.length; s++) {
      if (best[s] === Infinity) continue;
      const d = Math.floor(s / W);
      const m = s % W;
      layers[l].forEach((c, k) => {
        const nd = d + c.depth;
        const nm = m + c.mults;
        if (nd > D || nm > M) return;
        const v = best[s] + Math.max(0, c.drop);
        const t = nd * W + nm;
        if (v < next[t]) {
          next[t] = v;
          arg[t] = s * 64 + k;
        }
      });
    }
    from.push(arg);
    best = next;
  }
  const pick = (t: number): Selection => {
    const picks = new Array<number>(L);
    let s = t;
    for (let l = L - 1; l >= 0; l--) {
      const a = from[l][s];
      picks[l] = a % 64;
      s = Math.floor(a / 64);
    }
    return { picks, depth: Math.floor(t / W), mults: t % W, predictedDrop: best[t] };
  };
  let found = -1;
  for (let d = 0; d <= Math.min(D, maxDepth); d++) {
    for (let m = 0; m <= M; m++) {
      const t = d * W + m;
      if (mode === 'cheapest' && best[t] <= budget + 1e-12) return pick(t);
      if (mode === 'accurate' && best[t] < Infinity && (found < 0 || best[t] < best[found] - 1e-12)) found = t;
    }
  }
  return found >= 0 ? pick(found) : null;
}
