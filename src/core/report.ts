/**
 * The analysis report: plain, serialisable data shared by the CLI, the VS Code extension and the
 * encrypted test. Its schema is documented in docs/report-schema.md; `REPORT_VERSION` changes
 * whenever a field changes meaning or disappears.
 */
import * as crypto from 'crypto';
import { MODEL_FILE, readUserFile } from './files';
import { OpCosts } from './cost/cost';
import type { FitMethod } from './fit/fit';
import type { ChannelFits, PolyActivation } from './numerics/polynomial';
import { Histogram } from './profile/stats';
import type { EncryptedLayerReport, EncryptedModelReport } from './encryptedReport';
import type { FinetuneReport } from './finetuneReport';

export type { EncryptedLayerReport, EncryptedModelReport, LayerEncryptedResult, SampleResult } from './encryptedReport';
export type { FinetuneReport, FinetuneTry } from './finetuneReport';

export const REPORT_SCHEMA = 'he-approx/report';
export const REPORT_VERSION = 4;

/**
 * sha256 of a JSON text's content whatever its formatting (null if it does not parse): a
 * reformatted model.json is the same model, so results made for it still apply.
 */
export function jsonContentSha256(text: string): string | null {
  try {
    return crypto
      .createHash('sha256')
      .update(JSON.stringify(JSON.parse(text)))
      .digest('hex');
  } catch {
    return null;
  }
}

/** The two hashes a report keeps of its model.json (bytes, and content whatever the formatting), from one read. */
export function modelFileHashes(file: string): { sha256: string; contentSha256: string | null } {
  const bytes = readUserFile(file, MODEL_FILE);
  return {
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
    contentSha256: jsonContentSha256(bytes.toString('utf8')),
  };
}

export interface DegreeResult {
  degree: number;
  depth: number;
  nonScalarMults: number;
  /**
   * Predicted accuracy drop (percentage points) when only this layer uses this fit: the
   * first-order sensitivity screen on calibration samples (analysis/sensitivity.ts), not a
   * held-out measurement (version 2 measured it; that cost layers x degrees forward passes).
   */
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
  /**
   * How the polynomial is evaluated (cost/fold.ts): 'series' (Chebyshev, BSGS plan), 'affine'
   * (degree 1: y = mul x + add), 'square' (degree 2: sign u^2 + offset with u = mul x + add) or
   * 'constant' (a max tree's |x| of degree <= 1: the tree is then a linear pooling, 0 levels);
   * intoPrevious: the previous linear layer (`into`, by its layer name) computes the input map
   * (t, y or u); why: the reason a fold is not made, or null.
   */
  fold: {
    form: 'series' | 'affine' | 'square' | 'constant';
    intoPrevious: boolean;
    into: string | null;
    mixedSigns: boolean;
    why: string | null;
  };
  nonScalarMults: number;
  latencyMs: number;
  /** Sensitivity-predicted drop of this layer alone, percentage points. */
  predictedDrop: number;
  rmsData: number;
  maxErrObserved: number;
  maxAbsInterval: number;
  /**
   * Held-out values reaching the layer in the approximated model: how many fall outside the
   * interval (or their channel's), in how many samples, their range, and the largest magnitude
   * reaching the activation and leaving it (analysis/verify.ts).
   */
  heldoutOutside: {
    fraction: number;
    count: number;
    samples: number;
    min: number;
    max: number;
    maxAbsIn: number;
    maxAbsOut: number;
    nonFinite: number;
  };
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
  stats: {
    count: number;
    min: number;
    max: number;
    mean: number;
    std: number;
    percentiles: Record<string, number>;
    histogram: Histogram;
  };
  interval: { a: number; b: number };
  affineFoldable: boolean;
  sensitivity: Record<'data' | 'uniform', DegreeResult[]>;
  chosen: ChosenFit;
  uniformChosen: { degree: number; depth: number; predictedDrop: number } | null;
  /**
   * For an |x| of a max pooling's tree (model/maxTree.ts): the pooling layer's node name, the axis,
   * the distance of the two operands and the step's place in the tree; null for an activation.
   */
  maxTree: { pool: string; axis: 'height' | 'width'; offset: number; step: number } | null;
  warnings: string[];
}

/**
 * A max pooling layer as it runs under CKKS: its tree of pairwise maxima, whose |x| are layers of
 * the report (`LayerReport.maxTree`), and the levels of its longest path.
 */
export interface MaxPoolingReport {
  /** Node name of the pooling (the name its layers' maxTree.pool give), its layer and class. */
  pool: string;
  layer: string;
  className: string;
  /** Report layers (names) of its |x|, in tree order, and their chosen degrees. */
  steps: string[];
  degrees: number[];
  /** Levels from the pooling's input to its output with the chosen degrees. */
  depth: number;
  /** Every |x| is a constant: the tree is a linear (average-like) pooling plus a constant, at no level. */
  linear: boolean;
}

