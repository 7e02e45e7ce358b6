/**
 * The analysis stages on their own: the first-order sensitivity screen against the exact margin
 * change, its two contraction paths against each other, the degree chooser against exhaustive
 * search, the bootstrap count on hand-counted graphs, the one-pass propagation sweep against
 * per-layer passes, the held-out range check, and the executor pieces the stages rely on
 * (gradient of strided convolutions and strided slices, float64 polynomial evaluation).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { loadDataset, splitIndices } from '../src/core/data/read';
import { Fit, chooseInterval, fitDegrees, polyOf, polysOf } from '../src/core/fit/fit';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { Graph, GraphNode, actSpec, activationNodes } from '../src/core/model/graph';
import { loadModel } from '../src/core/model/load';
import { chebval } from '../src/core/numerics/chebyshev';
import { polyValues } from '../src/core/numerics/polynomial';
import { HeldoutCache, Sweep, captureValues, gather, profileActivations } from '../src/core/profile/profiler';
import { planBootstraps } from '../src/core/cost/bootstrap';
import { ActivationCost } from '../src/core/cost/cost';
import { Rng } from '../src/core/rng';
import { fitStage } from '../src/core/analysis/fitStage';
import { searchDegrees } from '../src/core/analysis/search';
import { DegreeChooser } from '../src/core/analysis/selection';
import { Screen, predictedDrop, screenCandidates } from '../src/core/analysis/sensitivity';
import { resolveSettings } from '../src/core/analysis/settings';
import { WASM_HEAP_BYTES, checkAnalysisMemory, estimateAnalysisMemory, outOfMemory } from '../src/core/analysis/memory';
import { VALUE_BOUND, measureHeldout } from '../src/core/analysis/verify';
import { UserError } from '../src/core/errors';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, example } from './helpers';

async function mnist(name: string, n = 1200) {
  await initBackend();
  const m = await loadModel(example(name));
  const g = m.graph;
  const ds = loadDataset(MNIST_TEST_IMAGES, MNIST_TEST_LABELS, g.inputShape);
  const split = splitIndices(ds.count, n, n, 3);
  return { g, ds, split, ex: new Executor(g), acts: activationNodes(g) };
}

/** Margin of each sample (label logit minus the largest other) with `replace` applied. */
function margins(
  ex: Executor,
  ds: ReturnType<typeof loadDataset>,
  idx: Int32Array,
  replace: Map<number, ReturnType<typeof polyOf>>,
): Float64Array {
  const n = idx.length;
  const x = tf.tensor(gather(ds, idx, 0, n), [n, ...ds.sampleShape]);
  const z = ex.run(new Map([[ex.graph.input, x]]), 0, { replace }).logits;
  x.dispose();
  const K = z.length / n;
  return Float64Array.from({ length: n }, (_, i) => {
    const y = ds.labels![idx[i]];
    let other = -Infinity;
    for (let j = 0; j < K; j++) if (j !== y) other = Math.max(other, z[i * K + j]);
    return z[i * K + y] - other;
  });
}

