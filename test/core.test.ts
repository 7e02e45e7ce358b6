/** Statistics, activation definitions and the cost model (degree selection: analysis.test.ts). */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChannelStats, StreamingStats } from '../src/core/profile/stats';
import { chooseInterval, fitChannelsAll, fitDataGuidedAll } from '../src/core/fit/fit';
import { Rng } from '../src/core/rng';
import { ActivationKind, activationFn } from '../src/core/numerics/activations';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor, applyPoly, clenshaw } from '../src/core/model/execute';
import { activationCost, networkDepth, publishedCosts, spendSpareLevels } from '../src/core/cost/cost';
import { loadModel } from '../src/core/model/load';
import { chebval } from '../src/core/numerics/chebyshev';
import { Graph } from '../src/core/model/graph';

test('streaming stats: exact moments and extremes, histogram conserves counts, reservoir bounded', () => {
  const rng = new Rng(11);
  const st = new StreamingStats(1000, 5);
  const all: number[] = [];
  // Batches with a growing range force the histogram to widen several times.
  for (let b = 0; b < 20; b++) {
    const v = Float32Array.from({ length: 500 }, () => (rng.next() - 0.3) * (b + 1) ** 2);
    all.push(...v);
    st.add(v);
  }
  st.add(Float32Array.from([NaN, Infinity]));
  const r = st.result();
  const mean = all.reduce((a, b) => a + b, 0) / all.length;
  const sd = Math.sqrt(all.reduce((a, b) => a + (b - mean) ** 2, 0) / all.length);
  assert.equal(r.count, all.length);
  assert.equal(r.min, Math.min(...all));
  assert.equal(r.max, Math.max(...all));
  assert.ok(Math.abs(r.mean - mean) < 1e-9 * Math.abs(sd));
  assert.ok(Math.abs(r.std - sd) / sd < 1e-9);
  assert.equal(
    r.histogram.counts.reduce((a, b) => a + b, 0),
    all.length,
  );
  // Every value lies in its bin: recount directly with the final bin edges.
  const direct = new Array(r.histogram.counts.length).fill(0);
  for (const v of all) direct[Math.min(direct.length - 1, Math.floor((v - r.histogram.lo) / r.histogram.width))]++;
  assert.deepEqual(direct, r.histogram.counts);
  assert.equal(r.sample.length, 1000);
  assert.equal(st.nonFiniteCount, 2);
  const sorted = [...all].sort((a, b) => a - b);
  const trueMedian = sorted[Math.floor(sorted.length / 2)];
  assert.ok(Math.abs(r.percentiles.p50 - trueMedian) < 0.1 * sd, 'median estimate from the reservoir');
});

test('scalar activation definitions match the tfjs ops the executor runs', async () => {
  await initBackend();
  const kinds: ActivationKind[] = [
    'relu',
    'relu6',
    'leakyrelu',
    'elu',
    'selu',
    'gelu',
    'gelu_new',
    'swish',
    'mish',
    'sigmoid',
    'hard_sigmoid',
    'tanh',
    'softplus',
    'softsign',
  ];
  const xs = Float32Array.from({ length: 121 }, (_, i) => -8 + i * (16 / 120));
  for (const kind of kinds) {
    const spec = kind === 'leakyrelu' ? { kind, alpha: 0.2 } : kind === 'elu' ? { kind, alpha: 0.7 } : { kind };
    const g: Graph = {
      name: 't',
      input: 0,
      output: 1,
      inputShape: [121],
      notes: [],
      droppedFinalSoftmax: false,
      nodes: [
        { id: 0, name: 'in', layer: 'in', className: 'InputLayer', inputs: [], shape: [121], spec: { op: 'input' } },
        {
          id: 1,
          name: 'act',
          layer: 'act',
          className: 'Activation',
          inputs: [0],
          shape: [121],
          spec: { op: 'activation', act: spec },
        },
      ],
    };
    const ex = new Executor(g);
    const x = tf.tensor2d(xs, [1, 121]);
    const { logits } = ex.run(new Map([[0, x]]), 0, {});
    x.dispose();
    ex.dispose();
    const f = activationFn(spec);
    xs.forEach((v, i) =>
      assert.ok(
        Math.abs(logits[i] - f(v)) < 2e-5 * (1 + Math.abs(f(v))),
        `${kind}(${v}): tfjs ${logits[i]} vs ${f(v)}`,
      ),
    );
  }
});