export interface MethodSummary {
  method: string;
  degrees: Record<string, number>;
  /**
   * Activation levels on the network's longest path: where branches run side by side (residual
   * blocks, a max tree's operands), the levels the network spends on activations, not their sum.
   */
  activationDepth: number;
  /** Longest input-to-output path in levels, linear layers included: what the HE program uses. */
  networkDepth: number;
  /**
   * The same with every series at its optimal depth: the fewest levels these degrees need, which
   * decides the ring. networkDepth exceeds it where the ring's chain had levels to spare and
   * series took deeper plans with fewer multiplications (cost.ts: spendSpareLevels).
   */
  minimalDepth?: number;
  nonScalarMults: number;
  latencyMs: number;
  predictedDrop: number;
  measuredDrop: number;
  accuracy: number;
  meetsBudget: boolean;
  /** Full rounds run (refinements measured on held-out data; see analysis/search.ts). */
  rounds: number;
  /** Choices checked exactly on the screen samples before any round. */
  checks: number;
  /** Every round's choice and its measured drop, in order (the kept one is in `degrees`). */
  attempts: SelectionAttempt[];
  /** Every held-out value stayed finite and within `Report.valueBound`. */
  safe: boolean;
  /** Largest magnitude of any value in the approximated model on held-out data. */
  maxAbs: number;
  /** Bootstraps with these degrees at `Report.bootstrapping.levelsPerBootstrap` (cost/bootstrap.ts). */
  bootstraps: number;
}

/** One point of the accuracy-cost frontier: a choice of degrees measured on held-out data, and its cost. */
export interface FrontierPoint {
  /** 'data-guided' (or the analysis's method) or 'uniform'. */
  method: string;
  degrees: Record<string, number>;
  /** The network's levels (its longest path) with these degrees. */
  levels: number;
  /** The ring those levels need: the smallest SEAL ring whose chain holds them, else the bootstrapping ring (2^16). */
  ringSize: number;
  /** Bootstraps beyond SEAL's chains (0 within one). */
  bootstraps: number;
  /** Estimated latency per ciphertext on that ring: the activations, plus the bootstraps where costs measured them (ms). */
  estLatencyMs: number;
  measuredDrop: number;
  safe: boolean;
  meetsBudget: boolean;
  /**
   * 'search': a round the search ran anyway; 'frontier': measured for --frontier N (plain fits);
   * 'finetuned': a choice after fine-tuning inside the choice (method '<method> + fine-tuning').
   */
  source: 'search' | 'frontier' | 'finetuned';
  /** The analysis's result. */
  chosen: boolean;
}

export interface FrontierReport {
  /** Per method by increasing levels, each point better than every cheaper one. */
  points: FrontierPoint[];
  /** Choices measured for --frontier N beyond the search's rounds. */
  measured: number;
}

export interface SelectionAttempt {
  /**
   * 'selected': the first choice; 'tightened': chosen for a lower predicted drop after a round
   * over budget; 'relaxed': a cheaper choice tried after a round met the budget with room to spare;
   * 'frontier': a --frontier N choice that met the budget at a lower estimated latency than the
   * search's, and so became the result; 'finetuned': a cheaper choice that met the budget after
   * fine-tuning (its measuredDrop is before fine-tuning; FinetuneReport.tries).
   */
  why: 'selected' | 'tightened' | 'relaxed' | 'frontier' | 'finetuned';
  degrees: Record<string, number>;
  /** The network's levels with these degrees (its longest path). */
  depth: number;
  /** First-order prediction on the screen samples. */
  predictedDrop: number;
  /** The plain fits' exact drop on the screen samples (the search's cheap check), if checked. */
  checkedDrop: number | null;
  measuredDrop: number;
  /** Measured drop within the budget, and every value safe. */
  meetsBudget: boolean;
  safe: boolean;
}

export interface Refinement {
  name: 'plain' | 'per-layer' | 'propagation' | 'mean-shift' | 'propagation+mean-shift' | 'tuned';
  description: string;
  accuracy: number;
  measuredDrop: number;
  kept: boolean;
  /** Every held-out value stayed finite and within `Report.valueBound`. */
  safe: boolean;
}

