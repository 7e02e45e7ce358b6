/** Model loading: both topology layouts, Sequential and functional, every supported layer, bad models. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';
import { example, randomBatch, saveModel, tfjsLoad, tmpDir, expectUserErrorAsync } from './helpers';

/** Max |softmax(our logits) - tfjs probabilities| or |ours - tfjs| when no softmax was dropped. */
async function compareWithTfjs(modelJson: string, batch: tf.Tensor): Promise<number> {
  const m = await loadModel(modelJson);
  const ex = new Executor(m.graph);
  const ours = ex.run(new Map([[m.graph.input, batch]]), 0, {}).logits;
  ex.dispose();
  const ref = await tfjsLoad(modelJson);
  const theirs = (ref.predict(batch) as tf.Tensor).dataSync();
  const k = theirs.length / batch.shape[0];
  const mine = m.graph.droppedFinalSoftmax ? tf.softmax(tf.tensor2d(ours, [batch.shape[0], k])).dataSync() : ours;
  let d = 0;
  for (let i = 0; i < theirs.length; i++) d = Math.max(d, Math.abs(mine[i] - theirs[i]));
  return d;
}

test('the bundled examples load and run exactly as tfjs runs them', async () => {
  await initBackend();
  for (const name of ['mnist-mlp', 'mnist-cnn', 'mnist-silu', 'mnist-resnet']) {
    const d = await compareWithTfjs(example(name), randomBatch([8, 28, 28, 1], 1));
    assert.ok(d < 1e-5, `${name}: max difference ${d}`);
  }
});

test('fused activations are split into their own nodes; a final softmax is dropped with a note', async () => {
  const m = await loadModel(example('mnist-cnn'));
  const acts = m.graph.nodes.filter((n) => n.spec.op === 'activation');
  assert.deepEqual(
    acts.map((a) => a.name),
    ['conv2d_Conv2D1/activation', 'conv2d_Conv2D2/activation', 'dense_Dense1/activation'],
  );
  assert.equal(m.graph.droppedFinalSoftmax, true);
  assert.ok(m.graph.notes.some((n) => /softmax/.test(n)));
  assert.equal(m.format, 'tfjs');
  assert.equal(m.keras?.layout, 'tfjs');
});

test('the converter layout (modelTopology.model_config) loads to the same graph', async () => {
  await initBackend();
  const dir = tmpDir();
  const src = JSON.parse(fs.readFileSync(example('mnist-mlp'), 'utf8'));
  const { class_name, config, keras_version, backend } = src.modelTopology;
  src.modelTopology = {
    keras_version,
    backend,
    model_config: { class_name, config },
    training_config: { loss: 'categorical_crossentropy' },
  };
  src.convertedBy = 'TensorFlow.js Converter v4.22.0';
  fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(src));
  fs.copyFileSync(path.join(path.dirname(example('mnist-mlp')), 'weights.bin'), path.join(dir, 'weights.bin'));
  const m = await loadModel(path.join(dir, 'model.json'));
  assert.equal(m.keras?.layout, 'converter');
  const ref = await loadModel(example('mnist-mlp'));
  assert.deepEqual(
    m.graph.nodes.map((n) => [n.name, n.spec.op, n.shape]),
    ref.graph.nodes.map((n) => [n.name, n.spec.op, n.shape]),
  );
  const x = randomBatch([4, 28, 28, 1], 2);
  const a = new Executor(m.graph).run(new Map([[0, x]]), 0, {}).logits;
  const b = new Executor(ref.graph).run(new Map([[0, x]]), 0, {}).logits;
  assert.deepEqual(Array.from(a), Array.from(b));
});

