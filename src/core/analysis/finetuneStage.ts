/**
 * The optional last stage (`--finetune-epochs N`): approximation-aware fine-tuning of the
 * network's weights and the chosen polynomials' coefficients from the analysis's result, on the
 * calibration samples with their labels (finetune/finetune.ts), measured on the same held-out
 * samples as the analysis. Degrees and intervals do not change. The result is kept only when it
 * is safe, its measured drop is no worse than the analysis's, and no layer's new coefficients
 * cost more levels (a degree-2 square fold can be lost: cost/fold.ts); either way the report says
 * what it measured.
 */
import { Dataset, Split } from '../data/read';
import { polysOf } from '../fit/fit';
import { FINETUNE_DEFAULTS, FinetunedModel, finetune } from '../finetune/finetune';
import { Graph, GraphNode } from '../model/graph';
import { PolyActivation } from '../numerics/polynomial';
import { Progress } from '../profile/profiler';
import type { FinetuneReport } from '../report';
import type { Round } from './search';
import { measureModel } from './verify';

export interface FinetuneStageInput {
  g: Graph;
  acts: GraphNode[];
  ds: Dataset;
  split: Split;
  round: Round;
  baseAccuracy: number;
  epochs: number;
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

export async function finetuneStage(
  i: FinetuneStageInput,
): Promise<{ report: FinetuneReport; model: FinetunedModel | null }> {
  const pass = { batchSize: i.batchSize, signal: i.signal };
  const dropOf = (accuracy: number) => 100 * (i.baseAccuracy - accuracy);
  const perEpoch: FinetuneReport['perEpoch'] = [];
  const r = await finetune(i.g, i.ds, i.split.calib, polysOf(i.acts, i.round.fits, i.round.offsets), {
    ...FINETUNE_DEFAULTS,
    epochs: i.epochs,
    seed: i.seed,
    signal: i.signal,
    onProgress: i.onProgress,
    // Each epoch measured on the held-out samples: where more epochs stop helping shows here.
    onEpoch: async (e, now) => {
      const m = await measureModel(now.graph, i.ds, i.split.heldout, i.acts, now.polys, pass);
      perEpoch.push({
        epoch: e.epoch,
        seconds: e.seconds,
        loss: e.loss,
        rangeLoss: e.rangeLoss,
        skipped: e.skipped,
        measuredDrop: dropOf(m.accuracy),
        safe: m.safe,
      });
    },
  });
  const m = await measureModel(r.graph, i.ds, i.split.heldout, i.acts, r.polys, pass);
  const drop = dropOf(m.accuracy);
  const before = polysOf(i.acts, i.round.fits, i.round.offsets);
  const levelsUp = i.acts
    .filter((a, l) => i.layerDepth(l, r.polys.get(a.id)!) > i.layerDepth(l, before.get(a.id)!))
    .map((a) => a.name);
  const kept = m.safe && drop <= (i.keepAtMost ?? i.round.drop) + 1e-9 && !levelsUp.length;
  const report: FinetuneReport = {
    epochs: i.epochs,
    ...FINETUNE_DEFAULTS,
    batchSize: r.batchSize,
    batchSizeAsked: FINETUNE_DEFAULTS.batchSize,
    seconds: r.epochs.length ? r.epochs[r.epochs.length - 1].seconds : 0,
    analysisDrop: i.round.drop,
    measuredDrop: drop,
    accuracy: m.accuracy,
    safe: m.safe,
    maxAbs: m.maxAbs,
    kept,
    perEpoch,
    frozen: r.frozen,
    levelsUp,
    layers: finetuneLayers(i.acts, r.polys),
  };
  return { report, model: kept ? { graph: r.graph, polys: r.polys } : null };
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
