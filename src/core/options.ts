/**
 * The analysis's options, each defined once: its field of AnalyzeOptions, its CLI flag, its editor
 * setting (heApprox.*), its type and parser, its default, its range and the help text. The CLI
 * builds its flags, help and parsing from this table (src/cli/main.ts), the extension its
 * settings (src/extension/settings.ts; a test holds package.json's declared settings and
 * defaults to it), and resolveSettings its defaults and ranges (analysis/settings.ts).
 *
 * Error messages name an option by its flag (`--budget`); the editor renders a flag as its
 * setting (src/extension/settings.ts: renderForEditor), so one message serves both hosts.
 *
 * Adding an option: one entry here, its use where the analysis reads it (ARCHITECTURE.md, "Adding
 * an option").
 */
import { UserError } from './errors';
import type { InputNormalization, InputScale } from './data/read';
import { parseAugmentation } from './finetune/augment';

/** An editor setting's declared value where it differs in form from the option (0 for "the core's default"). */
export interface SettingSpec {
  /** heApprox.<name> */
  name: string;
  /** package.json's declared default. */
  default: unknown;
  /** The option's value from the setting's (default: the value itself). */
  toOption?: (v: unknown) => unknown;
}

export interface OptionSpec {
  /** The AnalyzeOptions field it sets ('inputMean' and 'inputStd' together set `normalize`). */
  key: string;
  /** CLI flag, without the dashes. */
  flag: string;
  /** 'flag': a CLI switch setting the option to `flagValue`; 'value': a flag taking a value. */
  cli: 'flag' | 'value';
  flagValue?: boolean;
  /** Parses the flag's value (throws a UserError naming the flag); numbers by `check`/`what`. */
  parse?: (raw: string, flag: string) => unknown;
  /** Valid values (numbers): the range, said in words by `what`. */
  check?: (x: number) => boolean;
  what?: string;
  /** The core's default, or undefined where the analysis computes it (`defaultText` says how). */
  default?: unknown;
  defaultText?: string;
  help: string;
  /** The editor's setting, if the editor offers the option. */
  setting?: SettingSpec;
  /** A path the host resolves (data files): not read from settings by the generic mapping. */
  path?: boolean;
}

export const isPosInt = (x: number) => Number.isInteger(x) && x > 0;
/** Settings declare 0 for "the analysis's own default" of a count or a budget. */
export const zeroIsDefault = (v: unknown) => (typeof v === 'number' && v > 0 ? v : undefined);

function numberList(raw: string, flag: string): number[] {
  const xs = raw.split(',').map((t) => Number(t.trim()));
  if (xs.some((x) => !Number.isFinite(x)))
    throw new UserError(
      'OPTION_INVALID',
      `--${flag} ${raw} is not a comma-separated list of numbers`,
      `pass e.g. --${flag} 0.485,0.456,0.406`,
    );
  return xs;
}

/** 'auto', 'none' or a positive divisor (the CLI's flag and the editor's string setting alike). */
export function parseInputScale(raw: string, flag = 'input-scale'): InputScale {
  if (raw === 'auto' || raw === 'none') return raw;
  const n = Number(raw);
  if (!(Number.isFinite(n) && n > 0))
    throw new UserError(
      'OPTION_INVALID',
      `--${flag} ${raw} is not a positive divisor, auto or none`,
      `pass --${flag} as a positive divisor, auto or none`,
    );
  return n;
}

export const MIN_DEGREE = 1;
export const MAX_DEGREE = 63;
export const FIT_METHODS = ['data', 'uniform', 'minimax'] as const;
export const RING_SIZES = [8192, 16384, 32768] as const;
/** Levels between bootstraps with Lattigo's 128-bit bootstrapping parameters at N=2^16 (engines/lattigo/params.go). */
export const DEFAULT_BOOTSTRAP_LEVELS = 9;

