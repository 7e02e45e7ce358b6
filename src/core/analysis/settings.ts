/**
 * The analysis's options: what a host passes (`AnalyzeOptions`, everything optional), and the
 * same with every default filled in and every value checked (`Settings`), before any long work
 * starts. Every default says where it comes from.
 */
import { UserError } from '../errors';
import type { InputNormalization, InputScale } from '../data/read';
import type { FitMethod } from '../fit/fit';
import { DEFAULT_BOOTSTRAP_LEVELS, FIT_METHODS, MAX_DEGREE, MIN_DEGREE, option, optionDefault } from '../options';
import type { OpCosts } from '../cost/cost';
import { RING_LEVELS } from '../he/params';
import type { Progress } from '../profile/profiler';
import type { FinetunedModel } from '../finetune/finetune';
import { Augmentation, augments, parseAugmentation } from '../finetune/augment';
import type { LoadedModel } from '../model/load';
import type { AnalyzeOptionsReport } from '../report';

export interface AnalyzeOptions {
  model: string;
  data: string;
  labels?: string | null;
  /** Held-out data from a separate file (then all of `data`, or `calib` of it, calibrates). */
  heldoutData?: string | null;
  heldoutLabels?: string | null;
  /** Accuracy budget in percentage points. */
  budget?: number;
  /**
   * Total levels available. Given: a hard limit. Not given: SEAL's chain at `ringSize`, and a
   * network that cannot fit it is planned for bootstrapping instead (see `bootstrapLevels`).
   */
  levelBudget?: number;
  /** Levels usable between two bootstraps, for the bootstrap count (default 9, Lattigo's at 128-bit security; see cost/bootstrap.ts). */
  bootstrapLevels?: number;
  /**
   * Plan for bootstrapping even where SEAL's chain would hold the network (the encrypted test then
   * runs on Lattigo, bootstrapping where the plan says; default false: only networks deeper than the chain).
   */
  bootstrap?: boolean;
  /** Answer with the most accurate choice of at most this many levels (analysis/choice.ts: withinTarget). */
  targetLevels?: number;
  /** Plan for bootstrapping; answer with the most accurate choice of at most this many bootstraps. */
  targetBootstraps?: number;
  /**
   * With targetLevels: exactly these degrees (activation name -> degree), a frontier point the
   * user picked in the editor's panel (the choice must be on the first-order frontier).
   */
  targetDegrees?: Record<string, number>;
  calib?: number;
  heldout?: number;
  seed?: number;
  scale?: InputScale;
  /** Per-channel normalisation after scaling (e.g. ImageNet's mean and std for the CIFAR ResNets). */
  normalize?: InputNormalization | null;
  degrees?: number[];
  /** Interval margin as a fraction of the observed range on each side (first activation). */
  margin?: number;
  /** Added to the margin per activation upstream on the longest path (see fitStage.ts). */
  marginGrowth?: number;
  /** Weight of the uniform floor in the data-guided fit. */
  floor?: number;
  batchSize?: number;
  reservoir?: number;
  /** Calibration samples used by the propagation-aware refit, the mean-shift correction and tuning. */
  refineSamples?: number;
  /** Calibration samples of the first-order sensitivity screen (see sensitivity.ts). */
  screenSamples?: number;
  ringSize?: number;
  /** Fitting method for the final model. */
  method?: FitMethod;
  /** Data-guided fits per channel (default) or one per layer. */
  perChannel?: boolean;
  /** Fold degree-1 and degree-2 polynomials into the linear layers (default true; see cost/fold.ts). */
  fold?: boolean;
  /**
   * Spend levels the smallest ring leaves unused on deeper series plans with fewer multiplications
   * (default false: the encrypted program's chain holds exactly the levels used, so a spent level
   * lengthens it and slows every operation; cost.ts: spendSpareLevels).
   */
  spareLevels?: boolean;
  /** Also try coefficient tuning as a refinement (default true; see fit/tune.ts). */
  tune?: boolean;
  /** Weight of the labels' cross-entropy in tuning's loss, 0..1 (default TUNE_DEFAULTS.labelWeight;
   * 0 tunes for agreement with the original model alone). Ignored without labels. */
  tuneLabelWeight?: number;
  /** Fine-tune weights and coefficients for this many epochs after the analysis (default 0: off; without labels it distils the original model's outputs). */
  finetuneEpochs?: number;
  /** Extra frontier points to measure (--frontier N). */
  frontier?: number;
  /** With finetuneEpochs: fine-tune every measured tier, the frontier with fine-tuning (--finetune-frontier). */
  finetuneFrontier?: boolean;
  /** With finetuneEpochs: flips and shifts of the training images, or their text as the flag takes it (finetune/augment.ts; default none). */
  finetuneAugment?: Augmentation | string;
  /** Called with the fine-tuned model when fine-tuning ran and was kept (for the exporter). */
  onFinetuned?: (m: FinetunedModel) => void;
  /** Called with the model as loaded (never changed by the analysis), so that an exporter need not read it again. */
  onModel?: (m: LoadedModel) => void;
  costs?: OpCosts;
  signal?: AbortSignal;
  onProgress?: Progress;
}

