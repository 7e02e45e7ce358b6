/**
 * The HE program on the layers public CNNs are made of (issue 27): convolutions with 'same' and
 * explicit, asymmetric padding and strides, a zero padding before a convolution (Keras's
 * ZeroPadding2D), grouped and depthwise convolutions, ResNet's option-A shortcut (strided slice,
 * zero channels, Add), global average pooling before the classifier. Each program is emulated on
 * plaintext slots with the rotations and products the encrypted run makes, and compared with the
 * approximated model as tfjs computes it; then run under SEAL, and the repository's MobileNet-style
 * example and the ResNet-style CNN on Lattigo with their bootstraps.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import {
  GridLayout,
  convOutLayout,
  gridCts,
  homeSlots,
  homesOf,
  inputLayout,
  placeOf,
  subOffsets,
  tapPositions,
} from '../src/core/he/layout';
import {
  channelPackingObstacle,
  compileProgram,
  emulateProgram,
  encryptedModelTest,
  latencyPacking,
  packSamples,
  programDepth,
} from '../src/core/he/modelTest';
import { AddStep, ConvStep, DenseStep } from '../src/core/he/program';
import { planProgramBootstraps } from '../src/core/he/bootstrapPlan';
import { loadDataset } from '../src/core/data/read';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';
import { Report, polysFromReport } from '../src/core/report';
import { buildOnnx, seeded } from './onnxBuild';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, ROOT, tmpDir } from './helpers';

const dir = tmpDir('he-approx-layers-');
const W = (dims: number[], seed: number, scale = 1) => ({
  dims,
  data: seeded(
    dims.reduce((a, b) => a * b, 1),
    seed,
    scale,
  ),
});

/**
 * A small ResNet-style CNN on MNIST as a PyTorch exporter writes it: same-padded 3x3 convolutions,
 * a stride-2 block whose shortcut is ResNet's option A (every second pixel, 2 + 2 zero channels),
 * a depthwise convolution with asymmetric pads, a Pad node before a valid strided convolution,
 * global average pooling and a classifier.
 */
function resnetStyle(): string {
  const file = path.join(dir, 'resnet-style.onnx');
  fs.writeFileSync(
    file,
    buildOnnx({
      input: [1, 28, 28],
      output: 'logits',
      floats: {
        w1: W([4, 1, 3, 3], 1, 1.2),
        b1: W([4], 2, 0.2),
        w2: W([8, 4, 3, 3], 3, 0.6),
        b2: W([8], 4, 0.2),
        gamma: { dims: [8], data: seeded(8, 5, 0.5).map((v) => 1 + v) },
        beta: W([8], 6, 0.3),
        rmean: W([8], 7, 0.2),
        rvar: { dims: [8], data: seeded(8, 8, 1).map((v) => 0.5 + Math.abs(v)) },
        wd: W([8, 1, 3, 3], 9, 0.8),
        w4: W([8, 8, 3, 3], 10, 0.4),
        b4: W([8], 11, 0.1),
        wg: W([10, 8], 12, 0.8),
        bg: W([10], 13, 0.1),
      },
      int64s: {
        st: [0, 0],
        en: [1000, 1000],
        ax: [2, 3],
        sp: [2, 2],
        cpads: [0, 2, 0, 0, 0, 2, 0, 0],
        spads: [0, 0, 0, 0, 0, 0, 1, 1],
      },
      nodes: [
        { op: 'Conv', in: ['x', 'w1', 'b1'], out: ['c1'], attrs: { pads: [1, 1, 1, 1], kernel_shape: [3, 3] } },
        { op: 'Relu', in: ['c1'], out: ['r1'] },
        {
          op: 'Conv',
          in: ['r1', 'w2', 'b2'],
          out: ['c2'],
          attrs: { pads: [1, 1, 1, 1], strides: [2, 2], kernel_shape: [3, 3] },
        },
        {
          op: 'BatchNormalization',
          in: ['c2', 'gamma', 'beta', 'rmean', 'rvar'],
          out: ['bn'],
          attrs: { epsilon: 1e-5 },
        },
        { op: 'Slice', in: ['r1', 'st', 'en', 'ax', 'sp'], out: ['sl'] },
        { op: 'Pad', in: ['sl', 'cpads'], out: ['short'] },
        { op: 'Add', in: ['bn', 'short'], out: ['res'] },
        { op: 'Relu', in: ['res'], out: ['r2'] },
        { op: 'Conv', in: ['r2', 'wd'], out: ['c3'], attrs: { group: 8, pads: [0, 0, 1, 1], kernel_shape: [3, 3] } },
        { op: 'Relu', in: ['c3'], out: ['r3'] },
        { op: 'Pad', in: ['r3', 'spads'], out: ['p4'] },
        { op: 'Conv', in: ['p4', 'w4', 'b4'], out: ['c4'], attrs: { strides: [2, 2], kernel_shape: [3, 3] } },
        { op: 'Relu', in: ['c4'], out: ['r4'] },
        { op: 'GlobalAveragePool', in: ['r4'], out: ['gap'] },
        { op: 'Flatten', in: ['gap'], out: ['f'] },
        { op: 'Gemm', in: ['f', 'wg', 'bg'], out: ['logits'], attrs: { transB: 1 } },
      ],
    }),
  );
  return file;
}