test('sensitivity screen: the first-order margin change tracks the exact one, and both contraction paths agree', async () => {
  for (const name of ['mnist-cnn', 'mnist-silu']) {
    const { g, ds, split, ex, acts } = await mnist(name);
    try {
      const s = resolveSettings({ model: '', data: '', degrees: [3, 7, 15] });
      const stats = await profileActivations(ex, ds, split.calib, {
        batchSize: 256,
        reservoir: 4096,
        seed: 1,
        channels: true,
      });
      const fit = fitStage(g, acts, stats, s);
      const idx = split.calib.slice(0, 200);
      const auto = await screenCandidates(ex, ds, idx, acts, stats, fit.candidates, { batchSize: 64 });
      const direct = await screenCandidates(ex, ds, idx, acts, stats, fit.candidates, {
        batchSize: 64,
        contraction: 'direct',
      });
      const grid = await screenCandidates(ex, ds, idx, acts, stats, fit.candidates, {
        batchSize: 64,
        contraction: 'grid',
      });
      const base = margins(ex, ds, idx, new Map());
      acts.forEach((a, l) => {
        for (const [k, f] of fit.candidates.get('data')![l].entries()) {
          const dm = direct.dm.get('data')![l][k];
          const dg = grid.dm.get('data')![l][k];
          const scale = Math.sqrt(dm.reduce((t, v) => t + v * v, 0) / dm.length);
          // The grid interpolates the error linearly between 8 nodes per degree: close, not exact.
          const gridErr = Math.sqrt(dm.reduce((t, v, i) => t + (v - dg[i]) ** 2, 0) / dm.length);
          assert.ok(
            gridErr <= 0.1 * scale + 1e-6,
            `${name} ${a.name} degree ${f.degree}: grid vs direct rms ${gridErr} against ${scale}`,
          );
          assert.deepEqual(auto.dm.get('data')![l][k].length, dm.length);
          if (f.degree !== 15) continue;
          // At a high degree the error is small and first order is accurate: compare with the
          // exact margin change of approximating this one layer.
          const exact = margins(ex, ds, idx, new Map([[a.id, polyOf(f)]]));
          let se = 0;
          let ss = 0;
          for (let i = 0; i < idx.length; i++) {
            const d = exact[i] - base[i];
            se += (d - dm[i]) ** 2;
            ss += d * d;
          }
          assert.ok(
            se <= 0.25 * ss + 1e-10,
            `${name} ${a.name}: first order explains ${(100 * (1 - se / ss)).toFixed(0)}% of the exact margin change`,
          );
        }
      });
      assert.deepEqual(Array.from(direct.margins), Array.from(base, Math.fround));
    } finally {
      ex.dispose();
    }
  }
});

/** A synthetic screen: S samples with margins, and per layer per candidate margin changes. */
function syntheticScreen(
  rng: Rng,
  L: number,
  K: number,
  S: number,
): { screen: Screen; rows: Float32Array[][]; costs: ActivationCost[][] } {
  const marginsV = Float32Array.from({ length: S }, () => rng.next() * 4 - 0.5);
  const right = Uint8Array.from(marginsV, (m) => Number(m > 0));
  const rows = Array.from({ length: L }, () =>
    Array.from({ length: K }, (_, k) => {
      const size = 2 / (k + 1) ** 1.5;
      return Float32Array.from({ length: S }, () => (rng.next() - 0.6) * size * rng.next() * 3);
    }),
  );
  const costs = Array.from({ length: L }, () =>
    Array.from({ length: K }, (_, k) => ({
      degree: 2 ** (k + 1) - 1,
      polyDepth: k + 1,
      affineLevel: 0,
      depth: k + 1,
      nonScalarMults: 2 * k + 1,
      latencyMs: 0,
    })),
  );
  return { screen: { samples: S, margins: marginsV, right, target: new Int32Array(S), dm: new Map() }, rows, costs };
}

test('degree chooser: a frontier ordered by depth whose cheapest choice within the target is as cheap as exhaustive search on nearly every instance', () => {
  const rng = new Rng(7);
  let optimal = 0;
  const trials = 60;
  for (let t = 0; t < trials; t++) {
    const L = 2 + (t % 3);
    const K = 4;
    const { screen, rows, costs } = syntheticScreen(rng, L, K, 200);
    // A chain: its L + 1 dense layers take a level each, and the activations' levels add.
    const net = chain(L);
    const chooser = new DegreeChooser(screen, rows, costs, { g: net, acts: activationNodes(net) });
    const target = 0.5 + 3 * rng.next();
    const maxDepth = t % 4 === 0 ? 3 * L + 1 : Infinity;
    const frontier = chooser.frontier(target, maxDepth);
    assert.ok(frontier.length > 0);
    for (const [k, p] of frontier.entries()) {
      assert.ok(p.depth <= maxDepth);
      assert.equal(
        p.predictedDrop,
        predictedDrop(
          screen,
          p.picks.map((c, j) => rows[j][c]),
        ),
      );
      assert.equal(p.depth, L + 1 + p.picks.reduce((d, c, j) => d + costs[j][c].depth, 0));
      if (k) assert.ok(p.depth >= frontier[k - 1].depth, `trial ${t}: not ordered by depth at ${k}`);
    }
    // Exhaustive: the least depth whose predicted drop meets the target.
    let best = Infinity;
    const rec = (l: number, picks: number[], depth: number) => {
      if (l === L) {
        if (
          depth <= maxDepth &&
          predictedDrop(
            screen,
            picks.map((k, j) => rows[j][k]),
          ) <=
            target + 1e-9
        )
          best = Math.min(best, depth);
        return;
      }
      for (let k = 0; k < K; k++) rec(l + 1, [...picks, k], depth + costs[l][k].depth);
    };
    rec(0, [], L + 1);
    const got = frontier.find((p) => p.predictedDrop <= target + 1e-9);
    if (best === Infinity) {
      assert.equal(got, undefined, `trial ${t}: nothing meets the target`);
      optimal++;
      continue;
    }
    assert.ok(got, `trial ${t}: a choice meets the target but the frontier has none`);
    if (got.depth === best) optimal++;
  }
  assert.ok(optimal >= 0.9 * trials, `optimal on ${optimal} of ${trials} instances`);
});

