/**
 * The read-only editor for binary model files (.onnx, .h5, .keras): the model's layers in a table,
 * each activation with its recommended degree, depth and predicted and measured accuracy drop,
 * and links to the side panel. vscode-free: the host passes the model summary, the report (if
 * any) and the webview's CSP source; tested on plain Node.
 */
import type { ModelSummary } from '../core/model/summary';
import type { Report } from '../core/report';

/** Messages from the model view to the host. */
export type ModelViewMessage = { type: 'analyze' } | { type: 'showFit'; node: string } | { type: 'encrypt' };

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const pp = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)} pp` : 'n/a');

export interface ModelViewInput {
  fileName: string;
  summary: ModelSummary | null;
  /** A one-line problem with the file (unreadable, unsupported operator), shown instead of the table. */
  error: { message: string; fix: string } | null;
  report: Report | null;
  stale: boolean;
  nonce: string;
  cspSource: string;
}

/** The rows a user sees, as plain data (what the e2e test and the unit test read). */
export function modelViewRows(
  summary: ModelSummary,
  report: Report | null,
): {
  name: string;
  op: string;
  shape: string;
  activation: string;
  degree: string;
  depth: string;
  predicted: string;
  node: string | null;
}[] {
  const byName = new Map((report?.layers ?? []).map((l) => [l.name, l]));
  // A max pooling's tree shows as its |x| steps; the differences and sums around them are plumbing.
  return summary.nodes
    .filter((n) => !['input', 'pairdiff', 'pairmax'].includes(n.op))
    .map((n) => {
      const l = byName.get(n.name);
      return {
        name: n.name,
        op: n.className,
        shape: `[${n.shape.join(', ')}]`,
        activation: n.activation === 'abs' ? '|a - b| (max pooling)' : (n.activation ?? ''),
        degree: l ? String(l.chosen.degree) : '',
        depth: l ? String(l.chosen.depth) : '',
        predicted: l ? pp(l.chosen.predictedDrop) : '',
        node: l ? l.name : null,
      };
    });
}

/** "3 activations" or "2 activations and 1 max pooling (2 |x|)": what the report approximated. */
function poolsLine(r: Report): string {
  const trees = r.layers.filter((l) => l.maxTree).length;
  const pools = r.maxPooling?.pools.length ?? 0;
  const acts = `${r.layers.length - trees} activation${r.layers.length - trees === 1 ? '' : 's'}`;
  return pools ? `${acts} and ${pools} max pooling${pools === 1 ? '' : 's'} (${trees} |x|)` : acts;
}

export function modelViewHtml(v: ModelViewInput): string {
  const r = v.report;
  const head = `<h2>${esc(v.fileName)}</h2>`;
  let body: string;
  if (v.error) {
    body = `<p class="error">${esc(v.error.message)}.</p><p><b>Fix:</b> ${esc(v.error.fix)}</p>`;
  } else if (!v.summary) {
    body = '<p>Reading the model…</p>';
  } else {
    const s = v.summary;
    const acts = s.nodes.filter((n) => n.activation).length;
    const summaryLine = r
      ? `<p class="summary${v.stale ? ' stale' : ''}">${poolsLine(r)} approximated: total depth <b>${r.final.networkDepth}</b> levels (uniform baseline ${r.uniform.networkDepth}); measured accuracy drop <b>${pp(r.final.measuredDrop)}</b> (budget ${r.options.budget} pp)${v.stale ? ' — stale: the model, data or settings changed' : ''}.</p>`
      : `<p class="summary">${acts} activations, no results yet. <button id="analyze">Analyze Model</button></p>`;
    const rows = modelViewRows(s, r)
      .map(
        (row) =>
          `<tr${row.activation ? ' class="act"' : ''}><td>${esc(row.name)}</td><td>${esc(row.op)}</td><td>${esc(row.shape)}</td><td>${esc(row.activation)}</td>` +
          `<td class="num">${row.degree}</td><td class="num">${row.depth}</td><td class="num">${row.predicted}</td>` +
          `<td>${row.node ? `<a href="#" data-node="${esc(row.node)}">Show fit</a>` : ''}</td></tr>`,
      )
      .join('\n');
    body = `<p>${esc(s.format)} model <code>${esc(s.name)}</code>, input [N, ${s.input.shape.join(', ')}] (${esc(s.input.layout)}).</p>${summaryLine}
${r ? '<p><button id="encrypt">Run Encrypted Test</button></p>' : ''}
<table><thead><tr><th>layer</th><th>operation</th><th>output</th><th>activation</th><th>degree</th><th>depth</th><th>Δacc alone</th><th></th></tr></thead>
<tbody>
${rows}
</tbody></table>
${s.notes.map((n) => `<p class="note">${esc(n)}</p>`).join('\n')}`;
  }
  return `<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src ${v.cspSource} 'nonce-${v.nonce}'; script-src 'nonce-${v.nonce}';">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<style nonce="${v.nonce}">
body { font-family: var(--vscode-font-family); color: var(--vscode-foreground); padding: 0 1em; }
table { border-collapse: collapse; } th, td { padding: 2px 8px; text-align: left; border-bottom: 1px solid var(--vscode-panel-border); }
td.num { text-align: right; } tr.act td { font-weight: 600; } .stale { opacity: 0.7; } .error { color: var(--vscode-errorForeground); }
.note { color: var(--vscode-descriptionForeground); } a { color: var(--vscode-textLink-foreground); }
button { background: var(--vscode-button-background); color: var(--vscode-button-foreground); border: none; padding: 4px 10px; cursor: pointer; }
</style><title>${esc(v.fileName)}</title></head><body>
${head}
${body}
<script nonce="${v.nonce}">
const vscode = acquireVsCodeApi();
document.getElementById('analyze')?.addEventListener('click', () => vscode.postMessage({ type: 'analyze' }));
document.getElementById('encrypt')?.addEventListener('click', () => vscode.postMessage({ type: 'encrypt' }));
for (const a of document.querySelectorAll('a[data-node]')) a.addEventListener('click', (e) => { e.preventDefault(); vscode.postMessage({ type: 'showFit', node: a.dataset.node }); });
</script></body></html>`;
}
