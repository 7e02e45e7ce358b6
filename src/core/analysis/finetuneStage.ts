/**
 * The optional last stage (`--finetune-epochs N`): approximation-aware fine-tuning of the
 * network's weights and the chosen polynomials' coefficients from the analysis's result, on the
 * calibration samples with their labels (finetune/finetune.ts), measured on the same held-out
 * samples as the analysis. Degrees and intervals do not change. The result is kept only when it
 * is safe, its measured drop is no worse than the analysis's, and no layer's new coefficients
 * cost more levels (a degree-2 square fold can be lost: cost/fold.ts); either way the report says
 * what it measured.
 *
 * Which epoch: a tenth of the calibration samples is kept out of training (validationSplit) and
 * every epoch is measured on it; the model of the best epoch whose validation values stayed safe
 * is the one judged on the held-out samples (early stopping on a validation set, Prechelt 1998).
 * The held-out samples choose nothing, so their drop stays an honest estimate; on ResNet-20 from
 * a far start the last epoch was neither the best nor safe (README, "The accuracy-cost frontier").
 */
import { Dataset, Split } from '../data/read';
import { polysOf } from '../fit/fit';
import { FINETUNE_DEFAULTS, FinetunedModel, finetune } from '../finetune/finetune';
import { Augmentation, augments } from '../finetune/augment';
import { Graph, GraphNode } from '../model/graph';
import { PolyActivation } from '../numerics/polynomial';
import { Progress } from '../profile/profiler';
import type { FinetuneReport } from '../report';
import type { Round } from './search';
import { Measurement, measureModel } from './verify';

export interface FinetuneStageInput {
  g: Graph;
  acts: GraphNode[];
  ds: Dataset;
  split: Split;
  round: Round;
  baseAccuracy: number;
  epochs: number;
  /** Flips and shifts of the training images (none if absent). */
  augment?: Augmentation;
  seed: number;
  batchSize: number;
  signal?: AbortSignal;
  onProgress?: Progress;
  /**
   * Keep the fine-tuned model only at this measured drop or below (default: the round's own, so
   * that fine-tuning never makes the analysis's result worse; a cheaper choice than the result
   * must meet the budget instead).
   */
  keepAtMost?: number;
  /** Levels of activation l evaluated as polynomial p (the cost model's, folds included). */
  layerDepth: (l: number, p: PolyActivation) => number;
}

/** Fewer calibration samples than this: no validation part (all train, the last epoch is judged). */
const MIN_FOR_VALIDATION = 50;

/**
 * The calibration samples fine-tuning trains on and the validation part it chooses the epoch by:
 * the last tenth (the split is seeded and shuffled: read.ts splitIndices), none for one epoch or
 * few samples.
 */
export function validationSplit(calib: Int32Array, epochs: number): { train: Int32Array; validation: Int32Array } {
  if (epochs < 2 || calib.length < MIN_FOR_VALIDATION) return { train: calib, validation: new Int32Array(0) };
  const v = Math.floor(calib.length / 10);
  return { train: calib.subarray(0, calib.length - v), validation: calib.subarray(calib.length - v) };
}

