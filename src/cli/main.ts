/**
 * The `he-approx` command line: a thin host over the core. Tables go to stdout, progress to
 * stderr, user errors become one line with the fix and exit code 2; nothing else is printed
 * from the core.
 */
import * as path from 'path';
import { analyze, toolVersion } from '../core/analyze';
import { UserError, isUserError } from '../core/errors';
import { checkOutputs, writeOutputs } from '../core/export/export';
import type { FinetunedModel } from '../core/finetune/finetune';
import { LoadedModel, loadModel } from '../core/model/load';
import type { OpCosts } from '../core/cost/cost';
import { costsCacheFile, measureAndCacheSealCosts } from '../core/cost/sealCosts';
import type { AnalyzeOptions } from '../core/analysis/settings';
import { ANALYZE_OPTIONS, DEFAULT_BOOTSTRAP_LEVELS, OptionSpec, normalization, optionDefault } from '../core/options';
import { ENCRYPTED_TEST_OPTIONS, EncryptedTestChoices } from '../core/testOptions';
import { bootstrapSpec, lattigoCostsFile, measureAndCacheLattigoCosts } from '../core/he/lattigoCosts';
import { FlagSpec, numberOpt, parseArgs } from './args';
import { renderReport } from './table';
import { renderLayerTest, renderModelTest } from './encryptedTable';
import { encryptedLayerTest } from '../core/he/layerTest';
import { Report } from '../core/report';
import { deployed } from '../core/deployed';
import { checkReport, sealReport } from '../core/reportCheck';
import { readUserFile, replaceFile } from '../core/files';

/** The analysis options' flags (one table in the core), then what only the terminal has. */
const flagOf = (o: OptionSpec): FlagSpec => ({
  name: o.flag,
  value: o.cli === 'value',
  help: o.help,
  default: o.defaultText,
});
const ANALYZE_FLAGS: FlagSpec[] = [
  ...ANALYZE_OPTIONS.map(flagOf),
  { name: 'out', value: true, help: 'folder for report.json, coefficients.json and model/ (the approximated model)' },
  { name: 'force', value: false, help: 'overwrite earlier he-approx outputs in --out' },
  { name: 'json', value: false, help: 'print the JSON report on stdout instead of tables' },
  { name: 'quiet', value: false, help: 'no progress on stderr' },
];

const flagLine = (f: FlagSpec) => {
  const head = `  --${f.name}${f.value ? ' <v>' : ''}`;
  return (head.length < 23 ? head.padEnd(24) : `${head}  `) + f.help + (f.default ? ` (default ${f.default})` : '');
};

function usage(): string {
  const lines = [
    'usage: he-approx analyze <model> --data <file> [options]',
    '       he-approx encrypted-test <model> --report <report.json> --data <file> [--samples N] [--latency | --throughput | --layer-only]',
    '       <model>: a TensorFlow.js model.json, an ONNX .onnx, a Keras .h5 or .keras file',
    '       he-approx costs [--ring-size N]   measure CKKS operation costs with node-seal and cache them',
    '       he-approx costs --engine lattigo [--bootstrap-levels L]   the same on the Lattigo engine, with bootstrapping',
    '       he-approx help | version',
    '',
    'Profiles the data reaching each activation, fits per-channel polynomials, picks degrees under',
    'the accuracy and level budgets, and measures the accuracy of the approximated model.',
    '',
    'options for analyze:',
    ...ANALYZE_FLAGS.map(flagLine),
    '',
    'options for encrypted-test:',
    ...ENC_FLAGS.map(flagLine),
  ];
  return lines.join('\n');
}

function progressPrinter(quiet: boolean): (f: number, msg: string) => void {
  if (quiet) return () => undefined;
  const tty = process.stderr.isTTY;
  let last = -1;
  return (f, msg) => {
    const pctv = Math.floor(100 * f);
    if (tty) process.stderr.write(`\r\x1b[K[${String(pctv).padStart(3)}%] ${msg}`);
    else if (pctv >= last + 10 || f >= 1) {
      process.stderr.write(`[${String(pctv).padStart(3)}%] ${msg}\n`);
      last = pctv;
    }
    if (tty && f >= 1) process.stderr.write('\n');
  };
}

const str = (v: string | true | undefined): string | null => (typeof v === 'string' ? v : null);

/** The options the flags set, parsed and range-checked by an option table. */
function optionsOf(table: readonly OptionSpec[], opts: Map<string, string | true>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of table) {
    const v = opts.get(o.flag);
    if (v === undefined) continue;
    if (o.cli === 'flag') out[o.key] = o.flagValue ?? true;
    else if (o.parse) out[o.key] = o.parse(v as string, o.flag);
    else if (o.check) out[o.key] = numberOpt(opts, o.flag, o.check, o.what ?? 'a valid value');
    else out[o.key] = v;
  }
  return out;
}

