/**
 * ONNX converters of the operators that move data without weights: Flatten, Reshape, Transpose,
 * Slice, Pad, Concat, Softmax, Squeeze / Unsqueeze, Shape and the pass-throughs (ops.ts registers them).
 */
import { size } from '../../graph';
import { Const, sliceBounds } from './constants';
import { ActVal, Converter, ImportContext, act, identityPerm, ints, invertPerm } from './context';
import { FusedNode } from './fuse';

export const flatten: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  const axis = at.int('axis', 1);
  if ((axis < 0 ? axis + x0.perm.length + 1 : axis) !== 1)
    c.fail(n, `flattens from axis ${axis}`, 'flatten from axis 1 (keep the batch axis)');
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  return [act(c.add(n, { op: 'flatten' }, [size(c.shapeOf(x))], [x.id]), [0])];
};

export const reshape: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  // Before opset 5 the target shape was an attribute.
  const t: Const =
    c.opset < 5 ? { dims: [], data: Float64Array.from(at.ints('shape', []) ?? []) } : c.constant(n, 1, 'target shape');
  const dims = ints(t);
  const b = dims[0];
  const batchOk =
    b === -1 ||
    t.dynamic?.[0] ||
    (b === 0 && at.int('allowzero', 0) === 0) ||
    (c.fixedBatch !== null && b === c.fixedBatch);
  if (!batchOk || t.dynamic?.slice(1).some((d) => d))
    c.fail(
      n,
      `reshapes to [${dims}], which changes the batch axis`,
      'keep the batch axis first (e.g. x.view(x.size(0), -1)) and export with a dynamic batch',
    );
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  const L = c.shapeOf(x);
  const rest = dims.slice(1).map((d, i) => (d === 0 && at.int('allowzero', 0) === 0 ? L[i] : d));
  const known = rest.filter((d) => d !== -1).reduce((p, q) => p * q, 1);
  const target = rest.map((d) => (d === -1 ? size(L) / known : d));
  if (size(target) !== size(L) || target.some((d) => !Number.isInteger(d) || d < 0))
    c.fail(n, `reshapes [N, ${L}] to [${dims}]`, 're-export the model; the target shape does not fit');
  return [act(c.add(n, { op: 'reshape', target }, target, [x.id]), identityPerm(target.length))];
};

export const transpose: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const p = at.ints('perm', null) ?? Array.from({ length: r }, (_, i) => r - 1 - i);
  if (p[0] !== 0) c.fail(n, `moves the batch axis (perm [${p}])`, 'keep the batch axis first');
  const q = p.slice(1).map((v) => v - 1);
  const inv = invertPerm(q);
  // Only the bookkeeping changes: graph axis i still holds the same data.
  return [
    act(
      x.id,
      x.perm.map((a) => inv[a]),
    ),
  ];
};

/** ONNX axis (with batch) of a data tensor -> graph axis; the batch axis is refused. */
function graphAxis(c: ImportContext, n: FusedNode, x: ActVal, axis: number): number {
  const r = x.perm.length + 1;
  const a = axis < 0 ? axis + r : axis;
  if (a <= 0 || a >= r)
    c.fail(n, `works on axis ${axis} (the batch axis or out of range)`, 'operate on per-sample axes only');
  return x.perm.indexOf(a - 1);
}

export const slice: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const L = c.logical(x);
  const r = L.length + 1;
  let starts: number[];
  let ends: number[];
  let axes: number[];
  let steps: number[];
  if (c.opset < 10) {
    starts = at.ints('starts', [])!;
    ends = at.ints('ends', [])!;
    axes = at.ints('axes', null) ?? starts.map((_, i) => i);
    steps = starts.map(() => 1);
  } else {
    starts = ints(c.constant(n, 1, 'starts'));
    ends = ints(c.constant(n, 2, 'ends'));
    axes = n.input[3] ? ints(c.constant(n, 3, 'axes')) : starts.map((_, i) => i);
    steps = n.input[4] ? ints(c.constant(n, 4, 'steps')) : starts.map(() => 1);
  }
  const phys = c.shapeOf(x);
  const begin = phys.map(() => 0);
  const end = phys.slice();
  const step = phys.map(() => 1);
  axes.forEach((ax, k) => {
    const a = ax < 0 ? ax + r : ax;
    if (a === 0) {
      if (starts[k] !== 0 || ends[k] < 2 ** 31 - 1 || steps[k] !== 1)
        c.fail(n, 'slices the batch axis', 'slice per-sample axes only');
      return;
    }
    if (steps[k] <= 0) c.fail(n, `has step ${steps[k]}`, 'use positive slice steps');
    const g = graphAxis(c, n, x, a);
    const [s, e] = sliceBounds(L[a - 1], starts[k], ends[k], steps[k]);
    begin[g] = s;
    end[g] = Math.max(s, e);
    step[g] = steps[k];
  });
  const shape = phys.map((_, i) => Math.ceil((end[i] - begin[i]) / step[i]));
  return [act(c.add(n, { op: 'slice', begin, end, step }, shape, [x.id]), x.perm)];
};

