/**
 * Command-line flags of the benchmarks: `--name value`. A numeric flag whose value is not a finite
 * number stops the benchmark with the flag's name, rather than run every step on NaN.
 */

/** The value after `--name`, or undefined. */
export function stringArg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** The number after `--name` (dflt when absent); exits with a one-line error when it is not one. */
export function numberArg(name: string, dflt: number): number {
  const v = stringArg(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) {
    console.error(`--${name} takes a number, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
  return n;
}
