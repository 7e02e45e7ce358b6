/**
 * The one job in flight (an analysis, an encrypted test, an export) on the worker thread: its
 * progress notification with Cancel, the status bar and panel kept up to date, the log, and how
 * it ended (a result, a cancel, a stop because an input was deleted, or a failure shown once with
 * its fix). One job at a time: a second waits for the user to cancel the first.
 */
import * as vscode from 'vscode';
import { Job, JobFailed, runInWorker, WorkerRun } from './analysisWorker';
import type { RunningJob } from './editorViews';

/** The job in flight; `files` are the inputs whose deletion stops it, `stopped` says why it was stopped, if not by the user. */
export interface Running extends RunningJob {
  run: WorkerRun<unknown>;
  files: string[];
  stopped?: string;
}

export interface JobHost {
  log: vscode.LogOutputChannel;
  /** The worker script and the tfjs wasm binaries (the extension's bundle/). */
  worker: { script: string; wasmDir: string };
  /** The status bar's state changed ('busy' while running, then 'done' or 'error'). */
  status(state: 'busy' | 'done' | 'error'): void;
  /** A message for the side panel (progress, errors). */
  post(
    message: { type: 'progress'; fraction: number; message: string } | { type: 'error'; message: string; fix: string },
  ): void;
}

export class JobRunner {
  /** The job in flight, or null. */
  running: Running | null = null;

  constructor(private readonly host: JobHost) {}

  /**
   * Runs `job` on the worker with a cancellable progress notification; `inputs` are the files whose
   * deletion stops it. Resolves to the result, or null when cancelled, stopped or refused because
   * another job runs; a failure is shown (with Show Log) and rethrown.
   */
  async run<T>(label: string, job: Job, inputs: (string | null)[] = []): Promise<T | null> {
    if (this.running) {
      void vscode.window.showWarningMessage(
        `HE Approx: ${this.running.label} is still running; cancel it first (or wait).`,
      );
      return null;
    }
    const { log } = this.host;
    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `HE Approx: ${label}`, cancellable: true },
      async (progress, token) => {
        let last = 0;
        const run = runInWorker(
          job,
          (fraction, message) => {
            if (this.running) {
              this.running.fraction = fraction;
              this.running.message = message;
            }
            progress.report({ increment: Math.max(0, 100 * (fraction - last)), message });
            last = Math.max(last, fraction);
            this.host.status('busy');
            this.host.post({ type: 'progress', fraction, message });
          },
          this.host.worker,
        );
        const running: Running = {
          label,
          fraction: 0,
          message: 'starting',
          run,
          files: inputs.filter((f): f is string => !!f),
        };
        this.running = running;
        this.host.status('busy');
        token.onCancellationRequested(() => run.cancel());
        const t0 = Date.now();
        let failed = false;
        log.info(`${label}: started`);
        try {
          const result = (await run.result) as T;
          log.info(`${label}: finished in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
          return result;
        } catch (e) {
          const f = e instanceof JobFailed ? e : new JobFailed('INTERNAL', String(e), 'see the log', false);
          if (f.code === 'CANCELLED' && running.stopped) {
            log.info(`${label}: stopped: ${running.stopped}`);
            void vscode.window.showWarningMessage(`HE Approx: ${label} stopped: ${running.stopped}.`);
          } else if (f.code === 'CANCELLED') {
            log.info(`${label}: cancelled; earlier results are kept`);
            void vscode.window.showInformationMessage(`HE Approx: ${label} cancelled. Earlier results are unchanged.`);
          } else {
            log.error(`${label}: ${f.message}. Fix: ${f.fix}`);
            const action = await vscode.window.showErrorMessage(`HE Approx: ${f.message}. Fix: ${f.fix}`, 'Show Log');
            if (action === 'Show Log') log.show();
            this.host.post({ type: 'error', message: f.message, fix: f.fix });
            failed = true;
            this.host.status('error');
            throw f;
          }
          return null;
        } finally {
          this.running = null;
          if (!failed) this.host.status('done');
        }
      },
    );
  }

  /** Cancels the job in flight, if any. */
  cancel(): void {
    this.running?.run.cancel();
  }
}
