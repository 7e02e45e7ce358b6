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
import { sealReport } from '../reportCheck';
import type { FinetunedModel } from '../finetune/finetune';
import type { LoadedModel } from '../model/load';
import { unitMap } from '../numerics/chebyshev';
import { Report, polysFromReport } from '../report';
import { approximatedOnnx } from './onnxExport';
import { finetunedOnnxModel, finetunedReport, finetunedWeights } from './finetuned';
import { WrittenFiles, checkOutputs, writeOut } from './outputs';
import { POLY_LAYER_CLASS, POLY_MAXPOOL_CLASS, PolyLayerConfig, PolyMaxPoolConfig } from './polyLayer';

export { checkOutputs };
export type { WrittenFiles };

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

/** An HEPolyActivation layer's config for a report layer's chosen polynomial. */
function polyConfig(l: Report['layers'][number], name: string): PolyLayerConfig & { name: string } {
  return {
    name,
    basis: 'chebyshev',
    interval: [l.chosen.interval.a, l.chosen.interval.b],
    coefficients: l.chosen.coeffs,
    channel_offset: l.chosen.channelOffset,
    replaces: l.activation,
    degree: l.chosen.degree,
    channels: channelsConfig(l),
  };
}

/** Max poolings become HEPolyMaxPooling2D layers: their trees with each step's |x| polynomial. */
function poolConfig(
  model: LoadedModel,
  report: Report,
  pool: NonNullable<Report['maxPooling']>['pools'][number],
  name: string,
): PolyMaxPoolConfig & { name: string } {
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
      poly: polyConfig(l, `${name}_${l.maxTree!.axis}${l.maxTree!.step}`),
    })),
    strides: stride && stride.spec.op === 'slice' ? [stride.spec.step[0], stride.spec.step[1]] : [1, 1],
    output: stride ? [stride.shape[0], stride.shape[1]] : [last.shape[0], last.shape[1]],
    global: pool.className === 'GlobalMaxPooling2D',
    replaces: pool.className,
  };
}

/** Rewrites the Keras topology: each approximated activation becomes an HEPolyActivation layer. */
export function approximatedTopology(model: LoadedModel, report: Report): { class_name: string; config: Cfg } {
  if (!model.keras) throw new Error('approximatedTopology needs a Keras topology');
  const topo = JSON.parse(JSON.stringify(model.keras.topology)) as { class_name: string; config: Cfg };
  const byNode = new Map(report.layers.map((l) => [l.name, l]));
  const pools = new Map((report.maxPooling?.pools ?? []).map((p) => [p.layer, p]));
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
      const layerCfg = { class_name: POLY_MAXPOOL_CLASS, config: { ...poolConfig(model, report, pool, name) } } as Cfg;
      if (layer.config?.batch_input_shape) layerCfg.config.batch_input_shape = layer.config.batch_input_shape;
      if (!isSeq) {
        layerCfg.name = name;
        layerCfg.inbound_nodes = layer.inbound_nodes;
      }
      out.push(layerCfg);
      continue;
    }
    if (standalone) {
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyConfig(standalone, name) } } as Cfg;
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
      const poly = { class_name: POLY_LAYER_CLASS, config: { ...polyConfig(fused, pname) } } as Cfg;
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
 * Writes everything under `dir` (checked again by checkOutputs); refuses to overwrite existing
 * files unless `force`. With a kept fine-tuning (`finetuned`, from AnalyzeOptions.onFinetuned),
 * also finetuned/: the approximated model with the fine-tuned weights and polynomials, in the
 * same format, and its coefficients; the report records where (report.finetune.exported).
 */
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
