/**
 * A seeded corpus of broken inputs (issue 14), derived from the bundled examples: weight shards
 * truncated, bit-flipped, shuffled or holding NaN; model.json with keys missing, values of the
 * wrong type, unknown layers and activations, inconsistent or huge shapes, cycles; ONNX protobuf,
 * Keras HDF5 and .keras zips truncated or bit-flipped; data files with bad headers, dtypes,
 * shapes, NaN/Inf; labels out of range or of the wrong count; options out of range; --out
 * pointing at what the user owns. Each case is a set of files and a command line; the corpus
 * test runs every one through the CLI and checks that it ends in a one-line user error (exit 2)
 * or a sound analysis. Pure generation: nothing here runs the tool.
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeNpy } from '../../src/core/data/npy';
import { Rng } from '../../src/core/rng';

export interface Case {
  /** What was broken (the count printed per category). */
  category: string;
  /** One line on what this case did, for failure messages. */
  name: string;
  /** Files to write in the case's folder (relative paths). */
  files: Record<string, Buffer>;
  /** CLI arguments; `@/` at the start of an argument is the case's folder. */
  argv: string[];
  /**
   * What an untrusted workspace holds besides files: symbolic links (name -> target, `@/` the
   * case's folder), named pipes, empty folders, made after the files.
   */
  special?: { links?: Record<string, string>; fifos?: string[]; dirs?: string[] };
}

const ROOT = path.resolve(__dirname, '..', '..', '..');
const EX = path.join(ROOT, 'examples');
const read = (...p: string[]) => fs.readFileSync(path.join(EX, ...p));

/** Calibration and held-out sizes small enough that an analysis takes about a second. */
const SMALL = [
  '--calib',
  '24',
  '--heldout',
  '24',
  '--screen-samples',
  '24',
  '--degrees',
  '1,3,7',
  '--no-tune',
  '--quiet',
  '--batch-size',
  '24',
];

interface Sources {
  tfjs: Record<'mlp' | 'cnn' | 'resnet', { json: string; bin: Buffer }>;
  onnx: Buffer;
  h5: Buffer;
  keras: Buffer;
  images: Buffer; // idx3, 64 MNIST test images
  labels: Buffer; // idx1, their labels
}

function idx(type: number, dims: number[], body: Buffer): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d >>> 0, 4 + 4 * i));
  return Buffer.concat([head, body]);
}

function sources(): Sources {
  const n = 64;
  const imgs = read('data', 'mnist-test-2000-images-idx3-ubyte').subarray(16, 16 + n * 784);
  const labs = read('data', 'mnist-test-2000-labels-idx1-ubyte').subarray(8, 8 + n);
  const tf = (name: string) => ({ json: read(name, 'model.json').toString('utf8'), bin: read(name, 'weights.bin') });
  return {
    tfjs: { mlp: tf('mnist-mlp'), cnn: tf('mnist-cnn'), resnet: tf('mnist-resnet') },
    onnx: read('pytorch-cnn', 'model.onnx'),
    h5: read('keras', 'mnist-resnet.h5'),
    keras: read('keras', 'mnist-silu.keras'),
    images: idx(0x08, [n, 28, 28], Buffer.from(imgs)),
    labels: idx(0x08, [n], Buffer.from(labs)),
  };
}

/** Every path (keys and indices) to a value inside a JSON value. */
function jsonPaths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (v && typeof v === 'object') {
    for (const [k, c] of Object.entries(v)) {
      const p = [...at, Array.isArray(v) ? Number(k) : k];
      out.push(p);
      jsonPaths(c, p, out);
    }
  }
  return out;
}

function parentOf(root: unknown, p: (string | number)[]): Record<string | number, unknown> {
  let cur = root as Record<string | number, unknown>;
  for (const k of p.slice(0, -1)) cur = cur[k] as Record<string | number, unknown>;
  return cur;
}

const WRONG_VALUES: unknown[] = [null, 0, -1, 1e9, 2.5, '', 'x', [], {}, true, [null], { a: 1 }, 'NaN', -1e30];

