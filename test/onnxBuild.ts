/**
 * Test helpers for ONNX: build small models from a node list (the way onnx.helper.make_graph
 * does), and run any .onnx file with onnxruntime (onnxruntime-web on WebAssembly), the
 * reference runtime the importer is checked against.
 */
import * as fs from 'fs';
import { OnnxAttribute, OnnxModel, encodeModel, floatTensor, int64Tensor } from '../src/core/model/formats/onnx/proto';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor, PolyActivation } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';

export type Attr = number | number[] | string | { floats: number[] };
export interface NodeSpec {
  op: string;
  in: string[];
  out: string[];
  attrs?: Record<string, Attr>;
  name?: string;
}

function attribute(name: string, v: Attr): OnnxAttribute {
  if (typeof v === 'string') return { name, type: 3, s: Buffer.from(v) };
  if (Array.isArray(v)) return { name, type: 7, ints: v };
  if (typeof v === 'object') return { name, type: 6, floats: v.floats };
  return Number.isInteger(v) ? { name, type: 2, i: v } : { name, type: 1, f: v };
}

/** A model with one float input of shape ['N', ...dims] and one output. */
export function buildOnnx(o: {
  opset?: number;
  input: number[];
  nodes: NodeSpec[];
  output: string;
  floats?: Record<string, { dims: number[]; data: ArrayLike<number> }>;
  int64s?: Record<string, number[]>;
}): Uint8Array {
  const dims = (d: (number | string)[]) => ({
    dim: d.map((x) => (typeof x === 'string' ? { dim_param: x } : { dim_value: x })),
  });
  const m: OnnxModel = {
    ir_version: 8,
    producer_name: 'he-approx-test',
    opset_import: [{ domain: '', version: o.opset ?? 13 }],
    graph: {
      name: 'test',
      node: o.nodes.map((n, i) => ({
        name: n.name ?? `${n.op}_${i}`,
        op_type: n.op,
        input: n.in,
        output: n.out,
        attribute: Object.entries(n.attrs ?? {}).map(([k, v]) => attribute(k, v)),
      })),
      initializer: [
        ...Object.entries(o.floats ?? {}).map(([k, v]) => floatTensor(k, v.dims, v.data)),
        ...Object.entries(o.int64s ?? {}).map(([k, v]) => int64Tensor(k, [v.length], v)),
      ],
      input: [{ name: 'x', type: { tensor_type: { elem_type: 1, shape: dims(['N', ...o.input]) } } }],
      output: [{ name: o.output, type: { tensor_type: { elem_type: 1 } } }],
    },
  };
  return encodeModel(m);
}

/** Seeded values in [-2, 2). */
export function seeded(n: number, seed: number, scale = 4): Float32Array {
  let s = seed >>> 0;
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return v;
}

/** onnxruntime's output for input x of shape dims (the model's own layout). */
export async function runOrt(file: string, x: Float32Array, dims: number[]): Promise<Float32Array> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only by the tests that compare with it
  const ort = require('onnxruntime-web') as typeof import('onnxruntime-web');
  const sess = await ort.InferenceSession.create(fs.readFileSync(file));
  const out = await sess.run({ [sess.inputNames[0]]: new ort.Tensor('float32', x, dims) });
  const data = out[sess.outputNames[0]].data as Float32Array;
  await sess.release();
  return data;
}

/** he-approx's output (logits) for the same input, given in the model's own layout. */
export async function runOurs(
  file: string,
  x: Float32Array,
  dims: number[],
  replace?: Map<number, PolyActivation>,
): Promise<{ logits: Float32Array; softmaxDropped: boolean }> {
  await initBackend();
  const g = (await loadModel(file)).graph;
  let xt = tf.tensor(x, dims);
  if (g.inputLayout) {
    const t = tf.transpose(xt, [0, ...g.inputLayout.perm.map((p) => p + 1)]);
    xt.dispose();
    xt = t;
  }
  const ex = new Executor(g);
  const logits = ex.run(new Map([[g.input, xt]]), 0, { replace }).logits;
  ex.dispose();
  xt.dispose();
  return { logits, softmaxDropped: g.droppedFinalSoftmax };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}
