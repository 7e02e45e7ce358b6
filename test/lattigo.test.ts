/**
 * The Lattigo engine (engines/lattigo, built by `npm ci`): its chain and its refusals, a repository
 * example planned for bootstrapping run encrypted end to end on it (the test suite's small,
 * insecure ring: HE_APPROX_INSECURE_TEST_PARAMS), and every way the engine can fail ending in one
 * line: missing, not ours, crashing, killed, cancelled; no files left behind.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { analyze } from '../src/core/analyze';
import { UserError } from '../src/core/errors';
import { SECURE_LOG_N, constRuns, engineChain, engineVersion, findEngine } from '../src/core/he/lattigo';
import {
  bootstrapSpec,
  cachedLattigoCosts,
  lattigoCostsFile,
  measureAndCacheLattigoCosts,
  measureLattigoCosts,
} from '../src/core/he/lattigoCosts';
import { encryptedModelTest } from '../src/core/he/modelTest';
import { Report, polysFromReport } from '../src/core/report';
import { planProgramBootstraps } from '../src/core/he/bootstrapPlan';
import { packSamples } from '../src/core/he/layout';
import { recordProgram } from '../src/core/he/emulate';
import { compileProgram } from '../src/core/he/compile';
import { simulateTrace } from '../src/core/he/trace';
import { loadDataset } from '../src/core/data/read';
import { initBackend, tf } from '../src/core/model/backend';
import { Executor } from '../src/core/model/execute';
import { loadModel } from '../src/core/model/load';
import { ROOT, example, expectUserError, expectUserErrorAsync, tmpDir } from './helpers';

const DATA = path.join(ROOT, 'examples', 'data', 'mnist-test-2000-images-idx3-ubyte');
const LABELS = path.join(ROOT, 'examples', 'data', 'mnist-test-2000-labels-idx1-ubyte');
const TEST_LOG_N = 13;

let report: Report | null = null;
/** The CNN example planned for bootstrapping every 3 levels: several bootstraps in a 7-level network. */
async function bootstrapped(): Promise<Report> {
  report ??= JSON.parse(
    JSON.stringify(
      await analyze({
        model: example('mnist-cnn'),
        data: DATA,
        labels: LABELS,
        calib: 600,
        heldout: 600,
        bootstrap: true,
        bootstrapLevels: 3,
      }),
    ),
  );
  return report!;
}

/** The engine's temporary folders in the temporary directory. */
const engineFolders = () => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('he-approx-lattigo-'));

/**
 * The engine's folders that appeared since `since()` was called: those this test's runs left behind
 * (none may be). Folders there before are not this test's: a run killed elsewhere leaves one.
 */
function since(): () => string[] {
  const before = new Set(engineFolders());
  return () => engineFolders().filter((f) => !before.has(f));
}

test('constants cross to the engine as runs of equal values, which expand to exactly the vectors', () => {
  const block = (k: number, period: number, f: (b: number) => number) =>
    Float64Array.from({ length: k * period }, (_, q) => f(Math.floor(q / period)));
  const consts = [
    block(32, 1024, (b) => (b % 3) - 0.25),
    Float64Array.of(1, 1, -0, 0, NaN, NaN, 2 ** -40),
    new Float64Array(5),
  ];
  const { data, offsets } = constRuns(consts);
  assert.deepEqual(
    offsets.map(([, n]) => n),
    [32, 5, 1],
    'one run per block; -0 apart from 0; NaN runs merge',
  );
  consts.forEach((c, i) => {
    const [at, n] = offsets[i];
    const back: number[] = [];
    for (let k = 0; k < n; k++) for (let j = 0; j < data[at + 2 * k]; j++) back.push(data[at + 2 * k + 1]);
    assert.deepEqual(Float64Array.from(back), c);
  });
});

test('the engine is built with the repository and states its chain: 128-bit bootstrapping at N=2^16 holds 9 levels, not 10', () => {
  assert.match(engineVersion(), /^he-approx-lattigo 3 \(lattigo v6\.1\.1\)$/);
  const chain = engineChain({ logN: SECURE_LOG_N, levels: 9, bootstrap: true });
  assert.equal(chain.security, '128-bit');
  assert.equal(chain.messageRatio, 256, "the bootstrapping's q0 / |m|, for the scale it returns from level 0");
  assert.equal(chain.levels, 9);
  assert.equal(chain.slots, 2 ** 15);
  assert.equal(chain.primes.length, 10);
  assert.ok(chain.logQP <= 1550, `log2(QP) ${chain.logQP}`);
  expectUserError(
    () => engineChain({ logN: SECURE_LOG_N, levels: 10, bootstrap: true }),
    'BUDGET_INFEASIBLE',
    /10 levels between bootstraps .* beyond the 1550 .* \(at most 9 levels\)/,
  );
  // Small rings are for the test suite only.
  const prev = process.env.HE_APPROX_INSECURE_TEST_PARAMS;
  delete process.env.HE_APPROX_INSECURE_TEST_PARAMS;
  try {
    expectUserError(
      () => engineChain({ logN: TEST_LOG_N, levels: 3, bootstrap: true, insecure: true }),
      'OPTION_INVALID',
      /insecure test parameters/,
    );
  } finally {
    if (prev !== undefined) process.env.HE_APPROX_INSECURE_TEST_PARAMS = prev;
  }
});

