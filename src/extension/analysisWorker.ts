/**
 * Runs core jobs (analysis, encrypted tests) in a worker thread, so that heavy compute never
 * blocks the extension host's event loop (issue 4). vscode-free: `runInWorker` is what the host
 * calls; the worker side is this same file when loaded as a worker. Progress arrives as messages;
 * cancellation posts 'cancel', which aborts the core's AbortSignal between batches.
 */
import { Worker, isMainThread, parentPort, workerData } from 'worker_threads';
import type { AnalyzeOptions } from '../core/analyze';
import type { Report } from '../core/report';

export type Job = { kind: 'analyze'; options: Omit<AnalyzeOptions, 'signal' | 'onProgress'> };

type FromWorker =
  | { type: 'progress'; fraction: number; message: string }
  | { type: 'done'; report: Report }
  | { type: 'failed'; userError: boolean; code: string; message: string; fix: string };

export interface WorkerRun {
  result: Promise<Report>;
  cancel(): void;
}

export class JobFailed extends Error {
  constructor(readonly code: string, message: string, readonly fix: string, readonly userError: boolean) { super(message); }
}

/** Starts `job` in a new worker thread. The promise rejects with JobFailed (code CANCELLED on cancel). */
export function runInWorker(job: Job, onProgress: (fraction: number, message: string) => void): WorkerRun {
  const worker = new Worker(__filename, { workerData: job });
  let settled = false;
  const result = new Promise<Report>((resolve, reject) => {
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'progress') onProgress(m.fraction, m.message);
      else if (m.type === 'done') { settled = true; resolve(m.report); void worker.terminate(); }
      else { settled = true; reject(new JobFailed(m.code, m.message, m.fix, m.userError)); void worker.terminate(); }
    });
    worker.on('error', (e) => { if (!settled) { settled = true; reject(new JobFailed('INTERNAL', e.message, 'this is a bug; see the log', false)); } });
    worker.on('exit', (code) => { if (!settled) { settled = true; reject(new JobFailed('INTERNAL', `analysis worker exited with code ${code}`, 'see the log', false)); } });
  });
  return { result, cancel: () => worker.postMessage({ type: 'cancel' }) };
}

async function workerMain(): Promise<void> {
  const { analyze } = await import('../core/analyze');
  const { isUserError } = await import('../core/errors');
  const job = workerData as Job;
  const ac = new AbortController();
  parentPort!.on('message', (m: { type: string }) => { if (m.type === 'cancel') ac.abort(); });
  const post = (m: FromWorker) => parentPort!.postMessage(m);
  try {
    const report = await analyze({ ...job.options, signal: ac.signal, onProgress: (fraction, message) => post({ type: 'progress', fraction, message }) });
    // Structured clone drops nothing the report holds: it is plain data by design.
    post({ type: 'done', report: JSON.parse(JSON.stringify(report)) });
  } catch (e) {
    if (isUserError(e)) post({ type: 'failed', userError: true, code: e.code, message: e.message, fix: e.fix });
    else post({ type: 'failed', userError: false, code: 'INTERNAL', message: (e as Error).message ?? String(e), fix: 'this is a bug; see the log' });
  }
}

if (!isMainThread && parentPort && (workerData as Job | undefined)?.kind === 'analyze') void workerMain();
