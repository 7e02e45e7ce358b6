/**
 * Writes the analysis outputs: the report, a coefficients file, and the approximated model in
 * the user's format: a TensorFlow.js model in which every approximated activation is an
 * `HEPolyActivation` layer (from tfjs and Keras models), or an ONNX model in which it is plain
 * ONNX arithmetic (from ONNX models; onnxExport.ts).
 * Never overwrites a file unless asked to, and never the input model's own files.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { LoadedModel, modelFilePath, modelFormatOf } from '../model/load';
import { Report } from '../report';
import { approximatedOnnx } from './onnxExport';
import { POLY_LAYER_CLASS, PolyLayerConfig } from './polyLayer';

export const COEFFICIENTS_SCHEMA = 'he-approx/coefficients';

/** A layer's per-channel polynomials as both output files write them, or null. */
function channelsConfig(l: Report['layers'][number]): { interval: [number, number]; coefficients: number[] }[] | null {
  const ch = l.chosen.channels;
  return ch ? ch.coeffs.map((c, k) => ({ interval: [ch.intervals[k].a, ch.intervals[k].b], coefficients: c })) : null;
}

export function coefficientsFile(report: Report): unknown {
  return {
    schema: COEFFICIENTS_SCHEMA, version: 2,
    model: report.model.path, createdAt: report.createdAt,
    evaluation: 'p(x) = sum_k coefficients[k] * T_k(t), t = (2x - a - b) / (b - a), with interval [a, b] and coefficients of the layer, or of channels[c] for channel c (last axis) when channels is not null; then subtract channel_offset[c] if present',
    layers: report.layers.map((l) => ({
      name: l.name, layer: l.layer, activation: l.activation, basis: 'chebyshev',
      // Per-channel layers have no layer-wide polynomial here, so that no reader uses a wrong one.
      interval: l.chosen.channels ? null : [l.chosen.interval.a, l.chosen.interval.b],
      coefficients: l.chosen.channels ? null : l.chosen.coeffs,
      channels: channelsConfig(l),
      degree: l.chosen.degree, depth: l.chosen.depth, polyDepth: l.chosen.polyDepth,
      affineLevel: l.chosen.affineLevel, nonScalarMults: l.chosen.nonScalarMults, channel_offset: l.chosen.channelOffset, method: l.chosen.method,
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
    name, basis: 'chebyshev', interval: [l.chosen.interval.a, l.chosen.interval.b], coefficients: l.chosen.coeffs,
    channel_offset: l.chosen.channelOffset, replaces: l.activation, degree: l.chosen.degree,
    channels: channelsConfig(l),
  });
  const isSeq = topo.class_name === 'Sequential';
  const layers: Cfg[] = isSeq ? (Array.isArray(topo.config) ? topo.config : topo.config.layers) : topo.config.layers;
  const out: Cfg[] = [];
  const renames = new Map<string, string>();
  for (const layer of layers) {
    const name = layer.config?.name ?? layer.name;
    const fused = byNode.get(`${name}/activation`);
    const standalone = byNode.get(name);
    if (standalone) {
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyCfg(standalone, name) } } as Cfg;
      if (layer.config?.batch_input_shape) poly.config.batch_input_shape = layer.config.batch_input_shape;
      if (!isSeq) { poly.name = name; poly.inbound_nodes = layer.inbound_nodes; }
      out.push(poly);
      continue;
    }
    out.push(layer);
    if (fused) {
      layer.config.activation = 'linear';
      const pname = `${name}_hepoly`;
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyCfg(fused, pname) } } as Cfg;
      if (!isSeq) { poly.name = pname; poly.inbound_nodes = [[[name, 0, 0, {}]]]; renames.set(name, pname); }
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
  if (isSeq) { if (Array.isArray(topo.config)) topo.config = out; else topo.config.layers = out; } else topo.config.layers = out;
  return topo;
}

export interface WrittenFiles {
  report: string;
  coefficients: string;
  /** The approximated model: model/model.json (tfjs, from tfjs and Keras models) or model.onnx (from ONNX models). */
  model: string;
  /** Its weight file (tfjs only). */
  weights: string | null;
}

/** Keras regularizers and constraints that TensorFlow.js cannot deserialise from Keras 2 files; inference does not use them. */
const TRAINING_ONLY = ['kernel_regularizer', 'bias_regularizer', 'activity_regularizer', 'depthwise_regularizer', 'beta_regularizer', 'gamma_regularizer',
  'kernel_constraint', 'bias_constraint', 'depthwise_constraint', 'beta_constraint', 'gamma_constraint'];

