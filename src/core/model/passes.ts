/**
 * Passes over the graph IR shared by every model format: the final clean-up of an imported
 * graph (drop what the output does not need, leave a final softmax to the client, renumber
 * topologically), and the layout simplifications an NCHW import needs (a transpose that moves
 * no data is a reshape; chains of reshapes collapse; a transpose before Flatten -> Dense folds
 * into the Dense kernel's rows, as onnx2keras-style converters do), so that an ONNX CNN reaches
 * the executor and the HE compiler as the same graph a channels-last Keras CNN would.
 */
import { Graph, GraphNode, Op, consumers, transposeIndex } from './graph';

const FINAL_SOFTMAX_NOTE =
  'The final softmax is not approximated: it does not change the argmax of the logits, so he-approx compares logits and leaves softmax to the client after decryption.';

/** Output size of a convolution or pooling window along one axis. */
export function outDim(n: number, k: number, s: number, pad: 'valid' | 'same' | [number, number], dil = 1): number {
  if (pad === 'same') return Math.ceil(n / s);
  const [p0, p1] = pad === 'valid' ? [0, 0] : pad;
  return Math.floor((n + p0 + p1 - (k - 1) * dil - 1) / s) + 1;
}

/**
 * Keeps the nodes the output depends on (and the input), renumbered in topological order; a
 * final softmax is dropped so that the graph's outputs are logits.
 */
export function finishGraph(
  name: string,
  nodes: GraphNode[],
  inputId: number,
  outputId: number,
  notes: string[],
): Graph {
  let output = outputId;
  let dropped = false;
  if (nodes[output].spec.op === 'softmax') {
    output = nodes[output].inputs[0];
    dropped = true;
    notes.push(FINAL_SOFTMAX_NOTE);
  }
  const g = renumber(nodes, inputId, output, new Map());
  return {
    name,
    nodes: g.nodes,
    input: g.input,
    output: g.output,
    inputShape: g.nodes[g.input].shape,
    notes,
    droppedFinalSoftmax: dropped,
  };
}

/**
 * The nodes `output` depends on plus `input`, in their order, renumbered; `alias` maps a removed
 * node to the node whose value it equals (its consumers read that one instead).
 */
function renumber(
  nodes: GraphNode[],
  input: number,
  output: number,
  alias: Map<number, number>,
): { nodes: GraphNode[]; input: number; output: number } {
  const resolve = (i: number): number => {
    let j = i;
    while (alias.has(j)) j = alias.get(j)!;
    return j;
  };
  const keep = new Set<number>();
  const mark = (i: number) => {
    const j = resolve(i);
    if (keep.has(j)) return;
    keep.add(j);
    nodes[j].inputs.forEach(mark);
  };
  mark(output);
  keep.add(resolve(input));
  const remap = new Map<number, number>();
  const kept: GraphNode[] = [];
  for (const n of nodes) {
    if (!keep.has(n.id)) continue;
    remap.set(n.id, kept.length);
    kept.push({ ...n, id: kept.length, inputs: n.inputs.map((i) => remap.get(resolve(i))!) });
  }
  return { nodes: kept, input: remap.get(resolve(input))!, output: remap.get(resolve(output))! };
}

const isReshape = (s: Op) => s.op === 'reshape' || s.op === 'flatten';

/** True if transposing `shape` by `perm` keeps the elements in the same (row-major) order. */
function movesNoData(shape: number[], perm: number[]): boolean {
  const big = perm.filter((p) => shape[p] !== 1);
  return big.every((p, i) => i === 0 || p > big[i - 1]);
}

/**
 * Layout simplification after an import (see the file comment). Node names, layers and the
 * activation nodes are untouched; only data-movement nodes are removed or merged.
 */
export function simplifyLayout(g: Graph): Graph {
  let nodes = g.nodes.map((n) => ({ ...n }));
  // 1. A transpose that moves no data is a reshape.
  for (const n of nodes) {
    if (n.spec.op === 'transpose' && movesNoData(nodes[n.inputs[0]].shape, n.spec.perm))
      n.spec = { op: 'reshape', target: n.shape.slice() };
  }
  // 2. transpose -> flatten -> dense: permute the dense kernel's rows instead of the data.
  const cons = consumers({ ...g, nodes });
  const alias = new Map<number, number>();
  for (const t of nodes) {
    if (t.spec.op !== 'transpose' || cons[t.id].length !== 1) continue;
    const f = nodes[cons[t.id][0]];
    if (!isReshape(f.spec) || f.shape.length !== 1 || cons[f.id].length !== 1) continue;
    const d = nodes[cons[f.id][0]];
    if (d.spec.op !== 'dense') continue;
    const src = nodes[t.inputs[0]];
    const idx = transposeIndex(src.shape, t.spec.perm);
    const [rows, cols] = d.spec.kernelShape;
    const k = new Float32Array(rows * cols);
    // Row idx[o] of the new kernel (flat index of the untransposed input) is row o of the old one.
    for (let o = 0; o < rows; o++) k.set(d.spec.kernel.subarray(o * cols, (o + 1) * cols), idx[o] * cols);
    // Where each value came from in the model file moves with it (the fine-tuned export writes back through it).
    const from = d.spec.kernelSource;
    let kernelSource = from;
    if (from) {
      const index = new Int32Array(rows * cols);
      for (let o = 0; o < rows; o++) index.set(from.index.subarray(o * cols, (o + 1) * cols), idx[o] * cols);
      kernelSource = { ...from, index };
    }
    d.spec = { ...d.spec, kernel: k, ...(kernelSource ? { kernelSource } : {}) };
    f.spec = { op: 'flatten' };
    f.inputs = [src.id];
    alias.set(t.id, src.id);
  }
  // 3. Chains of reshapes collapse into one; a reshape to the same shape disappears.
  const cons2 = consumers({ ...g, nodes });
  for (const n of nodes) {
    if (!isReshape(n.spec)) continue;
    let src = nodes[n.inputs[0]];
    while (isReshape(src.spec) && cons2[src.id].length === 1 && !alias.has(src.id)) src = nodes[src.inputs[0]];
    if (src.shape.join() === n.shape.join()) {
      alias.set(n.id, src.id);
      continue;
    }
    n.inputs = [src.id];
    n.spec = n.shape.length === 1 ? { op: 'flatten' } : { op: 'reshape', target: n.shape.slice() };
  }
  // 4. Identity nodes are aliases.
  for (const n of nodes) if (n.spec.op === 'identity' && n.id !== g.output) alias.set(n.id, n.inputs[0]);
  const r = renumber(nodes, g.input, g.output, alias);
  nodes = r.nodes;
  return { ...g, nodes, input: r.input, output: r.output };
}
