/**
 * Constant folding for ONNX import: the shape arithmetic exporters leave in a graph (PyTorch's
 * F.pad computes its pads with ConstantOfShape, Concat, Reshape, Slice, Transpose and Cast;
 * without constant folding, Shape, Gather, Sub and Mul on a tensor's shape) is evaluated here,
 * once, on small arrays, following the ONNX operator definitions (numpy broadcasting, negative
 * axes, clamped slice bounds). `dynamic` marks elements that stand for the batch size, which
 * is not known at import time; any use of them other than as a Reshape's batch entry is an error.
 */
import { UserError } from '../../../errors';
import { transposeIndex } from '../../graph';
import { Attrs, OnnxNode, tensorValues } from './proto';

export interface Const {
  dims: number[];
  data: Float64Array;
  dynamic?: Uint8Array;
}

export const scalarConst = (v: number): Const => ({ dims: [], data: Float64Array.of(v) });
const prod = (d: number[]) => d.reduce((a, b) => a * b, 1);
const strides = (d: number[]) => d.map((_, i) => prod(d.slice(i + 1)));
const normAxis = (a: number, r: number) => (a < 0 ? a + r : a);

function fail(model: string, n: OnnxNode, why: string): never {
  throw new UserError(
    'MODEL_UNSUPPORTED',
    `${model}: ${n.op_type} node '${n.name || n.output[0]}' ${why}`,
    'simplify the exported graph (torch.onnx.export with do_constant_folding=True, or onnx-simplifier) so that shape arithmetic becomes constants',
  );
}

/** numpy-style broadcast of two shapes, or null. */
export function broadcastShape(a: number[], b: number[]): number[] | null {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(Math.max(x, y));
  }
  return out;
}

/** Index into `c` (broadcast to `shape`) for each flat position of `shape`. */
export function broadcastIndex(cDims: number[], shape: number[]): Int32Array {
  const r = shape.length;
  const cd = [...new Array(r - cDims.length).fill(1), ...cDims];
  const cs = strides(cd);
  const n = prod(shape);
  const idx = new Int32Array(n);
  const coord = new Array(r).fill(0);
  for (let o = 0; o < n; o++) {
    let k = 0;
    for (let a = 0; a < r; a++) if (cd[a] !== 1) k += coord[a] * cs[a];
    idx[o] = k;
    for (let a = r - 1; a >= 0; a--) {
      if (++coord[a] < shape[a]) break;
      coord[a] = 0;
    }
  }
  return idx;
}

function binary(model: string, n: OnnxNode, a: Const, b: Const, f: (x: number, y: number) => number): Const {
  const shape = broadcastShape(a.dims, b.dims);
  if (!shape) fail(model, n, `cannot broadcast shapes [${a.dims}] and [${b.dims}]`);
  const ia = broadcastIndex(a.dims, shape);
  const ib = broadcastIndex(b.dims, shape);
  const data = new Float64Array(ia.length);
  let dyn: Uint8Array | undefined;
  for (let i = 0; i < data.length; i++) {
    if (a.dynamic?.[ia[i]] || b.dynamic?.[ib[i]]) (dyn ??= new Uint8Array(data.length))[i] = 1;
    data[i] = f(a.data[ia[i]], b.data[ib[i]]);
  }
  if (dyn && n.op_type !== 'Concat') fail(model, n, 'computes with the batch size, which is only known at run time');
  return { dims: shape, data };
}

/** Gathers `idx` (flat indices into c) into a new constant of `dims`, keeping dynamic marks. */
function take(c: Const, dims: number[], idx: ArrayLike<number>): Const {
  const data = new Float64Array(idx.length);
  let dyn: Uint8Array | undefined;
  for (let i = 0; i < idx.length; i++) {
    data[i] = c.data[idx[i]];
    if (c.dynamic?.[idx[i]]) (dyn ??= new Uint8Array(idx.length))[i] = 1;
  }
  return { dims, data, dynamic: dyn };
}

