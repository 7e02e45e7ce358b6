/**
 * The ONNX importer against onnxruntime on models built here from the operators exporters emit:
 * NCHW convolutions (grouped, depthwise, asymmetric pads, strides), the GELU / SiLU / Mish
 * patterns, ResNet option-A shortcuts (strided Slice + channel Pad), Concat, BatchNormalization,
 * layout changes (Transpose, Reshape), MatMul + Add, Gemm, a final Softmax; a tf2onnx-style NHWC
 * input; and the errors for files that are not models or use operators he-approx cannot run.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { tf } from '../src/core/model/backend';
import { loadModel } from '../src/core/model/load';
import { buildOnnx, maxAbsDiff, runOrt, runOurs, seeded } from './onnxBuild';
import { expectUserErrorAsync, tmpDir } from './helpers';

const dir = tmpDir('he-approx-onnx-');
const write = (name: string, bytes: Uint8Array) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, bytes);
  return f;
};
const W = (dims: number[], seed: number, scale = 1) => ({
  dims,
  data: seeded(
    dims.reduce((a, b) => a * b, 1),
    seed,
    scale,
  ),
});
const S = (v: number) => ({ dims: [], data: [v] });

/** Everything a CNN exporter writes, in one model: [N, 4, 8, 8] -> 5 classes (softmax). */
function cnnModel(): Uint8Array {
  return buildOnnx({
    input: [4, 8, 8],
    output: 'prob',
    floats: {
      mean: { dims: [1, 4, 1, 1], data: [0.1, 0.2, 0.3, 0.4] },
      std: { dims: [1, 4, 1, 1], data: [0.5, 0.6, 0.7, 0.8] },
      w1: W([8, 2, 3, 3], 1),
      b1: W([8], 2, 0.2),
      w2: W([8, 1, 3, 3], 3),
      w3: W([16, 8, 1, 1], 4),
      sqrt2: S(Math.SQRT2),
      one: S(1),
      half: S(0.5),
      gamma: W([32], 5, 0.5),
      beta: W([32], 6, 0.5),
      rmean: W([32], 7, 0.5),
      rvar: { dims: [32], data: seeded(32, 8, 1).map((v) => 0.5 + Math.abs(v)) },
      wm: W([32, 10], 9, 0.6),
      bm: W([10], 10, 0.3),
      wg: W([5, 10], 11, 0.6),
      bg: W([5], 12, 0.2),
    },
    int64s: { st: [0, 0], en: [1000, 1000], ax: [2, 3], sp: [2, 2], pads: [0, 4, 0, 0, 0, 4, 0, 0], shape: [0, -1] },
    nodes: [
      { op: 'Sub', in: ['x', 'mean'], out: ['xs'] },
      { op: 'Div', in: ['xs', 'std'], out: ['xn'] },
      {
        op: 'Conv',
        in: ['xn', 'w1', 'b1'],
        out: ['c1'],
        attrs: { group: 2, pads: [1, 1, 1, 1], kernel_shape: [3, 3] },
      },
      // GELU as torch writes it.
      { op: 'Div', in: ['c1', 'sqrt2'], out: ['g0'] },
      { op: 'Erf', in: ['g0'], out: ['g1'] },
      { op: 'Add', in: ['g1', 'one'], out: ['g2'] },
      { op: 'Mul', in: ['c1', 'g2'], out: ['g3'] },
      { op: 'Mul', in: ['g3', 'half'], out: ['gelu'] },
      { op: 'Conv', in: ['gelu', 'w2'], out: ['c2'], attrs: { group: 8, strides: [2, 2], pads: [0, 0, 1, 1] } },
      // SiLU.
      { op: 'Sigmoid', in: ['c2'], out: ['s0'] },
      { op: 'Mul', in: ['c2', 's0'], out: ['silu'] },
      // ResNet option A: every second pixel, channels zero-padded, added to a strided 1x1 conv.
      { op: 'Slice', in: ['silu', 'st', 'en', 'ax', 'sp'], out: ['sl'] },
      { op: 'Pad', in: ['sl', 'pads'], out: ['short'] },
      { op: 'Conv', in: ['silu', 'w3'], out: ['c3'], attrs: { strides: [2, 2] } },
      { op: 'Add', in: ['c3', 'short'], out: ['res'] },
      // Mish, then Concat of the two.
      { op: 'Softplus', in: ['res'], out: ['m0'] },
      { op: 'Tanh', in: ['m0'], out: ['m1'] },
      { op: 'Mul', in: ['res', 'm1'], out: ['mish'] },
      { op: 'Concat', in: ['res', 'mish'], out: ['cat'], attrs: { axis: 1 } },
      {
        op: 'BatchNormalization',
        in: ['cat', 'gamma', 'beta', 'rmean', 'rvar'],
        out: ['bn'],
        attrs: { epsilon: 1e-3 },
      },
      { op: 'LeakyRelu', in: ['bn'], out: ['lr'], attrs: { alpha: 0.1 } },
      { op: 'AveragePool', in: ['lr'], out: ['ap'], attrs: { kernel_shape: [2, 2], strides: [2, 2] } },
      { op: 'Transpose', in: ['ap'], out: ['tr'], attrs: { perm: [0, 2, 3, 1] } },
      { op: 'Reshape', in: ['tr', 'shape'], out: ['flat'] },
      { op: 'MatMul', in: ['flat', 'wm'], out: ['mm'] },
      { op: 'Add', in: ['mm', 'bm'], out: ['fc'] },
      { op: 'HardSigmoid', in: ['fc'], out: ['hs'] },
      { op: 'Gemm', in: ['hs', 'wg', 'bg'], out: ['logits'], attrs: { transB: 1 } },
      { op: 'Softmax', in: ['logits'], out: ['prob'], attrs: { axis: 1 } },
    ],
  });
}