/** Levels SEAL offers at 128-bit security with 60-bit end primes and a 40-bit scale. */
export const SEAL_LEVELS: Record<number, number> = RING_LEVELS;

export const DEFAULT_DEGREES = optionDefault<number[]>('degrees');

/** A cost a user must hit: at most this many levels, or at most this many bootstraps (analysis/choice.ts). */
export interface Target {
  levels?: number;
  bootstraps?: number;
  /** Exactly these degrees (a picked frontier point). */
  degrees?: Record<string, number>;
}

/** The options as the report records them, plus what the analysis needs besides. */
export interface Settings extends Omit<AnalyzeOptionsReport, 'inputScale' | 'inputNormalization' | 'tuneLabelWeight'> {
  /** True when the level budget was given: then it is never exceeded, even to plan bootstraps. */
  levelBudgetGiven: boolean;
  seed: number;
  /** The labels' weight in tuning's loss (the report's `tuneLabelWeight` is 0 when there are no labels). */
  labelWeight: number;
  finetuneEpochs: number;
  finetuneFrontier: boolean;
  finetuneAugment: Augmentation;
  frontier: number;
  /** --target-levels / --target-bootstraps, if given (one at most). */
  target: Target | null;
}

/** A count given as a positive integer (the option table's range for `key`). */
const positiveInt = (
  o: AnalyzeOptions,
  key: 'batchSize' | 'calib' | 'heldout' | 'screenSamples',
  name: string,
): void => {
  const v = o[key];
  if (v !== undefined && !option(key).check!(v))
    throw new UserError(
      'OPTION_INVALID',
      `${name} must be a positive integer, got ${v}`,
      `pass --${option(key).flag} N with N >= 1`,
    );
};
export { DEFAULT_BOOTSTRAP_LEVELS };

/** The accuracy budget, the ring and the levels: SEAL's chain, a hard level budget, or bootstrapping. */
function chainSettings(o: AnalyzeOptions): { budget: number; ringSize: number; bootstrapLevels: number } {
  const budget = o.budget ?? optionDefault<number>('budget');
  if (!option('budget').check!(budget))
    throw new UserError(
      'OPTION_INVALID',
      `accuracy budget must be positive, got ${o.budget}`,
      'pass --budget in percentage points, e.g. 1.0',
    );
  const ringSize = o.ringSize ?? optionDefault<number>('ringSize');
  if (RING_LEVELS[ringSize] === undefined)
    throw new UserError(
      'OPTION_INVALID',
      `ring size ${ringSize} is not supported`,
      'pass --ring-size 8192, 16384 or 32768',
    );
  if (o.levelBudget !== undefined && !option('levelBudget').check!(o.levelBudget)) {
    throw new UserError(
      'OPTION_INVALID',
      `level budget must be a positive integer, got ${o.levelBudget}`,
      'pass --level-budget N, or leave it out for what SEAL offers at --ring-size',
    );
  }
  // Lattigo's 128-bit bootstrapping parameters at N=2^16 (N16QP1546H192H32) leave 9 levels of
  // 40 bits: a tenth takes the bootstrapping circuit's log2(QP) past 1550 (engines/lattigo/params.go).
  const bootstrapLevels = o.bootstrapLevels ?? DEFAULT_BOOTSTRAP_LEVELS;
  if (o.bootstrap && o.levelBudget !== undefined) {
    throw new UserError(
      'OPTION_INVALID',
      'a level budget is a hard limit and bootstrapping has none',
      'pass either --bootstrap or --level-budget, not both',
    );
  }
  if (!option('bootstrapLevels').check!(bootstrapLevels)) {
    throw new UserError(
      'OPTION_INVALID',
      `levels between bootstraps must be an integer >= 2, got ${o.bootstrapLevels}`,
      'pass --bootstrap-levels N (e.g. 9, Lattigo at N=2^16 and 128-bit security)',
    );
  }
  return { budget, ringSize, bootstrapLevels };
}

