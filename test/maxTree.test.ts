/** Max pooling as a tree of pairwise maxima (src/core/model/maxTree.ts): exact with the exact |x|, every window, stride and padding. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { Graph, GraphNode, Op, Padding, activationNodes } from '../src/core/model/graph';
import { expandMaxPooling, treeOffsets, treeSteps } from '../src/core/model/maxTree';
import { outDim } from '../src/core/model/passes';
import { randomBatch } from './helpers';

/** input [H, W, C] -> one pooling node. */
function poolGraph(H: number, W: number, C: number, spec: Op, out: number[]): Graph {
  const nodes: GraphNode[] = [
    {
      id: 0,
      name: 'input',
      layer: 'input',
      className: 'InputLayer',
      inputs: [],
      shape: [H, W, C],
      spec: { op: 'input' },
    },
    { id: 1, name: 'pool', layer: 'pool', className: 'MaxPooling2D', inputs: [0], shape: out, spec },
  ];
  return { name: 't', nodes, input: 0, output: 1, inputShape: [H, W, C], notes: [], droppedFinalSoftmax: false };
}

test('treeOffsets: ceil(log2 k) steps whose windows cover exactly k values', () => {
  for (let k = 1; k <= 33; k++) {
    const o = treeOffsets(k);
    assert.equal(o.length, k === 1 ? 0 : Math.ceil(Math.log2(k)), `k=${k}`);
    assert.equal(1 + o.reduce((s, v) => s + v, 0), k, `k=${k}: covered`);
    // Each step at most doubles the covered width, so the two operands' windows touch or overlap.
    let w = 1;
    for (const off of o) {
      assert.ok(off >= 1 && off <= w);
      w += off;
    }
  }
  assert.deepEqual(treeSteps(3, 2), [
    { axis: 1, offset: 1 },
    { axis: 0, offset: 1 },
    { axis: 0, offset: 1 },
  ]);
});

test('the expanded max tree computes tf.maxPool exactly, for every window, stride and padding', async () => {
  await initBackend();
  const cases: { k: [number, number]; s: [number, number]; p: Padding; H: number; W: number }[] = [
    { k: [2, 2], s: [2, 2], p: 'valid', H: 8, W: 8 },
    { k: [2, 2], s: [1, 1], p: 'valid', H: 5, W: 6 },
    { k: [3, 3], s: [2, 2], p: 'valid', H: 9, W: 7 },
    { k: [3, 3], s: [1, 1], p: 'same', H: 6, W: 5 },
    { k: [3, 3], s: [2, 2], p: 'same', H: 7, W: 8 },
    {
      k: [3, 3],
      s: [2, 2],
      p: [
        [1, 1],
        [1, 1],
      ],
      H: 8,
      W: 8,
    },
    {
      k: [2, 3],
      s: [2, 1],
      p: [
        [0, 1],
        [1, 1],
      ],
      H: 7,
      W: 6,
    },
    { k: [5, 5], s: [3, 3], p: 'valid', H: 11, W: 13 },
    { k: [4, 1], s: [4, 1], p: 'valid', H: 8, W: 3 },
  ];
  for (const c of cases) {
    const C = 3;
    const pads = c.p === 'valid' || c.p === 'same' ? c.p : c.p;
    const out = [
      outDim(c.H, c.k[0], c.s[0], pads === 'valid' || pads === 'same' ? pads : pads[0]),
      outDim(c.W, c.k[1], c.s[1], pads === 'valid' || pads === 'same' ? pads : pads[1]),
      C,
    ];
    const g = poolGraph(c.H, c.W, C, { op: 'maxpool', pool: c.k, strides: c.s, padding: c.p }, out);
    const e = expandMaxPooling(g);
    const abs = activationNodes(e);
    assert.equal(abs.length, treeSteps(c.k[0], c.k[1]).length, JSON.stringify(c));
    assert.ok(
      abs.every(
        (a) =>
          a.spec.op === 'activation' &&
          a.spec.act.kind === 'abs' &&
          a.layer === 'pool' &&
          a.spec.maxTree?.pool === 'pool',
      ),
    );
    assert.deepEqual(e.nodes[e.output].shape, out);
    // Negative values too: a padded window must not take a 0 (or -infinity) that is not in it.
    const x = tf.sub(randomBatch([4, c.H, c.W, C], c.H * 31 + c.W), 0.7);
    const tfPad =
      c.p === 'valid' || c.p === 'same'
        ? c.p
        : ([[0, 0], c.p[0], c.p[1], [0, 0]] as [
            [number, number],
            [number, number],
            [number, number],
            [number, number],
          ]);
    const ref = tf.maxPool(x as tf.Tensor4D, c.k, c.s, tfPad).dataSync();
    const ours = new Executor(e).run(new Map([[0, x]]), 0, {}).logits;
    assert.equal(ours.length, ref.length);
    let d = 0;
    for (let i = 0; i < ref.length; i++) d = Math.max(d, Math.abs(ours[i] - ref[i]));
    assert.ok(d < 1e-6, `${JSON.stringify(c)}: max difference ${d}`);
  }
});

test('global max pooling becomes a tree over the whole map, flattened to channels', async () => {
  await initBackend();
  const g = poolGraph(5, 7, 4, { op: 'globalmaxpool' }, [4]);
  const e = expandMaxPooling(g);
  assert.equal(activationNodes(e).length, treeOffsets(7).length + treeOffsets(5).length);
  const x = randomBatch([3, 5, 7, 4], 9);
  const ref = tf.max(x, [1, 2]).dataSync();
  const ours = new Executor(e).run(new Map([[0, x]]), 0, {}).logits;
  for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(ours[i] - ref[i]) < 1e-6);
});

test('a graph without max pooling is returned as it is', () => {
  const g = poolGraph(4, 4, 1, { op: 'avgpool', pool: [2, 2], strides: [2, 2], padding: 'valid' }, [2, 2, 1]);
  assert.equal(expandMaxPooling(g), g);
});