/** Emulates the program on B samples (throughput) and one by one (latency packing, where it can be) against tfjs with the report's polynomials. */
async function checkEmulation(model: string, r: Report, slots: number, B: number): Promise<{ packed: boolean }> {
  await initBackend();
  const m = await loadModel(model);
  const p = compileProgram(m.graph, r);
  assert.equal(programDepth(p), r.final.networkDepth, "program depth = the report's network depth");
  const ds = loadDataset(MNIST_TEST_IMAGES, null, m.graph.inputShape);
  const per = 784;
  const xs = ds.x.subarray(0, B * per);
  const ex = new Executor(m.graph);
  const ref = ex.run(new Map([[0, tf.tensor(xs, [B, ...m.graph.inputShape])]]), 0, {
    replace: polysFromReport(r),
  }).logits;
  ex.dispose();
  const K = ref.length / B;
  const out = emulateProgram(p, packSamples(p, xs, B, B, slots), B);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < K; j++)
      assert.ok(
        Math.abs(out[j * B + b] - ref[b * K + j]) < 1e-4,
        `throughput: sample ${b} logit ${j}: ${out[j * B + b]} vs ${ref[b * K + j]}`,
      );
  if (channelPackingObstacle(p)) return { packed: false };
  const { blocks } = latencyPacking(p, slots);
  for (let b = 0; b < 2; b++) {
    const one = emulateProgram(p, packSamples(p, xs.subarray(b * per, (b + 1) * per), 1, 1, slots, blocks), 1, blocks);
    for (let j = 0; j < K; j++)
      assert.ok(
        Math.abs(one[j] - ref[b * K + j]) < 1e-4,
        `latency (${blocks} channels per ciphertext): sample ${b} logit ${j}: ${one[j]} vs ${ref[b * K + j]}`,
      );
  }
  return { packed: true };
}

test('tap masks: a same-padded convolution reads zeros only at the border, a valid one never', () => {
  const L = { kind: 'grid' as const, C: 1, H: 4, W: 4, sy: 4, sx: 1, period: 16, blocks: 1 };
  const conv = (pads: ConvStep['pads'], strides: [number, number]): ConvStep => ({
    kind: 'conv',
    node: 1,
    name: 'c',
    input: 0,
    kh: 3,
    kw: 3,
    cin: 1,
    cout: 1,
    groups: 1,
    pads,
    strides,
    W: new Float64Array(9),
    b: new Float64Array(1),
  });
  const same = conv(
    [
      [1, 1],
      [1, 1],
    ],
    [1, 1],
  );
  assert.equal(tapPositions(L, same, 1, 1), null, 'the centre tap reads the image for every output');
  // Tap (0, 0) reads (y - 1, x - 1): outputs in row 0 or column 0 read padding.
  assert.deepEqual(tapPositions(L, same, 0, 0), [5, 6, 7, 9, 10, 11, 13, 14, 15]);
  assert.deepEqual(tapPositions(L, same, 2, 2), [0, 1, 2, 4, 5, 6, 8, 9, 10]);
  for (let dy = 0; dy < 3; dy++)
    for (let dx = 0; dx < 3; dx++)
      assert.equal(
        tapPositions(
          L,
          conv(
            [
              [0, 0],
              [0, 0],
            ],
            [1, 1],
          ),
          dy,
          dx,
        ),
        null,
      );
  // Stride 2, TensorFlow's 'same' on 4: pads (0, 1); outputs (0..1) x (0..1) sit at input positions 0, 2, 8, 10.
  const s2 = conv(
    [
      [0, 1],
      [0, 1],
    ],
    [2, 2],
  );
  assert.equal(tapPositions(L, s2, 0, 0), null);
  assert.deepEqual(tapPositions(L, s2, 2, 2), [0], 'only output (0, 0) reads (2, 2); output (1, *) would read row 4');
});

