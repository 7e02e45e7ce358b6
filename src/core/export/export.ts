/**
 * Writes the analysis outputs: the report, a coefficients file, and an approximated
 * TensorFlow.js model in which every approximated activation is an `HEPolyActivation` layer.
 * Never overwrites a file unless asked to, and never the input model's own files.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { LoadedModel } from '../model/load';
import { Report } from '../report';
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
  const topo = JSON.parse(JSON.stringify(model.topology)) as { class_name: string; config: Cfg };
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

export interface WrittenFiles { report: string; coefficients: string; model: string; weights: string }

/** Writes everything under `dir`; refuses to overwrite existing files unless `force`. */
export function writeOutputs(dir: string, model: LoadedModel, report: Report, force: boolean): WrittenFiles {
  const abs = path.resolve(dir);
  const files: WrittenFiles = {
    report: path.join(abs, 'report.json'), coefficients: path.join(abs, 'coefficients.json'),
    model: path.join(abs, 'model', 'model.json'), weights: path.join(abs, 'model', 'weights.bin'),
  };
  const inputDir = path.dirname(model.path);
  for (const f of Object.values(files)) {
    if (path.dirname(f) === inputDir) {
      throw new UserError('OUTPUT_EXISTS', `--out ${dir} would write ${path.basename(f)} into the input model's folder`, 'choose another --out folder');
    }
    if (fs.existsSync(f) && !force) {
      throw new UserError('OUTPUT_EXISTS', `${f} already exists`, 'choose another --out folder, or pass --force to overwrite he-approx outputs');
    }
  }
  fs.mkdirSync(path.join(abs, 'model'), { recursive: true });
  const topology = approximatedTopology(model, report);
  const weightSpecs = model.weights.map((w) => ({ name: w.name, shape: w.shape, dtype: 'float32' }));
  const total = model.weights.reduce((s, w) => s + w.data.length, 0);
  const all = new Float32Array(total);
  let off = 0;
  for (const w of model.weights) { all.set(w.data, off); off += w.data.length; }
  const modelTopology = model.layout === 'converter'
    ? { ...(model.json.modelTopology as Cfg), model_config: topology }
    : { ...(model.json.modelTopology as Cfg), class_name: topology.class_name, config: topology.config };
  const json = {
    format: 'layers-model', generatedBy: `he-approx ${report.tool.version}`, convertedBy: null,
    modelTopology, weightsManifest: [{ paths: ['weights.bin'], weights: weightSpecs }],
    heApprox: { note: `Load after registering the ${POLY_LAYER_CLASS} layer (require('he-approx').registerPolyLayer()).`, report: '../report.json' },
  };
  fs.writeFileSync(files.weights, Buffer.from(all.buffer));
  fs.writeFileSync(files.model, JSON.stringify(json));
  fs.writeFileSync(files.coefficients, JSON.stringify(coefficientsFile(report), null, 2) + '\n');
  fs.writeFileSync(files.report, JSON.stringify(report, null, 2) + '\n');
  return files;
}
