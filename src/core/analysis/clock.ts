/**
 * Progress and timing of the analysis's stages: each phase has a share of the progress bar (its
 * share of a typical run's time), and every stage's seconds are summed into the report's timings.
 * 'search' interleaves the select, refine and verify stages, which are timed apart.
 */
import type { Progress } from '../profile/profiler';

// finetune and frontier: none unless asked for (the analysis then sets their shares).
const PHASES = {
  load: 2,
  profile: 10,
  cache: 5,
  fit: 8,
  sensitivity: 15,
  search: 55,
  frontier: 0,
  finetune: 0,
  report: 5,
} as const;
export type Phase = keyof typeof PHASES;
export type Stage = Phase | 'select' | 'refine' | 'verify' | 'checks';

/**
 * The report's timings in the order the stages run (the one list hosts and benchmarks print
 * from). `checks` is part of `verify` and `uniformSearch` of the search's time: NESTED_STAGES,
 * left out where the stages are meant to add up.
 */
export const STAGE_ORDER = [
  'load',
  'profile',
  'cache',
  'fit',
  'sensitivity',
  'select',
  'refine',
  'verify',
  'checks',
  'uniformSearch',
  'frontier',
  'finetune',
  'report',
] as const;
export const NESTED_STAGES: ReadonlySet<string> = new Set(['checks', 'uniformSearch']);

export class StageClock {
  readonly timings: Record<string, number> = {};
  /** The stage that started last (for messages about where a run stopped). */
  current: Stage = 'load';
  private readonly t0 = Date.now();

  private readonly phases: Record<Phase, number>;

  constructor(
    private readonly onProgress?: Progress,
    shares: Partial<Record<Phase, number>> = {},
  ) {
    this.phases = { ...PHASES, ...shares };
  }

  /** Reports fraction `f` of phase `phase` done. */
  progress(phase: Phase, f: number, msg: string): void {
    let before = 0;
    for (const [name, w] of Object.entries(this.phases)) {
      if (name === phase) break;
      before += w;
    }
    const total = Object.values(this.phases).reduce((x, y) => x + y, 0);
    this.onProgress?.((before + this.phases[phase] * Math.min(1, Math.max(0, f))) / total, msg);
  }

  /** Runs `f`, adding its seconds to `stage`'s time. */
  async timed<T>(stage: Stage, f: () => Promise<T> | T): Promise<T> {
    const t = Date.now();
    this.current = stage;
    if (stage in PHASES) this.progress(stage as Phase, 0, stage);
    try {
      return await f();
    } finally {
      this.add(stage, (Date.now() - t) / 1000);
    }
  }

  add(stage: string, seconds: number): void {
    this.timings[stage] = (this.timings[stage] ?? 0) + seconds;
  }

  /** Pass options whose progress fills `phase`. */
  pass(phase: Phase, batchSize: number, signal?: AbortSignal) {
    return { batchSize, signal, onProgress: (f: number, m: string) => this.progress(phase, f, m) };
  }

  finish(): Record<string, number> {
    this.timings.total = (Date.now() - this.t0) / 1000;
    return this.timings;
  }
}
