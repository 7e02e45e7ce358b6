/**
 * Approximation-aware fine-tuning: the baseline he-approx is measured against (and, from
 * he-approx's result, the option for the last tenth of a point). Every activation is replaced by
 * a polynomial of a fixed degree on a fixed interval, and then the network's weights and the
 * polynomials' coefficients are trained together on labelled calibration images (or, without
 * labels, on the original model's outputs: distillation, fit/distill.ts): what users
 * otherwise do to make a network HE-friendly (Gilad-Bachrach et al., CryptoNets 2016; Baruch et
 * al., "A methodology for training homomorphic encryption friendly neural networks", 2022; the
 * fine-tuning step of AutoFHE, Ao & Boddeti 2024; Smart-PAF, Wang et al. 2024).
 *
 * Done as those papers do it:
 * - Adam (Kingma & Ba 2015) with a linear warm-up and a cosine decay over the planned epochs
 *   (schedule below), one step size for the weights and a relative one for the coefficients
 *   (TrainablePoly: steps in units of each layer's largest coefficient over its number of terms),
 *   both scaled down with the batch when the tape limits it (the linear scaling rule);
 * - gradient clipping by global norm (Pascanu et al. 2013): a polynomial outside its interval
 *   grows like T_d, and one such batch would otherwise throw the weights far away;
 * - Baruch et al.'s range loss: the mean squared excess of every activation input beyond its
 *   interval (in the interval's own units, so that layers weigh the same), plus the largest
 *   excess squared (rangeLoss), which keeps the values
 *   where the polynomial was fitted and where the chosen CKKS parameters hold them; while
 *   training, the polynomial's input is clamped to its interval (see finetune()). The range loss's
 *   weight is a multiplier that rises while training batches leave their intervals and falls back
 *   while they stay inside (RangeWeight), so that the network cannot trade the intervals for
 *   cross-entropy by leaning on the clamp;
 * - a batch whose loss is not finite is skipped, and counted.
 * The degrees, the intervals and the per-channel offsets never change: the levels stay what the
 * analysis priced. Seeded; progress and cancellation as every other stage.
 */
import { CancelledError } from '../errors';
import { Dataset } from '../data/read';
import { initBackend, tf } from '../model/backend';
import { frozenParams } from '../model/execute';
import { Graph, activationNodes } from '../model/graph';
import { PolyActivation, polyTerms } from '../numerics/polynomial';
import { Progress, captureValues, gather } from '../profile/profiler';
import { Rng } from '../rng';
import { TAPE_BYTES, tapeBatch } from '../fit/tune';
import { teacherRows } from '../fit/distill';
import { Replica, ReplicaSpec, SHARDS, Shard } from './replica';
import { Augmentation, NO_AUGMENTATION, augmentBatch, resolveAugmentation } from './augment';
import { StepHelper } from './stepHelper';

export { rangeLoss } from './replica';

export interface FinetuneOptions {
  /** Planned passes over the samples (the learning-rate schedule spans them). */
  epochs: number;
  batchSize: number;
  /** Adam step size of the weights (both step sizes are for this batch size; see finetune()). */
  lr: number;
  /**
   * Adam step size of the coefficients, relative to each layer's largest starting coefficient and
   * divided by its number of terms (TrainablePoly's perTerm).
   */
  coeffLr: number;
  /** Largest global norm of one step's gradient. */
  clipNorm: number;
  /**
   * Weight of the labels' cross-entropy, 0..1; the rest distils the original model's outputs
   * (fit/distill.ts). Default 1 (the labels alone); without labels it is 0 whatever is given.
   */
  labelWeight?: number;
  /** Distillation temperature (default 1). */
  temperature?: number;
  /** Weight of the range loss at the start, and its floor (RangeWeight raises it). */
  rangeWeight: number;
  /** The most RangeWeight may raise it to (default RangeWeight.MAX; rangeWeight itself: a fixed weight, for ablations). */
  rangeWeightMax?: number;
  /**
   * Fraction of each interval's half-width the range loss keeps free at both ends (default 0: the
   * whole interval; at most 0.5, larger values count as 0.5); training values then count as
   * outside from 1 - rangeMargin on.
   */
  rangeMargin?: number;
  /**
   * Flips and shifts of the training images (augment.ts), drawn anew every time a sample is; none
   * by default. Distillation's targets stay the original model's outputs on the unaugmented image.
   */
  augment?: Augmentation;
  seed: number;
  /** Stop after the epoch that reaches this many seconds (a wall-time cap), if given. */
  maxSeconds?: number;
  signal?: AbortSignal;
  onProgress?: Progress;
  /** After every step whose loss was finite: the step's cross-entropy and range loss (for traces). */
  onStep?: (step: number, loss: number, rangeLoss: number) => void;
  /** After every epoch, with the model as it is then (for per-epoch measurements; not timed). */
  onEpoch?: (e: EpochResult, now: FinetunedModel) => Promise<void>;
}

