/**
 * Reader for the IDX format used by MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/):
 * a magic number (two zero bytes, a type code, the number of dimensions), big-endian uint32
 * dimension sizes, then the data in row-major order.
 */
import { UserError } from '../errors';

export interface IdxArray {
  shape: number[];
  /** Raw values; uint8 data stays uint8 until the caller scales it. */
  data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
  dtype: 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';
}

const TYPES: Record<number, { dtype: IdxArray['dtype']; size: number }> = {
  0x08: { dtype: 'uint8', size: 1 },
  0x09: { dtype: 'int8', size: 1 },
  0x0b: { dtype: 'int16', size: 2 },
  0x0c: { dtype: 'int32', size: 4 },
  0x0d: { dtype: 'float32', size: 4 },
  0x0e: { dtype: 'float64', size: 8 },
};

export function parseIdx(buf: Uint8Array, name = 'IDX file'): IdxArray {
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0 || !(buf[2] in TYPES)) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is not an IDX file (bad magic number)`,
      'pass an MNIST-style idx file (e.g. t10k-images-idx3-ubyte), or .npy, .csv or .json data',
    );
  }
  const { dtype, size } = TYPES[buf[2]];
  const ndim = buf[3];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 4 + 4 * ndim) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is truncated in its header`,
      'check that the file downloaded completely',
    );
  }
  const shape: number[] = [];
  for (let i = 0; i < ndim; i++) shape.push(view.getUint32(4 + 4 * i, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = 4 + 4 * ndim;
  if (buf.length - offset < count * size) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is truncated: header says ${shape.join('x')} (${count * size} bytes) but ${buf.length - offset} bytes follow`,
      'check that the file downloaded completely',
    );
  }
  let data: IdxArray['data'];
  switch (dtype) {
    case 'uint8':
      data = buf.slice(offset, offset + count);
      break;
    case 'int8':
      data = new Int8Array(buf.slice(offset, offset + count).buffer);
      break;
    default: {
      // Multi-byte IDX values are big-endian; convert element by element.
      const out =
        dtype === 'int16'
          ? new Int16Array(count)
          : dtype === 'int32'
            ? new Int32Array(count)
            : dtype === 'float32'
              ? new Float32Array(count)
              : new Float64Array(count);
      for (let i = 0; i < count; i++) {
        const p = offset + i * size;
        out[i] =
          dtype === 'int16'
            ? view.getInt16(p, false)
            : dtype === 'int32'
              ? view.getInt32(p, false)
              : dtype === 'float32'
                ? view.getFloat32(p, false)
                : view.getFloat64(p, false);
      }
      data = out;
    }
  }
  return { shape, data, dtype };
}
