// Builds the Lattigo engine (engines/lattigo, Go) into engines/lattigo/bin/<platform>-<arch>/.
// Run by `npm ci` (prepare), `npm run build` and `npm run package`. Without Go it says what is
// missing and succeeds: everything but encrypted runs with bootstrapping works without the engine.
// With --optional (npm ci, npm run build) a failed build is reported the same way and does not
// stop the install; without it (npm run build:engine, the test suite, packaging) it fails.
//   node scripts/build-engine.mjs                 this machine's platform
//   node scripts/build-engine.mjs --target T ...  VS Code targets (linux-x64, linux-arm64, darwin-x64, darwin-arm64, win32-x64)
//   node scripts/build-engine.mjs --all           every target above (Go cross-compiles without other toolchains)
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const TARGETS = {
  'linux-x64': ['linux', 'amd64'],
  'linux-arm64': ['linux', 'arm64'],
  'darwin-x64': ['darwin', 'amd64'],
  'darwin-arm64': ['darwin', 'arm64'],
  'win32-x64': ['windows', 'amd64'],
};
const args = process.argv.slice(2);
const optional = args.includes('--optional');
const here = `${process.platform}-${process.arch}`;
let targets = args.includes('--all')
  ? Object.keys(TARGETS)
  : args.flatMap((a, i) => (args[i - 1] === '--target' ? [a] : []));
if (!targets.length) targets = [here];
for (const t of targets)
  if (!TARGETS[t]) {
    console.error(`he-approx: unknown engine target ${t} (known: ${Object.keys(TARGETS).join(', ')})`);
    process.exit(2);
  }

const go = spawnSync('go', ['version'], { encoding: 'utf8' });
if (go.error || go.status !== 0) {
  console.log(
    'he-approx: Go was not found, so the Lattigo engine (encrypted runs with bootstrapping) is not built; ' +
      'everything else works. To build it: install Go 1.22 or later and run npm run build.',
  );
  process.exit(0);
}
const dir = join('engines', 'lattigo');
for (const t of targets) {
  const [goos, goarch] = TARGETS[t];
  const out = join(dir, 'bin', t, goos === 'windows' ? 'he-approx-lattigo.exe' : 'he-approx-lattigo');
  mkdirSync(join(dir, 'bin', t), { recursive: true });
  const t0 = Date.now();
  // -mod=readonly: the module versions of go.mod and the checksums of go.sum, nothing else.
  const r = spawnSync(
    'go',
    [
      'build',
      '-mod=readonly',
      '-trimpath',
      '-ldflags=-s -w',
      '-o',
      join('bin', t, goos === 'windows' ? 'he-approx-lattigo.exe' : 'he-approx-lattigo'),
      '.',
    ],
    { cwd: dir, stdio: 'inherit', env: { ...process.env, GOOS: goos, GOARCH: goarch, CGO_ENABLED: '0' } },
  );
  if (r.status !== 0) {
    console.error(
      `he-approx: building the Lattigo engine for ${t} failed (see above). Fix: check that Go is 1.22 or later and that the Go module proxy is reachable, then run npm run build:engine.` +
        (optional ? ' Everything but encrypted runs with bootstrapping works without it.' : ''),
    );
    process.exit(optional ? 0 : 1);
  }
  console.log(
    `he-approx: built ${out} (${go.stdout.trim().replace(/^go version /, '')}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`,
  );
}
