/**
 * The worker-thread side of analysisWorker.ts: runs one core job and posts progress, the result
 * or a user error back. Bundled on its own (bundle/worker.js), since it carries the whole core.
 */
import * as path from 'path';
import { isMainThread, parentPort, workerData } from 'worker_threads';
import type { FinetunedModel } from '../core/finetune/finetune';
import type { FromWorker, Job, WorkerInit } from './analysisWorker';

async function execute(
  job: Job,
  signal: AbortSignal,
  onProgress: (fraction: number, message: string) => void,
): Promise<unknown> {
  switch (job.kind) {
    case 'analyze': {
      const { analyze } = await import('../core/analyze');
      const store = await import('./finetunedStore');
      const file = job.finetunedFile;
      // A fine-tuned model left by an earlier run under the same key is never taken for this one's.
      if (file) store.dropFinetuned(file);
      const onFinetuned = file ? (m: FinetunedModel) => store.saveFinetuned(file, m) : undefined;
      return analyze({ ...job.options, signal, onProgress, onFinetuned });
    }
    case 'encrypted': {
      if (job.mode === 'model') {
        const { encryptedModelTest } = await import('../core/he/modelTest');
        return encryptedModelTest({ ...job.options, signal, onProgress });
      }
      const { encryptedLayerTest } = await import('../core/he/layerTest');
      return encryptedLayerTest({ ...job.options, signal, onProgress });
    }
    case 'export': {
      const { writeOutputs } = await import('../core/export/export');
      const { loadModel } = await import('../core/model/load');
      const { checkReportMatchesModel } = await import('../core/he/layerTest');
      checkReportMatchesModel(job.report, job.model);
      return writeOutputs(job.dir, await loadModel(job.model), job.report, job.force, await finetunedFor(job));
    }
    case 'summary': {
      const { loadModel } = await import('../core/model/load');
      const { summarizeModel } = await import('../core/model/summary');
      return summarizeModel(await loadModel(job.model));
    }
  }
}

/** The fine-tuned model an export writes to finetuned/: the analysis's, if it kept one and it is still cached. */
async function finetunedFor(job: Extract<Job, { kind: 'export' }>): Promise<FinetunedModel | null> {
  const ft = job.report.finetune;
  if (!ft?.kept) return null;
  const { loadFinetuned } = await import('./finetunedStore');
  const m = job.finetunedFile ? loadFinetuned(job.finetunedFile) : null;
  if (!m)
    ft.notExported =
      'the fine-tuned weights of this analysis are no longer cached (results cleared, or kept by another version): run HE Approx: Analyze Model again, then export';
  return m;
}

async function workerMain(): Promise<void> {
  const { isUserError } = await import('../core/errors');
  const { setWasmDirectory } = await import('../core/model/backend');
  const { job, wasmDir } = workerData as WorkerInit;
  if (wasmDir) {
    setWasmDirectory(wasmDir);
    const { setH5wasmModule } = await import('../core/model/formats/keras');
    setH5wasmModule(path.join(wasmDir, '..', 'h5wasm', 'hdf5_hl.js'));
  }
  const ac = new AbortController();
  parentPort!.on('message', (m: { type: string }) => {
    if (m.type === 'cancel') ac.abort();
  });
  const post = (m: FromWorker) => parentPort!.postMessage(m);
  try {
    const result = await execute(job, ac.signal, (fraction, message) => post({ type: 'progress', fraction, message }));
    // Reports are plain data by design; the JSON round trip drops nothing and makes sure of it.
    post({ type: 'done', result: JSON.parse(JSON.stringify(result)) });
  } catch (e) {
    if (isUserError(e)) post({ type: 'failed', userError: true, code: e.code, message: e.message, fix: e.fix });
    else
      post({
        type: 'failed',
        userError: false,
        code: 'INTERNAL',
        message: (e as Error).message ?? String(e),
        fix: 'this is a bug; see the log',
      });
  }
}

if (!isMainThread && parentPort && (workerData as WorkerInit | undefined)?.job) void workerMain();
