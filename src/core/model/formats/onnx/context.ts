/**
 * State of one ONNX import: the graph being built, the value of every ONNX tensor name, and
 * the layout bookkeeping. ONNX is NCHW; the he-approx graph is channels last. Rather than
 * transpose data at every operator, each activation tensor carries a permutation: its graph node
 * holds the tensor's per-sample axes in the order `perm` (graph axis i = ONNX per-sample axis
 * perm[i]). Conv, pooling and BatchNormalization ask for channels last ([1, 2, 0]); Flatten,
 * Reshape and the model output ask for ONNX order (the identity); a Transpose only changes the
 * permutation. A graph transpose is inserted only where a consumer needs another order, and the
 * layout pass (../../passes.ts) removes those that move no data or fold into a Dense kernel.
 */
import { UserError } from '../../../errors';
import { ActivationSpec } from '../../../numerics/activations';
import { GraphNode, Op } from '../../graph';
import { Const } from './constants';
import { FusedNode } from './fuse';
import type { Attrs, OnnxModel } from './proto';

export type Val = { kind: 'act'; id: number; perm: number[] } | { kind: 'const'; c: Const };
export type ActVal = Extract<Val, { kind: 'act' }>;

/** An operator's converter: reads its node's inputs from the context, returns its outputs' values. */
export type Converter = (c: ImportContext, n: FusedNode, at: Attrs) => Val[];
export const act = (id: number, perm: number[]): ActVal => ({ kind: 'act', id, perm });
export const ints = (k: Const) => Array.from(k.data);

/** Where an activation sits in the ONNX model, for the ONNX exporter. */
export interface OnnxActivationSite {
  /** ONNX tensors the activation reads and writes. */
  input: string;
  output: string;
  /** Indices (in graph.node) of the ONNX nodes it replaces (several for a fused pattern). */
  nodes: number[];
  /** ONNX axis (with batch) that the per-channel polynomials run along, and the tensor's rank. */
  channelAxis: number;
  rank: number;
}

/** Where a max pooling sits in the ONNX model, for the ONNX exporter (its max tree replaces it). */
export interface OnnxPoolSite {
  input: string;
  output: string;
  /** Index (in graph.node) of the MaxPool / GlobalMaxPool node. */
  nodes: number[];
  /** ONNX axes (with batch) of the height, the width and the channels, and the rank. */
  axes: { h: number; w: number; c: number };
  rank: number;
}

export const identityPerm = (k: number) => Array.from({ length: k }, (_, i) => i);
/** Channels last for an NC... tensor's per-sample axes: [1, 2, ..., k-1, 0]. */
export const channelsLast = (k: number) =>
  k <= 1 ? identityPerm(k) : [...Array.from({ length: k - 1 }, (_, i) => i + 1), 0];
export const samePerm = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
export const invertPerm = (p: number[]) => {
  const q = new Array(p.length);
  p.forEach((v, i) => {
    q[v] = i;
  });
  return q as number[];
};

export class ImportContext {
  readonly nodes: GraphNode[] = [];
  readonly values = new Map<string, Val>();
  readonly notes: string[] = [];
  readonly sites = new Map<string, OnnxActivationSite>();
  readonly poolSites = new Map<string, OnnxPoolSite>();
  private readonly names = new Set<string>();

  constructor(
    readonly model: string,
    readonly opset: number,
    readonly dir: string,
    /** How many ONNX nodes read each tensor name. */
    readonly uses: Map<string, number>,
    /** Batch size when the model's input has a fixed one (exports without dynamic axes), else null. */
    readonly fixedBatch: number | null,
  ) {}

  fail(
    n: FusedNode,
    why: string,
    fix: string,
    code: 'MODEL_UNSUPPORTED' | 'LAYER_UNKNOWN' = 'MODEL_UNSUPPORTED',
  ): never {
    throw new UserError(code, `${this.model}: ${n.op_type} node '${nodeName(n)}' ${why}`, fix);
  }

  /** The value of input i of n; a missing required input is a user error. */
  input(n: FusedNode, i: number): Val {
    const name = n.input[i];
    const v = name ? this.values.get(name) : undefined;
    if (!v)
      this.fail(
        n,
        `reads '${name ?? ''}' (input ${i}), which no node or initializer produces`,
        're-export the model; its graph is inconsistent',
        'MODEL_UNSUPPORTED',
      );
    return v;
  }

