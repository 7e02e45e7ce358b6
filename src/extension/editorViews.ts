/**
 * What the editor shows of each model's result, in named parts: the CodeLens per layer, the hover
 * on a layer's name, the diagnostics on model.json and the status bar item. Each reads the
 * results through `ModelResults` (the extension's model state) and maps the vscode-free views of
 * reportView.ts onto VS Code's types; none of them computes or changes a result.
 */
import { format as formatJson, applyEdits } from 'jsonc-parser';
import * as path from 'path';
import * as vscode from 'vscode';
import type { Report } from '../core/report';
import { LayerRanges, TextRange, findLayerRanges, offsetToPosition } from './layerRanges';
import { PlainDiagnostic, reportCodeLenses, reportDiagnostics, reportHover } from './reportView';

/** A model's analysis result as the editor keeps it. */
export interface ModelState {
  uri: vscode.Uri;
  report: Report;
  key: string;
  stale: boolean;
  data: string;
  labels: string | null;
  /** model.json, its weight shards, the data and labels: what the cache key hashes and the watcher checks. */
  files: (string | null)[];
}

/** The model state the views read. */
export interface ModelResults {
  stateOf(uri: vscode.Uri): ModelState | undefined;
  /** The last analysis failure of a model, shown until it is analysed again. */
  failureOf(uri: vscode.Uri): { message: string; fix: string } | undefined;
  /** The model file's text and its layers' ranges (the open document's, else the file's), or null. */
  rangesFor(uri: vscode.Uri): { doc: vscode.TextDocument | null; text: string; ranges: LayerRanges } | null;
}

/** True for a tfjs model.json (by name, or a `modelTopology` near the top). */
export function isModelDocument(doc: vscode.TextDocument): boolean {
  if (doc.uri.scheme !== 'file' && doc.uri.scheme !== 'vscode-remote') return false;
  if (!doc.fileName.endsWith('.json')) return false;
  return (
    path.basename(doc.fileName) === 'model.json' ||
    doc.getText(new vscode.Range(0, 0, 40, 0)).includes('"modelTopology"')
  );
}

/** A character range of `text` as a VS Code range (through the document when it is open). */
export function rangeOf(doc: vscode.TextDocument | null, text: string, r: TextRange): vscode.Range {
  if (doc) return new vscode.Range(doc.positionAt(r.start), doc.positionAt(r.end));
  const pos = (o: number) => {
    const p = offsetToPosition(text, o);
    return new vscode.Position(p.line, p.character);
  };
  return new vscode.Range(pos(r.start), pos(r.end));
}

/** One lens per approximated layer (its degree and drop), or "Analyze Model" on a model not analysed yet. */
export class LayerCodeLensProvider implements vscode.CodeLensProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;

  constructor(private readonly results: ModelResults) {}

  /** The results changed: VS Code asks for the lenses again. */
  refresh(): void {
    this.changed.fire();
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    if (!isModelDocument(doc)) return [];
    const text = doc.getText();
    const ranges = findLayerRanges(text);
    const lenses: vscode.CodeLens[] = [];
    const top = new vscode.Range(0, 0, 0, 0);
    if (ranges.minified && ranges.layers.size)
      lenses.push(
        new vscode.CodeLens(top, {
          title: 'HE Approx: Format model.json',
          command: 'heApprox.formatModel',
          arguments: [doc.uri],
        }),
      );
    const s = this.results.stateOf(doc.uri);
    if (!s) {
      if (!ranges.errors.length)
        lenses.push(
          new vscode.CodeLens(top, {
            title: 'HE Approx: Analyze Model',
            command: 'heApprox.analyzeModel',
            arguments: [doc.uri],
          }),
        );
      return lenses;
    }
    for (const l of reportCodeLenses(s.report, ranges)) {
      lenses.push(
        new vscode.CodeLens(rangeOf(doc, text, l.range), {
          title: (s.stale ? '(stale) ' : '') + l.title,
          command: 'heApprox.showPanel',
          arguments: [l.node],
        }),
      );
    }
    return lenses;
  }

  dispose(): void {
    this.changed.dispose();
  }
}

/** The layer's result in markdown when the pointer rests on its name. */
export class LayerHoverProvider implements vscode.HoverProvider {
  constructor(private readonly results: ModelResults) {}

  provideHover(doc: vscode.TextDocument, pos: vscode.Position): vscode.Hover | null {
    const s = this.results.stateOf(doc.uri);
    if (!s) return null;
    const offset = doc.offsetAt(pos);
    for (const l of findLayerRanges(doc.getText()).layers.values()) {
      if (offset < l.range.start || offset > l.range.end) continue;
      const md = reportHover(s.report, l.name);
      if (!md) return null;
      const m = new vscode.MarkdownString(
        md + (s.stale ? '\n\n*Stale: the model, data or settings changed since this analysis.*' : ''),
      );
      m.isTrusted = { enabledCommands: ['heApprox.showPanel'] };
      return new vscode.Hover(m, rangeOf(doc, doc.getText(), l.nameRange));
    }
    return null;
  }
}