function transpose(c: Const, perm: number[]): Const {
  return take(
    c,
    perm.map((p) => c.dims[p]),
    transposeIndex(c.dims, perm),
  );
}

/** ONNX Slice bounds for one axis (clamped as the operator defines them), as [start, end, step]. */
export function sliceBounds(dim: number, start: number, end: number, step: number): [number, number, number] {
  let s = start < 0 ? start + dim : start;
  let e = end < 0 ? end + dim : end;
  if (step > 0) {
    s = Math.min(Math.max(s, 0), dim);
    e = Math.min(Math.max(e, 0), dim);
  } else {
    s = Math.min(Math.max(s, 0), dim - 1);
    e = Math.min(Math.max(e, -1), dim - 1);
  }
  return [s, e, step];
}

function slice(c: Const, starts: number[], ends: number[], axes: number[], steps: number[]): Const {
  const r = c.dims.length;
  const lo = c.dims.map(() => 0);
  const st = c.dims.map(() => 1);
  const cnt = c.dims.slice();
  axes.forEach((ax, k) => {
    const a = normAxis(ax, r);
    const [s, e, step] = sliceBounds(c.dims[a], starts[k], ends[k], steps[k] ?? 1);
    lo[a] = s;
    st[a] = step;
    cnt[a] = Math.max(0, Math.ceil((e - s) / step));
  });
  const s = strides(c.dims);
  const n = prod(cnt);
  const idx = new Int32Array(n);
  const coord = new Array(r).fill(0);
  for (let o = 0; o < n; o++) {
    let k = 0;
    for (let a = 0; a < r; a++) k += (lo[a] + coord[a] * st[a]) * s[a];
    idx[o] = k;
    for (let a = r - 1; a >= 0; a--) {
      if (++coord[a] < cnt[a]) break;
      coord[a] = 0;
    }
  }
  return take(c, cnt, idx);
}

/** The value of a Constant node. */
export function constantNode(n: OnnxNode, dir: string, model: string): Const {
  const at = new Attrs(n);
  const t = at.tensor('value');
  if (t) {
    const v = tensorValues(t, dir, model);
    return { dims: v.dims, data: v.data };
  }
  if (at.has('value_float')) return scalarConst(at.float('value_float', 0));
  if (at.has('value_int')) return scalarConst(at.int('value_int', 0));
  const fs = at.floats('value_floats');
  if (fs) return { dims: [fs.length], data: Float64Array.from(fs) };
  const is = at.ints('value_ints', null);
  if (is) return { dims: [is.length], data: Float64Array.from(is) };
  fail(model, n, `has no value he-approx can read (attributes ${at.names().join(', ')})`);
}

const ELEMENTWISE: Record<string, (x: number, y: number) => number> = {
  Add: (x, y) => x + y,
  Sub: (x, y) => x - y,
  Mul: (x, y) => x * y,
  // Integer division truncates in ONNX for integer types; shape arithmetic is integer.
  Div: (x, y) => (Number.isInteger(x) && Number.isInteger(y) ? Math.trunc(x / y) : x / y),
  Equal: (x, y) => (x === y ? 1 : 0),
  Less: (x, y) => (x < y ? 1 : 0),
  Greater: (x, y) => (x > y ? 1 : 0),
  Max: Math.max,
  Min: Math.min,
  Pow: Math.pow,
};
const UNARY: Record<string, (x: number) => number> = {
  Neg: (x) => -x,
  Sqrt: Math.sqrt,
  Floor: Math.floor,
  Ceil: Math.ceil,
  Abs: Math.abs,
  Reciprocal: (x) => 1 / x,
  Exp: Math.exp,
};

