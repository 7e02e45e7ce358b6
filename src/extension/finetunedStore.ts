/**
 * The fine-tuned model of an analysis, kept beside its cached report so that Export can write it
 * (finetuned/) long after the worker that trained it has exited. Node's structured-clone format
 * (v8.serialize) holds the graph's typed arrays and the polynomials' Map as they are. The file
 * lives in the extension's own storage, never in the workspace; one that does not read back (a
 * Node upgrade changed the format, a partial write) is treated as missing: analyse again.
 * vscode-free (the worker and the tests use it).
 */
import * as fs from 'fs';
import * as v8 from 'v8';
import type { FinetunedModel } from '../core/finetune/finetune';
import { replaceFile } from '../core/files';

export function saveFinetuned(file: string, m: FinetunedModel): void {
  replaceFile(file, v8.serialize({ graph: m.graph, polys: m.polys }));
}

export function loadFinetuned(file: string): FinetunedModel | null {
  try {
    const m = v8.deserialize(fs.readFileSync(file)) as Partial<FinetunedModel>;
    return m && m.graph && Array.isArray(m.graph.nodes) && m.polys instanceof Map ? (m as FinetunedModel) : null;
  } catch {
    return null;
  }
}

export function dropFinetuned(file: string): void {
  fs.rmSync(file, { force: true });
}
