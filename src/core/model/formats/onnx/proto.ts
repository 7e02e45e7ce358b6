/**
 * ONNX protobuf decoding and encoding with protobufjs over the ONNX project's own schema
 * (onnxProto.ts), and TensorProto <-> numbers. Plain objects out: the importer never sees
 * protobufjs types. int64 values become JavaScript numbers (exact below 2^53; INT64_MAX, which
 * exporters use for "to the end" in Slice, stays larger than any real dimension).
 */
import * as path from 'path';
import * as protobuf from 'protobufjs';
import { MISSING, fileProblem, readUserFile, resolveInside } from '../../../files';
import { UserError } from '../../../errors';
import { halfToFloat } from '../../weights';
import { ONNX_PROTO } from './onnxProto';

export interface OnnxTensor {
  name?: string;
  dims?: number[];
  data_type?: number;
  float_data?: number[];
  int32_data?: number[];
  int64_data?: number[];
  double_data?: number[];
  uint64_data?: number[];
  raw_data?: Uint8Array;
  data_location?: number;
  external_data?: { key: string; value: string }[];
}

export interface OnnxAttribute {
  name: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: OnnxTensor;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
}

export interface OnnxNode {
  name?: string;
  op_type: string;
  domain?: string;
  input: string[];
  output: string[];
  attribute: OnnxAttribute[];
}

export interface OnnxValueInfo {
  name: string;
  type?: { tensor_type?: { elem_type?: number; shape?: { dim?: { dim_value?: number; dim_param?: string }[] } } };
}

export interface OnnxGraph {
  name?: string;
  node: OnnxNode[];
  initializer: OnnxTensor[];
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
  value_info?: OnnxValueInfo[];
}

export interface OnnxModel {
  ir_version?: number;
  opset_import: { domain?: string; version: number }[];
  producer_name?: string;
  producer_version?: string;
  graph: OnnxGraph;
  [k: string]: unknown;
}

let modelType: protobuf.Type | null = null;
function ModelProto(): protobuf.Type {
  if (!modelType) modelType = protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType('onnx.ModelProto');
  return modelType;
}

/** Decodes an .onnx file; a file that is not an ONNX model is a user error. */
export function decodeModel(buf: Uint8Array, name: string): OnnxModel {
  let m: OnnxModel;
  try {
    const msg = ModelProto().decode(buf);
    m = ModelProto().toObject(msg, { longs: Number, enums: Number, arrays: true, defaults: false }) as OnnxModel;
  } catch (e) {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${name} is not a readable ONNX model (protobuf: ${(e as Error).message})`,
      'pass an .onnx file written by torch.onnx.export, tf2onnx or onnx.save; a truncated download or a file of another format cannot be read',
    );
  }
  if (!m.graph || !Array.isArray(m.graph.node) || m.graph.node.length === 0) {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${name} holds no ONNX graph`,
      'pass an .onnx model file (not an ONNX tensor or data file)',
    );
  }
  m.graph.initializer ??= [];
  m.graph.input ??= [];
  m.graph.output ??= [];
  for (const n of m.graph.node) {
    n.input ??= [];
    n.output ??= [];
    n.attribute ??= [];
  }
  m.opset_import ??= [];
  return m;
}

export function encodeModel(m: OnnxModel): Uint8Array {
  const T = ModelProto();
  return T.encode(T.fromObject(m)).finish();
}

export const DT = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
} as const;

