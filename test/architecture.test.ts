/** The architecture rules of ARCHITECTURE.md, enforced. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { ROOT } from './helpers';

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

test('src/core imports neither vscode nor the hosts', () => {
  for (const f of files(path.join(ROOT, 'src', 'core'))) {
    const text = fs.readFileSync(f, 'utf8');
    assert.doesNotMatch(text, /from ['"]vscode['"]|require\(['"]vscode['"]\)/, `${f} imports vscode`);
    assert.doesNotMatch(text, /from ['"]\.\.\/(\.\.\/)*(cli|extension)\//, `${f} imports a host`);
  }
});

test('the core never prints: progress and warnings go through callbacks and the report', () => {
  for (const f of files(path.join(ROOT, 'src', 'core'))) {
    assert.doesNotMatch(fs.readFileSync(f, 'utf8'), /console\.(log|warn|error)|process\.(stdout|stderr)\.write/, `${f} prints`);
  }
});

test('the extension\'s mapping modules are vscode-free (tested on plain Node)', () => {
  for (const f of ['layerRanges.ts', 'reportView.ts', 'messages.ts', 'analysisWorker.ts']) {
    assert.doesNotMatch(fs.readFileSync(path.join(ROOT, 'src', 'extension', f), 'utf8'), /from ['"]vscode['"]|require\(['"]vscode['"]\)/, f);
  }
});