test('building the engine: without Go the install goes on and says so; a failed build names the fix, and stops only where the engine is required', () => {
  const script = path.join(ROOT, 'scripts', 'build-engine.mjs');
  const build = (env: NodeJS.ProcessEnv, ...args: string[]) =>
    spawnSync(process.execPath, [script, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env } });
  const noGo = build({ PATH: path.dirname(process.execPath) }, '--optional');
  assert.equal(noGo.status, 0);
  assert.match(
    noGo.stdout,
    /Go was not found, so the Lattigo engine .* is not built; everything else works\. To build it: install Go 1\.22 or later/,
  );
  // Go without the modules it needs (an empty module cache, no proxy): the build fails.
  const offline = { GOMODCACHE: tmpDir('he-approx-gomod-'), GOPROXY: 'off', GOFLAGS: '-modcacherw' };
  const required = build(offline);
  assert.equal(required.status, 1);
  assert.match(
    required.stderr,
    /building the Lattigo engine for \S+ failed \(see above\)\. Fix: check that Go is 1\.22 or later and that the Go module proxy is reachable, then run npm run build:engine\./,
  );
  const optional = build(offline, '--optional');
  assert.equal(optional.status, 0, 'npm ci goes on');
  assert.match(optional.stderr, /Everything but encrypted runs with bootstrapping works without it/);
  assert.equal(build({}, '--target', 'beos-x64').status, 2);
  engineVersion(); // the failed builds left the built engine as it was
});

test("lowering with the plan's bootstraps, values scaled into range: the trace on the simulator computes the approximated model", async () => {
  const r = await bootstrapped();
  await initBackend();
  const m = await loadModel(example('mnist-cnn'));
  const p = compileProgram(m.graph, r);
  const boots = planProgramBootstraps(m.graph, p, r, 3);
  assert.equal(boots.bootstraps, r.final.bootstraps);
  assert.ok(
    boots.values.some((v) => v.scaled),
    'a value beyond [-1, 1] is scaled by the step that makes it',
  );
  const slots = 4096;
  const B = 4;
  const t = recordProgram(p, {
    primes: [2 ** 60, ...new Array(3).fill(2 ** 40)],
    levels: 3,
    slots,
    B,
    refresh: boots.refresh,
  });
  assert.equal(t.predicted.bootstrapGroups!.length, r.final.bootstraps);
  const ds = loadDataset(DATA, null, m.graph.inputShape);
  const xs = ds.x.subarray(0, B * 784);
  const out = simulateTrace(t, packSamples(p, xs, B, B, slots)).v;
  const ex = new Executor(m.graph);
  const ref = ex.run(new Map([[0, tf.tensor(xs, [B, 28, 28, 1])]]), 0, { replace: polysFromReport(r) }).logits;
  ex.dispose();
  for (let b = 0; b < B; b++)
    for (let j = 0; j < 10; j++)
      assert.ok(
        Math.abs(out[j * B + b] - ref[b * 10 + j]) < 1e-4,
        `sample ${b} logit ${j}: ${out[j * B + b]} vs ${ref[b * 10 + j]}`,
      );
});

test('a repository example planned with bootstraps runs encrypted on Lattigo: every image agrees, bootstraps executed = planned, levels as predicted', async () => {
  const left = since();
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const r = await bootstrapped();
  assert.ok(r.bootstrapping.planned && r.options.bootstrap);
  assert.ok(r.final.bootstraps >= 2, `${r.final.bootstraps} bootstraps planned`);
  const res = await encryptedModelTest({
    model: example('mnist-cnn'),
    report: r,
    data: DATA,
    labels: LABELS,
    samples: 8,
    insecureLogN: TEST_LOG_N,
  });
  assert.equal(res.engine, 'lattigo');
  assert.equal(res.security, 'insecure (test parameters)');
  assert.equal(res.samples.length, 8);
  assert.equal(res.agreement, 1);
  assert.ok(res.maxAbsErrLogits < 1e-3, `max logit error ${res.maxAbsErrLogits}`);
  assert.equal(res.bootstrapping!.planned, r.final.bootstraps);
  assert.equal(
    res.bootstrapping!.executed,
    r.final.bootstraps,
    'the refreshes the program made are the ones the report counts',
  );
  assert.equal(res.bootstrapping!.precisionBits.length, r.final.bootstraps);
  assert.ok(
    res.bootstrapping!.precisionBits.every((b) => b > 12),
    `precision ${res.bootstrapping!.precisionBits}`,
  );
  assert.equal(res.levelsUsed, res.levelsPredicted, 'the simulator predicts the levels Lattigo uses');
  assert.ok(res.keyBytes.bootstrappingKeys! > 0);
  assert.deepEqual(left(), []);
});