/** The diagnostics on model.json files: per layer its degree and warnings, a failure, a format hint. */
export class ModelDiagnostics implements vscode.Disposable {
  private readonly collection = vscode.languages.createDiagnosticCollection('he-approx');

  constructor(private readonly results: ModelResults) {}

  render(uri: vscode.Uri): void {
    const r = this.results.rangesFor(uri);
    if (!r) return;
    const s = this.results.stateOf(uri);
    const plain: PlainDiagnostic[] = reportDiagnostics(s?.report ?? null, r.ranges);
    const failure = this.results.failureOf(uri);
    if (failure && !r.ranges.errors.length)
      plain.push({
        range: { start: 0, end: 1 },
        severity: 'error',
        message: `${failure.message}. Fix: ${failure.fix}`,
        source: 'he-approx',
        code: 'syntax',
      });
    if (r.ranges.minified && r.ranges.layers.size) {
      plain.push({
        range: { start: 0, end: 1 },
        severity: 'information',
        source: 'he-approx',
        code: 'degree',
        message:
          'model.json is a single line; run "HE Approx: Format model.json" to see one layer per line (ranges are precise either way)',
      });
    }
    const sev = {
      error: vscode.DiagnosticSeverity.Error,
      warning: vscode.DiagnosticSeverity.Warning,
      information: vscode.DiagnosticSeverity.Information,
    };
    this.collection.set(
      uri,
      plain.map((p) => {
        const d = new vscode.Diagnostic(
          rangeOf(r.doc, r.text, p.range),
          s?.stale && p.code !== 'syntax' ? `${p.message} (stale: analyse again)` : p.message,
          sev[p.severity],
        );
        d.source = p.source;
        d.code = p.code;
        return d;
      }),
    );
  }

  delete(uri: vscode.Uri): void {
    this.collection.delete(uri);
  }

  clear(): void {
    this.collection.clear();
  }

  /** The files that have diagnostics now. */
  uris(): vscode.Uri[] {
    const out: vscode.Uri[] = [];
    this.collection.forEach((u) => {
      out.push(u);
    });
    return out;
  }

  dispose(): void {
    this.collection.dispose();
  }
}

/** The job in flight, as the status bar shows it. */
export interface RunningJob {
  label: string;
  fraction: number;
  message: string;
}

/** The status bar item: a job's progress (click: cancel), a failure (click: the log), or the current model's result. */
export class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('heApprox.status', vscode.StatusBarAlignment.Left, 10);

  constructor() {
    this.item.name = 'HE Approx';
    this.show('idle', null, undefined);
    this.item.show();
  }

  show(state: 'idle' | 'busy' | 'done' | 'error', running: RunningJob | null, current: ModelState | undefined): void {
    const st = this.item;
    st.backgroundColor = undefined;
    if (state === 'busy' && running) {
      st.text = `$(sync~spin) HE Approx ${Math.round(100 * running.fraction)}%`;
      st.tooltip = `${running.label}: ${running.message} (click to cancel)`;
      st.command = 'heApprox.cancel';
    } else if (state === 'error') {
      st.text = '$(error) HE Approx';
      st.tooltip = 'The last run failed: click to open the log';
      st.command = 'heApprox.showLog';
      st.backgroundColor = new vscode.ThemeColor('statusBarItem.errorBackground');
    } else if ((state === 'done' || state === 'idle') && current) {
      const f = current.report.final;
      const boots = current.report.bootstrapping?.planned ? ` · ${f.bootstraps} bootstraps` : '';
      st.text = `$(shield) HE ${f.networkDepth} levels${boots} · Δacc ${f.measuredDrop.toFixed(2)}%${current.stale ? ' (stale)' : ''}`;
      st.tooltip = `he-approx: ${vscode.workspace.asRelativePath(current.uri)}: depth ${f.networkDepth} levels${boots ? `, ${f.bootstraps} bootstraps every ${current.report.bootstrapping.levelsPerBootstrap} levels` : ''}, measured accuracy drop ${f.measuredDrop.toFixed(2)} pp (uniform baseline: ${current.report.uniform.networkDepth} levels). Click to show the panel.`;
      st.command = 'heApprox.showPanel';
    } else {
      st.text = '$(shield) HE Approx';
      st.tooltip = 'he-approx: run "HE Approx: Analyze Model"';
      st.command = 'heApprox.analyzeModel';
    }
  }

  dispose(): void {
    this.item.dispose();
  }
}

/** The Format Model command: model.json pretty-printed as an edit in the editor. */
export async function formatModel(arg?: vscode.Uri): Promise<void> {
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
