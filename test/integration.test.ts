/**
 * The analysis on the bundled examples with real MNIST: the budget is met as measured, the
 * data-guided method needs fewer levels than the uniform baseline, and the exported
 * approximated model loads in tfjs and computes what the analysis measured.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { writeOutputs } from '../src/core/export/export';
import { registerPolyLayer } from '../src/core/export/polyLayer';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';
import { Report, REPORT_VERSION, polysFromReport } from '../src/core/report';
import { UserError } from '../src/core/errors';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, example, randomBatch, tfjsLoad, tmpDir } from './helpers';

const reports = new Map<string, Report>();

async function run(name: string): Promise<Report> {
  if (!reports.has(name)) {
    reports.set(
      name,
      await analyze({ model: example(name), data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, budget: 1.0 }),
    );
  }
  return reports.get(name)!;
}

for (const name of ['mnist-mlp', 'mnist-cnn', 'mnist-silu', 'mnist-resnet']) {
  test(`${name}: measured drop within the 1.0 pp budget, with less depth than the uniform baseline`, async () => {
    const r = await run(name);
    assert.equal(r.version, REPORT_VERSION);
    assert.ok(r.plaintext.accuracy > 0.95, `plaintext accuracy ${r.plaintext.accuracy}`);
    assert.ok(r.final.meetsBudget && r.final.measuredDrop <= 1.0, `measured drop ${r.final.measuredDrop}`);
    assert.ok(Math.abs(r.final.accuracy - (r.plaintext.accuracy - r.final.measuredDrop / 100)) < 1e-9);
    assert.ok(r.uniform.meetsBudget, 'the uniform baseline also meets the budget (with more levels)');
    assert.ok(
      r.final.activationDepth < r.uniform.activationDepth,
      `depth ${r.final.activationDepth} vs uniform ${r.uniform.activationDepth}`,
    );
    assert.ok(r.final.networkDepth <= r.levelBudget);
    for (const l of r.layers) {
      assert.equal(l.chosen.coeffs.length, l.chosen.degree + 1);
      assert.ok(l.stats.min <= l.stats.percentiles.p50 && l.stats.percentiles.p50 <= l.stats.max);
      assert.ok(l.chosen.interval.a <= l.stats.min && l.chosen.interval.b >= l.stats.max);
      assert.equal(l.sensitivity.data.length, r.options.degrees.length);
      assert.equal(r.final.degrees[l.name], l.chosen.degree);
    }
    assert.equal(r.refinements.filter((x) => x.kept).length, 1);
    const kept = r.refinements.find((x) => x.kept)!;
    assert.ok(Math.abs(kept.measuredDrop - r.final.measuredDrop) < 1e-9);
    assert.ok(kept.safe && r.final.safe, 'every held-out value of the kept variant stays within what CKKS holds');
    assert.ok(
      r.refinements.every((x) => !x.safe || x.measuredDrop >= kept.measuredDrop - 1e-9),
      'the kept refinement has the lowest measured drop of the safe ones',
    );
    assert.ok(
      r.final.maxAbs < r.valueBound &&
        r.layers.every(
          (l) => Math.max(l.chosen.heldoutOutside.maxAbsIn, l.chosen.heldoutOutside.maxAbsOut) <= r.final.maxAbs,
        ),
    );
    assert.ok(
      r.layers.every(
        (l) =>
          l.chosen.heldoutOutside.samples <= r.data.heldout &&
          l.chosen.heldoutOutside.samples <= l.chosen.heldoutOutside.count,
      ),
    );
    assert.equal(r.bootstrapping.planned, false, "an MNIST model fits SEAL's chain");
    assert.ok(r.final.bootstraps <= r.uniform.bootstraps);
    assert.ok(r.final.attempts.length === r.final.rounds && r.final.checks >= 1);
    assert.equal(r.options.tune, true);
    assert.equal(r.options.tuneLabelWeight, 0.5, 'with labels, tuning mixes in their cross-entropy');
    const tuned = r.refinements.find((x) => x.name === 'tuned');
    assert.ok(tuned && Number.isFinite(tuned.measuredDrop), 'coefficient tuning is measured as a refinement');
  });
}

for (const name of ['mnist-mlp', 'mnist-resnet', 'mnist-cnn']) {
  test(`${name}: the exported approximated model loads in tfjs and equals the analysed polynomials`, async () => {
    await initBackend();
    registerPolyLayer();
    const r = await run(name);
    const dir = tmpDir();
    const files = writeOutputs(dir, await loadModel(example(name)), r, false);
    const coeffs = JSON.parse(fs.readFileSync(files.coefficients, 'utf8'));
    assert.equal(coeffs.layers.length, r.layers.length);
    for (const [k, l] of r.layers.entries()) {
      const cl = coeffs.layers[k];
      if (!l.chosen.channels) {
        assert.deepEqual(cl.coefficients, l.chosen.coeffs);
        assert.equal(cl.channels, null);
        continue;
      }
      // Per-channel layers carry no layer-wide polynomial that a reader could use by mistake.
      assert.equal(cl.coefficients, null);
      assert.equal(cl.interval, null);
      assert.equal(cl.channels.length, l.chosen.channels.coeffs.length);
      assert.deepEqual(cl.channels[0], {
        interval: [l.chosen.channels.intervals[0].a, l.chosen.channels.intervals[0].b],
        coefficients: l.chosen.channels.coeffs[0],
      });
    }
    assert.deepEqual(JSON.parse(fs.readFileSync(files.report, 'utf8')).final, JSON.parse(JSON.stringify(r.final)));
    const exported = await tfjsLoad(files.model);
    assert.equal(exported.layers.filter((l) => l.getClassName() === 'HEPolyActivation').length, r.layers.length);
    const x = randomBatch([16, 28, 28, 1], 9);
    const probs = (exported.predict(x) as tf.Tensor).dataSync();
    const m = await loadModel(example(name));
    const ex = new Executor(m.graph);
    const logits = ex.run(new Map([[m.graph.input, x]]), 0, { replace: polysFromReport(r) }).logits;
    ex.dispose();
    const ours = tf.softmax(tf.tensor2d(logits, [16, 10])).dataSync();
    for (let i = 0; i < ours.length; i++)
      assert.ok(Math.abs(ours[i] - probs[i]) < 1e-4, `prob ${i}: ${ours[i]} vs ${probs[i]}`);
    // Outputs are never overwritten without --force.
    assert.throws(
      () => writeOutputs(dir, m, r, false),
      (e: unknown) => e instanceof UserError && e.code === 'OUTPUT_EXISTS',
    );
    assert.throws(
      () => writeOutputs(path.dirname(example(name)), m, r, true),
      (e: unknown) => e instanceof UserError && /input model's folder/.test(e.message),
    );
  });
}

test('without labels, accuracy is agreement with the original model', async () => {
  const r = await analyze({ model: example('mnist-mlp'), data: MNIST_TEST_IMAGES, calib: 1000, heldout: 1000 });
  assert.equal(r.metric, 'agreement-with-original');
  assert.equal(r.plaintext.accuracy, 1);
  assert.ok(r.final.measuredDrop <= 1.0);
  assert.equal(r.options.tuneLabelWeight, 0, 'without labels, tuning is distillation only');
  assert.ok(!/labels/.test(r.refinements.find((x) => x.name === 'tuned')!.description));
});

test('perChannel: false fits one polynomial per layer (and measures no per-layer variant); tune: false measures no tuned variant', async () => {
  const r = await analyze({
    model: example('mnist-mlp'),
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    calib: 1000,
    heldout: 1000,
    perChannel: false,
    tune: false,
  });
  assert.equal(r.options.perChannel, false);
  assert.equal(r.options.tune, false);
  assert.ok(r.layers.every((l) => l.chosen.channels === null));
  assert.ok(!r.refinements.some((x) => x.name === 'per-layer' || x.name === 'tuned'));
  const pc = await run('mnist-mlp');
  const g = (await loadModel(example('mnist-mlp'))).graph;
  for (const l of pc.layers) {
    const shape = g.nodes[l.node].shape;
    assert.equal(l.chosen.channels?.coeffs.length, shape[shape.length - 1], `${l.name}: one polynomial per unit`);
    l.chosen.channels!.coeffs.forEach((c) => assert.equal(c.length, l.chosen.degree + 1));
  }
  assert.ok(
    pc.refinements.some((x) => x.name === 'per-layer'),
    'the per-channel analysis also measures one polynomial per layer',
  );
});

test('cancellation stops the analysis with a CancelledError', async () => {
  const ac = new AbortController();
  const p = analyze({
    model: example('mnist-cnn'),
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    signal: ac.signal,
    onProgress: (f) => {
      if (f > 0.05) ac.abort();
    },
  });
  await assert.rejects(p, (e: unknown) => e instanceof UserError && e.code === 'CANCELLED');
});

test('a MaxPooling model: its max tree is approximated inside the headline, average pooling measured beside it', async () => {
  await initBackend();
  const { saveModel } = await import('./helpers');
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [28, 28, 1],
        filters: 4,
        kernelSize: 5,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }),
      }),
      tf.layers.maxPooling2d({ poolSize: 2 }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
    ],
  });
  const file = await saveModel(model, tmpDir());
  const r = await analyze({
    model: file,
    data: MNIST_TEST_IMAGES,
    calib: 500,
    heldout: 500,
    degrees: [1, 2, 3, 7, 15],
  });
  assert.ok(r.maxPooling, 'maxPooling section present');
  assert.equal(r.maxPooling!.pools.length, 1);
  const tree = r.layers.filter((l) => l.maxTree);
  // A 2x2 window: one step along the width, one along the height; each an even polynomial on a symmetric interval.
  assert.deepEqual(
    tree.map((l) => [l.activation, l.maxTree!.axis, l.maxTree!.offset]),
    [
      ['abs', 'width', 1],
      ['abs', 'height', 1],
    ],
  );
  for (const l of tree) {
    assert.equal(l.chosen.interval.a, -l.chosen.interval.b);
    for (const c of l.chosen.channels?.coeffs ?? [l.chosen.coeffs])
      for (let k = 1; k < c.length; k += 2) assert.equal(c[k], 0);
  }
  assert.deepEqual(
    r.maxPooling!.pools[0].steps,
    tree.map((l) => l.name),
  );
  // The headline includes the trees: the degrees listed are every approximated operation's.
  assert.deepEqual(
    Object.keys(r.final.degrees),
    r.layers.map((l) => l.name),
  );
  const avg = r.maxPooling!.averagePooling;
  assert.ok(Number.isFinite(avg.drop));
  assert.ok(Math.abs(avg.drop - 100 * (1 - avg.accuracy)) < 1e-9, 'no labels: accuracy is agreement');
  assert.ok(!r.heIncompatible.some((x) => /max/i.test(x.problem)), 'max pooling is no longer incompatible');
});
