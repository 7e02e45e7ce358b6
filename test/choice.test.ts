/**
 * src/core/analysis/choice.ts and finetuneChoice.ts: cost by latency, the tiers fine-tuning
 * inside the choice starts from, targets; end to end on the CNN.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { Cost, cheaper, tierBelow } from '../src/core/analysis/choice';
import { ringFor } from '../src/core/he/params';
import { BOOTSTRAP_RING } from '../src/core/analysis/frontier';
import { analyze } from '../src/core/analyze';
import { cli, example, expectUserErrorAsync, tmpDir } from './helpers';

const BUNDLED = path.join(__dirname, '..', '..', 'examples', 'data');
const IMAGES = path.join(BUNDLED, 'mnist-test-2000-images-idx3-ubyte');
const LABELS = path.join(BUNDLED, 'mnist-test-2000-labels-idx1-ubyte');

const cost = (levels: number, bootstraps: number, estLatencyMs: number): Cost => ({
  levels,
  ringSize: ringFor(levels) ?? BOOTSTRAP_RING,
  bootstraps,
  estLatencyMs,
});

test('cheaper: by estimated latency where known, else ring, bootstraps, levels', () => {
  assert.ok(cheaper(cost(9, 0, 900), cost(7, 0, 1000)), 'latency first, even at more levels');
  assert.ok(cheaper(cost(7, 0, 100), cost(8, 0, 2000)), 'one level past the chain doubles N');
  assert.ok(!cheaper(cost(7, 0, 100), cost(7, 0, 100)), 'a tie is not cheaper');
  assert.ok(cheaper(cost(7, 0, NaN), cost(8, 0, NaN)), 'unknown latency: the smaller ring');
  assert.ok(cheaper(cost(40, 2, NaN), cost(30, 3, NaN)), 'unknown latency: fewer bootstraps, even at more levels');
  assert.ok(cheaper(cost(30, 3, NaN), cost(31, 3, NaN)));
});

test('a tier is a ring and, on the bootstrapping ring, a bootstrap count: fewer levels alone is not a tier', () => {
  assert.ok(tierBelow(cost(7, 0, 0), cost(8, 0, 0)));
  assert.ok(tierBelow(cost(19, 0, 0), cost(20, 1, 0)), "SEAL's largest chain is below any bootstrapping");
  assert.ok(tierBelow(cost(40, 2, 0), cost(30, 3, 0)));
  assert.ok(!tierBelow(cost(5, 0, 0), cost(7, 0, 0)), 'the same ring');
  assert.ok(!tierBelow(cost(30, 3, 0), cost(40, 3, 0)));
});

test('fine-tuning inside the choice on the CNN: a cheaper ring tried first, kept only within the budget', async () => {
  const dir = tmpDir();
  try {
    // The bundled 2,000 images: the analysis alone needs N=32768 here (README, "The accuracy-cost frontier").
    const r = await analyze({ model: example('mnist-cnn'), data: IMAGES, labels: LABELS, finetuneEpochs: 3 });
    const ft = r.finetune!;
    const tries = ft.tries!;
    assert.ok(tries.length >= 1);
    const analysisAlone = ft.from ?? { levels: r.final.networkDepth, ringSize: ringFor(r.final.networkDepth)! };
    assert.ok(tries[0].ringSize < analysisAlone.ringSize, "the first try is on a cheaper ring than the analysis's");
    for (const t of tries) {
      assert.ok(Number.isFinite(t.startDrop) && Number.isFinite(t.measuredDrop) && t.seconds >= 0);
      assert.equal(t.kept, t.why === null);
    }
    const below = (t: { ringSize: number; bootstraps: number }) =>
      t.ringSize < analysisAlone.ringSize ||
      (t.ringSize === analysisAlone.ringSize && t.bootstraps < (ft.from?.bootstraps ?? 0));
    const cheaperTries = tries.filter(below);
    assert.ok(cheaperTries.length >= 1);
    for (const t of cheaperTries.slice(0, -1)) assert.ok(t.kept, 'a cheaper try that missed ends them');
    const kept = tries.filter((t) => t.kept);
    assert.equal(
      tries.length - cheaperTries.length,
      cheaperTries.some((t) => t.kept) ? 0 : 1,
      "the result's own fine-tuning only when no cheaper choice was kept",
    );
    if (ft.from) {
      // The result is the cheaper choice, which meets the budget after fine-tuning.
      const k = kept[kept.length - 1];
      assert.ok(k.ringSize < ft.from.ringSize);
      assert.ok(k.measuredDrop <= r.options.budget + 1e-9 && k.safe);
      assert.deepEqual(r.final.degrees, k.degrees);
      assert.equal(r.final.measuredDrop, k.startDrop, "final describes the user's weights: before fine-tuning");
      assert.equal(ft.kept, true);
      assert.equal(ft.measuredDrop, k.measuredDrop);
      assert.equal(r.final.attempts[r.final.attempts.length - 1].why, 'finetuned');
    } else {
      assert.deepEqual(tries[tries.length - 1].degrees, r.final.degrees, "else the result's own fine-tuning is last");
    }
    const tuned = r.frontier!.points.filter((p) => p.method === 'data-guided + fine-tuning');
    assert.ok(tuned.length >= 1 && tuned.every((p) => p.source === 'finetuned'));
    assert.equal(
      r.frontier!.points.filter((p) => p.chosen).length,
      1,
      'one point is the result: the fine-tuned one when fine-tuning was kept',
    );
    assert.equal(
      tuned.some((p) => p.chosen),
      ft.kept,
    );

    const out = cli(
      'analyze',
      example('mnist-cnn'),
      '--data',
      IMAGES,
      '--labels',
      LABELS,
      '--finetune-epochs',
      '3',
      '--out',
      path.join(dir, 'out'),
      '--quiet',
    );
    const meets = r.final.meetsBudget || (ft.kept && ft.safe && ft.measuredDrop <= 1);
    assert.equal(out.code, meets ? 0 : 3, out.err);
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'report.json'), 'utf8'));
    assert.deepEqual(written.final.degrees, r.final.degrees, 'the CLI and the core agree (seeded)');
    if (ft.from) {
      assert.match(out.out, /fine-tuning bought a cheaper result: \d+ levels, N=\d+ at [\d.]+ pp after fine-tuning/);
      assert.ok(fs.existsSync(path.join(dir, 'out', 'finetuned', 'model.json')));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--target-levels answers with the most accurate choice within it, whatever its drop; refusals', async () => {
  const o = { model: example('mnist-cnn'), data: IMAGES, labels: LABELS, calib: 1000, heldout: 1000 };
  const r = await analyze({ ...o, targetLevels: 5 });
  assert.ok(r.final.networkDepth <= 5, `levels ${r.final.networkDepth}`);
  assert.ok(r.uniform.networkDepth <= 5, 'the baseline at the same cost');
  assert.deepEqual(r.options.target, { levels: 5 });
  assert.equal(r.final.meetsBudget, r.final.measuredDrop <= 1 && r.final.safe);
  const b = await analyze({ ...o, targetBootstraps: 1 });
  assert.ok(b.bootstrapping.planned && b.final.bootstraps <= 1, `bootstraps ${b.final.bootstraps}`);
  await expectUserErrorAsync(
    () => analyze({ ...o, targetLevels: 2 }),
    'BUDGET_INFEASIBLE',
    /no choice of degrees .* is within --target-levels 2: the cheapest needs \d+ levels/,
  );
  await expectUserErrorAsync(
    () => analyze({ ...o, targetLevels: 5, targetBootstraps: 1 }),
    'OPTION_INVALID',
    /--target-levels and --target-bootstraps were both given/,
  );
  await expectUserErrorAsync(
    () => analyze({ ...o, targetLevels: 9, levelBudget: 7 }),
    'OPTION_INVALID',
    /--target-levels 9 is more than --level-budget 7/,
  );
  const bad = cli('analyze', example('mnist-cnn'), '--data', IMAGES, '--target-bootstraps', '0');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--target-bootstraps 0 is not a positive integer/);
});

test('--finetune-frontier: every measured tier fine-tuned, cheapest first, each a frontier point; the result the cheapest kept within the budget', async () => {
  const o = { model: example('mnist-cnn'), data: IMAGES, labels: LABELS, frontier: 4, finetuneEpochs: 2 };
  const r = await analyze({ ...o, finetuneFrontier: true });
  const ft = r.finetune!;
  const tries = ft.tries!;
  const tier = (x: { ringSize: number; bootstraps: number }) => `${x.ringSize}/${x.bootstraps}`;
  // The tiers the analysis measured: every data-guided point of the plain frontier (and the result's).
  const plain = r.frontier!.points.filter((p) => p.method === 'data-guided');
  const measuredTiers = new Set(plain.map(tier));
  assert.ok(measuredTiers.size >= 2, `tiers ${[...measuredTiers]}`);
  assert.deepEqual(new Set(tries.map(tier)), measuredTiers, 'one try per measured tier, no more');
  assert.equal(tries.length, measuredTiers.size);
  for (let k = 1; k < tries.length; k++)
    assert.ok(
      tries[k].ringSize > tries[k - 1].ringSize ||
        (tries[k].ringSize === tries[k - 1].ringSize && tries[k].bootstraps > tries[k - 1].bootstraps),
      'cheapest first',
    );
  const tuned = r.frontier!.points.filter((p) => p.source === 'finetuned');
  assert.ok(tuned.length >= 1 && tuned.every((p) => p.method === 'data-guided + fine-tuning'));
  const from = ft.from ?? { ringSize: ringFor(r.final.networkDepth)!, bootstraps: r.final.bootstraps };
  const below = tries.filter((t) => tierBelow(t, { ...from, levels: 0, estLatencyMs: NaN }));
  const keptBelow = below.filter((t) => t.kept);
  if (keptBelow.length) {
    assert.ok(ft.from, 'a cheaper tier kept within the budget becomes the result');
    assert.deepEqual(r.final.degrees, keptBelow[0].degrees, 'the cheapest kept');
  } else assert.equal(ft.from, null);
  for (const t of below) if (t.kept) assert.ok(t.safe && t.measuredDrop <= r.options.budget + 1e-9);
  await expectUserErrorAsync(
    () => analyze({ ...o, finetuneEpochs: 0, finetuneFrontier: true }),
    'OPTION_INVALID',
    /--finetune-frontier.*no fine-tuning epochs/,
  );
});
