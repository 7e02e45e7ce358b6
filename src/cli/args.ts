/** A small, strict argument parser: unknown flags and missing values are user errors. */
import { UserError } from '../core/errors';

export interface FlagSpec {
  name: string;
  value: boolean;
  help: string;
  default?: string;
}

export function parseArgs(
  argv: string[],
  flags: FlagSpec[],
): { positional: string[]; opts: Map<string, string | true> } {
  const byName = new Map(flags.map((f) => [f.name, f]));
  const positional: string[] = [];
  const opts = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const [key, inline] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const spec = byName.get(key);
    if (!spec) {
      throw new UserError(
        'OPTION_INVALID',
        `unknown option --${key}`,
        `run 'he-approx help' for the options (${flags.map((f) => '--' + f.name).join(' ')})`,
      );
    }
    if (!spec.value) {
      opts.set(key, true);
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined || v.trim() === '' || (inline === undefined && v.startsWith('--'))) {
      throw new UserError('OPTION_INVALID', `option --${key} needs a value`, `pass --${key} <value>`);
    }
    opts.set(key, v);
  }
  return { positional, opts };
}

export function numberOpt(
  opts: Map<string, string | true>,
  key: string,
  check: (x: number) => boolean,
  what: string,
): number | undefined {
  const v = opts.get(key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isFinite(n) || !check(n)) {
    throw new UserError('OPTION_INVALID', `--${key} ${v} is not ${what}`, `pass --${key} as ${what}`);
  }
  return n;
}
