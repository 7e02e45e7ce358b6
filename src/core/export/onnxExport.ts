/**
 * The approximated model as ONNX, for models that came as ONNX: the user's own graph with each
 * approximated activation's nodes (one Relu, or the several of a fused GELU pattern) replaced
 * by plain ONNX arithmetic that evaluates the chosen polynomial, so that any ONNX runtime runs
 * it. The polynomial is evaluated with Clenshaw's recurrence in the Chebyshev basis, as the
 * executor does (numerics/chebyshev.ts): t = scale * x + shift, b_k = 2 t b_{k+1} - b_{k+2} + c_k,
 * p = t b_1 - b_2 + c_0; per-channel polynomials use coefficient tensors that broadcast along the
 * channel axis ([C, 1, 1] for NCHW). Everything else in the model is kept byte for byte.
 */
import { UserError } from '../errors';
import type { LoadedModel } from '../model/load';
import { unitMap } from '../numerics/chebyshev';
import { OnnxNode, OnnxTensor, encodeModel, floatTensor } from '../model/formats/onnx/proto';
import { Report } from '../report';

type Layer = Report['layers'][number];

/** Nodes and initializers computing `out` = the layer's polynomial of `x`. */
function polynomialNodes(l: Layer, x: string, out: string, channelAxis: number, rank: number, prefix: string): { nodes: OnnxNode[]; inits: OnnxTensor[] } {
  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const ch = l.chosen.channels;
  const C = ch ? ch.coeffs.length : 1;
  // Per-channel values broadcast along channelAxis: shape [n, 1, ..., 1] (rank - 1 - axis ones).
  const alongChannels = (n: number) => [n, ...new Array(rank - 1 - channelAxis).fill(1)];
  let k = 0;
  const tensor = (dims: number[], vals: number[]): string => {
    const name = `${prefix}/c${k++}`;
    inits.push(floatTensor(name, dims, vals));
    return name;
  };
  const constant = (vals: number[]) => tensor(ch ? alongChannels(C) : [], vals);
  const scalar = (v: number) => tensor([], [v]);
  let t = 0;
  const op = (type: string, a: string, b: string, name = `${prefix}/t${t++}`): string => {
    nodes.push({ name, op_type: type, input: [a, b], output: [name], attribute: [] });
    return name;
  };
  const maps = ch ? ch.intervals.map(unitMap) : [unitMap(l.chosen.interval)];
  const coef = (j: number) => (ch ? ch.coeffs.map((c) => c[j]) : [l.chosen.coeffs[j]]);
  const K = ch ? ch.coeffs[0].length : l.chosen.coeffs.length;
  const off = l.chosen.channelOffset;
  const finish = (y: string): void => {
    // The last node writes the activation's own output name, so that its consumers are unchanged.
    // The mean-shift offset is per channel even when the polynomial is one per layer.
    if (off) { nodes.push({ name: `${prefix}/offset`, op_type: 'Sub', input: [y, tensor(alongChannels(off.length), off)], output: [out], attribute: [] }); return; }
    nodes.push({ name: `${prefix}/out`, op_type: 'Identity', input: [y], output: [out], attribute: [] });
  };
  if (K === 1) { finish(op('Add', op('Mul', x, scalar(0)), constant(coef(0)))); return { nodes, inits }; }
  const tt = op('Add', op('Mul', x, constant(maps.map((m) => m.scale))), constant(maps.map((m) => m.shift)));
  const t2 = op('Mul', tt, scalar(2));
  // Clenshaw from the top: b_{K-1} = c_{K-1}, b_K = 0.
  let b1 = constant(coef(K - 1));
  let b2: string | null = null;
  for (let j = K - 2; j >= 1; j--) {
    let v = op('Mul', t2, b1);
    if (b2) v = op('Sub', v, b2);
    const b0 = op('Add', v, constant(coef(j)));
    b2 = b1;
    b1 = b0;
  }
  let y = op('Mul', tt, b1);
  if (b2) y = op('Sub', y, b2);
  finish(op('Add', y, constant(coef(0))));
  return { nodes, inits };
}

/** The approximated ONNX model's bytes. */
export function approximatedOnnx(model: LoadedModel, report: Report): Uint8Array {
  const src = model.onnx;
  if (!src) throw new Error('approximatedOnnx needs an ONNX model');
  const m = structuredClone(src.model);
  const g = m.graph;
  const replaced = new Map<number, { nodes: OnnxNode[] }>();
  const removed = new Set<number>();
  for (const l of report.layers) {
    const site = src.activations[l.name];
    if (!site) {
      throw new UserError('OPTION_INVALID', `the report's activation ${l.name} is not in ${model.path}`, 'analyse this model again, then export');
    }
    const prefix = `he_approx/${l.name.replace(/^\//, '')}`;
    const p = polynomialNodes(l, site.input, site.output, site.channelAxis, site.rank, prefix);
    site.nodes.forEach((i) => removed.add(i));
    replaced.set(Math.min(...site.nodes), { nodes: p.nodes });
    g.initializer.push(...p.inits);
  }
  const nodes: OnnxNode[] = [];
  g.node.forEach((n, i) => {
    const r = replaced.get(i);
    if (r) nodes.push(...r.nodes);
    if (!removed.has(i)) nodes.push(n);
  });
  // Constants only the replaced nodes read (GELU's sqrt 2, ...) go too, so runtimes do not warn.
  const read = new Set(nodes.flatMap((n) => n.input).concat(g.output.map((o) => o.name)));
  g.node = nodes.filter((n) => n.op_type !== 'Constant' || n.output.some((o) => read.has(o)));
  g.initializer = g.initializer.filter((t) => read.has(t.name ?? ''));
  m.producer_name = 'he-approx';
  m.producer_version = report.tool.version;
  m.doc_string = `Approximated by he-approx ${report.tool.version}: every activation replaced by its Chebyshev polynomial (see coefficients.json). Original producer: ${src.model.producer_name ?? '?'} ${src.model.producer_version ?? ''}`.trim();
  return encodeModel(m);
}
