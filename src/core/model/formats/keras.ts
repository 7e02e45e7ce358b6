/**
 * Keras model files: legacy HDF5 `.h5` (Keras 2: the topology in the file's `model_config`
 * attribute, weights under `model_weights/<layer>/` named by each group's `weight_names`) and
 * Keras 3 `.keras` (a zip of `config.json` and `model.weights.h5`, whose weights sit under
 * `layers/<layer>/vars/<i>` in the layer's creation order). HDF5 is read with h5wasm (the HDF5
 * C library compiled to WebAssembly). Regularizers, constraints and optimizer state are ignored:
 * they do not change inference. The topology goes through the same converter as TensorFlow.js
 * models (kerasTopology.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { unzipSync } from 'fflate';
import { UserError } from '../../errors';
import { MODEL_FILE, readUserFile } from '../../files';
import type { LoadedModel } from '../loaded';
import type { NamedWeight } from '../weights';
import { KerasTopology, kerasGraph } from './kerasTopology';

/** h5wasm's File, Group and Dataset objects (its types come with an ES-module-only package). */
type H5 = any;

// h5wasm is published as ES modules only; tsc's CommonJS output would turn import() into
// require(), which cannot load it, so the import is made at run time.
const importEsm = new Function('s', 'return import(s)') as (s: string) => Promise<any>;
let h5wasm: Promise<H5> | null = null;
let h5wasmModule = 'h5wasm/node';
/** Where bundled hosts keep h5wasm (its ES module files are copied beside the bundle, not bundled). */
export function setH5wasmModule(file: string): void {
  h5wasmModule = pathToFileURL(file).href;
}
async function h5(): Promise<H5> {
  h5wasm ??= importEsm(h5wasmModule).then(async (m) => {
    const lib = m.default ?? m;
    const mod = await lib.ready;
    // HDF5 errors become exceptions instead of diagnostics printed to stderr.
    mod.activate_throwing_error_handler?.();
    return lib;
  });
  return h5wasm;
}

const HDF5_MAGIC = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The innermost cause in an HDF5 error stack ("truncated file: eof = ..."), on one line. */
function hdf5Cause(e: unknown): string {
  const lines = String((e as Error)?.message ?? e).split('\n');
  const causes = lines.map((l) => /\(\): (.+)$/.exec(l.trim())?.[1]).filter((x): x is string => !!x);
  return (causes[causes.length - 1] ?? lines.find((l) => l.trim() && !/^HDF5-DIAG/.test(l)) ?? 'unknown error')
    .trim()
    .slice(0, 160);
}

function unreadable(base: string, why: string, fix: string): never {
  throw new UserError('MODEL_UNREADABLE', `${base}: ${why}`, fix);
}

/** Opens an HDF5 file after checking its signature (h5wasm aborts on garbage). */
async function openHdf5(file: string, base: string, what: string): Promise<H5> {
  const head = Buffer.alloc(8);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, 8, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (!head.equals(HDF5_MAGIC))
    unreadable(
      base,
      `${what} is not an HDF5 file`,
      'pass a Keras model saved with model.save("model.h5") or model.save("model.keras")',
    );
  const lib = await h5();
  let f: H5;
  try {
    f = new lib.File(file, 'r');
  } catch (e) {
    unreadable(
      base,
      `${what} cannot be opened as HDF5 (${hdf5Cause(e)})`,
      'the file is truncated or damaged; save the model again',
    );
  }
  return f;
}

const attr = (obj: H5, name: string): any => {
  const a = obj?.attrs?.[name];
  return a === undefined ? undefined : a.value;
};
const strs = (v: any): string[] =>
  v === undefined
    ? []
    : (Array.isArray(v) ? v : typeof v === 'string' ? [v] : Array.from(v as ArrayLike<string>)).map(String);

function dataset(f: H5, p: string, base: string): { shape: number[]; data: Float32Array } {
  let d: H5;
  try {
    d = f.get(p);
  } catch {
    d = null;
  }
  if (!d || d.shape === undefined) {
    throw new UserError(
      'WEIGHTS_MISSING',
      `${base}: weight '${p}' is missing from the file`,
      'save the whole model again (model.save) so that every layer keeps its weights',
    );
  }
  let v: any;
  try {
    v = d.value;
  } catch (e) {
    throw new UserError(
      'WEIGHTS_MISMATCH',
      `${base}: weight '${p}' cannot be read (${hdf5Cause(e)})`,
      'the file is truncated or damaged; save the model again',
    );
  }
  const shape = (d.shape as number[]).map(Number);
  const data = v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>, Number);
  if (data.length !== shape.reduce((a, b) => a * b, 1)) {
    throw new UserError(
      'WEIGHTS_MISMATCH',
      `${base}: weight '${p}' holds ${data.length} values for shape [${shape}]`,
      'the file is truncated or damaged; save the model again',
    );
  }
  return { shape, data };
}

function parseConfig(text: string, base: string, what: string): KerasTopology {
  let t: KerasTopology;
  try {
    t = JSON.parse(text);
  } catch (e) {
    unreadable(base, `${what} is not valid JSON (${(e as Error).message})`, 'save the model again with Keras');
  }
  if (!t || typeof t !== 'object' || !t.class_name || !t.config)
    unreadable(base, `${what} has no class_name/config`, 'save the model again with Keras');
  return t;
}

