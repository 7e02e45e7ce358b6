/**
 * Calibration data and labels: reading (.npy, MNIST idx, CSV, JSON), scaling, shape checks
 * against the model's input, and a seeded split into calibration and held-out parts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../errors';
import { checkFile, readUserFile } from '../files';
import { Graph, transposeIndex } from '../model/graph';
import { Rng } from '../rng';
import { parseIdx } from './idx';
import { parseNpy } from './npy';

export interface RawArray {
  shape: number[];
  data: ArrayLike<number>;
  dtype: string;
}

/** Node reads at most 2 GiB into one buffer (readFileSync throws ERR_FS_FILE_TOO_LARGE beyond). */
const MAX_DATA_BYTES = 2 ** 31 - 1;

/**
 * A data file is read whole and converted to float32 (4 bytes a value, whatever its dtype: a uint8
 * file takes 4x its size); a file beyond what Node can read, or whose float32 copy would take most
 * of the machine's memory, is refused before reading, with the estimate and the limit.
 */
export function checkDataSize(file: string): void {
  const size = fs.statSync(file).size;
  const gb = (b: number) => `${(b / 2 ** 30).toFixed(1)} GB`;
  const fix = 'save a subset (a few thousand samples calibrate well) to a new file with numpy, and pass that';
  if (size > MAX_DATA_BYTES) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${path.basename(file)} is ${gb(size)}; he-approx reads data files of up to ${gb(MAX_DATA_BYTES + 1)}`,
      fix,
    );
  }
  const estimate = 5 * size;
  const limit = 0.75 * os.totalmem();
  if (estimate > limit) {
    throw new UserError(
      'MEMORY_LIMIT',
      `${path.basename(file)} (${gb(size)}) would take up to ${gb(estimate)} of memory as float32, more than ${gb(limit)} (3/4 of this machine's)`,
      fix,
    );
  }
}

export function readArray(file: string, what = 'data file'): RawArray {
  const role = { what, code: 'DATA_UNREADABLE' as const, fix: 'pass an existing .npy, idx, .csv or .json file' };
  checkFile(file, role);
  checkDataSize(file);
  const buf = readUserFile(file, role);
  const base = path.basename(file);
  const ext = path.extname(file).toLowerCase();
  if (ext === '.npy') return parseNpy(buf, base);
  if (ext === '.json') return parseJsonArray(buf.toString('utf8'), base);
  if (ext === '.csv' || ext === '.txt') return parseCsv(buf.toString('utf8'), base);
  if (
    /idx\d-ubyte$|\.idx\d?$/.test(base) ||
    (buf[0] === 0 && buf[1] === 0 && buf.length > 4 && buf[3] > 0 && buf[3] < 5)
  )
    return parseIdx(buf, base);
  throw new UserError(
    'DATA_UNREADABLE',
    `cannot tell the format of ${base}`,
    'use a .npy, .csv, .json or MNIST idx (…-idx3-ubyte) file',
  );
}

