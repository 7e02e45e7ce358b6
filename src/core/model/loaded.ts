/**
 * What every format's reader returns (formats/): the graph, plus what the exporters need to write
 * the approximated model back in the user's format. Types only, so that the readers and the
 * dispatcher (load.ts) need not import each other.
 */
import type { Graph } from './graph';
import type { NamedWeight } from './weights';
import type { KerasTopology } from './formats/kerasTopology';
import type { OnnxSource } from './formats/onnx/context';

export type ModelFormat = 'tfjs' | 'keras-h5' | 'keras' | 'onnx';

export interface LoadedModel {
  path: string;
  format: ModelFormat;
  graph: Graph;
  /**
   * The graph as the file describes it, where max pooling was expanded into its max tree
   * (maxTree.ts) in `graph`: what the average-pooling comparison runs.
   */
  sourceGraph?: Graph;
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