/**
 * Settings of the baseline, fine-tuning from the uniform fit, chosen so that it is not a straw
 * man: the best of a sweep of step sizes on mnist-cnn at he-approx's degrees (bench/finetune.ts
 * --lr X --coeff-lr Y --starts uniform; figures in the README, "Measurements behind the
 * defaults"). The largest steps won: the coefficients start far off and must move far. A deep
 * network wants smaller steps: bench/finetune.ts gives ResNet-20 its own.
 */
export const BASELINE_FINETUNE: Omit<FinetuneOptions, 'seed' | 'epochs'> = {
  batchSize: 64,
  lr: 1e-2,
  coeffLr: 0.12,
  clipNorm: 5,
  rangeWeight: 0.1,
};

/**
 * Settings of `--finetune-epochs`, which starts from he-approx's result: a start that is already
 * good wants small steps. The middle of a sweep from it on mnist-cnn (README, "Measurements
 * behind the defaults"): every setting first loses some of the start (Adam moves every weight by
 * about lr per step), and BASELINE_FINETUNE's steps from here lose most of it in the first epoch.
 */
export const FINETUNE_DEFAULTS: Omit<FinetuneOptions, 'seed' | 'epochs'> = {
  batchSize: 64,
  lr: 3e-4,
  coeffLr: 1.2e-2,
  clipNorm: 5,
  rangeWeight: 0.1,
  labelWeight: 1,
  temperature: 1,
};

export interface EpochResult {
  epoch: number;
  /** Training seconds so far (measurements in onEpoch excluded). */
  seconds: number;
  /** Mean loss against the targets (labels, the original's outputs or both) and range loss over the epoch's batches. */
  loss: number;
  rangeLoss: number;
  /** Batches whose loss was not finite, skipped. */
  skipped: number;
  /** The range loss's weight at the epoch's end (RangeWeight), and its batches with values beyond an interval. */
  rangeWeight: number;
  batchesOutside: number;
}

export interface FinetunedModel {
  graph: Graph;
  polys: Map<number, PolyActivation>;
}

export interface FinetuneResult extends FinetunedModel {
  epochs: EpochResult[];
  /** Layers whose kernels (or, for affine constants, all parameters) stayed fixed, and why. */
  frozen: { layer: string; reason: string }[];
  batchSize: number;
  /** The labels' weight and the temperature the loss used (labelWeight 0 without labels). */
  labelWeight: number;
  temperature: number;
  /** The augmentation used, resolved against the samples' shape (NO_AUGMENTATION: none). */
  augment: Augmentation;
}

/**
 * The step size's factor at `step` of `total`: a linear warm-up over the first epoch (at most a
 * fifth of the run; Goyal et al. 2017), then cosine decay to zero (Loshchilov & Hutter 2017).
 * Without the warm-up, the first steps at full size threw the weights far from where they were
 * trained (README, "Measurements behind the defaults").
 */
export function schedule(step: number, total: number, stepsPerEpoch: number): number {
  const warm = Math.max(1, Math.min(stepsPerEpoch, Math.ceil(total / 5)));
  if (step < warm) return (step + 1) / warm;
  return 0.5 * (1 + Math.cos((Math.PI * (step - warm)) / Math.max(1, total - warm)));
}

