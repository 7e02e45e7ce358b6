/**
 * Worker thread of fine-tuning (stepHelper.ts): a copy of the network (replica.ts) that, for each
 * step, takes the trained values and one shard and posts back the shard's loss and gradients.
 */
import { parentPort, workerData } from 'worker_threads';
import { initBackend, setWasmDirectory } from '../model/backend';
import { Replica, ReplicaSpec, Shard } from './replica';

const port = parentPort!;
const init = workerData as { spec: ReplicaSpec; wasmDir: string | null };

async function main(): Promise<void> {
  if (init.wasmDir) setWasmDirectory(init.wasmDir);
  await initBackend();
  const r = new Replica(init.spec);
  port.on('message', (m: { values: Float32Array[]; shard: Shard; weight: number }) => {
    try {
      r.setValues(m.values);
      const res = r.grads(m.shard, m.weight);
      port.postMessage({ result: res }, res.grads ? res.grads.map((g) => g.buffer as ArrayBuffer) : []);
    } catch (e) {
      port.postMessage({ error: String((e as Error)?.stack ?? e) });
    }
  });
  port.postMessage({ ready: true });
}

main().catch((e: unknown) => port.postMessage({ error: String((e as Error)?.stack ?? e) }));
