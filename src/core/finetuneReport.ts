/**
 * What `--finetune-epochs` adds to a report, under `finetune` (docs/report-schema.md).
 */
import type { ChannelFits } from './numerics/polynomial';

/**
 * Approximation-aware fine-tuning after the analysis: the network's weights and the chosen
 * polynomials' coefficients trained on the calibration samples (their labels, or the original
 * model's outputs: distillation), same degrees and intervals (so the same levels). `layers` and
 * the rest of the report stay the analysis's own (they describe the user's weights); the
 * fine-tuned model is exported beside them when kept.
 */
export interface FinetuneReport {
  epochs: number;
  /** Batch used (the asked one, lowered to fit the gradient tape) and the optimiser's settings. */
  batchSize: number;
  batchSizeAsked: number;
  lr: number;
  coeffLr: number;
  clipNorm: number;
  rangeWeight: number;
  /**
   * Weight of the labels' cross-entropy in the loss, the rest distillation from the original
   * model's outputs at `temperature` (0 without labels: distillation only). Absent in reports
   * from before distillation, which trained on the labels alone.
   */
  labelWeight?: number;
  temperature?: number;
  /** Flips and shifts of the training images (finetune/augment.ts: shift in pixels); absent: none. */
  augment?: { flip: boolean; shift: number };
  /** Training seconds (per-epoch measurements excluded). */
  seconds: number;
  /** The analysis's measured drop, and the fine-tuned model's, on the same held-out samples. */
  analysisDrop: number;
  measuredDrop: number;
  accuracy: number;
  safe: boolean;
  maxAbs: number;
  /** Safe and no worse than the analysis: the fine-tuned model is the one exported. */
  kept: boolean;
  perEpoch: {
    epoch: number;
    seconds: number;
    loss: number;
    rangeLoss: number;
    skipped: number;
    /** The range loss's weight at the epoch's end (it rises while training values leave their intervals). */
    rangeWeight?: number;
    /** Training batches with a value beyond its interval (before the clamp). */
    batchesOutside?: number;
    measuredDrop: number;
    safe: boolean;
    /** On the validation part of the calibration samples (null without one: see validationSamples). */
    validationAccuracy?: number | null;
    validationSafe?: boolean | null;
  }[];
  /**
   * Calibration samples kept out of training to choose the epoch by (a tenth; 0 for one epoch or
   * fewer than 50 samples, when the last epoch is the one judged).
   */
  validationSamples?: number;
  /** The epoch whose model is judged (measuredDrop, kept, exported): the best on validation among those safe there and on held-out. */
  chosenEpoch?: number;
  /** Layers whose kernels could not be trained, and why. */
  frozen: { layer: string; reason: string }[];
  /** Layers whose fine-tuned coefficients would cost more levels (a lost fold); then not kept. */
  levelsUp?: string[];
  /** Where the fine-tuned model was written (relative to report.json), null if it was not. */
  exported?: string | null;
  /** Why a kept fine-tuning was not exported, if it was not. */
  notExported?: string;
  /**
   * Fine-tuning inside the choice: every choice fine-tuned, in order: the best of each tier (ring,
   * then bootstraps) cheaper than the analysis's result, nearest first, while they meet the budget
   * after fine-tuning; then the result itself if none did (analysis/finetuneChoice.ts).
   */
  tries?: FinetuneTry[];
  /**
   * Fine-tuning bought a cheaper choice than the analysis's: the analysis's own result, which the
   * report's result (`final`, `layers`) replaced; null when the result is the analysis's.
   */
  from?: {
    degrees: Record<string, number>;
    levels: number;
    ringSize: number;
    bootstraps: number;
    measuredDrop: number;
  } | null;
  /** The fine-tuned polynomials, by activation node (intervals as in `layers[].chosen`). */
  layers: { node: number; coeffs: number[]; channels: ChannelFits | null; channelOffset: number[] | null }[];
}

/** One choice fine-tuned (FinetuneReport.tries). */
export interface FinetuneTry {
  degrees: Record<string, number>;
  levels: number;
  ringSize: number;
  bootstraps: number;
  estLatencyMs: number;
  /** Measured drop on held-out data before and after fine-tuning. */
  startDrop: number;
  measuredDrop: number;
  safe: boolean;
  kept: boolean;
  /** Training seconds. */
  seconds: number;
  /** Why it was not kept, if it was not. */
  why: string | null;
}
