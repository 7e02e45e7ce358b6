/**
 * Writes the analysis outputs: the report, a coefficients file, and the approximated model in
 * the user's format: a TensorFlow.js model in which every approximated activation is an
 * `HEPolyActivation` layer (from tfjs and Keras models), or an ONNX model in which it is plain
 * ONNX arithmetic (from ONNX models; onnxExport.ts).
 * Never overwrites a file unless asked to, and never the input model's own files.
 */
import * as fs from 'fs';
import * as path from 'path';
import { affineLane, lanesOf, squareLane } from '../cost/fold';
import { UserError } from '../errors';
import { isWithin, realPathOf } from '../files';
import { sealReport } from '../reportCheck';
import type { FinetunedModel } from '../finetune/finetune';
import { Graph, GraphNode, ParamSource } from '../model/graph';
import { kerasWeight } from '../model/formats/kerasTopology';
import { DT, OnnxTensor, tensorValues } from '../model/formats/onnx/proto';
import { LoadedModel, modelFilePath, modelFormatOf } from '../model/load';
import type { NamedWeight } from '../model/weights';
import { unitMap } from '../numerics/chebyshev';
import { Report, polysFromReport } from '../report';
import { approximatedOnnx } from './onnxExport';
import { POLY_LAYER_CLASS, POLY_MAXPOOL_CLASS, PolyLayerConfig, PolyMaxPoolConfig } from './polyLayer';

export const COEFFICIENTS_SCHEMA = 'he-approx/coefficients';

/** A layer's per-channel polynomials as both output files write them, or null. */
function channelsConfig(l: Report['layers'][number]): { interval: [number, number]; coefficients: number[] }[] | null {
  const ch = l.chosen.channels;
  return ch ? ch.coeffs.map((c, k) => ({ interval: [ch.intervals[k].a, ch.intervals[k].b], coefficients: c })) : null;
}

/**
 * What the levels counted for a layer assume (cost/fold.ts), per channel, so that another CKKS
 * library reproduces them: the maps the previous layer absorbs, and the square's sign and offset.
 */
function foldConfig(l: Report['layers'][number]): unknown {
  const f = l.chosen.fold;
  if (!f) return null; // a report made before folding
  const p = polysFromReport({ layers: [l] }).get(l.node)!;
  const lanes = lanesOf(p).map((lane) => {
    if (f.form === 'constant') return { constant: lane.coeffs[0] ?? 0 };
    if (f.form === 'affine') return affineLane(lane);
    if (f.form === 'square') return squareLane(lane);
    const { scale, shift } = unitMap(lane);
    return { mul: scale, add: shift };
  });
  return { form: f.form, into: f.into, mixedSigns: f.mixedSigns, why: f.why, channels: lanes };
}

export function coefficientsFile(report: Report): unknown {
  return {
    schema: COEFFICIENTS_SCHEMA,
    version: 4,
    model: report.model.path,
    createdAt: report.createdAt,
    evaluation:
      'p(x) = sum_k coefficients[k] * T_k(t), t = (2x - a - b) / (b - a), with interval [a, b] and coefficients of the layer, or of channels[c] for channel c (last axis) when channels is not null; then subtract channel_offset[c] if present',
    folding:
      'the levels assume fold: with form "series", layer fold.into (if not null) outputs t = mul x + add per channel c (fold.channels[c]) and the series is evaluated on t; ' +
      '"affine" (degree 1): fold.into outputs y = mul x + add - channel_offset[c] directly (0 levels; without fold.into, one plaintext multiplication); ' +
      '"square" (degree 2): fold.into outputs u = mul x + add, then y = sign u^2 + offset - channel_offset[c] (1 level; with mixedSigns, u and sign u are both made by plaintext multiplications)',
    maxPooling: report.maxPooling
      ? "a layer with max_tree is the |x| of one step of a max pooling's tree: for every position q along max_tree.axis, m[q] = (x[q] + x[q + offset]) / 2 + p(x[q] - x[q + offset]) / 2, " +
        "the steps in order (width first, then height) on the pooling's input (its padding repeats the border values), then every stride-th position kept; p is the layer's polynomial"
      : undefined,
    layers: report.layers.map((l) => ({
      name: l.name,
      layer: l.layer,
      activation: l.activation,
      basis: 'chebyshev',
      max_tree: l.maxTree,
      // Per-channel layers have no layer-wide polynomial here, so that no reader uses a wrong one.
      interval: l.chosen.channels ? null : [l.chosen.interval.a, l.chosen.interval.b],
      coefficients: l.chosen.channels ? null : l.chosen.coeffs,
      channels: channelsConfig(l),
      degree: l.chosen.degree,
      depth: l.chosen.depth,
      polyDepth: l.chosen.polyDepth,
      affineLevel: l.chosen.affineLevel,
      fold: foldConfig(l),
      nonScalarMults: l.chosen.nonScalarMults,
      channel_offset: l.chosen.channelOffset,
      method: l.chosen.method,
    })),
  };
}