export async function finetuneStage(
  i: FinetuneStageInput,
): Promise<{ report: FinetuneReport; model: FinetunedModel | null }> {
  const pass = { batchSize: i.batchSize, signal: i.signal };
  const dropOf = (accuracy: number) => 100 * (i.baseAccuracy - accuracy);
  const perEpoch: FinetuneReport['perEpoch'] = [];
  const { train, validation } = validationSplit(i.split.calib, i.epochs);
  // The best epoch so far: safe on the validation part and on the held-out samples first (`ok`),
  // then its validation accuracy; its model and held-out measurement `m`. Only an epoch safe on
  // held-out can be kept, and safety on a tenth of the calibration samples is a weak proxy for it
  // (ResNet-20 at 5 bootstraps: the epoch best on 1,000 validation images, safe there, overflowed
  // on held-out while an earlier one safe on both measured 1.30 pp); the held-out accuracy chooses nothing.
  let best: { epoch: number; ok: boolean; accuracy: number; model: FinetunedModel; m: Measurement } | null = null;
  const r = await finetune(i.g, i.ds, train, polysOf(i.acts, i.round.fits, i.round.offsets), {
    ...FINETUNE_DEFAULTS,
    epochs: i.epochs,
    ...(i.augment ? { augment: i.augment } : {}),
    seed: i.seed,
    signal: i.signal,
    onProgress: i.onProgress,
    // Each epoch measured on the held-out samples too: where more epochs stop helping shows here.
    onEpoch: async (e, now) => {
      const m = await measureModel(now.graph, i.ds, i.split.heldout, i.acts, now.polys, pass);
      const v = validation.length ? await measureModel(now.graph, i.ds, validation, i.acts, now.polys, pass) : null;
      perEpoch.push({
        epoch: e.epoch,
        seconds: e.seconds,
        loss: e.loss,
        rangeLoss: e.rangeLoss,
        skipped: e.skipped,
        rangeWeight: e.rangeWeight,
        batchesOutside: e.batchesOutside,
        measuredDrop: dropOf(m.accuracy),
        safe: m.safe,
        validationAccuracy: v ? v.accuracy : null,
        validationSafe: v ? v.safe : null,
      });
      const ok = m.safe && (v?.safe ?? true);
      const accuracy = (v ?? m).accuracy;
      const better = !v || !best || (ok && !best.ok) || (ok === best.ok && accuracy > best.accuracy + 1e-12);
      if (better) best = { epoch: e.epoch, ok, accuracy, model: now, m };
    },
  });
  const chosen: { epoch: number; model: FinetunedModel; m: Measurement } = best ?? {
    epoch: r.epochs.length,
    model: r,
    m: await measureModel(r.graph, i.ds, i.split.heldout, i.acts, r.polys, pass),
  };
  const { m, model } = chosen;
  const drop = dropOf(m.accuracy);
  const before = polysOf(i.acts, i.round.fits, i.round.offsets);
  const levelsUp = i.acts
    .filter((a, l) => i.layerDepth(l, model.polys.get(a.id)!) > i.layerDepth(l, before.get(a.id)!))
    .map((a) => a.name);
  const kept = m.safe && drop <= (i.keepAtMost ?? i.round.drop) + 1e-9 && !levelsUp.length;
  const report: FinetuneReport = {
    epochs: i.epochs,
    ...FINETUNE_DEFAULTS,
    batchSize: r.batchSize,
    batchSizeAsked: FINETUNE_DEFAULTS.batchSize,
    labelWeight: r.labelWeight,
    temperature: r.temperature,
    ...(augments(r.augment) ? { augment: r.augment } : {}),
    seconds: r.epochs.length ? r.epochs[r.epochs.length - 1].seconds : 0,
    analysisDrop: i.round.drop,
    measuredDrop: drop,
    accuracy: m.accuracy,
    safe: m.safe,
    maxAbs: m.maxAbs,
    kept,
    perEpoch,
    validationSamples: validation.length,
    chosenEpoch: chosen.epoch,
    frozen: r.frozen,
    levelsUp,
    layers: finetuneLayers(i.acts, model.polys),
  };
  return { report, model: kept ? { graph: model.graph, polys: model.polys } : null };
}

/** The fine-tuned polynomials as the report records them (FinetuneReport.layers). */
export function finetuneLayers(acts: GraphNode[], polys: Map<number, PolyActivation>): FinetuneReport['layers'] {
  return acts.map((a) => {
    const p = polys.get(a.id)!;
    return {
      node: a.id,
      coeffs: Array.from(p.coeffs),
      channels: p.channels ?? null,
      channelOffset: p.channelOffset ? Array.from(p.channelOffset) : null,
    };
  });
}