/** Checks our outputs against onnxruntime's on a seeded batch; returns the graph's activation kinds. */
async function checkAgainstOrt(file: string, dims: number[], tol = 1e-4): Promise<string[]> {
  const x = seeded(
    dims.reduce((a, b) => a * b, 1),
    42,
  );
  const ref = await runOrt(file, x, dims);
  const ours = await runOurs(file, x, dims);
  const classes = ref.length / dims[0];
  const got = ours.softmaxDropped
    ? tf.tidy(() => tf.softmax(tf.tensor2d(ours.logits, [dims[0], classes])).dataSync())
    : ours.logits;
  const d = maxAbsDiff(got, ref);
  assert.ok(d < tol, `${path.basename(file)}: max |ours - onnxruntime| = ${d}`);
  const g = (await loadModel(file)).graph;
  return g.nodes.filter((n) => n.spec.op === 'activation').map((n) => (n.spec as { act: { kind: string } }).act.kind);
}

test('an exporter-style NCHW CNN (groups, depthwise, option-A shortcut, Concat, patterns) computes what onnxruntime computes', async () => {
  const file = write('cnn.onnx', cnnModel());
  const kinds = await checkAgainstOrt(file, [3, 4, 8, 8]);
  // GELU, SiLU and Mish each became one activation; Sigmoid/Tanh/Softplus/Erf inside them did not.
  assert.deepEqual(kinds, ['gelu', 'swish', 'mish', 'leakyrelu', 'hard_sigmoid']);
  const m = await loadModel(file);
  assert.equal(m.graph.inputLayout?.name, 'NCHW');
  assert.deepEqual(m.graph.inputShape, [8, 8, 4]);
  assert.equal(m.graph.droppedFinalSoftmax, true);
  // The transpose before Reshape -> MatMul folded into the kernel: no data movement is left there.
  assert.ok(!m.graph.nodes.some((n) => n.spec.op === 'transpose'), m.graph.nodes.map((n) => n.spec.op).join(' '));
  assert.equal(m.graph.nodes.find((n) => n.layer === 'MatMul_24')?.spec.op, 'dense');
});