type Cfg = Record<string, any>;

/** Rewrites the Keras topology: each approximated activation becomes an HEPolyActivation layer. */
export function approximatedTopology(model: LoadedModel, report: Report): { class_name: string; config: Cfg } {
  if (!model.keras) throw new Error('approximatedTopology needs a Keras topology');
  const topo = JSON.parse(JSON.stringify(model.keras.topology)) as { class_name: string; config: Cfg };
  const byNode = new Map(report.layers.map((l) => [l.name, l]));
  const polyCfg = (l: Report['layers'][number], name: string): PolyLayerConfig & { name: string } => ({
    name,
    basis: 'chebyshev',
    interval: [l.chosen.interval.a, l.chosen.interval.b],
    coefficients: l.chosen.coeffs,
    channel_offset: l.chosen.channelOffset,
    replaces: l.activation,
    degree: l.chosen.degree,
    channels: channelsConfig(l),
  });
  // Max poolings become HEPolyMaxPooling2D layers: their trees with each step's |x| polynomial.
  const pools = new Map((report.maxPooling?.pools ?? []).map((p) => [p.layer, p]));
  const poolCfg = (
    pool: NonNullable<Report['maxPooling']>['pools'][number],
    name: string,
  ): PolyMaxPoolConfig & { name: string } => {
    const g = model.graph;
    const pad = g.nodes.find((n) => n.name === `${pool.pool}/pad`);
    const stride = g.nodes.find((n) => n.name === `${pool.pool}/stride`);
    const last = g.nodes.find((n) => n.name === pool.steps[pool.steps.length - 1])!;
    const steps = report.layers.filter((l) => l.maxTree?.pool === pool.pool);
    return {
      name,
      padding:
        pad && pad.spec.op === 'pad'
          ? [pad.spec.pads[0], pad.spec.pads[1]]
          : [
              [0, 0],
              [0, 0],
            ],
      steps: steps.map((l) => ({
        axis: l.maxTree!.axis,
        offset: l.maxTree!.offset,
        poly: polyCfg(l, `${name}_${l.maxTree!.axis}${l.maxTree!.step}`),
      })),
      strides: stride && stride.spec.op === 'slice' ? [stride.spec.step[0], stride.spec.step[1]] : [1, 1],
      output: stride ? [stride.shape[0], stride.shape[1]] : [last.shape[0], last.shape[1]],
      global: pool.className === 'GlobalMaxPooling2D',
      replaces: pool.className,
    };
  };
  const isSeq = topo.class_name === 'Sequential';
  const layers: Cfg[] = isSeq ? (Array.isArray(topo.config) ? topo.config : topo.config.layers) : topo.config.layers;
  const out: Cfg[] = [];
  const renames = new Map<string, string>();
  for (const layer of layers) {
    const name = layer.config?.name ?? layer.name;
    const fused = byNode.get(`${name}/activation`);
    const standalone = byNode.get(name);
    const pool = pools.get(name);
    if (pool) {
      const layerCfg = { class_name: POLY_MAXPOOL_CLASS, config: { ...poolCfg(pool, name) } } as Cfg;
      if (layer.config?.batch_input_shape) layerCfg.config.batch_input_shape = layer.config.batch_input_shape;
      if (!isSeq) {
        layerCfg.name = name;
        layerCfg.inbound_nodes = layer.inbound_nodes;
      }
      out.push(layerCfg);
      continue;
    }
    if (standalone) {
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyCfg(standalone, name) } } as Cfg;
      if (layer.config?.batch_input_shape) poly.config.batch_input_shape = layer.config.batch_input_shape;
      if (!isSeq) {
        poly.name = name;
        poly.inbound_nodes = layer.inbound_nodes;
      }
      out.push(poly);
      continue;
    }
    out.push(layer);
    if (fused) {
      layer.config.activation = 'linear';
      const pname = `${name}_hepoly`;
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyCfg(fused, pname) } } as Cfg;
      if (!isSeq) {
        poly.name = pname;
        poly.inbound_nodes = [[[name, 0, 0, {}]]];
        renames.set(name, pname);
      }
      out.push(poly);
    }
  }
  if (!isSeq && renames.size) {
    // Every consumer of a split layer now reads from its polynomial layer.
    const rewire = (x: any): any => {
      if (Array.isArray(x) && typeof x[0] === 'string' && renames.has(x[0])) return [renames.get(x[0]), ...x.slice(1)];
      return Array.isArray(x) ? x.map(rewire) : x;
    };
    for (const l of out) if (l.class_name !== POLY_LAYER_CLASS) l.inbound_nodes = rewire(l.inbound_nodes);
    topo.config.output_layers = rewire(topo.config.output_layers);
  }
  if (isSeq) {
    if (Array.isArray(topo.config)) topo.config = out;
    else topo.config.layers = out;
  } else topo.config.layers = out;
  return topo;
}

