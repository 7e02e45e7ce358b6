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
import type { OnnxPoolSite } from '../model/formats/onnx/context';
import { OnnxNode, OnnxTensor, encodeModel, floatTensor, int64Tensor } from '../model/formats/onnx/proto';
import type { Graph } from '../model/graph';
import { Report } from '../report';

type Layer = Report['layers'][number];

/** Nodes and initializers computing `out` = the layer's polynomial of `x`. */
function polynomialNodes(
  l: Layer,
  x: string,
  out: string,
  channelAxis: number,
  rank: number,
  prefix: string,
): { nodes: OnnxNode[]; inits: OnnxTensor[] } {
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
    if (off) {
      nodes.push({
        name: `${prefix}/offset`,
        op_type: 'Sub',
        input: [y, tensor(alongChannels(off.length), off)],
        output: [out],
        attribute: [],
      });
      return;
    }
    nodes.push({ name: `${prefix}/out`, op_type: 'Identity', input: [y], output: [out], attribute: [] });
  };
  if (K === 1) {
    finish(op('Add', op('Mul', x, scalar(0)), constant(coef(0))));
    return { nodes, inits };
  }
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

/**
 * Nodes and initializers computing a max pooling's output as its tree of pairwise maxima
 * (model/maxTree.ts), each |x| its layer's polynomial: edge padding (Pad mode 'edge'), then per
 * step two Slices of the value along the step's axis, their difference through the polynomial and
 * m = (a + b) * 0.5 + p(a - b) * 0.5, then the stride (Slice with steps). ONNX opset 11 or later.
 */
function maxTreeNodes(
  pool: string,
  steps: Layer[],
  site: OnnxPoolSite,
  g: Graph,
  opset: number,
): { nodes: OnnxNode[]; inits: OnnxTensor[] } {
  if (opset < 11)
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `exporting max pooling '${pool}' as polynomials needs ONNX opset 11 or later; the model has opset ${opset}`,
      're-export the model with opset_version=13',
    );
  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const prefix = `he_approx/${pool.replace(/^\//, '')}`;
  let t = 0;
  const name = () => `${prefix}/t${t++}`;
  const ints = (vals: number[]) => {
    const n = name();
    inits.push(int64Tensor(n, [vals.length], vals));
    return n;
  };
  const half = (() => {
    const n = `${prefix}/half`;
    inits.push(floatTensor(n, [], [0.5]));
    return n;
  })();
  const op = (type: string, ins: string[], out = name(), attribute: OnnxNode['attribute'] = []) => {
    nodes.push({ name: out, op_type: type, input: ins, output: [out], attribute });
    return out;
  };
  const byName = new Map(g.nodes.map((n) => [n.name, n]));
  const axisOf = (a: 'height' | 'width') => (a === 'height' ? site.axes.h : site.axes.w);
  let x = site.input;
  const pad = byName.get(`${pool}/pad`);
  if (pad && pad.spec.op === 'pad') {
    const p = pad.spec.pads;
    const pads = new Array<number>(2 * site.rank).fill(0);
    pads[site.axes.h] = p[0][0];
    pads[site.axes.w] = p[1][0];
    pads[site.rank + site.axes.h] = p[0][1];
    pads[site.rank + site.axes.w] = p[1][1];
    x = op('Pad', [x, ints(pads)], name(), [{ name: 'mode', type: 3, s: new TextEncoder().encode('edge') }]);
  }
  steps.forEach((l) => {
    const node = byName.get(l.name)!;
    const ax = axisOf(l.maxTree!.axis);
    const o = l.maxTree!.offset;
    const len = node.shape[l.maxTree!.axis === 'height' ? 0 : 1];
    const a = op('Slice', [x, ints([0]), ints([len]), ints([ax])]);
    const b = op('Slice', [x, ints([o]), ints([len + o]), ints([ax])]);
    const d = op('Sub', [a, b]);
    const pOut = name();
    const p = polynomialNodes(l, d, pOut, site.axes.c, site.rank, `${prefix}/${l.maxTree!.axis}${l.maxTree!.step}`);
    nodes.push(...p.nodes);
    inits.push(...p.inits);
    x = op('Add', [op('Mul', [op('Add', [a, b]), half]), op('Mul', [pOut, half])]);
  });
  const stride = byName.get(`${pool}/stride`);
  if (stride && stride.spec.op === 'slice') {
    const sp = stride.spec;
    x = op('Slice', [
      x,
      ints([0, 0]),
      ints([sp.end[0], sp.end[1]]),
      ints([site.axes.h, site.axes.w]),
      ints([sp.step[0], sp.step[1]]),
    ]);
  }
  nodes.push({ name: `${prefix}/out`, op_type: 'Identity', input: [x], output: [site.output], attribute: [] });
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
    if (l.maxTree) continue; // a max pooling's |x|: with its tree, below
    const site = src.activations[l.name];
    if (!site) {
      throw new UserError(
        'OPTION_INVALID',
        `the report's activation ${l.name} is not in ${model.path}`,
        'analyse this model again, then export',
      );
    }
    const prefix = `he_approx/${l.name.replace(/^\//, '')}`;
    const p = polynomialNodes(l, site.input, site.output, site.channelAxis, site.rank, prefix);
    site.nodes.forEach((i) => removed.add(i));
    replaced.set(Math.min(...site.nodes), { nodes: p.nodes });
    g.initializer.push(...p.inits);
  }
  for (const pool of report.maxPooling?.pools ?? []) {
    const site = src.pools[pool.pool];
    if (!site)
      throw new UserError(
        'OPTION_INVALID',
        `the report's max pooling ${pool.pool} is not in ${model.path}`,
        'analyse this model again, then export',
      );
    const t = maxTreeNodes(
      pool.pool,
      report.layers.filter((l) => l.maxTree?.pool === pool.pool),
      site,
      model.graph,
      src.opset,
    );
    site.nodes.forEach((i) => removed.add(i));
    replaced.set(Math.min(...site.nodes), { nodes: t.nodes });
    g.initializer.push(...t.inits);
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
  m.doc_string =
    `Approximated by he-approx ${report.tool.version}: every activation replaced by its Chebyshev polynomial, every max pooling by its tree of polynomial pairwise maxima (see coefficients.json). Original producer: ${src.model.producer_name ?? '?'} ${src.model.producer_version ?? ''}`.trim();
  return encodeModel(m);
}
