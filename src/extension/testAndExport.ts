/**
 * The palette's Run Encrypted Test and Export Approximated Model: what they ask, the job they run
 * in the worker, and what they tell the user when it is done.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import type { WrittenFiles } from '../core/export/export';
import type { EncryptedLayerReport } from '../core/he/layerTest';
import type { EncryptedModelReport } from '../core/he/modelTest';
import { optionDefault } from '../core/options';
import { ENCRYPTED_TEST_OPTIONS } from '../core/testOptions';
import type { ResultCache } from './cache';
import type { ModelState } from './editorViews';
import type { JobRunner } from './jobs';
import { encryptedTestChoicesFrom } from './settings';

/** What the commands need from the extension host. */
export interface CommandHost {
  jobs: JobRunner;
  cache: ResultCache;
  config(): vscode.WorkspaceConfiguration;
  analyze(uri: vscode.Uri, data: string, labels: string | null): Promise<void>;
  refreshPanel(): void;
}

/**
 * Run Encrypted Test on a model's results: stale results are offered a new analysis first (then
 * `again` runs the command anew); the mode, samples, packing, ring and engine come from the
 * heApprox.encryptedTest.* settings (the option table), the mode asked when set to 'ask'.
 */
export async function runEncryptedTest(
  host: CommandHost,
  s: ModelState | null,
  again: () => Promise<void>,
): Promise<void> {
  if (!s) {
    void vscode.window.showWarningMessage(
      'HE Approx: analyse a model first (HE Approx: Analyze Model); the encrypted test runs the polynomials the analysis chose.',
    );
    return;
  }
  if (s.stale) {
    const a = await vscode.window.showWarningMessage(
      'HE Approx: the results are stale (the model, data or settings changed). Analyse again first?',
      'Analyze',
      'Test Anyway',
    );
    if (a === 'Analyze') {
      await host.analyze(s.uri, s.data, s.labels);
      return again();
    }
    if (!a) return;
  }
  const choices = encryptedTestChoicesFrom((k, fallback) => host.config().get(k, fallback));
  let mode = choices.layerOnly === undefined ? 'ask' : choices.layerOnly ? 'layer' : 'model';
  if (mode === 'ask') {
    const pick = await vscode.window.showQuickPick(
      [
        {
          label: 'Whole model',
          description: 'encrypt inputs, run every layer under CKKS, decrypt, compare predictions',
          mode: 'model',
        },
        {
          label: 'Each activation alone',
          description: "encrypt that layer's recorded inputs, evaluate its polynomial, compare (faster)",
          mode: 'layer',
        },
      ],
      {
        title: `HE Approx: Run Encrypted Test (CKKS on ${s.report.bootstrapping?.planned ? 'Lattigo, with bootstrapping' : 'Microsoft SEAL'})`,
      },
    );
    if (!pick) return;
    mode = pick.mode;
  }
  const { ringSize, engine } = choices;
  const samples = choices.samples ?? optionDefault<number>('samples', ENCRYPTED_TEST_OPTIONS);
  const packing = choices.latency ? 'latency' : 'throughput';
  try {
    const res = await host.jobs.run<EncryptedModelReport | EncryptedLayerReport>(
      `encrypted test (${mode === 'model' ? 'whole model' : 'each activation'})`,
      {
        kind: 'encrypted',
        mode: mode === 'model' ? 'model' : 'layer',
        options: {
          model: s.uri.fsPath,
          report: s.report,
          data: s.data,
          labels: s.labels,
          samples,
          ringSize,
          packing,
          engine,
        },
      },
      s.files,
    );
    if (!res) return;
    s.report = {
      ...s.report,
      encrypted: { ...s.report.encrypted, ...(res.mode === 'model' ? { model: res } : { layers: res }) },
    };
    host.cache.put(s.key, s.report);
    host.refreshPanel();
    if (res.mode === 'model') {
      const lib = res.engine === 'lattigo' ? 'Lattigo' : 'SEAL';
      const boots = res.bootstrapping
        ? `; ${res.bootstrapping.executed} of ${res.bootstrapping.planned} planned bootstraps executed`
        : '';
      const security = res.security && res.security !== '128-bit' ? ` (${res.security})` : '';
      void vscode.window.showInformationMessage(
        `HE Approx: encrypted test on ${lib}${security}: ${res.samples.length} images, ${(100 * res.agreement).toFixed(0)}% agree with the plaintext approximated model; max logit error ${res.maxAbsErrLogits.toExponential(1)}; ${res.levelsUsed} of ${res.params.levels} levels at N=${res.params.ringSize}${boots}; ${res.amortisedSecondsPerSample.toFixed(2)} s per image.`,
      );
    } else {
      const worst = Math.min(...res.layers.map((l) => l.precisionBits));
      void vscode.window.showInformationMessage(
        `HE Approx: encrypted test of ${res.layers.length} activations: at least ${worst.toFixed(1)} bits of precision against the plaintext polynomials.`,
      );
    }
  } catch {
    /* reported by runJob */
  }
}

/**
 * Export Approximated Model: a folder named in an input box (the target usually does not exist
 * yet), never the model's own; existing he-approx outputs are overwritten only when confirmed.
 */
export async function exportModel(host: CommandHost, s: ModelState | null): Promise<void> {
  if (!s) {
    void vscode.window.showWarningMessage(
      'HE Approx: analyse a model first; the export writes the approximated model the analysis chose.',
    );
    return;
  }
  const modelDir = path.dirname(s.uri.fsPath);
  const root = vscode.workspace.getWorkspaceFolder(s.uri)?.uri.fsPath ?? path.dirname(modelDir);
  const suggested = path.join(path.dirname(modelDir), `${path.basename(modelDir)}-he-approx`);
  // A folder name rather than an open dialog: the target usually does not exist yet, and open
  // dialogs only accept existing folders.
  const input = await vscode.window.showInputBox({
    title: 'HE Approx: Export Approximated Model',
    prompt:
      'Folder for model/ (the approximated model), coefficients.json and report.json; relative to the workspace folder, or absolute',
    value: path.relative(root, suggested) || suggested,
    validateInput: (v) =>
      !v.trim()
        ? 'name a folder'
        : path.resolve(root, v.trim()) === modelDir
          ? "not the input model's own folder: choose another"
          : null,
  });
  if (!input) return;
  const dir = path.resolve(root, input.trim());
  let force = false;
  if (fs.existsSync(path.join(dir, 'report.json')) || fs.existsSync(path.join(dir, 'model', 'model.json'))) {
    const a = await vscode.window.showWarningMessage(
      `HE Approx: ${vscode.workspace.asRelativePath(dir)} already holds he-approx outputs. Overwrite report.json, coefficients.json and model/?`,
      { modal: true },
      'Overwrite',
    );
    if (a !== 'Overwrite') return;
    force = true;
  }
  try {
    const files = await host.jobs.run<WrittenFiles>('exporting the approximated model', {
      kind: 'export',
      dir,
      model: s.uri.fsPath,
      report: s.report,
      force,
      finetunedFile: host.cache.finetunedFile(s.key),
    });
    if (files) {
      const tuned = files.finetuned ? `, ${vscode.workspace.asRelativePath(files.finetuned.model)} (fine-tuned)` : '';
      const a = await vscode.window.showInformationMessage(
        `HE Approx: wrote ${vscode.workspace.asRelativePath(files.model)}${tuned}, coefficients.json and report.json.`,
        'Open Coefficients',
      );
      if (a) await vscode.window.showTextDocument(vscode.Uri.file(path.join(dir, 'coefficients.json')));
    }
  } catch {
    /* reported by runJob */
  }
}