export function generateCases(seed = 20261202): Case[] {
  const rng = new Rng(seed);
  const src = sources();
  const cases: Case[] = [];
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)];
  const data = { 'images-idx3-ubyte': src.images, 'labels-idx1-ubyte': src.labels };
  const dataArgs = ['--data', '@/images-idx3-ubyte', '--labels', '@/labels-idx1-ubyte'];
  const add = (category: string, name: string, files: Record<string, Buffer>, argv: string[]) =>
    cases.push({ category, name, files, argv });
  /** A tfjs model (model.json + weights.bin) with the bundled data, analysed with small settings. */
  const tfjsCase = (category: string, name: string, json: string, bin: Buffer | null, extra: string[] = []) =>
    add(
      category,
      name,
      { 'model/model.json': Buffer.from(json), ...(bin ? { 'model/weights.bin': bin } : {}), ...data },
      ['analyze', '@/model/model.json', ...dataArgs, ...SMALL, '--out', '@/out', ...extra],
    );
  const models = ['mlp', 'cnn', 'resnet'] as const;

  // Weight shards.
  for (let i = 0; i < 180; i++) {
    const m = pick(models);
    const { json, bin } = src.tfjs[m];
    const b = Buffer.from(bin);
    const kind = pick([
      'truncated',
      'bit-flipped',
      'shuffled',
      'appended',
      'NaN',
      'Inf',
      'huge',
      'empty',
      'missing',
    ] as const);
    let out: Buffer | null = b;
    let what: string = kind;
    if (kind === 'truncated') {
      const n = rng.int(b.length);
      out = b.subarray(0, n);
      what += ` to ${n} bytes`;
    } else if (kind === 'bit-flipped') {
      const flips = 1 + rng.int(16);
      for (let k = 0; k < flips; k++) {
        const at = rng.int(b.length);
        b[at] ^= 1 << rng.int(8);
      }
      what += ` (${flips} bits)`;
    } else if (kind === 'shuffled') {
      const len = 1 + rng.int(4096);
      const p = rng.int(b.length - len);
      const q = rng.int(b.length - len);
      const t = Buffer.from(b.subarray(p, p + len));
      b.copy(b, p, q, q + len);
      t.copy(b, q);
      what += ` (${len} bytes at ${p} and ${q} swapped)`;
    } else if (kind === 'appended') out = Buffer.concat([b, Buffer.alloc(1 + rng.int(64), 7)]);
    else if (kind === 'NaN' || kind === 'Inf' || kind === 'huge') {
      const at = 4 * rng.int(b.length / 4);
      b.writeFloatLE(kind === 'NaN' ? NaN : kind === 'Inf' ? (rng.int(2) ? Infinity : -Infinity) : 3e38, at);
      what += ` at byte ${at}`;
    } else if (kind === 'empty') out = Buffer.alloc(0);
    else out = null;
    tfjsCase('weights', `${m}: shard ${what}`, json, out);
  }

  // model.json: structure.
  for (let i = 0; i < 560; i++) {
    const m = pick(models);
    const { json, bin } = src.tfjs[m];
    const j = JSON.parse(json);
    const layers = (j.modelTopology.config.layers ?? j.modelTopology.model_config?.config.layers) as {
      class_name: string;
      config: Record<string, unknown>;
      inbound_nodes?: unknown;
    }[];
    const kind = pick([
      'missing key',
      'wrong type',
      'wrong type',
      'unknown layer',
      'unknown activation',
      'shape',
      'huge',
      'manifest',
      'truncated text',
      'garbage',
      'cycle',
    ] as const);
    let text: string | null = null;
    let what: string = kind;
    if (kind === 'missing key' || kind === 'wrong type') {
      const paths = jsonPaths(j);
      const p = pick(paths);
      const parent = parentOf(j, p);
      const key = p[p.length - 1];
      if (kind === 'missing key') {
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete parent[key];
      } else parent[key] = pick(WRONG_VALUES);
      what += ` at ${p.join('.')}`;
    } else if (kind === 'unknown layer') {
      const l = pick(layers);
      l.class_name = pick(['Frobnicate', 'GRU', 'Attention', 'Lambda', '', 'dense']);
      what += ` (${l.config.name} as ${l.class_name})`;
    } else if (kind === 'unknown activation') {
      const l = pick(layers);
      l.config.activation = pick(['swishy', 'gelu_new', 'RELU', '', 'hard_sigmoid', 'linear ', 7]);
      what += ` (${l.config.name}: ${l.config.activation})`;
    } else if (kind === 'shape' || kind === 'huge') {
      const l = pick(layers);
      const keys = [
        'units',
        'filters',
        'kernel_size',
        'strides',
        'pool_size',
        'batch_input_shape',
        'axis',
        'target_shape',
        'padding',
        'data_format',
      ];
      const key = pick(keys);
      const big = kind === 'huge';
      const v =
        key === 'padding'
          ? pick(['full', 'causal', 'valid '])
          : key === 'data_format'
            ? pick(['channels_first', 'nchw'])
            : key === 'batch_input_shape'
              ? big
                ? [null, 100000, 100000, 1]
                : pick([
                    [null, 27, 28, 1],
                    [null, 28, 28],
                    [null, 784],
                    [null, 28, 28, 3],
                    [28, 28, 1],
                  ])
              : big
                ? pick([1e9, 2 ** 31, [1e5, 1e5], 1e15])
                : pick([0, -1, 3, 13, [2, 2, 2], [0, 0], 1.5]);
      l.config[key] = v;
      what += ` (${l.config.name}.${key} = ${JSON.stringify(v)})`;
    } else if (kind === 'manifest') {
      const group = j.weightsManifest[0];
      const w = pick(group.weights as { name: string; shape: number[]; dtype: string }[]);
      const op = pick(['shape', 'dtype', 'name', 'drop', 'duplicate', 'path', 'paths', 'quantization'] as const);
      if (op === 'shape')
        w.shape = pick([[], [1], [...w.shape, 1], w.shape.map((d) => d + 1), w.shape.slice().reverse(), [1e9, 1e9]]);
      else if (op === 'dtype') w.dtype = pick(['int32', 'float16', 'uint8', 'complex64', 'string', 'bool', 'float64']);
      else if (op === 'name') w.name = pick(['', 'nope/kernel', (group.weights[0] as { name: string }).name]);
      else if (op === 'drop') group.weights.splice(group.weights.indexOf(w), 1);
      else if (op === 'duplicate') group.weights.push({ ...w });
      else if (op === 'path') group.paths = [pick(['missing.bin', '../../weights.bin', '', 'model.json', '/dev/null'])];
      else if (op === 'paths') group.paths = ['weights.bin', 'weights.bin'];
      else
        (w as Record<string, unknown>).quantization = pick([
          { dtype: 'uint8', scale: 0.1, min: 0 },
          { dtype: 'float16' },
          { dtype: 'int4' },
          'yes',
        ]);
      what += ` (${op} of ${w.name})`;
    } else if (kind === 'truncated text') {
      const n = rng.int(json.length);
      text = json.slice(0, n);
      what += ` at ${n}`;
    } else if (kind === 'garbage') {
      const at = rng.int(json.length);
      const junk = pick(['\u0000', '}', ']', '"', '\ufffd', ',,', 'NaN', '\n{']);
      text = json.slice(0, at) + junk + json.slice(at);
      what += ` (${JSON.stringify(junk)} at ${at})`;
    } else {
      // A cycle: a layer's input rewired to a later layer (functional) or layers repeated (sequential).
      if (m === 'resnet') {
        const k = 1 + rng.int(layers.length - 2);
        const later = layers[k + 1 + rng.int(layers.length - k - 1)];
        layers[k].inbound_nodes = [[[later.config.name, 0, 0, {}]]];
        what += ` (${layers[k].config.name} fed by ${later.config.name})`;
      } else {
        layers.push(layers[1]);
        what += ' (a layer listed twice)';
      }
    }
    tfjsCase('model.json', `${m}: ${what}`, text ?? JSON.stringify(j), bin);
  }

  // ONNX, Keras HDF5 and .keras: truncated and bit-flipped files.
  const binary = [
    { cat: 'onnx', file: 'model.onnx', buf: src.onnx },
    { cat: 'hdf5', file: 'model.h5', buf: src.h5 },
    { cat: 'keras-zip', file: 'model.keras', buf: src.keras },
  ];
  for (let i = 0; i < 150; i++) {
    const { cat, file, buf } = pick(binary);
    const b = Buffer.from(buf);
    let out = b;
    let what: string;
    const r = rng.next();
    if (r < 0.35) {
      const n = rng.int(b.length);
      out = b.subarray(0, n);
      what = `truncated to ${n} bytes`;
    } else if (r < 0.85) {
      const flips = 1 + rng.int(8);
      // Half the flips in the first 4 KiB, where headers, the graph and the HDF5 superblock are.
      for (let k = 0; k < flips; k++) {
        const at = rng.int(rng.int(2) ? Math.min(4096, b.length) : b.length);
        b[at] ^= 1 << rng.int(8);
      }
      what = `${flips} bits flipped`;
    } else {
      out = Buffer.from(b.toString('latin1').replace(/relu|Relu|silu|swish|Conv|Gemm|Dense/, 'Xyzw'), 'latin1');
      what = 'an operator or layer name renamed';
    }
    // In a folder of its own: --out may not lie inside the model's folder.
    add(cat, `${file}: ${what}`, { [`model/${file}`]: out, ...data }, [
      'analyze',
      `@/model/${file}`,
      ...dataArgs,
      ...SMALL,
      '--out',
      '@/out',
    ]);
  }

  // Data files.
  const pixels = src.images.subarray(16);
  const n = 64;
  for (let i = 0; i < 170; i++) {
    const fmt = pick(['idx', 'npy', 'csv', 'json'] as const);
    let file: string;
    let body: Buffer;
    let what: string;
    if (fmt === 'idx') {
      file = 'x-idx3-ubyte';
      const op = pick(['magic', 'type', 'ndim', 'dims', 'truncated', 'empty', 'float NaN', 'image size'] as const);
      what = op;
      if (op === 'magic') {
        body = Buffer.from(src.images);
        body[rng.int(4)] = 1 + rng.int(255);
      } else if (op === 'type') {
        body = Buffer.from(src.images);
        body[2] = pick([0x00, 0x07, 0x0a, 0x0f, 0xff]);
      } else if (op === 'ndim') {
        body = Buffer.from(src.images);
        body[3] = pick([0, 1, 2, 5, 200]);
      } else if (op === 'dims') {
        body = idx(
          0x08,
          pick([
            [n, 28, 29],
            [n + 10, 28, 28],
            [0, 28, 28],
            [4294967295, 28, 28],
            [n, 784, 1],
          ]),
          Buffer.from(pixels),
        );
      } else if (op === 'truncated') body = src.images.subarray(0, rng.int(src.images.length));
      else if (op === 'empty') body = Buffer.alloc(0);
      else if (op === 'float NaN') {
        const f = Buffer.alloc(4 * n * 784);
        for (let k = 0; k < n * 784; k++) f.writeFloatBE(pixels[k] / 255, 4 * k);
        f.writeFloatBE(pick([NaN, Infinity, -Infinity]), 4 * rng.int(n * 784));
        body = idx(0x0d, [n, 28, 28], f);
      } else body = idx(0x08, [n, 14, 14], Buffer.from(pixels.subarray(0, n * 196)));
    } else if (fmt === 'npy') {
      file = 'x.npy';
      const f = Float32Array.from(pixels, (p) => p / 255);
      const op = pick(['magic', 'header', 'dtype', 'shape', 'fortran', 'NaN', 'Inf', 'truncated', 'channels'] as const);
      what = op;
      const good = writeNpy([n, 28, 28, 1], f);
      if (op === 'magic') {
        body = Buffer.from(good);
        body[rng.int(6)] ^= 0x20;
      } else if (op === 'header') {
        body = Buffer.from(good);
        const at = 10 + rng.int(60);
        body[at] = pick([0x28, 0x27, 0x7b, 0x00, 0x3a]);
      } else if (op === 'dtype')
        body = Buffer.from(
          good.toString('latin1').replace("'<f4'", pick(["'<c8'", "'|O'", "'<U1'", "'<f2'", "'|b1'", "'<u8'"])),
          'latin1',
        );
      else if (op === 'shape')
        body = Buffer.from(
          good
            .toString('latin1')
            .replace(
              '(64, 28, 28, 1)',
              pick([
                '(64, 27, 28, 1)',
                '(65, 28, 28, 1)',
                '()',
                '(64, 28, 28, 3)',
                '(99999999999, 28)',
                '(-64, 28, 28, 1)',
              ]),
            ),
          'latin1',
        );
      else if (op === 'fortran') body = Buffer.from(good.toString('latin1').replace('False', 'True'), 'latin1');
      else if (op === 'NaN' || op === 'Inf') {
        f[rng.int(f.length)] = op === 'NaN' ? NaN : -Infinity;
        body = writeNpy([n, 28, 28, 1], f);
      } else if (op === 'truncated') body = good.subarray(0, rng.int(good.length));
      else body = writeNpy([n, 28, 28, 3], new Float32Array(n * 784 * 3));
    } else if (fmt === 'csv') {
      file = 'x.csv';
      const rows = Array.from({ length: n }, (_, s) => Array.from(pixels.subarray(s * 784, (s + 1) * 784)).join(','));
      const op = pick(['ragged', 'text cell', 'nan', 'empty', 'columns', 'semicolons'] as const);
      what = op;
      const r = rng.int(rows.length);
      if (op === 'ragged') rows[r] = rows[r].split(',').slice(0, 700).join(',');
      else if (op === 'text cell') rows[r] = rows[r].replace(/^\d+/, pick(['abc', '1e', '0x', '--1']));
      else if (op === 'nan') rows[r] = rows[r].replace(/^\d+/, pick(['nan', 'NaN', 'Infinity', '-inf']));
      else if (op === 'empty') rows.length = 0;
      else if (op === 'columns')
        for (let k = 0; k < rows.length; k++) rows[k] = rows[k].split(',').slice(0, 100).join(',');
      else for (let k = 0; k < rows.length; k++) rows[k] = rows[k].replace(/,/g, ';');
      body = Buffer.from(rows.join('\n'));
    } else {
      file = 'x.json';
      const arr = Array.from({ length: n }, (_, s) => Array.from(pixels.subarray(s * 784, (s + 1) * 784)));
      const op = pick(['object', 'strings', 'nulls', 'ragged', 'scalar', 'invalid', 'deep'] as const);
      what = op;
      let v: unknown = arr;
      if (op === 'object') v = { samples: arr };
      else if (op === 'strings') {
        (arr[rng.int(n)] as unknown[])[rng.int(784)] = '12';
      } else if (op === 'nulls') {
        (arr[rng.int(n)] as unknown[])[rng.int(784)] = null;
      } else if (op === 'ragged') arr[rng.int(n)].pop();
      else if (op === 'scalar') v = 42;
      else if (op === 'deep') v = arr.map((r) => r.map((x) => [[x]]));
      body = Buffer.from(op === 'invalid' ? JSON.stringify(arr).slice(0, 5000) : JSON.stringify(v));
    }
    const m = pick(models);
    add(
      'data',
      `${fmt} ${what} (${m})`,
      {
        'model/model.json': Buffer.from(src.tfjs[m].json),
        'model/weights.bin': src.tfjs[m].bin,
        [file]: body,
        'labels-idx1-ubyte': src.labels,
      },
      [
        'analyze',
        '@/model/model.json',
        '--data',
        `@/${file}`,
        ...(fmt === 'idx' || fmt === 'npy' ? ['--labels', '@/labels-idx1-ubyte'] : []),
        ...SMALL,
        '--out',
        '@/out',
      ],
    );
  }

  // Labels.
  const labs = src.labels.subarray(8);
  for (let i = 0; i < 60; i++) {
    const op = pick([
      'out of range',
      'negative',
      'float',
      'too few',
      'too many',
      'images as labels',
      'one-hot',
      'empty',
    ] as const);
    let file = 'y.npy';
    let body: Buffer;
    if (op === 'out of range') {
      const l = Buffer.from(labs);
      l[rng.int(n)] = pick([10, 11, 255]);
      body = idx(0x08, [n], l);
      file = 'y-idx1-ubyte';
    } else if (op === 'negative') {
      const l = Float32Array.from(labs);
      l[rng.int(n)] = -1;
      body = writeNpy([n], l);
    } else if (op === 'float') {
      const l = Float32Array.from(labs);
      l[rng.int(n)] = 2.5;
      body = writeNpy([n], l);
    } else if (op === 'too few') {
      body = idx(0x08, [n - 1 - rng.int(20)], Buffer.from(labs.subarray(0, n - 21)));
      file = 'y-idx1-ubyte';
    } else if (op === 'too many')
      body = writeNpy(
        [n + 5],
        Float32Array.from({ length: n + 5 }, (_, k) => labs[k % n]),
      );
    else if (op === 'images as labels') {
      body = src.images;
      file = 'y-idx3-ubyte';
    } else if (op === 'one-hot')
      body = writeNpy(
        [n, 10],
        Float32Array.from({ length: n * 10 }, (_, k) => Number(labs[Math.floor(k / 10)] === k % 10)),
      );
    else body = writeNpy([0], new Float32Array(0));
    const m = pick(models);
    add(
      'labels',
      `${op} (${m})`,
      {
        'model/model.json': Buffer.from(src.tfjs[m].json),
        'model/weights.bin': src.tfjs[m].bin,
        'images-idx3-ubyte': src.images,
        [file]: body,
      },
      [
        'analyze',
        '@/model/model.json',
        '--data',
        '@/images-idx3-ubyte',
        '--labels',
        `@/${file}`,
        ...SMALL,
        '--out',
        '@/out',
      ],
    );
  }

  // Options: one bad value, or a combination that cannot hold.
  const numeric = [
    'budget',
    'level-budget',
    'bootstrap-levels',
    'ring-size',
    'calib',
    'heldout',
    'seed',
    'input-scale',
    'tune-labels',
    'margin',
    'margin-growth',
    'screen-samples',
    'floor',
    'batch-size',
    'finetune-epochs',
  ];
  const badNumbers = ['-1', '0', 'abc', 'NaN', 'Infinity', '1e309', '1.5', '', '2', '99999999999', '3'];
  for (let i = 0; i < 110; i++) {
    const r = rng.next();
    let extra: string[];
    if (r < 0.6) extra = [`--${pick(numeric)}`, pick(badNumbers)];
    else if (r < 0.7) extra = ['--degrees', pick(['0,3', '64', 'a', '', '3,,5', '1.5', '-3', '3;5'])];
    else if (r < 0.75) extra = ['--method', pick(['minimaxx', '', 'DATA'])];
    else if (r < 0.82) extra = [pick(['--input-mean', '--input-std']), pick(['0.1,0.2,0.3', 'a', '0', '0,0', ''])];
    else if (r < 0.88) extra = [pick(['--frobnicate', '-x', '--', '--data', '--out'])];
    else if (r < 0.94) extra = ['--heldout-data', '@/images-idx3-ubyte'];
    else extra = ['--level-budget', pick(['1', '2', '3', '4'])];
    const m = pick(models);
    add(
      'options',
      `${m}: ${extra.join(' ')}`,
      { 'model/model.json': Buffer.from(src.tfjs[m].json), 'model/weights.bin': src.tfjs[m].bin, ...data },
      ['analyze', '@/model/model.json', ...dataArgs, ...SMALL, '--out', '@/out', ...extra],
    );
  }

  // --out: what the user owns is never overwritten.
  for (const [what, files, out] of [
    ['a file', { 'notes.txt': Buffer.from("the user's notes") }, '@/notes.txt'],
    ['under a file', { 'notes.txt': Buffer.from("the user's notes") }, '@/notes.txt/sub'],
    ["the model's folder", {}, '@/model'],
    ['earlier results', { 'out/report.json': Buffer.from('{}') }, '@/out'],
    ["a folder holding the user's model.json", { 'out/model/model.json': Buffer.from('{"mine": true}') }, '@/out'],
  ] as const) {
    add(
      'out',
      `--out ${what}`,
      { 'model/model.json': Buffer.from(src.tfjs.mlp.json), 'model/weights.bin': src.tfjs.mlp.bin, ...data, ...files },
      ['analyze', '@/model/model.json', ...dataArgs, ...SMALL, '--out', out],
    );
  }

  // Paths an untrusted workspace can hold (issue 30): every entry given a folder, a FIFO, a device,
  // a dangling link, a loop of links; shards leading out of the model's folder; --out leading into it.
  const paths: Case[] = [];
  const entries = ['model', 'data', 'labels', 'heldout'] as const;
  const kinds = ['folder', 'fifo', 'device', 'dangling', 'loop', 'link-out'] as const;
  for (let i = 0; i < 60; i++) {
    const m = pick(models);
    const entry = pick(entries);
    const kind = pick(kinds);
    const files: Record<string, Buffer> = {
      'model/model.json': Buffer.from(src.tfjs[m].json),
      'model/weights.bin': src.tfjs[m].bin,
      ...data,
      'outside/secret.bin': Buffer.from(src.tfjs[m].bin),
    };
    const special: NonNullable<Case['special']> = { links: {}, fifos: [], dirs: [] };
    const at = entry === 'model' ? 'model/bad.json' : `bad-${entry}`;
    if (kind === 'folder') special.dirs!.push(at);
    else if (kind === 'fifo') special.fifos!.push(at);
    else if (kind === 'device') special.links![at] = '/dev/zero';
    else if (kind === 'dangling') special.links![at] = '@/nowhere';
    else if (kind === 'loop') {
      special.links![at] = `@/${at}.2`;
      special.links![`${at}.2`] = `@/${at}`;
    } else special.links![at] = '@/outside/secret.bin';
    const arg = `@/${at}`;
    const argv =
      entry === 'model'
        ? ['analyze', arg, ...dataArgs, ...SMALL, '--out', '@/out']
        : entry === 'data'
          ? ['analyze', '@/model/model.json', '--data', arg, ...SMALL, '--out', '@/out']
          : entry === 'labels'
            ? [
                'analyze',
                '@/model/model.json',
                '--data',
                '@/images-idx3-ubyte',
                '--labels',
                arg,
                ...SMALL,
                '--out',
                '@/out',
              ]
            : ['analyze', '@/model/model.json', ...dataArgs, '--heldout-data', arg, ...SMALL, '--out', '@/out'];
    paths.push({ category: 'paths', name: `${m}: ${entry} is a ${kind}`, files, argv, special });
  }
  for (let i = 0; i < 40; i++) {
    const m = pick(models);
    const json = JSON.parse(src.tfjs[m].json) as { weightsManifest: { paths: string[] }[] };
    const kind = pick(['relative', 'absolute', 'link', 'deep', 'out-link', 'out-inside'] as const);
    const files: Record<string, Buffer> = { 'outside/weights.bin': src.tfjs[m].bin, ...data };
    const special: NonNullable<Case['special']> = { links: {} };
    let out = '@/out';
    if (kind === 'relative') json.weightsManifest[0].paths = ['../outside/weights.bin'];
    else if (kind === 'absolute') json.weightsManifest[0].paths = ['@ABS@/outside/weights.bin'];
    else if (kind === 'link') {
      json.weightsManifest[0].paths = ['weights.bin'];
      special.links!['model/weights.bin'] = '@/outside/weights.bin';
    } else if (kind === 'deep') json.weightsManifest[0].paths = ['sub/../../outside/weights.bin'];
    else {
      files['model/weights.bin'] = src.tfjs[m].bin;
      json.weightsManifest[0].paths = ['weights.bin'];
    }
    if (kind === 'out-link') {
      special.links!['out-link'] = '@/model';
      out = '@/out-link';
    }
    if (kind === 'out-inside') out = '@/model/results';
    files['model/model.json'] = Buffer.from(JSON.stringify(json));
    paths.push({
      category: 'paths',
      name: `${m}: ${kind}`,
      files,
      argv: ['analyze', '@/model/model.json', ...dataArgs, ...SMALL, '--out', out],
      special,
    });
  }
  cases.push(...paths);
  return cases;
}