/** The analysis options, in the order `he-approx help` lists them. */
export const ANALYZE_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'data',
    flag: 'data',
    cli: 'value',
    path: true,
    help: 'calibration data: .npy, MNIST idx, .csv or .json (required)',
    setting: { name: 'calibrationData', default: '' },
  },
  {
    key: 'labels',
    flag: 'labels',
    cli: 'value',
    path: true,
    help: 'labels for the data (optional; without them accuracy = agreement with the original model)',
    setting: { name: 'calibrationLabels', default: '' },
  },
  {
    key: 'heldoutData',
    flag: 'heldout-data',
    cli: 'value',
    path: true,
    help: 'held-out data from a separate file (default: split off --data)',
  },
  { key: 'heldoutLabels', flag: 'heldout-labels', cli: 'value', path: true, help: 'labels for --heldout-data' },
  {
    key: 'budget',
    flag: 'budget',
    cli: 'value',
    check: (x) => x > 0 && Number.isFinite(x),
    what: 'a positive number of percentage points',
    default: 1.0,
    defaultText: '1.0',
    help: 'accuracy budget in percentage points',
    setting: { name: 'accuracyBudget', default: 1 },
  },
  {
    key: 'levelBudget',
    flag: 'level-budget',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    defaultText: "SEAL's chain at --ring-size; a deeper network is planned for bootstrapping",
    help: 'total CKKS levels available, a hard limit',
    setting: { name: 'levelBudget', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'bootstrapLevels',
    flag: 'bootstrap-levels',
    cli: 'value',
    check: (x) => Number.isInteger(x) && x >= 2,
    what: 'an integer >= 2',
    default: DEFAULT_BOOTSTRAP_LEVELS,
    defaultText: "9 (Lattigo's 128-bit bootstrapping parameters at N=2^16)",
    help: 'levels usable between bootstraps, for the bootstrap count',
    setting: { name: 'bootstrapLevels', default: 9, toOption: zeroIsDefault },
  },
  {
    key: 'bootstrap',
    flag: 'bootstrap',
    cli: 'flag',
    flagValue: true,
    default: false,
    help: "plan for bootstrapping even where SEAL's chain holds the network (encrypted-test then runs it on Lattigo)",
    setting: { name: 'bootstrap', default: false },
  },
  {
    key: 'targetLevels',
    flag: 'target-levels',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    defaultText: 'none (the cheapest choice that meets the budget)',
    help: 'answer with the most accurate choice of at most N levels, whatever its drop (a parameter set you must hit)',
    setting: { name: 'targetLevels', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'targetBootstraps',
    flag: 'target-bootstraps',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    defaultText: 'none (the cheapest choice that meets the budget)',
    help: 'plan for bootstrapping and answer with the most accurate choice of at most N bootstraps, whatever its drop',
    setting: { name: 'targetBootstraps', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'ringSize',
    flag: 'ring-size',
    cli: 'value',
    check: (x) => (RING_SIZES as readonly number[]).includes(x),
    what: '8192, 16384 or 32768',
    default: 32768,
    defaultText: '32768',
    help: 'CKKS ring size N (8192, 16384, 32768)',
    setting: { name: 'ringSize', default: 32768 },
  },
  {
    key: 'calib',
    flag: 'calib',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    defaultText: 'min(5000, half the data)',
    help: 'calibration samples',
    setting: { name: 'calibrationSamples', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'heldout',
    flag: 'heldout',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    defaultText: 'min(5000, the rest)',
    help: 'held-out samples',
    setting: { name: 'heldoutSamples', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'seed',
    flag: 'seed',
    cli: 'value',
    check: (x) => Number.isInteger(x) && x >= 0,
    what: 'a non-negative integer',
    default: 1,
    defaultText: '1',
    help: 'seed for the split and the samples',
  },
  {
    key: 'scale',
    flag: 'input-scale',
    cli: 'value',
    parse: parseInputScale,
    default: 'auto',
    defaultText: 'auto',
    help: "'auto' (uint8 / 255), 'none', or a divisor",
    setting: {
      name: 'inputScale',
      default: 'auto',
      // Never throws: settings are read at activation (the cache key); a bad value reaches
      // resolveSettings as NaN and is refused there, in the analysis, as one message.
      toOption: (v) => (v === 'auto' || v === 'none' ? v : Number(v)),
    },
  },
  {
    key: 'inputMean',
    flag: 'input-mean',
    cli: 'value',
    parse: numberList,
    help: 'per-channel mean subtracted after scaling, comma-separated (e.g. 0.485,0.456,0.406)',
    setting: { name: 'inputMean', default: [] },
  },
  {
    key: 'inputStd',
    flag: 'input-std',
    cli: 'value',
    parse: numberList,
    help: 'per-channel std divided by after the mean (e.g. 0.229,0.224,0.225)',
    setting: { name: 'inputStd', default: [] },
  },
  {
    key: 'degrees',
    flag: 'degrees',
    cli: 'value',
    parse: (raw, flag) => {
      const ds = raw.split(',').map((s) => Number(s.trim()));
      if (ds.some((d) => !Number.isInteger(d) || d < MIN_DEGREE || d > MAX_DEGREE))
        throw new UserError(
          'OPTION_INVALID',
          `--${flag} ${raw} must list integers in ${MIN_DEGREE}..${MAX_DEGREE}`,
          `pass e.g. --${flag} 3,5,7,15`,
        );
      return ds;
    },
    default: [1, 2, 3, 5, 7, 11, 15, 23, 31, 47, 63],
    defaultText: '1,2,3,5,7,11,15,23,31,47,63',
    help: `candidate degrees, comma-separated, ${MIN_DEGREE}..${MAX_DEGREE}`,
  },
  {
    key: 'method',
    flag: 'method',
    cli: 'value',
    parse: (raw, flag) => {
      if (!(FIT_METHODS as readonly string[]).includes(raw))
        throw new UserError('OPTION_INVALID', `--${flag} ${raw} is unknown`, `pass --${flag} data, uniform or minimax`);
      return raw;
    },
    default: 'data',
    defaultText: 'data',
    help: 'fit for the final model: data, uniform or minimax',
    setting: { name: 'fitMethod', default: 'data' },
  },
  {
    key: 'perChannel',
    flag: 'per-layer',
    cli: 'flag',
    flagValue: false,
    default: true,
    help: 'one data-guided polynomial per layer instead of one per channel',
    setting: { name: 'perChannel', default: true },
  },
  {
    key: 'fold',
    flag: 'no-fold',
    cli: 'flag',
    flagValue: false,
    default: true,
    help: 'do not fold degree-1 and degree-2 polynomials into the linear layers (every degree a Chebyshev series, as libraries without those forms evaluate it; more levels)',
    setting: { name: 'fold', default: true },
  },
  {
    key: 'spareLevels',
    flag: 'spare-levels',
    cli: 'flag',
    flagValue: true,
    default: false,
    help: 'spend levels the smallest ring leaves unused on deeper polynomial plans with fewer multiplications (a longer modulus chain makes every operation slower: off by default)',
    setting: { name: 'spareLevels', default: false },
  },
  {
    key: 'tune',
    flag: 'no-tune',
    cli: 'flag',
    flagValue: false,
    default: true,
    help: 'skip coefficient tuning (distillation from the original model, plus the labels when given) among the refinements',
    setting: { name: 'tuneCoefficients', default: true },
  },
  {
    key: 'tuneLabelWeight',
    flag: 'tune-labels',
    cli: 'value',
    check: (x) => x >= 0 && x <= 1,
    what: 'a weight in [0, 1]',
    default: 0.5,
    defaultText: '0.5',
    help: "weight of the labels in tuning's loss, 0..1 (0: match the original model only)",
    setting: { name: 'tuneLabelWeight', default: 0.5 },
  },
  {
    key: 'margin',
    flag: 'margin',
    cli: 'value',
    check: (x) => x >= 0 && x <= 1,
    what: 'a fraction in [0, 1]',
    default: 0.15,
    defaultText: '0.15',
    help: 'interval margin, fraction of the observed range per side',
  },
  {
    key: 'marginGrowth',
    flag: 'margin-growth',
    cli: 'value',
    check: (x) => x >= 0 && x <= 1,
    what: 'a fraction in [0, 1]',
    default: 0.02,
    defaultText: '0.02',
    help: 'added to the margin per activation upstream (deep networks drift further)',
  },
  {
    key: 'screenSamples',
    flag: 'screen-samples',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    default: 1024,
    defaultText: '1024',
    help: 'calibration samples of the first-order sensitivity screen',
  },
  {
    key: 'floor',
    flag: 'floor',
    cli: 'value',
    check: (x) => x >= 0 && x < 1,
    what: 'a weight in [0, 1)',
    default: 0.001,
    defaultText: '0.001',
    help: 'weight of the uniform floor in the data-guided fit',
  },
  {
    key: 'batchSize',
    flag: 'batch-size',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    default: 256,
    defaultText: '256',
    help: 'samples per batch',
  },
  {
    key: 'frontier',
    flag: 'frontier',
    cli: 'value',
    // Each point is a pass over the held-out samples: bounded, like the epochs below.
    check: (x) => Number.isInteger(x) && x >= 0 && x <= 32,
    what: 'an integer in 0..32',
    default: 0,
    defaultText: "0 (the search's own rounds only)",
    help: "measure N more choices, spread over the levels from the cheapest to the uniform baseline's, for the accuracy-cost frontier",
    setting: { name: 'frontierPoints', default: 0 },
  },
  {
    key: 'finetuneEpochs',
    flag: 'finetune-epochs',
    cli: 'value',
    // A bound, so that a typo cannot start a run of days.
    check: (x) => Number.isInteger(x) && x >= 0 && x <= 1000,
    what: 'an integer in 0..1000',
    default: 0,
    defaultText: '0 (off)',
    help: "fine-tune weights and coefficients on the calibration data for N epochs (on its labels; without --labels on the original model's outputs), first from the best choices of up to two cheaper rings or bootstrap counts than the analysis's (kept if one meets the budget), else from its result; --out then also writes finetuned/",
    setting: { name: 'finetuneEpochs', default: 0 },
  },
  {
    key: 'finetuneAugment',
    flag: 'finetune-augment',
    cli: 'value',
    parse: parseAugmentation,
    // A string from the editor's setting (parsed by resolveSettings, which refuses a bad one).
    default: 'none',
    defaultText: 'none',
    help: "with --finetune-epochs: flip and shift the training images, drawn anew each epoch (flip: mirrored left-right; shift: moved up to an eighth of the side, shift=N: up to N pixels; comma-separated). For images whose class a mirror or a shift keeps, such as CIFAR's; not for digits or text",
    setting: { name: 'finetuneAugment', default: 'none' },
  },
  {
    key: 'finetuneFrontier',
    flag: 'finetune-frontier',
    cli: 'flag',
    flagValue: true,
    default: false,
    help: 'with --finetune-epochs: fine-tune the best choice of every ring and bootstrap count the analysis measured (more with --frontier N), not only up to two cheaper ones: the frontier with fine-tuning, one fine-tuning per point',
  },
];

const BY_KEY = new Map(ANALYZE_OPTIONS.map((o) => [o.key, o]));

/** The table's entry for an option (of the analysis, unless another table is given). */
export function option(key: OptionSpec['key'], table?: readonly OptionSpec[]): OptionSpec {
  const o = table ? table.find((x) => x.key === key) : BY_KEY.get(key);
  if (!o) throw new Error(`no option ${key}`);
  return o;
}

/** An option's default as the core applies it. */
export function optionDefault<T>(key: OptionSpec['key'], table?: readonly OptionSpec[]): T {
  return option(key, table).default as T;
}

/** --input-mean / --input-std (or their settings): both or neither set the normalisation; a missing half is neutral. */
export function normalization(mean: number[] | undefined, std: number[] | undefined): InputNormalization | null {
  const m = mean?.length ? mean : undefined;
  const s = std?.length ? std : undefined;
  if (!m && !s) return null;
  return { mean: m ?? [0], std: s ?? [1] };
}