function tfjsModelJson(model: LoadedModel, report: Report): { json: unknown; weights: Buffer } {
  const k = model.keras!;
  const topology = approximatedTopology(model, report);
  const layers: Cfg[] = Array.isArray(topology.config) ? topology.config : topology.config.layers ?? [];
  for (const l of layers) for (const key of TRAINING_ONLY) if (l.config && key in l.config) l.config[key] = null;
  // Keras files name weights 'layer/kernel:0'; tfjs matches 'layer/kernel'.
  const weightSpecs = k.weights.map((w) => ({ name: w.name.replace(/:\d+$/, ''), shape: w.shape, dtype: 'float32' }));
  const all = new Float32Array(k.weights.reduce((s, w) => s + w.data.length, 0));
  let off = 0;
  for (const w of k.weights) { all.set(w.data, off); off += w.data.length; }
  const modelTopology = k.layout === 'converter'
    ? { ...k.modelTopology, model_config: topology }
    : { ...k.modelTopology, class_name: topology.class_name, config: topology.config };
  const json = {
    format: 'layers-model', generatedBy: `he-approx ${report.tool.version}`, convertedBy: null,
    modelTopology, weightsManifest: [{ paths: ['weights.bin'], weights: weightSpecs }],
    heApprox: { note: `Load after registering the ${POLY_LAYER_CLASS} layer (require('he-approx').registerPolyLayer()).`, report: '../report.json' },
  };
  return { json, weights: Buffer.from(all.buffer) };
}

/**
 * The files `writeOutputs` would write under `dir` for this model, after checking that it may:
 * `dir` is not a file, none of them lands in the input model's folder, none exists unless
 * `force`, and the nearest existing folder on the way is writable. Hosts call it before the
 * analysis starts, so that a bad --out fails in a second, not after minutes of work.
 */
export function checkOutputs(dir: string, modelArg: string, force: boolean): WrittenFiles {
  const abs = path.resolve(dir);
  const modelPath = modelFilePath(modelArg);
  const onnx = modelFormatOf(modelPath) === 'onnx';
  const files: WrittenFiles = {
    report: path.join(abs, 'report.json'), coefficients: path.join(abs, 'coefficients.json'),
    model: onnx ? path.join(abs, 'model.onnx') : path.join(abs, 'model', 'model.json'), weights: onnx ? null : path.join(abs, 'model', 'weights.bin'),
  };
  const inputDir = path.dirname(modelPath);
  if (fs.existsSync(abs) && !fs.statSync(abs).isDirectory()) {
    throw new UserError('OUTPUT_EXISTS', `--out ${dir} is a file, not a folder`, 'choose a folder name for --out');
  }
  for (const f of Object.values(files)) {
    if (!f) continue;
    if (path.resolve(f) === modelPath || path.dirname(f) === inputDir) {
      throw new UserError('OUTPUT_EXISTS', `--out ${dir} would write ${path.basename(f)} into the input model's folder`, 'choose another --out folder');
    }
    if (fs.existsSync(f) && !force) {
      throw new UserError('OUTPUT_EXISTS', `${f} already exists`, 'choose another --out folder, or pass --force to overwrite he-approx outputs');
    }
    if (fs.existsSync(f) && fs.statSync(f).isDirectory()) {
      throw new UserError('OUTPUT_EXISTS', `${f} is a folder, where he-approx writes a file`, 'choose another --out folder');
    }
  }
  let existing = abs;
  while (!fs.existsSync(existing)) existing = path.dirname(existing);
  if (!fs.statSync(existing).isDirectory()) {
    throw new UserError('OUTPUT_EXISTS', `--out ${dir}: ${existing} is a file, not a folder`, 'choose a --out path whose parent folders are folders');
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK);
  } catch {
    throw new UserError('OUTPUT_EXISTS', `--out ${dir}: ${existing} is not writable`, 'choose a --out folder you can write to');
  }
  return files;
}

/** Writes everything under `dir` (checked again by checkOutputs); refuses to overwrite existing files unless `force`. */
export function writeOutputs(dir: string, model: LoadedModel, report: Report, force: boolean): WrittenFiles {
  const files = checkOutputs(dir, model.path, force);
  const onnx = !!model.onnx;
  fs.mkdirSync(path.dirname(files.model), { recursive: true });
  if (onnx) {
    fs.writeFileSync(files.model, approximatedOnnx(model, report));
  } else {
    const { json, weights } = tfjsModelJson(model, report);
    fs.writeFileSync(files.weights!, weights);
    fs.writeFileSync(files.model, JSON.stringify(json));
  }
  fs.writeFileSync(files.coefficients, JSON.stringify(coefficientsFile(report), null, 2) + '\n');
  fs.writeFileSync(files.report, JSON.stringify(report, null, 2) + '\n');
  return files;
}