/** A chain: input -> (dense -> activation) x n -> dense. */
function chain(n: number): Graph {
  const nodes: GraphNode[] = [
    { id: 0, name: 'in', layer: 'in', className: 'InputLayer', inputs: [], shape: [4], spec: { op: 'input' } },
  ];
  const dense = (id: number, from: number): GraphNode => ({
    id,
    name: `d${id}`,
    layer: `d${id}`,
    className: 'Dense',
    inputs: [from],
    shape: [4],
    spec: { op: 'dense', units: 4, kernel: new Float32Array(16), kernelShape: [4, 4], bias: null },
  });
  for (let i = 0; i < n; i++) {
    nodes.push(dense(nodes.length, nodes.length - 1));
    nodes.push({
      id: nodes.length,
      name: `a${i}`,
      layer: `d${nodes.length - 1}`,
      className: 'Dense',
      inputs: [nodes.length - 1],
      shape: [4],
      spec: { op: 'activation', act: { kind: 'relu' } },
    });
  }
  nodes.push(dense(nodes.length, nodes.length - 1));
  return {
    name: 'chain',
    nodes,
    input: 0,
    output: nodes.length - 1,
    inputShape: [4],
    notes: [],
    droppedFinalSoftmax: false,
  };
}

test('search: the cheapest choice whose check passes, the same from any first guess: 2 checks when the guess is it, about log2(frontier) above a failed one', async () => {
  // One activation; frontier choice i is candidate i, whose check drop falls with i (the
  // nearly monotone shape the search relies on), and whose held-out drop equals its check.
  const N = 40;
  const act = { id: 3, name: 'relu' } as GraphNode;
  const fits: Fit[] = Array.from({ length: N }, (_, i) => ({
    method: 'data',
    degree: i + 1,
    interval: { a: -1, b: 1 },
    coeffs: [i],
    rmsData: 0,
    maxErrObserved: 0,
    maxAbsInterval: 1,
  }));
  for (const answer of [0, 1, 17, N - 2, N - 1, N]) {
    const drop = (i: number) => (i >= answer ? 0.5 : 2 + (N - i) / N);
    for (const guessAt of [0, 5, answer - 1, answer, answer + 3, N - 1]) {
      let checks = 0;
      const r = await searchDegrees({
        acts: [act],
        method: 'data',
        candidates: [fits],
        costs: [fits.map((f) => ({ depth: f.degree }))],
        layerDepth: (_l, f) => f.degree,
        budget: 1,
        // The first-order guess is the first choice predicted within the budget.
        frontier: fits.map((_f, i) => ({
          picks: [i],
          depth: i + 1,
          mults: i,
          predictedDrop: i >= guessAt ? 0.9 : 1.5,
        })),
        baseAccuracy: 0.9,
        check: async (m) => {
          checks++;
          return drop(m.get(3)!.coeffs[0]);
        },
        variants: async function* (plain) {
          yield plain;
        },
        measure: async (v) => ({
          accuracy: 0.9 - drop(v.fits.get(3)!.coeffs[0]) / 100,
          layers: [],
          maxAbsLogit: 1,
          maxAbs: 1,
          safe: true,
        }),
      });
      const kept = r.result!.pick.picks[0];
      // No choice passes: the most accurate one is measured, and misses.
      if (answer === N) {
        assert.equal(kept, N - 1, `guess ${guessAt}`);
        assert.equal(r.attempts[0].meetsBudget, false);
        continue;
      }
      assert.equal(kept, answer, `answer ${answer}, guess ${guessAt}`);
      assert.equal(r.attempts[0].meetsBudget, true);
      const g = guessAt > N - 1 ? -1 : Math.max(0, guessAt);
      if (g >= 0 && g >= answer) {
        // A passing first-order guess: galloping down, the choice below it fails at once when it is the answer.
        const bound = g === answer ? (g === 0 ? 1 : 2) : 2 + 2 * Math.ceil(Math.log2(g - answer + 1));
        assert.ok(checks <= bound, `answer ${answer}, passing guess ${g}: ${checks} checks, bound ${bound}`);
        if (g === answer) assert.equal(checks, bound, `answer ${answer} is the guess`);
      } else {
        // A failed guess, then bisection above it; the last choice is checked only when the bisection ends there.
        assert.ok(
          checks <= 1 + Math.ceil(Math.log2(N)) + (answer === N - 1 ? 1 : 0),
          `answer ${answer}, guess ${guessAt}: ${checks} checks`,
        );
      }
      assert.equal(checks, r.checks);
    }
  }
});

