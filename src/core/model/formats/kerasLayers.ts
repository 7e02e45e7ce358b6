/**
 * Keras layers into graph nodes, one converter per layer class (CONVERTERS), each reading its
 * config through ConfigReader so that a damaged or hand-edited file stops with the layer and the
 * key named. kerasTopology.ts walks the topology and calls convertLayer for each layer.
 */
import { UserError } from '../../errors';
import { parseActivationName } from '../../numerics/activations';
import { GraphNode, Op, size } from '../graph';
import { outDim } from '../passes';

export type Cfg = Record<string, any>;
export interface LayerEntry {
  className: string;
  name: string;
  config: Cfg;
  inbound: string[];
}

/** The largest dimension a layer may declare: beyond it the file is damaged, not a model. */
export const MAX_DIM = 1 << 24;

/**
 * Reads a layer's config values with their types checked: a damaged or hand-edited model.json
 * (units -1, kernel_size "x", strides [0, 0]) must stop with the layer and the key named, not
 * crash the backend or, worse, run with a default in their place.
 */
export class ConfigReader {
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

export function fail(
  model: string,
  msg: string,
  fix: string,
  code: 'MODEL_UNSUPPORTED' | 'MODEL_UNREADABLE' | 'LAYER_UNKNOWN' = 'MODEL_UNSUPPORTED',
): never {
  throw new UserError(code, `${model}: ${msg}`, fix);
}

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

/** What a layer's converter reads: its entry and config, its inputs, and how to add nodes. */
interface LayerContext {
  model: string;
  e: LayerEntry;
  /** The class name, aliases resolved (Convolution2D is Conv2D). */
  cls: string;
  c: Cfg;
  /** "layer 'name' (Class)", for messages. */
  where: string;
  r: ConfigReader;
  ins: number[];
  /** The first input's shape. */
  inShape: number[];
  nodes: GraphNode[];
  /** Adds a node for this layer (by default named after it, reading its inputs); refuses an empty or fractional shape. */
  node: (spec: Op, shape: number[], name?: string, inputs?: number[]) => number;
  /** The layer's fused activation after node `id`, if any. */
  withActivation: (id: number) => number;
  needRank: (rank: number) => void;
  getW: (layer: string, param: string, shape: number[]) => Float32Array;
}

export function convertLayer(
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
  const k: LayerContext = { model, e, cls, c, where, r, ins, inShape, nodes, node, withActivation, needRank, getW };
  const convert = CONVERTERS[cls];
  if (!convert)
    throw new UserError(
      'LAYER_UNKNOWN',
      `${model}: ${where} is not supported`,
      `he-approx supports ${SUPPORTED_LAYERS.join(', ')}; replace or remove '${e.name}'`,
    );
  return convert(k);
}

function inputLayer(k: LayerContext): number {
  const { model, e, c, node } = k;
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

function dense(k: LayerContext): number {
  const { e, r, inShape, node, withActivation, getW } = k;
  const inDim = inShape[inShape.length - 1];
  const units = r.int('units');
  const kernel = getW(e.name, 'kernel', [inDim, units]);
  const bias = r.bool('use_bias', true) ? getW(e.name, 'bias', [units]) : null;
  return withActivation(
    node({ op: 'dense', units, kernel, kernelShape: [inDim, units], bias }, [...inShape.slice(0, -1), units]),
  );
}

function conv2D(k: LayerContext): number {
  const { model, e, cls, where, r, inShape, node, withActivation, needRank, getW } = k;
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

function zeroPadding2D(k: LayerContext): number {
  const { model, c, where, r, inShape, node, needRank } = k;
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

function averagePooling2D(k: LayerContext): number {
  const { cls, c, r, inShape, node, needRank } = k;
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

function globalAveragePooling2D(k: LayerContext): number {
  const { inShape, node, needRank } = k;
  needRank(3);
  return node({ op: 'globalavgpool' }, [inShape[2]]);
}

function globalMaxPooling2D(k: LayerContext): number {
  const { inShape, node, needRank } = k;
  needRank(3);
  return node({ op: 'globalmaxpool' }, [inShape[2]]);
}

function flatten(k: LayerContext): number {
  const { inShape, node } = k;
  return node({ op: 'flatten' }, [size(inShape)]);
}

function reshape(k: LayerContext): number {
  const { model, c, where, inShape, node } = k;
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
  if (size(target) !== size(inShape)) fail(model, `${where} reshapes [${inShape}] to [${t}]`, 'fix the target shape');
  return node({ op: 'reshape', target }, target);
}

function batchNormalization(k: LayerContext): number {
  const { model, e, c, where, r, inShape, node, getW } = k;
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

function add(k: LayerContext): number {
  const { model, where, ins, inShape, nodes, node } = k;
  if (ins.length < 2) fail(model, `${where} has ${ins.length} input`, 'an Add layer needs at least two inputs');
  for (const i of ins)
    if (nodes[i].shape.join() !== inShape.join())
      fail(model, `${where} adds shapes [${inShape}] and [${nodes[i].shape}]`, 'add tensors of equal shape');
  return node({ op: 'add' }, inShape);
}

function concatenate(k: LayerContext): number {
  const { model, where, r, ins, inShape, nodes, node } = k;
  if (ins.length < 2) fail(model, `${where} has ${ins.length} input`, 'a Concatenate layer needs at least two inputs');
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

function dropout(k: LayerContext): number {
  const { inShape, node } = k;
  return node({ op: 'identity' }, inShape);
}

function activation(k: LayerContext): number {
  const { model, where, r, inShape, node } = k;
  const a = parseActivationName(r.str('activation'), `${model}: ${where}`);
  if (a === 'linear') return node({ op: 'identity' }, inShape);
  if (a === 'softmax') return node({ op: 'softmax' }, inShape);
  return node({ op: 'activation', act: a }, inShape);
}

function reLU(k: LayerContext): number {
  const { model, c, where, r, inShape, node } = k;
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

function leakyReLU(k: LayerContext): number {
  const { c, r, inShape, node } = k;
  return node(
    {
      op: 'activation',
      act: { kind: 'leakyrelu', alpha: c.alpha === undefined ? r.num('negative_slope', 0.3) : r.num('alpha', 0.3) },
    },
    inShape,
  );
}

function eLU(k: LayerContext): number {
  const { r, inShape, node } = k;
  return node({ op: 'activation', act: { kind: 'elu', alpha: r.num('alpha', 1) } }, inShape);
}

function softmax(k: LayerContext): number {
  const { inShape, node } = k;
  return node({ op: 'softmax' }, inShape);
}

const CONVERTERS: Record<string, (k: LayerContext) => number> = {
  InputLayer: inputLayer,
  Dense: dense,
  Conv2D: conv2D,
  DepthwiseConv2D: conv2D,
  AveragePooling2D: averagePooling2D,
  MaxPooling2D: averagePooling2D,
  GlobalAveragePooling2D: globalAveragePooling2D,
  GlobalMaxPooling2D: globalMaxPooling2D,
  Flatten: flatten,
  Reshape: reshape,
  ZeroPadding2D: zeroPadding2D,
  BatchNormalization: batchNormalization,
  Add: add,
  Concatenate: concatenate,
  Activation: activation,
  ReLU: reLU,
  LeakyReLU: leakyReLU,
  ELU: eLU,
  Softmax: softmax,
  Dropout: dropout,
};

/** The layer classes he-approx reads, as messages list them. */
export const SUPPORTED_LAYERS = Object.keys(CONVERTERS);