async function runAnalyze(argv: string[]): Promise<number> {
  const { positional, opts } = parseArgs(argv, ANALYZE_FLAGS);
  if (positional.length !== 1)
    throw new UserError(
      'OPTION_INVALID',
      `analyze takes one model path, got ${positional.length}`,
      'run he-approx analyze <model.json> --data <file>',
    );
  const data = opts.get('data');
  if (typeof data !== 'string')
    throw new UserError(
      'OPTION_INVALID',
      'no calibration data given',
      'pass --data <file> (.npy, MNIST idx, .csv or .json)',
    );
  const { inputMean, inputStd, ...flags } = optionsOf(ANALYZE_OPTIONS, opts) as Partial<AnalyzeOptions> & {
    inputMean?: number[];
    inputStd?: number[];
  };
  const out = opts.get('out');
  // Before the analysis: a bad --out must not cost the user the whole run.
  if (typeof out === 'string') checkOutputs(out, positional[0], opts.has('force'), (flags.finetuneEpochs ?? 0) > 0);
  const controller = new AbortController();
  const onSig = () => controller.abort();
  process.once('SIGINT', onSig);
  let finetuned: FinetunedModel | null = null;
  let loaded: LoadedModel | null = null;
  try {
    const report = await analyze({
      ...flags,
      model: positional[0],
      data,
      normalize: normalization(inputMean, inputStd),
      onFinetuned: (m) => {
        finetuned = m;
      },
      onModel: (m) => {
        loaded = m;
      },
      signal: controller.signal,
      onProgress: progressPrinter(opts.has('quiet') || opts.has('json')),
    });
    if (typeof out === 'string') {
      const files = writeOutputs(out, loaded ?? (await loadModel(positional[0])), report, opts.has('force'), finetuned);
      const rel = (f: string) => path.relative(process.cwd(), f);
      if (!opts.has('json'))
        process.stderr.write(
          `wrote ${rel(files.report)}, ${rel(files.coefficients)}, ${rel(files.model)}${report.finetune?.exported ? `, ${rel(path.join(path.dirname(files.report), report.finetune.exported))} (fine-tuned)` : ''}\n`,
        );
    }
    process.stdout.write(
      opts.has('json') ? JSON.stringify(sealReport(report), null, 2) + '\n' : renderReport(report) + '\n',
    );
    // A result that meets the budget only after fine-tuning meets it: the fine-tuned model is the one written.
    return deployed(report).meetsBudget ? 0 : 3;
  } finally {
    process.removeListener('SIGINT', onSig);
  }
}

/** The encrypted test's flags (the core's table), then what only the terminal has. */
const ENC_FLAGS: FlagSpec[] = [
  ...ENCRYPTED_TEST_OPTIONS.map(flagOf),
  { name: 'quiet', value: false, help: 'no progress on stderr' },
];

async function runEncryptedTest(argv: string[]): Promise<number> {
  const { positional, opts } = parseArgs(argv, ENC_FLAGS);
  if (positional.length !== 1)
    throw new UserError(
      'OPTION_INVALID',
      `encrypted-test takes one model path, got ${positional.length}`,
      'run he-approx encrypted-test <model.json> --report <report.json> --data <file>',
    );
  const o = optionsOf(ENCRYPTED_TEST_OPTIONS, opts) as EncryptedTestChoices & {
    report?: string;
    data?: string;
    labels?: string;
  };
  const reportPath = o.report;
  const data = o.data;
  if (!reportPath)
    throw new UserError(
      'OPTION_INVALID',
      'no analysis report given',
      'run he-approx analyze <model.json> --data <file> --out DIR, then pass --report DIR/report.json',
    );
  if (!data) throw new UserError('OPTION_INVALID', 'no data given', 'pass --data <file> to draw test samples from');
  const report = readReport(reportPath);
  const samples = o.samples ?? optionDefault<number>('samples', ENCRYPTED_TEST_OPTIONS);
  const { ringSize, workers, engine } = o;
  if (o.latency && o.throughput)
    throw new UserError(
      'OPTION_INVALID',
      '--latency and --throughput ask for two packings at once',
      'pass one of them (--throughput is the default)',
    );
  if (o.layerOnly && o.latency)
    throw new UserError(
      'OPTION_INVALID',
      '--latency applies to the whole-model test, not to --layer-only',
      'drop one of the two options',
    );
  if (!o.layerOnly) {
    const { encryptedModelTest } = await import('../core/he/modelTest');
    const res = await encryptedModelTest({
      model: positional[0],
      report,
      data,
      labels: o.labels ?? null,
      samples,
      ringSize,
      packing: o.latency ? 'latency' : 'throughput',
      workers,
      engine,
      onProgress: progressPrinter(opts.has('quiet')),
    });
    report.encrypted = { ...report.encrypted, model: res };
    rewriteReport(reportPath, report);
    process.stdout.write(renderModelTest(res) + `\nresults added to ${reportPath} (field "encrypted.model")\n`);
    return res.agreement >= 0.99 ? 0 : 3;
  }
  const res = await encryptedLayerTest({
    model: positional[0],
    report,
    data,
    labels: o.labels ?? null,
    samples,
    ringSize,
    onProgress: progressPrinter(opts.has('quiet')),
  });
  report.encrypted = { ...report.encrypted, layers: res };
  rewriteReport(reportPath, report);
  process.stdout.write(renderLayerTest(res, reportPath));
  return 0;
}

