/**
 * Every operation the importers produce runs backward on the wasm backend (the sensitivity screen,
 * coefficient tuning and fine-tuning all differentiate through the whole network): a walk over the
 * graph IR's operations and activation kinds, each in a small network, gradients with respect to the
 * input and every trainable weight on wasm against the same on the cpu backend; and the gradients
 * he-approx writes itself (depthwise, dilated convolutions) against TensorFlow.js's own on cpu.
 * A new operation or activation is a compile error here until it is listed, and a missing kernel a
 * test failure, not a user's crash.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { Graph, GraphNode, Op } from '../src/core/model/graph';
import { expandMaxPooling } from '../src/core/model/maxTree';
import { ActivationKind, ActivationSpec } from '../src/core/numerics/activations';
import { Rng } from '../src/core/rng';

const rng = new Rng(11);
const rand = (n: number, s = 1) => Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * s);

/** input [6, 6, 3] -> `body` -> flatten -> dense 4: one network per case. */
function net(
  body: (add: (spec: Op, shape: number[], inputs: number[], className?: string) => number) => number,
  inputShape = [6, 6, 3],
): Graph {
  const nodes: GraphNode[] = [
    { id: 0, name: 'in', layer: 'in', className: 'InputLayer', inputs: [], shape: inputShape, spec: { op: 'input' } },
  ];
  const add = (spec: Op, shape: number[], inputs: number[], className: string = spec.op): number => {
    nodes.push({
      id: nodes.length,
      name: `n${nodes.length}`,
      layer: `n${nodes.length}`,
      className,
      inputs,
      shape,
      spec,
    });
    return nodes.length - 1;
  };
  const last = body(add);
  const shape = nodes[last].shape;
  const flat = shape.length > 1 ? add({ op: 'flatten' }, [shape.reduce((a, b) => a * b, 1)], [last]) : last;
  const n = nodes[flat].shape[0];
  const out = add({ op: 'dense', units: 4, kernel: rand(n * 4), kernelShape: [n, 4], bias: rand(4) }, [4], [flat]);
  return expandMaxPooling({
    name: 't',
    nodes,
    input: 0,
    output: out,
    inputShape,
    notes: [],
    droppedFinalSoftmax: false,
  });
}

const conv = (cin: number, cout: number, k: number, extra: Partial<Extract<Op, { op: 'conv2d' }>> = {}): Op => {
  const groups = extra.groups ?? 1;
  return {
    op: 'conv2d',
    filters: cout,
    kernel: rand(k * k * (cin / groups) * cout, 0.5),
    kernelShape: [k, k, cin / groups, cout],
    bias: rand(cout),
    strides: [1, 1],
    padding: 'valid',
    dilation: [1, 1],
    ...extra,
  };
};

