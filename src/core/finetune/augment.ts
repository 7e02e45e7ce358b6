/**
 * Label-preserving image augmentation for fine-tuning: each training sample, every time it is
 * drawn, mirrored left-right with probability 1/2 and shifted by up to `shift` pixels each way,
 * the border that comes in filled with zeros: the random crops of a zero-padded image and the
 * flips with which CIFAR ResNets are trained (He et al., "Deep residual learning", 2016, sec. 4.2;
 * Krizhevsky et al. 2012). Fine-tuning on a few thousand images otherwise memorises them
 * (ResNet-20 at 5 bootstraps: training loss 0.08 while validation stalled), and values the
 * network has never produced on training images are the ones that leave an interval on held-out
 * images (README, "The accuracy-cost frontier").
 *
 * Samples are channels last (height, width, channels), the graph's layout (data/read.ts). Off by
 * default: a mirrored digit or letter is not the same class, so the user says what holds.
 */
import { UserError } from '../errors';
import { Rng } from '../rng';

export interface Augmentation {
  /** Mirror left-right with probability 1/2. */
  flip: boolean;
  /** Largest shift in pixels along each spatial axis (0: none). */
  shift: number;
}

/** No flips, no shifts: the default. */
export const NO_AUGMENTATION: Augmentation = Object.freeze({ flip: false, shift: 0 });

/** The shift `shift` alone asks for: an eighth of the smaller side, rounded (4 on CIFAR's 32 and on MNIST's 28). */
export const defaultShift = (shape: number[]): number => Math.max(1, Math.round(Math.min(shape[0], shape[1]) / 8));

/**
 * `flip`, `shift` or `shift=N`, comma-separated (`none`: off). The shift without N is resolved
 * against the model's input (defaultShift) by `resolveAugmentation`: -1 until then.
 */
export function parseAugmentation(raw: string, flag: string): Augmentation {
  const a: Augmentation = { flip: false, shift: 0 };
  const bad = (what: string) =>
    new UserError(
      'OPTION_INVALID',
      `--${flag} ${raw}: ${what}`,
      `pass --${flag} flip, shift, shift=N (pixels) or several of them separated by commas, e.g. flip,shift=4; or none`,
    );
  for (const t of raw.split(',').map((s) => s.trim().toLowerCase())) {
    if (t === 'none' || t === '') continue;
    else if (t === 'flip') a.flip = true;
    else if (t === 'shift') a.shift = -1;
    else if (t.startsWith('shift=')) {
      const n = Number(t.slice(6));
      if (!Number.isInteger(n) || n < 0 || n > 64)
        throw bad(`the shift must be a whole number of pixels in 0..64, got ${t.slice(6)}`);
      a.shift = n;
    } else throw bad(`unknown augmentation "${t}"`);
  }
  return a;
}

/** Anything to do. */
export const augments = (a: Augmentation | null | undefined): a is Augmentation => !!a && (a.flip || a.shift !== 0);

/** The augmentation for samples of `shape`; an error naming the problem when they are not images. */
export function resolveAugmentation(a: Augmentation, shape: number[]): Augmentation {
  if (!augments(a)) return NO_AUGMENTATION;
  const flag = 'finetune-augment';
  if (shape.length !== 3 || shape[0] < 2 || shape[1] < 2)
    throw new UserError(
      'OPTION_INVALID',
      `--${flag} flips and shifts images, and this model's input is [${shape.join(', ')}], not (height, width, channels)`,
      `leave out --${flag} for this model`,
    );
  const shift = a.shift < 0 ? defaultShift(shape) : a.shift;
  if (shift >= Math.min(shape[0], shape[1]))
    throw new UserError(
      'OPTION_INVALID',
      `--${flag}: a shift of ${shift} pixels moves a ${shape[0]}x${shape[1]} image out of its frame`,
      `pass a shift below ${Math.min(shape[0], shape[1])}, e.g. shift=${defaultShift(shape)}`,
    );
  return { flip: a.flip, shift };
}

/** In words, for reports and logs ("flip, shift 4"; "none"). */
export function describeAugmentation(a: Augmentation | null | undefined): string {
  if (!augments(a)) return 'none';
  return [a.flip ? 'flip' : '', a.shift ? `shift ${a.shift}` : ''].filter(Boolean).join(', ');
}

/**
 * One sample of `shape` (height, width, channels) moved: output pixel (y, x) takes input pixel
 * (y + dy, x') with x' = x + dx, mirrored as W - 1 - x' when `flip`; zeros where that falls
 * outside the image. `src` and `dst` must not overlap.
 */
export function moveSample(
  src: Float32Array,
  dst: Float32Array,
  shape: number[],
  flip: boolean,
  dy: number,
  dx: number,
): void {
  const [H, W, C] = shape;
  for (let y = 0; y < H; y++) {
    const sy = y + dy;
    for (let x = 0; x < W; x++) {
      const o = (y * W + x) * C;
      const sx = flip ? W - 1 - (x + dx) : x + dx;
      if (sy < 0 || sy >= H || sx < 0 || sx >= W) dst.fill(0, o, o + C);
      else dst.set(src.subarray((sy * W + sx) * C, (sy * W + sx + 1) * C), o);
    }
  }
}

/**
 * Augments `m` samples of `shape` in `xs`, in place, drawing from `rng`: per sample a flip (if
 * asked) with probability 1/2, then a shift (dy, dx) uniform in [-shift, shift]^2 (moveSample).
 */
export function augmentBatch(xs: Float32Array, m: number, shape: number[], a: Augmentation, rng: Rng): void {
  if (!augments(a)) return;
  const per = shape[0] * shape[1] * shape[2];
  const src = new Float32Array(per);
  for (let s = 0; s < m; s++) {
    const flip = a.flip && rng.next() < 0.5;
    const dy = a.shift ? rng.int(2 * a.shift + 1) - a.shift : 0;
    const dx = a.shift ? rng.int(2 * a.shift + 1) - a.shift : 0;
    if (!flip && dy === 0 && dx === 0) continue;
    const sample = xs.subarray(s * per, (s + 1) * per);
    src.set(sample);
    moveSample(src, sample, shape, flip, dy, dx);
  }
}