test('bootstraps: lazy placement counted by hand on a chain and a residual block', () => {
  const g = chain(5);
  const acts = activationNodes(g);
  const depth3 = new Map(acts.map((a) => [a.id, 3]));
  // Walk: left 10; d1 -> 9, a0 -> 6, d2 -> 5, a1 -> 2, d3 -> 1, a2 needs 3 > 1: bootstrap (10) -> 7,
  // d4 -> 6, a3 -> 3, d5 -> 2, a4 needs 3: bootstrap -> 7, d6 -> 6. Two bootstraps.
  const plan = planBootstraps(g, depth3, 10);
  assert.deepEqual(
    { ...plan, refreshes: undefined },
    { levelsPerBootstrap: 10, bootstraps: 2, before: ['a2', 'a4'], refreshes: undefined, tooDeep: [] },
  );
  // Each refresh names the node before which it happens and the value it refreshes (the dense layer feeding the activation).
  assert.deepEqual(
    plan.refreshes.map((x) => [g.nodes[x.node].name, g.nodes[x.value].spec.op]),
    [
      ['a2', 'dense'],
      ['a4', 'dense'],
    ],
  );
  // Everything fits one chain of 25 levels: none.
  assert.equal(planBootstraps(g, depth3, 25).bootstraps, 0);
  // A polynomial deeper than the levels between bootstraps is split: depth 7 with 5 per bootstrap
  // takes a refresh before each activation (1 or 2 left) and one inside it: 2 x 5.
  assert.equal(planBootstraps(g, new Map(acts.map((a) => [a.id, 7])), 5).bootstraps, 10);
  // Residual: x -> dense -> act(3) -> dense -> add(x) -> act(3) -> dense, 5 levels per bootstrap.
  const r: GraphNode[] = [
    { id: 0, name: 'in', layer: 'in', className: 'InputLayer', inputs: [], shape: [4], spec: { op: 'input' } },
    { ...chain(1).nodes[1], id: 1, name: 'd1', inputs: [0] },
    {
      id: 2,
      name: 'a1',
      layer: 'd1',
      className: 'Dense',
      inputs: [1],
      shape: [4],
      spec: { op: 'activation', act: { kind: 'relu' } },
    },
    { ...chain(1).nodes[1], id: 3, name: 'd2', inputs: [2] },
    { id: 4, name: 'add', layer: 'add', className: 'Add', inputs: [3, 0], shape: [4], spec: { op: 'add' } },
    {
      id: 5,
      name: 'a2',
      layer: 'add',
      className: 'Add',
      inputs: [4],
      shape: [4],
      spec: { op: 'activation', act: { kind: 'relu' } },
    },
    { ...chain(1).nodes[1], id: 6, name: 'd3', inputs: [5] },
  ];
  const rg: Graph = {
    name: 'res',
    nodes: r,
    input: 0,
    output: 6,
    inputShape: [4],
    notes: [],
    droppedFinalSoftmax: false,
  };
  // left: in 5; d1 4; a1 1; d2 0; add 0; a2 needs 3: bootstrap add's output -> 2; d3 1. One.
  const rp = planBootstraps(
    rg,
    new Map([
      [2, 3],
      [5, 3],
    ]),
    5,
  );
  assert.deepEqual(
    [rp.bootstraps, rp.before, rp.refreshes.map((x) => rg.nodes[x.value].spec.op)],
    [1, ['a2'], ['add']],
  );
});

