/**
 * The fine-tuned approximated model for export: the report with the fine-tuned polynomials, and
 * the fine-tuned weights written back where the model file keeps them (Keras weights, ONNX
 * constants), refusing any weight that has no single place to go.
 */
import * as path from 'path';
import { UserError } from '../errors';
import { Graph, GraphNode, ParamSource } from '../model/graph';
import { kerasWeight } from '../model/formats/kerasTopology';
import { DT, OnnxTensor, tensorValues } from '../model/formats/onnx/proto';
import type { LoadedModel } from '../model/load';
import type { NamedWeight } from '../model/weights';
import type { Report } from '../report';

/** The report with every layer's polynomial replaced by its fine-tuned one (same degree and intervals). */
export function finetunedReport(report: Report): Report {
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
export function finetunedWeights(model: LoadedModel, tuned: Graph): NamedWeight[] {
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
export function finetunedOnnxModel(model: LoadedModel, tuned: Graph): LoadedModel {
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