/** Every operation of the IR, with the networks that exercise it; `satisfies` makes a new one a compile error. */
const OPS = {
  input: [],
  dense: [
    net((a) => a({ op: 'dense', units: 5, kernel: rand(15), kernelShape: [3, 5], bias: rand(5) }, [6, 6, 5], [0])),
  ],
  conv2d: [
    net((a) => a(conv(3, 4, 3), [4, 4, 4], [0])),
    net((a) => a(conv(3, 4, 3, { strides: [2, 2], padding: 'same' }), [3, 3, 4], [0])),
    net((a) =>
      a(
        conv(3, 2, 3, {
          padding: [
            [1, 0],
            [0, 2],
          ],
        }),
        [5, 6, 2],
        [0],
      ),
    ),
    net((a) => a(conv(3, 4, 3, { dilation: [2, 2] }), [2, 2, 4], [0])),
    net((a) => a(conv(3, 4, 3, { dilation: [2, 1], padding: 'same' }), [6, 6, 4], [0])),
    // Depthwise (groups = input channels), with a channel multiplier of 2, strides and 'same'.
    net((a) => a(conv(3, 3, 3, { groups: 3 }), [4, 4, 3], [0])),
    net((a) => a(conv(3, 6, 3, { groups: 3, strides: [2, 2], padding: 'same' }), [3, 3, 6], [0])),
    net((a) => a(conv(3, 3, 3, { groups: 3, dilation: [2, 2], padding: 'same' }), [6, 6, 3], [0])),
    // Grouped: two groups of two channels.
    net((a) => a(conv(4, 4, 3, { groups: 2 }), [4, 4, 4], [a(conv(3, 4, 1), [6, 6, 4], [0])])),
  ],
  avgpool: [net((a) => a({ op: 'avgpool', pool: [2, 2], strides: [2, 2], padding: 'valid' }, [3, 3, 3], [0]))],
  maxpool: [
    net((a) => a({ op: 'maxpool', pool: [2, 2], strides: [2, 2], padding: 'valid' }, [3, 3, 3], [0])),
    net((a) => a({ op: 'maxpool', pool: [3, 3], strides: [2, 2], padding: 'same' }, [3, 3, 3], [0])),
  ],
  globalavgpool: [net((a) => a({ op: 'globalavgpool' }, [3], [0]))],
  globalmaxpool: [net((a) => a({ op: 'globalmaxpool' }, [3], [0]))],
  // Made by the max tree (maxTree.ts) from the max poolings above.
  pairdiff: [],
  pairmax: [],
  flatten: [net((a) => a({ op: 'flatten' }, [108], [0]))],
  reshape: [net((a) => a({ op: 'reshape', target: [12, 9] }, [12, 9], [0]))],
  batchnorm: [net((a) => a({ op: 'batchnorm', scale: rand(3), shift: rand(3) }, [6, 6, 3], [0], 'BatchNormalization'))],
  add: [net((a) => a({ op: 'add' }, [4, 4, 4], [a(conv(3, 4, 3), [4, 4, 4], [0]), a(conv(3, 4, 3), [4, 4, 4], [0])]))],
  identity: [net((a) => a({ op: 'identity' }, [6, 6, 3], [0]))],
  transpose: [net((a) => a({ op: 'transpose', perm: [2, 0, 1] }, [3, 6, 6], [0]))],
  pad: [
    net((a) =>
      a(
        {
          op: 'pad',
          pads: [
            [1, 0],
            [0, 2],
            [0, 0],
          ],
          value: 0,
        },
        [7, 8, 3],
        [0],
      ),
    ),
    net((a) =>
      a(
        {
          op: 'pad',
          pads: [
            [1, 1],
            [2, 0],
            [0, 0],
          ],
          value: 0,
          mode: 'edge',
        },
        [8, 8, 3],
        [0],
      ),
    ),
  ],
  slice: [net((a) => a({ op: 'slice', begin: [0, 1, 0], end: [6, 6, 3], step: [2, 2, 1] }, [3, 3, 3], [0]))],
  concat: [
    net((a) =>
      a({ op: 'concat', axis: 2 }, [4, 4, 6], [a(conv(3, 4, 3), [4, 4, 4], [0]), a(conv(3, 2, 3), [4, 4, 2], [0])]),
    ),
  ],
  activation: [] as Graph[],
  softmax: [net((a) => a({ op: 'softmax' }, [6, 6, 3], [0]))],
} satisfies Record<Op['op'], Graph[]>;

const ACTIVATIONS = {
  relu: {},
  relu6: {},
  leakyrelu: { alpha: 0.2 },
  elu: { alpha: 0.7 },
  selu: {},
  gelu: {},
  gelu_new: {},
  swish: {},
  mish: {},
  sigmoid: {},
  hard_sigmoid: {},
  tanh: {},
  softplus: {},
  softsign: {},
  abs: {},
} satisfies Record<ActivationKind, Omit<ActivationSpec, 'kind'>>;
for (const [kind, extra] of Object.entries(ACTIVATIONS)) {
  OPS.activation.push(
    net((a) =>
      a(
        { op: 'activation', act: { kind: kind as ActivationKind, ...extra } },
        [4, 4, 4],
        [a(conv(3, 4, 3), [4, 4, 4], [0])],
      ),
    ),
  );
}
OPS.activation.push(net((a) => a({ op: 'activation', act: { kind: 'relu', maxValue: 1.5 } }, [6, 6, 3], [0])));