test('propagation sweep: one pass gives each activation the values per-layer passes give, polynomials upstream', async () => {
  const { ds, split, ex, acts } = await mnist('mnist-resnet', 300);
  try {
    const idx = split.calib.slice(0, 150);
    const stats = await profileActivations(ex, ds, idx, { batchSize: 64, reservoir: 2048, seed: 1 });
    const fits = new Map(
      acts.map((a) => {
        const st = stats.get(a.id)!;
        return [a.id, fitDegrees('uniform', actSpec(a), st, chooseInterval(st, 0.05), [5], 0)[0]];
      }),
    );
    const sweep = new Sweep(ex, ds, idx, 64);
    const replace = new Map<number, ReturnType<typeof polyOf>>();
    for (const a of acts) {
      const [got] = await sweep.advance(a.id, { replace });
      const want = (await captureValues(ex, ds, idx, [a.inputs[0]], { replace }, { batchSize: 64 })).get(a.inputs[0])!;
      let d = 0;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
      assert.ok(d < 1e-5, `${a.name}: max difference ${d}`);
      replace.set(a.id, polyOf(fits.get(a.id)!));
    }
  } finally {
    ex.dispose();
  }
});

test('held-out range check: counts samples outside the intervals, and a polynomial blown up is unsafe', async () => {
  const { ds, split, ex, acts } = await mnist('mnist-mlp', 500);
  try {
    const stats = await profileActivations(ex, ds, split.calib, { batchSize: 128, reservoir: 4096, seed: 1 });
    const cache = await HeldoutCache.build(ex, ds, split.heldout, { batchSize: 128, cuts: [acts[0].id] });
    const fitOn = (shrink: number, degree: number) =>
      new Map<number, Fit>(
        acts.map((a) => {
          const st = stats.get(a.id)!;
          const mid = (st.min + st.max) / 2;
          const half = ((st.max - st.min) / 2) * shrink;
          return [a.id, fitDegrees('uniform', actSpec(a), st, { a: mid - half, b: mid + half }, [degree], 0)[0]];
        }),
      );
    const none = new Map(acts.map((a) => [a.id, null]));
    const polys = (fits: Map<number, Fit>) => polysOf(acts, fits, none);
    const wide = await measureHeldout(cache, acts, polys(fitOn(1.5, 7)));
    assert.ok(wide.safe);
    assert.deepEqual(
      wide.layers.map((l) => l.samplesOutside),
      acts.map(() => 0),
    );
    // Intervals of a fifth of the range: most samples leave them, and degree 63 outside its
    // interval grows like T_63(t), far beyond what a ciphertext holds.
    const narrow = await measureHeldout(cache, acts, polys(fitOn(0.2, 63)));
    assert.ok(
      narrow.layers[0].samplesOutside > cache.count / 2,
      `${narrow.layers[0].samplesOutside} of ${cache.count}`,
    );
    assert.ok(!narrow.safe);
    assert.ok(narrow.layers.some((l) => l.nonFinite > 0 || Math.max(l.maxAbsIn, l.maxAbsOut) >= VALUE_BOUND));
    // The counts are per sample: never more than the held-out samples, never more than the values.
    for (const l of narrow.layers) assert.ok(l.samplesOutside <= cache.count && l.samplesOutside <= l.valuesOutside);
    // The statistics computed on the backend equal the same computed here from the values.
    const mid = fitOn(0.9, 3);
    const got = await measureHeldout(cache, acts, polys(mid));
    const replace = new Map(acts.map((a) => [a.id, polyOf(mid.get(a.id)!)]));
    const vals = await captureValues(
      ex,
      ds,
      split.heldout,
      acts.flatMap((a) => [a.inputs[0], a.id]),
      { replace },
      { batchSize: 128 },
    );
    acts.forEach((a, k) => {
      const x = vals.get(a.inputs[0])!;
      const y = vals.get(a.id)!;
      const iv = mid.get(a.id)!.interval;
      const per = x.length / cache.count;
      let samples = 0;
      let values = 0;
      let mn = Infinity;
      let mx = -Infinity;
      let outMax = 0;
      for (let i = 0; i < cache.count; i++) {
        let o = 0;
        for (let j = i * per; j < (i + 1) * per; j++) {
          if (x[j] < iv.a || x[j] > iv.b) o++;
          mn = Math.min(mn, x[j]);
          mx = Math.max(mx, x[j]);
          outMax = Math.max(outMax, Math.abs(y[j]));
        }
        values += o;
        if (o) samples++;
      }
      const r = got.layers[k];
      assert.ok(samples > 0, `${a.name}: some held-out samples leave 90% of the range`);
      assert.deepEqual([r.samplesOutside, r.valuesOutside, r.min, r.max], [samples, values, mn, mx], a.name);
      assert.ok(Math.abs(r.maxAbsOut - outMax) <= 1e-5 * outMax, `${a.name}: ${r.maxAbsOut} vs ${outMax}`);
    });
  } finally {
    ex.dispose();
  }
});

