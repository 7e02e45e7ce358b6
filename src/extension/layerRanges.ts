/**
 * Finds each layer's entry in a model.json text, for diagnostics, CodeLens and hovers (issue 4).
 * vscode-free, so it runs and is tested on plain Node. Uses jsonc-parser's syntax tree, which gives
 * exact offsets whatever the formatting: a minified one-line model.json still gets precise ranges.
 */
import { Node, ParseError, findNodeAtLocation, parseTree, printParseErrorCode } from 'jsonc-parser';

export interface TextRange {
  start: number;
  end: number;
}

export interface LayerRange {
  name: string;
  className: string;
  /** The whole layer object. */
  range: TextRange;
  /** The value of the layer's "name" (where diagnostics and CodeLens anchor). */
  nameRange: TextRange;
}

export interface LayerRanges {
  layers: Map<string, LayerRange>;
  /** Syntax errors, with offsets: a corrupt model.json gets a diagnostic at the error. */
  errors: { message: string; range: TextRange }[];
  layout: 'tfjs' | 'converter' | 'unknown';
  /** True when the file is one long line (the editor offers to format it). */
  minified: boolean;
}

const span = (n: Node): TextRange => ({ start: n.offset, end: n.offset + n.length });

export function findLayerRanges(text: string): LayerRanges {
  const errors: ParseError[] = [];
  const root = parseTree(text, errors, { allowTrailingComma: false, disallowComments: true });
  const lines = text.split('\n');
  const minified = lines.length <= 2 && text.length > 400;
  const out: LayerRanges = {
    layers: new Map(),
    layout: 'unknown',
    minified,
    errors: errors.map((e) => ({
      message: `model.json: ${printParseErrorCode(e.error)}`,
      range: { start: e.offset, end: e.offset + Math.max(1, e.length) },
    })),
  };
  if (!root) return out;
  let layersNode: Node | undefined;
  const converter = findNodeAtLocation(root, ['modelTopology', 'model_config', 'config']);
  const tfjs = findNodeAtLocation(root, ['modelTopology', 'config']);
  const config = converter ?? tfjs;
  out.layout = converter ? 'converter' : tfjs ? 'tfjs' : 'unknown';
  if (config?.type === 'array')
    layersNode = config; // old Keras Sequential: config is the layer list
  else if (config) layersNode = findNodeAtLocation(config, ['layers']);
  for (const layer of layersNode?.children ?? []) {
    if (layer.type !== 'object') continue;
    const nameNode = findNodeAtLocation(layer, ['config', 'name']) ?? findNodeAtLocation(layer, ['name']);
    const clsNode = findNodeAtLocation(layer, ['class_name']);
    if (!nameNode || typeof nameNode.value !== 'string') continue;
    out.layers.set(nameNode.value, {
      name: nameNode.value,
      className: String(clsNode?.value ?? ''),
      range: span(layer),
      nameRange: span(nameNode),
    });
  }
  return out;
}

/** Zero-based line and character of an offset (what editors call a Position). */
export function offsetToPosition(text: string, offset: number): { line: number; character: number } {
  let line = 0;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++)
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  return { line, character: offset - lineStart };
}
