/**
 * Coefficient tuning (src/core/fit/tune.ts) on a real example model and real MNIST images: it
 * lowers the distillation loss it optimises (and, with labels, the cross-entropy against them), keeps degrees, intervals and layouts, its anchor
 * holds the polynomials in place, and it stops on cancellation.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { loadDataset, splitIndices } from '../src/core/data/read';
import { CancelledError } from '../src/core/errors';
import { Fit, chooseInterval, fitDegrees, polyOf } from '../src/core/fit/fit';
import { TUNE_DEFAULTS, TuneOptions, tuneCoefficients } from '../src/core/fit/tune';
import { distillLoss, softTargets, teacherRows } from '../src/core/fit/distill';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { GraphNode, actSpec, activationNodes } from '../src/core/model/graph';
import { loadModel } from '../src/core/model/load';
import { gather, profileActivations } from '../src/core/profile/profiler';
import { ValueStats } from '../src/core/profile/stats';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, example } from './helpers';

interface Setup {
  ex: Executor;
  ds: ReturnType<typeof loadDataset>;
  idx: Int32Array;
  acts: GraphNode[];
  stats: Map<number, ValueStats>;
  fits: Map<number, Fit>;
}

async function setup(name: string, degree: number, perChannel: boolean): Promise<Setup> {
  await initBackend();
  const g = (await loadModel(example(name))).graph;
  const ds = loadDataset(MNIST_TEST_IMAGES, MNIST_TEST_LABELS, g.inputShape);
  const idx = splitIndices(ds.count, 512, 0, 3).calib;
  const ex = new Executor(g);
  const acts = activationNodes(g);
  const stats = await profileActivations(ex, ds, idx, { batchSize: 256, reservoir: 4096, seed: 3 });
  const fits = new Map(
    acts.map((a) => {
      const st = stats.get(a.id)!;
      return [
        a.id,
        fitDegrees('data', actSpec(a), st, chooseInterval(st, 0.02), [degree], 0.001, perChannel ? 0.02 : undefined)[0],
      ];
    }),
  );
  return { ex, ds, idx, acts, stats, fits };
}

/** Tunes the setup's fits (no offsets) with the default options overridden by `o`, seed 1. */
function tune(s: Setup, o: Partial<TuneOptions> = {}, ds: Setup['ds'] = s.ds): Promise<Map<number, Fit>> {
  return tuneCoefficients(s.ex, ds, s.idx, s.acts, s.fits, new Map(), s.stats, { ...TUNE_DEFAULTS, seed: 1, ...o });
}

function logSoftmaxRows(v: Float32Array, n: number): number[][] {
  const K = v.length / n;
  return Array.from({ length: n }, (_, i) => {
    const row = Array.from(v.subarray(i * K, (i + 1) * K));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((acc, z) => acc + Math.exp(z - m), 0));
    return row.map((z) => z - lse);
  });
}

function logits(s: Setup, fits: Map<number, Fit> | null): Float32Array {
  const g = s.ex.graph;
  const x = tf.tensor(gather(s.ds, s.idx, 0, s.idx.length), [s.idx.length, ...g.inputShape]);
  const replace = fits ? new Map(s.acts.map((a) => [a.id, polyOf(fits.get(a.id)!)])) : undefined;
  const out = s.ex.run(new Map([[g.input, x]]), 0, replace ? { replace } : {}).logits;
  x.dispose();
  return out;
}

/** Mean cross-entropy of the approximated model's softmax against the labels, in float64. */
function labelCrossEntropy(s: Setup, fits: Map<number, Fit>): number {
  const lp = logSoftmaxRows(logits(s, fits), s.idx.length);
  return -lp.reduce((acc, row, i) => acc + row[s.ds.labels![s.idx[i]]], 0) / s.idx.length;
}

/** The objective tune.ts minimises (temperature 1): cross-entropy of the approximated model's
 * softmax against the original's, minus the original's entropy (= KL divergence), in float64. */
function klDivergence(s: Setup, fits: Map<number, Fit>): number {
  const lt = logSoftmaxRows(logits(s, null), s.idx.length);
  const lp = logSoftmaxRows(logits(s, fits), s.idx.length);
  return (
    lt.reduce((acc, row, i) => acc + row.reduce((r, l, k) => r + Math.exp(l) * (l - lp[i][k]), 0), 0) / s.idx.length
  );
}

