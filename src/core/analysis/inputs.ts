/**
 * The analysis's inputs: the model in the one graph, the data checked against it and
 * preprocessed, and the seeded split into calibration and held-out samples.
 */
import * as path from 'path';
import { UserError } from '../errors';
import { Dataset, InputPrep, Split, loadDataset, splitIndices } from '../data/read';
import { GraphNode, activationNodes } from '../model/graph';
import { LoadedModel, loadModel } from '../model/load';
import type { AnalyzeOptions, Settings } from './settings';

export interface Inputs {
  model: LoadedModel;
  acts: GraphNode[];
  prep: InputPrep;
  /** Calibration and held-out samples in one index space (two files are concatenated). */
  ds: Dataset;
  split: Split;
}

export async function loadInputs(o: AnalyzeOptions, s: Settings): Promise<Inputs> {
  const model = await loadModel(o.model);
  o.onModel?.(model);
  const g = model.graph;
  const prep: InputPrep = { scale: o.scale ?? 'auto', normalize: o.normalize ?? null, layout: g.inputLayout };
  const calibDs = loadDataset(o.data, o.labels ?? null, g.inputShape, prep);
  const heldDs = o.heldoutData
    ? loadDataset(o.heldoutData, o.heldoutLabels ?? null, g.inputShape, { ...prep, role: 'held-out' })
    : null;
  if (heldDs && !!heldDs.labels !== !!calibDs.labels) {
    throw new UserError(
      'LABELS_MISMATCH',
      'labels were given for only one of --data and --heldout-data',
      'pass --labels and --heldout-labels together, or neither',
    );
  }
  let ds: Dataset;
  let split: Split;
  if (heldDs) {
    // Two files: concatenate them so one index space serves both; no sample crosses sides.
    const nCalib = o.calib ?? calibDs.count;
    const nHeld = o.heldout ?? Math.min(5000, heldDs.count);
    const a = splitIndices(calibDs.count, nCalib, 0, s.seed).calib;
    const b = splitIndices(heldDs.count, nHeld, 0, s.seed + 1).calib.map((i) => i + calibDs.count);
    const x = new Float32Array(calibDs.x.length + heldDs.x.length);
    x.set(calibDs.x);
    x.set(heldDs.x, calibDs.x.length);
    const labels = calibDs.labels && heldDs.labels ? Int32Array.from([...calibDs.labels, ...heldDs.labels]) : null;
    ds = {
      sampleShape: g.inputShape,
      count: calibDs.count + heldDs.count,
      x,
      labels,
      notes: [...calibDs.notes, ...heldDs.notes],
    };
    split = { calib: a, heldout: b };
  } else {
    ds = calibDs;
    const nCalib = o.calib ?? Math.min(5000, Math.floor(ds.count / 2));
    const nHeld = o.heldout ?? Math.min(5000, ds.count - nCalib);
    split = splitIndices(ds.count, nCalib, nHeld, s.seed);
  }
  // Labels are the calibration file's, then (two files) the held-out file's.
  const n = calibDs.count;
  checkLabelRange(ds.labels, g.nodes[g.output].shape, (i) =>
    i < n
      ? `${path.basename(o.labels ?? '')}: sample ${i}`
      : `${path.basename(o.heldoutLabels ?? '')}: sample ${i - n}`,
  );
  if (split.heldout.length < 1)
    throw new UserError('OPTION_INVALID', 'no held-out samples', 'pass --heldout N with N >= 1, or --heldout-data');
  return { model, acts: activationNodes(g), prep, ds, split };
}

/**
 * A label the model cannot output (class 10 of a 10-class model, a file counted from 1) would only
 * lower the measured accuracies, silently: refuse it, naming the file and the first such sample.
 * `where(i)` names the file and the sample within it of index i of the concatenated labels.
 */
function checkLabelRange(labels: Int32Array | null, outputShape: number[], where: (i: number) => string): void {
  if (!labels || outputShape.length !== 1 || outputShape[0] < 2) return;
  const classes = outputShape[0];
  const i = labels.findIndex((v) => v >= classes);
  if (i < 0) return;
  throw new UserError(
    'LABELS_MISMATCH',
    `${where(i)} is labelled ${labels[i]}, but the model has ${classes} classes (0..${classes - 1})`,
    'pass class indices counted from 0 (subtract 1 from a file counted from 1), for the model these labels belong to',
  );
}
