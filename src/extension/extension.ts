/**
 * The VS Code extension host: a thin layer that turns core reports into diagnostics, CodeLens,
 * hovers, a status bar item and side-panel messages. All compute runs in a worker thread
 * (analysisWorker.ts) with progress and cancellation; everything that can be tested without VS Code
 * lives in vscode-free modules beside this one (layerRanges, reportView, curves, cache, dataFiles, settings).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import { format as formatJson, applyEdits } from 'jsonc-parser';
import { Report, jsonContentSha256 } from '../core/report';
import type { EncryptedLayerReport } from '../core/he/layerTest';
import type { EncryptedModelReport } from '../core/he/modelTest';
import { JobFailed, runInWorker } from './analysisWorker';
import { MODEL_FILE, readUserFile } from '../core/files';
import { ResultCache, analysisKey, engineId, modelFiles } from './cache';
import { JobRunner } from './jobs';
import {
  LayerCodeLensProvider,
  LayerHoverProvider,
  ModelDiagnostics,
  ModelResults,
  ModelState,
  StatusBar,
  isModelDocument,
  rangeOf,
} from './editorViews';
import { findDataNear } from './dataFiles';
import { LayerRanges, findLayerRanges } from './layerRanges';
import { PanelProvider } from './panel';
import { ModelViewMessage, modelViewHtml } from './modelView';
import type { ModelSummary } from '../core/model/summary';
import { analyzeOptionsFrom, encryptedTestChoicesFrom } from './settings';
import { ENCRYPTED_TEST_OPTIONS, optionDefault } from '../core/options';

/** Every model file he-approx opens (core/model/load.ts modelFormatOf). */
const MODEL_GLOB = '**/{model.json,*.onnx,*.h5,*.hdf5,*.keras}';
const BINARY_MODEL = /\.(onnx|h5|hdf5|keras)$/i;
const EXCLUDE = '**/node_modules/**';
/** heApprox.autoAnalyze waits this long after the last change (a save writes model.json and its shards). */
const AUTO_ANALYZE_DELAY_MS = 1500;

export function activate(context: vscode.ExtensionContext): void {
  context.subscriptions.push(new HeApprox(context));
}

export function deactivate(): void {
  /* disposables do the work */
}

class HeApprox implements vscode.Disposable, ModelResults {
  private readonly log = vscode.window.createOutputChannel('HE Approx', { log: true });
  private readonly diagnostics = new ModelDiagnostics(this);
  private readonly statusBar = new StatusBar();
  private readonly lenses = new LayerCodeLensProvider(this);
  private readonly states = new Map<string, ModelState>();
  /** Problems found before any analysis (syntax errors) or by a failed one, per model file. */
  private readonly failures = new Map<string, { message: string; fix: string }>();
  private readonly cache: ResultCache;
  private readonly panel: PanelProvider;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly jobs: JobRunner;
  /** The worker script and the tfjs wasm binaries (the extension's bundle/). */
  private readonly worker: { script: string; wasmDir: string };
  /** engineId of the bundled worker, read once (cache keys; see cache.ts). */
  private engine: string | undefined;
  private debounce: NodeJS.Timeout | null = null;
  /**
   * Data picked in an untrusted workspace: VS Code ignores the workspace's heApprox.calibrationData
   * there (package.json restrictedConfigurations), so the choice is kept for the session instead.
   */
  private sessionData: { data: string; labels: string | null } | null = null;
  /** Open views of binary model files, by model URI. */
  private readonly modelViews = new Map<
    string,
    { panel: vscode.WebviewPanel; summary: ModelSummary | null; error: { message: string; fix: string } | null }
  >();

