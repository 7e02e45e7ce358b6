/**
 * Files from an untrusted workspace (issue 30): paths inside a model stay in its folder, --out is
 * checked where its links lead and never written through a link, a report read back is checked
 * (structure and checksum), and every path kind at every entry ends in one clear error (exit 2).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { readUserFile, resolveInside } from '../src/core/files';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { Report } from '../src/core/report';
import { checkReport, reportChecksum, sealReport } from '../src/core/reportCheck';
import {
  MNIST_TEST_IMAGES,
  MNIST_TEST_LABELS,
  ROOT,
  assertOneLineError,
  cli,
  example,
  expectUserError,
  expectUserErrorAsync,
  tmpDir,
} from './helpers';

/** Every file under `dir` with its kind and content hash (links by target): the file system's state. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (e.isSymbolicLink()) out.push(`${rel} -> ${fs.readlinkSync(p)}`);
      else if (e.isDirectory()) {
        out.push(`${rel}/`);
        walk(p);
      } else if (e.isFile()) out.push(`${rel} ${crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
      else out.push(`${rel} (special)`);
    }
  };
  walk(dir);
  return out.sort();
}

/** The MLP example's model.json in `dir/model`, its manifest naming `paths` as its weight shards. */
function plantModel(dir: string, paths: string[]): string {
  const m = path.join(dir, 'model');
  fs.mkdirSync(m, { recursive: true });
  const json = JSON.parse(fs.readFileSync(example('mnist-mlp'), 'utf8'));
  json.weightsManifest[0].paths = paths;
  fs.writeFileSync(path.join(m, 'model.json'), JSON.stringify(json));
  return path.join(m, 'model.json');
}

const WEIGHTS = path.join(ROOT, 'examples', 'mnist-mlp', 'weights.bin');
const analyzeArgs = (model: string, out: string, ...extra: string[]) => [
  'analyze',
  model,
  '--data',
  MNIST_TEST_IMAGES,
  '--calib',
  '200',
  '--heldout',
  '200',
  '--out',
  out,
  '--quiet',
  ...extra,
];

test("weight shards named outside the model's folder are refused: a relative path out, an absolute path, a link out; a link inside is read", () => {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'elsewhere'));
  fs.copyFileSync(WEIGHTS, path.join(dir, 'elsewhere', 'weights.bin'));
  const before = snapshot(dir);
  // The issue's case: ../elsewhere/weights.bin was read and the analysis ran, exit 0.
  assertOneLineError(
    cli(...analyzeArgs(plantModel(dir, ['../elsewhere/weights.bin']), path.join(dir, 'out'))),
    /model\.json names the weight shard '\.\.\/elsewhere\/weights\.bin', which leads out of the model's folder/,
  );
  assertOneLineError(
    cli(...analyzeArgs(plantModel(dir, [path.join(dir, 'elsewhere', 'weights.bin')]), path.join(dir, 'out'))),
    /which is an absolute path/,
  );
  fs.symlinkSync(path.join(dir, 'elsewhere', 'weights.bin'), path.join(dir, 'model', 'link.bin'));
  assertOneLineError(
    cli(...analyzeArgs(plantModel(dir, ['link.bin']), path.join(dir, 'out'))),
    /'link\.bin', which is a symbolic link leading out of the model's folder \(to .*elsewhere\/weights\.bin\)/,
  );
  fs.rmSync(path.join(dir, 'model', 'link.bin'));
  assert.deepEqual(
    snapshot(dir).filter((f) => !f.startsWith('model')),
    before,
    'nothing written: no out folder',
  );
  // A link that stays inside the folder is the model's own file.
  fs.copyFileSync(WEIGHTS, path.join(dir, 'model', 'real.bin'));
  fs.symlinkSync('real.bin', path.join(dir, 'model', 'alias.bin'));
  const ok = cli(...analyzeArgs(plantModel(dir, ['alias.bin']), path.join(dir, 'out')));
  assert.ok(ok.code === 0 || ok.code === 3, ok.err);
  expectUserError(
    () => resolveInside(path.join(dir, 'model', 'model.json'), 'sub/../../x.bin', 'the weight shard'),
    'MODEL_UNREADABLE',
    /leads out of the model's folder/,
  );
});

