/** The editor-facing building blocks (vscode-free): layer ranges, report -> diagnostics/CodeLens/hover, messages. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { findLayerRanges, offsetToPosition } from '../src/extension/layerRanges';
import { reportCodeLenses, reportDiagnostics, reportHover } from '../src/extension/reportView';
import { isFromWebview } from '../src/extension/messages';
import { analyze } from '../src/core/analyze';
import { Report } from '../src/core/report';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, ROOT, cli, example, tmpDir } from './helpers';
import {
  ActivationSpec,
  activationFn,
  describeActivation,
  specFromDescription,
} from '../src/core/numerics/activations';
import { chebval } from '../src/core/numerics/chebyshev';
import { frontierSeries, publishedPoints, reportCurves } from '../src/extension/curves';
import { ResultCache, analysisKey, engineId, modelFiles } from '../src/extension/cache';
import { findDataNear } from '../src/extension/dataFiles';
import { checkReportMatchesModel } from '../src/core/he/layerTest';
import {
  NON_ANALYSIS_PREFIXES,
  NON_ANALYSIS_SETTINGS,
  SettingReader,
  analyzeOptionsFrom,
  encryptedTestChoicesFrom,
  renderForEditor,
  withPick,
} from '../src/extension/settings';
import { ANALYZE_OPTIONS } from '../src/core/options';
import { ENCRYPTED_TEST_OPTIONS } from '../src/core/testOptions';
import { resolveSettings } from '../src/core/analysis/settings';
import { initBackend, tf } from '../src/core/model/backend';
import { loadModel } from '../src/core/model/load';
import { summarizeModel } from '../src/core/model/summary';
import { modelViewRows } from '../src/extension/modelView';
import { Executor } from '../src/core/model/execute';
import { writeOutputs } from '../src/core/export/export';
import { registerPolyLayer } from '../src/core/export/polyLayer';
import { polysFromReport } from '../src/core/report';
import { saveModel, tfjsLoad } from './helpers';

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
  const conv = JSON.stringify(
    { ...json, modelTopology: { keras_version: '2.15', model_config: { class_name, config } } },
    null,
    1,
  );
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
  assert.match(d[0].message, /^model\.json: \w+: the model file is not valid JSON/);
  assert.deepEqual(reportDiagnostics(null, r), d, 'a corrupt file gets the same diagnostics before any analysis');
  assert.deepEqual(
    reportDiagnostics(null, findLayerRanges(cnnText)),
    [],
    'nothing to say about a valid file without a report',
  );
  assert.equal(offsetToPosition('ab\ncd', 4).line, 1);
  assert.equal(offsetToPosition('ab\ncd', 4).character, 1);
});

test('report -> diagnostics, CodeLens and hovers on the CNN example', async () => {
  const report = JSON.parse(
    JSON.stringify(
      await analyze({
        model: example('mnist-cnn'),
        data: MNIST_TEST_IMAGES,
        labels: MNIST_TEST_LABELS,
        calib: 1000,
        heldout: 1000,
      }),
    ),
  ) as Report;
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
  const fake = {
    layers: [],
    options: { budget: 1 },
    heIncompatible: [
      {
        layer: 'pool',
        className: 'MaxPooling2D',
        problem: 'max pooling cannot be evaluated under CKKS',
        fix: 'retrain with AveragePooling2D',
      },
    ],
  } as unknown as Report;
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
  // A picked frontier point: whole positive levels and whole degrees by name, nothing else.
  assert.ok(isFromWebview({ type: 'pickPoint', levels: 7, degrees: { a: 3, b: 2 } }));
  assert.ok(isFromWebview({ type: 'clearPick' }));
  assert.ok(!isFromWebview({ type: 'pickPoint', levels: 7 }));
  assert.ok(!isFromWebview({ type: 'pickPoint', levels: 0, degrees: {} }));
  assert.ok(!isFromWebview({ type: 'pickPoint', levels: 7.5, degrees: { a: 3 } }));
  assert.ok(!isFromWebview({ type: 'pickPoint', levels: 7, degrees: [3, 2] }));
  assert.ok(!isFromWebview({ type: 'pickPoint', levels: 7, degrees: { a: '3; rm -rf' } }));
});

test("a point picked in the panel replaces the settings' targets with its levels and degrees", () => {
  const o = { model: 'm', data: 'd', targetBootstraps: 3 };
  assert.equal(withPick(o, undefined), o);
  assert.deepEqual(withPick(o, { levels: 7, degrees: { a: 3 } }), {
    model: 'm',
    data: 'd',
    targetLevels: 7,
    targetBootstraps: undefined,
    targetDegrees: { a: 3 },
  });
  const s = resolveSettings(withPick(o, { levels: 7, degrees: { a: 3 } }));
  assert.deepEqual(s.target, { levels: 7, degrees: { a: 3 } });
});

test('analysis runs in a worker thread: progress arrives, the main thread stays responsive, cancel stops it', async () => {
  const { runInWorker, JobFailed } = await import('../src/extension/analysisWorker');
  const progress: number[] = [];
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const run = runInWorker(
    {
      kind: 'analyze',
      options: {
        model: example('mnist-mlp'),
        data: MNIST_TEST_IMAGES,
        labels: MNIST_TEST_LABELS,
        calib: 1000,
        heldout: 1000,
      },
    },
    (f) => progress.push(f),
  );
  const report = await run.result;
  clearInterval(timer);
  assert.equal(report.layers.length, 2);
  assert.ok(progress.length > 3 && progress[progress.length - 1] === 1, 'progress reported up to 1');
  assert.ok(ticks > 5, `the main event loop kept running during the analysis (${ticks} timer ticks)`);
  const second = runInWorker(
    { kind: 'analyze', options: { model: example('mnist-cnn'), data: MNIST_TEST_IMAGES, labels: MNIST_TEST_LABELS } },
    (f) => {
      if (f > 0.05) second.cancel();
    },
  );
  await assert.rejects(second.result, (e: unknown) => e instanceof JobFailed && e.code === 'CANCELLED');
  const bad = runInWorker(
    { kind: 'analyze', options: { model: example('mnist-mlp'), data: '/nonexistent.npy' } },
    () => undefined,
  );
  await assert.rejects(
    bad.result,
    (e: unknown) => e instanceof JobFailed && e.userError && /does not exist/.test(e.message),
  );
});

let mlpReport: Promise<Report> | null = null;
const mlp = () =>
  (mlpReport ??= analyze({
    model: example('mnist-mlp'),
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    calib: 500,
    heldout: 500,
  }).then((r) => JSON.parse(JSON.stringify(r)) as Report));

test('report activation strings map back to the exact activation specs', () => {
  const specs: ActivationSpec[] = [
    { kind: 'relu' },
    { kind: 'relu6' },
    { kind: 'leakyrelu', alpha: 0.2 },
    { kind: 'elu', alpha: 0.5 },
    { kind: 'selu' },
    { kind: 'gelu' },
    { kind: 'gelu_new' },
    { kind: 'swish' },
    { kind: 'mish' },
    { kind: 'sigmoid' },
    { kind: 'hard_sigmoid' },
    { kind: 'tanh' },
    { kind: 'softplus' },
    { kind: 'softsign' },
    { kind: 'relu', maxValue: 6.5 },
  ];
  for (const s of specs) {
    const back = specFromDescription(describeActivation(s));
    for (const x of [-3.7, -0.4, 0, 0.9, 5.2, 7])
      assert.equal(activationFn(back)(x), activationFn(s)(x), `${describeActivation(s)} at ${x}`);
  }
  assert.throws(() => specFromDescription('softmax'), /unknown activation/);
});

test('panel curves: activation, polynomial and error on a grid over the interval; histogram as fractions', async () => {
  const report = await mlp();
  const curves = reportCurves(report);
  assert.deepEqual(
    Object.keys(curves),
    report.layers.map((l) => l.name),
  );
  for (const l of report.layers) {
    const c = curves[l.name];
    assert.equal(c.x.length, 161);
    // Per-channel fits: the plotted polynomial is the channel with the widest interval.
    const chs = l.chosen.channels;
    assert.ok(chs && c.channel, 'the MLP is fitted per channel');
    const widths = chs.intervals.map((iv) => iv.b - iv.a);
    assert.equal(widths[c.channel.index], Math.max(...widths));
    assert.equal(c.channel.of, chs.coeffs.length);
    const iv = chs.intervals[c.channel.index];
    assert.deepEqual(c.interval, iv);
    assert.ok(c.x[0] <= iv.a && c.x[c.x.length - 1] >= iv.b);
    for (let i = 0; i < c.x.length; i += 20) {
      assert.equal(c.activation[i], Math.max(0, c.x[i]));
      const inside = c.x[i] >= iv.a && c.x[i] <= iv.b;
      if (inside) assert.equal(c.polynomial[i], chebval(c.x[i], chs.coeffs[c.channel.index], iv));
      assert.equal(c.error[i], c.polynomial[i] - c.activation[i]);
    }
    const total = c.histogram.density.reduce((s, d) => s + d, 0);
    assert.ok(Math.abs(total - 1) < 1e-9, `histogram fractions sum to ${total}`);
    assert.ok(c.histogram.x.length <= 64 && c.histogram.x.length > 4);
  }
});

test('result cache: keyed by content (reformatting model.json keeps it), atomic writes, clear', async () => {
  const dir = tmpDir();
  const model = path.join(dir, 'model.json');
  fs.copyFileSync(example('mnist-mlp'), model);
  fs.copyFileSync(path.join(path.dirname(example('mnist-mlp')), 'weights.bin'), path.join(dir, 'weights.bin'));
  const data = path.join(dir, 'data.csv');
  fs.writeFileSync(data, '1,2\n');
  assert.deepEqual(modelFiles(model), [model, path.join(dir, 'weights.bin')]);
  const key = () => analysisKey([...modelFiles(model), data, null], { budget: 1 });
  const k0 = key();
  fs.writeFileSync(model, JSON.stringify(JSON.parse(fs.readFileSync(model, 'utf8')), null, 2));
  assert.equal(key(), k0, 'reformatting model.json is not a change');
  assert.notEqual(analysisKey([...modelFiles(model), data, null], { budget: 2 }), k0, 'options are part of the key');
  // Another build of the engine (the worker script) is another key: its results may differ.
  const script = path.join(dir, 'worker.js');
  fs.writeFileSync(script, 'build 1');
  const e1 = engineId(script);
  fs.writeFileSync(script, 'build 2');
  assert.notEqual(engineId(script), e1);
  assert.equal(engineId(path.join(dir, 'missing.js')), 'unknown');
  assert.notEqual(
    analysisKey([...modelFiles(model), data, null], { budget: 1, engine: e1 }),
    analysisKey([...modelFiles(model), data, null], { budget: 1, engine: engineId(script) }),
  );
  fs.appendFileSync(data, '3,4\n');
  assert.notEqual(key(), k0, 'changed data makes results stale');
  const w = fs.readFileSync(path.join(dir, 'weights.bin'));
  w[100] ^= 1;
  fs.writeFileSync(path.join(dir, 'weights.bin'), w);
  const k1 = key();
  assert.notEqual(k1, k0, 'changed weights make results stale');
  const cache = new ResultCache(path.join(dir, 'cache'));
  assert.equal(cache.get(k1), null);
  const report = await mlp();
  cache.put(k1, report);
  assert.deepEqual(cache.get(k1), report);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'cache')), [`${k1}.json`], 'no temporary file left behind');
  cache.clear();
  assert.equal(cache.get(k1), null);
});

test('calibration data beside a model is found and paired with its labels', () => {
  const found = findDataNear(example('mnist-cnn'), null);
  assert.deepEqual(found, [
    {
      data: path.join(ROOT, 'examples', 'data', 'mnist-test-2000-images-idx3-ubyte'),
      labels: path.join(ROOT, 'examples', 'data', 'mnist-test-2000-labels-idx1-ubyte'),
    },
  ]);
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'model.json'), '{}');
  fs.writeFileSync(path.join(dir, 'calib.npy'), '');
  fs.writeFileSync(path.join(dir, 'calib-labels.npy'), '');
  fs.writeFileSync(path.join(dir, 'weights.bin'), '');
  assert.deepEqual(findDataNear(path.join(dir, 'model.json'), dir), [
    { data: path.join(dir, 'calib.npy'), labels: path.join(dir, 'calib-labels.npy') },
  ]);
});

test('a report still applies to a reformatted model.json, not to a changed one', async () => {
  const report = await mlp();
  const dir = tmpDir();
  const model = path.join(dir, 'model.json');
  const json = JSON.parse(fs.readFileSync(example('mnist-mlp'), 'utf8'));
  fs.writeFileSync(model, JSON.stringify(json, null, 2));
  assert.doesNotThrow(() => checkReportMatchesModel(report, model));
  json.modelTopology.config.layers[1].config.units = 99;
  fs.writeFileSync(model, JSON.stringify(json));
  assert.throws(() => checkReportMatchesModel(report, model), /another version of this model/);
});

test('export runs in the worker and never overwrites without force', async () => {
  const { runInWorker, JobFailed } = await import('../src/extension/analysisWorker');
  const report = await mlp();
  const dir = path.join(tmpDir(), 'export');
  const first = await runInWorker(
    { kind: 'export', dir, model: example('mnist-mlp'), report, force: false },
    () => undefined,
  ).result;
  assert.ok(fs.existsSync(first.model) && fs.existsSync(first.coefficients));
  await assert.rejects(
    runInWorker({ kind: 'export', dir, model: example('mnist-mlp'), report, force: false }, () => undefined).result,
    (e: unknown) => e instanceof JobFailed && e.code === 'OUTPUT_EXISTS',
  );
  await runInWorker({ kind: 'export', dir, model: example('mnist-mlp'), report, force: true }, () => undefined).result;
});

test("binary model view: the ONNX example's layers, its activations with degree, depth and drop, escaped, under a strict CSP", async () => {
  const { loadModel } = await import('../src/core/model/load');
  const { summarizeModel } = await import('../src/core/model/summary');
  const { modelViewHtml, modelViewRows } = await import('../src/extension/modelView');
  const file = path.join(ROOT, 'examples', 'pytorch-cnn', 'model.onnx');
  const summary = summarizeModel(await loadModel(file));
  assert.equal(summary.format, 'onnx');
  assert.deepEqual(summary.input, { shape: [1, 28, 28], layout: 'NCHW' });
  const before = modelViewRows(summary, null);
  assert.deepEqual(
    before.filter((r) => r.activation).map((r) => r.activation),
    ['relu', 'swish', 'gelu'],
  );
  assert.ok(before.every((r) => r.degree === ''));
  const report = await analyze({
    model: file,
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    calib: 300,
    heldout: 300,
    degrees: [3, 7],
    tune: false,
  });
  const rows = modelViewRows(summary, report);
  for (const l of report.layers) {
    const row = rows.find((r) => r.node === l.name)!;
    assert.equal(row.degree, String(l.chosen.degree));
    assert.equal(row.depth, String(l.chosen.depth));
  }
  const html = modelViewHtml({
    fileName: 'a<b>.onnx',
    summary,
    error: null,
    report,
    stale: true,
    nonce: 'n0nce',
    cspSource: 'vscode-resource:',
  });
  assert.match(html, /default-src 'none'; style-src vscode-resource: 'nonce-n0nce'; script-src 'nonce-n0nce';/);
  assert.match(html, /a&lt;b&gt;\.onnx/);
  assert.match(html, /stale/);
  assert.match(html, new RegExp(`data-node="${report.layers[0].name.replace(/[/.]/g, (c) => '\\' + c)}"`));
  assert.doesNotMatch(html, /<script(?! nonce="n0nce")/, 'every script carries the nonce');
  const err = modelViewHtml({
    fileName: 'x.onnx',
    summary: null,
    error: { message: 'x.onnx is not a readable ONNX model', fix: 'export again' },
    report: null,
    stale: false,
    nonce: 'n',
    cspSource: 'c',
  });
  assert.match(err, /not a readable ONNX model\.<\/p><p><b>Fix:<\/b> export again/);
});

test("settings -> analysis options: every declared analysis setting is read, with package.json's default; set values reach the options", () => {
  const declared = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).contributes.configuration
    .properties as Record<string, { default: unknown }>;
  const keys = Object.keys(declared).map((k) => k.replace(/^heApprox\./, ''));
  const analysis = keys.filter(
    (k) =>
      !(NON_ANALYSIS_SETTINGS as readonly string[]).includes(k) && !NON_ANALYSIS_PREFIXES.some((p) => k.startsWith(p)),
  );
  const read = new Map<string, unknown>();
  const unset: SettingReader = (k, fallback) => {
    read.set(k, fallback);
    return fallback;
  };
  const defaults = analyzeOptionsFrom(unset, '/m/model.json', '/d/x.npy', null);
  assert.deepEqual([...read.keys()].sort(), analysis.sort(), 'the options read exactly the declared analysis settings');
  for (const k of analysis)
    assert.deepEqual(read.get(k), declared[`heApprox.${k}`].default, `${k}: the fallback is the declared default`);
  assert.ok(
    analysis.includes('fold') && analysis.includes('spareLevels'),
    "the CLI's --no-fold and --spare-levels have settings",
  );
  assert.equal(defaults.fold, true);
  assert.equal(defaults.spareLevels, false);
  assert.equal(defaults.calib, undefined, "0 means the core's default");
  assert.equal(defaults.normalize, null);

  const set = new Map<string, unknown>([
    ['fold', false],
    ['spareLevels', true],
    ['inputScale', '255'],
    ['inputMean', [0.5]],
    ['calibrationSamples', 300],
    ['fitMethod', 'uniform'],
    ['finetuneAugment', 'flip,shift=2'],
  ]);
  const o = analyzeOptionsFrom(
    (k, fallback) => (set.has(k) ? set.get(k) : fallback) as typeof fallback,
    '/m/model.json',
    '/d/x.npy',
    '/d/y.npy',
  );
  assert.equal(o.fold, false);
  assert.equal(o.spareLevels, true);
  assert.equal(o.scale, 255);
  assert.deepEqual(o.normalize, { mean: [0.5], std: [1] });
  assert.equal(o.calib, 300);
  assert.equal(o.method, 'uniform');
  assert.equal(o.labels, '/d/y.npy');
  assert.equal(o.finetuneAugment, 'flip,shift=2');
  assert.deepEqual(resolveSettings({ ...o, finetuneEpochs: 1 }).finetuneAugment, { flip: true, shift: 2 });
  // A bad setting is not refused while settings are read (at activation, for the cache key): the analysis refuses it.
  const bad = analyzeOptionsFrom(
    (k, fallback) => (k === 'inputScale' ? 'abc' : fallback) as typeof fallback,
    '/m',
    '/d',
    null,
  );
  assert.ok(Number.isNaN(bad.scale));
  assert.throws(() => resolveSettings(bad), /input scale must be 'auto', 'none' or a positive number/);
  assert.throws(
    () => resolveSettings({ ...o, finetuneEpochs: 1, finetuneAugment: 'rotate' }),
    /--finetune-augment rotate: unknown augmentation/,
  );
});

test('one option table: package.json declares exactly its settings with the same defaults; the CLI lists its flags', () => {
  const declared = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).contributes.configuration
    .properties as Record<string, { default: unknown; type: string }>;
  const inTable = ANALYZE_OPTIONS.filter((o) => o.setting);
  const names = new Set(inTable.map((o) => `heApprox.${o.setting!.name}`));
  const others = Object.keys(declared).filter(
    (k) => !names.has(k) && !NON_ANALYSIS_PREFIXES.some((p) => k.startsWith(`heApprox.${p}`)),
  );
  assert.deepEqual(others, ['heApprox.autoAnalyze'], 'every other heApprox.* setting is an option of the table');
  for (const o of inTable) {
    const d = declared[`heApprox.${o.setting!.name}`];
    assert.ok(d, `heApprox.${o.setting!.name} is declared`);
    assert.deepEqual(d.default, o.setting!.default, `${o.setting!.name}: package.json's default is the table's`);
    // The setting's default means the option's: the same value, or "the analysis's own" where it computes one.
    if (!o.path) {
      const v = o.setting!.toOption ? o.setting!.toOption(o.setting!.default) : o.setting!.default;
      if (o.key === 'inputMean' || o.key === 'inputStd') assert.deepEqual(v, []);
      else assert.deepEqual(v, o.default, `${o.setting!.name}: the default means the option's default`);
    }
  }
  const help = cli('help').out;
  for (const o of [...ANALYZE_OPTIONS, ...ENCRYPTED_TEST_OPTIONS]) {
    assert.match(help, new RegExp(`--${o.flag}${o.cli === 'value' ? ' <v>' : ''} +\\S`), `help lists --${o.flag}`);
    if (o.defaultText) assert.ok(help.includes(`(default ${o.defaultText})`), `help states --${o.flag}'s default`);
  }
});

test("the encrypted test's options: package.json's heApprox.encryptedTest.* settings are the table's, read with their defaults", () => {
  const declared = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).contributes.configuration
    .properties as Record<string, { default: unknown }>;
  const settings = Object.keys(declared).filter((k) => k.startsWith('heApprox.encryptedTest.'));
  const inTable = ENCRYPTED_TEST_OPTIONS.filter((o) => o.setting);
  assert.deepEqual(settings.sort(), inTable.map((o) => `heApprox.${o.setting!.name}`).sort());
  for (const o of inTable)
    assert.deepEqual(declared[`heApprox.${o.setting!.name}`].default, o.setting!.default, o.setting!.name);
  const read = new Map<string, unknown>();
  const defaults = encryptedTestChoicesFrom((k, fallback) => {
    read.set(k, fallback);
    return fallback;
  });
  assert.deepEqual([...read.keys()].sort(), inTable.map((o) => o.setting!.name).sort());
  // 'ask' leaves the mode open; the editor tests fewer samples than the terminal by default.
  assert.deepEqual(defaults, {
    samples: 8,
    layerOnly: undefined,
    latency: false,
    ringSize: undefined,
    engine: undefined,
  });
  const set = new Map<string, unknown>([
    ['encryptedTest.mode', 'layer'],
    ['encryptedTest.packing', 'latency'],
    ['encryptedTest.ringSize', 16384],
    ['encryptedTest.engine', 'lattigo'],
    ['encryptedTest.samples', 3],
  ]);
  assert.deepEqual(
    encryptedTestChoicesFrom((k, fallback) => (set.has(k) ? set.get(k) : fallback) as typeof fallback),
    { samples: 3, layerOnly: true, latency: true, ringSize: 16384, engine: 'lattigo' },
  );
  assert.equal(
    renderForEditor('pass --engine seal or --engine lattigo'),
    'set heApprox.encryptedTest.engine seal or heApprox.encryptedTest.engine lattigo',
  );
  // The CLI parses with the same table: its range and its parser.
  assert.match(
    cli('encrypted-test', 'm.json', '--report', 'r.json', '--data', 'd', '--engine', 'x').err,
    /--engine x is unknown/,
  );
  assert.match(
    cli('encrypted-test', 'm.json', '--report', 'r.json', '--data', 'd', '--samples', '0').err,
    /--samples 0 is not a positive integer/,
  );
});

test('messages name options by flag in the terminal and by setting in the editor', () => {
  assert.equal(
    renderForEditor('pass --budget in percentage points, e.g. 1.0'),
    'set heApprox.accuracyBudget in percentage points, e.g. 1.0',
  );
  assert.equal(
    renderForEditor('pass --no-tune, or use --per-layer'),
    'set heApprox.tuneCoefficients to false, or use heApprox.perChannel = false',
  );
  assert.equal(
    renderForEditor('raise --level-budget (or --ring-size)'),
    'raise heApprox.levelBudget (or heApprox.ringSize)',
  );
  assert.equal(
    renderForEditor('pass --margin as a fraction'),
    'pass --margin as a fraction',
    'no setting: the flag stays',
  );
  assert.equal(renderForEditor('--budget-x and --ring-sizes'), '--budget-x and --ring-sizes', 'whole flags only');
});

test('a max pooling layer: diagnostics, one CodeLens for its tree, hovers and model-view rows; its tfjs export computes the analysed trees', async () => {
  await initBackend();
  const m = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [28, 28, 1],
        filters: 4,
        kernelSize: 5,
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }),
        name: 'conv',
      }),
      tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same', name: 'pool' }),
      tf.layers.flatten({ name: 'flat' }),
      tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }), name: 'out' }),
    ],
  });
  const file = await saveModel(m, tmpDir());
  const report = JSON.parse(
    JSON.stringify(
      await analyze({ model: file, data: MNIST_TEST_IMAGES, calib: 300, heldout: 300, degrees: [2, 3, 7] }),
    ),
  ) as Report;
  const steps = report.layers.filter((l) => l.maxTree);
  assert.equal(steps.length, 4, 'a 3x3 window: two steps along each axis');
  const ranges = findLayerRanges(fs.readFileSync(file, 'utf8'));
  const diags = reportDiagnostics(report, ranges).filter((d) => d.layer === 'pool' && d.code === 'degree');
  assert.equal(diags.length, 4);
  assert.match(diags[0].message, /^max pooling, step 1: \|a - b\| along the width → degree \d+/);
  const lenses = reportCodeLenses(report, ranges).filter((l) => l.layer === 'pool');
  assert.equal(lenses.length, 1, 'one lens for the whole tree');
  assert.match(
    lenses[0].title,
    /^max pooling as polynomials: \|x\| degrees \d+, \d+, \d+, \d+ · depth \d+ · Show fit$/,
  );
  const hover = reportHover(report, 'pool')!;
  assert.equal(hover.split('---').length, 4);
  assert.match(hover, /max\(a, b\) = \(a \+ b\)\/2 \+ \|a - b\|\/2/);
  const loaded = await loadModel(file);
  const rows = modelViewRows(summarizeModel(loaded), report);
  assert.deepEqual(
    rows.filter((r) => r.activation === '|a - b| (max pooling)').map((r) => r.node),
    steps.map((l) => l.name),
  );
  assert.ok(!rows.some((r) => /\/(diff|max)$/.test(r.name)), 'the differences and sums around each |x| are not listed');
  // The exported tfjs model's HEPolyMaxPooling2D computes what the analysis measured.
  registerPolyLayer();
  const files = writeOutputs(tmpDir(), loaded, report, false);
  const exported = await tfjsLoad(files.model);
  const x = tf.randomUniform([6, 28, 28, 1], 0, 1, 'float32', 5);
  const theirs = (exported.predict(x) as tf.Tensor).dataSync();
  const ex = new Executor(loaded.graph);
  const ours = ex.run(new Map([[0, x]]), 0, { replace: polysFromReport(report) }).logits;
  ex.dispose();
  assert.equal(loaded.graph.droppedFinalSoftmax, false, 'logits out');
  let d = 0;
  for (let i = 0; i < theirs.length; i++) d = Math.max(d, Math.abs(theirs[i] - ours[i]));
  assert.ok(d < 1e-5, `exported tfjs model differs from the analysis by ${d}`);
});

test("the panel's frontier: per method by increasing levels, the result and --frontier's points marked", () => {
  const p = (method: string, levels: number, drop: number, more: object = {}) => ({
    method,
    degrees: {},
    levels,
    ringSize: 16384,
    bootstraps: 0,
    estLatencyMs: 1,
    measuredDrop: drop,
    safe: true,
    meetsBudget: drop <= 1,
    source: 'search' as const,
    chosen: false,
    ...more,
  });
  const series = frontierSeries({
    frontier: {
      measured: 1,
      points: [
        p('data-guided', 8, 0.4, { chosen: true }),
        p('uniform', 12, 0.9),
        p('data-guided', 6, 1.3, { source: 'frontier' }),
        p('data-guided + fine-tuning', 6, 0.5, { source: 'finetuned' }),
      ],
    },
  });
  assert.deepEqual(
    series.map((s) => [s.method, s.points.map((q) => [q.levels, q.drop, q.chosen, q.extra, q.pickable])]),
    [
      [
        'data-guided',
        [
          [6, 1.3, false, true, true],
          [8, 0.4, true, false, true],
        ],
      ],
      ['uniform', [[12, 0.9, false, false, false]]],
      ['data-guided + fine-tuning', [[6, 0.5, false, false, false]]],
    ],
  );
  assert.deepEqual(frontierSeries({}), [], 'a report from before the frontier draws nothing');
});

test("the field's published ResNet-20 points go beside a CIFAR ResNet-20's frontier only, by its shape", () => {
  const net = (inputShape: number[], relus: number, activation = 'relu') => ({
    model: { inputShape } as Report['model'],
    layers: Array.from({ length: relus }, () => ({ activation, maxTree: null })) as unknown as Report['layers'],
  });
  const pts = publishedPoints(net([1, 3, 32, 32], 19));
  assert.deepEqual(
    pts.map((p) => [p.bootstraps, p.drop]),
    [
      [5, 0.7],
      [11, -0.23],
      [18, 0.07],
    ],
    "AutoFHE's two points and Lee et al.'s, as their papers give them",
  );
  assert.equal(publishedPoints(net([32, 32, 3], 19)).length, 3, 'channels last too');
  assert.deepEqual(publishedPoints(net([1, 3, 32, 32], 31)), [], 'ResNet-32: not ResNet-20');
  assert.deepEqual(publishedPoints(net([28, 28, 1], 19)), [], 'not a CIFAR input');
  assert.deepEqual(publishedPoints(net([1, 3, 32, 32], 19, 'gelu')), [], 'not ReLU');
});

test('heApprox.finetuneEpochs: the worker keeps the fine-tuned model beside the cached report, and Export writes it to finetuned/', async () => {
  const { runInWorker } = await import('../src/extension/analysisWorker');
  const { ResultCache } = await import('../src/extension/cache');
  const { analysisMessage } = await import('../src/extension/reportView');
  const { deployed } = await import('../src/core/deployed');
  const bundled = path.join(ROOT, 'examples', 'data');
  const cache = new ResultCache(tmpDir());
  const file = cache.finetunedFile('k');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, 'left by an earlier run');
  const options = {
    model: example('mnist-cnn'),
    data: path.join(bundled, 'mnist-test-2000-images-idx3-ubyte'),
    labels: path.join(bundled, 'mnist-test-2000-labels-idx1-ubyte'),
    finetuneEpochs: 3,
  };
  const report = await runInWorker({ kind: 'analyze', options, finetunedFile: file }, () => undefined).result;
  // On the bundled images the CNN's cheaper ring meets the budget only after fine-tuning (README).
  assert.ok(report.finetune?.kept, 'fine-tuning kept');
  assert.ok(deployed(report).meetsBudget && deployed(report).finetuned);
  assert.match(
    analysisMessage(report),
    /after fine-tuning \d+\.\d\d pp \(export writes the fine-tuned model to finetuned\/\)/,
  );
  const saved = fs.readFileSync(file);
  assert.notEqual(saved.toString('utf8'), 'left by an earlier run');
  const dir = path.join(tmpDir(), 'export');
  const files = await runInWorker(
    { kind: 'export', dir, model: options.model, report, force: false, finetunedFile: file },
    () => undefined,
  ).result;
  assert.ok(files.finetuned && fs.existsSync(files.finetuned.model) && fs.existsSync(files.finetuned.weights!));
  const written = JSON.parse(fs.readFileSync(files.report, 'utf8'));
  assert.equal(written.finetune.exported, path.join('finetuned', 'model.json'));
  assert.notDeepEqual(fs.readFileSync(files.finetuned.weights!), fs.readFileSync(files.weights!), 'other weights');
  // Results cleared since: the export says why finetuned/ is missing instead of writing the user's weights there.
  cache.clear();
  assert.ok(!fs.existsSync(file), 'clearing the results removes the fine-tuned model too');
  const dir2 = path.join(tmpDir(), 'export');
  const again = await runInWorker(
    { kind: 'export', dir: dir2, model: options.model, report, force: false, finetunedFile: file },
    () => undefined,
  ).result;
  assert.equal(again.finetuned, null);
  assert.ok(!fs.existsSync(path.join(dir2, 'finetuned')));
  const second = JSON.parse(fs.readFileSync(again.report, 'utf8'));
  assert.equal(second.finetune.exported, null);
  assert.match(second.finetune.notExported, /no longer cached.*Analyze Model again/);
});