/**
 * The range loss's weight as a Lagrange multiplier of the constraint "every value inside its
 * interval", raised multiplicatively while it is violated (dual ascent; the multiplicative form
 * keeps it positive and scale-free: Arora, Hazan & Kale 2012's multiplicative weights). A fixed
 * weight lost to the cross-entropy on ResNet-20 at 5 bootstraps: the range loss rose from 0.01 to
 * 0.21 over eight epochs while the network learnt to rely on the training clamp, and every epoch's
 * held-out values overflowed without it (README, "The accuracy-cost frontier").
 *
 * After a batch with any value beyond an interval the weight grows by UP; after a batch with none
 * it shrinks by DOWN, never below the configured weight. UP^1 = DOWN^-9: it settles where about
 * one batch in ten leaves an interval, and held-out samples, which training never saw, then leave
 * them rarely; it rises tenfold in about 25 violating batches, less than an epoch of any data set
 * fine-tuning is given.
 */
export class RangeWeight {
  static readonly UP = 1.1;
  static readonly DOWN = 1.1 ** (1 / 9);
  /** Far above any cross-entropy: a bound against overflow. */
  static readonly MAX = 1e6;
  private w: number;
  constructor(
    private readonly floor: number,
    private readonly max = RangeWeight.MAX,
  ) {
    this.w = floor;
  }
  get value(): number {
    return this.w;
  }
  /** After a step: `outside` when any of the batch's values left its interval. */
  update(outside: boolean): void {
    this.w = outside ? Math.min(this.max, this.w * RangeWeight.UP) : Math.max(this.floor, this.w / RangeWeight.DOWN);
  }
}

/** Scales the gradients so that their global norm is at most `clip` (in place). */
function clipByGlobalNorm(grads: Float32Array[], clip: number): void {
  let sq = 0;
  for (const g of grads) for (let k = 0; k < g.length; k++) sq += g[k] * g[k];
  const norm = Math.sqrt(sq);
  if (!(norm > clip)) return;
  const f = clip / norm;
  for (const g of grads) for (let k = 0; k < g.length; k++) g[k] *= f;
}

/** The model as it is, as plain data. */
function snapshot(r: Replica): FinetunedModel {
  return { graph: r.ex.currentGraph(), polys: new Map(r.acts.map((a, k) => [a.id, r.polys[k].current()])) };
}

/**
 * The step sizes for the batch the tape allows. A batch the tape made smaller takes more steps per
 * epoch: both step sizes shrink in proportion (the linear scaling rule, Goyal et al. 2017;
 * coefficient tuning does the same): on ResNet-20, whose tape allows fewer samples than a batch,
 * the configured step size raised the cross-entropy within ten steps.
 */
function scaledRates(o: FinetuneOptions, batchSize: number): { lr: number; coeffLr: number } {
  return { lr: (o.lr * batchSize) / o.batchSize, coeffLr: (o.coeffLr * batchSize) / o.batchSize };
}

/** Layers whose parameters fine-tuning keeps fixed, and why (frozenParams). */
function frozenLayers(g: Graph): { layer: string; reason: string }[] {
  return g.nodes.flatMap((nd) => {
    const why = frozenParams(nd);
    return why ? [{ layer: nd.layer, reason: why }] : [];
  });
}

/** Adam's step size is a field tfjs reads at every update; the schedule sets it there. */
function setLr(opt: tf.AdamOptimizer, lr: number): void {
  (opt as unknown as { learningRate: number }).learningRate = lr;
}

/** What every training step shares. */
interface StepContext {
  /** This thread's copy of the network (the one trained), and the helper thread, if any. */
  replica: Replica;
  helper: StepHelper | null;
  ds: Dataset;
  /** The original model's logits on the training samples (rows in `idx` order), when distilling. */
  teacher: Float32Array | null;
  weightOpt: tf.AdamOptimizer;
  coeffOpt: tf.AdamOptimizer;
  rangeWeight: RangeWeight;
  /** The augmentation (resolved against the samples' shape) and its own random stream. */
  augment: Augmentation;
  augmentRng: Rng;
  o: FinetuneOptions;
}