test('a tf2onnx-style NHWC input (Transpose to NCHW first) reads NHWC data and matches onnxruntime', async () => {
  const file = write(
    'nhwc.onnx',
    buildOnnx({
      input: [6, 6, 3],
      output: 'y',
      floats: {
        w: W([4, 3, 3, 3], 21),
        b: W([4], 22, 0.1),
        wg: W([4, 3], 23),
        gb: W([3], 24, 0.1),
        lo6: S(0),
        hi6: S(6),
      },
      nodes: [
        { op: 'Transpose', in: ['x'], out: ['t'], attrs: { perm: [0, 3, 1, 2] } },
        { op: 'Conv', in: ['t', 'w', 'b'], out: ['c'], attrs: { auto_pad: 'SAME_UPPER', strides: [2, 2] } },
        { op: 'Clip', in: ['c', 'lo6', 'hi6'], out: ['r'] },
        { op: 'GlobalAveragePool', in: ['r'], out: ['gap'] },
        { op: 'Flatten', in: ['gap'], out: ['f'] },
        { op: 'Gemm', in: ['f', 'wg', 'gb'], out: ['y'] },
      ],
    }),
  );
  const kinds = await checkAgainstOrt(file, [2, 6, 6, 3]);
  assert.deepEqual(kinds, ['relu6']);
  const g = (await loadModel(file)).graph;
  assert.equal(g.inputLayout, undefined, 'NHWC input: the graph reads the data as it is');
  assert.deepEqual(g.inputShape, [6, 6, 3]);
});

test('an MLP with GELU written x*0.5 first, ELU, SELU, Softsign and MatMul without bias matches onnxruntime', async () => {
  const file = write(
    'mlp.onnx',
    buildOnnx({
      input: [16],
      output: 'y',
      floats: {
        w1: W([16, 12], 31),
        b1: W([12], 32, 0.2),
        r2: S(Math.SQRT1_2),
        one: S(1),
        half: S(0.5),
        w2: W([12, 8], 33),
        w3: W([8, 6], 34),
        w4: W([6, 4], 35),
      },
      nodes: [
        { op: 'MatMul', in: ['x', 'w1'], out: ['a'] },
        { op: 'Add', in: ['b1', 'a'], out: ['h'] },
        { op: 'Mul', in: ['h', 'half'], out: ['g0'] },
        { op: 'Mul', in: ['h', 'r2'], out: ['g1'] },
        { op: 'Erf', in: ['g1'], out: ['g2'] },
        { op: 'Add', in: ['one', 'g2'], out: ['g3'] },
        { op: 'Mul', in: ['g0', 'g3'], out: ['gelu'] },
        { op: 'MatMul', in: ['gelu', 'w2'], out: ['h2'] },
        { op: 'Elu', in: ['h2'], out: ['e'], attrs: { alpha: 0.7 } },
        { op: 'MatMul', in: ['e', 'w3'], out: ['h3'] },
        { op: 'Selu', in: ['h3'], out: ['s'] },
        { op: 'MatMul', in: ['s', 'w4'], out: ['h4'] },
        { op: 'Softsign', in: ['h4'], out: ['y'] },
      ],
    }),
  );
  assert.deepEqual(await checkAgainstOrt(file, [5, 16]), ['gelu', 'elu', 'selu', 'softsign']);
});