/** The candidate degrees and the fits' intervals (margins) and floor. */
function fitSettings(o: AnalyzeOptions): { degrees: number[]; margin: number; marginGrowth: number; floor: number } {
  const degrees = [...new Set(o.degrees ?? DEFAULT_DEGREES)].sort((a, b) => a - b);
  if (!degrees.length || degrees.some((d) => !Number.isInteger(d) || d < MIN_DEGREE || d > MAX_DEGREE)) {
    throw new UserError(
      'OPTION_INVALID',
      `degrees must be integers in 1..63, got ${degrees.join(',')}`,
      'pass --degrees like 3,5,7,15',
    );
  }
  // The floor's default is bench/fitQuality's best on the bundled examples. The margins come from
  // the CIFAR-10 ResNets, where narrower ones let held-out values escape an interval and blow up
  // (fitStage.ts); on the MNIST CNN they cost no degree (README, "Values that stay bounded").
  const margin = o.margin ?? optionDefault<number>('margin');
  const marginGrowth = o.marginGrowth ?? optionDefault<number>('marginGrowth');
  if (!option('margin').check!(margin))
    throw new UserError(
      'OPTION_INVALID',
      `margin must be in [0, 1], got ${o.margin}`,
      'pass --margin as a fraction of the observed range, e.g. 0.02',
    );
  if (!option('marginGrowth').check!(marginGrowth))
    throw new UserError(
      'OPTION_INVALID',
      `margin growth must be in [0, 1], got ${o.marginGrowth}`,
      'pass --margin-growth as a fraction of the observed range per activation, e.g. 0.01',
    );
  const floor = o.floor ?? optionDefault<number>('floor');
  if (!option('floor').check!(floor))
    throw new UserError(
      'OPTION_INVALID',
      `floor must be in [0, 1), got ${o.floor}`,
      'pass --floor as a small weight, e.g. 0.001',
    );
  return { degrees, margin, marginGrowth, floor };
}

/** --target-levels / --target-bootstraps: at most one, in range, and within a level budget the user gave. */
function targetSettings(o: AnalyzeOptions): Target | null {
  for (const key of ['targetLevels', 'targetBootstraps'] as const) {
    const v = o[key];
    if (v !== undefined && !option(key).check!(v))
      throw new UserError(
        'OPTION_INVALID',
        `--${option(key).flag} must be ${option(key).what}, got ${v}`,
        `pass --${option(key).flag} N with N >= 1, or leave it out`,
      );
  }
  if (o.targetLevels !== undefined && o.targetBootstraps !== undefined)
    throw new UserError(
      'OPTION_INVALID',
      '--target-levels and --target-bootstraps were both given',
      'pass one of them: a level count for SEAL, a bootstrap count for a library with bootstrapping',
    );
  if (o.targetLevels !== undefined && o.levelBudget !== undefined && o.targetLevels > o.levelBudget)
    throw new UserError(
      'OPTION_INVALID',
      `--target-levels ${o.targetLevels} is more than --level-budget ${o.levelBudget}`,
      'lower --target-levels to the budget, or raise --level-budget',
    );
  if (o.targetBootstraps !== undefined && o.levelBudget !== undefined)
    throw new UserError(
      'OPTION_INVALID',
      '--target-bootstraps plans for bootstrapping, and --level-budget is a hard limit on the levels',
      'leave out --level-budget (or pass --target-levels instead)',
    );
  if (o.targetDegrees !== undefined) {
    const ok = Object.values(o.targetDegrees).every((d) => Number.isInteger(d) && d >= MIN_DEGREE && d <= MAX_DEGREE);
    if (o.targetLevels === undefined || !ok)
      throw new UserError(
        'OPTION_INVALID',
        'a picked frontier point needs its levels and whole degrees',
        'pick the point again from the panel, or analyse without it',
      );
    return { levels: o.targetLevels, degrees: o.targetDegrees };
  }
  if (o.targetLevels !== undefined) return { levels: o.targetLevels };
  if (o.targetBootstraps !== undefined) return { bootstraps: o.targetBootstraps };
  return null;
}