test('executor: strided convolutions and strided slices have the gradients TensorFlow.js computes', async () => {
  await initBackend();
  const rng = new Rng(3);
  const cases: [number, number, number, 'same' | 'valid' | [[number, number], [number, number]]][] = [
    [9, 3, 1, 'same'],
    [9, 3, 2, 'same'],
    [8, 3, 2, 'same'],
    [8, 1, 2, 'valid'],
    [9, 3, 1, 'valid'],
    [
      8,
      3,
      2,
      [
        [1, 1],
        [1, 1],
      ],
    ],
    [
      8,
      3,
      2,
      [
        [0, 1],
        [1, 0],
      ],
    ],
    [10, 5, 3, 'same'],
  ];
  for (const [H, kh, s, pad] of cases) {
    const kernel = Float32Array.from({ length: kh * kh * 3 * 4 }, () => rng.next() - 0.5);
    const g: Graph = {
      name: 'c',
      input: 0,
      output: 2,
      inputShape: [H, H, 3],
      notes: [],
      droppedFinalSoftmax: false,
      nodes: [
        {
          id: 0,
          name: 'in',
          layer: 'in',
          className: 'InputLayer',
          inputs: [],
          shape: [H, H, 3],
          spec: { op: 'input' },
        },
        {
          id: 1,
          name: 'c',
          layer: 'c',
          className: 'Conv2D',
          inputs: [0],
          shape: [],
          spec: {
            op: 'conv2d',
            filters: 4,
            kernel,
            kernelShape: [kh, kh, 3, 4],
            bias: null,
            strides: [s, s],
            padding: pad,
            dilation: [1, 1],
          },
        },
        {
          id: 2,
          name: 'sl',
          layer: 'sl',
          className: 'Slice',
          inputs: [1],
          shape: [],
          spec: {
            op: 'slice',
            begin: [0, 1, 0],
            end: [
              Math.ceil(H / s) - (pad === 'valid' ? kh - 1 : 0),
              Math.ceil(H / s) - (pad === 'valid' ? kh - 1 : 0),
              4,
            ],
            step: [2, 2, 1],
          },
        },
      ],
    };
    const ex = new Executor(g);
    const x = tf.tensor4d(
      Float32Array.from({ length: 2 * H * H * 3 }, () => rng.next()),
      [2, H, H, 3],
    );
    const k = tf.tensor4d(kernel, [kh, kh, 3, 4]);
    const tp =
      pad === 'same' || pad === 'valid'
        ? pad
        : ([[0, 0], pad[0], pad[1], [0, 0]] as [
            [number, number],
            [number, number],
            [number, number],
            [number, number],
          ]);
    const sl = g.nodes[2].spec as { begin: number[]; end: number[]; step: number[] };
    const ref = (xx: tf.Tensor) =>
      tf.stridedSlice(tf.conv2d(xx as tf.Tensor4D, k, s, tp), [0, ...sl.begin], [2, ...sl.end], [1, ...sl.step]);
    const w = tf.randomUniform(ref(x).shape, -1, 1, 'float32', 5);
    const ours = (xx: tf.Tensor) => ex.forward(new Map([[0, xx]]), 0, {});
    const dv = tf.max(tf.abs(tf.sub(ref(x), ours(x)))).dataSync()[0];
    assert.equal(dv, 0, `value ${H} ${kh} ${s} ${JSON.stringify(pad)}`);
    // tfjs has no gradient for StridedSlice: the reference differentiates the convolution and
    // scatters through the slice by hand (a zero tensor with w at the kept positions).
    const full = tf.conv2d(x, k, s, tp).shape;
    const scatter = tf.buffer(full);
    const wv = w.arraySync() as number[][][][];
    for (let b = 0; b < 2; b++)
      for (let i = 0; i < wv[b].length; i++)
        for (let j = 0; j < wv[b][i].length; j++)
          for (let c = 0; c < 4; c++) {
            scatter.set(wv[b][i][j][c], b, sl.begin[0] + i * sl.step[0], sl.begin[1] + j * sl.step[1], c);
          }
    const gRef = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(xx as tf.Tensor4D, k, s, tp), scatter.toTensor())))(
      x,
    );
    const gOurs = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(ours(xx), w)))(x);
    const dg = tf.max(tf.abs(tf.sub(gRef, gOurs))).dataSync()[0];
    assert.ok(dg < 1e-4, `gradient ${H} ${kh} ${s} ${JSON.stringify(pad)}: ${dg}`);
    ex.dispose();
  }
});

