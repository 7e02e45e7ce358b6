/**
 * ONNX models (torch.onnx.export, tf2onnx; opsets 7-22) into the he-approx graph: decode the
 * protobuf, take initializers and Constant nodes as constants, fuse activation patterns
 * (fuse.ts), fold shape arithmetic (constants.ts), convert each remaining node with the operator
 * registry (ops.ts) into channels-last graph nodes (context.ts explains the layout), then run
 * the shared clean-up and layout passes. The model's single input may have a dynamic batch
 * axis; every other axis must be fixed.
 */
import * as path from 'path';
import { UserError } from '../../../errors';
import type { LoadedModel } from '../../loaded';
import { MODEL_FILE, readUserFile } from '../../../files';
import { finishGraph, simplifyLayout } from '../../passes';
import { FOLDABLE, constantNode, foldNode } from './constants';
import {
  ImportContext,
  OnnxActivationSite,
  OnnxPoolSite,
  OnnxSource,
  channelsLast,
  identityPerm,
  nodeName,
} from './context';

export type { OnnxSource };
import { FusedNode, fusePatterns } from './fuse';
import { CONVERTERS, UNSUPPORTED_HINTS } from './ops';
import { Attrs, decodeModel, tensorValues } from './proto';

const MIN_OPSET = 1;
const MAX_OPSET = 22;
/** Ops that do not change the layout question for the model input (normalisation and the like). */
const LAYOUT_NEUTRAL = new Set(['Sub', 'Div', 'Mul', 'Add', 'Identity', 'Cast', 'Relu', 'HeActivation', 'Clip']);
const SPATIAL = new Set([
  'Conv',
  'AveragePool',
  'MaxPool',
  'GlobalAveragePool',
  'GlobalMaxPool',
  'BatchNormalization',
  'Pad',
]);