/** Ops folded when every input is constant (the importer asks before converting a node). */
export const FOLDABLE = new Set([
  'Constant',
  'ConstantOfShape',
  'Shape',
  'Size',
  'Identity',
  'Cast',
  'Reshape',
  'Transpose',
  'Slice',
  'Concat',
  'Gather',
  'Unsqueeze',
  'Squeeze',
  'Flatten',
  'Range',
  'Where',
  ...Object.keys(ELEMENTWISE),
  ...Object.keys(UNARY),
]);

/** Constants concatenated along `axis` (which entries are dynamic goes along). */
function concatConsts(parts: Const[], axis: number): Const {
  const r = parts[0].dims.length;
  const a = normAxis(axis, r);
  const dims = parts[0].dims.slice();
  dims[a] = parts.reduce((s, c) => s + c.dims[a], 0);
  const outer = prod(dims.slice(0, a));
  const out: number[] = [];
  const dyn: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const c of parts) {
      const inner = prod(c.dims.slice(a));
      for (let k = 0; k < inner; k++) {
        out.push(c.data[o * inner + k]);
        dyn.push(c.dynamic?.[o * inner + k] ?? 0);
      }
    }
  }
  return { dims, data: Float64Array.from(out), dynamic: dyn.some((d) => d) ? Uint8Array.from(dyn) : undefined };
}

/** ONNX Gather on constants: the entries of x at indices ix along `axis` (negative indices from the end). */
function gatherConst(x: Const, ix: Const, axis: number): Const {
  const a = normAxis(axis, x.dims.length);
  const outer = prod(x.dims.slice(0, a));
  const inner = prod(x.dims.slice(a + 1));
  const dims = [...x.dims.slice(0, a), ...ix.dims, ...x.dims.slice(a + 1)];
  const idx: number[] = [];
  for (let o = 0; o < outer; o++)
    for (const j of ix.data) {
      const jj = j < 0 ? j + x.dims[a] : j;
      for (let k = 0; k < inner; k++) idx.push((o * x.dims[a] + jj) * inner + k);
    }
  return take(x, dims, idx);
}

/** ONNX Where on constants: x where c, else y, broadcast. */
function whereConst(model: string, n: OnnxNode, c: Const, x: Const, y: Const): Const {
  const xy = binary(model, n, x, y, (p) => p);
  const shape = broadcastShape(c.dims, xy.dims) ?? fail(model, n, 'cannot broadcast its inputs');
  const ic = broadcastIndex(c.dims, shape);
  const ixx = broadcastIndex(x.dims, shape);
  const iy = broadcastIndex(y.dims, shape);
  return {
    dims: shape,
    data: Float64Array.from({ length: ic.length }, (_, i) => (c.data[ic[i]] ? x.data[ixx[i]] : y.data[iy[i]])),
  };
}

/** ONNX Unsqueeze on a constant: size-1 axes inserted at `axes` of the result. */
function unsqueezeConst(x: Const, axes: number[]): Const {
  const r = x.dims.length + axes.length;
  const norm = axes.map((v) => normAxis(v, r));
  const dims: number[] = [];
  let k = 0;
  for (let i = 0; i < r; i++) dims.push(norm.includes(i) ? 1 : x.dims[k++]);
  return { ...x, dims };
}

/** ONNX Slice on a constant: starts, ends, axes and steps as attributes before opset 10, as inputs from it. */
function sliceNode(x: Const, ins: (Const | undefined)[], at: Attrs, opset: number): Const {
  const ints = (c: Const | undefined) => (c ? Array.from(c.data) : []);
  if (opset < 10)
    return slice(x, at.ints('starts', [])!, at.ints('ends', [])!, at.ints('axes', null) ?? x.dims.map((_, i) => i), []);
  const starts = ints(ins[1]);
  return slice(x, starts, ints(ins[2]), ins[3] ? ints(ins[3]) : starts.map((_, i) => i), ins[4] ? ints(ins[4]) : []);
}