  constructor(private readonly context: vscode.ExtensionContext) {
    const storage = context.storageUri ?? context.globalStorageUri;
    this.cache = new ResultCache(path.join(storage.fsPath, 'reports'));
    this.panel = new PanelProvider(context.extensionUri, {
      ready: () => this.refreshPanel(),
      analyze: () => void vscode.commands.executeCommand('heApprox.analyzeModel'),
      runEncryptedTest: () => void vscode.commands.executeCommand('heApprox.runEncryptedTest'),
      selectLayer: (node) => this.revealLayer(node),
    });
    const bundle = path.join(context.extensionPath, 'bundle');
    this.worker = { script: path.join(bundle, 'worker.js'), wasmDir: path.join(bundle, 'wasm') };
    this.jobs = new JobRunner({
      log: this.log,
      worker: this.worker,
      status: (state) => this.showStatus(state),
      post: (m) => this.panel.post(m),
    });
    const cmd = (id: string, f: (...a: never[]) => unknown) =>
      vscode.commands.registerCommand(id, f as (...a: unknown[]) => unknown);
    const selector: vscode.DocumentSelector = { language: 'json', pattern: '**/*.json' };
    this.disposables.push(
      this.log,
      this.diagnostics,
      this.statusBar,
      this.lenses,
      vscode.window.registerWebviewViewProvider(PanelProvider.viewId, this.panel),
      vscode.window.registerCustomEditorProvider(
        'heApprox.modelView',
        {
          openCustomDocument: (uri) => ({ uri, dispose: () => undefined }),
          resolveCustomEditor: (doc, panel) => this.openModelView(doc.uri, panel),
        },
        { supportsMultipleEditorsPerDocument: false },
      ),
      cmd('heApprox.analyzeModel', (uri?: vscode.Uri) => this.analyzeCommand(uri)),
      cmd('heApprox.showPanel', (node?: string) => this.showPanel(node)),
      cmd('heApprox.runEncryptedTest', (uri?: vscode.Uri) => this.encryptedCommand(uri)),
      cmd('heApprox.selectCalibrationData', () => this.selectData()),
      cmd('heApprox.exportModel', (uri?: vscode.Uri) => this.exportCommand(uri)),
      cmd('heApprox.clearResults', () => this.clearResults()),
      cmd('heApprox.formatModel', (uri?: vscode.Uri) => this.formatModel(uri)),
      cmd('heApprox.showLog', () => this.log.show()),
      cmd('heApprox.showStatus', () => this.showStatusMessage()),
      cmd('heApprox.cancel', () => this.jobs.cancel()),
      vscode.languages.registerCodeLensProvider(selector, this.lenses),
      vscode.languages.registerHoverProvider(selector, new LayerHoverProvider(this)),
      vscode.window.onDidChangeActiveTextEditor((e) => this.followEditor(e)),
      vscode.workspace.onDidOpenTextDocument((d) => this.refreshDocument(d)),
      vscode.workspace.onDidChangeTextDocument((e) => this.refreshDocument(e.document)),
      vscode.workspace.onDidSaveTextDocument((d) => this.onFileChanged(d.uri)),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('heApprox')) this.onSettingsChanged();
      }),
    );
    const watcher = vscode.workspace.createFileSystemWatcher('**/*');
    this.disposables.push(
      watcher,
      watcher.onDidChange((u) => this.onFileChanged(u)),
      watcher.onDidCreate((u) => this.onFileChanged(u)),
      watcher.onDidDelete((u) => this.onFileDeleted(u)),
    );
    for (const d of vscode.workspace.textDocuments) this.refreshDocument(d);
    void this.restoreCached();
  }

  dispose(): void {
    this.jobs.cancel();
    for (const d of this.disposables) d.dispose();
  }

  // ---- settings and inputs -------------------------------------------------------------

  private config() {
    return vscode.workspace.getConfiguration('heApprox');
  }

  private resolvePath(p: string): string {
    if (!p) return p;
    if (path.isAbsolute(p)) return p;
    const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd();
    return path.join(root, p);
  }

  private analyzeOptions(model: string, data: string, labels: string | null) {
    const c = this.config();
    return analyzeOptionsFrom((k, fallback) => c.get(k, fallback), model, data, labels);
  }

  /** What the analysis of `model` on this data depends on, and the cache key over it. */
  private keyFor(model: string, data: string, labels: string | null): { files: (string | null)[]; key: string } {
    const files = [...modelFiles(model), data, labels];
    this.engine ??= engineId(path.join(this.context.extensionPath, 'bundle', 'worker.js'));
    return { files, key: analysisKey(files, { ...this.analyzeOptions(model, data, labels), engine: this.engine }) };
  }

  /** The model to work on: the argument, the active editor's model.json, the only one, or a pick. */
  private async pickModel(uri?: vscode.Uri): Promise<vscode.Uri | null> {
    if (uri instanceof vscode.Uri) return uri;
    const active = vscode.window.activeTextEditor?.document;
    if (active && isModelDocument(active)) return active.uri;
    // The active tab still names the model when focus is elsewhere (a panel, the quick input), and
    // it is the only way to see a binary model's view.
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    if (tab instanceof vscode.TabInputCustom && tab.viewType === 'heApprox.modelView') return tab.uri;
    if (
      tab instanceof vscode.TabInputText &&
      tab.uri.scheme === 'file' &&
      (path.basename(tab.uri.fsPath) === 'model.json' || this.states.has(tab.uri.toString()))
    )
      return tab.uri;
    const found = await vscode.workspace.findFiles(MODEL_GLOB, EXCLUDE, 200);
    if (found.length === 0) {
      void vscode.window.showErrorMessage(
        'HE Approx: no model in this workspace. Open a folder that contains a TensorFlow.js model.json (with its weight files), an .onnx, .h5 or .keras file, then run Analyze Model again.',
      );
      return null;
    }
    if (found.length === 1) return found[0];
    const pick = await vscode.window.showQuickPick(
      found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
      { title: 'HE Approx: which model?' },
    );
    return pick?.uri ?? null;
  }

  /** Calibration data from the settings, else offered from files beside the model, else picked. */
  private async pickData(model: vscode.Uri): Promise<{ data: string; labels: string | null } | null> {
    const chosen = this.settingsData() ?? this.sessionData;
    if (chosen) return chosen;
    const root = vscode.workspace.getWorkspaceFolder(model)?.uri.fsPath ?? null;
    const near = findDataNear(model.fsPath, root);
    const items: (vscode.MessageItem & { data?: string; labels?: string | null })[] = near.slice(0, 2).map((d) => ({
      title: `Use ${vscode.workspace.asRelativePath(d.data)}`,
      data: d.data,
      labels: d.labels,
    }));
    items.push({ title: 'Pick a File…' });
    const choice = await vscode.window.showWarningMessage(
      'HE Approx: no calibration data configured (setting heApprox.calibrationData). Analysis needs inputs that reach the model: .npy, MNIST idx, .csv or .json.',
      ...items,
    );
    if (!choice) return null;
    if (choice.data) {
      await this.saveDataSetting(choice.data, choice.labels ?? null);
      return { data: choice.data, labels: choice.labels ?? null };
    }
    return this.selectData(model);
  }

  private async saveDataSetting(data: string, labels: string | null): Promise<void> {
    if (!vscode.workspace.isTrusted) {
      this.sessionData = { data, labels };
      this.log.info(
        'untrusted workspace: the calibration data chosen is kept for this session, not written to the workspace settings (which VS Code ignores here)',
      );
      return;
    }
    const rel = (p: string) => {
      const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
      return root && p.startsWith(root + path.sep) ? path.relative(root, p) : p;
    };
    const target = vscode.workspace.workspaceFolders
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
    try {
      await this.config().update('calibrationData', rel(data), target);
      await this.config().update('calibrationLabels', labels ? rel(labels) : '', target);
    } catch (e) {
      // The analysis can still run with the chosen files; only remembering them failed.
      this.log.error(`could not save the calibration data setting: ${(e as Error).message}`);
      void vscode.window.showWarningMessage(
        `HE Approx: could not save heApprox.calibrationData (${(e as Error).message}). Set it in the workspace settings by hand to keep the choice.`,
      );
    }
  }

  /**
   * The dialogs open in a folder, never on a file: without a defaultUri VS Code's own dialog starts
   * on the active editor's file, here the model.json, which Enter would then accept as data (.json
   * is a data format). Both start in the model's folder. (Starting the labels dialog in the data's
   * folder made code-server's dialog ignore Enter on a typed path in that folder in the e2e test.)
   */
  private async selectData(model?: vscode.Uri): Promise<{ data: string; labels: string | null } | null> {
    const filters = { 'Calibration data': ['npy', 'csv', 'json', 'idx3-ubyte', 'ubyte'], 'All files': ['*'] };
    const active = vscode.window.activeTextEditor?.document.uri;
    const near = model ?? (active?.scheme === 'file' ? active : undefined);
    const start = near ? vscode.Uri.joinPath(near, '..') : vscode.workspace.workspaceFolders?.[0]?.uri;
    const picked = await vscode.window.showOpenDialog({
      title: 'HE Approx: calibration data',
      canSelectMany: false,
      filters,
      openLabel: 'Use as calibration data',
      defaultUri: start,
    });
    if (!picked?.length) return null;
    const labels = await vscode.window.showOpenDialog({
      title: 'HE Approx: labels for this data (Cancel for none: accuracy then means agreement with the original model)',
      canSelectMany: false,
      filters,
      openLabel: 'Use as labels',
      defaultUri: start,
    });
    const l = labels?.[0]?.fsPath ?? null;
    await this.saveDataSetting(picked[0].fsPath, l);
    return { data: picked[0].fsPath, labels: l };
  }

  // ---- running jobs ---------------------------------------------------------------------

  private async analyzeCommand(arg?: vscode.Uri): Promise<void> {
    const uri = await this.pickModel(arg);
    if (!uri) return;
    const data = await this.pickData(uri);
    if (!data) return;
    await this.analyze(uri, data.data, data.labels);
  }

  private async analyze(uri: vscode.Uri, data: string, labels: string | null): Promise<void> {
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri.toString());
    if (doc?.isDirty) await doc.save();
    const options = this.analyzeOptions(uri.fsPath, data, labels);
    const { files, key } = this.keyFor(uri.fsPath, data, labels);
    const cached = this.cache.get(key, (why) =>
      this.log.warn(`${why}; analysing ${vscode.workspace.asRelativePath(uri)} again`),
    );
    if (cached) {
      this.log.info(`results for ${vscode.workspace.asRelativePath(uri)} are up to date (cached by content)`);
      this.setResult(uri, cached, key, files, data, labels);
      return;
    }
    try {
      const report = await this.jobs.run<Report>(
        `analysing ${vscode.workspace.asRelativePath(uri)}`,
        { kind: 'analyze', options },
        files,
      );
      if (!report) return;
      // Deleted just as the worker finished (the watcher's event may come after the result).
      if (!fs.existsSync(uri.fsPath)) {
        this.log.info(`${vscode.workspace.asRelativePath(uri)} no longer exists: its results are discarded`);
        return;
      }
      this.failures.delete(uri.toString());
      this.cache.put(key, report);
      this.setResult(uri, report, key, files, data, labels);
      // The results describe the files as they were when the run started: a change made while it
      // ran (the watcher saw it, but the state was not fresh yet) makes them stale at once.
      const s = this.states.get(uri.toString());
      if (s && this.keyFor(uri.fsPath, data, labels).key !== key)
        this.markStale(s, 'its files changed while it was analysed');
      const f = report.final;
      const trees = report.layers.filter((l) => l.maxTree).length;
      const pools = report.maxPooling
        ? ` and ${report.maxPooling.pools.length} max pooling${report.maxPooling.pools.length === 1 ? '' : 's'} as ${trees} |x|`
        : '';
      const msg = `HE Approx: ${report.layers.length - trees} activations${pools} approximated; total depth ${f.networkDepth} levels; measured accuracy drop ${f.measuredDrop.toFixed(2)} pp (budget ${report.options.budget}${report.maxPooling ? `; average pooling instead: ${report.maxPooling.averagePooling.drop.toFixed(2)} pp` : ''}) vs ${report.uniform.networkDepth} levels for the uniform baseline.`;
      if (f.meetsBudget)
        void vscode.window.showInformationMessage(msg, 'Show Panel').then((a) => {
          if (a) void this.showPanel();
        });
      else
        void vscode.window.showWarningMessage(
          msg + ' The budget is not met: raise heApprox.levelBudget or heApprox.accuracyBudget.',
        );
    } catch (e) {
      if (e instanceof JobFailed && e.userError) {
        this.failures.set(uri.toString(), { message: e.message, fix: e.fix });
        this.renderDiagnostics(uri);
      }
    }
  }

  private stateFor(arg?: vscode.Uri): ModelState | null {
    if (arg instanceof vscode.Uri) return this.states.get(arg.toString()) ?? null;
    const active = vscode.window.activeTextEditor?.document.uri.toString();
    if (active && this.states.has(active)) return this.states.get(active)!;
    const panelModel = this.panel.modelUri;
    if (panelModel && this.states.has(panelModel)) return this.states.get(panelModel)!;
    return this.states.size === 1 ? [...this.states.values()][0] : null;
  }

  private async encryptedCommand(arg?: vscode.Uri): Promise<void> {
    const s = this.stateFor(arg);
    if (!s) {
      void vscode.window.showWarningMessage(
        'HE Approx: analyse a model first (HE Approx: Analyze Model); the encrypted test runs the polynomials the analysis chose.',
      );
      return;
    }
    if (s.stale) {
      const a = await vscode.window.showWarningMessage(
        'HE Approx: the results are stale (the model, data or settings changed). Analyse again first?',
        'Analyze',
        'Test Anyway',
      );
      if (a === 'Analyze') {
        await this.analyze(s.uri, s.data, s.labels);
        return this.encryptedCommand(s.uri);
      }
      if (!a) return;
    }
    const choices = encryptedTestChoicesFrom((k, fallback) => this.config().get(k, fallback));
    let mode = choices.layerOnly === undefined ? 'ask' : choices.layerOnly ? 'layer' : 'model';
    if (mode === 'ask') {
      const pick = await vscode.window.showQuickPick(
        [
          {
            label: 'Whole model',
            description: 'encrypt inputs, run every layer under CKKS, decrypt, compare predictions',
            mode: 'model',
          },
          {
            label: 'Each activation alone',
            description: "encrypt that layer's recorded inputs, evaluate its polynomial, compare (faster)",
            mode: 'layer',
          },
        ],
        {
          title: `HE Approx: Run Encrypted Test (CKKS on ${s.report.bootstrapping?.planned ? 'Lattigo, with bootstrapping' : 'Microsoft SEAL'})`,
        },
      );
      if (!pick) return;
      mode = pick.mode;
    }
    const { ringSize, engine } = choices;
    const samples = choices.samples ?? optionDefault<number>('samples', ENCRYPTED_TEST_OPTIONS);
    const packing = choices.latency ? 'latency' : 'throughput';
    try {
      const res = await this.jobs.run<EncryptedModelReport | EncryptedLayerReport>(
        `encrypted test (${mode === 'model' ? 'whole model' : 'each activation'})`,
        {
          kind: 'encrypted',
          mode: mode === 'model' ? 'model' : 'layer',
          options: {
            model: s.uri.fsPath,
            report: s.report,
            data: s.data,
            labels: s.labels,
            samples,
            ringSize,
            packing,
            engine,
          },
        },
        s.files,
      );
      if (!res) return;
      s.report = {
        ...s.report,
        encrypted: { ...s.report.encrypted, ...(res.mode === 'model' ? { model: res } : { layers: res }) },
      };
      this.cache.put(s.key, s.report);
      this.refreshPanel();
      if (res.mode === 'model') {
        const lib = res.engine === 'lattigo' ? 'Lattigo' : 'SEAL';
        const boots = res.bootstrapping
          ? `; ${res.bootstrapping.executed} of ${res.bootstrapping.planned} planned bootstraps executed`
          : '';
        const security = res.security && res.security !== '128-bit' ? ` (${res.security})` : '';
        void vscode.window.showInformationMessage(
          `HE Approx: encrypted test on ${lib}${security}: ${res.samples.length} images, ${(100 * res.agreement).toFixed(0)}% agree with the plaintext approximated model; max logit error ${res.maxAbsErrLogits.toExponential(1)}; ${res.levelsUsed} of ${res.params.levels} levels at N=${res.params.ringSize}${boots}; ${res.amortisedSecondsPerSample.toFixed(2)} s per image.`,
        );
      } else {
        const worst = Math.min(...res.layers.map((l) => l.precisionBits));
        void vscode.window.showInformationMessage(
          `HE Approx: encrypted test of ${res.layers.length} activations: at least ${worst.toFixed(1)} bits of precision against the plaintext polynomials.`,
        );
      }
    } catch {
      /* reported by runJob */
    }
  }

  private async exportCommand(arg?: vscode.Uri): Promise<void> {
    const s = this.stateFor(arg);
    if (!s) {
      void vscode.window.showWarningMessage(
        'HE Approx: analyse a model first; the export writes the approximated model the analysis chose.',
      );
      return;
    }
    const modelDir = path.dirname(s.uri.fsPath);
    const root = vscode.workspace.getWorkspaceFolder(s.uri)?.uri.fsPath ?? path.dirname(modelDir);
    const suggested = path.join(path.dirname(modelDir), `${path.basename(modelDir)}-he-approx`);
    // A folder name rather than an open dialog: the target usually does not exist yet, and open
    // dialogs only accept existing folders.
    const input = await vscode.window.showInputBox({
      title: 'HE Approx: Export Approximated Model',
      prompt:
        'Folder for model/ (the approximated model), coefficients.json and report.json; relative to the workspace folder, or absolute',
      value: path.relative(root, suggested) || suggested,
      validateInput: (v) =>
        !v.trim()
          ? 'name a folder'
          : path.resolve(root, v.trim()) === modelDir
            ? "not the input model's own folder: choose another"
            : null,
    });
    if (!input) return;
    const dir = path.resolve(root, input.trim());
    let force = false;
    if (fs.existsSync(path.join(dir, 'report.json')) || fs.existsSync(path.join(dir, 'model', 'model.json'))) {
      const a = await vscode.window.showWarningMessage(
        `HE Approx: ${vscode.workspace.asRelativePath(dir)} already holds he-approx outputs. Overwrite report.json, coefficients.json and model/?`,
        { modal: true },
        'Overwrite',
      );
      if (a !== 'Overwrite') return;
      force = true;
    }
    try {
      const files = await this.jobs.run<{ model: string }>('exporting the approximated model', {
        kind: 'export',
        dir,
        model: s.uri.fsPath,
        report: s.report,
        force,
      });
      if (files) {
        const a = await vscode.window.showInformationMessage(
          `HE Approx: wrote ${vscode.workspace.asRelativePath(files.model)}, coefficients.json and report.json.`,
          'Open Coefficients',
        );
        if (a) await vscode.window.showTextDocument(vscode.Uri.file(path.join(dir, 'coefficients.json')));
      }
    } catch {
      /* reported by runJob */
    }
  }

  private clearResults(): void {
    this.jobs.cancel();
    this.states.clear();
    this.failures.clear();
    this.cache.clear();
    this.diagnostics.clear();
    for (const d of vscode.workspace.textDocuments) this.refreshDocument(d);
    this.lenses.refresh();
    this.panel.post({ type: 'clear' });
    this.showStatus('idle');
    this.log.info('results cleared');
  }

  private async formatModel(arg?: vscode.Uri): Promise<void> {
    const uri = arg instanceof vscode.Uri ? arg : vscode.window.activeTextEditor?.document.uri;
    if (!uri) return;
    const doc = await vscode.workspace.openTextDocument(uri);
    const text = doc.getText();
    const formatted = applyEdits(text, formatJson(text, undefined, { insertSpaces: true, tabSize: 2, eol: '\n' }));
    const edit = new vscode.WorkspaceEdit();
    edit.replace(uri, new vscode.Range(doc.positionAt(0), doc.positionAt(text.length)), formatted);
    // An edit in the editor, not a write to disk: the user sees it, can undo it and decides to save.
    await vscode.workspace.applyEdit(edit);
    await vscode.window.showTextDocument(doc);
  }

  private showStatusMessage(): void {
    const r = this.jobs.running;
    const msg = r
      ? `HE Approx: ${r.label}: ${Math.round(100 * r.fraction)}% (${r.message})`
      : this.states.size
        ? `HE Approx: results for ${[...this.states.values()].map((s) => vscode.workspace.asRelativePath(s.uri) + (s.stale ? ' (stale)' : '')).join(', ')}`
        : 'HE Approx: idle; no results yet';
    void vscode.window.showInformationMessage(msg);
  }

  // ---- results -> editor ------------------------------------------------------------------

  private setResult(
    uri: vscode.Uri,
    report: Report,
    key: string,
    files: (string | null)[],
    data: string,
    labels: string | null,
  ): void {
    this.states.set(uri.toString(), { uri, report, key, files, stale: false, data, labels });
    this.panel.modelUri = uri.toString();
    this.renderDiagnostics(uri);
    this.lenses.refresh();
    this.showStatus('done');
    this.refreshPanel();
    this.renderModelView(uri);
  }

  // ---- binary model files (.onnx, .h5, .keras): a read-only view of the layers ----------------

  private openModelView(uri: vscode.Uri, panel: vscode.WebviewPanel): void {
    const key = uri.toString();
    panel.webview.options = { enableScripts: true, localResourceRoots: [] };
    this.modelViews.set(key, { panel, summary: null, error: null });
    panel.onDidDispose(() => this.modelViews.delete(key));
    panel.webview.onDidReceiveMessage((m: ModelViewMessage) => {
      if (m.type === 'analyze') void vscode.commands.executeCommand('heApprox.analyzeModel', uri);
      else if (m.type === 'encrypt') void vscode.commands.executeCommand('heApprox.runEncryptedTest', uri);
      else if (m.type === 'showFit') {
        this.panel.modelUri = key;
        this.refreshPanel();
        void this.showPanel(m.node);
      }
    });
    panel.onDidChangeViewState((e) => {
      if (e.webviewPanel.active && this.states.has(key)) {
        this.panel.modelUri = key;
        this.refreshPanel();
      }
    });
    this.renderModelView(uri);
    // Reading the graph loads the model's formats (protobuf, HDF5): in the worker, like all compute.
    const run = runInWorker({ kind: 'summary', model: uri.fsPath }, () => undefined, this.worker);
    run.result.then(
      (s) => {
        const v = this.modelViews.get(key);
        if (v) {
          v.summary = s;
          this.renderModelView(uri);
        }
      },
      (e: unknown) => {
        const v = this.modelViews.get(key);
        const f = e instanceof JobFailed ? e : new JobFailed('INTERNAL', String(e), 'see the log', false);
        this.log.error(`${vscode.workspace.asRelativePath(uri)}: ${f.message}. Fix: ${f.fix}`);
        if (v) {
          v.error = { message: f.message, fix: f.fix };
          this.renderModelView(uri);
        }
      },
    );
  }

  private renderModelView(uri: vscode.Uri): void {
    const v = this.modelViews.get(uri.toString());
    if (!v) return;
    const s = this.states.get(uri.toString());
    const nonce = [...Array(24)].map(() => Math.floor(Math.random() * 36).toString(36)).join('');
    v.panel.webview.html = modelViewHtml({
      fileName: vscode.workspace.asRelativePath(uri),
      summary: v.summary,
      error: v.error ?? this.failures.get(uri.toString()) ?? null,
      report: s?.report ?? null,
      stale: s?.stale ?? false,
      nonce,
      cspSource: v.panel.webview.cspSource,
    });
  }

  private async restoreCached(): Promise<void> {
    const data = this.config().get<string>('calibrationData', '');
    if (!data) return;
    const labels = this.config().get<string>('calibrationLabels', '');
    for (const uri of await vscode.workspace.findFiles(MODEL_GLOB, EXCLUDE, 50)) {
      const d = this.resolvePath(data);
      const l = labels ? this.resolvePath(labels) : null;
      const { files, key } = this.keyFor(uri.fsPath, d, l);
      const report = this.cache.get(key, (why) => this.log.warn(`${why}; not restored`));
      if (report) {
        this.log.info(`restored cached results for ${vscode.workspace.asRelativePath(uri)}`);
        this.setResult(uri, report, key, files, d, l);
      }
    }
  }

  rangesFor(uri: vscode.Uri): { doc: vscode.TextDocument | null; text: string; ranges: LayerRanges } | null {
    const doc = vscode.workspace.textDocuments.find((d) => d.uri.toString() === uri.toString()) ?? null;
    let text: string;
    // A model.json in the workspace may be a FIFO or a device: never read it with a blocking read.
    try {
      text = doc ? doc.getText() : readUserFile(uri.fsPath, MODEL_FILE).toString('utf8');
    } catch {
      return null;
    }
    return { doc, text, ranges: findLayerRanges(text) };
  }

  private refreshDocument(doc: vscode.TextDocument): void {
    if (!isModelDocument(doc) && !this.states.has(doc.uri.toString())) return;
    const s = this.states.get(doc.uri.toString());
    if (s && !s.stale && jsonContentSha256(doc.getText()) !== s.report.model.contentSha256)
      this.markStale(s, 'the model file changed');
    this.renderDiagnostics(doc.uri);
    this.lenses.refresh();
  }

  /**
   * A model, shard or data file (or a folder holding one) was deleted: an analysis reading it is
   * stopped (its result would describe files that are gone), and a deleted model's results,
   * diagnostics and failures are dropped; results whose data was deleted are stale.
   */
  private onFileDeleted(uri: vscode.Uri): void {
    const gone = (f: string | null) => !!f && (f === uri.fsPath || f.startsWith(uri.fsPath + path.sep));
    const r = this.jobs.running;
    const hit = r?.files.find(gone);
    if (r && hit && !r.stopped) {
      r.stopped = `${vscode.workspace.asRelativePath(hit)} was deleted; nothing was written`;
      r.run.cancel();
    }
    let changed = false;
    for (const [key, s] of [...this.states]) {
      if (gone(s.uri.fsPath)) {
        this.states.delete(key);
        this.diagnostics.delete(s.uri);
        changed = true;
      } else if (s.files.some(gone)) this.markStale(s, `${vscode.workspace.asRelativePath(uri)} was deleted`);
    }
    for (const key of [...this.failures.keys()]) if (gone(vscode.Uri.parse(key).fsPath)) this.failures.delete(key);
    // Every diagnostic of a deleted file goes, the hints of a still-open editor included.
    for (const u of this.diagnostics.uris().filter((x) => gone(x.fsPath))) this.diagnostics.delete(u);
    if (!changed) return;
    if (this.panel.modelUri && !this.states.has(this.panel.modelUri)) this.panel.modelUri = null;
    this.lenses.refresh();
    this.refreshPanel();
    if (!this.jobs.running) this.showStatus(this.states.size ? 'done' : 'idle');
  }

  private onFileChanged(uri: vscode.Uri): void {
    for (const s of this.states.values()) {
      if (!s.files.includes(uri.fsPath)) continue;
      if (this.keyFor(s.uri.fsPath, s.data, s.labels).key === s.key) continue;
      this.markStale(s, `${vscode.workspace.asRelativePath(uri)} changed`);
    }
  }

  /** Results go stale only when a setting that the analysis depends on changed (not, e.g., the encrypted-test mode). */
  private onSettingsChanged(): void {
    for (const s of this.states.values()) {
      const { data, labels } = this.dataFor(s);
      if (this.keyFor(s.uri.fsPath, data, labels).key !== s.key) this.markStale(s, 'settings changed');
    }
  }

  /** The data an analysis of `s`'s model would use now: the settings' if set, else what it used. */
  private dataFor(s: ModelState): { data: string; labels: string | null } {
    return this.settingsData() ?? { data: s.data, labels: s.labels };
  }

  /** heApprox.calibrationData and calibrationLabels as absolute paths, or null when no data is set. */
  private settingsData(): { data: string; labels: string | null } | null {
    const c = this.config();
    const data = c.get<string>('calibrationData', '');
    if (!data) return null;
    const labels = c.get<string>('calibrationLabels', '');
    return { data: this.resolvePath(data), labels: labels ? this.resolvePath(labels) : null };
  }

  private markStale(s: ModelState, why: string): void {
    if (!s.stale) {
      s.stale = true;
      this.log.info(`results for ${vscode.workspace.asRelativePath(s.uri)} are stale: ${why}`);
      this.renderDiagnostics(s.uri);
      this.lenses.refresh();
      this.refreshPanel();
      this.renderModelView(s.uri);
      if (!this.jobs.running) this.showStatus('done');
    }
    if (this.config().get<boolean>('autoAnalyze', false)) {
      // Debounced: a burst of saves (model.json and its shards) starts one analysis.
      if (this.debounce) clearTimeout(this.debounce);
      // An analysis still running (of this model or another) delays the next one by as much again.
      const fire = () => {
        if (this.jobs.running) {
          this.debounce = setTimeout(fire, AUTO_ANALYZE_DELAY_MS);
          return;
        }
        this.debounce = null;
        if (!this.states.get(s.uri.toString())?.stale) return;
        const { data, labels } = this.dataFor(s);
        void this.analyze(s.uri, data, labels);
      };
      this.debounce = setTimeout(fire, AUTO_ANALYZE_DELAY_MS);
    }
  }

  /** The panel and the status bar follow the model.json in the active editor, when it has results. */
  private followEditor(editor: vscode.TextEditor | undefined): void {
    const key = editor?.document.uri.toString();
    if (!key || key === this.panel.modelUri || !this.states.has(key)) return;
    this.panel.modelUri = key;
    this.refreshPanel();
    if (!this.jobs.running) this.showStatus('done');
  }

  /** The results the panel and the status bar show: the panel's model, else the first with results. */
  private current(): ModelState | undefined {
    return (this.panel.modelUri && this.states.get(this.panel.modelUri)) || this.states.values().next().value;
  }

  private refreshPanel(): void {
    const s = this.current();
    if (!s) {
      this.panel.post({ type: 'clear' });
      return;
    }
    this.panel.showReport(s.report, s.stale, vscode.workspace.asRelativePath(s.uri));
  }

  private async showPanel(node?: string): Promise<void> {
    await vscode.commands.executeCommand(`${PanelProvider.viewId}.focus`);
    if (typeof node === 'string') this.panel.select(node);
  }

  /** The panel asked to show a layer in the editor. */
  private async revealLayer(node: string): Promise<void> {
    const s = this.panel.modelUri ? this.states.get(this.panel.modelUri) : undefined;
    const layer = s?.report.layers.find((l) => l.name === node)?.layer;
    if (!s || !layer) return;
    if (BINARY_MODEL.test(s.uri.fsPath)) {
      await vscode.commands.executeCommand('vscode.openWith', s.uri, 'heApprox.modelView');
      return;
    }
    const doc = await vscode.workspace.openTextDocument(s.uri);
    const r = findLayerRanges(doc.getText()).layers.get(layer);
    if (!r) return;
    const range = rangeOf(doc, doc.getText(), r.nameRange);
    await vscode.window.showTextDocument(doc, {
      selection: range,
      preserveFocus: true,
      preview: true,
      viewColumn: vscode.ViewColumn.One,
    });
  }

  stateOf(uri: vscode.Uri): ModelState | undefined {
    return this.states.get(uri.toString());
  }

  failureOf(uri: vscode.Uri): { message: string; fix: string } | undefined {
    return this.failures.get(uri.toString());
  }

  private renderDiagnostics(uri: vscode.Uri): void {
    // ONNX and Keras files open in the model view, which shows the result and the failure instead.
    if (BINARY_MODEL.test(uri.fsPath)) this.renderModelView(uri);
    else this.diagnostics.render(uri);
  }

  private showStatus(state: 'idle' | 'busy' | 'done' | 'error'): void {
    this.statusBar.show(state, this.jobs.running, this.current());
  }
}