test('--out is checked where its links lead, and nothing is written through a link planted in it', () => {
  const dir = tmpDir();
  const m = path.join(dir, 'ws', 'm');
  fs.cpSync(path.join(ROOT, 'examples', 'mnist-mlp'), m, { recursive: true });
  const model = path.join(m, 'model.json');
  const before = snapshot(m);
  // The issue's case: --out a link to the model's own folder wrote the outputs there.
  fs.symlinkSync(m, path.join(dir, 'out-link'));
  assertOneLineError(
    cli(...analyzeArgs(model, path.join(dir, 'out-link'))),
    /--out .*out-link is the input model's folder \(it leads to .*ws\/m\); he-approx never writes there/,
  );
  assertOneLineError(cli(...analyzeArgs(model, path.join(m, 'results'))), /is inside the input model's folder/);
  fs.symlinkSync(path.join(m, 'sub'), path.join(dir, 'into-link'));
  assertOneLineError(
    cli(...analyzeArgs(model, path.join(dir, 'into-link'))),
    /is inside the input model's folder \(it leads to .*ws\/m\/sub\)/,
  );
  fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));
  assertOneLineError(
    cli(...analyzeArgs(model, path.join(dir, 'dangling'))),
    /--out .*dangling is a symbolic link to .*nowhere, which does not exist/,
  );
  // A report.json planted as a link to a file of the user's: refused even with --force, the file untouched.
  const victim = path.join(dir, 'victim.txt');
  fs.writeFileSync(victim, "the user's file\n");
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  fs.symlinkSync(victim, path.join(out, 'report.json'));
  assertOneLineError(
    cli(...analyzeArgs(model, out, '--force')),
    /report\.json is a symbolic link; he-approx does not write through links/,
  );
  fs.rmSync(path.join(out, 'report.json'));
  fs.symlinkSync(dir, path.join(out, 'model'));
  assertOneLineError(cli(...analyzeArgs(model, out)), /out\/model is a symbolic link/);
  assert.equal(fs.readFileSync(victim, 'utf8'), "the user's file\n");
  assert.deepEqual(snapshot(m), before, "the model's folder is unchanged");
  // --out a link to a folder elsewhere: allowed, written where it leads.
  fs.rmSync(path.join(out, 'model'));
  fs.symlinkSync(out, path.join(dir, 'good-link'));
  const ok = cli(...analyzeArgs(model, path.join(dir, 'good-link')));
  assert.ok(ok.code === 0 || ok.code === 3, ok.err);
  assert.ok(fs.existsSync(path.join(out, 'report.json')));
});

