/**
 * TensorFlow.js backend selection. The wasm backend is the default (an order of magnitude faster
 * than the pure-JS cpu backend); `@tensorflow/tfjs-node` is an optional dependency, used only when it loads (it is a
 * native addon whose install downloads libtensorflow, which fails on offline machines, and which
 * does not load inside VS Code's Electron extension host).
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

let ready: Promise<string> | null = null;

export type BackendChoice = 'auto' | 'wasm' | 'node' | 'cpu';

/** Directory holding the tfjs wasm binaries; overridable for bundled hosts (the VS Code extension). */
let wasmDir: string | null = null;
export function setWasmDirectory(dir: string): void {
  wasmDir = dir;
}
/** The directory set above, if any (for worker threads that start their own backend). */
export function wasmDirectory(): string | null {
  return wasmDir;
}

export function initBackend(
  choice: BackendChoice = (process.env.HE_APPROX_BACKEND as BackendChoice) || 'auto',
): Promise<string> {
  if (ready) return ready;
  ready = (async () => {
    if (choice === 'auto' || choice === 'node') {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- optional: loaded only if installed
        require('@tensorflow/tfjs-node');
        if (await tf.setBackend('tensorflow')) return 'tensorflow';
      } catch {
        if (choice === 'node') throw new Error('HE_APPROX_BACKEND=node but @tensorflow/tfjs-node does not load here');
      }
    }
    if (choice !== 'cpu') {
      const dir =
        wasmDir ?? path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
      setWasmPaths(dir + path.sep);
      if (await tf.setBackend('wasm')) {
        await tf.ready();
        return 'wasm';
      }
    }
    await tf.setBackend('cpu');
    await tf.ready();
    return 'cpu';
  })();
  return ready;
}

export { tf };