/** Batch positions `pick` (in `idx`) cut into SHARDS shards of consecutive samples. */
function shardsOf(c: StepContext, idx: Int32Array, pick: Int32Array): Shard[] {
  const per = c.replica.spec.per;
  const size = Math.ceil(pick.length / SHARDS);
  const out: Shard[] = [];
  for (let s = 0; s < pick.length; s += size) {
    const p = pick.subarray(s, s + size);
    const batch = Int32Array.from(p, (i) => idx[i]);
    const labels = c.ds.labels;
    const xs = gather(c.ds, batch, 0, batch.length);
    augmentBatch(xs, batch.length, c.ds.sampleShape, c.augment, c.augmentRng);
    out.push({
      xs,
      m: batch.length,
      labels: labels ? Array.from(batch, (i) => labels[i]) : null,
      soft: c.teacher ? teacherRows(c.teacher, p, per) : null,
    });
  }
  return out;
}

/**
 * One step on a batch: each shard's loss and gradients (replica.ts; the last shard on the helper
 * thread when there is one), added with the shard's share of the samples as weight; the sum
 * clipped by its global norm, the weights and the coefficients each stepped by their own Adam.
 * `finite` false when a shard's loss is not (the step is then skipped); `rl` is measured either way.
 */
async function trainStep(c: StepContext, shards: Shard[]): Promise<{ ce: number; rl: number; finite: boolean }> {
  const { replica, helper } = c;
  const weight = c.rangeWeight.value;
  const m = shards.reduce((a, s) => a + s.m, 0);
  const far = helper && shards.length > 1 ? helper.run(replica.values(), shards[shards.length - 1], weight) : null;
  const results = shards.slice(0, far ? -1 : undefined).map((s) => replica.grads(s, weight));
  if (far) results.push(await far);
  let ce = 0;
  let rl = 0;
  results.forEach((r, k) => {
    ce += (r.ce * shards[k].m) / m;
    rl += (r.rl * shards[k].m) / m;
  });
  if (!results.every((r) => r.finite)) return { ce, rl, finite: false };
  const sum = replica.vars.map((_, v) => {
    const g = new Float32Array(results[0].grads![v].length);
    results.forEach((r, k) => {
      const f = shards[k].m / m;
      const gk = r.grads![v];
      for (let i = 0; i < g.length; i++) g[i] += f * gk[i];
    });
    return g;
  });
  clipByGlobalNorm(sum, c.o.clipNorm);
  tf.tidy(() => {
    const named = replica.vars.map((v, i) => ({ name: v.name, tensor: tf.tensor(sum[i], v.shape) }));
    if (replica.nWeights) c.weightOpt.applyGradients(named.slice(0, replica.nWeights));
    c.coeffOpt.applyGradients(named.slice(replica.nWeights));
  });
  return { ce, rl, finite: true };
}

/** Where a run stands in its schedule, and its full step sizes. */
interface Run {
  step: number;
  total: number;
  stepsPerEpoch: number;
  lr: number;
  coeffLr: number;
  batchSize: number;
}

/**
 * One pass over the samples `idx[order[k]]` (`order`: positions in `idx`, in this epoch's order),
 * batch by batch: the epoch's means and counts.
 */
async function trainEpoch(
  c: StepContext,
  idx: Int32Array,
  order: Int32Array,
  run: Run,
  e: number,
): Promise<Omit<EpochResult, 'epoch' | 'seconds'>> {
  const { o } = c;
  let lossSum = 0;
  let rangeSum = 0;
  let counted = 0;
  let skipped = 0;
  let outside = 0;
  for (let s = 0; s < order.length; s += run.batchSize) {
    if (o.signal?.aborted) throw new CancelledError();
    const f = schedule(run.step, run.total, run.stepsPerEpoch);
    setLr(c.weightOpt, run.lr * f);
    setLr(c.coeffOpt, run.coeffLr * f);
    const r = await trainStep(c, shardsOf(c, idx, order.subarray(s, s + run.batchSize)));
    // Values beyond an interval (or not finite: rl NaN) are a violation whether or not the loss is finite.
    const violated = r.rl !== 0;
    c.rangeWeight.update(violated);
    if (violated) outside++;
    if (r.finite) {
      lossSum += r.ce;
      rangeSum += r.rl;
      counted++;
      o.onStep?.(run.step, r.ce, r.rl);
    } else skipped++;
    run.step++;
    o.onProgress?.(run.step / run.total, `fine-tuning: epoch ${e + 1}/${o.epochs}, step ${run.step}/${run.total}`);
    if (run.step % 4 === 0) await new Promise<void>((r) => setImmediate(r));
  }
  const mean = (sum: number) => (counted ? sum / counted : NaN);
  return {
    loss: mean(lossSum),
    rangeLoss: mean(rangeSum),
    skipped,
    rangeWeight: c.rangeWeight.value,
    batchesOutside: outside,
  };
}

