/**
 * The extension's `heApprox.*` settings as the core's analysis options: the same options the CLI
 * builds from its flags (src/cli/main.ts), read in one place without VS Code so that a test can
 * hold them against package.json's declared settings and defaults.
 */
import type { AnalyzeOptions } from '../core/analysis/settings';
import type { InputScale } from '../core/data/read';

/** A setting's value, or `fallback` when unset (vscode.WorkspaceConfiguration.get's contract). */
export type SettingReader = <T>(key: string, fallback: T) => T;

/** The `heApprox.*` settings that are not analysis options (data paths are passed in resolved). */
export const NON_ANALYSIS_SETTINGS = ['calibrationData', 'calibrationLabels', 'autoAnalyze'] as const;
/** Prefixes of settings for other jobs than the analysis. */
export const NON_ANALYSIS_PREFIXES = ['encryptedTest.'] as const;

type HostOptions = Required<
  Pick<
    AnalyzeOptions,
    | 'model'
    | 'data'
    | 'budget'
    | 'scale'
    | 'method'
    | 'perChannel'
    | 'fold'
    | 'spareLevels'
    | 'tune'
    | 'tuneLabelWeight'
    | 'ringSize'
    | 'bootstrap'
  >
> &
  Pick<AnalyzeOptions, 'labels' | 'normalize' | 'levelBudget' | 'bootstrapLevels' | 'calib' | 'heldout'>;

export function analyzeOptionsFrom(
  get: SettingReader,
  model: string,
  data: string,
  labels: string | null,
): HostOptions {
  // 0 (the declared default of counts and the level budget) means "the core's default".
  const positive = (k: string, fallback = 0) => {
    const v = get<number>(k, fallback);
    return v && v > 0 ? v : undefined;
  };
  const scale = get<string>('inputScale', 'auto');
  const mean = get<number[]>('inputMean', []);
  const std = get<number[]>('inputStd', []);
  return {
    model,
    data,
    labels,
    scale: (scale === 'auto' || scale === 'none' ? scale : Number(scale)) as InputScale,
    normalize: mean.length || std.length ? { mean: mean.length ? mean : [0], std: std.length ? std : [1] } : null,
    budget: get<number>('accuracyBudget', 1.0),
    levelBudget: positive('levelBudget'),
    bootstrapLevels: positive('bootstrapLevels', 9),
    bootstrap: get<boolean>('bootstrap', false),
    calib: positive('calibrationSamples'),
    heldout: positive('heldoutSamples'),
    method: get<'data' | 'uniform' | 'minimax'>('fitMethod', 'data'),
    perChannel: get<boolean>('perChannel', true),
    fold: get<boolean>('fold', true),
    spareLevels: get<boolean>('spareLevels', false),
    tune: get<boolean>('tuneCoefficients', true),
    tuneLabelWeight: get<number>('tuneLabelWeight', 0.5),
    ringSize: get<number>('ringSize', 32768),
  };
}