test('multiplexed channels: offsets in the gaps of a strided grid, each channel at its own', () => {
  // ResNet-20's last stage at N=2^16: 8 x 8 positions every 4 columns and 128 slots, in blocks of 1024.
  const L: GridLayout = { kind: 'grid', C: 64, H: 8, W: 8, sy: 128, sx: 4, period: 1024, blocks: 32 };
  assert.deepEqual(subOffsets(L, 2), [0, 1]);
  // Four columns between grid columns, four row bands of 32 slots below the next row: 16 at most.
  assert.deepEqual(subOffsets(L, 20), [0, 1, 2, 3, 32, 33, 34, 35, 64, 65, 66, 67, 96, 97, 98, 99]);
  const M = { ...L, subs: [0, 1] };
  assert.equal(gridCts(M), 1);
  // Element (y, x, c) in Keras order: channel 40 is block 8, offset 1.
  const f = (y: number, x: number, c: number) => (y * 8 + x) * 64 + c;
  assert.deepEqual(placeOf(M, f(0, 0, 40)), [0, 8 * 1024 + 1]);
  assert.deepEqual(placeOf(M, f(2, 3, 5)), [0, 5 * 1024 + 2 * 128 + 3 * 4]);
  const homes = homesOf(M, 0);
  assert.equal(new Set(homes.map((h) => h.c)).size, 64, 'every channel has one home');
  assert.deepEqual(homeSlots(M, homes[33].at).slice(0, 3), [1024 + 1, 1024 + 5, 1024 + 9]);
});

test('a ResNet-style CNN (padded and strided convolutions, option-A shortcut, depthwise, zero padding, global average pooling): the program computes the approximated model', async () => {
  const file = resnetStyle();
  const r = JSON.parse(
    JSON.stringify(
      await analyze({ model: file, data: MNIST_TEST_IMAGES, calib: 300, heldout: 300, degrees: [2, 3, 7] }),
    ),
  ) as Report;
  const { packed } = await checkEmulation(file, r, 8192, 8);
  assert.equal(packed, true, 'channels side by side, the option-A shortcut moved and masked block by block');
  const p = compileProgram((await loadModel(file)).graph, r);
  // With 4 blocks the strided convolution's 8 channels share blocks (multiplexed: two per block,
  // the second in the gaps of the stride-2 grid), through the Add, the depthwise convolution and
  // the pooled classifier.
  assert.deepEqual((await checkEmulation(file, r, 4096, 4)).packed, true);
  const strided = convOutLayout(
    inputLayout(p, 4) as GridLayout,
    p.steps.find((st): st is ConvStep => st.kind === 'conv')!,
    4,
  );
  assert.equal(strided.subs, undefined, 'the first convolution: 4 channels in 4 blocks');
  const second = convOutLayout(strided, p.steps.filter((st): st is ConvStep => st.kind === 'conv')[1], 4);
  assert.deepEqual([second.sx, second.sy, second.subs, gridCts(second)], [2, 56, [0, 1], 1]);
  // What the compiler made of it: ONNX pads [top, left, bottom, right] and the Pad node folded into the convolutions, ...
  const convs = p.steps.filter((st): st is ConvStep => st.kind === 'conv');
  assert.deepEqual(
    convs.map((c) => [c.pads, c.strides, c.groups]),
    [
      [
        [
          [1, 1],
          [1, 1],
        ],
        [1, 1],
        1,
      ],
      [
        [
          [1, 1],
          [1, 1],
        ],
        [2, 2],
        1,
      ],
      [
        [
          [0, 1],
          [0, 1],
        ],
        [1, 1],
        8,
      ],
      [
        [
          [0, 1],
          [0, 1],
        ],
        [2, 2],
        1,
      ],
    ],
  );
  // ... the shortcut's 4 channels added to channels 2..5 of the block's 8, ...
  const add = p.steps.find((st): st is AddStep => st.kind === 'add')!;
  assert.deepEqual([add.offsets, add.channels, add.C], [[0, 2], [8, 4], 8]);
  // ... and the global average pooling inside the classifier: 6 x 6 positions of 8 channels.
  const dense = p.steps.find((st): st is DenseStep => st.kind === 'dense')!;
  assert.equal(dense.dIn, 6 * 6 * 8);
  assert.equal(p.steps.filter((st) => st.kind === 'pool').length, 0);
  // Under SEAL, in both packings: the same logits, the levels the simulator predicts.
  for (const packing of ['throughput', 'latency'] as const) {
    const res = await encryptedModelTest({
      model: file,
      report: r,
      data: MNIST_TEST_IMAGES,
      samples: packing === 'latency' ? 2 : 4,
      workers: 1,
      packing,
    });
    assert.equal(res.engine, 'seal');
    assert.equal(res.packing?.kind, packing);
    assert.equal(res.agreement, 1);
    assert.ok(res.maxAbsErrLogits < 1e-3, `${packing}: max logit error ${res.maxAbsErrLogits}`);
    assert.equal(res.levelsUsed, res.levelsPredicted);
  }
});

