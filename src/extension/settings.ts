/**
 * The extension's `heApprox.*` settings as the core's analysis options: the option table
 * (src/core/options.ts) maps each setting to its option, so the editor offers the options the CLI
 * offers, with one default; read here without VS Code so that a test can hold the table against
 * package.json's declared settings and defaults. Messages from the core name options by their
 * CLI flags; renderForEditor names the settings instead.
 */
import type { AnalyzeOptions } from '../core/analysis/settings';
import { ANALYZE_OPTIONS, normalization } from '../core/options';

/** A setting's value, or `fallback` when unset (vscode.WorkspaceConfiguration.get's contract). */
export type SettingReader = <T>(key: string, fallback: T) => T;

/** The `heApprox.*` settings that are not analysis options (data paths are passed in resolved). */
export const NON_ANALYSIS_SETTINGS = ['calibrationData', 'calibrationLabels', 'autoAnalyze'] as const;
/** Prefixes of settings for other jobs than the analysis. */
export const NON_ANALYSIS_PREFIXES = ['encryptedTest.'] as const;

/** The analysis options the editor's settings give, for `model` and the data the host resolved. */
export function analyzeOptionsFrom(
  get: SettingReader,
  model: string,
  data: string,
  labels: string | null,
): AnalyzeOptions {
  const out: Record<string, unknown> = {};
  for (const o of ANALYZE_OPTIONS) {
    if (!o.setting || o.path) continue;
    const v = get<unknown>(o.setting.name, o.setting.default);
    out[o.key] = o.setting.toOption ? o.setting.toOption(v) : v;
  }
  const { inputMean, inputStd, ...rest } = out as { inputMean?: number[]; inputStd?: number[] };
  return { ...rest, model, data, labels, normalize: normalization(inputMean, inputStd) };
}

/**
 * A core message in the editor's words: "pass --budget ..." becomes "set heApprox.accuracyBudget
 * ...", a switch "pass --no-tune" becomes "set heApprox.tuneCoefficients to false", and any other
 * mention of a flag its setting's name. Flags the editor has no setting for stay as they are.
 */
export function renderForEditor(text: string): string {
  let t = text;
  for (const o of ANALYZE_OPTIONS) {
    if (!o.setting || o.path) continue;
    const name = `heApprox.${o.setting.name}`;
    const flag = `--${o.flag}(?![\\w-])`;
    const set = o.cli === 'flag' ? `set ${name} to ${o.flagValue ?? true}` : `set ${name}`;
    const bare = o.cli === 'flag' ? `${name} = ${o.flagValue ?? true}` : name;
    t = t.replace(new RegExp(`\\bpass ${flag}`, 'g'), set).replace(new RegExp(flag, 'g'), bare);
  }
  return t;
}
