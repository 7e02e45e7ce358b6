/**
 * The extension's `heApprox.*` settings as the core's analysis options: the option table
 * (src/core/options.ts) maps each setting to its option, so the editor offers the options the CLI
 * offers, with one default; read here without VS Code so that a test can hold the table against
 * package.json's declared settings and defaults. Messages from the core name options by their
 * CLI flags; renderForEditor names the settings instead.
 */
import type { AnalyzeOptions } from '../core/analysis/settings';
import { ANALYZE_OPTIONS, OptionSpec, normalization } from '../core/options';
import { ENCRYPTED_TEST_OPTIONS, EncryptedTestChoices } from '../core/testOptions';

/** A setting's value, or `fallback` when unset (vscode.WorkspaceConfiguration.get's contract). */
export type SettingReader = <T>(key: string, fallback: T) => T;

/** The `heApprox.*` settings that are not analysis options (data paths are passed in resolved). */
export const NON_ANALYSIS_SETTINGS = ['calibrationData', 'calibrationLabels', 'autoAnalyze'] as const;
/** Prefixes of settings for other jobs than the analysis (the encrypted test's: ENCRYPTED_TEST_OPTIONS). */
export const NON_ANALYSIS_PREFIXES = ['encryptedTest.'] as const;

/** The options a table's settings give (paths apart: the host resolves them). */
function fromSettings(table: readonly OptionSpec[], get: SettingReader): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const o of table) {
    if (!o.setting || o.path) continue;
    const v = get<unknown>(o.setting.name, o.setting.default);
    out[o.key] = o.setting.toOption ? o.setting.toOption(v) : v;
  }
  return out;
}

/** The encrypted test's options the editor's heApprox.encryptedTest.* settings give (layerOnly undefined: ask). */
export function encryptedTestChoicesFrom(get: SettingReader): EncryptedTestChoices {
  return fromSettings(ENCRYPTED_TEST_OPTIONS, get) as EncryptedTestChoices;
}

/** The analysis options the editor's settings give, for `model` and the data the host resolved. */
export function analyzeOptionsFrom(
  get: SettingReader,
  model: string,
  data: string,
  labels: string | null,
): AnalyzeOptions {
  const { inputMean, inputStd, ...rest } = fromSettings(ANALYZE_OPTIONS, get) as {
    inputMean?: number[];
    inputStd?: number[];
  };
  return { ...rest, model, data, labels, normalize: normalization(inputMean, inputStd) };
}

/** A frontier point the user picked in the panel: its levels and degrees (activation name -> degree). */
export interface PickedPoint {
  levels: number;
  degrees: Record<string, number>;
}

/**
 * The options with a picked point, if any: that cost and exactly those degrees (the core's
 * target), in place of the settings' targets.
 */
export function withPick(o: AnalyzeOptions, p: PickedPoint | undefined): AnalyzeOptions {
  if (!p) return o;
  return { ...o, targetLevels: p.levels, targetBootstraps: undefined, targetDegrees: p.degrees };
}

/**
 * A core message in the editor's words: "pass --budget ..." becomes "set heApprox.accuracyBudget
 * ...", a switch "pass --no-tune" becomes "set heApprox.tuneCoefficients to false", and any other
 * mention of a flag its setting's name. Flags the editor has no setting for stay as they are.
 * (A switch whose setting is not boolean, such as --latency, reads "set heApprox.encryptedTest.packing
 * to true": rare in messages, and still names the setting.)
 */
export function renderForEditor(text: string): string {
  let t = text;
  // A flag both tables have (--ring-size) is the analysis's setting: the encrypted test's picks its ring itself.
  const analysisFlags = new Set(ANALYZE_OPTIONS.map((o) => o.flag));
  const options = [...ANALYZE_OPTIONS, ...ENCRYPTED_TEST_OPTIONS.filter((o) => !analysisFlags.has(o.flag))];
  for (const o of options) {
    if (!o.setting || o.path) continue;
    const name = `heApprox.${o.setting.name}`;
    const flag = `--${o.flag}(?![\\w-])`;
    const set = o.cli === 'flag' ? `set ${name} to ${o.flagValue ?? true}` : `set ${name}`;
    const bare = o.cli === 'flag' ? `${name} = ${o.flagValue ?? true}` : name;
    t = t.replace(new RegExp(`\\bpass ${flag}`, 'g'), set).replace(new RegExp(flag, 'g'), bare);
  }
  return t;
}
