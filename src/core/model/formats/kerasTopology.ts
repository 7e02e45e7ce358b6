/**
 * The Keras layer topology (class_name + config, as Keras and TensorFlow.js write it) into the
 * he-approx graph: shared by the TensorFlow.js model.json reader (tfjs.ts) and the Keras .h5 /
 * .keras reader (keras.ts). Sequential and functional models with one input and one output;
 * Keras 2 and Keras 3 inbound-node forms; weights looked up by layer and parameter name.
 */
import { UserError } from '../../errors';
import { parseActivationName } from '../../numerics/activations';
import { Graph, GraphNode, Op, size } from '../graph';
import { finishGraph, outDim } from '../passes';
import { NamedWeight } from '../weights';

export interface KerasTopology {
  class_name: string;
  config: any;
}

type Cfg = Record<string, any>;
interface LayerEntry {
  className: string;
  name: string;
  config: Cfg;
  inbound: string[];
}

export const SUPPORTED_LAYERS = [
  'InputLayer',
  'Dense',
  'Conv2D',
  'DepthwiseConv2D',
  'AveragePooling2D',
  'MaxPooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Flatten',
  'Reshape',
  'ZeroPadding2D',
  'BatchNormalization',
  'Add',
  'Concatenate',
  'Activation',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'Softmax',
  'Dropout',
];

const ALIASES: Record<string, string> = {
  Convolution2D: 'Conv2D',
  AvgPool2D: 'AveragePooling2D',
  AveragePooling2D: 'AveragePooling2D',
  MaxPool2D: 'MaxPooling2D',
  GlobalAvgPool2D: 'GlobalAveragePooling2D',
  GlobalMaxPool2D: 'GlobalMaxPooling2D',
  SpatialDropout2D: 'Dropout',
  GaussianNoise: 'Dropout',
  GaussianDropout: 'Dropout',
  AlphaDropout: 'Dropout',
};

/** The largest dimension a layer may declare: beyond it the file is damaged, not a model. */
const MAX_DIM = 1 << 24;

/**
 * Reads a layer's config values with their types checked: a damaged or hand-edited model.json
 * (units -1, kernel_size "x", strides [0, 0]) must stop with the layer and the key named, not
 * crash the backend or, worse, run with a default in their place.
 */