test('polynomial layer on tensors equals Clenshaw in double precision', async () => {
  await initBackend();
  const c = [0.2, 0.5, 0.3, -0.05, 0.01, 0.002];
  const xs = Float32Array.from({ length: 50 }, (_, i) => -3 + (i * 7) / 49);
  const y = tf.tidy(() => applyPoly(tf.tensor1d(xs), { coeffs: c, a: -3, b: 4 }).dataSync());
  xs.forEach((v, i) => assert.ok(Math.abs(y[i] - chebval(v, c, { a: -3, b: 4 })) < 1e-5));
  // Outside any tidy, a degree-63 polynomial leaves exactly its result behind: Clenshaw frees
  // each step's temporaries (they were most of the analysis's peak memory), per layer and per
  // channel alike.
  const c63 = Array.from({ length: 64 }, (_, k) => 1 / (k + 1));
  const channels = {
    intervals: [
      { a: -1, b: 1 },
      { a: -2, b: 2 },
      { a: -1, b: 3 },
    ],
    coeffs: [c63, c63, c63],
  };
  // 64 rows take the broadcast path, 65,536 the channel-major one (see applyPoly).
  for (const rows of [64, 65536]) {
    const x = tf.tensor2d(
      Float32Array.from({ length: rows * 3 }, (_, i) => Math.sin(i)),
      [rows, 3],
    );
    for (const p of [
      { coeffs: c63, a: -1, b: 1 },
      { coeffs: [0], a: -1, b: 1, channels, channelOffset: Float32Array.of(0.1, 0.2, 0.3) },
    ]) {
      const before = tf.memory().numTensors;
      const out = applyPoly(x, p);
      assert.equal(tf.memory().numTensors, before + 1, `only the result is left (${rows} rows)`);
      out.dispose();
    }
    // Clenshaw itself, which applyPoly's tidy would hide: no temporaries outlive their step.
    const before = tf.memory().numTensors;
    const out = clenshaw(x, channels.intervals, 64, (k) => tf.tensor1d(channels.coeffs.map((cc) => cc[k])));
    assert.equal(tf.memory().numTensors, before + 1, `Clenshaw leaves only its result (${rows} rows)`);
    out.dispose();
    x.dispose();
  }
});

test('per-channel statistics and fits: exact channel ranges, samples from their own channel, each channel fitted on its own data', async () => {
  const C = 3;
  const rng = new Rng(4);
  // Channel c (last axis) holds values in [-1 - 3c, 1 + c]: interleaved in one buffer.
  const vals = Float32Array.from({ length: 3000 * C }, (_, i) => {
    const c = i % C;
    return -1 - 3 * c + (2 + 4 * c) * rng.next();
  });
  const cs = new ChannelStats(C, 256, 9);
  cs.add(vals.subarray(0, 1500 * C));
  cs.add(vals.subarray(1500 * C));
  const r = cs.result();
  for (let c = 0; c < C; c++) {
    let mn = Infinity;
    let mx = -Infinity;
    for (let i = c; i < vals.length; i += C) {
      mn = Math.min(mn, vals[i]);
      mx = Math.max(mx, vals[i]);
    }
    assert.equal(r.min[c], mn);
    assert.equal(r.max[c], mx);
    assert.equal(r.samples[c].length, 256);
    assert.ok(
      r.samples[c].every((v) => v >= mn && v <= mx),
      `channel ${c} sample holds its own values`,
    );
  }
  const spec = { kind: 'gelu' as const };
  const layer = chooseInterval({ min: Math.min(...r.min), max: Math.max(...r.max) }, 0.02);
  const fits = fitChannelsAll(spec, r, layer, 0.02, 7, 0.001);
  for (let c = 0; c < C; c++) {
    const iv = fits.intervals[c];
    assert.ok(iv.a >= layer.a && iv.b <= layer.b, 'inside the layer interval');
    assert.ok(iv.a < r.min[c] && iv.b > r.max[c], 'covers the channel with a margin');
    assert.deepEqual(Array.from(fits.coeffs[c][5]), Array.from(fitDataGuidedAll(spec, r.samples[c], iv, 7, 0.001)[5]));
  }
  // The executor applies channel c's polynomial to channel c.
  await initBackend();
  const channels = { intervals: fits.intervals, coeffs: fits.coeffs.map((cc) => Array.from(cc[5])) };
  const x = Float32Array.from({ length: 4 * C }, (_, i) => -2 + 0.37 * i);
  const y = tf.tidy(() => applyPoly(tf.tensor2d(x, [4, C]), { coeffs: [0], a: -1, b: 1, channels }).dataSync());
  x.forEach((v, i) =>
    assert.ok(Math.abs(y[i] - chebval(v, channels.coeffs[i % C], channels.intervals[i % C])) < 1e-4, `value ${i}`),
  );
});

