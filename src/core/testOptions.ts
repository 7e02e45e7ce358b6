/**
 * The encrypted test's options, in the option table's form (options.ts): read by the CLI's
 * `encrypted-test` flags and help, and by the editor's heApprox.encryptedTest.* settings.
 */
import { UserError } from './errors';
import { OptionSpec, RING_SIZES, isPosInt, zeroIsDefault } from './options';

/**
 * The encrypted test's options (`he-approx encrypted-test`, the editor's heApprox.encryptedTest.*
 * settings), in the order help lists them. The editor's default sample count is its own: its test
 * runs while the user waits in the editor, where the terminal's is a batch job.
 */
export const ENCRYPTED_TEST_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'report',
    flag: 'report',
    cli: 'value',
    path: true,
    help: 'report.json written by he-approx analyze --out for this model (required)',
  },
  { key: 'data', flag: 'data', cli: 'value', path: true, help: 'data to draw test samples from (required)' },
  { key: 'labels', flag: 'labels', cli: 'value', path: true, help: 'labels for the data (optional)' },
  {
    key: 'samples',
    flag: 'samples',
    cli: 'value',
    check: isPosInt,
    what: 'a positive integer',
    default: 20,
    defaultText: '20',
    help: 'samples to test',
    setting: { name: 'encryptedTest.samples', default: 8 },
  },
  {
    key: 'layerOnly',
    flag: 'layer-only',
    cli: 'flag',
    flagValue: true,
    default: false,
    help: "test each activation on its own (packs that layer's inputs into ciphertexts)",
    // 'ask': the editor asks each time.
    setting: {
      name: 'encryptedTest.mode',
      default: 'ask',
      toOption: (v) => (v === 'layer' ? true : v === 'model' ? false : undefined),
    },
  },
  {
    key: 'latency',
    flag: 'latency',
    cli: 'flag',
    flagValue: true,
    default: false,
    help: 'one sample per run, its channels side by side in as few ciphertexts as fit: the time one prediction takes',
    setting: { name: 'encryptedTest.packing', default: 'throughput', toOption: (v) => v === 'latency' },
  },
  {
    key: 'throughput',
    flag: 'throughput',
    cli: 'flag',
    flagValue: true,
    help: 'as many samples per ciphertext as fit, one ciphertext per channel: the least time per sample (default)',
  },
  {
    key: 'ringSize',
    flag: 'ring-size',
    cli: 'value',
    check: (x) => (RING_SIZES as readonly number[]).includes(x),
    what: '8192, 16384 or 32768',
    help: 'force a CKKS ring size (default: the smallest that fits)',
    setting: { name: 'encryptedTest.ringSize', default: 0, toOption: zeroIsDefault },
  },
  {
    key: 'workers',
    flag: 'workers',
    cli: 'value',
    check: (x) => Number.isInteger(x) && x >= 1 && x <= 8,
    what: 'an integer from 1 to 8',
    help: 'threads for the whole-model test, each with its own keys (default: one per core, at most 2)',
  },
  {
    key: 'engine',
    flag: 'engine',
    cli: 'value',
    parse: (raw, flag) => {
      if (raw !== 'seal' && raw !== 'lattigo')
        throw new UserError(
          'OPTION_INVALID',
          `--${flag} ${raw} is unknown`,
          `pass --${flag} seal or --${flag} lattigo`,
        );
      return raw;
    },
    defaultText: 'lattigo for a report planned for bootstrapping, else seal',
    help: 'CKKS library for the whole-model test: seal (in process) or lattigo (with bootstrapping)',
    setting: {
      name: 'encryptedTest.engine',
      default: 'auto',
      toOption: (v) => (v === 'seal' || v === 'lattigo' ? v : undefined),
    },
  },
];

/** The encrypted test's options as the hosts hand them to the core (paths and the model apart). */
export interface EncryptedTestChoices {
  samples?: number;
  /** Undefined: the editor asks. */
  layerOnly?: boolean;
  latency?: boolean;
  throughput?: boolean;
  ringSize?: number;
  workers?: number;
  engine?: 'seal' | 'lattigo';
}
