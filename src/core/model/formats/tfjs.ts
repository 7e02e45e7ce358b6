/**
 * TensorFlow.js layers models: model.json (the `modelTopology.config` layout written by tfjs
 * `model.save()` and the `modelTopology.model_config` layout written by tensorflowjs_converter
 * from Keras) plus its weight shards.
 */
import * as path from 'path';
import { UserError } from '../../errors';
import { MODEL_FILE, readUserFile } from '../../files';
import type { LoadedModel } from '../loaded';
import { readWeights } from '../weights';
import { KerasTopology, kerasGraph } from './kerasTopology';

type Cfg = Record<string, any>;

function fail(
  model: string,
  msg: string,
  fix: string,
  code: 'MODEL_UNSUPPORTED' | 'MODEL_UNREADABLE' = 'MODEL_UNSUPPORTED',
): never {
  throw new UserError(code, `${model}: ${msg}`, fix);
}

function readJson(file: string): Record<string, unknown> {
  const text = readUserFile(file, MODEL_FILE).toString('utf8');
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v;
  } catch (e) {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${file} is not valid JSON (${(e as Error).message})`,
      'pass a TensorFlow.js layers model.json as written by model.save() or tensorflowjs_converter',
    );
  }
}

export function loadTfjs(file: string): LoadedModel {
  const base = path.basename(file);
  const json = readJson(file);
  if (json.format === 'graph-model' || (json.modelTopology && (json.modelTopology as Cfg).node)) {
    fail(
      base,
      'is a TensorFlow.js graph model (converted from a SavedModel); he-approx needs a layers model',
      'convert the Keras model with `tensorflowjs_converter --input_format keras` (layers format), or pass the Keras .h5/.keras file itself',
    );
  }
  const mt = json.modelTopology as Cfg | undefined;
  if (!mt || typeof mt !== 'object') {
    fail(
      base,
      'has no modelTopology',
      'pass a TensorFlow.js layers model.json as written by model.save() or tensorflowjs_converter',
      'MODEL_UNREADABLE',
    );
  }
  const layout = mt.model_config ? 'converter' : 'tfjs';
  const topology = (mt.model_config ?? mt) as KerasTopology;
  if (!topology.class_name || !topology.config) {
    fail(base, 'modelTopology has no class_name/config', 'pass a TensorFlow.js layers model.json', 'MODEL_UNREADABLE');
  }
  const weights = readWeights(file, json.weightsManifest);
  const graph = kerasGraph(base, topology, weights);
  return { path: file, format: 'tfjs', graph, keras: { topology, weights, modelTopology: mt, layout } };
}
