/**
 * Finds calibration data that comes with a model (beside it, or in a `data/` folder next to it or
 * at the workspace root), so that a user who has not configured any is offered it (issue 4).
 * vscode-free (tested on plain Node).
 */
import * as fs from 'fs';
import * as path from 'path';

export interface DataCandidate {
  data: string;
  labels: string | null;
}

const DATA = /(idx3-ubyte|\.npy|\.csv)$/i;
const LABELS = /(idx1-ubyte|\.npy|\.csv)$/i;

/** The labels file that pairs with a data file: 'images' -> 'labels', idx3 -> idx1. */
function labelsFor(file: string, siblings: Set<string>): string | null {
  const base = path.basename(file);
  const guesses = [
    base.replace(/images/i, 'labels').replace(/idx3/i, 'idx1'),
    base.replace(/(\.\w+)$/, '-labels$1'),
    base.replace(/(\.\w+)$/, '_labels$1'),
  ];
  for (const g of guesses) if (g !== base && siblings.has(g) && LABELS.test(g)) return path.join(path.dirname(file), g);
  return null;
}

export function findDataNear(modelPath: string, workspaceRoot: string | null): DataCandidate[] {
  const dir = path.dirname(modelPath);
  const dirs = [dir, path.join(dir, 'data'), path.join(path.dirname(dir), 'data')];
  if (workspaceRoot) dirs.push(path.join(workspaceRoot, 'data'));
  const out: DataCandidate[] = [];
  const seen = new Set<string>();
  for (const d of dirs) {
    let names: string[];
    try {
      names = fs.readdirSync(d).sort();
    } catch {
      continue;
    }
    const set = new Set(names);
    for (const n of names) {
      const f = path.join(d, n);
      if (seen.has(f) || !DATA.test(n) || /label/i.test(n)) continue;
      seen.add(f);
      out.push({ data: f, labels: labelsFor(f, set) });
    }
  }
  return out;
}
