/**
 * Reports are inputs too. A report.json can be edited by hand, damaged, or planted in a workspace;
 * `encrypted-test` and the extension's result cache read one back and would otherwise run
 * whatever polynomials it holds. Two checks:
 * - integrity: the analysis seals the report with a SHA-256 of its content (`checksum`; the
 *   encrypted-test results it later adds under `encrypted` are outside it), so a report changed
 *   after he-approx wrote it is refused rather than run as if it had been measured;
 * - structure: every field the encrypted tests and the editor use is of its type, finite and in
 *   range (coefficient counts match degrees, intervals ordered, per-channel arrays consistent,
 *   fold forms consistent with degrees); once the model is loaded, he/layerTest.ts:
 *   checkReportAgainstGraph holds its layers to the model's.
 */
import * as crypto from 'crypto';
import { UserError } from './errors';
import { REPORT_SCHEMA, REPORT_VERSION, Report } from './report';

/** The SHA-256 of a report's content, its own checksum and the encrypted-test results left out. */
export function reportChecksum(r: Report): string {
  const { checksum: _c, encrypted: _e, ...content } = r;
  return crypto.createHash('sha256').update(JSON.stringify(content)).digest('hex');
}

/** Seals a report just before it is written (analysis outputs, the extension's cache). */
export function sealReport(r: Report): Report {
  r.checksum = reportChecksum(r);
  return r;
}

/** What to do about a report that fails a check. */
export const REPORT_FIX =
  'run he-approx analyze on the model again and use the report.json it writes (a report records what the analysis measured; edit the options, not the report)';

/**
 * Checks a report read from `source` (a file name for messages): schema, integrity, structure.
 * Returns it typed; throws one UserError naming the first problem.
 */
