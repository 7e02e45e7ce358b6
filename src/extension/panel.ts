/**
 * The side panel (an activity-bar webview view): strict Content-Security-Policy with a nonce, no
 * network access, scripts only from the extension's bundle folder. The page itself is
 * webview/main.ts; every message is typed in messages.ts.
 */
import * as crypto from 'crypto';
import * as vscode from 'vscode';
import type { Report } from '../core/report';
import { frontierSeries, publishedPoints, reportCurves } from './curves';
import { FromWebview, ToWebview, isFromWebview } from './messages';

export interface PanelHandlers {
  ready(): void;
  analyze(): void;
  runEncryptedTest(): void;
  selectLayer(node: string): void;
  /** A frontier point picked (its levels and degrees), or null: back to the cheapest within the budget. */
  pickPoint(p: { levels: number; degrees: Record<string, number> } | null): void;
}

export class PanelProvider implements vscode.WebviewViewProvider {
  static readonly viewId = 'heApprox.panel';
  private view: vscode.WebviewView | null = null;
  /** The model whose results the panel shows. */
  modelUri: string | null = null;
  /** Replayed when the view (re)opens (the host re-sends the report on 'ready'). */
  private selected: string | null = null;

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly on: PanelHandlers,
  ) {}

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const bundle = vscode.Uri.joinPath(this.extensionUri, 'bundle');
    view.webview.options = { enableScripts: true, enableCommandUris: false, localResourceRoots: [bundle] };
    view.webview.html = this.html(view.webview, bundle);
    view.webview.onDidReceiveMessage((m: unknown) => {
      if (!isFromWebview(m)) return;
      const msg: FromWebview = m;
      switch (msg.type) {
        case 'ready':
          this.on.ready();
          if (this.selected) this.post({ type: 'selectLayer', node: this.selected });
          break;
        case 'analyze':
          this.on.analyze();
          break;
        case 'runEncryptedTest':
          this.on.runEncryptedTest();
          break;
        case 'selectLayer':
          this.selected = msg.node;
          this.on.selectLayer(msg.node);
          break;
        case 'pickPoint':
          this.on.pickPoint({ levels: msg.levels, degrees: msg.degrees });
          break;
        case 'clearPick':
          this.on.pickPoint(null);
          break;
      }
    });
    view.onDidDispose(() => {
      this.view = null;
    });
  }

  post(m: ToWebview): void {
    void this.view?.webview.postMessage(m);
  }

  showReport(report: Report, stale: boolean, model: string): void {
    this.post({
      type: 'report',
      report,
      curves: reportCurves(report),
      frontier: frontierSeries(report),
      published: publishedPoints(report),
      stale,
      model,
    });
  }

  select(node: string): void {
    this.selected = node;
    this.post({ type: 'selectLayer', node });
  }

  private html(webview: vscode.Webview, bundle: vscode.Uri): string {
    const nonce = crypto.randomBytes(16).toString('base64');
    const script = webview.asWebviewUri(vscode.Uri.joinPath(bundle, 'webview.js'));
    const csp = [
      "default-src 'none'",
      `script-src 'nonce-${nonce}'`,
      `style-src ${webview.cspSource} 'nonce-${nonce}'`,
      `font-src ${webview.cspSource}`,
      `img-src ${webview.cspSource} data:`,
    ].join('; ');
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<style nonce="${nonce}">
  body { padding: 0 8px 16px; color: var(--vscode-foreground); font-family: var(--vscode-font-family); font-size: var(--vscode-font-size); }
  h2 { font-size: 1.05em; margin: 14px 0 6px; font-weight: 600; }
  .muted { color: var(--vscode-descriptionForeground); }
  .row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: 2px 4px; border-bottom: 1px solid var(--vscode-panel-border, transparent); }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .chart { position: relative; height: 200px; margin: 4px 0 10px; }
  .chart.tall { height: 300px; }
  .error { color: var(--vscode-errorForeground); }
  .stale { color: var(--vscode-editorWarning-foreground); }
  [hidden] { display: none !important; }
</style>
<title>HE Approx</title>
</head>
<body>
<div id="empty">
  <p>No results yet. Open a folder with a TensorFlow.js <code>model.json</code>, an <code>.onnx</code>, <code>.h5</code> or <code>.keras</code> model and run <b>HE Approx: Analyze Model</b>.</p>
  <vscode-button id="analyze-empty">Analyze Model</vscode-button>
</div>
<div id="progress" hidden><vscode-progress-bar id="progress-bar"></vscode-progress-bar><div id="progress-text" class="muted"></div></div>
<div id="error" class="error" hidden></div>
<div id="results" hidden>
  <div class="row"><b id="model-name"></b><vscode-badge id="stale" hidden variant="counter">stale</vscode-badge></div>
  <div class="row">
    <vscode-button id="analyze">Analyze Again</vscode-button>
    <vscode-button id="encrypt" secondary>Run Encrypted Test</vscode-button>
  </div>
  <h2>Model summary</h2>
  <table id="summary"></table>
  <h2>Accuracy vs cost</h2>
  <div class="chart"><canvas id="frontier-chart" aria-label="measured accuracy drop versus levels or bootstraps, per method"></canvas></div>
  <div class="muted">The best choice measured on held-out data at each level count, or bootstrap count when the plan bootstraps (the ring each needs in the tooltip); the larger point is the result. For a CIFAR-10 ResNet-20 the triangles are the field's published points (their figures, their training; not measured here). <code>heApprox.frontierPoints</code> measures more. <b>Use</b> makes a point the model's result (diagnostics, CodeLens and export follow).</div>
  <table id="frontier-points"></table>
  <div class="row"><vscode-button id="clear-pick" secondary hidden>Back to the cheapest within the budget</vscode-button></div>
  <h2>Layer</h2>
  <vscode-single-select id="layer"></vscode-single-select>
  <div id="layer-facts" class="muted"></div>
  <div class="chart"><canvas id="fit-chart" aria-label="histogram, activation and polynomial"></canvas></div>
  <div class="chart"><canvas id="error-chart" aria-label="approximation error"></canvas></div>
  <h2>Accuracy drop vs degree</h2>
  <div class="chart tall"><canvas id="degree-chart" aria-label="accuracy drop versus degree"></canvas></div>
  <div class="muted">Each layer alone at each candidate degree, on held-out data; drops of 0.01 pp or less are drawn at 0.01.</div>
  <div id="encrypted-section" hidden>
    <h2>Encrypted test (Microsoft SEAL, CKKS)</h2>
    <div id="encrypted"></div>
  </div>
</div>
<script nonce="${nonce}" src="${script}"></script>
</body>
</html>`;
  }
}
