/**
 * Worker thread of the whole-model encrypted test (modelTest.ts, runBatchesInWorkers): runs its
 * share of the batches with its own SEAL keys and posts each batch's decrypted output.
 */
import { parentPort, workerData } from 'worker_threads';
import { UserError } from '../errors';
import { BatchJob, runBatches } from './sealRun';

const port = parentPort!;
runBatches(workerData as BatchJob, (batch) => port.postMessage({ batch })).then(
  (done) => port.postMessage({ done }),
  (e: unknown) =>
    port.postMessage({
      error:
        e instanceof UserError
          ? { code: e.code, message: e.message, fix: e.fix }
          : { code: '', message: String((e as Error)?.stack ?? e), fix: '' },
    }),
);
