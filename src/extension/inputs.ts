/**
 * Which model and which calibration data a command works on: the argument, the active editor or
 * tab, the only model in the workspace, or a pick; data from the settings, from files beside the
 * model, or a dialog, remembered in the workspace settings (for the session in an untrusted
 * workspace, where VS Code ignores them).
 */
import * as path from 'path';
import * as vscode from 'vscode';
import { findDataNear } from './dataFiles';
import { ModelState, isModelDocument } from './editorViews';

/** Every model file he-approx opens (core/model/load.ts modelFormatOf). */
export const MODEL_GLOB = '**/{model.json,*.onnx,*.h5,*.hdf5,*.keras}';
export const EXCLUDE = '**/node_modules/**';

export class InputPicker {
  /**
   * Data picked in an untrusted workspace: VS Code ignores the workspace's heApprox.calibrationData
   * there (package.json restrictedConfigurations), so the choice is kept for the session instead.
   */
  private sessionData: { data: string; labels: string | null } | null = null;

  constructor(
    private readonly log: vscode.LogOutputChannel,
    /** Whether a model has results (a text tab of such a file names the model). */
    private readonly hasResults: (uri: vscode.Uri) => boolean,
  ) {}

  private config() {
    return vscode.workspace.getConfiguration('heApprox');
  }

  resolvePath(p: string): string {
    if (!p) return p;
    if (path.isAbsolute(p)) return p;
    const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? process.cwd();
    return path.join(root, p);
  }

  /** The model to work on: the argument, the active editor's model.json, the only one, or a pick. */
  async pickModel(uri?: vscode.Uri): Promise<vscode.Uri | null> {
    if (uri instanceof vscode.Uri) return uri;
    const active = vscode.window.activeTextEditor?.document;
    if (active && isModelDocument(active)) return active.uri;
    // The active tab still names the model when focus is elsewhere (a panel, the quick input), and
    // it is the only way to see a binary model's view.
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    if (tab instanceof vscode.TabInputCustom && tab.viewType === 'heApprox.modelView') return tab.uri;
    if (
      tab instanceof vscode.TabInputText &&
      tab.uri.scheme === 'file' &&
      (path.basename(tab.uri.fsPath) === 'model.json' || this.hasResults(tab.uri))
    )
      return tab.uri;
    const found = await vscode.workspace.findFiles(MODEL_GLOB, EXCLUDE, 200);
    if (found.length === 0) {
      void vscode.window.showErrorMessage(
        'HE Approx: no model in this workspace. Open a folder that contains a TensorFlow.js model.json (with its weight files), an .onnx, .h5 or .keras file, then run Analyze Model again.',
      );
      return null;
    }
    if (found.length === 1) return found[0];
    const pick = await vscode.window.showQuickPick(
      found.map((u) => ({ label: vscode.workspace.asRelativePath(u), uri: u })),
      { title: 'HE Approx: which model?' },
    );
    return pick?.uri ?? null;
  }

  /** Calibration data from the settings, else offered from files beside the model, else picked. */
  async pickData(model: vscode.Uri): Promise<{ data: string; labels: string | null } | null> {
    const chosen = this.settingsData() ?? this.sessionData;
    if (chosen) return chosen;
    const root = vscode.workspace.getWorkspaceFolder(model)?.uri.fsPath ?? null;
    const near = findDataNear(model.fsPath, root);
    const items: (vscode.MessageItem & { data?: string; labels?: string | null })[] = near.slice(0, 2).map((d) => ({
      title: `Use ${vscode.workspace.asRelativePath(d.data)}`,
      data: d.data,
      labels: d.labels,
    }));
    items.push({ title: 'Pick a File…' });
    const choice = await vscode.window.showWarningMessage(
      'HE Approx: no calibration data configured (setting heApprox.calibrationData). Analysis needs inputs that reach the model: .npy, MNIST idx, .csv or .json.',
      ...items,
    );
    if (!choice) return null;
    if (choice.data) {
      await this.saveDataSetting(choice.data, choice.labels ?? null);
      return { data: choice.data, labels: choice.labels ?? null };
    }
    return this.selectData(model);
  }

  private async saveDataSetting(data: string, labels: string | null): Promise<void> {
    if (!vscode.workspace.isTrusted) {
      this.sessionData = { data, labels };
      this.log.info(
        'untrusted workspace: the calibration data chosen is kept for this session, not written to the workspace settings (which VS Code ignores here)',
      );
      return;
    }
    const rel = (p: string) => {
      const root = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
      return root && p.startsWith(root + path.sep) ? path.relative(root, p) : p;
    };
    const target = vscode.workspace.workspaceFolders
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
    try {
      await this.config().update('calibrationData', rel(data), target);
      await this.config().update('calibrationLabels', labels ? rel(labels) : '', target);
    } catch (e) {
      // The analysis can still run with the chosen files; only remembering them failed.
      this.log.error(`could not save the calibration data setting: ${(e as Error).message}`);
      void vscode.window.showWarningMessage(
        `HE Approx: could not save heApprox.calibrationData (${(e as Error).message}). Set it in the workspace settings by hand to keep the choice.`,
      );
    }
  }

  /**
   * The dialogs open in a folder, never on a file: without a defaultUri VS Code's own dialog starts
   * on the active editor's file, here the model.json, which Enter would then accept as data (.json
   * is a data format). Both start in the model's folder. (Starting the labels dialog in the data's
   * folder made code-server's dialog ignore Enter on a typed path in that folder in the e2e test.)
   */
  async selectData(model?: vscode.Uri): Promise<{ data: string; labels: string | null } | null> {
    const filters = { 'Calibration data': ['npy', 'csv', 'json', 'idx3-ubyte', 'ubyte'], 'All files': ['*'] };
    const active = vscode.window.activeTextEditor?.document.uri;
    const near = model ?? (active?.scheme === 'file' ? active : undefined);
    const start = near ? vscode.Uri.joinPath(near, '..') : vscode.workspace.workspaceFolders?.[0]?.uri;
    const picked = await vscode.window.showOpenDialog({
      title: 'HE Approx: calibration data',
      canSelectMany: false,
      filters,
      openLabel: 'Use as calibration data',
      defaultUri: start,
    });
    if (!picked?.length) return null;
    const labels = await vscode.window.showOpenDialog({
      title: 'HE Approx: labels for this data (Cancel for none: accuracy then means agreement with the original model)',
      canSelectMany: false,
      filters,
      openLabel: 'Use as labels',
      defaultUri: start,
    });
    const l = labels?.[0]?.fsPath ?? null;
    await this.saveDataSetting(picked[0].fsPath, l);
    return { data: picked[0].fsPath, labels: l };
  }

  /** The data an analysis of `s`'s model would use now: the settings' if set, else what it used. */
  dataFor(s: ModelState): { data: string; labels: string | null } {
    return this.settingsData() ?? { data: s.data, labels: s.labels };
  }

  /** heApprox.calibrationData and calibrationLabels as absolute paths, or null when no data is set. */
  settingsData(): { data: string; labels: string | null } | null {
    const c = this.config();
    const data = c.get<string>('calibrationData', '');
    if (!data) return null;
    const labels = c.get<string>('calibrationLabels', '');
    return { data: this.resolvePath(data), labels: labels ? this.resolvePath(labels) : null };
  }
}