/** A tensor's values as float64, with its dims; `dir` resolves external data files. */
export function tensorValues(t: OnnxTensor, dir: string, model: string): { dims: number[]; data: Float64Array } {
  const dims = (t.dims ?? []).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const dt = t.data_type ?? DT.FLOAT;
  const name = t.name ?? '(unnamed)';
  let raw = t.raw_data && t.raw_data.length ? t.raw_data : null;
  if (t.data_location === 1) {
    const kv = new Map((t.external_data ?? []).map((e) => [e.key, e.value]));
    const loc = kv.get('location');
    const file = loc ? resolveInside(path.join(dir, model), loc, `the external data file of tensor '${name}'`) : '';
    if (!loc || fileProblem(file) === MISSING) {
      throw new UserError(
        'WEIGHTS_MISSING',
        `${model}: tensor '${name}' is stored in external file '${loc}', which is missing`,
        `copy '${loc}' next to the .onnx file, or export with all weights inside the model (onnx.save_model(..., save_as_external_data=False))`,
      );
    }
    const all = readUserFile(file, {
      what: `external data of tensor '${name}':`,
      code: 'WEIGHTS_MISSING',
      fix: `put '${loc}' beside the .onnx file, as the exporter wrote it`,
    });
    const off = Number(kv.get('offset') ?? 0);
    const len = kv.has('length') ? Number(kv.get('length')) : all.length - off;
    raw = all.subarray(off, off + len);
  }
  const out = new Float64Array(count);
  const bad = (what: string): never => {
    throw new UserError(
      'WEIGHTS_MISMATCH',
      `${model}: tensor '${name}' ${what}`,
      're-export the model; the file is damaged or was written by a broken exporter',
    );
  };
  if (raw) {
    const size: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8 };
    const b = size[dt];
    if (!b) unsupportedType(model, name, dt);
    if (raw.length !== count * b) bad(`holds ${raw.length} bytes for dims [${dims}] (${count * b} expected)`);
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < count; i++) {
      switch (dt) {
        case DT.FLOAT:
          out[i] = v.getFloat32(i * 4, true);
          break;
        case DT.DOUBLE:
          out[i] = v.getFloat64(i * 8, true);
          break;
        case DT.INT64:
          out[i] = Number(v.getBigInt64(i * 8, true));
          break;
        case DT.UINT64:
          out[i] = Number(v.getBigUint64(i * 8, true));
          break;
        case DT.INT32:
          out[i] = v.getInt32(i * 4, true);
          break;
        case DT.UINT32:
          out[i] = v.getUint32(i * 4, true);
          break;
        case DT.INT16:
          out[i] = v.getInt16(i * 2, true);
          break;
        case DT.UINT16:
          out[i] = v.getUint16(i * 2, true);
          break;
        case DT.FLOAT16:
          out[i] = halfToFloat(v.getUint16(i * 2, true));
          break;
        case DT.INT8:
          out[i] = v.getInt8(i);
          break;
        default:
          out[i] = v.getUint8(i);
          break; // UINT8, BOOL
      }
    }
    return { dims, data: out };
  }
  const typed: number[] | undefined =
    dt === DT.FLOAT
      ? t.float_data
      : dt === DT.DOUBLE
        ? t.double_data
        : dt === DT.INT64
          ? t.int64_data
          : dt === DT.UINT64 || dt === DT.UINT32
            ? t.uint64_data
            : dt === DT.STRING
              ? unsupportedType(model, name, dt)
              : t.int32_data;
  const vals = typed ?? [];
  if (vals.length !== count) bad(`holds ${vals.length} values for dims [${dims}] (${count} expected)`);
  for (let i = 0; i < count; i++) out[i] = dt === DT.FLOAT16 ? halfToFloat(vals[i]) : Number(vals[i]);
  return { dims, data: out };
}

function unsupportedType(model: string, name: string, dt: number): never {
  throw new UserError(
    'MODEL_UNSUPPORTED',
    `${model}: tensor '${name}' has ONNX data type ${dt}, which he-approx does not read`,
    'export float32 weights (no string, complex or quantised tensors)',
  );
}

/** A float32 TensorProto (raw little-endian data), for the exporter. */
export function floatTensor(name: string, dims: number[], data: ArrayLike<number>): OnnxTensor {
  const f = Float32Array.from(data as ArrayLike<number>);
  return { name, dims, data_type: DT.FLOAT, raw_data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
}

export function int64Tensor(name: string, dims: number[], data: number[]): OnnxTensor {
  return { name, dims, data_type: DT.INT64, int64_data: data };
}

/** Attribute lookup with ONNX's defaults. */
export class Attrs {
  private readonly m: Map<string, OnnxAttribute>;
  constructor(n: OnnxNode) {
    this.m = new Map(n.attribute.map((a) => [a.name, a]));
  }
  has(k: string): boolean {
    return this.m.has(k);
  }
  int(k: string, d: number): number {
    const a = this.m.get(k);
    return a && a.i !== undefined ? Number(a.i) : d;
  }
  float(k: string, d: number): number {
    const a = this.m.get(k);
    return a && a.f !== undefined ? Number(a.f) : d;
  }
  ints(k: string, d: number[] | null): number[] | null {
    const a = this.m.get(k);
    return a && a.ints ? a.ints.map(Number) : d;
  }
  floats(k: string): number[] | null {
    const a = this.m.get(k);
    return a && a.floats ? a.floats.map(Number) : null;
  }
  str(k: string, d: string): string {
    const a = this.m.get(k);
    return a && a.s ? Buffer.from(a.s).toString('utf8') : d;
  }
  tensor(k: string): OnnxTensor | null {
    return this.m.get(k)?.t ?? null;
  }
  names(): string[] {
    return [...this.m.keys()];
  }
}