export interface WrittenFiles {
  report: string;
  coefficients: string;
  /** The approximated model: model/model.json (tfjs, from tfjs and Keras models) or model.onnx (from ONNX models). */
  model: string;
  /** Its weight file (tfjs only). */
  weights: string | null;
  /** With --finetune-epochs: the fine-tuned approximated model (same format as `model`) and its coefficients. */
  finetuned: { model: string; weights: string | null; coefficients: string } | null;
}

/** Keras regularizers and constraints that TensorFlow.js cannot deserialise from Keras 2 files; inference does not use them. */
const TRAINING_ONLY = [
  'kernel_regularizer',
  'bias_regularizer',
  'activity_regularizer',
  'depthwise_regularizer',
  'beta_regularizer',
  'gamma_regularizer',
  'kernel_constraint',
  'bias_constraint',
  'depthwise_constraint',
  'beta_constraint',
  'gamma_constraint',
];

function tfjsModelJson(model: LoadedModel, report: Report): { json: unknown; weights: Buffer } {
  const k = model.keras!;
  const topology = approximatedTopology(model, report);
  const layers: Cfg[] = Array.isArray(topology.config) ? topology.config : (topology.config.layers ?? []);
  for (const l of layers) for (const key of TRAINING_ONLY) if (l.config && key in l.config) l.config[key] = null;
  // Keras files name weights 'layer/kernel:0'; tfjs matches 'layer/kernel'.
  const weightSpecs = k.weights.map((w) => ({ name: w.name.replace(/:\d+$/, ''), shape: w.shape, dtype: 'float32' }));
  const all = new Float32Array(k.weights.reduce((s, w) => s + w.data.length, 0));
  let off = 0;
  for (const w of k.weights) {
    all.set(w.data, off);
    off += w.data.length;
  }
  const modelTopology =
    k.layout === 'converter'
      ? { ...k.modelTopology, model_config: topology }
      : { ...k.modelTopology, class_name: topology.class_name, config: topology.config };
  const json = {
    format: 'layers-model',
    generatedBy: `he-approx ${report.tool.version}`,
    convertedBy: null,
    modelTopology,
    weightsManifest: [{ paths: ['weights.bin'], weights: weightSpecs }],
    heApprox: {
      note: `Load after registering the ${POLY_LAYER_CLASS} layer (require('he-approx').registerPolyLayer()).`,
      report: '../report.json',
    },
  };
  return { json, weights: Buffer.from(all.buffer) };
}

/**
 * The files `writeOutputs` would write under `dir` for this model, after checking that it may:
 * `dir` is not a file, none of them lands in the input model's folder, none exists unless
 * `force`, and the nearest existing folder on the way is writable. Hosts call it before the
 * analysis starts, so that a bad --out fails in a second, not after minutes of work.
 */