/** Keras 2 HDF5: topology from `model_config`, weights from `model_weights`. */
async function loadH5(
  file: string,
  base: string,
): Promise<{ topology: KerasTopology; weights: NamedWeight[]; version: string }> {
  const f = await openHdf5(file, base, 'the file');
  try {
    const cfg = attr(f, 'model_config');
    if (cfg === undefined) {
      unreadable(
        base,
        'holds weights only (no model_config: saved with save_weights)',
        'save the whole model with model.save("model.h5"), which stores the architecture too',
      );
    }
    const topology = parseConfig(String(cfg), base, 'model_config');
    const root = f.get('model_weights') ?? f;
    const weights: NamedWeight[] = [];
    for (const layer of strs(attr(root, 'layer_names'))) {
      const g = root.get(layer);
      for (const w of strs(attr(g, 'weight_names'))) {
        const d = dataset(root, `${layer}/${w}`, base);
        weights.push({ name: w, shape: d.shape, data: d.data });
      }
    }
    return { topology, weights, version: String(attr(f, 'keras_version') ?? '2') };
  } finally {
    f.close();
  }
}

/** The parameter names, in creation order, of a Keras 3 layer's `vars`. */
function varNames(cls: string, c: any): string[] {
  switch (cls) {
    case 'Dense':
    case 'Conv2D':
    case 'Convolution2D':
      return c.use_bias === false ? ['kernel'] : ['kernel', 'bias'];
    case 'DepthwiseConv2D':
      return c.use_bias === false ? ['depthwise_kernel'] : ['depthwise_kernel', 'bias'];
    case 'BatchNormalization':
      return [
        ...(c.scale === false ? [] : ['gamma']),
        ...(c.center === false ? [] : ['beta']),
        'moving_mean',
        'moving_variance',
      ];
    default:
      return [];
  }
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC-32 (ISO 3309, the zip format's checksum). */
function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * The first entry whose CRC-32 (from the zip's central directory, APPNOTE 4.3.12) differs from its
 * extracted bytes, or null. fflate inflates without checking it, and a flipped bit in a stored
 * (uncompressed) weights file would otherwise load as a silently different model.
 */
function crcMismatch(zip: Buffer, entries: Record<string, Uint8Array>): string | null {
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 65535); i--)
    if (zip.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) return 'the central directory';
  let at = zip.readUInt32LE(eocd + 16);
  for (let k = zip.readUInt16LE(eocd + 10); k > 0; k--) {
    if (at + 46 > zip.length || zip.readUInt32LE(at) !== 0x02014b50) return 'the central directory';
    const crc = zip.readUInt32LE(at + 16);
    const nameLen = zip.readUInt16LE(at + 28);
    const name = zip.toString('utf8', at + 46, at + 46 + nameLen);
    if (entries[name] && crc32(entries[name]) !== crc) return name;
    at += 46 + nameLen + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return null;
}

/** Keras 3 .keras: a zip with config.json and model.weights.h5. */
async function loadKeras3(
  file: string,
  base: string,
): Promise<{ topology: KerasTopology; weights: NamedWeight[]; version: string }> {
  let entries: Record<string, Uint8Array>;
  const zip = readUserFile(file, MODEL_FILE);
  try {
    entries = unzipSync(zip);
  } catch (e) {
    unreadable(
      base,
      `is not a readable .keras (zip) archive (${(e as Error).message})`,
      'pass a model saved with model.save("model.keras"); the file may be truncated',
    );
  }
  const damaged = crcMismatch(zip, entries);
  if (damaged)
    unreadable(
      base,
      `is damaged: ${damaged} in the archive fails its CRC-32 check`,
      'copy or save the model again; the file changed after it was written',
    );
  if (!entries['config.json'])
    unreadable(base, 'has no config.json', 'pass a model saved with model.save("model.keras")');
  const topology = parseConfig(Buffer.from(entries['config.json']).toString('utf8'), base, 'config.json');
  const meta = entries['metadata.json'] ? JSON.parse(Buffer.from(entries['metadata.json']).toString('utf8')) : {};
  const wbytes = entries['model.weights.h5'];
  if (!wbytes) {
    throw new UserError(
      'WEIGHTS_MISSING',
      `${base} has no model.weights.h5 (the archive holds ${Object.keys(entries).join(', ')})`,
      'save the trained model with model.save("model.keras"), which stores its weights in the archive',
    );
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'he-approx-keras-'));
  const wfile = path.join(tmp, 'model.weights.h5');
  fs.writeFileSync(wfile, wbytes);
  try {
    const f = await openHdf5(wfile, base, 'model.weights.h5');
    try {
      const weights: NamedWeight[] = [];
      const layers: any[] = Array.isArray(topology.config) ? topology.config : (topology.config.layers ?? []);
      for (const l of layers) {
        const name = l.config?.name ?? l.name;
        const names = varNames(l.class_name, l.config ?? {});
        names.forEach((param, i) => {
          const d = dataset(f, `layers/${name}/vars/${i}`, base);
          weights.push({ name: `${name}/${param}`, shape: d.shape, data: d.data });
        });
      }
      return { topology, weights, version: String(meta.keras_version ?? '3') };
    } finally {
      f.close();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export async function loadKeras(file: string, format: 'keras-h5' | 'keras'): Promise<LoadedModel> {
  const base = path.basename(file);
  let read: Awaited<ReturnType<typeof loadH5>>;
  try {
    read = format === 'keras' ? await loadKeras3(file, base) : await loadH5(file, base);
  } catch (e) {
    if (e instanceof UserError) throw e;
    // The HDF5 library's own errors (a truncated or damaged file) carry no more than this.
    unreadable(
      base,
      `cannot be read as a Keras file (${hdf5Cause(e)})`,
      'the file is truncated or damaged; save the model again with model.save()',
    );
  }
  const { topology, weights, version } = read;
  const graph = kerasGraph(base, topology, weights);
  // What tensorflowjs_converter would write, so that the tfjs exporter treats it like a converted model.
  const modelTopology = { keras_version: version, backend: 'tensorflow', model_config: topology };
  return { path: file, format, graph, keras: { topology, weights, modelTopology, layout: 'converter' } };
}