/** The data input (the one graph input that is not an initializer): floating point, every axis but the batch fixed. */
function dataInput(g: ReturnType<typeof decodeModel>['graph'], base: string) {
  const inits = new Set(g.initializer.map((t) => t.name ?? ''));
  const dataInputs = g.input.filter((i) => !inits.has(i.name));
  if (dataInputs.length !== 1 || g.output.length !== 1) {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base} has ${dataInputs.length} inputs and ${g.output.length} outputs`,
      'he-approx supports models with one input and one output',
    );
  }
  const inp = dataInputs[0];
  const tt = inp.type?.tensor_type;
  if (tt?.elem_type !== undefined && ![1, 10, 11].includes(tt.elem_type)) {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base}: input '${inp.name}' has ONNX type ${tt.elem_type}, not floating point`,
      'export a model that takes float32 input',
    );
  }
  const dims = (tt?.shape?.dim ?? []).map((d) => (d.dim_value ? Number(d.dim_value) : null));
  if (dims.length < 2 || dims.slice(1).some((d) => d === null || d <= 0)) {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base}: input '${inp.name}' has shape [${(tt?.shape?.dim ?? []).map((d) => d.dim_param ?? d.dim_value ?? '?')}]; every axis but the batch must be fixed`,
      'export with a fixed input size (dynamic_axes only on the batch axis)',
    );
  }
  return { inp, dims };
}

/** The graph output's value: produced by a node, and depending on the input. */
function outputValue(ctx: ImportContext, outName: string, base: string) {
  const out = ctx.values.get(outName);
  if (!out)
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base}: no node produces the output '${outName}'`,
      're-export the model; its graph is inconsistent',
    );
  if (out.kind !== 'act')
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base}: the output '${outName}' does not depend on the input`,
      'export the trained model, not a constant graph',
    );
  return out;
}

export function loadOnnx(file: string): LoadedModel {
  const base = path.basename(file);
  const model = decodeModel(readUserFile(file, MODEL_FILE), base);
  const g = model.graph;
  const opsetEntry = model.opset_import.find((o) => !o.domain || o.domain === 'ai.onnx');
  const opset = Number(opsetEntry?.version ?? 0);
  if (opset < MIN_OPSET || opset > MAX_OPSET) {
    throw new UserError(
      'MODEL_UNSUPPORTED',
      `${base} uses ONNX opset ${opset || 'none'}; he-approx reads opsets ${MIN_OPSET}-${MAX_OPSET}`,
      'export with opset 13 (torch.onnx.export(..., opset_version=13)) or convert it with onnx.version_converter',
    );
  }
  const foreign = g.node.find((n) => n.domain && n.domain !== 'ai.onnx');
  if (foreign) {
    throw new UserError(
      'LAYER_UNKNOWN',
      `${base}: node '${nodeName(foreign)}' is ${foreign.op_type} from the custom domain '${foreign.domain}'`,
      'export the plain model (no onnxruntime or vendor fusions), e.g. straight from torch.onnx.export',
    );
  }
  const dir = path.dirname(file);
  const uses = new Map<string, number>();
  for (const n of g.node) for (const i of n.input) if (i) uses.set(i, (uses.get(i) ?? 0) + 1);
  for (const o of g.output) uses.set(o.name, (uses.get(o.name) ?? 0) + 1);

  const { inp, dims } = dataInput(g, base);
  const modelShape = dims.slice(1) as number[];
  const fixedBatch = dims[0];

  // Initializers and Constant nodes, decoded once: the pattern fusion reads their scalars.
  const ctx = new ImportContext(base, opset, dir, uses, fixedBatch);
  for (const t of g.initializer) {
    const v = tensorValues(t, dir, base);
    ctx.values.set(t.name ?? '', { kind: 'const', c: { dims: v.dims, data: v.data } });
  }
  for (const n of g.node)
    if (n.op_type === 'Constant') ctx.values.set(n.output[0], { kind: 'const', c: constantNode(n, dir, base) });
  const scalarOf = (name: string) => {
    const v = ctx.values.get(name);
    return v?.kind === 'const' && v.c.data.length === 1 ? v.c.data[0] : undefined;
  };
  const nodes = fusePatterns(g.node, scalarOf);

  // Channels last for an image input that flows into convolutions; ONNX order otherwise.
  const perm =
    modelShape.length === 3 && feedsSpatial(nodes, inp.name) ? channelsLast(3) : identityPerm(modelShape.length);
  const physShape = perm.map((a) => modelShape[a]);
  const inputId = ctx.add(
    { name: inp.name, op_type: 'Input', input: [], output: [inp.name], attribute: [] },
    { op: 'input' },
    physShape,
    [],
  );
  ctx.nodes[inputId].className = 'InputLayer';
  ctx.values.set(inp.name, { kind: 'act', id: inputId, perm });

  for (const n of nodes) convertNode(ctx, n);

  const outName = g.output[0].name;
  const out = outputValue(ctx, outName, base);
  const outFused: FusedNode = { name: 'output', op_type: 'Output', input: [outName], output: [outName], attribute: [] };
  const outVal = ctx.toPerm(outFused, out, identityPerm(out.perm.length));
  const graph = simplifyLayout(
    finishGraph(g.name || path.basename(file, '.onnx'), ctx.nodes, inputId, outVal.id, ctx.notes),
  );
  if (perm.some((p, i) => p !== i)) graph.inputLayout = { name: 'NCHW', modelShape, perm };
  const kept = new Set(graph.nodes.map((x) => x.name));
  const activations: Record<string, OnnxActivationSite> = {};
  for (const [name, site] of ctx.sites) if (kept.has(name)) activations[name] = site;
  const pools: Record<string, OnnxPoolSite> = {};
  for (const [name, site] of ctx.poolSites) if (kept.has(name)) pools[name] = site;
  return {
    path: file,
    format: 'onnx',
    graph,
    onnx: { model, opset, inputName: inp.name, outputName: outName, activations, pools },
  };
}

function feedsSpatial(nodes: FusedNode[], input: string): boolean {
  const frontier = [input];
  const seen = new Set<string>();
  while (frontier.length) {
    const t = frontier.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    for (const n of nodes) {
      if (!n.input.includes(t)) continue;
      if (SPATIAL.has(n.op_type)) return true;
      if (LAYOUT_NEUTRAL.has(n.op_type)) frontier.push(...n.output);
    }
  }
  return false;
}

function convertNode(ctx: ImportContext, n: FusedNode): void {
  const at = new Attrs(n);
  if (n.op_type === 'Constant') return; // decoded before fusion (loadOnnx)
  const ins = n.input.map((name) => (name ? ctx.values.get(name) : undefined));
  const allConst = n.input.every((name, i) => !name || ins[i]?.kind === 'const');
  if (
    FOLDABLE.has(n.op_type) &&
    allConst &&
    (n.op_type === 'ConstantOfShape' || n.op_type === 'Range' || ins.some((v) => v))
  ) {
    const c = foldNode(
      n,
      ins.map((v) => (v && v.kind === 'const' ? v.c : undefined)),
      ctx.opset,
      ctx.model,
    );
    ctx.values.set(n.output[0], { kind: 'const', c });
    return;
  }
  const conv = CONVERTERS[n.op_type];
  if (!conv) {
    const hint = UNSUPPORTED_HINTS[n.op_type];
    ctx.fail(
      n,
      'is not supported',
      hint ??
        `he-approx supports ${Object.keys(CONVERTERS)
          .filter((k) => k !== 'HeActivation')
          .join(', ')} (plus constant shape arithmetic); replace it, or re-export with opset 13`,
      'LAYER_UNKNOWN',
    );
  }
  const outs = conv(ctx, n, at);
  outs.forEach((v, i) => {
    if (n.output[i]) ctx.values.set(n.output[i], v);
  });
}