test('files that are not ONNX models, and operators he-approx cannot run, give one clear error', async () => {
  const garbage = write('garbage.onnx', Buffer.from('this is not a protobuf at all, just text \u0000\u0001'));
  await expectUserErrorAsync(
    () => loadModel(garbage),
    'MODEL_UNREADABLE',
    /not a readable ONNX model|holds no ONNX graph/,
  );
  const full = cnnModel();
  const truncated = write('truncated.onnx', full.subarray(0, Math.floor(full.length / 2)));
  await expectUserErrorAsync(() => loadModel(truncated), 'MODEL_UNREADABLE', /not a readable ONNX model/);
  const lstm = write(
    'lstm.onnx',
    buildOnnx({ input: [4], output: 'y', nodes: [{ op: 'LSTM', in: ['x'], out: ['y'], name: 'rnn1' }] }),
  );
  await expectUserErrorAsync(() => loadModel(lstm), 'LAYER_UNKNOWN', /LSTM node 'rnn1' is not supported/);
  const erf = write(
    'erf.onnx',
    buildOnnx({ input: [4], output: 'y', nodes: [{ op: 'Erf', in: ['x'], out: ['y'], name: 'lonely' }] }),
  );
  await expectUserErrorAsync(() => loadModel(erf), 'LAYER_UNKNOWN', /Erf node 'lonely' is not supported/);
  const prod = write(
    'prod.onnx',
    buildOnnx({
      input: [4],
      output: 'y',
      floats: { w: W([4, 4], 3) },
      nodes: [
        { op: 'MatMul', in: ['x', 'w'], out: ['a'] },
        { op: 'Mul', in: ['a', 'x'], out: ['y'], name: 'square' },
      ],
    }),
  );
  await expectUserErrorAsync(() => loadModel(prod), 'MODEL_UNSUPPORTED', /Mul node 'square' combines two data tensors/);
  const old = write(
    'opset99.onnx',
    buildOnnx({ opset: 99, input: [4], output: 'y', nodes: [{ op: 'Relu', in: ['x'], out: ['y'] }] }),
  );
  await expectUserErrorAsync(() => loadModel(old), 'MODEL_UNSUPPORTED', /opset 99.*export with opset 13|opset 99/);
  const dyn = buildOnnx({ input: [4], output: 'y', nodes: [{ op: 'Relu', in: ['x'], out: ['y'] }] });
  const { decodeModel, encodeModel } = await import('../src/core/model/formats/onnx/proto');
  const dm = decodeModel(dyn, 'dyn');
  dm.graph.input[0].type!.tensor_type!.shape!.dim![1] = { dim_param: 'features' };
  const dynFile = write('dynamic.onnx', encodeModel(dm));
  await expectUserErrorAsync(() => loadModel(dynFile), 'MODEL_UNSUPPORTED', /every axis but the batch must be fixed/);
});

test('the ONNX export evaluates each polynomial (per channel or per layer, with offsets) as he-approx does, in onnxruntime', async () => {
  const { approximatedOnnx } = await import('../src/core/export/onnxExport');
  const { polysFromReport } = await import('../src/core/report');
  const file = write('cnn-for-export.onnx', cnnModel());
  const m = await loadModel(file);
  const acts = m.graph.nodes.filter((n) => n.spec.op === 'activation');
  // Seeded degree-3 polynomials: per channel on even layers, one per layer (with a per-channel offset) on odd ones.
  const layers = acts.map((a, k) => {
    const C = a.shape[a.shape.length - 1];
    const cs = seeded(4 * C, 100 + k, 1);
    const coeffs = [0.1, 0.5, 0.3, -0.05];
    const interval = { a: -3 - k, b: 2 + k };
    const channels =
      k % 2 === 0
        ? {
            intervals: Array.from({ length: C }, (_, c) => ({ a: -2 - c / C, b: 3 + c / C })),
            coeffs: Array.from({ length: C }, (_, c) => Array.from(cs.subarray(4 * c, 4 * c + 4))),
          }
        : null;
    const channelOffset = k % 2 === 1 ? Array.from(seeded(C, 200 + k, 0.2)) : null;
    return { node: a.id, name: a.name, chosen: { degree: 3, interval, coeffs, channels, channelOffset } };
  });
  const report = {
    layers,
    tool: { name: 'he-approx', version: 'test' },
  } as unknown as import('../src/core/report').Report;
  const out = write('cnn-approximated.onnx', approximatedOnnx(m, report));
  const dims = [3, 4, 8, 8];
  const x = seeded(3 * 4 * 64, 7);
  const ref = await runOrt(out, x, dims);
  const ours = await runOurs(file, x, dims, polysFromReport(report));
  const got = tf.tidy(() => tf.softmax(tf.tensor2d(ours.logits, [3, 5])).dataSync());
  const d = maxAbsDiff(got, ref);
  assert.ok(d < 1e-4, `max |he-approx - onnxruntime on the exported model| = ${d}`);
  // The activations' own operators are gone from the exported graph; everything else is kept.
  const { decodeModel } = await import('../src/core/model/formats/onnx/proto');
  const ops = decodeModel(fs.readFileSync(out), 'out').graph.node.map((n) => n.op_type);
  for (const gone of ['Erf', 'Sigmoid', 'Softplus', 'Tanh', 'LeakyRelu', 'HardSigmoid'])
    assert.ok(!ops.includes(gone), `${gone} left in the export`);
  for (const kept of ['Conv', 'Concat', 'BatchNormalization', 'Gemm', 'Softmax', 'Pad', 'Slice'])
    assert.ok(ops.includes(kept), `${kept} missing from the export`);
});
