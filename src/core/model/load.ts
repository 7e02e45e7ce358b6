/**
 * Opens a model file in any supported format and returns the he-approx graph. One reader per
 * format (formats/): TensorFlow.js layers model.json, Keras .h5 (Keras 2) and .keras (Keras 3),
 * ONNX. Each produces the same channels-last graph; nothing downstream knows the source format,
 * except the exporters, which write the approximated model back in the user's format.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { Graph } from './graph';
import type { NamedWeight } from './weights';
import type { KerasTopology } from './formats/kerasTopology';
import type { OnnxSource } from './formats/onnx/import';

export type ModelFormat = 'tfjs' | 'keras-h5' | 'keras' | 'onnx';

export interface LoadedModel {
  path: string;
  format: ModelFormat;
  graph: Graph;
  /** Keras topology and weights (tfjs and Keras files): what the tfjs exporter rewrites. */
  keras?: {
    topology: KerasTopology;
    weights: NamedWeight[];
    /** model.json's modelTopology (tfjs) or what a converter would write (Keras files). */
    modelTopology: Record<string, unknown>;
    layout: 'tfjs' | 'converter';
  };
  /** The decoded ONNX model and where each activation sits in it: what the ONNX exporter rewrites. */
  onnx?: OnnxSource;
}

export function modelFormatOf(file: string): ModelFormat | null {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.onnx') return 'onnx';
  if (ext === '.h5' || ext === '.hdf5') return 'keras-h5';
  if (ext === '.keras') return 'keras';
  if (ext === '.json') return 'tfjs';
  return null;
}

export async function loadModel(modelPath: string): Promise<LoadedModel> {
  let file = path.resolve(modelPath);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'model.json');
  const base = path.basename(file);
  if (!fs.existsSync(file)) {
    throw new UserError('MODEL_UNREADABLE', `model file ${file} does not exist`, 'pass the path of a TensorFlow.js model.json, an .onnx, .h5 or .keras file');
  }
  const format = modelFormatOf(file);
  switch (format) {
    case 'onnx': return (await import('./formats/onnx/import')).loadOnnx(file);
    case 'keras-h5': case 'keras': return (await import('./formats/keras')).loadKeras(file, format);
    case 'tfjs': return (await import('./formats/tfjs')).loadTfjs(file);
    default:
      if (/\.(pb|pt|pth|tflite|safetensors)$/i.test(file)) {
        throw new UserError('MODEL_UNREADABLE', `${base}: ${path.extname(file)} files cannot be read by he-approx`,
          'export the model to ONNX (torch.onnx.export, tf2onnx) or save it as Keras .h5/.keras, and pass that file');
      }
      throw new UserError('MODEL_UNREADABLE', `${base}: unknown model format`, 'pass a TensorFlow.js model.json, an .onnx, .h5 or .keras file');
  }
}