test("Lattigo's operation costs: measured by the engine itself, cached per ring and levels, a stale or damaged cache ignored", async () => {
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const saved = process.env.HE_APPROX_CACHE_DIR;
  process.env.HE_APPROX_CACHE_DIR = tmpDir();
  try {
    const spec = { logN: TEST_LOG_N, levels: 3, bootstrap: true, insecure: true };
    assert.equal(cachedLattigoCosts(spec), null);
    const c = await measureAndCacheLattigoCosts(spec, { reps: 2, bootReps: 1 });
    for (const k of ['mulRelinRescale', 'mulScalar', 'add', 'rotate', 'bootstrap'] as const)
      assert.ok(Number.isFinite(c[k]) && c[k]! > 0, `${k}: ${c[k]}`);
    // What any CKKS library shows: an addition is the cheapest, a key switch dominates a product, a bootstrap is many products.
    assert.ok(c.add < c.mulScalar && c.add < c.rotate && c.mulScalar < c.mulRelinRescale, JSON.stringify(c));
    assert.ok(c.bootstrap! > 10 * c.mulRelinRescale, JSON.stringify(c));
    assert.equal(c.ringSize, 2 ** TEST_LOG_N);
    assert.match(c.source, /Lattigo engine .*\(N=2\^13, 3 levels between bootstraps, insecure/);
    const cached = cachedLattigoCosts(spec)!;
    assert.equal(cached.bootstrap, c.bootstrap);
    assert.match(cached.source, /cached in .*lattigo-costs-8192-L3-insecure\.json/);
    assert.equal(cachedLattigoCosts({ ...spec, levels: 4 }), null, 'other levels between bootstraps: not these costs');
    assert.equal(cachedLattigoCosts(bootstrapSpec(3)), null, "the test ring's costs never stand for the 128-bit ring");
    fs.writeFileSync(lattigoCostsFile(spec), JSON.stringify({ ...c, bootstrap: null }));
    assert.equal(cachedLattigoCosts(spec), null, 'a cache without a bootstrap time is not used');
  } finally {
    if (saved === undefined) delete process.env.HE_APPROX_CACHE_DIR;
    else process.env.HE_APPROX_CACHE_DIR = saved;
  }
});

test('the CLI: analyze --bootstrap, then encrypted-test runs the plan on Lattigo without further options', async () => {
  const out = path.join(tmpDir(), 'boot');
  // Latency estimates from Lattigo's costs: measured here on the test ring, filed as the 128-bit
  // ring's (which takes minutes and 10 GB to measure), so the analysis below finds and uses them.
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const costs = await measureLattigoCosts(
    { logN: TEST_LOG_N, levels: 3, bootstrap: true, insecure: true },
    { reps: 1, bootReps: 1 },
  );
  const cacheDir = tmpDir();
  const env = {
    ...process.env,
    HE_APPROX_INSECURE_TEST_PARAMS: '1',
    HE_APPROX_LATTIGO_LOGN: String(TEST_LOG_N),
    HE_APPROX_CACHE_DIR: cacheDir,
  };
  fs.writeFileSync(
    path.join(cacheDir, path.basename(lattigoCostsFile(bootstrapSpec(3)))),
    JSON.stringify({ ...costs, ringSize: 2 ** SECURE_LOG_N }),
  );
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, 'bin', 'he-approx.js'), ...args], {
      encoding: 'utf8',
      cwd: ROOT,
      env,
      timeout: 600000,
    });
  const a = cli(
    'analyze',
    example('mnist-cnn'),
    '--data',
    DATA,
    '--labels',
    LABELS,
    '--calib',
    '600',
    '--heldout',
    '600',
    '--bootstrap',
    '--bootstrap-levels',
    '3',
    '--out',
    out,
    '--quiet',
  );
  assert.ok(a.status === 0 || a.status === 3, a.stderr);
  const analysed = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  const planned = analysed.final.bootstraps;
  assert.equal(analysed.costs.engine, 'lattigo');
  assert.equal(analysed.costs.bootstrap, costs.bootstrap);
  assert.match(
    a.stdout,
    new RegExp(`est\\. bootstrap time per ciphertext \\(s\\) +${((planned * costs.bootstrap!) / 1000).toFixed(0)} `),
  );
  assert.match(a.stdout, /latency estimates: measured with the Lattigo engine/);
  const e = cli(
    'encrypted-test',
    example('mnist-cnn'),
    '--report',
    path.join(out, 'report.json'),
    '--data',
    DATA,
    '--labels',
    LABELS,
    '--samples',
    '4',
    '--quiet',
  );
  assert.equal(e.status, 0, e.stderr);
  assert.match(
    e.stdout,
    /encrypted whole-model test \(Lattigo CKKS with bootstrapping, N=8192, 3 levels between bootstraps, .*insecure \(test parameters\) security/,
  );
  assert.match(e.stdout, new RegExp(`bootstraps: planned ${planned}, executed ${planned} `));
  assert.match(e.stdout, /levels after the last bootstrap: predicted (\d+), used \1,/);
  assert.match(e.stdout, /bootstrapping \d+ MB; peak memory \d+ MB/);
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  assert.equal(saved.encrypted?.model?.engine, 'lattigo');
  assert.equal(saved.encrypted?.model?.bootstrapping?.executed, planned);
  // --engine seal on that report: one line pointing at Lattigo.
  const s = cli(
    'encrypted-test',
    example('mnist-cnn'),
    '--report',
    path.join(out, 'report.json'),
    '--data',
    DATA,
    '--samples',
    '1',
    '--engine',
    'seal',
  );
  assert.equal(s.status, 2);
  assert.match(s.stderr.trim(), /^he-approx: error: .*SEAL has no bootstrapping.*Fix: run it on Lattigo/);
  assert.equal(s.stderr.trim().split('\n').length, 1);
});

