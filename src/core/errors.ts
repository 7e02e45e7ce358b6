/**
 * User-facing errors. Every error a user can cause (bad model, bad data, bad options) is a
 * `UserError`: a one-line message that names the problem and a `fix` that says what to do.
 * Hosts (CLI, extension) print `message` and `fix` and never a stack trace; anything that is
 * not a `UserError` is a bug in he-approx and is reported as such.
 */
export type ErrorCode =
  | 'MODEL_UNREADABLE'
  | 'MODEL_UNSUPPORTED'
  | 'WEIGHTS_MISSING'
  | 'WEIGHTS_MISMATCH'
  | 'WEIGHTS_NONFINITE'
  | 'MODEL_NONFINITE'
  | 'LAYER_UNKNOWN'
  | 'DATA_UNREADABLE'
  | 'DATA_SHAPE'
  | 'DATA_NONFINITE'
  | 'LABELS_MISMATCH'
  | 'OPTION_INVALID'
  | 'OUTPUT_EXISTS'
  /** A report.json that is not what he-approx wrote: edited, damaged, or not for this model. */
  | 'REPORT_INVALID'
  | 'BUDGET_INFEASIBLE'
  | 'MEMORY_LIMIT'
  /** The Lattigo engine is not built here, or not of this version. */
  | 'ENGINE_MISSING'
  /** The Lattigo engine stopped (crashed, killed, out of memory) or refused its job. */
  | 'ENGINE_FAILED'
  | 'CANCELLED';

export class UserError extends Error {
  readonly code: ErrorCode;
  readonly fix: string;
  constructor(code: ErrorCode, message: string, fix: string) {
    super(message);
    this.name = 'UserError';
    this.code = code;
    this.fix = fix;
  }
  /** One line: problem, then fix. */
  oneLine(): string {
    return `${this.message}. Fix: ${this.fix}`;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** Thrown when the host's cancellation signal fires; hosts treat it as a quiet stop. */
export class CancelledError extends UserError {
  constructor() {
    super('CANCELLED', 'analysis cancelled', 'run the command again');
  }
}