export const pad: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const mode = at.str('mode', 'constant');
  if (mode !== 'constant')
    c.fail(
      n,
      `pads in mode '${mode}'`,
      'use constant (zero) padding; CKKS cannot compute reflect or edge padding cheaply',
    );
  let pads: number[];
  let value = 0;
  let axes = Array.from({ length: r }, (_, i) => i);
  if (c.opset < 11) {
    pads = at.ints('pads', [])!;
    value = at.float('value', 0);
  } else {
    pads = ints(c.constant(n, 1, 'pads'));
    const v = c.optionalConstant(n, 2, 'padding value');
    if (v) value = v.data[0] ?? 0;
    if (n.input[3]) axes = ints(c.constant(n, 3, 'axes')).map((a) => (a < 0 ? a + r : a));
  }
  if (pads.length !== 2 * axes.length)
    c.fail(n, `has ${pads.length} pads for ${axes.length} axes`, 're-export the model');
  if (pads.every((v) => v === 0)) return [x];
  const phys = c.shapeOf(x);
  const gp: [number, number][] = phys.map(() => [0, 0]);
  axes.forEach((a, k) => {
    const [b, e] = [pads[k], pads[k + axes.length]];
    if (b < 0 || e < 0) c.fail(n, 'has negative pads (cropping)', 'use Slice to crop');
    if (a === 0) {
      if (b || e) c.fail(n, 'pads the batch axis', 'pad per-sample axes only');
      return;
    }
    gp[graphAxis(c, n, x, a)] = [b, e];
  });
  return [
    act(
      c.add(
        n,
        { op: 'pad', pads: gp, value },
        phys.map((d, i) => d + gp[i][0] + gp[i][1]),
        [x.id],
      ),
      x.perm,
    ),
  ];
};

export const concat: Converter = (c, n, at) => {
  const ins = n.input.map((_, i) => c.input(n, i));
  if (ins.some((v) => v.kind !== 'act'))
    c.fail(n, 'concatenates data with constants', 'concatenate data tensors only (zero-padding channels is a Pad)');
  const first = ins[0] as ActVal;
  const xs = (ins as ActVal[]).map((v) => c.toPerm(n, v, first.perm));
  const g = graphAxis(c, n, first, at.int('axis', c.opset < 4 ? 1 : 0));
  const shapes = xs.map((v) => c.shapeOf(v));
  if (shapes.some((s) => s.some((d, i) => i !== g && d !== shapes[0][i])))
    c.fail(n, 'concatenates tensors whose other axes differ', 're-export the model');
  const shape = shapes[0].slice();
  shape[g] = shapes.reduce((s, q) => s + q[g], 0);
  return [
    act(
      c.add(
        n,
        { op: 'concat', axis: g },
        shape,
        xs.map((v) => v.id),
      ),
      first.perm,
    ),
  ];
};

export const softmax: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const r = x.perm.length + 1;
  const axis = at.int('axis', c.opset < 13 ? 1 : -1);
  const a = axis < 0 ? axis + r : axis;
  if (c.opset < 13 ? a !== r - 1 : false)
    c.fail(n, `applies softmax over axes ${a}.. of a rank-${r} tensor`, 'apply softmax over the last axis');
  if (graphAxis(c, n, x, a) !== x.perm.length - 1)
    c.fail(
      n,
      `applies softmax over axis ${axis}, not the channel axis`,
      'apply softmax over the class axis of [N, classes] logits',
    );
  return [act(c.add(n, { op: 'softmax' }, c.shapeOf(x), [x.id]), x.perm)];
};

export const passThrough: Converter = (c, n, at) => {
  if (n.op_type === 'Dropout' && n.output[1] && c.uses.get(n.output[1]))
    c.fail(n, 'has its mask output used', 'export the model in eval mode');
  if (n.op_type === 'Cast' && ![1, 10, 11].includes(at.int('to', 1)))
    c.fail(n, `casts the data to ONNX type ${at.int('to', 1)}`, 'keep the data in floating point');
  return [c.act(n, 0)];
};

export const squeezeLike: Converter = (c, n, at) => {
  const x0 = c.act(n, 0);
  const x = c.toPerm(n, x0, identityPerm(x0.perm.length));
  const L = c.shapeOf(x);
  const r = L.length + 1;
  const raw = c.opset >= 13 ? (n.input[1] ? ints(c.constant(n, 1, 'axes')) : null) : at.ints('axes', null);
  let target: number[];
  if (n.op_type === 'Squeeze') {
    const axes = (raw ?? L.map((d, i) => (d === 1 ? i + 1 : -1)).filter((a) => a > 0)).map((a) => (a < 0 ? a + r : a));
    if (axes.includes(0) || axes.some((a) => L[a - 1] !== 1))
      c.fail(n, 'squeezes the batch axis or an axis longer than 1', 'squeeze per-sample axes of length 1');
    target = L.filter((_, i) => !axes.includes(i + 1));
  } else {
    const rr = r + (raw?.length ?? 0);
    const axes = (raw ?? []).map((a) => (a < 0 ? a + rr : a));
    if (axes.includes(0)) c.fail(n, 'adds an axis before the batch axis', 'keep the batch axis first');
    target = [];
    let k = 0;
    for (let i = 1; i < rr; i++) target.push(axes.includes(i) ? 1 : L[k++]);
  }
  return [act(c.add(n, { op: 'reshape', target }, target, [x.id]), identityPerm(target.length))];
};

export const shape: Converter = (c, n, at) => {
  const x = c.act(n, 0);
  const full = [-1, ...c.logical(x)];
  const r = full.length;
  const norm = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const s = norm(at.int('start', 0));
  const e = norm(at.int('end', r));
  const dims = full.slice(s, e);
  const dynamic = Uint8Array.from(dims.map((_, i) => (i + s === 0 ? 1 : 0)));
  return [
    {
      kind: 'const',
      c: { dims: [dims.length], data: Float64Array.from(dims), dynamic: dynamic.some((d) => d) ? dynamic : undefined },
    },
  ];
};
