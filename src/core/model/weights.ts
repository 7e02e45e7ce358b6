/**
 * Reads the weight shards named by a model.json `weightsManifest` (tfjs format: groups of shard
 * files whose concatenation holds the weights in manifest order) into named float32 arrays.
 */
import * as path from 'path';
import { UserError } from '../errors';
import { MISSING, fileProblem, readUserFile, resolveInside } from '../files';

export interface WeightSpec {
  name: string;
  shape: number[];
  dtype?: string;
  quantization?: { dtype: string; scale?: number; min?: number; original_dtype?: string };
}

export interface NamedWeight {
  name: string;
  shape: number[];
  data: Float32Array;
}

const BYTES: Record<string, number> = { float32: 4, uint8: 1, uint16: 2, float16: 2 };

/** A manifest group as tfjs writes it: shard file names and weight specs, types checked. */
function checkGroup(modelPath: string, group: unknown, g: number): { paths: string[]; weights: WeightSpec[] } {
  const bad = (what: string): never => {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${path.basename(modelPath)}: weightsManifest[${g}] ${what}`,
      're-export the model; its model.json is damaged or hand-edited',
    );
  };
  if (!group || typeof group !== 'object' || Array.isArray(group)) bad('is not an object');
  const { paths = [], weights = [] } = group as { paths?: unknown; weights?: unknown };
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string' || !p))
    bad(`has paths ${JSON.stringify(paths)}, not a list of shard file names`);
  if (!Array.isArray(weights)) bad('has no list of weights');
  (weights as unknown[]).forEach((w, k) => {
    const x = w as Partial<WeightSpec> | null;
    if (!x || typeof x !== 'object' || typeof x.name !== 'string' || !x.name) bad(`weight ${k} has no name`);
    if (!Array.isArray(x!.shape) || x!.shape.some((d) => !Number.isInteger(d) || d < 0))
      bad(`weight '${x!.name}' has shape ${JSON.stringify(x!.shape)}`);
    if (x!.dtype !== undefined && typeof x!.dtype !== 'string')
      bad(`weight '${x!.name}' has dtype ${JSON.stringify(x!.dtype)}`);
    const q = x!.quantization;
    if (
      q !== undefined &&
      (!q ||
        typeof q !== 'object' ||
        typeof q.dtype !== 'string' ||
        (q.scale !== undefined && !Number.isFinite(q.scale)) ||
        (q.min !== undefined && !Number.isFinite(q.min)))
    )
      bad(`weight '${x!.name}' has quantization ${JSON.stringify(q)}`);
  });
  return { paths: paths as string[], weights: weights as WeightSpec[] };
}

/** IEEE 754 half precision to a number. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

export function readWeights(modelPath: string, manifest: unknown): NamedWeight[] {
  const dir = path.dirname(modelPath);
  if (!Array.isArray(manifest)) {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${modelPath} has no weightsManifest`,
      'save the model with tfjs model.save() or tensorflowjs_converter, which write weightsManifest',
    );
  }
  const out: NamedWeight[] = [];
  for (const [g, group] of (manifest as unknown[]).entries()) {
    const { paths, weights } = checkGroup(modelPath, group, g);
    const buffers: Buffer[] = [];
    for (const p of paths) {
      const file = resolveInside(modelPath, p, 'the weight shard');
      if (fileProblem(file) === MISSING) {
        throw new UserError(
          'WEIGHTS_MISSING',
          `weight shard '${p}' named by ${path.basename(modelPath)} is missing (looked in ${dir})`,
          `copy '${p}' next to model.json; tfjs writes the shards beside the model file`,
        );
      }
      buffers.push(
        readUserFile(file, {
          what: `weight shard '${p}' of ${path.basename(modelPath)}:`,
          code: 'WEIGHTS_MISSING',
          fix: `put the shard '${p}' that tfjs wrote beside model.json`,
        }),
      );
    }
    const buf = Buffer.concat(buffers);
    let off = 0;
    for (const w of weights) {
      const count = w.shape.reduce((a, b) => a * b, 1);
      const stored = w.quantization?.dtype ?? w.dtype ?? 'float32';
      const bytes = BYTES[stored];
      // The supported layers' weights are real numbers: an int32 kernel is a damaged manifest.
      if (!bytes || !['float32', 'float16'].includes(w.dtype ?? 'float32')) {
        throw new UserError(
          'MODEL_UNSUPPORTED',
          `weight '${w.name}' has dtype '${w.quantization ? `${w.dtype ?? 'float32'}' quantised as '${stored}` : w.dtype}'`,
          'save float32 weights (no quantisation other than uint8/uint16/float16)',
        );
      }
      if (off + count * bytes > buf.length) {
        throw new UserError(
          'WEIGHTS_MISMATCH',
          `weight shards hold ${buf.length} bytes but the manifest needs more at '${w.name}' (${off + count * bytes} bytes)`,
          're-export the model: model.json and its .bin shards come from different saves',
        );
      }
      const data = new Float32Array(count);
      const view = new DataView(buf.buffer, buf.byteOffset + off, count * bytes);
      const q = w.quantization;
      for (let i = 0; i < count; i++) {
        switch (stored) {
          case 'float32':
            data[i] = view.getFloat32(i * 4, true);
            break;
          case 'uint8':
            data[i] = view.getUint8(i) * (q?.scale ?? 1) + (q?.min ?? 0);
            break;
          case 'uint16':
            data[i] = view.getUint16(i * 2, true) * (q?.scale ?? 1) + (q?.min ?? 0);
            break;
          case 'float16':
            data[i] = halfToFloat(view.getUint16(i * 2, true));
            break;
        }
      }
      off += count * bytes;
      out.push({ name: w.name, shape: w.shape, data });
    }
    if (off !== buf.length) {
      throw new UserError(
        'WEIGHTS_MISMATCH',
        `weight shards hold ${buf.length} bytes but the manifest describes ${off}`,
        're-export the model: model.json and its .bin shards come from different saves',
      );
    }
  }
  return out;
}
