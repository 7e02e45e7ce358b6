/**
 * Reader for NumPy's .npy format (NEP 1, https://numpy.org/neps/nep-0001-npy-format.html):
 * magic "\x93NUMPY", a version, a little-endian header length, a Python-literal header dict
 * {'descr', 'fortran_order', 'shape'}, then the raw C-order array.
 */
import { UserError } from '../errors';

export interface NpyArray {
  shape: number[];
  data: Float32Array | Float64Array | Uint8Array | Int32Array;
  dtype: string;
}

export function parseNpy(buf: Uint8Array, name = '.npy file'): NpyArray {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (buf.length < 10 || magic.some((m, i) => buf[i] !== m)) {
    throw new UserError('DATA_UNREADABLE', `${name} is not a .npy file (bad magic)`, 'save the array with numpy.save');
  }
  const major = buf[6];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hlen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const hstart = major === 1 ? 10 : 12;
  const header = Buffer.from(buf.subarray(hstart, hstart + hlen)).toString('latin1');
  const descr = /'descr'\s*:\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) {
    throw new UserError('DATA_UNREADABLE', `${name} has an unreadable .npy header`, 'save the array with numpy.save');
  }
  if (fortran === 'True') {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is stored in Fortran order`,
      'save numpy.ascontiguousarray(x) instead',
    );
  }
  const shape = shapeStr
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const off = hstart + hlen;
  const kinds: Record<string, { bytes: number; get: (o: number) => number; out: 'f32' | 'f64' | 'u8' | 'i32' }> = {
    '<f4': { bytes: 4, get: (o) => view.getFloat32(o, true), out: 'f32' },
    '<f8': { bytes: 8, get: (o) => view.getFloat64(o, true), out: 'f64' },
    '>f4': { bytes: 4, get: (o) => view.getFloat32(o, false), out: 'f32' },
    '>f8': { bytes: 8, get: (o) => view.getFloat64(o, false), out: 'f64' },
    '|u1': { bytes: 1, get: (o) => view.getUint8(o), out: 'u8' },
    '<u1': { bytes: 1, get: (o) => view.getUint8(o), out: 'u8' },
    '|i1': { bytes: 1, get: (o) => view.getInt8(o), out: 'i32' },
    '<i4': { bytes: 4, get: (o) => view.getInt32(o, true), out: 'i32' },
    '<i8': { bytes: 8, get: (o) => Number(view.getBigInt64(o, true)), out: 'i32' },
    '<u2': { bytes: 2, get: (o) => view.getUint16(o, true), out: 'i32' },
    '<i2': { bytes: 2, get: (o) => view.getInt16(o, true), out: 'i32' },
  };
  const k = kinds[descr];
  if (!k) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} has dtype '${descr}'`,
      'save float32, float64, uint8 or integer arrays',
    );
  }
  if (buf.length - off < count * k.bytes) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is truncated: shape (${shape.join(', ')}) needs ${count * k.bytes} bytes, ${buf.length - off} present`,
      'check that the file was written completely',
    );
  }
  const data =
    k.out === 'f32'
      ? new Float32Array(count)
      : k.out === 'f64'
        ? new Float64Array(count)
        : k.out === 'u8'
          ? new Uint8Array(count)
          : new Int32Array(count);
  for (let i = 0; i < count; i++) data[i] = k.get(off + i * k.bytes);
  return {
    shape,
    data,
    dtype: k.out === 'f32' ? 'float32' : k.out === 'f64' ? 'float64' : k.out === 'u8' ? 'uint8' : 'int32',
  };
}

/** Writes a float32 or uint8 array as .npy version 1.0 (used by tests and the exporter). */
export function writeNpy(shape: number[], data: Float32Array | Uint8Array | Float64Array): Buffer {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Float64Array ? '<f8' : '|u1';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const h = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(h);
  h.writeUInt16LE(header.length, 8);
  return Buffer.concat([h, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}
