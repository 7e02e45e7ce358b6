/**
 * The Keras layer topology (class_name + config, as Keras and TensorFlow.js write it) into the
 * he-approx graph: shared by the TensorFlow.js model.json reader (tfjs.ts) and the Keras .h5 /
 * .keras reader (keras.ts). Sequential and functional models with one input and one output;
 * Keras 2 and Keras 3 inbound-node forms; weights looked up by layer and parameter name.
 */
import { UserError } from '../../errors';
import { Graph, GraphNode } from '../graph';
import { finishGraph } from '../passes';
import { NamedWeight } from '../weights';
import { Cfg, LayerEntry, convertLayer, fail } from './kerasLayers';

export { SUPPORTED_LAYERS } from './kerasLayers';

export interface KerasTopology {
  class_name: string;
  config: any;
}

/** Parses Keras 2 (`[[name, node, tensor, kwargs], ...]`) and Keras 3 (`{args: [...]}`) inbound nodes. */
function parseInbound(raw: unknown, model: string, layer: string): string[] {
  if (!Array.isArray(raw) || raw.length === 0) return [];
  if (raw.length > 1)
    fail(
      model,
      `layer '${layer}' is called more than once (shared layer)`,
      'give each call its own layer; shared layers are not supported',
    );
  const node = raw[0];
  const refs: string[] = [];
  const visit = (x: any) => {
    if (Array.isArray(x) && typeof x[0] === 'string') {
      if ((x[1] ?? 0) !== 0 || (x[2] ?? 0) !== 0)
        fail(
          model,
          `layer '${layer}' reads output ${x[1]}/${x[2]} of '${x[0]}'`,
          'use single-output layers without sharing',
        );
      refs.push(x[0]);
    } else if (x && typeof x === 'object' && x.class_name === '__keras_tensor__') {
      refs.push(x.config.keras_history[0]);
    } else if (Array.isArray(x)) x.forEach(visit);
    else if (x && typeof x === 'object' && Array.isArray(x.args)) x.args.forEach(visit);
  };
  visit(node);
  return refs;
}

/** Layer k of the topology is an object with a class name, a config object and a name. */
function checkEntry(model: string, l: unknown, k: number, functional: boolean): asserts l is Cfg {
  const bad = (what: string) =>
    fail(
      model,
      `layer ${k} of the topology ${what}`,
      're-export the model; its model.json is damaged or hand-edited',
      'MODEL_UNREADABLE',
    );
  if (!l || typeof l !== 'object' || Array.isArray(l)) bad('is not an object');
  const e = l as Cfg;
  if (typeof e.class_name !== 'string' || !e.class_name) bad('has no class_name');
  if (!e.config || typeof e.config !== 'object' || Array.isArray(e.config)) bad(`('${e.class_name}') has no config`);
  const name = functional ? (e.name ?? e.config.name) : (e.config.name ?? e.name);
  if (typeof name !== 'string' || !name) bad(`('${e.class_name}') has no name`);
}

function layerEntries(
  model: string,
  topology: KerasTopology,
): { entries: LayerEntry[]; inputName: string; outputName: string } {
  const cls = topology.class_name;
  if (cls === 'Sequential') {
    const raw: Cfg[] = Array.isArray(topology.config) ? topology.config : topology.config.layers;
    if (!Array.isArray(raw) || raw.length === 0)
      fail(model, 'Sequential model has no layers', 'save a model with at least one layer', 'MODEL_UNREADABLE');
    const entries: LayerEntry[] = [];
    let prev: string | null = null;
    for (const [k, l] of raw.entries()) {
      checkEntry(model, l, k, false);
      const name = l.config.name ?? l.name;
      if (prev === null && l.class_name !== 'InputLayer') {
        const shape = l.config.batch_input_shape ?? l.config.batch_shape;
        if (!Array.isArray(shape))
          fail(
            model,
            `first layer '${name}' has no batch_input_shape`,
            'build the model with an inputShape on its first layer',
          );
        entries.push({ className: 'InputLayer', name: '__input__', config: { batch_input_shape: shape }, inbound: [] });
        prev = '__input__';
      }
      entries.push({ className: l.class_name, name, config: l.config, inbound: prev === null ? [] : [prev] });
      prev = name;
    }
    return { entries, inputName: entries[0].name, outputName: prev! };
  }
  if (cls === 'Model' || cls === 'Functional') {
    const c = topology.config;
    const ins = c.input_layers as unknown[];
    const outs = c.output_layers as unknown[];
    const flat = (x: unknown): string[] =>
      Array.isArray(x) && typeof x[0] === 'string' ? [x[0]] : Array.isArray(x) ? x.flatMap(flat) : [];
    const inNames = flat(ins);
    const outNames = flat(outs);
    if (inNames.length !== 1 || outNames.length !== 1) {
      fail(
        model,
        `functional model has ${inNames.length} inputs and ${outNames.length} outputs`,
        'he-approx supports models with one input and one output',
      );
    }
    if (!Array.isArray(c.layers))
      fail(
        model,
        'functional model has no layers list',
        're-export the model; its model.json is damaged',
        'MODEL_UNREADABLE',
      );
    (c.layers as unknown[]).forEach((l, k) => checkEntry(model, l, k, true));
    const entries = (c.layers as Cfg[]).map((l) => ({
      className: l.class_name,
      name: l.name ?? l.config.name,
      config: l.config,
      inbound: parseInbound(l.inbound_nodes, model, l.name ?? l.config.name),
    }));
    return { entries, inputName: inNames[0], outputName: outNames[0] };
  }
  fail(model, `model class '${cls}' is not supported`, 'save a Sequential or functional (tf.model) layers model');
}