test('coefficient tuning lowers the distillation loss on calibration data, same degrees and intervals (per channel and per layer)', async () => {
  for (const perChannel of [true, false]) {
    const s = await setup('mnist-mlp', 3, perChannel);
    try {
      // 512 images make 4 batches per epoch: more epochs than the default so the descent shows.
      const tuned = await tune(s, { epochs: 12, labelWeight: 0 });
      const before = klDivergence(s, s.fits);
      const after = klDivergence(s, tuned);
      assert.ok(after < 0.8 * before, `perChannel ${perChannel}: KL ${before} -> ${after}`);
      for (const a of s.acts) {
        const f0 = s.fits.get(a.id)!;
        const f1 = tuned.get(a.id)!;
        assert.equal(f1.degree, f0.degree);
        assert.deepEqual(f1.interval, f0.interval);
        assert.equal(f1.coeffs.length, f0.degree + 1);
        if (perChannel) {
          assert.deepEqual(f1.channels!.intervals, f0.channels!.intervals);
          assert.equal(f1.channels!.coeffs.length, f0.channels!.coeffs.length);
          f1.channels!.coeffs.forEach((c) => assert.equal(c.length, f0.degree + 1));
          assert.ok(
            f1.channels!.coeffs.some((c, j) => c.some((v, k) => v !== f0.channels!.coeffs[j][k])),
            'coefficients changed',
          );
        } else {
          assert.equal(f1.channels, undefined);
          assert.ok(
            f1.coeffs.some((v, k) => v !== f0.coeffs[k]),
            'coefficients changed',
          );
        }
        // The quality figures describe the tuned polynomials, not the fitted ones.
        assert.ok(Number.isFinite(f1.rmsData) && f1.rmsData !== f0.rmsData);
      }
    } finally {
      s.ex.dispose();
    }
  }
});

test('with labels, the label term lowers the cross-entropy against them; without labels it is ignored', async () => {
  const s = await setup('mnist-mlp', 3, true);
  try {
    const distilled = await tune(s, { labelWeight: 0 });
    const labelled = await tune(s, { labelWeight: 1 });
    const [ce0, ceD, ceL] = [s.fits, distilled, labelled].map((f) => labelCrossEntropy(s, f));
    assert.ok(ceL < ceD && ceL < ce0, `label cross-entropy: fitted ${ce0}, distilled ${ceD}, label-tuned ${ceL}`);
    // The same data without labels: the label weight has nothing to act on, so the run is the
    // distillation-only one, coefficient for coefficient.
    const unlabelled = await tune(s, { labelWeight: 0.5 }, { ...s.ds, labels: null });
    for (const a of s.acts)
      assert.deepEqual(unlabelled.get(a.id)!.channels!.coeffs, distilled.get(a.id)!.channels!.coeffs);
  } finally {
    s.ex.dispose();
  }
});

test('a strong anchor keeps tuned polynomials at the fitted ones; an aborted signal cancels', async () => {
  const s = await setup('mnist-mlp', 3, true);
  try {
    const held = await tune(s, { anchor: 1e6 });
    const free = await tune(s, { anchor: 0 });
    const maxChange = (m: Map<number, Fit>) =>
      Math.max(
        ...s.acts.map((a) => {
          const f0 = s.fits.get(a.id)!.channels!.coeffs;
          return Math.max(...m.get(a.id)!.channels!.coeffs.flatMap((c, j) => c.map((v, k) => Math.abs(v - f0[j][k]))));
        }),
      );
    // Adam moves each coefficient by about lr x scale per step at first whatever the loss, so a
    // strong anchor shows as changes far below the free run's, not as zero.
    assert.ok(maxChange(held) < 0.2 * maxChange(free), `anchored ${maxChange(held)} vs free ${maxChange(free)}`);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(tune(s, { signal: ac.signal }), (e: unknown) => e instanceof CancelledError);
  } finally {
    s.ex.dispose();
  }
});

test("the distillation loss: Hinton et al.'s T^2-scaled soft cross-entropy mixed with the labels' (numpy reference)", async () => {
  await initBackend();
  // numpy: lsm = log-softmax; kd = -mean(sum(softmax(t/T) * lsm(z/T))) * T^2, ce = -mean(lsm(z)[y]).
  const z = tf.tensor2d([
    [1.0, -0.5, 2.0],
    [0.3, 0.2, -1.0],
  ]);
  // Teacher rows 3 and 1 of a four-sample table: the batch picks them.
  const teacher = Float32Array.from([9, 9, 9, -0.2, 1.0, 0.1, 9, 9, 9, 0.5, 0.0, 1.5]);
  const soft = softTargets(teacherRows(teacher, [3, 1], 3), 3, 2);
  const hard = tf.oneHot(tf.tensor1d([2, 1], 'int32'), 3);
  const close = (got: tf.Scalar, want: number) =>
    assert.ok(Math.abs(got.dataSync()[0] - want) < 1e-5, `${got.dataSync()[0]} vs ${want}`);
  close(distillLoss(z, soft, null, 2, 0.3), 4.372108630848896);
  close(distillLoss(z, soft, hard, 2, 0.3), 3.2479245009928412);
  close(distillLoss(z, soft, hard, 2, 1), 0.6248281979953814);
  close(distillLoss(z, null, hard, 2, 0.3), 0.6248281979953814);
  assert.throws(() => distillLoss(z, null, null, 2, 0.3));
});
