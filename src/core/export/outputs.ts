/**
 * Where the analysis's outputs go under --out, checked before anything is written: never into
 * the input model's folder (where links lead), never through a link, never over a file unless
 * --force, and only where the user can write. Files are then opened with O_NOFOLLOW (writeOut).
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { isWithin, realPathOf } from '../files';
import { modelFilePath, modelFormatOf } from '../model/load';

export interface WrittenFiles {
  report: string;
  coefficients: string;
  /** The approximated model: model/model.json (tfjs, from tfjs and Keras models) or model.onnx (from ONNX models). */
  model: string;
  /** Its weight file (tfjs only). */
  weights: string | null;
  /** With --finetune-epochs: the fine-tuned approximated model (same format as `model`) and its coefficients. */
  finetuned: { model: string; weights: string | null; coefficients: string } | null;
}

/** The files writeOutputs writes under the absolute folder `abs`. */
function outputFiles(abs: string, onnx: boolean, finetune: boolean): WrittenFiles {
  const ft = path.join(abs, 'finetuned');
  return {
    report: path.join(abs, 'report.json'),
    coefficients: path.join(abs, 'coefficients.json'),
    model: onnx ? path.join(abs, 'model.onnx') : path.join(abs, 'model', 'model.json'),
    weights: onnx ? null : path.join(abs, 'model', 'weights.bin'),
    finetuned: !finetune
      ? null
      : onnx
        ? { model: path.join(ft, 'model.onnx'), weights: null, coefficients: path.join(ft, 'coefficients.json') }
        : {
            model: path.join(ft, 'model.json'),
            weights: path.join(ft, 'weights.bin'),
            coefficients: path.join(ft, 'coefficients.json'),
          },
  };
}

/** One output path: never a link; a folder where he-approx makes one; an existing file only with --force. */
function checkOutFile(f: string, folder: boolean, force: boolean): void {
  let st: fs.Stats | null = null;
  try {
    st = fs.lstatSync(f);
  } catch {
    /* not there yet */
  }
  if (st?.isSymbolicLink()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `${f} is a symbolic link; he-approx does not write through links`,
      'remove the link, or choose another --out folder',
    );
  }
  if (st && folder && !st.isDirectory()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `${f} is a file, where he-approx makes a folder`,
      'choose another --out folder',
    );
  }
  if (!st || folder) return;
  if (!force)
    throw new UserError(
      'OUTPUT_EXISTS',
      `${f} already exists`,
      'choose another --out folder, or pass --force to overwrite he-approx outputs',
    );
  if (!st.isFile())
    throw new UserError(
      'OUTPUT_EXISTS',
      `${f} is ${st.isDirectory() ? 'a folder' : 'not a regular file'}, where he-approx writes a file`,
      'choose another --out folder',
    );
}

/** The nearest existing folder on the way to --out is a folder the user can write to. */
function checkWritable(dir: string, abs: string): void {
  let existing = abs;
  while (!fs.existsSync(existing)) existing = path.dirname(existing);
  if (!fs.statSync(existing).isDirectory()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir}: ${existing} is a file, not a folder`,
      'choose a --out path whose parent folders are folders',
    );
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK);
  } catch {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir}: ${existing} is not writable`,
      'choose a --out folder you can write to',
    );
  }
}

/**
 * The files `writeOutputs` would write under `dir` for this model, after checking that it may:
 * `dir` is not a file, none of them lands in the input model's folder, none exists unless
 * `force`, and the nearest existing folder on the way is writable. Hosts call it before the
 * analysis starts, so that a bad --out fails in a second, not after minutes of work.
 */
export function checkOutputs(dir: string, modelArg: string, force: boolean, finetune = false): WrittenFiles {
  const abs = path.resolve(dir);
  const modelPath = modelFilePath(modelArg);
  const onnx = modelFormatOf(modelPath) === 'onnx';
  const files = outputFiles(abs, onnx, finetune);
  // Checked where the links lead: --out may be a link, but not to the model's folder or into it.
  const real = realPathOf(abs);
  const modelDir = realPathOf(path.dirname(modelPath));
  if (isWithin(modelDir, real)) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is ${real === modelDir ? "the input model's folder" : "inside the input model's folder"}${real !== abs ? ` (it leads to ${real})` : ''}; he-approx never writes there`,
      "choose an --out folder outside the model's folder",
    );
  }
  let outStat: fs.Stats | null = null;
  try {
    outStat = fs.lstatSync(abs);
  } catch {
    /* created below */
  }
  if (outStat?.isSymbolicLink() && !fs.existsSync(abs)) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is a symbolic link to ${fs.readlinkSync(abs)}, which does not exist`,
      'remove the link, or choose another --out folder',
    );
  }
  if (fs.existsSync(abs) && !fs.statSync(abs).isDirectory()) {
    throw new UserError(
      'OUTPUT_EXISTS',
      `--out ${dir} is ${fs.statSync(abs).isFile() ? 'a file' : 'a special file'}, not a folder`,
      'choose a folder name for --out',
    );
  }
  // Inside --out nothing is written through a link (a planted report.json -> ~/.bashrc).
  const folders = [path.dirname(files.model), ...(files.finetuned ? [path.dirname(files.finetuned.model)] : [])].filter(
    (f) => f !== abs,
  );
  for (const f of [
    ...folders,
    files.report,
    files.coefficients,
    files.model,
    files.weights,
    ...Object.values(files.finetuned ?? {}),
  ]) {
    if (f) checkOutFile(f, folders.includes(f), force);
  }
  checkWritable(dir, abs);
  return files;
}

/** Writes a file under --out without following a link planted at its name after the checks. */
export function writeOut(file: string, data: string | Uint8Array): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (fs.constants.O_NOFOLLOW ?? 0),
    0o644,
  );
  try {
    fs.writeFileSync(fd, data);
  } finally {
    fs.closeSync(fd);
  }
}