test('every supported layer kind matches tfjs (functional model with standalone activation layers)', async () => {
  await initBackend();
  const input = tf.input({ shape: [12, 12, 2] });
  let h = tf.layers
    .conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'elu', name: 'c1' })
    .apply(input) as tf.SymbolicTensor;
  h = tf.layers.batchNormalization({ name: 'bn' }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.leakyReLU({ alpha: 0.1, name: 'leaky' }).apply(h) as tf.SymbolicTensor;
  const p = tf.layers.maxPooling2d({ poolSize: 2, name: 'maxpool' }).apply(h) as tf.SymbolicTensor;
  let b = tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'tanh', name: 'c2' }).apply(p) as tf.SymbolicTensor;
  b = tf.layers.add({ name: 'sum' }).apply([b, p]) as tf.SymbolicTensor;
  b = tf.layers.reLU({ maxValue: 6, name: 'relu6' }).apply(b) as tf.SymbolicTensor;
  b = tf.layers.averagePooling2d({ poolSize: 2, strides: 1, name: 'avg' }).apply(b) as tf.SymbolicTensor;
  let g = tf.layers.globalAveragePooling2d({ name: 'gap' }).apply(b) as tf.SymbolicTensor;
  g = tf.layers.dropout({ rate: 0.3, name: 'drop' }).apply(g) as tf.SymbolicTensor;
  g = tf.layers.reshape({ targetShape: [2, 2], name: 'resh' }).apply(g) as tf.SymbolicTensor;
  g = tf.layers.flatten({ name: 'flat' }).apply(g) as tf.SymbolicTensor;
  g = tf.layers.dense({ units: 5, activation: 'sigmoid', name: 'd1' }).apply(g) as tf.SymbolicTensor;
  g = tf.layers.activation({ activation: 'softplus', name: 'sp' }).apply(g) as tf.SymbolicTensor;
  g = tf.layers.elu({ name: 'elu2' }).apply(g) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 3, activation: 'softmax', name: 'out' }).apply(g) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: out });
  // Give the batch norm non-trivial statistics.
  const bn = model.getLayer('bn');
  bn.setWeights(bn.getWeights().map((w, i) => tf.add(w, tf.mul(randomBatch(w.shape, 10 + i), i === 3 ? 1 : 0.5))));
  const file = await saveModel(model, tmpDir());
  const d = await compareWithTfjs(file, randomBatch([5, 12, 12, 2], 3));
  assert.ok(d < 1e-5, `max difference ${d}`);
  const m = await loadModel(file);
  const acts = m.graph.nodes.filter((n) => n.spec.op === 'activation');
  const kinds = acts
    .filter((n) => !(n.spec as { maxTree?: unknown }).maxTree)
    .map((n) => (n.spec as { act: { kind: string } }).act.kind);
  assert.deepEqual(kinds, ['elu', 'leakyrelu', 'tanh', 'relu6', 'sigmoid', 'softplus', 'elu']);
  // The max pooling runs as its max tree: one |x| along the width, one along the height.
  assert.deepEqual(
    acts
      .filter((n) => (n.spec as { maxTree?: unknown }).maxTree)
      .map((n) => [n.layer, (n.spec as { act: { kind: string } }).act.kind]),
    [
      ['maxpool', 'abs'],
      ['maxpool', 'abs'],
    ],
  );
});

test('bad models give one clear error naming the problem and the fix', async () => {
  await initBackend();
  const good = example('mnist-mlp');
  const dir = tmpDir();
  const write = (name: string, json: unknown, bin?: Buffer) => {
    const d = path.join(dir, name);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'model.json'), typeof json === 'string' ? json : JSON.stringify(json));
    if (bin) fs.writeFileSync(path.join(d, 'weights.bin'), bin);
    return path.join(d, 'model.json');
  };
  const json = JSON.parse(fs.readFileSync(good, 'utf8'));
  const bin = fs.readFileSync(path.join(path.dirname(good), 'weights.bin'));
  await expectUserErrorAsync(() => loadModel(path.join(dir, 'nope.json')), 'MODEL_UNREADABLE', /does not exist/);
  await expectUserErrorAsync(
    () => loadModel(write('corrupt', '{"modelTopology": {')),
    'MODEL_UNREADABLE',
    /not valid JSON/,
  );
  await expectUserErrorAsync(() => loadModel(write('noshard', json)), 'WEIGHTS_MISSING', /weights\.bin.*missing/);
  await expectUserErrorAsync(
    () => loadModel(write('short', json, bin.subarray(0, bin.length - 40))),
    'WEIGHTS_MISMATCH',
    /manifest needs more/,
  );
  await expectUserErrorAsync(
    () => loadModel(write('graph', { format: 'graph-model', modelTopology: { node: [] } })),
    'MODEL_UNSUPPORTED',
    /graph model/,
  );
  fs.writeFileSync(path.join(dir, 'model.pt'), 'not a model');
  await expectUserErrorAsync(
    () => loadModel(path.join(dir, 'model.pt')),
    'MODEL_UNREADABLE',
    /\.pt files cannot be read/,
  );
  const lstm = JSON.parse(JSON.stringify(json));
  lstm.modelTopology.config.layers.splice(2, 0, { class_name: 'LSTM', config: { name: 'lstm_1', units: 4 } });
  await expectUserErrorAsync(
    () => loadModel(write('lstm', lstm, bin)),
    'LAYER_UNKNOWN',
    /'lstm_1' \(LSTM\) is not supported/,
  );
  const act = JSON.parse(JSON.stringify(json));
  act.modelTopology.config.layers[1].config.activation = 'swishy';
  await expectUserErrorAsync(
    () => loadModel(write('act', act, bin)),
    'MODEL_UNSUPPORTED',
    /unknown activation 'swishy'/,
  );
  const shape = JSON.parse(JSON.stringify(json));
  shape.modelTopology.config.layers[1].config.units = 100;
  await expectUserErrorAsync(
    () => loadModel(write('shape', shape, bin)),
    'WEIGHTS_MISMATCH',
    /has shape \[784,128\] but layer/,
  );
  const noweight = JSON.parse(JSON.stringify(json));
  noweight.weightsManifest[0].weights[0].name = 'other/kernel';
  await expectUserErrorAsync(
    () => loadModel(write('noweight', noweight, bin)),
    'WEIGHTS_MISSING',
    /needs weight 'dense_Dense1\/kernel'/,
  );
});
