/**
 * Binary model files (.onnx, .h5, .keras) open in a read-only view of their layers (modelView.ts
 * renders it), with the analysis's result or failure beside each layer. Reading the graph runs in
 * the worker, like all compute.
 */
import * as vscode from 'vscode';
import type { ModelSummary } from '../core/model/summary';
import { JobFailed, runInWorker } from './analysisWorker';
import type { ModelState } from './editorViews';
import { ModelViewMessage, modelViewHtml } from './modelView';

export interface ModelViewHost {
  worker: { script: string; wasmDir: string };
  log: vscode.LogOutputChannel;
  stateOf(uri: vscode.Uri): ModelState | undefined;
  failureOf(uri: vscode.Uri): { message: string; fix: string } | undefined;
  /** The view asked for a layer's fit in the panel. */
  showFit(model: string, node: string): void;
  /** The view became the active editor. */
  activated(model: string): void;
}

export class ModelViews {
  /** Open views, by model URI. */
  private readonly views = new Map<
    string,
    { panel: vscode.WebviewPanel; summary: ModelSummary | null; error: { message: string; fix: string } | null }
  >();

  constructor(private readonly host: ModelViewHost) {}

  open(uri: vscode.Uri, panel: vscode.WebviewPanel): void {
    const key = uri.toString();
    panel.webview.options = { enableScripts: true, localResourceRoots: [] };
    this.views.set(key, { panel, summary: null, error: null });
    panel.onDidDispose(() => this.views.delete(key));
    panel.webview.onDidReceiveMessage((m: ModelViewMessage) => {
      if (m.type === 'analyze') void vscode.commands.executeCommand('heApprox.analyzeModel', uri);
      else if (m.type === 'encrypt') void vscode.commands.executeCommand('heApprox.runEncryptedTest', uri);
      else if (m.type === 'showFit') this.host.showFit(key, m.node);
    });
    panel.onDidChangeViewState((e) => {
      if (e.webviewPanel.active) this.host.activated(key);
    });
    this.render(uri);
    // Reading the graph loads the model's formats (protobuf, HDF5): in the worker, like all compute.
    const run = runInWorker({ kind: 'summary', model: uri.fsPath }, () => undefined, this.host.worker);
    run.result.then(
      (s) => {
        const v = this.views.get(key);
        if (v) {
          v.summary = s;
          this.render(uri);
        }
      },
      (e: unknown) => {
        const v = this.views.get(key);
        const f = e instanceof JobFailed ? e : new JobFailed('INTERNAL', String(e), 'see the log', false);
        this.host.log.error(`${vscode.workspace.asRelativePath(uri)}: ${f.message}. Fix: ${f.fix}`);
        if (v) {
          v.error = { message: f.message, fix: f.fix };
          this.render(uri);
        }
      },
    );
  }

  render(uri: vscode.Uri): void {
    const v = this.views.get(uri.toString());
    if (!v) return;
    const s = this.host.stateOf(uri);
    const nonce = [...Array(24)].map(() => Math.floor(Math.random() * 36).toString(36)).join('');
    v.panel.webview.html = modelViewHtml({
      fileName: vscode.workspace.asRelativePath(uri),
      summary: v.summary,
      error: v.error ?? this.host.failureOf(uri) ?? null,
      report: s?.report ?? null,
      stale: s?.stale ?? false,
      nonce,
      cspSource: v.panel.webview.cspSource,
    });
  }
}