/** Every option's default and range, checked before anything is loaded. */
export function resolveSettings(o: AnalyzeOptions): Settings {
  const { budget, ringSize, bootstrapLevels } = chainSettings(o);
  const { degrees, margin, marginGrowth, floor } = fitSettings(o);
  positiveInt(o, 'batchSize', 'batch size');
  positiveInt(o, 'calib', 'calibration samples');
  positiveInt(o, 'heldout', 'held-out samples');
  positiveInt(o, 'screenSamples', 'screen samples');
  const finetuneEpochs = o.finetuneEpochs ?? optionDefault<number>('finetuneEpochs');
  if (!option('finetuneEpochs').check!(finetuneEpochs)) {
    throw new UserError(
      'OPTION_INVALID',
      `fine-tuning epochs must be an integer in 0..1000, got ${o.finetuneEpochs}`,
      'pass --finetune-epochs N with N between 1 and 1000, or leave it out',
    );
  }
  if (o.finetuneFrontier && finetuneEpochs === 0)
    throw new UserError(
      'OPTION_INVALID',
      '--finetune-frontier fine-tunes every tier, and no fine-tuning epochs were given',
      'pass --finetune-epochs N with it, or leave out --finetune-frontier',
    );
  const augment = o.finetuneAugment ?? optionDefault<string>('finetuneAugment');
  const finetuneAugment = typeof augment === 'string' ? parseAugmentation(augment, 'finetune-augment') : augment;
  if (augments(finetuneAugment) && finetuneEpochs === 0)
    throw new UserError(
      'OPTION_INVALID',
      '--finetune-augment changes the images fine-tuning trains on, and no fine-tuning epochs were given',
      'pass --finetune-epochs N with it, or leave out --finetune-augment',
    );
  const frontier = o.frontier ?? optionDefault<number>('frontier');
  if (!option('frontier').check!(frontier))
    throw new UserError(
      'OPTION_INVALID',
      `frontier points must be an integer in 0..32, got ${o.frontier}`,
      'pass --frontier N with N between 1 and 32, or leave it out',
    );
  const labelWeight = o.tuneLabelWeight ?? optionDefault<number>('tuneLabelWeight');
  if (!option('tuneLabelWeight').check!(labelWeight))
    throw new UserError(
      'OPTION_INVALID',
      `tuning label weight must be in [0, 1], got ${labelWeight}`,
      'pass --tune-labels between 0 (match the original model only) and 1 (labels only)',
    );
  if (typeof o.scale === 'number' && !(o.scale > 0 && Number.isFinite(o.scale))) {
    throw new UserError(
      'OPTION_INVALID',
      `input scale must be 'auto', 'none' or a positive number, got ${o.scale}`,
      'pass --input-scale auto, none or a positive divisor (setting heApprox.inputScale)',
    );
  }
  const method = o.method ?? optionDefault<FitMethod>('method');
  if (!(FIT_METHODS as readonly string[]).includes(method))
    throw new UserError('OPTION_INVALID', `unknown fit method ${method}`, 'pass --method data, uniform or minimax');
  return {
    budget,
    ringSize,
    levelBudget: o.levelBudget ?? RING_LEVELS[ringSize],
    levelBudgetGiven: o.levelBudget !== undefined,
    bootstrapLevels,
    bootstrap: o.bootstrap ?? optionDefault<boolean>('bootstrap'),
    degrees,
    margin,
    marginGrowth,
    floor,
    batchSize: o.batchSize ?? optionDefault<number>('batchSize'),
    reservoir: o.reservoir ?? 16384,
    refineSamples: o.refineSamples ?? 2048,
    // The screen's default resolves a predicted drop to about 0.1 pp; its cost is about three
    // forward passes over its samples (sensitivity.ts).
    screenSamples: o.screenSamples ?? optionDefault<number>('screenSamples'),
    seed: o.seed ?? optionDefault<number>('seed'),
    method,
    perChannel: o.perChannel ?? optionDefault<boolean>('perChannel'),
    tune: o.tune ?? optionDefault<boolean>('tune'),
    fold: o.fold ?? optionDefault<boolean>('fold'),
    spareLevels: o.spareLevels ?? optionDefault<boolean>('spareLevels'),
    labelWeight,
    finetuneEpochs,
    finetuneFrontier: o.finetuneFrontier ?? optionDefault<boolean>('finetuneFrontier'),
    finetuneAugment,
    frontier,
    target: targetSettings(o),
  };
}

/** The settings as the report records them. */
export function reportOptions(
  s: Settings,
  prep: { scale?: InputScale; normalize?: InputNormalization | null },
  labels: boolean,
): AnalyzeOptionsReport {
  return {
    inputScale: prep.scale ?? 'auto',
    inputNormalization: prep.normalize ?? null,
    budget: s.budget,
    levelBudget: s.levelBudget,
    degrees: s.degrees,
    margin: s.margin,
    marginGrowth: s.marginGrowth,
    floor: s.floor,
    batchSize: s.batchSize,
    reservoir: s.reservoir,
    refineSamples: s.refineSamples,
    screenSamples: s.screenSamples,
    bootstrapLevels: s.bootstrapLevels,
    bootstrap: s.bootstrap,
    ringSize: s.ringSize,
    method: s.method,
    perChannel: s.perChannel,
    tune: s.tune,
    fold: s.fold,
    spareLevels: s.spareLevels,
    tuneLabelWeight: s.tune && labels ? s.labelWeight : 0,
    ...(s.target ? { target: s.target } : {}),
  };
}
