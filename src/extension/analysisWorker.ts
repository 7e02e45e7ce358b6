/**
 * Runs core jobs (analysis, encrypted tests, export) in a worker thread, so that heavy compute never
 * blocks the extension host's event loop (issue 4). vscode-free: `runInWorker` is what the host
 * calls; the worker side is workerMain.ts (in the VSIX, esbuild bundles it as bundle/worker.js and
 * the host passes that path), kept apart so that the host bundle does not carry the core.
 * Progress arrives as messages; cancellation posts 'cancel', which aborts the core's AbortSignal
 * between batches.
 */
import { renderForEditor } from './settings';
import * as path from 'path';
import { Worker } from 'worker_threads';
import type { AnalyzeOptions } from '../core/analyze';
import type { WrittenFiles } from '../core/export/export';
import type { EncryptedLayerReport, EncryptedTestOptions } from '../core/he/layerTest';
import type { EncryptedModelReport } from '../core/he/modelTest';
import type { ModelSummary } from '../core/model/summary';
import type { Report } from '../core/report';

type NoHooks<T> = Omit<T, 'signal' | 'onProgress'>;

export type Job =
  /** finetunedFile: where a kept fine-tuning's model is saved for Export (finetunedStore.ts). */
  | { kind: 'analyze'; options: NoHooks<AnalyzeOptions>; finetunedFile?: string }
  | { kind: 'encrypted'; mode: 'model' | 'layer'; options: NoHooks<EncryptedTestOptions> }
  /** finetunedFile: the analysis's fine-tuned model, written to finetuned/ when the report kept it. */
  | { kind: 'export'; dir: string; model: string; report: Report; force: boolean; finetunedFile?: string }
  /** Reads a model file into a summary of its graph (the binary-model view lists it). */
  | { kind: 'summary'; model: string };

export type JobResult<J extends Job> = J extends { kind: 'analyze' }
  ? Report
  : J extends { kind: 'encrypted' }
    ? EncryptedModelReport | EncryptedLayerReport
    : J extends { kind: 'summary' }
      ? ModelSummary
      : WrittenFiles;

export interface WorkerInit {
  job: Job;
  wasmDir: string | null;
}

export type FromWorker =
  | { type: 'progress'; fraction: number; message: string }
  | { type: 'done'; result: unknown }
  | { type: 'failed'; userError: boolean; code: string; message: string; fix: string };

export interface WorkerRun<T> {
  result: Promise<T>;
  cancel(): void;
}

export class JobFailed extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly fix: string,
    readonly userError: boolean,
  ) {
    super(message);
  }
}

export interface WorkerHost {
  /** The worker script: workerMain.js beside this file (tsc output) or the bundled bundle/worker.js. */
  script?: string;
  /** Where the tfjs wasm binaries are, for bundled hosts. */
  wasmDir?: string | null;
}

/** Starts `job` in a new worker thread. The promise rejects with JobFailed (code CANCELLED on cancel). */
export function runInWorker<J extends Job>(
  job: J,
  onProgress: (fraction: number, message: string) => void,
  host: WorkerHost = {},
): WorkerRun<JobResult<J>> {
  const init: WorkerInit = { job, wasmDir: host.wasmDir ?? null };
  const worker = new Worker(host.script ?? path.join(__dirname, 'workerMain.js'), { workerData: init });
  let settled = false;
  const result = new Promise<JobResult<J>>((resolve, reject) => {
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'progress') onProgress(m.fraction, m.message);
      else if (m.type === 'done') {
        settled = true;
        resolve(m.result as JobResult<J>);
        void worker.terminate();
      } else {
        settled = true;
        // The core names options by their flags; the editor by its settings.
        reject(new JobFailed(m.code, renderForEditor(m.message), renderForEditor(m.fix), m.userError));
        void worker.terminate();
      }
    });
    worker.on('error', (e) => {
      if (!settled) {
        settled = true;
        reject(new JobFailed('INTERNAL', e.message, 'this is a bug; see the log', false));
      }
    });
    worker.on('exit', (code) => {
      if (!settled) {
        settled = true;
        reject(new JobFailed('INTERNAL', `he-approx worker exited with code ${code}`, 'see the log', false));
      }
    });
  });
  return { result, cancel: () => worker.postMessage({ type: 'cancel' }) };
}
