/**
 * Activation patterns exporters spell out with several ONNX operators, recognised before
 * conversion (as onnxruntime's and onnx-simplifier's fusion passes do) and replaced by one
 * pseudo-node `HeActivation` whose `kind` names the activation:
 * - GELU as torch writes it: x * 0.5 * (1 + Erf(x / sqrt(2))) (any order of the two products,
 *   division by sqrt(2) or multiplication by 1/sqrt(2));
 * - SiLU / swish: x * Sigmoid(x);
 * - Mish: x * Tanh(Softplus(x)).
 * A pattern is fused only when its intermediate values are used by nothing else. Each fused node
 * keeps the indices of the nodes it replaces, for the ONNX exporter.
 */
import { OnnxNode } from './proto';

export interface FusedNode extends OnnxNode {
  fusedFrom?: number[];
  kind?: string;
}

const close = (x: number | undefined, y: number, tol = 1e-4) =>
  x !== undefined && Math.abs(x - y) <= tol * Math.max(1, Math.abs(y));

export function fusePatterns(nodes: OnnxNode[], scalarOf: (name: string) => number | undefined): FusedNode[] {
  const producer = new Map<string, number>();
  const uses = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    n.output.forEach((o) => producer.set(o, i));
    n.input.forEach((x) => {
      if (x) uses.set(x, [...(uses.get(x) ?? []), i]);
    });
  });
  const only = (name: string): number | null => {
    const u = uses.get(name) ?? [];
    return u.length === 1 ? u[0] : null;
  };
  const op = (i: number | null | undefined) => (i === null || i === undefined ? '' : nodes[i].op_type);
  const other = (n: OnnxNode, x: string) => (n.input[0] === x ? n.input[1] : n.input[1] === x ? n.input[0] : undefined);
  const removed = new Set<number>();
  const replacement = new Map<number, FusedNode>();
  const fuse = (members: number[], x: string, y: string, kind: string) => {
    if (members.some((m) => removed.has(m))) return;
    members.forEach((m) => removed.add(m));
    const last = Math.max(...members);
    replacement.set(last, {
      name: nodes[last].name || y,
      op_type: 'HeActivation',
      input: [x],
      output: [y],
      attribute: [],
      kind,
      fusedFrom: members.sort((a, b) => a - b),
    });
  };
  nodes.forEach((n, i) => {
    if (removed.has(i)) return;
    // x * Sigmoid(x), x * Tanh(Softplus(x))
    if (n.op_type === 'Sigmoid' || n.op_type === 'Softplus') {
      const x = n.input[0];
      let inner = i;
      let kind = 'swish';
      if (n.op_type === 'Softplus') {
        const t = only(n.output[0]);
        if (op(t) !== 'Tanh') return;
        inner = t!;
        kind = 'mish';
      }
      const m = only(nodes[inner].output[0]);
      if (op(m) !== 'Mul' || other(nodes[m!], nodes[inner].output[0]) !== x) return;
      fuse(inner === i ? [i, m!] : [i, inner, m!], x, nodes[m!].output[0], kind);
      return;
    }
    // 0.5 * x * (1 + erf(x / sqrt 2))
    if (n.op_type === 'Erf') {
      const d = producer.get(n.input[0]);
      if (d === undefined || !['Div', 'Mul'].includes(op(d)) || only(nodes[d].output[0]) !== i) return;
      const x = nodes[d].input[0];
      const c = scalarOf(nodes[d].input[1]);
      if (!(op(d) === 'Div' ? close(c, Math.SQRT2) : close(c, Math.SQRT1_2))) return;
      const a = only(n.output[0]);
      if (op(a) !== 'Add' || !close(scalarOf(other(nodes[a!], n.output[0]) ?? ''), 1)) return;
      const m1 = only(nodes[a!].output[0]);
      if (op(m1) !== 'Mul') return;
      const partner = other(nodes[m1!], nodes[a!].output[0])!;
      if (partner === x) {
        // (x * (1 + erf)) * 0.5
        const m2 = only(nodes[m1!].output[0]);
        if (op(m2) !== 'Mul' || !close(scalarOf(other(nodes[m2!], nodes[m1!].output[0]) ?? ''), 0.5)) return;
        fuse([d, i, a!, m1!, m2!], x, nodes[m2!].output[0], 'gelu');
        return;
      }
      // (x * 0.5) * (1 + erf)
      const h = producer.get(partner);
      if (
        h === undefined ||
        op(h) !== 'Mul' ||
        only(partner) !== m1 ||
        other(nodes[h], x) === undefined ||
        !close(scalarOf(other(nodes[h], x)!), 0.5)
      )
        return;
      fuse([d, i, a!, h, m1!], x, nodes[m1!].output[0], 'gelu');
    }
  });
  const out: FusedNode[] = [];
  nodes.forEach((n, i) => {
    const r = replacement.get(i);
    if (r) out.push(r);
    else if (!removed.has(i)) out.push({ ...n, fusedFrom: [i] });
  });
  return out;
}
