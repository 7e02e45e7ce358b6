/** The editor-facing building blocks (vscode-free): layer ranges, report -> diagnostics/CodeLens/hover, messages. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import { findLayerRanges, offsetToPosition } from '../src/extension/layerRanges';
import { reportCodeLenses, reportDiagnostics, reportHover } from '../src/extension/reportView';
import { isFromWebview } from '../src/extension/messages';
import { analyze } from '../src/core/analyze';
import { Report } from '../src/core/report';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, example } from './helpers';

const cnnText = fs.readFileSync(example('mnist-cnn'), 'utf8');

test('layer ranges: minified tfjs layout, pretty-printed, and the converter layout', () => {
  const min = findLayerRanges(cnnText);
  assert.equal(min.layout, 'tfjs');
  assert.equal(min.minified, true);
  assert.deepEqual([...min.layers.keys()].slice(0, 2), ['conv2d_Conv2D1', 'average_pooling2d_AveragePooling2D1']);
  const r = min.layers.get('conv2d_Conv2D2')!;
  assert.equal(cnnText.slice(r.nameRange.start, r.nameRange.end), '"conv2d_Conv2D2"');
  assert.equal(JSON.parse(cnnText.slice(r.range.start, r.range.end)).class_name, 'Conv2D');
  const json = JSON.parse(cnnText);
  const pretty = JSON.stringify(json, null, 2);
  const pr = findLayerRanges(pretty);
  assert.equal(pr.minified, false);
  const p = pr.layers.get('dense_Dense1')!;
  assert.ok(offsetToPosition(pretty, p.nameRange.start).line > 10, 'pretty-printed ranges land on their own lines');
  const { class_name, config } = json.modelTopology;
  const conv = JSON.stringify({ ...json, modelTopology: { keras_version: '2.15', model_config: { class_name, config } } }, null, 1);
  const cr = findLayerRanges(conv);
  assert.equal(cr.layout, 'converter');
  assert.equal(cr.layers.size, min.layers.size);
});

test('a corrupt model.json gives syntax errors with offsets, and only those diagnostics', () => {
  const broken = cnnText.slice(0, 500) + '}}';
  const r = findLayerRanges(broken);
  assert.ok(r.errors.length > 0);
  assert.ok(r.errors[0].range.start >= 0 && r.errors[0].range.start <= broken.length);
  const d = reportDiagnostics({ layers: [], heIncompatible: [], options: { budget: 1 } } as unknown as Report, r);
  assert.ok(d.length > 0 && d.every((x) => x.code === 'syntax' && x.severity === 'error' && x.source === 'he-approx'));
  assert.equal(offsetToPosition('ab\ncd', 4).line, 1);
  assert.equal(offsetToPosition('ab\ncd', 4).character, 1);
});

test('report -> diagnostics, CodeLens and hovers on the CNN example', async () => {
  const report = JSON.parse(JSON.stringify(await analyze({ model: example('mnist-cnn'), data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, calib: 1000, heldout: 1000 }))) as Report;
  const ranges = findLayerRanges(cnnText);
  const diags = reportDiagnostics(report, ranges);
  const info = diags.filter((d) => d.code === 'degree');
  assert.equal(info.length, 3);
  for (const d of info) {
    assert.match(d.message, /^relu → degree \d+, depth \d+, predicted accuracy drop -?\d+\.\d\d%$/);
    assert.equal(cnnText.slice(d.range.start, d.range.end), JSON.stringify(d.layer));
  }
  const lenses = reportCodeLenses(report, ranges);
  assert.equal(lenses.length, 3);
  assert.match(lenses[0].title, /^degree \d+ · depth \d+ · Δacc -?\d+\.\d\d% · Show fit$/);
  const hover = reportHover(report, 'conv2d_Conv2D1')!;
  assert.match(hover, /interval \[/);
  assert.match(hover, /command:heApprox\.showPanel\?/);
  assert.equal(reportHover(report, 'flatten_Flatten1'), null);
});

test('HE-incompatible layers become errors with the fix', () => {
  const text = '{"modelTopology":{"config":{"layers":[{"class_name":"MaxPooling2D","config":{"name":"pool"}}]}}}';
  const fake = { layers: [], options: { budget: 1 }, heIncompatible: [{ layer: 'pool', className: 'MaxPooling2D', problem: 'max pooling cannot be evaluated under CKKS', fix: 'retrain with AveragePooling2D' }] } as unknown as Report;
  const d = reportDiagnostics(fake, findLayerRanges(text));
  assert.equal(d.length, 1);
  assert.equal(d[0].severity, 'error');
  assert.match(d[0].message, /MaxPooling2D 'pool': max pooling .* Fix: retrain/);
  assert.equal(text.slice(d[0].range.start, d[0].range.end), '"pool"');
});

test('webview messages are validated', () => {
  assert.ok(isFromWebview({ type: 'ready' }));
  assert.ok(isFromWebview({ type: 'selectLayer', node: 'x' }));
  assert.ok(!isFromWebview({ type: 'selectLayer' }));
  assert.ok(!isFromWebview({ type: 'rm -rf' }));
  assert.ok(!isFromWebview(null));
});

test('analysis runs in a worker thread: progress arrives, the main thread stays responsive, cancel stops it', async () => {
  const { runInWorker, JobFailed } = await import('../src/extension/analysisWorker');
  const progress: number[] = [];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const run = runInWorker({ kind: 'analyze', options: { model: example('mnist-mlp'), data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS, calib: 1000, heldout: 1000 } },
    (f) => progress.push(f));
  const report = await run.result;
  clearInterval(timer);
  assert.equal(report.layers.length, 2);
  assert.ok(progress.length > 3 && progress[progress.length - 1] === 1, 'progress reported up to 1');
  assert.ok(ticks > 5, `the main event loop kept running during the analysis (${ticks} timer ticks)`);
  const second = runInWorker({ kind: 'analyze', options: { model: example('mnist-cnn'), data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS } },
    (f) => { if (f > 0.05) second.cancel(); });
  await assert.rejects(second.result, (e: unknown) => e instanceof JobFailed && e.code === 'CANCELLED');
  const bad = runInWorker({ kind: 'analyze', options: { model: example('mnist-mlp'), data: '/nonexistent.npy' } }, () => undefined);
  await assert.rejects(bad.result, (e: unknown) => e instanceof JobFailed && e.userError && /does not exist/.test(e.message));
});