export async function finetune(
  g: Graph,
  ds: Dataset,
  idx: Int32Array,
  start: Map<number, PolyActivation>,
  o: FinetuneOptions,
): Promise<FinetuneResult> {
  const acts = activationNodes(g);
  for (const a of acts) if (!start.has(a.id)) throw new Error(`no starting polynomial for ${a.name}`);
  const spec: ReplicaSpec = {
    graph: g,
    acts: acts.map((a) => a.id),
    start: acts.map((a) => start.get(a.id)!),
    per: g.nodes[g.output].shape.reduce((a, b) => a * b, 1),
    shape: ds.sampleShape,
    lw: ds.labels ? Math.min(1, Math.max(0, o.labelWeight ?? 1)) : 0,
    T: o.temperature ?? 1,
    inner: 1 - Math.min(0.5, Math.max(0, o.rangeMargin ?? 0)),
  };
  const replica = new Replica(spec);
  // The tape holds every layer's Clenshaw recurrence, as in coefficient tuning (tune.ts).
  const batchSize = tapeBatch(acts, (a) => polyTerms(start.get(a.id)!) - 1, g, TAPE_BYTES, o.batchSize);
  const { lr, coeffLr } = scaledRates(o, batchSize);
  // The original model's logits, computed before any weight moves: the distillation targets.
  const t0 = Date.now();
  const teacher =
    spec.lw < 1
      ? (await captureValues(replica.ex, ds, idx, [g.output], {}, { batchSize, signal: o.signal })).get(g.output)!
      : null;
  const ctx: StepContext = {
    replica,
    helper: null,
    ds,
    teacher,
    weightOpt: tf.train.adam(lr),
    coeffOpt: tf.train.adam(coeffLr),
    rangeWeight: new RangeWeight(o.rangeWeight, Math.max(o.rangeWeight, o.rangeWeightMax ?? RangeWeight.MAX)),
    augment: resolveAugmentation(o.augment ?? NO_AUGMENTATION, ds.sampleShape),
    // A stream of its own, so that the samples' order is the same with or without augmentation.
    augmentRng: new Rng((o.seed ^ 0x5bd1e995) >>> 0),
    o,
  };
  const rng = new Rng(o.seed);
  const n = idx.length;
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const stepsPerEpoch = Math.ceil(n / batchSize);
  const run: Run = { step: 0, total: o.epochs * stepsPerEpoch, stepsPerEpoch, lr, coeffLr, batchSize };
  const epochs: EpochResult[] = [];
  try {
    ctx.helper = await StepHelper.start(spec, await initBackend());
    // The teacher's pass and the helper's start count as training time.
    let seconds = (Date.now() - t0) / 1000;
    for (let e = 0; e < o.epochs; e++) {
      const t1 = Date.now();
      rng.shuffle(order);
      const sums = await trainEpoch(ctx, idx, order, run, e);
      seconds += (Date.now() - t1) / 1000;
      const r: EpochResult = { epoch: e + 1, seconds, ...sums };
      epochs.push(r);
      if (o.onEpoch) await o.onEpoch(r, snapshot(replica));
      if (o.maxSeconds !== undefined && seconds >= o.maxSeconds) break;
    }
    return {
      ...snapshot(replica),
      epochs,
      frozen: frozenLayers(g),
      batchSize,
      labelWeight: spec.lw,
      temperature: spec.T,
      augment: ctx.augment,
    };
  } finally {
    await ctx.helper?.dispose();
    ctx.weightOpt.dispose();
    ctx.coeffOpt.dispose();
    replica.dispose();
  }
}