/** Evaluates a node whose inputs are all constant (missing optional inputs are undefined). */
export function foldNode(n: OnnxNode, ins: (Const | undefined)[], opset: number, model: string): Const {
  const at = new Attrs(n);
  const ints = (c: Const | undefined) => (c ? Array.from(c.data) : []);
  const need = (i: number): Const => ins[i] ?? fail(model, n, `is missing input ${i}`);
  if (ELEMENTWISE[n.op_type])
    return ins
      .slice(1)
      .reduce<Const>(
        (acc, b) => binary(model, n, acc, b ?? fail(model, n, 'has a missing input'), ELEMENTWISE[n.op_type]),
        need(0),
      );
  if (UNARY[n.op_type]) {
    const x = need(0);
    return { dims: x.dims, data: x.data.map(UNARY[n.op_type]) };
  }
  switch (n.op_type) {
    case 'Identity':
      return need(0);
    case 'Shape': {
      const d = need(0).dims;
      const r = d.length;
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
      const dims = d.slice(clamp(at.int('start', 0)), clamp(at.int('end', r)));
      return { dims: [dims.length], data: Float64Array.from(dims) };
    }
    case 'Size':
      return scalarConst(prod(need(0).dims));
    case 'Cast': {
      const x = need(0);
      const to = at.int('to', 1);
      const integer = [2, 3, 4, 5, 6, 7, 12, 13].includes(to);
      return {
        dims: x.dims,
        data: integer ? x.data.map(Math.trunc) : to === 9 ? x.data.map((v) => (v ? 1 : 0)) : x.data,
        dynamic: x.dynamic,
      };
    }
    case 'ConstantOfShape': {
      const dims = ints(need(0));
      const t = at.tensor('value');
      const v = t ? tensorValues(t, '.', model).data[0] : 0;
      return { dims, data: new Float64Array(prod(dims)).fill(v) };
    }
    case 'Reshape': {
      const x = need(0);
      const target = ints(need(1));
      const dims = target.map((d, i) => (d === 0 && at.int('allowzero', 0) === 0 ? x.dims[i] : d));
      const known = dims.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      return { ...x, dims: dims.map((d) => (d === -1 ? prod(x.dims) / known : d)) };
    }
    case 'Flatten': {
      const x = need(0);
      const a = normAxis(at.int('axis', 1), x.dims.length);
      return { ...x, dims: [prod(x.dims.slice(0, a)), prod(x.dims.slice(a))] };
    }
    case 'Transpose': {
      const x = need(0);
      return transpose(x, at.ints('perm', null) ?? x.dims.map((_, i) => x.dims.length - 1 - i));
    }
    case 'Slice':
      return sliceNode(need(0), opset < 10 ? ins : [ins[0], need(1), need(2), ins[3], ins[4]], at, opset);
    case 'Concat':
      return concatConsts(
        ins.filter((c): c is Const => !!c),
        at.int('axis', 0),
      );
    case 'Gather':
      return gatherConst(need(0), need(1), at.int('axis', 0));
    case 'Unsqueeze':
      return unsqueezeConst(need(0), opset >= 13 ? ints(need(1)) : at.ints('axes', [])!);
    case 'Squeeze': {
      const x = need(0);
      const axes = (opset >= 13 ? (ins[1] ? ints(ins[1]) : null) : at.ints('axes', null))?.map((v) =>
        normAxis(v, x.dims.length),
      );
      return { ...x, dims: x.dims.filter((d, i) => (axes ? !axes.includes(i) : d !== 1)) };
    }
    case 'Range': {
      const [s, l, d] = [need(0).data[0], need(1).data[0], need(2).data[0]];
      const cnt = Math.max(0, Math.ceil((l - s) / d));
      return { dims: [cnt], data: Float64Array.from({ length: cnt }, (_, i) => s + i * d) };
    }
    case 'Where':
      return whereConst(model, n, need(0), need(1), need(2));
    default:
      fail(model, n, 'cannot be evaluated at import time');
  }
}