export function checkReport(raw: unknown, source: string): Report {
  const bad = (what: string): never => {
    throw new UserError('REPORT_INVALID', `${source}: ${what}`, REPORT_FIX);
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) bad('is not a he-approx report (not a JSON object)');
  const r = raw as Report;
  if (r.schema !== REPORT_SCHEMA || r.version !== REPORT_VERSION) {
    throw new UserError(
      'REPORT_INVALID',
      `${source} is not a he-approx report of version ${REPORT_VERSION}`,
      'run he-approx analyze --out DIR again and pass DIR/report.json',
    );
  }
  checkStructure(r, bad);
  if (typeof r.checksum !== 'string')
    bad('has no checksum: it was not written by this version of he-approx, or the field was removed');
  if (reportChecksum(r) !== r.checksum)
    bad(
      'was changed after he-approx wrote it (its content no longer matches its checksum), so its polynomials are not the ones the analysis measured',
    );
  return r;
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isInt = (x: unknown, lo: number, hi: number): x is number =>
  Number.isInteger(x) && (x as number) >= lo && (x as number) <= hi;

/** The highest degree any analysis fits (the candidate degrees' range, analysis/settings.ts). */
const MAX_DEGREE = 255;
const FORMS = new Set(['series', 'affine', 'square', 'constant']);

function checkStructure(r: Report, bad: (what: string) => never): void {
  if (!r.model || typeof r.model.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.model.sha256))
    bad('model.sha256 is not a SHA-256');
  const o = r.options as unknown as Record<string, unknown> | undefined;
  if (!o || typeof o !== 'object') bad('has no options');
  const scale = o!.inputScale;
  if (scale !== undefined && scale !== 'auto' && scale !== 'none' && !(isNum(scale) && scale > 0))
    bad(`options.inputScale is ${JSON.stringify(scale)}`);
  const norm = o!.inputNormalization as { mean?: unknown; std?: unknown } | null | undefined;
  if (norm) {
    const okArr = (v: unknown, pos: boolean) =>
      Array.isArray(v) && v.length > 0 && v.every((x) => isNum(x) && (!pos || x > 0));
    if (
      !okArr(norm.mean, false) ||
      !okArr(norm.std, true) ||
      (norm.mean as unknown[]).length !== (norm.std as unknown[]).length
    )
      bad('options.inputNormalization is not a mean and a positive std per channel');
  }
  const b = r.bootstrapping as unknown as { planned?: unknown; levelsPerBootstrap?: unknown } | undefined;
  if (!b || typeof b.planned !== 'boolean' || !isInt(b.levelsPerBootstrap, 1, 64))
    bad('bootstrapping is not { planned, levelsPerBootstrap }');
  if (!isInt(r.levelBudget, 0, 1000)) bad(`levelBudget is ${JSON.stringify(r.levelBudget)}`);
  if (!Array.isArray(r.layers)) bad('has no layers');
  const nodes = new Set<number>();
  r.layers.forEach((l, k) => {
    const at = `layer ${k}${l && typeof l.name === 'string' ? ` (${l.name})` : ''}`;
    if (!l || typeof l !== 'object' || typeof l.name !== 'string' || !isInt(l.node, 0, 1e7))
      bad(`${at} has no name or node`);
    if (nodes.has(l.node)) bad(`${at}: node ${l.node} appears twice`);
    nodes.add(l.node);
    const c = l.chosen;
    if (!c || typeof c !== 'object') bad(`${at} has no chosen polynomial`);
    if (!isInt(c.degree, 0, MAX_DEGREE))
      bad(`${at}: degree ${JSON.stringify(c.degree)} is not an integer from 0 to ${MAX_DEGREE}`);
    const coeffs = (v: unknown, where: string) => {
      if (!Array.isArray(v) || v.length !== c.degree + 1)
        bad(
          `${at}: ${where} holds ${Array.isArray(v) ? v.length : JSON.stringify(v)} coefficients, not degree + 1 = ${c.degree + 1}`,
        );
      const i = (v as unknown[]).findIndex((x) => !isNum(x));
      if (i >= 0) bad(`${at}: ${where}[${i}] is ${JSON.stringify((v as unknown[])[i])}, not a finite number`);
    };
    const interval = (v: unknown, where: string) => {
      const iv = v as { a?: unknown; b?: unknown } | null;
      if (!iv || !isNum(iv.a) || !isNum(iv.b) || !(iv.a < iv.b))
        bad(`${at}: ${where} ${JSON.stringify(v)} is not an interval a < b of finite numbers`);
    };
    coeffs(c.coeffs, 'coeffs');
    interval(c.interval, 'interval');
    let channels: number | null = null;
    if (c.channels !== null && c.channels !== undefined) {
      const ch = c.channels;
      if (
        !Array.isArray(ch.coeffs) ||
        !Array.isArray(ch.intervals) ||
        ch.coeffs.length === 0 ||
        ch.coeffs.length !== ch.intervals.length
      )
        bad(
          `${at}: channels hold ${Array.isArray(ch.coeffs) ? ch.coeffs.length : '?'} polynomials and ${Array.isArray(ch.intervals) ? ch.intervals.length : '?'} intervals`,
        );
      ch.coeffs.forEach((p, j) => coeffs(p, `channels.coeffs[${j}]`));
      ch.intervals.forEach((iv, j) => interval(iv, `channels.intervals[${j}]`));
      channels = ch.coeffs.length;
    }
    if (c.channelOffset !== null && c.channelOffset !== undefined) {
      const off = c.channelOffset;
      if (!Array.isArray(off) || off.length === 0 || !off.every(isNum))
        bad(`${at}: channelOffset is not a list of finite numbers`);
      if (channels !== null && off.length !== channels)
        bad(`${at}: channelOffset has ${off.length} channels, the polynomials ${channels}`);
    }
    const f = c.fold;
    if (!f || !FORMS.has(f.form) || typeof f.intoPrevious !== 'boolean')
      bad(`${at}: fold ${JSON.stringify(f)} is not a fold form`);
    if (
      (f.form === 'affine' && c.degree !== 1) ||
      (f.form === 'square' && c.degree !== 2) ||
      (f.form === 'constant' && c.degree > 1) ||
      (f.form === 'series' && c.degree < 1)
    ) {
      bad(`${at}: a degree-${c.degree} polynomial cannot be evaluated as the '${f.form}' form`);
    }
    if (
      !isInt(c.depth, 0, 64) ||
      !isInt(c.polyDepth, 0, 64) ||
      !isInt(c.affineLevel, 0, 1) ||
      c.depth !== c.polyDepth + c.affineLevel
    )
      bad(`${at}: depth ${c.depth} is not polyDepth ${c.polyDepth} + affineLevel ${c.affineLevel}`);
  });
}