test('cost model: series depth ceil(log2(d+1)), degree 2 one level and degree 1 none when folded, plus one unfoldable input level', () => {
  const costs = publishedCosts(32768);
  const fold = (form: 'series' | 'affine' | 'square', intoPrevious: boolean) => ({
    form,
    intoPrevious,
    mixedSigns: false,
    why: null,
  });
  assert.equal(activationCost(7, fold('series', true), costs).depth, 3);
  assert.equal(activationCost(7, fold('series', false), costs).depth, 4);
  assert.equal(activationCost(8, fold('series', true), costs).depth, 4);
  assert.equal(activationCost(63, fold('series', true), costs).depth, 6);
  assert.equal(
    activationCost(2, fold('series', true), costs).depth,
    2,
    'a degree-2 series (no square form) keeps its 2 levels',
  );
  assert.equal(activationCost(2, fold('square', true), costs).depth, 1);
  assert.equal(activationCost(2, fold('square', false), costs).depth, 2);
  assert.equal(activationCost(2, fold('square', true), costs).nonScalarMults, 1);
  assert.equal(activationCost(1, fold('affine', true), costs).depth, 0);
  assert.equal(activationCost(1, fold('affine', false), costs).depth, 1);
  assert.equal(activationCost(1, fold('affine', true), costs).nonScalarMults, 0);
  assert.ok(
    activationCost(15, fold('series', true), costs).latencyMs >
      activationCost(7, fold('series', true), costs).latencyMs,
  );
});

test('spare levels: series take deeper plans with fewer multiplications while the network fits, the largest saving first', async () => {
  const { example } = await import('./helpers');
  const g = (await loadModel(example('mnist-mlp'))).graph;
  const acts = g.nodes.filter((n) => n.spec.op === 'activation');
  const costs = publishedCosts(32768);
  const series = { form: 'series' as const, intoPrevious: true, mixedSigns: false, why: null };
  const degrees = acts.map((_, l) => (l === 0 ? 31 : 15));
  const costAt = (l: number, e: number) => activationCost(degrees[l], series, costs, e);
  const depth = (extra: number[]) => networkDepth(g, new Map(acts.map((a, l) => [a.id, costAt(l, extra[l]).depth])));
  const base = depth(acts.map(() => 0));
  // Room for everything: each layer down to its cheapest plan within two extra levels (31: 13 -> 10, 15: 8 -> 6 multiplications).
  const all = spendSpareLevels(g, acts, costAt, base + 10);
  assert.deepEqual(all.slice(0, 2), [2, 2]);
  assert.equal(costAt(0, all[0]).nonScalarMults, 10);
  // One level: it goes where it saves most (degree 31 at +1: 13 -> 11 multiplications; degree 15: 8 -> 7).
  const one = spendSpareLevels(g, acts, costAt, base + 1);
  assert.deepEqual(one.slice(0, 2), [1, 0]);
  assert.equal(depth(one), base + 1);
  // No room: nothing changes.
  assert.deepEqual(
    spendSpareLevels(g, acts, costAt, base),
    acts.map(() => 0),
  );
});

test('node-seal cost measurement (N=8192) is cached and then used by the analysis', async () => {
  const { measureAndCacheSealCosts, cachedSealCosts } = await import('../src/core/cost/sealCosts');
  const dir = (await import('./helpers')).tmpDir();
  const before = process.env.HE_APPROX_CACHE_DIR;
  process.env.HE_APPROX_CACHE_DIR = dir;
  try {
    assert.equal(cachedSealCosts(8192), null);
    const c = await measureAndCacheSealCosts(8192);
    assert.ok(c.mulRelinRescale > 0 && c.mulScalar > 0 && c.rotate > 0 && c.add > 0);
    assert.ok(c.mulRelinRescale > c.add, 'a ciphertext multiplication costs more than an addition');
    const cached = cachedSealCosts(8192)!;
    assert.equal(cached.mulRelinRescale, c.mulRelinRescale);
    assert.match(cached.source, /measured with node-seal/);
  } finally {
    if (before === undefined) delete process.env.HE_APPROX_CACHE_DIR;
    else process.env.HE_APPROX_CACHE_DIR = before;
  }
});
