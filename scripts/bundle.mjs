// Bundles the extension host, the analysis worker, the encrypted test's batch worker and the webview with esbuild, and copies the
// tfjs wasm binaries beside them (the VSIX ships bundle/ only; see .vscodeignore). With --engine T it also copies the
// Lattigo engine built for VS Code target T (scripts/build-engine.mjs) into bundle/engines/T/, where
// src/core/he/lattigo.ts finds it: a VSIX for platform T runs bootstrapped models without Go.
import { build } from 'esbuild';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const out = 'bundle';
mkdirSync('out', { recursive: true }); // vsce writes the VSIX there
const production = !process.argv.includes('--dev');
const engineTargets = process.argv.flatMap((a, i, all) => (all[i - 1] === '--engine' ? [a] : []));
rmSync(out, { recursive: true, force: true });
const node = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  minify: production,
  sourcemap: !production,
  // jsonc-parser's 'main' is a UMD build whose inner requires esbuild cannot follow; its ESM build bundles cleanly.
  mainFields: ['module', 'main'],
  // vscode is provided by the host; tfjs-node is an optional native accelerator loaded only if present.
  external: ['vscode', '@tensorflow/tfjs-node'],
  logLevel: 'warning',
  legalComments: 'none',
  // The core finds the wasm binaries with require.resolve only when no directory was set; bundled
  // hosts always set bundle/wasm (setWasmDirectory), so that branch never runs in the bundle.
  logOverride: { 'require-resolve-not-external': 'silent' },
};
await Promise.all([
  build({ ...node, entryPoints: ['src/extension/extension.ts'], outfile: join(out, 'extension.js') }),
  build({ ...node, entryPoints: ['src/extension/workerMain.ts'], outfile: join(out, 'worker.js') }),
  // The whole-model encrypted test runs its batches on threads of their own (src/core/he/modelTest.ts
  // looks for batchWorker.js beside itself, here beside worker.js).
  build({ ...node, entryPoints: ['src/core/he/batchWorker.ts'], outfile: join(out, 'batchWorker.js') }),
  // Fine-tuning computes half of every batch on a helper thread (src/core/finetune/stepHelper.ts
  // looks for stepWorker.js beside itself, here beside worker.js).
  build({ ...node, entryPoints: ['src/core/finetune/stepWorker.ts'], outfile: join(out, 'stepWorker.js') }),
  build({
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    minify: production,
    sourcemap: !production,
    entryPoints: ['webview/main.ts'],
    outfile: join(out, 'webview.js'),
    logLevel: 'warning',
    legalComments: 'none',
  }),
]);
const wasmDir = join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
mkdirSync(join(out, 'wasm'), { recursive: true });
for (const f of readdirSync(wasmDir).filter((f) => f.endsWith('.wasm')))
  copyFileSync(join(wasmDir, f), join(out, 'wasm', f));
// h5wasm (Keras .h5/.keras) ships as ES modules with its wasm inlined; the worker imports them from here.
const h5Dir = join('node_modules', 'h5wasm', 'dist', 'node');
mkdirSync(join(out, 'h5wasm'), { recursive: true });
for (const f of ['hdf5_hl.js', 'hdf5_util.js']) copyFileSync(join(h5Dir, f), join(out, 'h5wasm', f));
writeFileSync(join(out, 'h5wasm', 'package.json'), '{ "type": "module" }\n');
for (const t of engineTargets) {
  const from = join('engines', 'lattigo', 'bin', t);
  const bins = existsSync(from) ? readdirSync(from).filter((f) => f.startsWith('he-approx-lattigo')) : [];
  if (!bins.length) {
    console.error(
      `he-approx: the Lattigo engine for ${t} is not built (${from}); run node scripts/build-engine.mjs --target ${t} (needs Go)`,
    );
    process.exit(1);
  }
  mkdirSync(join(out, 'engines', t), { recursive: true });
  for (const f of bins) copyFileSync(join(from, f), join(out, 'engines', t, f));
}
for (const f of readdirSync(out, { recursive: true })) {
  const p = join(out, f);
  if (statSync(p).isFile()) console.log(`${p.padEnd(48)} ${(statSync(p).size / 1024).toFixed(0).padStart(6)} KB`);
}