test('float64 polynomial evaluation on channels equals the Chebyshev series, four points at a time and the remainder', () => {
  const rng = new Rng(9);
  for (const n of [1, 3, 4, 5, 37]) {
    const C = 3;
    const x = Float32Array.from({ length: n * C }, () => rng.next() * 8 - 4);
    const channels = {
      intervals: [
        { a: -4, b: 4 },
        { a: -2, b: 5 },
        { a: -5, b: 1 },
      ],
      coeffs: [0, 1, 2].map(() => Array.from({ length: 12 }, () => rng.next() - 0.5)),
    };
    const offset = Float32Array.from([0.1, -0.2, 0.3]);
    const got = polyValues(x, C, { coeffs: [], a: 0, b: 1, channels, channelOffset: offset });
    for (let i = 0; i < x.length; i++) {
      const c = i % C;
      const want = chebval(x[i], channels.coeffs[c], channels.intervals[c]) - offset[c];
      assert.ok(Math.abs(got[i] - want) < 1e-5 * (1 + Math.abs(want)), `n=${n} i=${i}: ${got[i]} vs ${want}`);
    }
    const one = polyValues(x, C, { coeffs: channels.coeffs[0], a: -4, b: 4 });
    for (let i = 0; i < x.length; i++)
      assert.ok(Math.abs(one[i] - chebval(x[i], channels.coeffs[0], { a: -4, b: 4 })) < 1e-5);
  }
});

test('settings: every option is checked before anything is loaded, with its flag in the fix', () => {
  const base = { model: 'm', data: 'd' };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ budget: 0 }, /accuracy budget/],
    [{ ringSize: 1000 }, /ring size/],
    [{ levelBudget: 2.5 }, /level budget/],
    [{ bootstrapLevels: 1 }, /between bootstraps/],
    [{ degrees: [0, 3] }, /degrees/],
    [{ margin: 2 }, /margin must/],
    [{ marginGrowth: -1 }, /margin growth/],
    [{ floor: 1 }, /floor/],
    [{ screenSamples: 0 }, /screen samples/],
    [{ tuneLabelWeight: 2 }, /label weight/],
    [{ method: 'best' }, /fit method/],
    [{ scale: -3 }, /input scale/],
  ];
  for (const [o, re] of bad) {
    assert.throws(
      () => resolveSettings({ ...base, ...o } as Parameters<typeof resolveSettings>[0]),
      (e: unknown) => e instanceof UserError && e.code === 'OPTION_INVALID' && re.test(e.message) && e.fix.length > 0,
      JSON.stringify(o),
    );
  }
  const s = resolveSettings(base);
  assert.equal(s.levelBudget, 19);
  assert.equal(s.levelBudgetGiven, false);
  assert.equal(resolveSettings({ ...base, levelBudget: 40 }).levelBudgetGiven, true);
  assert.deepEqual(resolveSettings({ ...base, degrees: [7, 3, 7] }).degrees, [3, 7]);
});

