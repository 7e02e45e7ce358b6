/** src/core/profile: streaming and per-channel statistics of the values reaching activations. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChannelStats, StreamingStats } from '../src/core/profile/stats';
import { chooseInterval, fitChannelsAll, fitDataGuidedAll } from '../src/core/fit/fit';
import { Rng } from '../src/core/rng';
import { initBackend, tf } from '../src/core/model/backend';
import { applyPoly } from '../src/core/model/execute';
import { chebval } from '../src/core/numerics/chebyshev';

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
