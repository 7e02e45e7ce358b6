/**
 * Analysis results cached by content: the key hashes the model.json, its weight shards, the data
 * and labels files and the options, so that editing any of them makes the cached report stale and
 * an unchanged workspace reopens with its results at once. vscode-free (tested on plain Node).
 * Writes go to a temporary file renamed into place, so a cancelled or crashed run never leaves a
 * half-written result behind.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { isUserError } from '../core/errors';
import { MODEL_FILE, fileProblem, readUserFile, replaceFile, resolveInside } from '../core/files';
import { Report, jsonContentSha256 } from '../core/report';
import { checkReport, sealReport } from '../core/reportCheck';

/** model.json plus the weight shards its manifest names (those that exist). */
export function modelFiles(modelPath: string): string[] {
  const out = [modelPath];
  try {
    const json = JSON.parse(readUserFile(modelPath, MODEL_FILE).toString('utf8')) as {
      weightsManifest?: { paths?: string[] }[];
    };
    for (const g of json.weightsManifest ?? [])
      for (const p of g.paths ?? []) {
        // A shard outside the model's folder is never read (the analysis refuses it and says why).
        const f = resolveInside(modelPath, p, 'the weight shard');
        if (fileProblem(f) === null) out.push(f);
      }
  } catch {
    // A corrupt model.json is keyed by its bytes alone; the analysis reports the problem.
  }
  return out;
}

export function analysisKey(files: (string | null | undefined)[], options: unknown): string {
  const h = crypto.createHash('sha256');
  for (const f of files) {
    h.update(f ? `file:${path.basename(f)}:` : 'none:');
    // Only regular files: reading a FIFO planted in a workspace would block the extension host.
    if (f && fileProblem(f) === null) {
      let bytes: Buffer;
      try {
        bytes = readUserFile(f, { what: 'file', code: 'DATA_UNREADABLE', fix: '' });
      } catch {
        h.update('unreadable\0');
        continue;
      }
      // JSON (model.json) by content, so that reformatting it keeps the cached results.
      h.update((f.endsWith('.json') && jsonContentSha256(bytes.toString('utf8'))) || bytes);
    }
    h.update('\0');
  }
  h.update(JSON.stringify(options));
  return h.digest('hex');
}

/**
 * The analysis engine's identity: the SHA-256 of the worker script that runs it (the bundled
 * core). Part of the cache key, so that results computed by another build of he-approx (whose
 * fits, tuning or defaults may differ; the package version does not say) are not reused.
 */
export function engineId(workerScript: string): string {
  try {
    return crypto.createHash('sha256').update(fs.readFileSync(workerScript)).digest('hex');
  } catch {
    return 'unknown';
  }
}

export class ResultCache {
  constructor(private readonly dir: string) {}

  private file(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }

  /**
   * The cached report, or null: missing, or failing the checks every report read back gets
   * (core/reportCheck.ts), in which case `onRejected` hears why and the analysis runs again.
   */
  get(key: string, onRejected?: (why: string) => void): Report | null {
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(this.file(key), 'utf8'));
    } catch {
      return null;
    }
    try {
      return checkReport(raw, 'the cached result');
    } catch (e) {
      if (!isUserError(e)) throw e;
      onRejected?.(e.message);
      return null;
    }
  }

  /** Where the worker keeps the fine-tuned model of the analysis under `key` (finetunedStore.ts). */
  finetunedFile(key: string): string {
    return path.join(this.dir, `${key}.finetuned.bin`);
  }

  put(key: string, report: Report): void {
    fs.mkdirSync(this.dir, { recursive: true });
    replaceFile(this.file(key), JSON.stringify(sealReport(report)));
  }

  clear(): void {
    if (!fs.existsSync(this.dir)) return;
    for (const f of fs.readdirSync(this.dir))
      if (f.endsWith('.json') || f.endsWith('.tmp') || f.endsWith('.bin'))
        fs.rmSync(path.join(this.dir, f), { force: true });
  }
}