/** Builds the graph of a Keras topology; `model` names the file in messages. */
/**
 * The weight `param` ('kernel', 'moving_mean', ...) of Keras layer `layer`: the weight named
 * '.../layer/param' (a ':0' suffix, as TensorFlow writes it, ignored).
 */
export function kerasWeight(weights: NamedWeight[], layer: string, param: string): NamedWeight | undefined {
  return weights.find((x) => {
    const seg = x.name.split('/');
    return seg.length >= 2 && seg[seg.length - 2] === layer && seg[seg.length - 1].replace(/:\d+$/, '') === param;
  });
}

export function kerasGraph(model: string, topology: KerasTopology, weights: NamedWeight[]): Graph {
  const { entries, inputName, outputName } = layerEntries(model, topology);
  const byName = new Map(entries.map((e) => [e.name, e]));
  if (byName.size !== entries.length) {
    const dup = entries.find((e, k) => entries.findIndex((f) => f.name === e.name) !== k)!;
    fail(
      model,
      `two layers are named '${dup.name}'`,
      're-export the model; its model.json is damaged or hand-edited',
      'MODEL_UNREADABLE',
    );
  }
  const used = new Set<string>();
  const getW = (layer: string, param: string, shape: number[]): Float32Array => {
    const w = kerasWeight(weights, layer, param);
    if (!w) {
      throw new UserError(
        'WEIGHTS_MISSING',
        `${model}: layer '${layer}' needs weight '${layer}/${param}' but the weights manifest has none`,
        're-export the model so that model.json and its weight shards match',
      );
    }
    if (w.shape.length !== shape.length || w.shape.some((v, i) => shape[i] !== -1 && v !== shape[i])) {
      throw new UserError(
        'WEIGHTS_MISMATCH',
        `${model}: weight '${w.name}' has shape [${w.shape}] but layer '${layer}' needs [${shape.map((v) => (v < 0 ? '?' : v))}]`,
        're-export the model so that model.json and its weight shards match',
      );
    }
    used.add(w.name);
    return w.data;
  };
  const nodes: GraphNode[] = [];
  const idOf = new Map<string, number>();
  const notes: string[] = [];
  const visiting = new Set<string>();
  const add = (n: Omit<GraphNode, 'id'>): number => {
    nodes.push({ ...n, id: nodes.length });
    return nodes.length - 1;
  };

  const build = (name: string): number => {
    const done = idOf.get(name);
    if (done !== undefined) return done;
    const e = byName.get(name);
    if (!e)
      fail(
        model,
        `a layer reads from '${name}', which does not exist`,
        're-export the model; its topology is inconsistent',
        'MODEL_UNREADABLE',
      );
    if (visiting.has(name))
      fail(
        model,
        `cycle through layer '${name}'`,
        're-export the model; its topology is inconsistent',
        'MODEL_UNREADABLE',
      );
    visiting.add(name);
    const ins = e.inbound.map(build);
    visiting.delete(name);
    const id = convertLayer(model, e, ins, nodes, add, getW);
    idOf.set(name, id);
    return id;
  };
  if (byName.get(inputName)?.className !== 'InputLayer')
    fail(model, `input '${inputName}' is not an InputLayer`, 're-export the model', 'MODEL_UNREADABLE');
  const inputId = build(inputName);
  const output = build(outputName);
  const unusedWeights = weights.filter((w) => !used.has(w.name)).map((w) => w.name);
  if (unusedWeights.length) notes.push(`Weights not used by any supported layer: ${unusedWeights.join(', ')}`);
  return finishGraph(topology.config?.name ?? model, nodes, inputId, output, notes);
}