function parseJsonArray(text: string, name: string): RawArray {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} is not valid JSON (${(e as Error).message})`,
      'write the data as a nested JSON array of numbers',
    );
  }
  if (v && typeof v === 'object' && !Array.isArray(v) && Array.isArray((v as { data?: unknown }).data))
    v = (v as { data: unknown }).data;
  const shape: number[] = [];
  let cur: unknown = v;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0];
  }
  if (shape.length === 0)
    throw new UserError(
      'DATA_UNREADABLE',
      `${name} does not hold an array`,
      'write the data as a nested JSON array of numbers',
    );
  const flat = (v as unknown[]).flat(Infinity as 1) as unknown[];
  if (flat.length !== shape.reduce((a, b) => a * b, 1)) {
    throw new UserError(
      'DATA_SHAPE',
      `${name} is a ragged array (rows of different lengths)`,
      'give every sample the same shape',
    );
  }
  const data = new Float64Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const x = flat[i];
    data[i] = typeof x === 'number' ? x : x === null ? NaN : Number.NaN;
    if (typeof x !== 'number' && x !== null)
      throw new UserError(
        'DATA_UNREADABLE',
        `${name}: element ${i} is ${JSON.stringify(x)}, not a number`,
        'write numbers only',
      );
  }
  return { shape, data, dtype: 'float64' };
}

function parseCsv(text: string, name: string): RawArray {
  const lines = text.split(/\r?\n/).filter((l) => l.trim().length > 0);
  if (lines.length === 0) throw new UserError('DATA_UNREADABLE', `${name} is empty`, 'write one sample per line');
  const rows: number[][] = [];
  lines.forEach((l, i) => {
    const cells = l.split(/[,;\t]/).map((c) => c.trim());
    const nums = cells.map((c) => (c === '' ? NaN : Number(c)));
    // A header names its columns: most of its cells are not numbers. A first row of numbers with
    // one damaged cell is a damaged first sample, refused below like any other line, not dropped.
    if (i === 0 && 2 * nums.filter((x, j) => Number.isNaN(x) && !/^nan$/i.test(cells[j])).length >= cells.length)
      return;
    nums.forEach((x, j) => {
      if (Number.isNaN(x) && !/^nan$/i.test(cells[j])) {
        throw new UserError(
          'DATA_UNREADABLE',
          `${name} line ${i + 1}: '${cells[j]}' is not a number`,
          'write numbers only (a first header row is allowed)',
        );
      }
    });
    rows.push(nums);
  });
  const w = rows[0]?.length ?? 0;
  rows.forEach((r, i) => {
    if (r.length !== w)
      throw new UserError(
        'DATA_SHAPE',
        `${name}: row ${i + 1} has ${r.length} values, the first has ${w}`,
        'give every sample the same number of values',
      );
  });
  const data = new Float64Array(rows.length * w);
  rows.forEach((r, i) => data.set(r, i * w));
  return { shape: w === 1 ? [rows.length] : [rows.length, w], data, dtype: 'float64' };
}

export interface Dataset {
  /** Per-sample shape, equal to the model's input shape. */
  sampleShape: number[];
  count: number;
  x: Float32Array;
  labels: Int32Array | null;
  notes: string[];
}

export type InputScale = 'auto' | 'none' | number;

/** Preprocessing after scaling: per-channel normalisation (x - mean[c]) / std[c], c on the model input's channel axis. */
export interface InputNormalization {
  mean: number[];
  std: number[];
}

export interface InputPrep {
  scale?: InputScale;
  normalize?: InputNormalization | null;
  /** How the model lays its input out, when that differs from the graph's channels-last input. */
  layout?: Graph['inputLayout'];
  /** How messages name the files: 'held-out' for --heldout-data and --heldout-labels (default: none). */
  role?: string;
}

/** Reorders per-sample values from the model's layout to the graph's: graph axis i = model axis perm[i]. */
function permuteSamples(src: ArrayLike<number>, n: number, modelShape: number[], perm: number[]): Float64Array {
  const map = transposeIndex(modelShape, perm);
  const per = map.length;
  const out = new Float64Array(n * per);
  for (let s = 0; s < n; s++) for (let o = 0; o < per; o++) out[s * per + o] = src[s * per + map[o]];
  return out;
}

/** Class indices, one per sample: integers, or the argmax of one-hot (or score) rows. */
function readLabels(labelsFile: string, n: number, base: string, role: string | undefined): Int32Array {
  const lr = readArray(labelsFile, role ? `${role} labels file` : 'labels file');
  const lb = path.basename(labelsFile);
  if (lr.shape[0] !== n) {
    throw new UserError(
      'LABELS_MISMATCH',
      `${lb} has ${lr.shape[0]} labels but ${base} has ${n} samples`,
      'pass one label per sample, in the same order',
    );
  }
  const labels = new Int32Array(n);
  const w = lr.shape.slice(1).reduce((a, b) => a * b, 1);
  for (let i = 0; i < n; i++) {
    if (w === 1) {
      const v = lr.data[i];
      if (!Number.isInteger(v) || v < 0)
        throw new UserError(
          'LABELS_MISMATCH',
          `${lb}: label ${i} is ${v}, not a class index`,
          'pass integer class indices (or one-hot rows)',
        );
      labels[i] = v;
    } else {
      let best = 0;
      for (let j = 1; j < w; j++) if (lr.data[i * w + j] > lr.data[i * w + best]) best = j;
      labels[i] = best;
    }
  }
  return labels;
}

/** A per-channel normalisation that fits the model's C input channels, and its note. */
function checkedNormalization(norm: InputNormalization, C: number, base: string): string {
  for (const [k, v] of Object.entries({ mean: norm.mean, std: norm.std })) {
    if (v.length !== 1 && v.length !== C) {
      throw new UserError(
        'OPTION_INVALID',
        `--input-${k} has ${v.length} values but the model's input has ${C} channels`,
        `pass one value, or ${C} comma-separated values (one per channel)`,
      );
    }
  }
  if (norm.std.some((v) => !(v > 0)) || norm.mean.some((v) => !Number.isFinite(v))) {
    throw new UserError(
      'OPTION_INVALID',
      `--input-std must be positive and --input-mean finite (got mean ${norm.mean}, std ${norm.std})`,
      'pass e.g. --input-mean 0.485,0.456,0.406 --input-std 0.229,0.224,0.225',
    );
  }
  return `${base}: normalised per channel: (x - [${norm.mean.join(', ')}]) / [${norm.std.join(', ')}]`;
}

const fmt = (shape: number[]) => `[N, ${shape.join(', ')}]`;

/**
 * Loads samples (and optional labels) for a model whose per-sample (graph) input shape is
 * `inputShape`. Data may be in the graph's layout (channels last) or, for models with another
 * layout (ONNX's NCHW), in the model's; flat rows are read in the model's order.
 * `scale`: 'auto' divides uint8 data by 255 (the usual image convention), a number divides by it;
 * then `normalize` subtracts a per-channel mean and divides by a per-channel std.
 */