/** Gradients of the projection w of the output (2 samples x 4), w.r.t. the input and every trainable weight, on the current backend. */
function grads(g: Graph, x: Float32Array, w: Float32Array): Float32Array[] {
  const ex = new Executor(g, { trainable: true });
  try {
    return tf.tidy(() => {
      const input = tf.tensor(x, [2, ...g.inputShape]);
      const proj = tf.tensor2d(w, [2, 4]);
      const loss = (xx: tf.Tensor) => tf.sum(tf.mul(ex.forward(new Map([[0, xx]]), 0, {}), proj)) as tf.Scalar;
      const dx = tf.grad(loss)(input);
      const { grads: dw } = tf.variableGrads(() => loss(input), ex.variables());
      return [dx, ...ex.variables().map((v) => dw[v.name])].map((t) => Float32Array.from(t.dataSync()));
    });
  } finally {
    ex.dispose();
  }
}

test("every operation and activation of the graph IR has gradients on wasm, equal to the cpu backend's", async () => {
  await initBackend();
  assert.equal(tf.getBackend(), 'wasm');
  let cases = 0;
  for (const [op, graphs] of Object.entries(OPS)) {
    for (const [i, g] of graphs.entries()) {
      const x = rand(2 * g.inputShape.reduce((a, b) => a * b, 1));
      const w = rand(8);
      const onWasm = grads(g, x, w);
      await tf.setBackend('cpu');
      let onCpu: Float32Array[];
      try {
        onCpu = grads(g, x, w);
      } finally {
        await tf.setBackend('wasm');
      }
      assert.equal(onWasm.length, onCpu.length, `${op} #${i}: the same trainable weights`);
      onWasm.forEach((a, k) => {
        const b = onCpu[k];
        const scale = Math.max(1e-3, ...b.map(Math.abs));
        let d = 0;
        for (let j = 0; j < a.length; j++) {
          assert.ok(Number.isFinite(a[j]), `${op} #${i}: a gradient is not finite`);
          d = Math.max(d, Math.abs(a[j] - b[j]));
        }
        assert.ok(d <= 2e-4 * scale, `${op} #${i}, gradient ${k}: wasm differs from cpu by ${d} (scale ${scale})`);
      });
      cases++;
    }
  }
  assert.ok(cases >= 40, `${cases} networks`);
});