export interface Report {
  schema: typeof REPORT_SCHEMA;
  version: typeof REPORT_VERSION;
  tool: { name: string; version: string };
  createdAt: string;
  /** SHA-256 of the report's content without this field and `encrypted` (reportCheck.ts): a report edited after it was written is refused. */
  checksum?: string;
  model: {
    path: string;
    name: string;
    format?: string;
    layout: string;
    inputShape: number[];
    sha256: string;
    contentSha256?: string | null;
    notes: string[];
  };
  data: {
    path: string;
    labels: string | null;
    heldoutPath: string | null;
    samples: number;
    calibration: number;
    heldout: number;
    seed: number;
    sha256: string;
    notes: string[];
  };
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
  /**
   * Max pooling layers, each evaluated as a tree of polynomial pairwise maxima (included in
   * every figure above: `final`, `uniform`, the layers), and the usual substitute measured
   * beside them: average pooling in their place with the chosen polynomials elsewhere. Null when
   * the model has no max pooling.
   */
  maxPooling: { pools: MaxPoolingReport[]; averagePooling: { accuracy: number; drop: number } } | null;
  /** Layers CKKS cannot evaluate as they are, with the fix. */
  heIncompatible: { layer: string; className: string; problem: string; fix: string }[];
  levelBudget: number;
  linearDepth: number;
  /**
   * Deeper than SEAL's chain: planned for a library with bootstrapping (degrees minimise the
   * total depth under the accuracy budget; `final.bootstraps` and `uniform.bootstraps` count).
   */
  bootstrapping: { planned: boolean; levelsPerBootstrap: number };
  /** Largest |value| a CKKS ciphertext at the last level holds with the 40-bit scale (2^19). */
  valueBound: number;
  /** The first-order sensitivity screen: samples, and the standard error of a predicted drop near the budget. */
  screen: { samples: number; standardErrorPp: number };
  warnings: string[];
  notes: string[];
  timings: Record<string, number>;
  /** `--finetune-epochs N`: the fine-tuning of weights and coefficients after the analysis (analysis/finetuneStage.ts). */
  finetune?: FinetuneReport;
  /** The accuracy-cost frontier (analysis/frontier.ts): the best measured choice at each cost, per method. */
  frontier?: FrontierReport;
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
  /** Margin added per activation upstream (analysis/fitStage.ts). */
  marginGrowth: number;
  floor: number;
  batchSize: number;
  reservoir: number;
  refineSamples: number;
  screenSamples: number;
  bootstrapLevels: number;
  /** Planned for bootstrapping even where SEAL's chain would hold the network (--bootstrap). */
  bootstrap?: boolean;
  /**
   * --target-levels / --target-bootstraps: the result is the most accurate choice within this cost
   * (absent: none); `degrees`: a frontier point picked in the editor's panel, exactly.
   */
  target?: { levels?: number; bootstraps?: number; degrees?: Record<string, number> } | null;
  ringSize: number;
  method: FitMethod;
  /** Data-guided fits per channel (true) or per layer. */
  perChannel: boolean;
  /** Coefficient tuning by distillation tried as a refinement. */
  tune: boolean;
  /** Weight of the label cross-entropy in coefficient tuning (0: distillation only, as without labels). */
  tuneLabelWeight: number;
  /**
   * Degree-1 and degree-2 polynomials folded into the linear layers (cost/fold.ts): the levels
   * counted and the HE program follow it. Absent in reports made before folding: read as false.
   */
  fold?: boolean;
  /** Levels the ring leaves unused spent on deeper, cheaper series plans (off unless asked). */
  spareLevels?: boolean;
}

/** The approximated model's activations, as the executor and the encrypted tests take them. */
/** How a layer's polynomial is evaluated, in words, for the hosts (the CLI table, hovers). */
export function describeFold(c: Pick<ChosenFit, 'fold' | 'polyDepth' | 'affineLevel'>): string {
  const f = c.fold;
  if (!f) return 'a Chebyshev series';
  if (f.form === 'constant') {
    return `a constant: this step of the max tree averages its two operands${f.intoPrevious ? ' (0 levels: the layers after the pooling take its factor)' : ', and its sum is scaled for what reads it (1 level)'}`;
  }
  const lv = (n: number) => (n === 1 ? '1 level' : `${n} levels`);
  const form =
    f.form === 'square'
      ? `a signed square (${lv(c.polyDepth)})`
      : f.form === 'affine'
        ? 'an affine map'
        : `a Chebyshev series (${lv(c.polyDepth)})`;
  const map = f.form === 'affine' ? 'computed' : f.form === 'square' ? 'its input u computed' : 'its input t computed';
  if (f.intoPrevious) return `${form}, ${map} by ${f.into ?? 'the previous layer'} at no level`;
  return `${form}, ${f.form === 'affine' ? '' : 'its input '}by a plaintext multiplication (1 level)${f.why ? `: ${f.why}` : ''}`;
}

export function polysFromReport(r: Pick<Report, 'layers'>): Map<number, PolyActivation> {
  return new Map(
    r.layers.map((l) => [
      l.node,
      {
        coeffs: l.chosen.coeffs,
        a: l.chosen.interval.a,
        b: l.chosen.interval.b,
        channels: l.chosen.channels ?? undefined,
        channelOffset: l.chosen.channelOffset ? Float32Array.from(l.chosen.channelOffset) : undefined,
      },
    ]),
  );
}