export function checkOutputs(dir: string, modelArg: string, force: boolean, finetune = false): WrittenFiles {
  const abs = path.resolve(dir);
  const modelPath = modelFilePath(modelArg);
  const onnx = modelFormatOf(modelPath) === 'onnx';
  const ft = path.join(abs, 'finetuned');
  const files: WrittenFiles = {
    report: path.join(abs, 'report.json'),
    coefficients: path.join(abs, 'coefficients.json'),
    model: onnx ? path.join(abs, 'model.onnx') : path.join(abs, 'model', 'model.json'),
    weights: onnx ? null : path.join(abs, 'model', 'weights.bin'),
    finetuned: !finetune
      ? null
      : onnx
        ? { model: path.join(ft, 'model.onnx'), weights: null, coefficients: path.join(ft, 'coefficients.json') }
        : {
            model: path.join(ft, 'model.json'),
            weights: path.join(ft, 'weights.bin'),
            coefficients: path.join(ft, 'coefficients.json'),
          },
  };
  // Checked where the links lead: --out may be a link, but not to the model's folder or into it.
  const real = realPathOf(abs);
  const modelDir = realPathOf(path.dirname(modelPath));
  if (isWithin(modelDir, real)) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is ${real === modelDir ? "the input model's folder" : "inside the input model's folder"}${real !== abs ? ` (it leads to ${real})` : ''}; he-approx never writes there`,
      "choose an --out folder outside the model's folder",
    );
  }
  let outStat: fs.Stats | null = null;
  try {
    outStat = fs.lstatSync(abs);
  } catch {
    /* created below */
  }
  if (outStat?.isSymbolicLink() && !fs.existsSync(abs)) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is a symbolic link to ${fs.readlinkSync(abs)}, which does not exist`,
      'remove the link, or choose another --out folder',
    );
  }
  if (fs.existsSync(abs) && !fs.statSync(abs).isDirectory()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is ${fs.statSync(abs).isFile() ? 'a file' : 'a special file'}, not a folder`,
      'choose a folder name for --out',
    );
  }
  // Inside --out nothing is written through a link (a planted report.json -> ~/.bashrc).
  const folders = [path.dirname(files.model), ...(files.finetuned ? [path.dirname(files.finetuned.model)] : [])].filter(
    (f) => f !== abs,
  );
  for (const f of [
    ...folders,
    files.report,
    files.coefficients,
    files.model,
    files.weights,
    ...Object.values(files.finetuned ?? {}),
  ]) {
    if (!f) continue;
    let st: fs.Stats | null = null;
    try {
      st = fs.lstatSync(f);
    } catch {
      /* not there yet */
    }
    if (st?.isSymbolicLink()) {
      throw new UserError(
        'OUTPUT_EXISTS',
        `${f} is a symbolic link; he-approx does not write through links`,
        'remove the link, or choose another --out folder',
      );
    }
    if (st && folders.includes(f) && !st.isDirectory()) {
      throw new UserError(
        'OUTPUT_EXISTS',
        `${f} is a file, where he-approx makes a folder`,
        'choose another --out folder',
      );
    }
    if (!st || folders.includes(f)) continue;
    if (!force)
      throw new UserError(
        'OUTPUT_EXISTS',
        `${f} already exists`,
        'choose another --out folder, or pass --force to overwrite he-approx outputs',
      );
    if (!st.isFile())
      throw new UserError(
        'OUTPUT_EXISTS',
        `${f} is ${st.isDirectory() ? 'a folder' : 'not a regular file'}, where he-approx writes a file`,
        'choose another --out folder',
      );
  }
  let existing = abs;
  while (!fs.existsSync(existing)) existing = path.dirname(existing);
  if (!fs.statSync(existing).isDirectory()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir}: ${existing} is a file, not a folder`,
      'choose a --out path whose parent folders are folders',
    );
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK);
  } catch {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir}: ${existing} is not writable`,
      'choose a --out folder you can write to',
    );
  }
  return files;
}

/**
 * Writes everything under `dir` (checked again by checkOutputs); refuses to overwrite existing
 * files unless `force`. With a kept fine-tuning (`finetuned`, from AnalyzeOptions.onFinetuned),
 * also finetuned/: the approximated model with the fine-tuned weights and polynomials, in the
 * same format, and its coefficients; the report records where (report.finetune.exported).
 */
/** Writes a file under --out without following a link planted at its name after the checks. */
function writeOut(file: string, data: string | Uint8Array): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (fs.constants.O_NOFOLLOW ?? 0),
    0o644,
  );
  try {
    fs.writeFileSync(fd, data);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeOutputs(
  dir: string,
  model: LoadedModel,
  report: Report,
  force: boolean,
  finetuned: FinetunedModel | null = null,
): WrittenFiles {
  const onnx = !!model.onnx;
  const files = checkOutputs(dir, model.path, force, !!finetuned);
  fs.mkdirSync(path.dirname(files.model), { recursive: true });
  if (onnx) {
    writeOut(files.model, approximatedOnnx(model, report));
  } else {
    const { json, weights } = tfjsModelJson(model, report);
    writeOut(files.weights!, weights);
    writeOut(files.model, JSON.stringify(json));
  }
  if (report.finetune) {
    report.finetune.exported = null;
    if (finetuned && files.finetuned) {
      const tuned = finetunedReport(report);
      fs.mkdirSync(path.dirname(files.finetuned.model), { recursive: true });
      if (onnx) {
        writeOut(files.finetuned.model, approximatedOnnx(finetunedOnnxModel(model, finetuned.graph), tuned));
      } else {
        const { json, weights } = tfjsModelJson(
          { ...model, keras: { ...model.keras!, weights: finetunedWeights(model, finetuned.graph) } },
          tuned,
        );
        writeOut(files.finetuned.weights!, weights);
        writeOut(files.finetuned.model, JSON.stringify(json));
      }
      writeOut(files.finetuned.coefficients, JSON.stringify(coefficientsFile(tuned), null, 2) + '\n');
      report.finetune.exported = path.relative(path.dirname(files.report), files.finetuned.model);
    }
  }
  writeOut(files.coefficients, JSON.stringify(coefficientsFile(report), null, 2) + '\n');
  writeOut(files.report, JSON.stringify(sealReport(report), null, 2) + '\n');
  return files;
}

/** The report with every layer's polynomial replaced by its fine-tuned one (same degree and intervals). */
function finetunedReport(report: Report): Report {
  const by = new Map(report.finetune!.layers.map((l) => [l.node, l]));
  return {
    ...report,
    layers: report.layers.map((l) => {
      const t = by.get(l.node)!;
      return {
        ...l,
        chosen: {
          ...l.chosen,
          coeffs: t.channels ? l.chosen.coeffs : t.coeffs,
          channels: t.channels,
          channelOffset: t.channelOffset,
        },
      };
    }),
  };
}

/**
 * The Keras weights with the fine-tuned graph's values. Dense and convolution kernels and biases
 * are the very arrays the loader took from the weights (kerasTopology.ts's getW), so each is found
 * by identity; a batch normalisation's folded scale and shift go back into gamma and beta with its
 * moving statistics unchanged: gamma' = scale' * gamma / scale (= scale' * sqrt(var + eps)), beta' =
 * shift' + mean * scale'. A parameter found nowhere is an error, never silently the old value.
 */
function finetunedWeights(model: LoadedModel, tuned: Graph): NamedWeight[] {
  const k = model.keras!;
  const out = new Map(k.weights.map((w) => [w.data, w.data]));
  const named = (layer: string, param: string) => kerasWeight(k.weights, layer, param);
  const cannot = (n: GraphNode, what: string): never => {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `the fine-tuned ${what} of layer '${n.layer}' has no weight of its own in ${path.basename(model.path)}`,
      'export without --finetune-epochs, or use the fine-tuned polynomials in report.json (finetune.layers) with your own training code',
    );
  };
  model.graph.nodes.forEach((n, i) => {
    const s = n.spec;
    const t = tuned.nodes[i].spec;
    if ((s.op === 'dense' || s.op === 'conv2d') && (t.op === 'dense' || t.op === 'conv2d')) {
      if (!out.has(s.kernel)) cannot(n, 'kernel');
      out.set(s.kernel, t.kernel);
      if (s.bias && t.bias) {
        if (!out.has(s.bias)) cannot(n, 'bias');
        out.set(s.bias, t.bias);
      }
    } else if (s.op === 'batchnorm' && t.op === 'batchnorm') {
      const mean = named(n.layer, 'moving_mean');
      const variance = named(n.layer, 'moving_variance');
      const gamma = named(n.layer, 'gamma');
      const beta = named(n.layer, 'beta');
      if (!mean || !variance || !gamma || !beta)
        cannot(n, 'scale and shift (a BatchNormalization without gamma or beta)');
      out.set(
        gamma!.data,
        Float32Array.from(t.scale, (v, c) =>
          s.scale[c] !== 0 ? (v * gamma!.data[c]) / s.scale[c] : v * Math.sqrt(variance!.data[c] + 1e-3),
        ),
      );
      out.set(
        beta!.data,
        Float32Array.from(t.shift, (v, c) => v + mean!.data[c] * t.scale[c]),
      );
    }
  });
  return k.weights.map((w) => ({ ...w, data: out.get(w.data)! }));
}

/**
 * The ONNX model with the fine-tuned graph's values written into the constants they were read
 * from (ParamSource: value[i] = scale * constant[index[i]], so constant[index[i]] = value[i] /
 * scale), batch normalisations through their moving statistics as in finetunedWeights. Before
 * writing, each source must reproduce the values the graph was loaded with: a weight the importer
 * computed (a folded constant) or a constant two layers share has no single place to go, and is
 * an error rather than a silent half-export.
 */
function finetunedOnnxModel(model: LoadedModel, tuned: Graph): LoadedModel {
  const src = model.onnx!;
  const m = structuredClone(src.model);
  const dir = path.dirname(model.path);
  const entries = new Map<
    string,
    { t: OnnxTensor; original: Float64Array; values: Float64Array; written: Uint8Array }
  >();
  const constants = new Map<string, OnnxTensor>(m.graph.initializer.map((t) => [t.name ?? '', t]));
  for (const n of m.graph.node)
    if (n.op_type === 'Constant' && n.output[0]) {
      const v = (n.attribute ?? []).find((a) => a.name === 'value')?.t;
      if (v) constants.set(n.output[0], v);
    }
  const cannot = (n: GraphNode, why: string): never => {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `the fine-tuned weights of '${n.layer}' cannot be written into ${path.basename(model.path)}: ${why}`,
      'export without --finetune-epochs, or use the fine-tuned polynomials in report.json (finetune.layers) with your own training code',
    );
  };
  const entry = (n: GraphNode, name: string) => {
    let e = entries.get(name);
    if (!e) {
      const t = constants.get(name);
      if (!t) return cannot(n, `its constant '${name}' is not an initializer or a Constant node`);
      if ((t.data_type ?? DT.FLOAT) !== DT.FLOAT || t.data_location === 1)
        cannot(n, `its constant '${name}' is not float32 stored in the model`);
      const original = tensorValues(t, dir, model.path).data;
      e = { t, original, values: Float64Array.from(original), written: new Uint8Array(original.length) };
      entries.set(name, e);
    }
    return e;
  };
  const put = (
    n: GraphNode,
    what: string,
    source: ParamSource | undefined,
    loaded: Float32Array,
    value: ArrayLike<number>,
  ) => {
    if (!source) return cannot(n, `its ${what} was not read from one constant`);
    const e = entry(n, source.name);
    for (let i = 0; i < loaded.length; i++) {
      const j = source.index[i];
      if (Math.fround(source.scale * e.original[j]) !== loaded[i])
        cannot(n, `its ${what} was computed from '${source.name}', not read from it`);
      const v = value[i] / source.scale;
      if (e.written[j] && e.values[j] !== v)
        cannot(n, `'${source.name}' holds one value for several of its ${what}'s (shared or broadcast)`);
      e.values[j] = v;
      e.written[j] = 1;
    }
  };
  model.graph.nodes.forEach((n, i) => {
    const s = n.spec;
    const t = tuned.nodes[i].spec;
    if ((s.op === 'dense' || s.op === 'conv2d') && (t.op === 'dense' || t.op === 'conv2d')) {
      if (s.kernel.some((v, k) => v !== t.kernel[k])) put(n, 'kernel', s.kernelSource, s.kernel, t.kernel);
      if (s.bias && t.bias && s.bias.some((v, k) => v !== t.bias![k])) put(n, 'bias', s.biasSource, s.bias, t.bias);
    } else if (
      s.op === 'batchnorm' &&
      t.op === 'batchnorm' &&
      (s.scale.some((v, k) => v !== t.scale[k]) || s.shift.some((v, k) => v !== t.shift[k]))
    ) {
      const b = s.source ?? cannot(n, 'it is not a BatchNormalization node');
      const mean = entry(n, b.mean).original;
      const variance = entry(n, b.variance).original;
      const gamma = entry(n, b.gamma);
      const beta = entry(n, b.beta);
      t.scale.forEach((v, c) => {
        gamma.values[c] = v * Math.sqrt(variance[c] + b.eps);
        beta.values[c] = t.shift[c] + mean[c] * v;
      });
    }
  });
  for (const e of entries.values()) {
    const f = Float32Array.from(e.values);
    e.t.raw_data = new Uint8Array(f.buffer);
    delete e.t.float_data;
  }
  return { ...model, onnx: { ...src, model: m } };
}