test('memory estimate: counted from the graph, refused with the estimate and the limit, the suggested option fits; a heap abort becomes the same error', async () => {
  await initBackend();
  const g = (await loadModel(example('mnist-cnn'))).graph;
  const o = { heldout: 2000, batchSize: 256, tune: true, minDegree: 1 };
  const e = estimateAnalysisMemory(g, o);
  // Counted by hand for the CNN (input 28x28x1; conv 24x24x6 and its relu; pool 12x12x6; conv 8x8x16 and relu; pool 4x4x16;
  // flatten 256; dense 64 and relu; dense 10): the weights are the model's 4-byte floats, the batch term all nodes' values,
  // the cache what is live where the first activation starts (the first conv's output).
  const params = g.nodes.reduce(
    (n, node) =>
      n + Object.values(node.spec).reduce((m: number, v) => m + (v instanceof Float32Array ? v.length : 0), 0),
    0,
  );
  assert.equal(e.weights, 4 * params);
  assert.equal(e.perSampleCache, 4 * 24 * 24 * 6);
  assert.equal(
    e.perSampleBatch,
    4 * (28 * 28 + 2 * 24 * 24 * 6 + 12 * 12 * 6 + 2 * 8 * 8 * 16 + 4 * 4 * 16 + 256 + 2 * 64 + 10),
  );
  assert.equal(e.largest.name, 'conv2d_Conv2D1');
  assert.equal(e.cache, 2000 * e.perSampleCache);
  assert.equal(e.batch, 256 * e.perSampleBatch);
  assert.equal(e.tape, 0, "the CNN's tape fits the tuning budget");
  // This machine runs it (the integration tests do): no refusal at its real size.
  checkAnalysisMemory(g, o, 'wasm');
  // On a machine with 40 MB, the held-out cache is what does not fit: the fix names a count that does.
  const total = 40e6;
  let fix = '';
  assert.throws(
    () => checkAnalysisMemory(g, o, 'wasm', total),
    (err: unknown) => {
      assert.ok(err instanceof UserError && err.code === 'MEMORY_LIMIT');
      assert.match(
        err.message,
        /needs at least \d+\.\d GB: .*held-out values of 2,000 samples.*more than 0\.0 GB \(3\/4 of this machine's memory\)/,
      );
      fix = err.fix;
      return true;
    },
  );
  const n = Number(/--heldout (\d+) or fewer/.exec(fix)?.[1]);
  assert.ok(n >= 1 && n < 2000, fix);
  checkAnalysisMemory(g, { ...o, heldout: n }, 'wasm', total);
  // A batch beyond the wasm heap: refused with a batch size that fits half of it.
  const huge = Math.ceil(WASM_HEAP_BYTES / e.perSampleBatch) + 1;
  assert.throws(
    () => checkAnalysisMemory(g, { ...o, batchSize: huge }, 'wasm'),
    (err: unknown) => {
      assert.ok(err instanceof UserError && err.code === 'MEMORY_LIMIT');
      assert.match(
        err.message,
        new RegExp(
          `one batch of ${huge} samples needs at least .* more than the 4\\.3 GB the wasm backend can address`,
        ),
      );
      const b = Number(/--batch-size (\d+) or less/.exec(err.fix)?.[1]);
      assert.ok(b >= 1 && e.weights + b * e.perSampleBatch <= WASM_HEAP_BYTES / 2, err.fix);
      return true;
    },
  );
  // The heap's abort past the estimate: a RangeError from an allocation is this; other errors are not.
  const oom = outOfMemory(new RangeError('Array buffer allocation failed'), 'refine', 64);
  assert.ok(
    oom &&
      oom.code === 'MEMORY_LIMIT' &&
      /ran out of memory in its refine stage/.test(oom.message) &&
      /--batch-size \(now 64\)/.test(oom.fix),
  );
  assert.equal(outOfMemory(new Error('something else'), 'refine', 64), null);
  // A wasm trap while most of the heap is free is a bug, not memory: it stays an internal error.
  const heap = (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.byteLength;
  assert.ok(heap < WASM_HEAP_BYTES / 2);
  const { RuntimeError } = (globalThis as unknown as { WebAssembly: { RuntimeError: new (m: string) => Error } })
    .WebAssembly;
  assert.equal(outOfMemory(new RuntimeError('memory access out of bounds'), 'fit', 64), null);
});