test("the depthwise and dilated convolutions' own gradients equal TensorFlow.js's on cpu", async () => {
  await initBackend();
  const cases: {
    groups: number;
    cin: number;
    cout: number;
    k: number;
    s: [number, number];
    d: [number, number];
    p: 'valid' | 'same';
  }[] = [
    { groups: 3, cin: 3, cout: 3, k: 3, s: [1, 1], d: [1, 1], p: 'valid' },
    { groups: 3, cin: 3, cout: 6, k: 3, s: [2, 2], d: [1, 1], p: 'same' },
    { groups: 2, cin: 2, cout: 4, k: 5, s: [1, 1], d: [2, 2], p: 'same' },
    { groups: 1, cin: 3, cout: 4, k: 3, s: [1, 1], d: [2, 2], p: 'valid' },
    { groups: 1, cin: 3, cout: 2, k: 3, s: [1, 1], d: [1, 3], p: 'same' },
  ];
  for (const c of cases) {
    const H = 9;
    const kernel = rand(c.k * c.k * (c.cin / c.groups) * c.cout, 0.5);
    const g = net(
      (a) =>
        a(
          conv(c.cin, c.cout, c.k, { kernel, groups: c.groups, strides: c.s, dilation: c.d, padding: c.p }),
          c.p === 'same'
            ? [Math.ceil(H / c.s[0]), Math.ceil(H / c.s[1]), c.cout]
            : [H - (c.k - 1) * c.d[0], H - (c.k - 1) * c.d[1], c.cout],
          [0],
        ),
      [H, H, c.cin],
    );
    const x = rand(2 * H * H * c.cin);
    const w = rand(8);
    const ours = grads(g, x, w);
    // TensorFlow.js on cpu: its depthwise backprop kernels; a dilated convolution as the plain one
    // with the kernel's taps spread out (tfjs has no gradient for dilated conv2d).
    await tf.setBackend('cpu');
    try {
      const ref = tf.tidy(() => {
        const conv2 = g.nodes.find((n) => n.spec.op === 'conv2d')!;
        const dense = g.nodes.find((n) => n.spec.op === 'dense')!;
        const K = tf.variable(tf.tensor4d(kernel, [c.k, c.k, c.cin / c.groups, c.cout]));
        const spread = (k: tf.Tensor4D) => {
          const [kh, kw, ci, co] = k.shape;
          const eh = (kh - 1) * c.d[0] + 1;
          const ew = (kw - 1) * c.d[1] + 1;
          const idx: number[] = [];
          for (let i = 0; i < eh; i++)
            for (let j = 0; j < ew; j++)
              idx.push(i % c.d[0] === 0 && j % c.d[1] === 0 ? (i / c.d[0]) * kw + j / c.d[1] : kh * kw);
          const flat = tf.concat([tf.reshape(k, [kh * kw, ci * co]), tf.zeros([1, ci * co])]);
          return tf.reshape(tf.gather(flat, idx), [eh, ew, ci, co]) as tf.Tensor4D;
        };
        const f = (xx: tf.Tensor, k: tf.Tensor4D) => {
          const spec = conv2.spec as Extract<Op, { op: 'conv2d' }>;
          const y =
            c.groups === c.cin
              ? tf.depthwiseConv2d(
                  xx as tf.Tensor4D,
                  tf.reshape(spread(k), [
                    (c.k - 1) * c.d[0] + 1,
                    (c.k - 1) * c.d[1] + 1,
                    c.cin,
                    c.cout / c.cin,
                  ]) as tf.Tensor4D,
                  c.s,
                  c.p,
                )
              : tf.conv2d(xx as tf.Tensor4D, spread(k), c.s, c.p);
          const z = tf.add(y, spec.bias!);
          const d = dense.spec as Extract<Op, { op: 'dense' }>;
          const out = tf.add(tf.matMul(tf.reshape(z, [2, -1]), tf.tensor2d(d.kernel, d.kernelShape)), d.bias!);
          return tf.sum(tf.mul(out, tf.tensor2d(w, [2, 4])));
        };
        const input = tf.tensor(x, [2, H, H, c.cin]);
        const dx = tf.grad((xx: tf.Tensor) => f(xx, K) as tf.Scalar)(input);
        const dk = tf.grad((k: tf.Tensor) => f(input, k as tf.Tensor4D) as tf.Scalar)(K);
        return [dx, dk].map((t) => Float32Array.from(t.dataSync()));
      });
      for (const [k, name] of [
        [0, 'input'],
        [1, 'kernel'],
      ] as const) {
        let d = 0;
        const scale = Math.max(1e-3, ...ref[k].map(Math.abs));
        for (let j = 0; j < ref[k].length; j++) d = Math.max(d, Math.abs(ours[k][j] - ref[k][j]));
        assert.ok(d <= 1e-4 * scale, `${JSON.stringify(c)} ${name} gradient differs by ${d} (scale ${scale})`);
      }
    } finally {
      await tf.setBackend('wasm');
    }
  }
});