  optionalInput(n: FusedNode, i: number): Val | undefined {
    return n.input[i] ? this.input(n, i) : undefined;
  }

  act(n: FusedNode, i: number): ActVal {
    const v = this.input(n, i);
    if (v.kind !== 'act')
      this.fail(
        n,
        `has a constant as input ${i}, where he-approx expects the data flowing through the network`,
        'give the node its data input first (e.g. MatMul(x, W), not MatMul(W, x))',
      );
    return v;
  }

  constant(n: FusedNode, i: number, what: string): Const {
    const v = this.input(n, i);
    if (v.kind !== 'const')
      this.fail(
        n,
        `has a ${what} (input ${i}) computed from the data, not a constant`,
        'export with constant weights (initializers), e.g. torch.onnx.export(..., do_constant_folding=True)',
      );
    return v.c;
  }

  /** A constant optional input, or undefined when the node leaves it out. */
  optionalConstant(n: FusedNode, i: number, what: string): Const | undefined {
    return n.input[i] ? this.constant(n, i, what) : undefined;
  }

  /** Per-sample graph shape of an activation value. */
  shapeOf(v: ActVal): number[] {
    return this.nodes[v.id].shape;
  }

  /** Per-sample ONNX-order shape of an activation value. */
  logical(v: ActVal): number[] {
    const phys = this.shapeOf(v);
    const l = new Array<number>(phys.length);
    v.perm.forEach((p, i) => {
      l[p] = phys[i];
    });
    return l;
  }

  add(n: FusedNode, spec: Op, shape: number[], inputs: number[], suffix = ''): number {
    let name = nodeName(n) + suffix;
    for (let k = 2; this.names.has(name); k++) name = `${nodeName(n)}${suffix}_${k}`;
    this.names.add(name);
    const className = n.op_type === 'HeActivation' ? `${n.kind} (${n.fusedFrom?.length ?? 1} ONNX nodes)` : n.op_type;
    this.nodes.push({ id: this.nodes.length, name, layer: nodeName(n), className, inputs, shape, spec });
    return this.nodes.length - 1;
  }

  /** v in the axis order `want`, inserting a graph transpose if it is not already so. */
  toPerm(n: FusedNode, v: ActVal, want: number[]): ActVal {
    if (samePerm(v.perm, want)) return v;
    if (v.perm.length !== want.length)
      this.fail(
        n,
        `expects a rank-${want.length + 1} input but gets rank ${v.perm.length + 1}`,
        'check the model; the tensor ranks do not match the operator',
      );
    const inv = invertPerm(v.perm);
    const q = want.map((a) => inv[a]);
    const phys = this.shapeOf(v);
    return {
      kind: 'act',
      id: this.add(
        n,
        { op: 'transpose', perm: q },
        q.map((a) => phys[a]),
        [v.id],
        '/layout',
      ),
      perm: want,
    };
  }

  /** An activation node for ONNX node n applied to x (same layout), recorded for the exporter. */
  activation(n: FusedNode, x: ActVal, act: ActivationSpec): ActVal {
    const id = this.add(n, { op: 'activation', act }, this.shapeOf(x), [x.id]);
    this.sites.set(this.nodes[id].name, {
      input: n.input[0],
      output: n.output[0],
      nodes: n.fusedFrom ?? [],
      channelAxis: x.perm[x.perm.length - 1] + 1,
      rank: x.perm.length + 1,
    });
    return { kind: 'act', id, perm: x.perm };
  }

  /** Records max pooling node `id`, made for ONNX node n from x (channels last), for the exporter. */
  maxPool(n: FusedNode, x: ActVal, id: number): void {
    this.poolSites.set(this.nodes[id].name, {
      input: n.input[0],
      output: n.output[0],
      nodes: n.fusedFrom ?? [],
      axes: { h: x.perm[0] + 1, w: x.perm[1] + 1, c: x.perm[2] + 1 },
      rank: x.perm.length + 1,
    });
  }
}

export const nodeName = (n: FusedNode) => n.name || n.output[0] || n.op_type;

/** The decoded ONNX model and where each activation sits in it: what the ONNX exporter rewrites. */
export interface OnnxSource {
  model: OnnxModel;
  opset: number;
  inputName: string;
  outputName: string;
  /** Per activation node name of the graph: where it sits in the ONNX model. */
  activations: Record<string, OnnxActivationSite>;
  /** Per max pooling node name (before its tree replaced it): where it sits in the ONNX model. */
  pools: Record<string, OnnxPoolSite>;
}
