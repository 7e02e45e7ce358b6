/** src/core/model/execute.ts: the executor's activations and polynomials on tensors. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ActivationKind, activationFn } from '../src/core/numerics/activations';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor, applyPoly, clenshaw } from '../src/core/model/execute';
import { chebval } from '../src/core/numerics/chebyshev';
import { Graph } from '../src/core/model/graph';

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
