/**
 * A loaded model as plain data for hosts (the editor's model view lists it): format, input and
 * every graph node with its operation and output shape. Serialisable; nothing heavy.
 */
import { describeActivation } from '../numerics/activations';
import type { LoadedModel } from './load';

export interface ModelSummary {
  path: string;
  format: string;
  name: string;
  /** Per-sample input shape as the model declares it (NCHW for ONNX images) and the layout's name. */
  input: { shape: number[]; layout: string };
  nodes: { name: string; layer: string; op: string; className: string; shape: number[]; activation: string | null }[];
  notes: string[];
}

export function summarizeModel(m: LoadedModel): ModelSummary {
  const g = m.graph;
  return {
    path: m.path,
    format: m.format,
    name: g.name,
    input: { shape: g.inputLayout?.modelShape ?? g.inputShape, layout: g.inputLayout?.name ?? 'channels last' },
    nodes: g.nodes.map((n) => ({
      name: n.name,
      layer: n.layer,
      op: n.spec.op,
      className: n.className,
      shape: n.shape,
      activation: n.spec.op === 'activation' ? describeActivation(n.spec.act) : null,
    })),
    notes: g.notes,
  };
}
