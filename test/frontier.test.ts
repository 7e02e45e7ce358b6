/** src/core/analysis/frontier.ts: the accuracy-cost frontier, its costs, and --frontier N end to end. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { BOOTSTRAP_RING, paretoFront, spreadPicks } from '../src/core/analysis/frontier';
import { ringFor } from '../src/core/he/params';
import type { DegreePick } from '../src/core/analysis/selection';
import { analyze } from '../src/core/analyze';
import type { FrontierPoint } from '../src/core/report';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, cli, example } from './helpers';

test('a level count needs the smallest 128-bit SEAL ring whose chain holds it, else bootstrapping', () => {
  assert.deepEqual(
    [1, 2, 3, 7, 8, 19, 20].map((l) => ringFor(l)),
    [8192, 8192, 16384, 16384, 32768, 32768, null],
  );
  assert.equal(BOOTSTRAP_RING, 65536);
});

test("--frontier N spreads N choices from the cheapest to the uniform baseline's levels, each level once", () => {
  const F: DegreePick[] = [5, 6, 7, 9, 12, 15].map((depth) => ({ picks: [], depth, mults: 0, predictedDrop: 0 }));
  const depths = (n: number, upTo: number) => spreadPicks(F, n, upTo).map((p) => p.depth);
  assert.deepEqual(depths(3, 12), [5, 7, 12]);
  assert.deepEqual(depths(5, 12), [5, 6, 7, 9, 12]);
  assert.deepEqual(depths(9, 12), [5, 6, 7, 9, 12], 'more points than choices: each choice once');
  assert.deepEqual(depths(1, 12), [12]);
  assert.deepEqual(depths(2, Infinity), [5, 15], 'no uniform cost: up to the most accurate choice');
  assert.deepEqual(depths(0, 12), []);
});

test('the frontier keeps, per method, each safe point better than every cheaper one, and the result', () => {
  const pt = (method: string, levels: number, drop: number, more: Partial<FrontierPoint> = {}): FrontierPoint => ({
    method,
    degrees: {},
    levels,
    ringSize: ringFor(levels) ?? BOOTSTRAP_RING,
    bootstraps: 0,
    estLatencyMs: levels,
    measuredDrop: drop,
    safe: true,
    meetsBudget: drop <= 1,
    source: 'search',
    chosen: false,
    ...more,
  });
  const front = paretoFront([
    pt('data-guided', 9, 0.4),
    pt('data-guided', 6, 2.1),
    pt('data-guided', 7, 1.04),
    pt('data-guided', 8, 1.2), // worse than the cheaper 7-level point
    pt('data-guided', 7, 1.5), // the same cost, worse
    pt('data-guided', 5, 0.1, { safe: false }), // values beyond CKKS: not a choice
    pt('data-guided', 10, 0.5, { chosen: true }), // dominated, but the result
    pt('uniform', 12, 0.8),
    pt('uniform', 10, 3.0),
  ]);
  assert.deepEqual(
    front.map((p) => [p.method, p.levels, p.measuredDrop]),
    [
      ['data-guided', 6, 2.1],
      ['data-guided', 7, 1.04],
      ['data-guided', 9, 0.4],
      ['data-guided', 10, 0.5],
      ['uniform', 10, 3.0],
      ['uniform', 12, 0.8],
    ],
  );
});

test('--frontier N on the CNN: measured points at their rings, the result among them, printed by the CLI', async () => {
  const sizes = { calib: 1000, heldout: 1000, seed: 5 };
  const model = example('mnist-cnn');
  const r = await analyze({ model, data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, ...sizes, frontier: 4 });
  const f = r.frontier!;
  assert.ok(f.measured >= 1 && f.measured <= 4, `measured ${f.measured}`);
  assert.ok(r.timings.frontier > 0, 'the frontier is timed as its own stage');
  const mine = f.points.filter((p) => p.method === 'data-guided');
  const chosen = mine.filter((p) => p.chosen);
  assert.equal(chosen.length, 1, 'the result is on the frontier once');
  assert.equal(chosen[0].measuredDrop, r.final.measuredDrop);
  assert.deepEqual(chosen[0].degrees, r.final.degrees);
  assert.ok(
    mine.some((p) => p.source === 'frontier'),
    'a choice the search did not measure: its cheapest end at least',
  );
  // The result is kept even where a point at its cost measured better; the others form the frontier.
  for (const ps of [mine, f.points.filter((p) => p.method === 'uniform')].map((x) => x.filter((p) => !p.chosen))) {
    for (let k = 1; k < ps.length; k++) {
      assert.ok(ps[k].levels > ps[k - 1].levels, 'one point per cost, by increasing levels');
      assert.ok(ps[k].measuredDrop < ps[k - 1].measuredDrop, 'each point better than the cheaper');
    }
  }
  assert.ok(
    f.points.some((p) => p.method === 'uniform'),
    "the uniform baseline's rounds beside it",
  );
  for (const p of f.points) {
    assert.equal(p.ringSize, ringFor(p.levels) ?? BOOTSTRAP_RING);
    assert.ok(p.safe && Number.isFinite(p.measuredDrop));
    assert.equal(p.meetsBudget, p.measuredDrop <= r.options.budget + 1e-9);
    assert.ok(p.estLatencyMs > 0);
  }
  // The cheapest point's ring is no larger than the result's: that is what the frontier shows.
  assert.ok(mine[0].ringSize <= chosen[0].ringSize);

  const out = cli(
    'analyze',
    model,
    '--data',
    MNIST_TEST_IMAGES,
    '--labels',
    MNIST_TEST_LABELS,
    '--calib',
    '500',
    '--heldout',
    '500',
    '--frontier',
    '2',
    '--quiet',
  );
  assert.ok(out.code === 0 || out.code === 3, out.err);
  assert.match(
    out.out,
    /accuracy-cost frontier \(the best measured on held-out data at each cost; \* the result; \+ one of the \d choices --frontier measured\)/,
  );
  assert.match(out.out, /data-guided \*/);
  const bad = cli('analyze', model, '--data', MNIST_TEST_IMAGES, '--frontier', '33');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--frontier 33 is not an integer in 0\.\.32/);
});
