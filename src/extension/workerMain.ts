/**
 * The worker-thread side of analysisWorker.ts: runs one core job and posts progress, the result
 * or a user error back. Bundled on its own (bundle/worker.js), since it carries the whole core.
 */
import * as path from 'path';
import { isMainThread, parentPort, workerData } from 'worker_threads';
import type { FromWorker, Job, WorkerInit } from './analysisWorker';

async function execute(
  job: Job,
  signal: AbortSignal,
  onProgress: (fraction: number, message: string) => void,
): Promise<unknown> {
  switch (job.kind) {
    case 'analyze': {
      const { analyze } = await import('../core/analyze');
      return analyze({ ...job.options, signal, onProgress });
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
      return writeOutputs(job.dir, await loadModel(job.model), job.report, job.force);
    }
    case 'summary': {
      const { loadModel } = await import('../core/model/load');
      const { summarizeModel } = await import('../core/model/summary');
      return summarizeModel(await loadModel(job.model));
    }
  }
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