test('every path kind at every entry is one clear error: a folder, a FIFO, a device, a dangling link, a missing file', () => {
  const dir = tmpDir();
  const inputs = path.join(dir, 'in');
  fs.mkdirSync(inputs);
  const out = path.join(dir, 'out');
  const kinds: Record<string, { make: (p: string) => void; says: RegExp }> = {
    folder: { make: (p) => fs.mkdirSync(p), says: /is a folder, not a file/ },
    fifo: {
      make: (p) => {
        const r = spawnSync('mkfifo', [p]);
        assert.equal(r.status, 0, String(r.stderr));
      },
      says: /is a named pipe \(FIFO\), not a file/,
    },
    device: { make: (p) => fs.symlinkSync('/dev/zero', p), says: /is a device, not a file/ },
    dangling: {
      make: (p) => fs.symlinkSync(path.join(dir, 'gone'), p),
      says: /is a symbolic link to .*gone, which does not exist/,
    },
    missing: { make: () => undefined, says: /does not exist/ },
  };
  for (const [kind, k] of Object.entries(kinds)) {
    const p = path.join(inputs, `${kind}.json`);
    k.make(p);
    const entries: [string, string[], RegExp][] = [
      ['model', ['analyze', p, '--data', MNIST_TEST_IMAGES, '--out', out], /model file/],
      ['data', ['analyze', example('mnist-mlp'), '--data', p, '--out', out], /data file/],
      [
        'labels',
        ['analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--labels', p, '--out', out],
        /labels file/,
      ],
      [
        'held-out data',
        ['analyze', example('mnist-mlp'), '--data', MNIST_TEST_IMAGES, '--heldout-data', p, '--out', out],
        /held-out data file/,
      ],
      ['report', ['encrypted-test', example('mnist-mlp'), '--report', p, '--data', MNIST_TEST_IMAGES], /report/],
    ];
    for (const [entry, argv, names] of entries) {
      // A folder given as the model means its model.json (a tfjs export), which is then missing.
      const says = entry === 'model' && kind === 'folder' ? /model\.json does not exist/ : k.says;
      const r = cli(...argv);
      assert.equal(r.code, 2, `${entry} as ${kind}: ${r.err}`);
      assertOneLineError(r, names);
      assertOneLineError(r, says);
    }
    // --out: a FIFO or a device is no folder (an existing folder is the usual --out; links are the test above).
    if (kind === 'fifo' || kind === 'device')
      assertOneLineError(cli(...analyzeArgs(example('mnist-mlp'), p)), /--out .* is a special file, not a folder/);
  }
  assert.ok(!fs.existsSync(out), 'no output written for a refused input');
});

// Root reads files whatever their mode (CI containers often run as root): nothing to deny there.
test(
  'an unreadable file is one clear error naming the permission',
  { skip: process.getuid?.() === 0 && 'running as root: file modes deny root nothing' },
  () => {
    const dir = tmpDir();
    const data = path.join(dir, 'data.npy');
    fs.copyFileSync(MNIST_TEST_IMAGES, data);
    fs.chmodSync(data, 0o000);
    assertOneLineError(
      cli(...analyzeArgs(example('mnist-mlp'), path.join(dir, 'out')).map((a) => (a === MNIST_TEST_IMAGES ? data : a))),
      /data file .*data\.npy cannot be read \(permission denied\)\. Fix: make it readable/,
    );
  },
);

test('a file that changes while it is read is refused, not read half old and half new', () => {
  // A /proc file stats as an empty regular file and reads as text: what a file being written looks like.
  expectUserError(
    () => readUserFile('/proc/self/status', { what: 'data file', code: 'DATA_UNREADABLE', fix: 'x' }),
    'DATA_UNREADABLE',
    /changed while he-approx read it/,
  );
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'a.bin'), Buffer.alloc(1000, 1));
  assert.equal(
    readUserFile(path.join(dir, 'a.bin'), { what: 'data file', code: 'DATA_UNREADABLE', fix: 'x' }).length,
    1000,
  );
});

