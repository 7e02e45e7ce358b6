// Packages the VS Code extension as platform-specific VSIX files, each with the Lattigo engine built
// for its platform inside (the way editor extensions with a native core ship it: users need no Go).
//   node scripts/package.mjs          this machine's platform: out/he-approx.vsix
//   node scripts/package.mjs --all    every target of scripts/build-engine.mjs: out/he-approx-<target>.vsix
// Needs Go (the engine is cross-compiled with it); without Go it stops and says so.
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';

const ALL = ['linux-x64', 'linux-arm64', 'darwin-x64', 'darwin-arm64', 'win32-x64'];
const here = `${process.platform}-${process.arch}`;
const all = process.argv.includes('--all');
const targets = all ? ALL : [here];
if (!ALL.includes(here) && !all)
  console.warn(`he-approx: ${here} is not among the engine targets (${ALL.join(', ')}); packaging anyway`);

const go = spawnSync('go', ['version'], { encoding: 'utf8' });
if (go.error || go.status !== 0) {
  console.error(
    'he-approx: packaging ships the Lattigo engine and so needs Go 1.22 or later (go was not found). Install Go, then run this again.',
  );
  process.exit(1);
}
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit', shell: process.platform === 'win32' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
run(process.execPath, ['scripts/build-engine.mjs', ...targets.flatMap((t) => ['--target', t])]);
for (const t of targets) {
  const file = join('out', all ? `he-approx-${t}.vsix` : 'he-approx.vsix');
  run(process.execPath, ['scripts/bundle.mjs', '--engine', t]);
  run(process.execPath, [
    join('node_modules', '@vscode', 'vsce', 'vsce'),
    'package',
    '--no-dependencies',
    '--target',
    t,
    '--out',
    file,
  ]);
  console.log(`he-approx: ${file} (${t}, ${(statSync(file).size / 1e6).toFixed(1)} MB)`);
}
