/** The architecture rules of ARCHITECTURE.md, enforced. */
import * as ts from 'typescript';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ROOT } from './helpers';

function files(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
    );
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
    assert.doesNotMatch(
      fs.readFileSync(f, 'utf8'),
      /console\.(log|warn|error)|process\.(stdout|stderr)\.write/,
      `${f} prints`,
    );
  }
});

/** The extension host's modules: the only ones that import vscode. */
const VSCODE_MODULES = [
  'extension.ts',
  'panel.ts',
  'editorViews.ts',
  'jobs.ts',
  'inputs.ts',
  'modelViews.ts',
  'testAndExport.ts',
];

test('only the extension host and the panel import vscode; the rest of src/extension is tested on plain Node', () => {
  const hosts = new Set(VSCODE_MODULES);
  const all = fs.readdirSync(path.join(ROOT, 'src', 'extension')).filter((f) => f.endsWith('.ts'));
  assert.ok(all.length >= 9);
  for (const f of all) {
    const imports = /from ['"]vscode['"]|require\(['"]vscode['"]\)/.test(
      fs.readFileSync(path.join(ROOT, 'src', 'extension', f), 'utf8'),
    );
    assert.equal(imports, hosts.has(f), `${f} ${imports ? 'imports' : 'does not import'} vscode`);
  }
});

test('the host bundle does not carry the core: compute lives in the worker bundle', () => {
  // The extension host must stay light and never load tfjs or SEAL; only the worker does.
  for (const f of VSCODE_MODULES) {
    const host = fs.readFileSync(path.join(ROOT, 'src', 'extension', f), 'utf8');
    assert.doesNotMatch(host, /^import (?!type)[^;]*from ['"]\.\.\/core\/(analyze|model|he|profile|fit)/m, f);
  }
  assert.doesNotMatch(
    fs.readFileSync(path.join(ROOT, 'src', 'extension', 'analysisWorker.ts'), 'utf8'),
    /^import (?!type)[^;]*\.\.\/core\//m,
  );
});

test('require("he-approx") is the core library; VS Code loads the bundled extension from "main"', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'he-approx-require-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'he-approx'));
  const resolved = fs.realpathSync(require.resolve('he-approx', { paths: [dir] }));
  assert.equal(resolved, path.join(fs.realpathSync(ROOT), 'dist', 'src', 'core', 'index.js'));
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.main, './bundle/extension.js');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('src/core has no import cycles (type-only and dynamic imports included)', () => {
  // A cycle makes a module's meaning depend on load order and hides which layer owns a concept
  // (the fitters and the executor, the report and the encrypted tests used to import each other).
  const core = path.join(ROOT, 'src', 'core');
  const deps = new Map<string, string[]>();
  for (const f of files(core)) {
    const text = fs.readFileSync(f, 'utf8');
    const out: string[] = [];
    for (const m of text.matchAll(/(?:^(?:import|export)[^;]*?from\s+|import\()['"](\.[^'"]+)['"]/gm)) {
      const r = path.resolve(path.dirname(f), m[1]);
      out.push(fs.existsSync(`${r}.ts`) ? `${r}.ts` : path.join(r, 'index.ts'));
    }
    deps.set(f, out);
  }
  assert.ok(deps.size > 40, `read ${deps.size} core modules`);
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (u: string) => {
    state.set(u, 'open');
    stack.push(u);
    for (const v of deps.get(u) ?? []) {
      if (state.get(v) === 'open')
        cycles.push([...stack.slice(stack.indexOf(v)), v].map((x) => path.relative(core, x)).join(' -> '));
      else if (!state.has(v)) visit(v);
    }
    stack.pop();
    state.set(u, 'done');
  };
  for (const f of deps.keys()) if (!state.has(f)) visit(f);
  assert.deepEqual(cycles, []);
});

test('every user error comes from the one error type, with a code in use, a message and a fix', () => {
  // Parsed with the TypeScript compiler, not grepped: calls span lines and nest template strings.
  const errorsFile = path.join(ROOT, 'src', 'core', 'errors.ts');
  const declared = new Set([...fs.readFileSync(errorsFile, 'utf8').matchAll(/\|\s*'([A-Z_]+)'/g)].map((m) => m[1]));
  assert.ok(declared.size >= 10, `error codes found in errors.ts: ${[...declared].join(', ')}`);
  const used = new Set<string>();
  let sites = 0;
  const sources = ['core', 'cli', 'extension'].flatMap((d) => files(path.join(ROOT, 'src', d)));
  for (const f of sources) {
    const text = fs.readFileSync(f, 'utf8');
    const sf = ts.createSourceFile(f, text, ts.ScriptTarget.ES2022, true);
    const visit = (node: import('typescript').Node): void => {
      if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'UserError') {
        sites++;
        const where = `${path.relative(ROOT, f)}:${sf.getLineAndCharacterOfPosition(node.getStart()).line + 1}`;
        const args = node.arguments ?? [];
        assert.equal(args.length, 3, `${where}: UserError(code, message, fix)`);
        if (ts.isStringLiteral(args[0])) {
          assert.ok(declared.has(args[0].text), `${where}: code ${args[0].text} is not declared in errors.ts`);
          used.add(args[0].text);
        }
        for (const [k, what] of [
          [1, 'message'],
          [2, 'fix'],
        ] as const) {
          const a = args[k];
          if (ts.isStringLiteral(a) || ts.isNoSubstitutionTemplateLiteral(a))
            assert.ok(a.text.trim().length >= 8, `${where}: empty ${what}`);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  assert.ok(sites > 50, `UserError sites found: ${sites}`);
  const unused = [...declared].filter((c) => !used.has(c));
  assert.deepEqual(unused, [], 'declared error codes that nothing throws');
});