test("a report read back is checked: edited coefficients, nulls, a removed checksum, channels that are not the model's", async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'r');
  const a = cli(
    'analyze',
    example('mnist-cnn'),
    '--data',
    MNIST_TEST_IMAGES,
    '--labels',
    MNIST_TEST_LABELS,
    '--calib',
    '300',
    '--heldout',
    '300',
    '--out',
    out,
    '--quiet',
  );
  assert.ok(a.code === 0 || a.code === 3, a.err);
  const file = path.join(out, 'report.json');
  const good = JSON.parse(fs.readFileSync(file, 'utf8')) as Report;
  assert.equal(good.checksum, reportChecksum(good));
  assert.doesNotThrow(() => checkReport(good, 'report.json'));
  const perChannel = good.layers.findIndex((l) => l.chosen.channels);
  assert.ok(perChannel >= 0, 'the CNN is fitted per channel');
  const edits: [string, (r: Report) => void, RegExp][] = [
    [
      'a coefficient as the string "NaN"',
      (r) => {
        (r.layers[0].chosen.coeffs as unknown[])[1] = 'NaN';
      },
      /coeffs\[1\] is "NaN", not a finite number/,
    ],
    [
      'a per-channel coefficient as null',
      (r) => {
        (r.layers[perChannel].chosen.channels!.coeffs[0] as unknown[])[0] = null;
      },
      /channels\.coeffs\[0\]\[0\] is null/,
    ],
    [
      'one coefficient too few',
      (r) => {
        r.layers[0].chosen.coeffs.pop();
      },
      /holds \d+ coefficients, not degree \+ 1/,
    ],
    [
      'an interval reversed',
      (r) => {
        const iv = r.layers[0].chosen.interval;
        [iv.a, iv.b] = [iv.b, iv.a];
      },
      /is not an interval a < b/,
    ],
    [
      'channels and intervals of different counts',
      (r) => {
        r.layers[perChannel].chosen.channels!.intervals.pop();
      },
      /channels hold \d+ polynomials and \d+ intervals/,
    ],
    [
      'a degree its fold cannot evaluate',
      (r) => {
        Object.assign(r.layers[0].chosen, { channels: null, channelOffset: null });
        r.layers[0].chosen.fold.form = 'square';
        r.layers[0].chosen.degree = 7;
        r.layers[0].chosen.coeffs = new Array(8).fill(0);
      },
      /a degree-7 polynomial cannot be evaluated as the 'square' form/,
    ],
    [
      'a valid-looking coefficient changed',
      (r) => {
        r.layers[0].chosen.coeffs[0] += 0.01;
      },
      /was changed after he-approx wrote it/,
    ],
    [
      'the checksum removed',
      (r) => {
        delete r.checksum;
      },
      /has no checksum/,
    ],
    [
      'another schema version',
      (r) => {
        (r as { version: number }).version = 3;
      },
      /is not a he-approx report of version 4/,
    ],
  ];
  for (const [what, edit, says] of edits) {
    const r = JSON.parse(JSON.stringify(good)) as Report;
    edit(r);
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify(r));
    const e = cli(
      'encrypted-test',
      example('mnist-cnn'),
      '--report',
      bad,
      '--data',
      MNIST_TEST_IMAGES,
      '--samples',
      '1',
    );
    assert.equal(e.code, 2, `${what}: ${e.err}`);
    assertOneLineError(e, says);
  }
  // Per-channel values for channels the model's activation does not have (sealed, so only the model can tell).
  const r = JSON.parse(JSON.stringify(good)) as Report;
  const ch = r.layers[perChannel].chosen.channels!;
  ch.coeffs.push(ch.coeffs[0]);
  ch.intervals.push(ch.intervals[0]);
  if (r.layers[perChannel].chosen.channelOffset) r.layers[perChannel].chosen.channelOffset!.push(0);
  await expectUserErrorAsync(
    () =>
      encryptedModelTest({ model: example('mnist-cnn'), report: sealReport(r), data: MNIST_TEST_IMAGES, samples: 1 }),
    'REPORT_INVALID',
    /per-channel values for \d+ channels, and the model's activation has \d+/,
  );
  const folded = JSON.parse(JSON.stringify(good)) as Report;
  folded.layers[0].chosen.fold.into = 'no_such_layer';
  await expectUserErrorAsync(
    () =>
      encryptedModelTest({
        model: example('mnist-cnn'),
        report: sealReport(folded),
        data: MNIST_TEST_IMAGES,
        samples: 1,
      }),
    'REPORT_INVALID',
    /is folded into 'no_such_layer', which is not where this model's graph folds it/,
  );
  // The encrypted test adds its results under "encrypted", outside the checksum: the report stays usable.
  const e1 = cli(
    'encrypted-test',
    example('mnist-cnn'),
    '--report',
    file,
    '--data',
    MNIST_TEST_IMAGES,
    '--samples',
    '1',
    '--quiet',
  );
  assert.equal(e1.code, 0, e1.err);
  const after = JSON.parse(fs.readFileSync(file, 'utf8')) as Report;
  assert.ok(after.encrypted?.model);
  assert.doesNotThrow(() => checkReport(after, 'report.json'));
  assert.deepEqual(
    fs.readdirSync(out).filter((f) => f.endsWith('.tmp')),
    [],
    'no temporary file left beside the report',
  );
});
