/**
 * Opens a model file in any supported format and returns the he-approx graph. One reader per
 * format (formats/): TensorFlow.js layers model.json, Keras .h5 (Keras 2) and .keras (Keras 3),
 * ONNX. Each produces the same channels-last graph; nothing downstream knows the source format,
 * except the exporters, which write the approximated model back in the user's format.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { MODEL_FILE, checkFile } from '../files';
import type { Graph } from './graph';
import { expandMaxPooling, hasMaxPooling } from './maxTree';
import type { LoadedModel, ModelFormat } from './loaded';

export type { LoadedModel, ModelFormat };

export function modelFormatOf(file: string): ModelFormat | null {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.onnx') return 'onnx';
  if (ext === '.h5' || ext === '.hdf5') return 'keras-h5';
  if (ext === '.keras') return 'keras';
  if (ext === '.json') return 'tfjs';
  return null;
}

/** The model file a path names: a folder means its model.json (a tfjs export). */
export function modelFilePath(modelPath: string): string {
  const file = path.resolve(modelPath);
  return fs.existsSync(file) && fs.statSync(file).isDirectory() ? path.join(file, 'model.json') : file;
}

export async function loadModel(modelPath: string): Promise<LoadedModel> {
  const file = modelFilePath(modelPath);
  const base = path.basename(file);
  checkFile(file, MODEL_FILE);
  const model = await readModel(file);
  checkFiniteWeights(model.graph, base);
  // Max pooling becomes a tree of pairwise maxima whose |x| are approximated like activations.
  if (hasMaxPooling(model.graph)) return { ...model, graph: expandMaxPooling(model.graph), sourceGraph: model.graph };
  return model;
}

async function readModel(file: string): Promise<LoadedModel> {
  const base = path.basename(file);
  const format = modelFormatOf(file);
  switch (format) {
    case 'onnx':
      return (await import('./formats/onnx/import')).loadOnnx(file);
    case 'keras-h5':
    case 'keras':
      return (await import('./formats/keras')).loadKeras(file, format);
    case 'tfjs':
      return (await import('./formats/tfjs')).loadTfjs(file);
    default:
      if (/\.(pb|pt|pth|tflite|safetensors)$/i.test(file)) {
        throw new UserError(
          'MODEL_UNREADABLE',
          `${base}: ${path.extname(file)} files cannot be read by he-approx`,
          'export the model to ONNX (torch.onnx.export, tf2onnx) or save it as Keras .h5/.keras, and pass that file',
        );
      }
      throw new UserError(
        'MODEL_UNREADABLE',
        `${base}: unknown model format`,
        'pass a TensorFlow.js model.json, an .onnx, .h5 or .keras file',
      );
  }
}

/**
 * One NaN or infinity in the weights makes every output NaN, and the analysis would go on to
 * report nonsense intervals with exit code 0; refuse the model here, whatever its format, naming
 * the first layer and weight affected.
 */
export function checkFiniteWeights(g: Graph, base: string): void {
  for (const n of g.nodes) {
    for (const [key, v] of Object.entries(n.spec)) {
      if (!(v instanceof Float32Array || v instanceof Float64Array)) continue;
      let bad = 0;
      for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) bad++;
      if (bad) {
        throw new UserError(
          'WEIGHTS_NONFINITE',
          `${base}: layer '${n.layer}' has ${bad} NaN or infinite value${bad === 1 ? '' : 's'} in its ${key} (of ${v.length})`,
          'the weights file is damaged or the training diverged: export the model again from a checkpoint with finite weights',
        );
      }
    }
  }
}
