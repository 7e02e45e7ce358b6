/**
 * The helper thread that computes the second shard of every fine-tuning step (replica.ts says
 * why). Started only where it can help: two cores or more (HE_APPROX_THREADS=1 keeps one, as for
 * the polynomial evaluations), the wasm backend (tfjs-node runs on every core already), and the
 * compiled thread script beside this file (the sources run through a TypeScript loader have none).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { wasmDirectory } from '../model/backend';
import { allowedThreads } from '../numerics/polyPool';
import { ReplicaSpec, Shard, ShardResult } from './replica';

type Reply = { ready?: boolean; result?: ShardResult; error?: string };

let shardsDone = 0;
/** Shards the helper threads computed so far (tests check that they are used). */
export function helperShards(): number {
  return shardsDone;
}

export class StepHelper {
  private pending: { resolve: (r: ShardResult) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: Reply) => {
      const p = this.pending;
      this.pending = null;
      if (m.result) {
        shardsDone++;
        p?.resolve(m.result);
      } else if (m.error) this.fail(new Error(`fine-tuning's helper thread failed: ${m.error}`), p);
    });
    worker.on('error', (e) => this.fail(e, this.pending));
    worker.on('exit', () => this.fail(new Error("fine-tuning's helper thread stopped"), this.pending));
  }

  private fail(e: Error, p: StepHelper['pending']): void {
    this.failure ??= e;
    this.pending = null;
    p?.reject(this.failure);
  }

  /** A started helper, or null where one cannot help (see above). */
  static async start(spec: ReplicaSpec, backend: string): Promise<StepHelper | null> {
    const script = path.join(__dirname, 'stepWorker.js');
    if (!(allowedThreads() >= 2) || backend !== 'wasm' || !fs.existsSync(script)) return null;
    const worker = new Worker(script, { workerData: { spec, wasmDir: wasmDirectory() } });
    const ready = await new Promise<Reply>((resolve) => {
      worker.once('message', resolve);
      worker.once('error', (e) => resolve({ error: String(e) }));
    });
    if (!ready.ready) {
      await worker.terminate();
      throw new Error(`fine-tuning's helper thread did not start: ${ready.error}`);
    }
    return new StepHelper(worker);
  }

  /** The shard's loss and gradients at the trained values `values` (Replica.values order). */
  run(values: Float32Array[], shard: Shard, weight: number): Promise<ShardResult> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage({ values, shard, weight });
    });
  }

  async dispose(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