class ConfigReader {
  constructor(
    private readonly model: string,
    private readonly where: string,
    readonly c: Cfg,
  ) {}
  private bad(key: string, want: string): never {
    fail(
      this.model,
      `${this.where}: ${key} is ${JSON.stringify(this.c[key]) ?? 'missing'}, not ${want}`,
      're-export the model; its model.json is damaged or hand-edited',
      'MODEL_UNREADABLE',
    );
  }
  private isInt(v: unknown, min: number): v is number {
    return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= MAX_DIM;
  }
  /** An integer in min..MAX_DIM (`dflt` when absent). */
  int(key: string, min = 1, dflt?: number): number {
    const v = this.c[key];
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (!this.isInt(v, min)) this.bad(key, `an integer >= ${min}`);
    return v;
  }
  /** One integer or a pair of them (kernel_size, strides, pool_size, dilation_rate); required without a default. */
  pair(key: string, dflt?: number, min = 1): [number, number] {
    const v = this.c[key];
    if ((v === undefined || v === null) && dflt !== undefined) return [dflt, dflt];
    if (this.isInt(v, min)) return [v, v];
    if (Array.isArray(v) && (v.length === 1 || v.length === 2) && v.every((x) => this.isInt(x, min)))
      return [v[0], v[1] ?? v[0]];
    this.bad(key, `an integer >= ${min} or a pair of them`);
  }
  num(key: string, dflt: number, min = -Infinity): number {
    const v = this.c[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min)
      this.bad(key, `a finite number${min > -Infinity ? ` >= ${min}` : ''}`);
    return v;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.c[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.bad(key, 'true or false');
    return v;
  }
  oneOf<T extends string>(key: string, allowed: readonly T[], dflt: T): T {
    const v = this.c[key];
    if (v === undefined || v === null) return dflt;
    if (!allowed.includes(v as T)) this.bad(key, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
    return v as T;
  }
  /** A string the layer cannot do without. */
  str(key: string): string {
    const v = this.c[key];
    if (typeof v !== 'string') this.bad(key, 'a name');
    return v;
  }
  /** The activation name, when the layer has one ('linear' when absent). */
  activation(): string {
    const v = this.c.activation;
    if (v === undefined || v === null) return 'linear';
    if (typeof v !== 'string') this.bad('activation', 'an activation name');
    return v;
  }
}

function fail(
  model: string,
  msg: string,
  fix: string,
  code: 'MODEL_UNSUPPORTED' | 'MODEL_UNREADABLE' | 'LAYER_UNKNOWN' = 'MODEL_UNSUPPORTED',
): never {
  throw new UserError(code, `${model}: ${msg}`, fix);
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

function convertLayer(
  model: string,
  e: LayerEntry,
  ins: number[],
  nodes: GraphNode[],
  add: (n: Omit<GraphNode, 'id'>) => number,
  getW: (layer: string, param: string, shape: number[]) => Float32Array,
): number {
  const cls = ALIASES[e.className] ?? e.className;
  const c = e.config ?? {};
  const where = `layer '${e.name}' (${e.className})`;
  const r = new ConfigReader(model, where, c);
  const inShape = ins.length ? nodes[ins[0]].shape : [];
  const node = (spec: Op, shape: number[], name = e.name, inputs = ins) => {
    // Kernels larger than their input, strides beyond it: an empty or fractional output.
    if (shape.some((d) => !Number.isInteger(d) || d < 1))
      fail(
        model,
        `${where} outputs shape [${shape}] from input [${inShape}]`,
        "check the layer's kernel, stride and padding against its input",
      );
    return add({ name, layer: e.name, className: e.className, inputs, shape, spec });
  };
  if (r.oneOf('data_format', ['channels_last', 'channels_first'], 'channels_last') === 'channels_first')
    fail(model, `${where} uses channels_first`, 'save the model with data_format channels_last (the tfjs default)');
  const withActivation = (id: number): number => {
    const a = parseActivationName(r.activation(), `${model}: ${where}`);
    if (a === 'linear') return id;
    const shape = nodes[id].shape;
    if (a === 'softmax') return node({ op: 'softmax' }, shape, `${e.name}/softmax`, [id]);
    return node({ op: 'activation', act: a }, shape, `${e.name}/activation`, [id]);
  };
  const needRank = (r: number) => {
    if (inShape.length !== r)
      fail(
        model,
        `${where} expects rank-${r + 1} input (with batch) but gets shape [${inShape}]`,
        'check the layer order of the model',
      );
  };
  switch (cls) {
    case 'InputLayer': {
      const shape = (c.batch_input_shape ?? c.batch_shape ?? c.batchInputShape) as (number | null)[] | undefined;
      if (!Array.isArray(shape) || shape.length < 2 || shape.slice(1).some((v) => v === null || v === undefined)) {
        fail(
          model,
          `input '${e.name}' has no fixed per-sample shape (${JSON.stringify(shape)})`,
          'build the model with a fully specified inputShape',
        );
      }
      if (shape.slice(1).some((v) => typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_DIM)) {
        fail(
          model,
          `input '${e.name}' has shape ${JSON.stringify(shape)}, not positive integers`,
          're-export the model; its model.json is damaged or hand-edited',
          'MODEL_UNREADABLE',
        );
      }
      return node({ op: 'input' }, (shape as number[]).slice(1));
    }
    case 'Dense': {
      const inDim = inShape[inShape.length - 1];
      const units = r.int('units');
      const kernel = getW(e.name, 'kernel', [inDim, units]);
      const bias = r.bool('use_bias', true) ? getW(e.name, 'bias', [units]) : null;
      return withActivation(
        node({ op: 'dense', units, kernel, kernelShape: [inDim, units], bias }, [...inShape.slice(0, -1), units]),
      );
    }
    case 'Conv2D':
    case 'DepthwiseConv2D': {
      needRank(3);
      const [kh, kw] = r.pair('kernel_size');
      const strides = r.pair('strides', 1);
      const dilation = r.pair('dilation_rate', 1);
      const padding = r.oneOf('padding', ['valid', 'same'], 'valid');
      const cin = inShape[2];
      const depthwise = cls === 'DepthwiseConv2D';
      if (!depthwise && r.int('groups', 1, 1) !== 1) fail(model, `${where} uses grouped convolution`, 'use groups=1');
      // Depthwise [kh, kw, cin, mult] row-major is [kh, kw, 1, cin * mult] with output channel
      // c * mult + m: the grouped-convolution kernel with groups = cin, same bytes.
      const filters = depthwise ? cin * r.int('depth_multiplier', 1, 1) : r.int('filters');
      const kernel = depthwise
        ? getW(e.name, 'depthwise_kernel', [kh, kw, cin, filters / cin])
        : getW(e.name, 'kernel', [kh, kw, cin, filters]);
      const bias = r.bool('use_bias', true) ? getW(e.name, 'bias', [filters]) : null;
      const shape = [
        outDim(inShape[0], kh, strides[0], padding, dilation[0]),
        outDim(inShape[1], kw, strides[1], padding, dilation[1]),
        filters,
      ];
      return withActivation(
        node(
          {
            op: 'conv2d',
            filters,
            kernel,
            kernelShape: [kh, kw, depthwise ? 1 : cin, filters],
            bias,
            strides,
            padding,
            dilation,
            ...(depthwise ? { groups: cin } : {}),
          },
          shape,
        ),
      );
    }
    case 'ZeroPadding2D': {
      needRank(3);
      const p = c.padding ?? 1;
      const sub = (v: unknown) => new ConfigReader(model, where, { padding: v }).pair('padding', 0, 0);
      const [[t, b], [left, right]]: [number, number][] =
        Array.isArray(p) && p.length === 2 && Array.isArray(p[0])
          ? [sub(p[0]), sub(p[1])]
          : ((q) =>
              [
                [q[0], q[0]],
                [q[1], q[1]],
              ] as [number, number][])(r.pair('padding', 1, 0));
      return node(
        {
          op: 'pad',
          pads: [
            [t, b],
            [left, right],
            [0, 0],
          ],
          value: 0,
        },
        [inShape[0] + t + b, inShape[1] + left + right, inShape[2]],
      );
    }
    case 'AveragePooling2D':
    case 'MaxPooling2D': {
      needRank(3);
      const pool = r.pair('pool_size', 2);
      const strides = c.strides === undefined || c.strides === null ? pool : r.pair('strides', 1);
      const padding = r.oneOf('padding', ['valid', 'same'], 'valid');
      const shape = [
        outDim(inShape[0], pool[0], strides[0], padding),
        outDim(inShape[1], pool[1], strides[1], padding),
        inShape[2],
      ];
      return node({ op: cls === 'MaxPooling2D' ? 'maxpool' : 'avgpool', pool, strides, padding }, shape);
    }
    case 'GlobalAveragePooling2D':
      needRank(3);
      return node({ op: 'globalavgpool' }, [inShape[2]]);
    case 'GlobalMaxPooling2D':
      needRank(3);
      return node({ op: 'globalmaxpool' }, [inShape[2]]);
    case 'Flatten':
      return node({ op: 'flatten' }, [size(inShape)]);
    case 'Reshape': {
      const t = c.target_shape as number[];
      if (
        !Array.isArray(t) ||
        !t.length ||
        t.some((v) => !Number.isInteger(v) || (v < 1 && v !== -1) || v > MAX_DIM) ||
        t.filter((v) => v === -1).length > 1
      ) {
        fail(
          model,
          `${where}: target_shape is ${JSON.stringify(t)}`,
          're-export the model; its model.json is damaged or hand-edited',
          'MODEL_UNREADABLE',
        );
      }
      const known = t.filter((v) => v > 0).reduce((a, b) => a * b, 1);
      const target = t.map((v) => (v > 0 ? v : size(inShape) / known));
      if (size(target) !== size(inShape))
        fail(model, `${where} reshapes [${inShape}] to [${t}]`, 'fix the target shape');
      return node({ op: 'reshape', target }, target);
    }
    case 'BatchNormalization': {
      const axis = Array.isArray(c.axis) && c.axis.length === 1 ? c.axis[0] : (c.axis ?? -1);
      if (axis !== -1 && axis !== inShape.length)
        fail(model, `${where} normalises axis ${JSON.stringify(c.axis)}`, 'normalise the last (channels) axis');
      const ch = inShape[inShape.length - 1];
      const eps = r.num('epsilon', 1e-3, 0);
      const gamma = r.bool('scale', true) ? getW(e.name, 'gamma', [ch]) : new Float32Array(ch).fill(1);
      const beta = r.bool('center', true) ? getW(e.name, 'beta', [ch]) : new Float32Array(ch);
      const mean = getW(e.name, 'moving_mean', [ch]);
      const variance = getW(e.name, 'moving_variance', [ch]);
      const scale = new Float32Array(ch);
      const shift = new Float32Array(ch);
      for (let i = 0; i < ch; i++) {
        scale[i] = gamma[i] / Math.sqrt(variance[i] + eps);
        shift[i] = beta[i] - mean[i] * scale[i];
      }
      return node({ op: 'batchnorm', scale, shift }, inShape);
    }
    case 'Add': {
      if (ins.length < 2) fail(model, `${where} has ${ins.length} input`, 'an Add layer needs at least two inputs');
      for (const i of ins)
        if (nodes[i].shape.join() !== inShape.join())
          fail(model, `${where} adds shapes [${inShape}] and [${nodes[i].shape}]`, 'add tensors of equal shape');
      return node({ op: 'add' }, inShape);
    }
    case 'Concatenate': {
      if (ins.length < 2)
        fail(model, `${where} has ${ins.length} input`, 'a Concatenate layer needs at least two inputs');
      const rank = inShape.length;
      const ax = r.int('axis', -rank - 1, -1);
      const axis = ax < 0 ? ax + rank + 1 : ax;
      if (axis < 1 || axis > rank)
        fail(
          model,
          `${where} concatenates along axis ${ax} of rank-${rank + 1} tensors`,
          'concatenate along a per-sample axis',
        );
      const a = axis - 1;
      for (const i of ins) {
        const sh = nodes[i].shape;
        if (sh.length !== rank || sh.some((d, k) => k !== a && d !== inShape[k]))
          fail(
            model,
            `${where} concatenates shapes [${inShape}] and [${sh}] along axis ${axis}`,
            'concatenate tensors that agree on every other axis',
          );
      }
      return node(
        { op: 'concat', axis: a },
        inShape.map((d, k) => (k === a ? ins.reduce((t, i) => t + nodes[i].shape[a], 0) : d)),
      );
    }
    case 'Dropout':
      return node({ op: 'identity' }, inShape);
    case 'Activation': {
      const a = parseActivationName(r.str('activation'), `${model}: ${where}`);
      if (a === 'linear') return node({ op: 'identity' }, inShape);
      if (a === 'softmax') return node({ op: 'softmax' }, inShape);
      return node({ op: 'activation', act: a }, inShape);
    }
    case 'ReLU': {
      if (r.num('threshold', 0)) fail(model, `${where} has threshold ${c.threshold}`, 'use a ReLU without threshold');
      const slope = r.num('negative_slope', 0);
      if (slope) return node({ op: 'activation', act: { kind: 'leakyrelu', alpha: slope } }, inShape);
      const mv = c.max_value === undefined ? r.num('maxValue', NaN) : r.num('max_value', NaN);
      if (!Number.isNaN(mv) && mv <= 0)
        fail(
          model,
          `${where} has max_value ${mv}`,
          're-export the model; its model.json is damaged or hand-edited',
          'MODEL_UNREADABLE',
        );
      return node(
        {
          op: 'activation',
          act: Number.isNaN(mv) ? { kind: 'relu' } : mv === 6 ? { kind: 'relu6' } : { kind: 'relu', maxValue: mv },
        },
        inShape,
      );
    }
    case 'LeakyReLU':
      return node(
        {
          op: 'activation',
          act: { kind: 'leakyrelu', alpha: c.alpha === undefined ? r.num('negative_slope', 0.3) : r.num('alpha', 0.3) },
        },
        inShape,
      );
    case 'ELU':
      return node({ op: 'activation', act: { kind: 'elu', alpha: r.num('alpha', 1) } }, inShape);
    case 'Softmax':
      return node({ op: 'softmax' }, inShape);
    default:
      throw new UserError(
        'LAYER_UNKNOWN',
        `${model}: ${where} is not supported`,
        `he-approx supports ${SUPPORTED_LAYERS.join(', ')}; replace or remove '${e.name}'`,
      );
  }
}