/**
 * Adds the encrypted test's results to the report file: written beside it and renamed over it, so
 * a crash or a kill mid-write leaves the old report whole, never half of a new one.
 */
function rewriteReport(file: string, report: Report): void {
  try {
    replaceFile(file, JSON.stringify(report, null, 2) + '\n');
  } catch (e) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `cannot add the results to ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      "make the report's folder writable, or copy the report somewhere you can write and pass that",
    );
  }
}

function readReport(file: string): Report {
  const fix = 'pass the report.json written by he-approx analyze --out DIR';
  const bytes = readUserFile(file, { what: 'report', code: 'REPORT_INVALID', fix });
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new UserError('REPORT_INVALID', `report ${file} is not JSON (${(e as Error).message})`, fix);
  }
  return checkReport(raw, file);
}

async function runCosts(argv: string[]): Promise<number> {
  const { opts } = parseArgs(argv, [
    { name: 'ring-size', value: true, help: '' },
    { name: 'engine', value: true, help: '' },
    { name: 'bootstrap-levels', value: true, help: '' },
  ]);
  const engine = str(opts.get('engine')) ?? 'seal';
  if (engine !== 'seal' && engine !== 'lattigo')
    throw new UserError(
      'OPTION_INVALID',
      `--engine ${engine} is not an engine he-approx has`,
      'pass --engine seal or --engine lattigo',
    );
  const ms = (x: number) => x.toFixed(x < 1 ? 3 : 2);
  const line = (c: OpCosts) =>
    `multiply+relinearize+rescale ${ms(c.mulRelinRescale)} ms, scalar multiply+rescale ${ms(c.mulScalar)} ms, add ${ms(c.add)} ms, rotate ${ms(c.rotate)} ms`;
  if (engine === 'lattigo') {
    if (opts.has('ring-size'))
      throw new UserError(
        'OPTION_INVALID',
        "--ring-size is SEAL's: Lattigo's 128-bit bootstrapping parameters are at N=65536",
        'leave out --ring-size, or pass --engine seal',
      );
    const levels =
      numberOpt(opts, 'bootstrap-levels', (x) => Number.isInteger(x) && x >= 2, 'an integer >= 2') ??
      DEFAULT_BOOTSTRAP_LEVELS;
    const spec = bootstrapSpec(levels);
    process.stderr.write(
      `measuring CKKS operations and bootstrapping on the Lattigo engine at N=65536, ${levels} levels between bootstraps (about 2 minutes and 13 GB: the bootstrapping keys)...\n`,
    );
    const c = await measureAndCacheLattigoCosts(spec, { onProgress: (m) => process.stderr.write(`  ${m}\n`) });
    process.stdout.write(
      `Lattigo, N=65536, ${levels} levels: ${line(c)}, bootstrap ${(c.bootstrap! / 1000).toFixed(2)} s\ncached in ${lattigoCostsFile(spec)}; he-approx analyze uses it for networks planned for bootstrapping every ${levels} levels\n`,
    );
    return 0;
  }
  if (opts.has('bootstrap-levels'))
    throw new UserError(
      'OPTION_INVALID',
      '--bootstrap-levels is for --engine lattigo (SEAL has no bootstrapping)',
      'pass --engine lattigo, or leave out --bootstrap-levels',
    );
  const n = numberOpt(opts, 'ring-size', (x) => [8192, 16384, 32768].includes(x), '8192, 16384 or 32768') ?? 32768;
  process.stderr.write(
    `measuring CKKS operations at N=${n} with node-seal (N=32768 takes about half a minute and 1.3 GB)...\n`,
  );
  const c = await measureAndCacheSealCosts(n);
  process.stdout.write(`N=${n}: ${line(c)}\ncached in ${costsCacheFile(n)}; he-approx analyze uses it from now on\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(usage() + '\n');
      return 0;
    }
    switch (cmd) {
      case 'analyze':
        return await runAnalyze(rest);
      case 'costs':
        return await runCosts(rest);
      case 'encrypted-test':
        return await runEncryptedTest(rest);
      case 'version':
      case '--version':
        process.stdout.write(`he-approx ${toolVersion()}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(usage() + '\n');
        return 0;
      default:
        throw new UserError('OPTION_INVALID', `unknown command '${cmd}'`, "run 'he-approx help'");
    }
  } catch (e) {
    if (isUserError(e)) {
      if (e.code === 'CANCELLED') {
        process.stderr.write('\nhe-approx: cancelled\n');
        return 130;
      }
      process.stderr.write(`he-approx: error: ${e.message}. Fix: ${e.fix}\n`);
      return 2;
    }
    process.stderr.write(
      `he-approx: internal error: ${(e as Error).message ?? e}. This is a bug; please report it with HE_APPROX_DEBUG=1 output.\n`,
    );
    if (process.env.HE_APPROX_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return 70;
  }
}
