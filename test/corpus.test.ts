/**
 * The corpus of broken inputs (issue 14; cases in corpus/cases.ts): every case runs through the
 * CLI's `main` as a user would meet it and must end in a one-line user error with exit code 2,
 * or in an analysis whose report holds only finite numbers (exit 0 or 3). Never an internal
 * error, an unhandled rejection, a hang (each case has a time limit; a worker that overruns it
 * is terminated), a change to an input file, or a file written outside --out.
 *
 * The cases run in a worker thread, one after another, so that a hang can be cut off without
 * losing the run; the worker is started again after such a case.
 */
import { isMainThread, parentPort, Worker } from 'worker_threads';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';

interface Outcome {
  code: number;
  out: string;
  err: string;
  rejections: string[];
}

/** Seconds a case may take: loading fails in milliseconds, an analysis at the corpus's small settings in about a second. */
const CASE_LIMIT_S = 60;

if (!isMainThread) {
  // Worker: run the cases the test sends, capturing what the CLI prints.
  const rejections: string[] = [];
  process.on('unhandledRejection', (e) => {
    rejections.push(String((e as Error)?.stack ?? e));
  });
  void (async () => {
    const { main } = await import('../src/cli/main');
    parentPort!.on('message', async ({ argv }: { argv: string[] }) => {
      let out = '';
      let err = '';
      const o = process.stdout.write.bind(process.stdout);
      const e = process.stderr.write.bind(process.stderr);
      process.stdout.write = ((s: string | Uint8Array) => {
        out += String(s);
        return true;
      }) as typeof process.stdout.write;
      process.stderr.write = ((s: string | Uint8Array) => {
        err += String(s);
        return true;
      }) as typeof process.stderr.write;
      let code: number;
      try {
        code = await main(argv);
      } catch (x) {
        code = -1;
        err += `main threw: ${(x as Error)?.stack ?? x}`;
      } finally {
        process.stdout.write = o;
        process.stderr.write = e;
      }
      // Let a stray rejection of this case surface before the next one starts.
      await new Promise((r) => setTimeout(r, 0));
      parentPort!.postMessage({ code, out, err, rejections: rejections.splice(0) } satisfies Outcome);
    });
    parentPort!.postMessage('ready');
  })();
} else {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { test } = require('node:test') as typeof import('node:test');
  const assert: typeof import('node:assert/strict') = require('node:assert/strict');
  const { generateCases } = require('./corpus/cases') as typeof import('./corpus/cases');
  const { tmpDir, ROOT } = require('./helpers') as typeof import('./helpers');

  const hash = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
  /** Regular files under dir (links, FIFOs and devices are a case's planted inputs: never read). */
  function walk(dir: string, base = dir, out: string[] = []): string[] {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) walk(p, base, out);
      else if (d.isFile()) out.push(path.relative(base, p));
    }
    return out;
  }
  /** Makes a case's links, FIFOs and empty folders (`@/` in a link target is the case's folder). */
  function plant(dir: string, special: NonNullable<import('./corpus/cases').Case['special']>): void {
    for (const d of special.dirs ?? []) fs.mkdirSync(path.join(dir, d), { recursive: true });
    for (const f of special.fifos ?? []) {
      const r = spawnSync('mkfifo', [path.join(dir, f)]);
      if (r.status !== 0) throw new Error(`mkfifo ${f}: ${r.stderr}`);
    }
    for (const [name, target] of Object.entries(special.links ?? {})) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.symlinkSync(target.startsWith('@/') ? path.join(dir, target.slice(2)) : target, path.join(dir, name));
    }
  }
  const treeHash = (dir: string) =>
    hash(
      Buffer.from(
        walk(dir)
          .sort()
          .map((f) => `${f}:${hash(fs.readFileSync(path.join(dir, f)))}`)
          .join('\n'),
      ),
    );

  /** What is wrong with a finished analysis's report, or null. */
  function reportProblem(file: string): string | null {
    if (!fs.existsSync(file)) return 'exit 0/3 but no report.json in --out';
    const r = JSON.parse(fs.readFileSync(file, 'utf8'));
    const fin = (x: unknown) => typeof x === 'number' && Number.isFinite(x);
    if (!fin(r.plaintext?.accuracy) || !fin(r.final?.accuracy) || !fin(r.final?.measuredDrop))
      return 'accuracies not finite';
    for (const l of r.layers) {
      if (!fin(l.interval.a) || !fin(l.interval.b) || !(l.interval.a < l.interval.b))
        return `${l.name}: interval ${JSON.stringify(l.interval)}`;
      if (!l.chosen.coeffs.every(fin)) return `${l.name}: coefficients not finite`;
      if (!fin(l.stats.min) || !fin(l.stats.max)) return `${l.name}: statistics not finite`;
    }
    return null;
  }

  class Runner {
    private worker: Worker | null = null;
    private async start(): Promise<Worker> {
      const w = new Worker(__filename);
      await new Promise<void>((res, rej) => {
        w.once('message', () => res());
        w.once('error', rej);
      });
      return w;
    }
    async run(argv: string[]): Promise<Outcome | 'timeout' | string> {
      this.worker ??= await this.start();
      const w = this.worker;
      return new Promise((res) => {
        const done = (v: Outcome | 'timeout' | string) => {
          clearTimeout(timer);
          w.removeAllListeners('message');
          w.removeAllListeners('error');
          res(v);
        };
        const timer = setTimeout(() => {
          this.worker = null;
          void w.terminate();
          done('timeout');
        }, CASE_LIMIT_S * 1000);
        w.once('message', (m: Outcome) => done(m));
        w.once('error', (e) => {
          this.worker = null;
          done(`worker died: ${e.message}`);
        });
        w.postMessage({ argv });
      });
    }
    async stop(): Promise<void> {
      await this.worker?.terminate();
    }
  }

  test(
    'a seeded corpus of over 1,000 broken inputs: each a one-line user error (exit 2) or a sound analysis',
    { timeout: 45 * 60 * 1000 },
    async () => {
      // HE_APPROX_CORPUS_ONLY=<category> runs one category (while working on it); CI runs them all.
      const only = process.env.HE_APPROX_CORPUS_ONLY;
      const cases = generateCases().filter((c) => !only || c.category === only);
      assert.ok(only ? cases.length > 0 : cases.length >= 1000, `${cases.length} cases`);
      const examples = treeHash(path.join(ROOT, 'examples'));
      const root = tmpDir('he-approx-corpus-');
      const runner = new Runner();
      const tally = new Map<string, { cases: number; errors: number; analyses: number }>();
      const codes = new Map<string, number>();
      const failures: string[] = [];
      const t0 = Date.now();
      try {
        for (const [i, c] of cases.entries()) {
          const dir = path.join(root, String(i));
          const inputs = new Map<string, string>();
          for (const [f, raw] of Object.entries(c.files)) {
            // A model.json may name a path by its absolute form (@ABS@: the case's folder).
            const b =
              f.endsWith('.json') && raw.includes('@ABS@')
                ? Buffer.from(raw.toString('utf8').replaceAll('@ABS@', dir))
                : raw;
            fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
            fs.writeFileSync(path.join(dir, f), b);
            inputs.set(f, hash(b));
          }
          fs.mkdirSync(dir, { recursive: true });
          if (c.special) plant(dir, c.special);
          const r = await runner.run(c.argv.map((a) => (a.startsWith('@/') ? path.join(dir, a.slice(2)) : a)));
          const t = tally.get(c.category) ?? { cases: 0, errors: 0, analyses: 0 };
          tally.set(c.category, t);
          t.cases++;
          const fail = (why: string) => failures.push(`#${i} [${c.category}] ${c.name}: ${why}`);
          if (typeof r === 'string') {
            fail(r === 'timeout' ? `no result within ${CASE_LIMIT_S} s` : r);
            continue;
          }
          if (r.rejections.length) fail(`unhandled rejection: ${r.rejections[0].split('\n')[0]}`);
          if (r.code === 2) {
            t.errors++;
            const m = /^he-approx: error: .+\. Fix: .+$/.exec(r.err.trimEnd());
            if (!m || r.err.trimEnd().includes('\n'))
              fail(`exit 2 but not one error line: ${JSON.stringify(r.err.slice(0, 300))}`);
          } else if (r.code === 0 || r.code === 3) {
            t.analyses++;
            const p = reportProblem(path.join(dir, 'out', 'report.json'));
            if (p) fail(p);
            // --quiet: nothing on stderr but the outputs' names (a backend's complaint here once meant a pooling layer ran on garbage).
            const stray = r.err.split('\n').filter((l) => l.trim() && !l.startsWith('wrote '));
            if (stray.length) fail(`exit ${r.code} but stderr says: ${stray[0].slice(0, 200)}`);
          } else fail(`exit ${r.code}: ${r.err.trim().split('\n')[0].slice(0, 300)}`);
          codes.set(String(r.code), (codes.get(String(r.code)) ?? 0) + 1);
          // Inputs untouched; nothing new outside --out.
          for (const f of walk(dir)) {
            const want = inputs.get(f);
            if (want !== undefined) {
              if (hash(fs.readFileSync(path.join(dir, f))) !== want) fail(`input ${f} was modified`);
            } else if (!f.startsWith(`out${path.sep}`)) fail(`wrote ${f}, outside --out`);
          }
          for (const f of inputs.keys()) if (!fs.existsSync(path.join(dir, f))) fail(`input ${f} was deleted`);
          for (const f of [...Object.keys(c.special?.links ?? {}), ...(c.special?.fifos ?? [])]) {
            try {
              fs.lstatSync(path.join(dir, f));
            } catch {
              fail(`planted ${f} was removed`);
            }
          }
          fs.rmSync(dir, { recursive: true, force: true });
        }
      } finally {
        await runner.stop();
        fs.rmSync(root, { recursive: true, force: true });
      }
      const rows = [...tally].map(
        ([k, v]) =>
          `  ${k.padEnd(10)} ${String(v.cases).padStart(5)} cases: ${String(v.errors).padStart(4)} one-line errors, ${String(v.analyses).padStart(4)} analyses`,
      );
      console.log(
        `corpus: ${cases.length} broken inputs in ${((Date.now() - t0) / 1000).toFixed(0)} s (exit codes ${[...codes].map(([k, v]) => `${k}: ${v}`).join(', ')})\n${rows.join('\n')}`,
      );
      assert.equal(treeHash(path.join(ROOT, 'examples')), examples, 'the examples were modified');
      assert.deepEqual(failures, [], `${failures.length} cases failed:\n${failures.slice(0, 40).join('\n')}`);
    },
  );
}
