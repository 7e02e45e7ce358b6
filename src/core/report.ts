/**
 * The analysis report: plain, serialisable data shared by the CLI, the VS Code extension and the
 * encrypted test. Its schema is documented in docs/report-schema.md; `REPORT_VERSION` changes
 * whenever a field changes meaning or disappears.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import { OpCosts } from './cost/cost';
import { ChannelFits, FitMethod } from './fit/fit';
import { Histogram } from './profile/stats';
import type { PolyActivation } from './model/execute';
import type { EncryptedLayerReport } from './he/layerTest';
import type { EncryptedModelReport } from './he/modelTest';

export const REPORT_SCHEMA = 'he-approx/report';
export const REPORT_VERSION = 2;

/**
 * sha256 of a JSON text's content whatever its formatting (null if it does not parse): a
 * reformatted model.json is the same model, so results made for it still apply.
 */
export function jsonContentSha256(text: string): string | null {
  try { return crypto.createHash('sha256').update(JSON.stringify(JSON.parse(text))).digest('hex'); } catch { return null; }
}

/** The two hashes a report keeps of its model.json (bytes, and content whatever the formatting), from one read. */
export function modelFileHashes(file: string): { sha256: string; contentSha256: string | null } {
  const bytes = fs.readFileSync(file);
  return { sha256: crypto.createHash('sha256').update(bytes).digest('hex'), contentSha256: jsonContentSha256(bytes.toString('utf8')) };
}

export interface DegreeResult {
  degree: number;
  depth: number;
  nonScalarMults: number;
  /** Accuracy drop (percentage points) on held-out data when only this layer uses this fit. */
  drop: number;
  rmsData: number;
  maxErrObserved: number;
  maxAbsInterval: number;
}

export interface ChosenFit {
  method: FitMethod;
  degree: number;
  basis: 'chebyshev';
  interval: { a: number; b: number };
  /** Chebyshev coefficients in increasing degree, in t = (2x - a - b) / (b - a). */
  coeffs: number[];
  /** Per-channel constant subtracted after the polynomial (mean-shift correction), if used. */
  channelOffset: number[] | null;
  /**
   * Per-channel polynomials (last axis), if the layer is fitted channel by channel: channel c
   * uses coeffs[c] on intervals[c], and `interval`/`coeffs` above are the layer-wide fit of the
   * same degree, kept for plots and summaries only.
   */
  channels: ChannelFits | null;
  depth: number;
  polyDepth: number;
  affineLevel: number;
  nonScalarMults: number;
  latencyMs: number;
  /** Sensitivity-predicted drop of this layer alone, percentage points. */
  predictedDrop: number;
  rmsData: number;
  maxErrObserved: number;
  maxAbsInterval: number;
  /** Held-out values reaching the layer in the approximated model that fall outside the interval. */
  heldoutOutside: { fraction: number; count: number; min: number; max: number };
}

export interface LayerReport {
  node: number;
  name: string;
  /** model.json layer the activation belongs to. */
  layer: string;
  className: string;
  activation: string;
  /** True when the activation was fused into a Dense/Conv2D layer's `activation`. */
  fused: boolean;
  stats: { count: number; min: number; max: number; mean: number; std: number; percentiles: Record<string, number>; histogram: Histogram };
  interval: { a: number; b: number };
  affineFoldable: boolean;
  sensitivity: Record<'data' | 'uniform', DegreeResult[]>;
  chosen: ChosenFit;
  uniformChosen: { degree: number; depth: number; predictedDrop: number } | null;
  warnings: string[];
}

export interface MethodSummary {
  method: string;
  degrees: Record<string, number>;
  /** Sum of activation levels (the DP's objective). */
  activationDepth: number;
  /** Longest input-to-output path in levels, linear layers included. */
  networkDepth: number;
  nonScalarMults: number;
  latencyMs: number;
  predictedDrop: number;
  measuredDrop: number;
  accuracy: number;
  meetsBudget: boolean;
  /** Selection rounds run: the budget is tightened when the measured drop exceeds it. */
  rounds: number;
  /** Every round's choice and its measured drop, in order (the kept one is in `degrees`). */
  attempts: SelectionAttempt[];
}

export interface SelectionAttempt {
  /** 'selected': the first DP choice; 'tightened': chosen under a tighter budget after a round over budget. */
  why: 'selected' | 'tightened';
  degrees: Record<string, number>;
  activationDepth: number;
  predictedDrop: number;
  measuredDrop: number;
  meetsBudget: boolean;
}

export interface Refinement {
  name: 'plain' | 'per-layer' | 'propagation' | 'mean-shift' | 'propagation+mean-shift' | 'tuned';
  description: string;
  accuracy: number;
  measuredDrop: number;
  kept: boolean;
}

export interface Report {
  schema: typeof REPORT_SCHEMA;
  version: typeof REPORT_VERSION;
  tool: { name: string; version: string };
  createdAt: string;
  model: { path: string; name: string; format?: string; layout: string; inputShape: number[]; sha256: string; contentSha256?: string | null; notes: string[] };
  data: { path: string; labels: string | null; heldoutPath: string | null; samples: number; calibration: number; heldout: number; seed: number; sha256: string; notes: string[] };
  options: AnalyzeOptionsReport;
  backend: string;
  costs: OpCosts;
  /** What accuracy means here: top-1 against labels, or agreement with the original model. */
  metric: 'top1-vs-labels' | 'agreement-with-original';
  plaintext: { accuracy: number };
  layers: LayerReport[];
  final: MethodSummary;
  uniform: MethodSummary;
  refinements: Refinement[];
  maxPooling: { layers: string[]; accuracyWithAveragePooling: number; dropWithAveragePooling: number } | null;
  /** Layers CKKS cannot evaluate as they are, with the fix. */
  heIncompatible: { layer: string; className: string; problem: string; fix: string }[];
  levelBudget: number;
  linearDepth: number;
  warnings: string[];
  notes: string[];
  timings: Record<string, number>;
  /** Filled by `he-approx encrypted-test` and the extension's Run Encrypted Test. */
  encrypted?: { model?: EncryptedModelReport; layers?: EncryptedLayerReport };
}

export interface AnalyzeOptionsReport {
  /** Input scaling and per-channel normalisation the data went through (the encrypted tests repeat them). */
  inputScale?: 'auto' | 'none' | number;
  inputNormalization?: { mean: number[]; std: number[] } | null;
  budget: number;
  levelBudget: number;
  degrees: number[];
  margin: number;
  floor: number;
  batchSize: number;
  reservoir: number;
  refineSamples: number;
  ringSize: number;
  method: FitMethod;
  /** Data-guided fits per channel (true) or per layer. */
  perChannel: boolean;
  /** Coefficient tuning by distillation tried as a refinement. */
  tune: boolean;
  /** Weight of the label cross-entropy in coefficient tuning (0: distillation only, as without labels). */
  tuneLabelWeight: number;
}

/** The approximated model's activations, as the executor and the encrypted tests take them. */
export function polysFromReport(r: Pick<Report, 'layers'>): Map<number, PolyActivation> {
  return new Map(r.layers.map((l) => [l.node, { coeffs: l.chosen.coeffs, a: l.chosen.interval.a, b: l.chosen.interval.b,
    channels: l.chosen.channels ?? undefined, channelOffset: l.chosen.channelOffset ? Float32Array.from(l.chosen.channelOffset) : undefined }]));
}
