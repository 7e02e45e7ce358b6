/**
 * The VS Code extension host: a thin layer that turns core reports into diagnostics, CodeLens,
 * hovers, a status bar item and side-panel messages. All compute runs in a worker thread
 * (analysisWorker.ts) with progress and cancellation; everything that can be tested without VS Code
 * lives in vscode-free modules beside this one (layerRanges, reportView, curves, cache, dataFiles, settings).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import { Report, jsonContentSha256 } from '../core/report';
import { deployed } from '../core/deployed';
import { JobFailed } from './analysisWorker';
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
  formatModel,
  isModelDocument,
  rangeOf,
} from './editorViews';
import { LayerRanges, findLayerRanges } from './layerRanges';
import { PanelProvider } from './panel';
import { ModelViews } from './modelViews';
import { EXCLUDE, InputPicker, MODEL_GLOB } from './inputs';
import { CommandHost, exportModel, runEncryptedTest } from './testAndExport';
import { PickedPoint, analyzeOptionsFrom, withPick } from './settings';
import { analysisMessage, budgetMissed } from './reportView';

const BINARY_MODEL = /\.(onnx|h5|hdf5|keras)$/i;
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
  private readonly inputs = new InputPicker(this.log, (uri) => this.states.has(uri.toString()));
  private readonly modelViews: ModelViews;
  /** Frontier points picked in the panel, by model path, for the session (settings.ts: withPick). */
  private readonly picks = new Map<string, PickedPoint>();

  constructor(private readonly context: vscode.ExtensionContext) {
    const storage = context.storageUri ?? context.globalStorageUri;
    this.cache = new ResultCache(path.join(storage.fsPath, 'reports'));
    this.panel = new PanelProvider(context.extensionUri, {
      ready: () => this.refreshPanel(),
      analyze: () => void vscode.commands.executeCommand('heApprox.analyzeModel'),
      runEncryptedTest: () => void vscode.commands.executeCommand('heApprox.runEncryptedTest'),
      selectLayer: (node) => this.revealLayer(node),
      pickPoint: (p) => this.pickPoint(p),
    });
    const bundle = path.join(context.extensionPath, 'bundle');
    this.worker = { script: path.join(bundle, 'worker.js'), wasmDir: path.join(bundle, 'wasm') };
    this.modelViews = new ModelViews({
      worker: this.worker,
      log: this.log,
      stateOf: (uri) => this.stateOf(uri),
      failureOf: (uri) => this.failureOf(uri),
      showFit: (key, node) => {
        this.panel.modelUri = key;
        this.refreshPanel();
        void this.showPanel(node);
      },
      activated: (key) => {
        if (!this.states.has(key)) return;
        this.panel.modelUri = key;
        this.refreshPanel();
      },
    });
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
          resolveCustomEditor: (doc, panel) => this.modelViews.open(doc.uri, panel),
        },
        { supportsMultipleEditorsPerDocument: false },
      ),
      cmd('heApprox.analyzeModel', (uri?: vscode.Uri) => this.analyzeCommand(uri)),
      cmd('heApprox.showPanel', (node?: string) => this.showPanel(node)),
      cmd('heApprox.runEncryptedTest', (uri?: vscode.Uri) => this.encryptedCommand(uri)),
      cmd('heApprox.selectCalibrationData', () => this.inputs.selectData()),
      cmd('heApprox.exportModel', (uri?: vscode.Uri) => this.exportCommand(uri)),
      cmd('heApprox.clearResults', () => this.clearResults()),
      cmd('heApprox.formatModel', (uri?: vscode.Uri) => formatModel(uri)),
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

  private analyzeOptions(model: string, data: string, labels: string | null) {
    const c = this.config();
    return withPick(
      analyzeOptionsFrom((k, fallback) => c.get(k, fallback), model, data, labels),
      this.picks.get(model),
    );
  }

  /** A frontier point picked in the panel becomes the shown model's result (null: back to the cheapest). */
  private pickPoint(p: PickedPoint | null): void {
    const s = this.panel.modelUri ? this.states.get(this.panel.modelUri) : undefined;
    if (!s) return;
    if (p) this.picks.set(s.uri.fsPath, p);
    else this.picks.delete(s.uri.fsPath);
    void this.analyze(s.uri, s.data, s.labels);
  }

  /** What the analysis of `model` on this data depends on, and the cache key over it. */
  private keyFor(model: string, data: string, labels: string | null): { files: (string | null)[]; key: string } {
    const files = [...modelFiles(model), data, labels];
    this.engine ??= engineId(path.join(this.context.extensionPath, 'bundle', 'worker.js'));
    return { files, key: analysisKey(files, { ...this.analyzeOptions(model, data, labels), engine: this.engine }) };
  }

  // ---- running jobs ---------------------------------------------------------------------

  private async analyzeCommand(arg?: vscode.Uri): Promise<void> {
    const uri = await this.inputs.pickModel(arg);
    if (!uri) return;
    const data = await this.inputs.pickData(uri);
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
        { kind: 'analyze', options, finetunedFile: this.cache.finetunedFile(key) },
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
      const msg = analysisMessage(report);
      if (deployed(report).meetsBudget)
        void vscode.window.showInformationMessage(msg, 'Show Panel').then((a) => {
          if (a) void this.showPanel();
        });
      else void vscode.window.showWarningMessage(msg + budgetMissed(report));
    } catch (e) {
      if (e instanceof JobFailed && e.userError) {
        this.failures.set(uri.toString(), { message: e.message, fix: e.fix });
        this.renderDiagnostics(uri);
      }
    }
  }

  /** What the palette's encrypted test and export need from the host. */
  private commandHost(): CommandHost {
    return {
      jobs: this.jobs,
      cache: this.cache,
      config: () => this.config(),
      analyze: (uri, data, labels) => this.analyze(uri, data, labels),
      refreshPanel: () => this.refreshPanel(),
    };
  }

  private encryptedCommand(arg?: vscode.Uri): Promise<void> {
    const s = this.stateFor(arg);
    return runEncryptedTest(this.commandHost(), s, () => this.encryptedCommand(s?.uri));
  }

  private exportCommand(arg?: vscode.Uri): Promise<void> {
    return exportModel(this.commandHost(), this.stateFor(arg));
  }

  private stateFor(arg?: vscode.Uri): ModelState | null {
    if (arg instanceof vscode.Uri) return this.states.get(arg.toString()) ?? null;
    const active = vscode.window.activeTextEditor?.document.uri.toString();
    if (active && this.states.has(active)) return this.states.get(active)!;
    const panelModel = this.panel.modelUri;
    if (panelModel && this.states.has(panelModel)) return this.states.get(panelModel)!;
    return this.states.size === 1 ? [...this.states.values()][0] : null;
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
    this.modelViews.render(uri);
  }

  private async restoreCached(): Promise<void> {
    const data = this.config().get<string>('calibrationData', '');
    if (!data) return;
    const labels = this.config().get<string>('calibrationLabels', '');
    for (const uri of await vscode.workspace.findFiles(MODEL_GLOB, EXCLUDE, 50)) {
      const d = this.inputs.resolvePath(data);
      const l = labels ? this.inputs.resolvePath(labels) : null;
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
    // A point picked under other settings may not exist under these: back to the settings' choice.
    this.picks.clear();
    for (const s of this.states.values()) {
      const { data, labels } = this.inputs.dataFor(s);
      if (this.keyFor(s.uri.fsPath, data, labels).key !== s.key) this.markStale(s, 'settings changed');
    }
  }

  private markStale(s: ModelState, why: string): void {
    if (!s.stale) {
      s.stale = true;
      this.log.info(`results for ${vscode.workspace.asRelativePath(s.uri)} are stale: ${why}`);
      this.renderDiagnostics(s.uri);
      this.lenses.refresh();
      this.refreshPanel();
      this.modelViews.render(s.uri);
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
        const { data, labels } = this.inputs.dataFor(s);
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
    if (BINARY_MODEL.test(uri.fsPath)) this.modelViews.render(uri);
    else this.diagnostics.render(uri);
  }

  private showStatus(state: 'idle' | 'busy' | 'done' | 'error'): void {
    this.statusBar.show(state, this.jobs.running, this.current());
  }
}