test('engine failures are one line each: missing, not ours, crashing, killed; a cancel stops it; nothing is left behind', async () => {
  const left = since();
  process.env.HE_APPROX_INSECURE_TEST_PARAMS = '1';
  const r = await bootstrapped();
  const run = (extra: Partial<Parameters<typeof encryptedModelTest>[0]> = {}) =>
    encryptedModelTest({
      model: example('mnist-cnn'),
      report: r,
      data: DATA,
      samples: 4,
      insecureLogN: TEST_LOG_N,
      ...extra,
    });
  const dir = tmpDir('he-approx-fake-engine-');
  const fake = (name: string, body: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return f;
  };
  const withEngine = async (bin: string, code: string, re: RegExp) => {
    process.env.HE_APPROX_LATTIGO = bin;
    try {
      await expectUserErrorAsync(() => run(), code, re);
    } finally {
      delete process.env.HE_APPROX_LATTIGO;
    }
  };
  await withEngine(
    path.join(dir, 'nowhere'),
    'ENGINE_MISSING',
    /HE_APPROX_LATTIGO names .*nowhere, which does not exist/,
  );
  await withEngine(fake('other', 'echo something else'), 'ENGINE_MISSING', /is not a he-approx Lattigo engine/);
  // Our protocol, then a crash in the middle of the run: the engine's own words, or its exit code.
  const real = findEngine();
  const crash = fake(
    'crash',
    `if [ "$1" = run ]; then echo '{"type":"keys","seconds":0,"security":"x","bytes":{}}'; echo boom >&2; exit 7; fi\nexec "${real}" "$@"`,
  );
  await withEngine(crash, 'ENGINE_FAILED', /the Lattigo engine stopped \(exit code 7\)/);
  const killed = fake('killed', `if [ "$1" = run ]; then kill -9 $$; fi\nexec "${real}" "$@"`);
  await withEngine(killed, 'ENGINE_FAILED', /signal SIGKILL, most likely out of memory/);
  // Cancelled once the engine has started: the process is killed, the call rejects with CANCELLED.
  const ac = new AbortController();
  await expectUserErrorAsync(() => run({ signal: ac.signal, onProgress: () => ac.abort() }), 'CANCELLED', /cancelled/);
  assert.deepEqual(left(), [], 'every run removes its private folder');
  // A report SEAL cannot run, forced onto SEAL: one line pointing at Lattigo.
  await expectUserErrorAsync(() => run({ engine: 'seal' }), 'BUDGET_INFEASIBLE', /SEAL has no bootstrapping/);
});

test('a report the engine cannot run says which layer and why', async () => {
  const bad = JSON.parse(JSON.stringify(await bootstrapped())) as Report;
  // A degree deeper than the levels between two bootstraps cannot be split by any engine here.
  const l = bad.layers[1];
  l.chosen.depth = 5;
  await assert.rejects(
    encryptedModelTest({ model: example('mnist-cnn'), report: bad, data: DATA, samples: 2, insecureLogN: TEST_LOG_N }),
    (e: unknown) =>
      e instanceof UserError &&
      e.code === 'BUDGET_INFEASIBLE' &&
      e.message.includes(l.name) &&
      /more levels than the 3 between two bootstraps/.test(e.message),
  );
});