test("the ResNet-style CNN with a bootstrap every 3 levels: the residual block's values scaled into the bootstrapping's range together, run on Lattigo one image per run", async () => {
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const file = resnetStyle();
  const r = JSON.parse(
    JSON.stringify(
      await analyze({
        model: file,
        data: MNIST_TEST_IMAGES,
        calib: 300,
        heldout: 300,
        degrees: [2, 3, 7],
        bootstrap: true,
        bootstrapLevels: 3,
      }),
    ),
  ) as Report;
  const m = await loadModel(file);
  const p = compileProgram(m.graph, r);
  const boots = planProgramBootstraps(m.graph, p, r, 3);
  assert.equal(boots.bootstraps, r.final.bootstraps);
  // The Add's sum beyond the range is scaled into it, with its inputs (the shortcut's activation
  // and the second convolution) taking one factor. (A signed square's u, computed by the layer
  // before it, is not scaled yet: the square would need the factor squared.)
  const adds = boots.values.filter((v) => /^Add/.test(v.node));
  assert.ok(adds.length === 1 && adds[0].bound > 1.5, `values refreshed: ${JSON.stringify(boots.values)}`);
  assert.ok(adds[0].scaled, "the Add's sum is scaled into the bootstrapping's range");
  const res = await encryptedModelTest({
    model: file,
    report: r,
    data: MNIST_TEST_IMAGES,
    samples: 2,
    packing: 'latency',
    insecureLogN: 13,
  });
  assert.equal(res.engine, 'lattigo');
  assert.equal(res.packing?.kind, 'latency');
  // 4 blocks of 1,024 slots at N=2^13: the strided convolution's 8 channels two to a block.
  assert.deepEqual([res.packing?.channelsPerCiphertext, res.packing?.multiplexed], [4, 8]);
  assert.equal(res.agreement, 1);
  assert.ok(res.maxAbsErrLogits < 1e-2, `max logit error ${res.maxAbsErrLogits}`);
  assert.equal(res.bootstrapping!.executed, r.final.bootstraps);
  // Every bootstrap keeps Lattigo's own precision, those from level 0 too (their scale error
  // carried in the result's scale: trace.ts, levelZeroError) and after scalar additions (whose
  // scale Lattigo drops: engines/lattigo/run.go, addc); without both, two of the three fell below.
  assert.ok(Math.min(...res.bootstrapping!.precisionBits) > 24, `precision ${res.bootstrapping!.precisionBits}`);
  assert.equal(res.levelsUsed, res.levelsPredicted);
});

test('the MobileNet-style example (.h5: zero padding, strided and depthwise convolutions, global average pooling) runs encrypted on Lattigo with its bootstraps', async () => {
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const model = path.join(ROOT, 'examples', 'keras-mobilenet', 'mobilenet.h5');
  const r = JSON.parse(
    JSON.stringify(
      await analyze({
        model,
        data: MNIST_TEST_IMAGES,
        labels: MNIST_TEST_LABELS,
        calib: 300,
        heldout: 300,
        bootstrap: true,
        bootstrapLevels: 5,
      }),
    ),
  ) as Report;
  assert.ok(r.final.bootstraps >= 2, `${r.final.bootstraps} bootstraps`);
  const { packed } = await checkEmulation(model, r, 8192, 8);
  assert.equal(packed, true, 'channels side by side, padded taps masked per block');
  const convs = compileProgram((await loadModel(model)).graph, r).steps.filter(
    (st): st is ConvStep => st.kind === 'conv',
  );
  assert.ok(
    convs.some((c) => c.groups > 1 && c.groups === c.cin),
    'a depthwise convolution',
  );
  assert.ok(
    convs.some((c) => c.strides[0] === 2 && c.pads[0][1] > 0),
    'a zero padding folded into a strided convolution',
  );
  // One image per run, its channels side by side: each bootstrap refreshes a few ciphertexts, not one per channel.
  const res = await encryptedModelTest({
    model,
    report: r,
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    samples: 2,
    packing: 'latency',
    insecureLogN: 13,
  });
  assert.equal(res.engine, 'lattigo');
  assert.equal(res.packing?.kind, 'latency');
  assert.equal(res.agreement, 1);
  assert.ok(res.maxAbsErrLogits < 1e-2, `max logit error ${res.maxAbsErrLogits}`);
  assert.equal(res.bootstrapping!.executed, r.final.bootstraps);
  assert.equal(res.levelsUsed, res.levelsPredicted);
});
