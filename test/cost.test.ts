/** src/core/cost: levels, multiplications and latency of activations, spare levels, measured SEAL costs. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { activationCost, networkDepth, publishedCosts, spendSpareLevels } from '../src/core/cost/cost';
import { loadModel } from '../src/core/model/load';

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