export function loadDataset(
  dataFile: string,
  labelsFile: string | null,
  inputShape: number[],
  scaleOrPrep: InputScale | InputPrep = 'auto',
): Dataset {
  const prep: InputPrep = typeof scaleOrPrep === 'object' ? scaleOrPrep : { scale: scaleOrPrep };
  const scale = prep.scale ?? 'auto';
  const layout = prep.layout;
  const raw = readArray(dataFile, prep.role ? `${prep.role} data file` : 'data file');
  const notes: string[] = [];
  const per = inputShape.reduce((a, b) => a * b, 1);
  const base = path.basename(dataFile);
  const n = raw.shape[0];
  const rest = raw.shape.slice(1);
  const restSize = rest.reduce((a, b) => a * b, 1);
  const modelShape = layout?.modelShape ?? inputShape;
  const want = layout ? `${fmt(modelShape)} (${layout.name}) or ${fmt(inputShape)} (channels last)` : fmt(inputShape);
  if (raw.shape.length < 1 || n === 0)
    throw new UserError('DATA_SHAPE', `${base} holds no samples`, `pass an array of shape ${want}`);
  if (restSize !== per) {
    throw new UserError(
      'DATA_SHAPE',
      `${base} has shape [${raw.shape.join(', ')}] (${restSize} values per sample) but the model's input is ${want} (${per} per sample)`,
      `pass data of shape ${want}${raw.shape.length === 1 && per > 1 ? ' (one sample per row)' : ''}`,
    );
  }
  let values: ArrayLike<number> = raw.data;
  if (rest.join() === inputShape.join()) {
    if (layout)
      notes.push(
        `${base}: samples of shape [${rest.join(', ')}] read as channels last (the model's ${layout.name} ${fmt(modelShape)} transposed)`,
      );
  } else if (layout && (rest.join() === modelShape.join() || rest.length !== modelShape.length)) {
    values = permuteSamples(raw.data, n, modelShape, layout.perm);
    notes.push(
      rest.join() === modelShape.join()
        ? `${base}: ${layout.name} samples converted to channels last`
        : `${base}: samples of shape [${rest.join(', ')}] read in the model's ${layout.name} order ${fmt(modelShape)}`,
    );
  } else if (rest.length === inputShape.length && rest.length > 1) {
    throw new UserError(
      'DATA_SHAPE',
      `${base} has samples of shape [${rest.join(', ')}], which is neither layout the model reads: ${want}`,
      `transpose the data to ${want}`,
    );
  } else
    notes.push(
      `${base}: samples of shape [${rest.join(', ')}] reshaped to the model's input [${inputShape.join(', ')}]`,
    );
  let div = 1;
  if (scale === 'auto' && raw.dtype === 'uint8') {
    div = 255;
    notes.push(`${base}: uint8 values scaled to [0, 1] (divided by 255); pass --input-scale none to keep 0..255`);
  } else if (typeof scale === 'number') div = scale;
  const C = inputShape[inputShape.length - 1] ?? 1;
  const norm = prep.normalize;
  if (norm) notes.push(checkedNormalization(norm, C, base));
  const mean = (c: number) => (norm ? norm.mean[norm.mean.length === 1 ? 0 : c] : 0);
  const std = (c: number) => (norm ? norm.std[norm.std.length === 1 ? 0 : c] : 1);
  const x = new Float32Array(n * per);
  for (let i = 0; i < x.length; i++) {
    const c = i % C;
    const v = (values[i] / div - mean(c)) / std(c);
    if (!Number.isFinite(v)) {
      throw new UserError(
        'DATA_NONFINITE',
        `${base}: sample ${Math.floor(i / per)} holds ${values[i]} at position ${i % per}`,
        'remove or impute samples with NaN/Inf before calibrating',
      );
    }
    x[i] = v;
  }
  const labels = labelsFile ? readLabels(labelsFile, n, base, prep.role) : null;
  return { sampleShape: inputShape, count: n, x, labels, notes };
}

export interface Split {
  calib: Int32Array;
  heldout: Int32Array;
}

/** Seeded disjoint split of sample indices into calibration and held-out parts. */
export function splitIndices(count: number, calib: number, heldout: number, seed: number): Split {
  if (calib < 1 || heldout < 0)
    throw new UserError(
      'OPTION_INVALID',
      `calibration (${calib}) and held-out (${heldout}) sizes must be at least 1`,
      'pass --calib N --heldout M with N, M >= 1',
    );
  if (calib + heldout > count) {
    throw new UserError(
      'OPTION_INVALID',
      `--calib ${calib} + --heldout ${heldout} exceeds the ${count} samples in the data`,
      `pass sizes that add up to at most ${count}`,
    );
  }
  const idx = new Int32Array(count);
  for (let i = 0; i < count; i++) idx[i] = i;
  new Rng(seed).shuffle(idx);
  return { calib: idx.slice(0, calib).sort(), heldout: idx.slice(calib, calib + heldout).sort() };
}
