/**
 * The side panel's page: draws what the host sends (messages.ts) with Chart.js and
 * @vscode-elements/elements, themed with --vscode-* variables. No numerics here: the host computes
 * the curves with the core (src/extension/curves.ts). State survives hiding the view via
 * getState/setState.
 */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  LogarithmicScale,
  PointElement,
  Tooltip,
} from 'chart.js';
import '@vscode-elements/elements/dist/vscode-badge/index.js';
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-option/index.js';
import '@vscode-elements/elements/dist/vscode-progress-bar/index.js';
import '@vscode-elements/elements/dist/vscode-single-select/index.js';
import type { FromWebview, ToWebview } from '../src/extension/messages';
import type { FrontierSeries, LayerCurves } from '../src/extension/curves';
import type { PublishedPoint } from '../src/core/analysis/published';
import type { LayerReport, Report } from '../src/core/report';
import { $, esc, fmt, renderEncrypted, row } from './tables';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  LineController,
  LineElement,
  LinearScale,
  LogarithmicScale,
  PointElement,
  Legend,
  Tooltip,
);

interface VsCodeApi {
  postMessage(m: FromWebview): void;
  getState(): unknown;
  setState(s: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;
const vscode = acquireVsCodeApi();

interface State {
  last: Extract<ToWebview, { type: 'report' }> | null;
  selected: string | null;
}
let state: State = (vscode.getState() as State | undefined) ?? { last: null, selected: null };
const save = () => vscode.setState(state);

const charts = new Map<string, { destroy(): void }>();

function css(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

function colors() {
  return {
    fg: css('--vscode-foreground', '#ccc'),
    grid: css('--vscode-editorWidget-border', 'rgba(128,128,128,0.3)'),
    blue: css('--vscode-charts-blue', '#3794ff'),
    orange: css('--vscode-charts-orange', '#d18616'),
    green: css('--vscode-charts-green', '#89d185'),
    red: css('--vscode-charts-red', '#f14c4c'),
    purple: css('--vscode-charts-purple', '#b180d7'),
    yellow: css('--vscode-charts-yellow', '#cca700'),
    hist: css('--vscode-charts-lines', 'rgba(128,128,128,0.45)'),
  };
}

function draw(id: string, config: ConstructorParameters<typeof Chart>[1], points: number): void {
  charts.get(id)?.destroy();
  charts.delete(id);
  const canvas = $<HTMLCanvasElement>(id);
  try {
    // Every chart: drawn at once (the panel redraws on each report), sized by its container, data as {x, y}.
    const statics = { animation: false as const, maintainAspectRatio: false, parsing: false as const };
    charts.set(id, new Chart(canvas, { ...config, options: { ...statics, ...config.options } }));
    // What a test (or a screen reader) can check without reading pixels: how much was plotted.
    canvas.dataset.points = String(points);
  } catch (e) {
    // One chart failing must not take the rest of the panel with it.
    canvas.dataset.points = '0';
    canvas.setAttribute('aria-label', `chart failed: ${(e as Error).message}`);
  }
}

function axes(c: ReturnType<typeof colors>, xTitle: string, yTitle: string) {
  return {
    x: {
      type: 'linear' as const,
      title: { display: true, text: xTitle, color: c.fg },
      ticks: { color: c.fg },
      grid: { color: c.grid },
    },
    y: { title: { display: true, text: yTitle, color: c.fg }, ticks: { color: c.fg }, grid: { color: c.grid } },
  };
}

function drawLayer(report: Report, curves: Record<string, LayerCurves>, node: string): void {
  const l = report.layers.find((x) => x.name === node);
  const cv = curves[node];
  if (!l || !cv) return;
  const c = colors();
  const ch = l.chosen;
  $('layer-facts').textContent =
    `${l.maxTree ? `max pooling ${l.layer}, step ${l.maxTree.step}: |a - b| along the ${l.maxTree.axis}` : l.activation} → degree ${ch.degree} (${ch.method === 'data' ? 'data-guided' : ch.method}), depth ${ch.depth}, ${ch.nonScalarMults} ciphertext multiplications, ` +
    `predicted drop ${fmt(ch.predictedDrop)}%; interval [${ch.interval.a.toPrecision(3)}, ${ch.interval.b.toPrecision(3)}], inputs seen ${l.stats.min.toPrecision(3)}..${l.stats.max.toPrecision(3)}`;
  const xy = (xs: number[], ys: number[]) => xs.map((x, i) => ({ x, y: ys[i] }));
  const base = axes(c, 'input to the activation', 'output');
  draw(
    'fit-chart',
    {
      type: 'line',
      data: {
        datasets: [
          {
            type: 'bar',
            label: 'recorded inputs (fraction)',
            data: xy(cv.histogram.x, cv.histogram.density),
            backgroundColor: c.hist,
            yAxisID: 'density',
            barPercentage: 1,
            categoryPercentage: 1,
            order: 3,
          },
          {
            label: l.activation,
            data: xy(cv.x, cv.activation),
            borderColor: c.blue,
            borderWidth: 2,
            pointRadius: 0,
            order: 2,
          },
          {
            label: `polynomial, degree ${ch.degree}${cv.channel ? ` (channel ${cv.channel.index} of ${cv.channel.of}, widest interval)` : ''}`,
            data: xy(cv.x, cv.polynomial),
            borderColor: c.orange,
            borderWidth: 2,
            borderDash: [5, 3],
            pointRadius: 0,
            order: 1,
          },
        ],
      },
      options: {
        plugins: { legend: { labels: { color: c.fg, boxWidth: 12 } } },
        scales: {
          ...base,
          density: {
            position: 'right',
            beginAtZero: true,
            ticks: { color: c.fg },
            grid: { display: false },
            title: { display: true, text: 'fraction', color: c.fg },
          },
        },
      },
    },
    cv.x.length + cv.histogram.x.length,
  );
  draw(
    'error-chart',
    {
      type: 'line',
      data: {
        datasets: [
          {
            label: 'polynomial − activation',
            data: xy(cv.x, cv.error),
            borderColor: c.red,
            borderWidth: 2,
            pointRadius: 0,
          },
        ],
      },
      options: {
        plugins: { legend: { labels: { color: c.fg, boxWidth: 12 } } },
        scales: axes(c, 'input', 'error'),
      },
    },
    cv.x.length,
  );
}

/** Drops at or below this show at this value: the log axis cannot show zero or negative drops. */
const DROP_FLOOR = 0.01;

function drawDegrees(report: Report, selected: string): void {
  const c = colors();
  const clamp = (d: number) => Math.max(DROP_FLOOR, d);
  const palette = [c.blue, c.orange, c.green, c.purple, c.yellow, c.red];
  const datasets = report.layers.map((l: LayerReport, i) => ({
    label: `${l.name}${l.name === selected ? ' (selected)' : ''}`,
    data: l.sensitivity.data.map((d) => ({ x: d.degree, y: clamp(d.drop) })),
    borderColor: palette[i % palette.length],
    borderWidth: l.name === selected ? 3 : 1.5,
    pointRadius: 2,
  }));
  const sel = report.layers.find((l) => l.name === selected);
  if (sel)
    datasets.push({
      label: `${sel.name}: uniform baseline`,
      data: sel.sensitivity.uniform.map((d) => ({ x: d.degree, y: clamp(d.drop) })),
      borderColor: c.fg,
      borderWidth: 1,
      pointRadius: 1,
      borderDash: [4, 4],
    } as (typeof datasets)[number]);
  const points = datasets.reduce((s, d) => s + d.data.length, 0);
  draw(
    'degree-chart',
    {
      type: 'line',
      data: { datasets },
      options: {
        plugins: { legend: { position: 'bottom', labels: { color: c.fg, boxWidth: 8, font: { size: 10 } } } },
        scales: {
          x: { ...axes(c, 'degree', '').x, max: Math.max(...report.options.degrees) },
          y: {
            type: 'logarithmic' as const,
            ticks: { color: c.fg },
            grid: { color: c.grid },
            title: { display: true, text: 'drop alone, pp (log)', color: c.fg },
          },
        },
      },
    },
    points,
  );
}

/**
 * Measured drop against levels per method (against bootstraps when the plan bootstraps: what such
 * a network costs), the uniform baseline dashed, the result drawn larger; for a CIFAR ResNet-20 the
 * field's published points beside it as triangles, labelled as theirs.
 */
function drawFrontier(series: FrontierSeries[], published: PublishedPoint[], byBootstraps: boolean): void {
  const c = colors();
  const xOf = (p: { levels: number; bootstraps: number }) => (byBootstraps ? p.bootstraps : p.levels);
  const datasets = [
    ...series.map((m) => ({
      label: m.method,
      data: m.points.map((p) => ({ x: xOf(p), y: p.drop })),
      borderColor: m.method === 'uniform' ? c.fg : m.method.endsWith('fine-tuning') ? c.orange : c.blue,
      borderWidth: 1.5,
      borderDash: m.method === 'uniform' ? [4, 4] : [],
      pointRadius: m.points.map((p) => (p.chosen ? 6 : 3)),
      pointStyle: 'circle' as const,
      showLine: true,
    })),
    ...(published.length
      ? [
          {
            label: 'published (theirs)',
            data: published.map((p) => ({ x: p.bootstraps, y: p.drop })),
            borderColor: c.fg,
            borderWidth: 1,
            borderDash: [],
            pointRadius: published.map(() => 5),
            pointStyle: 'triangle' as const,
            showLine: false,
          },
        ]
      : []),
  ];
  const label = (d: number, k: number): string => {
    if (d >= series.length) {
      const p = published[k];
      return `${p.system} (their figure): ${fmt(p.drop)} pp at ${p.bootstraps} bootstraps; ${p.how}`;
    }
    const p = series[d].points[k];
    const ring = p.bootstraps ? `${p.bootstraps} bootstraps` : `N=${p.ringSize}`;
    return `${series[d].method}: ${fmt(p.drop)} pp at ${p.levels} levels (${ring})${p.chosen ? ', the result' : ''}`;
  };
  draw(
    'frontier-chart',
    {
      type: 'line',
      data: { datasets },
      options: {
        plugins: {
          legend: { position: 'bottom', labels: { color: c.fg, boxWidth: 8, font: { size: 10 } } },
          tooltip: { callbacks: { label: (t) => label(t.datasetIndex, t.dataIndex) } },
        },
        scales: axes(c, byBootstraps ? 'bootstraps' : 'levels', 'measured drop, pp'),
      },
    },
    datasets.reduce((t, d) => t + d.data.length, 0),
  );
}

/**
 * The analysis's own frontier points as rows, each but the result with a Use button that makes it
 * the model's result; with a picked point, a way back to the cheapest within the budget.
 */
function renderFrontierPoints(r: Report, series: FrontierSeries[]): void {
  const points = series.flatMap((s) => s.points).filter((p) => p.pickable);
  const head = row(['levels', 'N', 'bootstraps', 'measured drop, pp', ''], true);
  $('frontier-points').innerHTML =
    head +
    points
      .map((p, k) =>
        row([
          String(p.levels),
          String(p.ringSize),
          String(p.bootstraps),
          fmt(p.drop),
          p.chosen ? 'the result' : `<vscode-button class="pick-point" data-k="${k}" secondary>Use</vscode-button>`,
        ]),
      )
      .join('');
  for (const b of document.querySelectorAll<HTMLElement>('#frontier-points .pick-point'))
    b.addEventListener('click', () => {
      const p = points[Number(b.dataset.k)];
      vscode.postMessage({ type: 'pickPoint', levels: p.levels, degrees: p.degrees });
    });
  $('clear-pick').hidden = !r.options.target?.degrees;
}

function renderSummary(r: Report): void {
  const f = r.final;
  const u = r.uniform;
  const metric = r.metric === 'top1-vs-labels' ? 'accuracy' : 'agreement';
  const enc = r.encrypted?.model;
  $('summary').innerHTML = [
    row(['', 'he-approx', 'uniform'], true),
    row([`plaintext ${metric}`, `${fmt(100 * r.plaintext.accuracy)}%`, '']),
    row([`approximated ${metric} (measured)`, `${fmt(100 * f.accuracy)}%`, `${fmt(100 * u.accuracy)}%`]),
    row(['predicted drop', `${fmt(f.predictedDrop)} pp`, `${fmt(u.predictedDrop)} pp`]),
    row(['measured drop', `${fmt(f.measuredDrop)} pp`, `${fmt(u.measuredDrop)} pp`]),
    row(['total depth (levels)', String(f.networkDepth), String(u.networkDepth)]),
    row(['ciphertext multiplications', String(f.nonScalarMults), String(u.nonScalarMults)]),
    row([
      `bootstraps (every ${r.bootstrapping?.levelsPerBootstrap ?? 10} levels)`,
      String(f.bootstraps ?? '-'),
      String(u.bootstraps ?? '-'),
    ]),
    row([
      'values within CKKS range',
      f.safe === false ? 'no' : `yes (max ${fmt(f.maxAbs ?? NaN, 1)})`,
      u.safe === false ? 'no' : 'yes',
    ]),
    row([
      'ring size N',
      r.bootstrapping?.planned
        ? `deeper than SEAL's ${r.levelBudget} levels: planned for bootstrapping`
        : String(enc?.params.ringSize ?? r.options.ringSize),
      '',
    ]),
    row([
      'budget',
      `${r.options.budget} pp, ${r.bootstrapping?.planned ? 'bootstrapping' : `${r.levelBudget} levels`}`,
      '',
    ]),
    // Max pooling is in every figure above, as its polynomial max trees; average pooling is the comparison.
    ...(r.maxPooling
      ? [
          row([
            'max pooling',
            `polynomial max (${r.maxPooling.pools.map((p) => `${p.layer}: |x| degrees ${p.degrees.join(', ')}`).join('; ')})`,
            'polynomial max',
          ]),
          row(['average pooling instead (measured)', `${fmt(r.maxPooling.averagePooling.drop)} pp`, '']),
        ]
      : []),
  ].join('');
}

function render(): void {
  const m = state.last;
  $('empty').hidden = !!m;
  $('results').hidden = !m;
  if (!m) return;
  const r = m.report;
  $('error').hidden = true;
  $('model-name').textContent = m.model;
  $('stale').hidden = !m.stale;
  renderSummary(r);
  renderEncrypted(r);
  drawFrontier(m.frontier ?? [], m.published ?? [], r.bootstrapping.planned);
  renderFrontierPoints(r, m.frontier ?? []);
  const select = $<HTMLElement & { value: string }>('layer');
  select.innerHTML = r.layers
    .map(
      (l) =>
        `<vscode-option value="${esc(l.name)}">${esc(l.name)} (${esc(l.maxTree ? '|a - b|, max pooling' : l.activation)}, degree ${l.chosen.degree})</vscode-option>`,
    )
    .join('');
  const selected = r.layers.some((l) => l.name === state.selected) ? state.selected! : r.layers[0]?.name;
  if (selected) {
    select.value = selected;
    drawLayer(r, m.curves, selected);
    drawDegrees(r, selected);
  }
}

function selectLayer(node: string, notifyHost: boolean): void {
  state.selected = node;
  save();
  if (state.last) {
    const select = $<HTMLElement & { value: string }>('layer');
    if (select.value !== node) select.value = node;
    drawLayer(state.last.report, state.last.curves, node);
    drawDegrees(state.last.report, node);
  }
  if (notifyHost) vscode.postMessage({ type: 'selectLayer', node });
}

window.addEventListener('message', (ev: MessageEvent<ToWebview>) => {
  const m = ev.data;
  switch (m.type) {
    case 'report':
      state.last = m;
      save();
      $('progress').hidden = true;
      render();
      break;
    case 'selectLayer':
      selectLayer(m.node, false);
      break;
    case 'progress':
      $('progress').hidden = m.fraction >= 1;
      $('progress-text').textContent = `${Math.round(100 * m.fraction)}% ${m.message}`;
      break;
    case 'error':
      $('progress').hidden = true;
      $('error').hidden = false;
      $('error').textContent = `${m.message}. Fix: ${m.fix}`;
      break;
    case 'clear':
      state = { last: null, selected: null };
      save();
      for (const c of charts.values()) c.destroy();
      charts.clear();
      render();
      break;
  }
});

$('layer').addEventListener('change', (e) => selectLayer((e.target as HTMLElement & { value: string }).value, true));
for (const id of ['analyze', 'analyze-empty'])
  $(id).addEventListener('click', () => vscode.postMessage({ type: 'analyze' }));
$('encrypt').addEventListener('click', () => vscode.postMessage({ type: 'runEncryptedTest' }));
$('clear-pick').addEventListener('click', () => vscode.postMessage({ type: 'clearPick' }));
// VS Code marks the theme on <body> (vscode-light, vscode-dark, vscode-high-contrast): redraw in its colours.
new MutationObserver(() => render()).observe(document.body, { attributes: true, attributeFilter: ['class'] });
render();
vscode.postMessage({ type: 'ready' });
