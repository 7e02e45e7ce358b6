/**
 * Fine-tuning's image augmentation (src/core/finetune/augment.ts): the move of one sample against
 * numpy's pad-crop-flip (the torchvision RandomCrop(padding) and RandomHorizontalFlip form), the
 * batch's draws, the option's parsing and its errors, and a fine-tuning run that uses it.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  augmentBatch,
  describeAugmentation,
  moveSample,
  parseAugmentation,
  resolveAugmentation,
} from '../src/core/finetune/augment';
import { UserError } from '../src/core/errors';
import { Rng } from '../src/core/rng';
import { analyze } from '../src/core/analyze';
import { MNIST_TEST_IMAGES, MNIST_TEST_LABELS, assertOneLineError, cli, example } from './helpers';

const SHAPE = [3, 4, 2];
const IMG = Float32Array.from({ length: 24 }, (_, i) => i + 1);

test('one sample moved: numpy pad-crop-flip reference', () => {
  // numpy: a = img[:, ::-1] if flip else img; np.pad(a, ((2,2),(2,2),(0,0)))[2+dy:2+dy+3, 2+dx:2+dx+4]
  const cases: [boolean, number, number, number[]][] = [
    [false, 1, -1, [0, 0, 9, 10, 11, 12, 13, 14, 0, 0, 17, 18, 19, 20, 21, 22, 0, 0, 0, 0, 0, 0, 0, 0]],
    [true, 0, 0, [7, 8, 5, 6, 3, 4, 1, 2, 15, 16, 13, 14, 11, 12, 9, 10, 23, 24, 21, 22, 19, 20, 17, 18]],
    [true, -1, 2, [0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 1, 2, 0, 0, 0, 0, 11, 12, 9, 10, 0, 0, 0, 0]],
  ];
  for (const [flip, dy, dx, want] of cases) {
    const out = new Float32Array(24).fill(NaN);
    moveSample(IMG, out, SHAPE, flip, dy, dx);
    assert.deepEqual(Array.from(out), want, `flip ${flip}, dy ${dy}, dx ${dx}`);
  }
});

test('a batch: every sample one of the allowed moves, flips about half, every shift drawn; seeded; none leaves it alone', () => {
  const m = 2000;
  const per = 24;
  const a = { flip: true, shift: 1 };
  const xs = new Float32Array(m * per);
  for (let s = 0; s < m; s++) xs.set(IMG, s * per);
  const copy = Float32Array.from(xs);
  augmentBatch(xs, m, SHAPE, a, new Rng(3));
  const moves: [boolean, number, number][] = [];
  for (const flip of [false, true])
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) moves.push([flip, dy, dx]);
  const expected = moves.map(([f, dy, dx]) => {
    const out = new Float32Array(per);
    moveSample(IMG, out, SHAPE, f, dy, dx);
    return out.join();
  });
  const counts = new Array(moves.length).fill(0);
  for (let s = 0; s < m; s++) {
    const k = expected.indexOf(xs.subarray(s * per, (s + 1) * per).join());
    assert.ok(k >= 0, `sample ${s} is none of the 18 moves`);
    counts[k]++;
  }
  const flipped = counts.slice(9).reduce((x, y) => x + y, 0);
  // Binomial(2000, 1/2): sd about 22; 9 shifts of 1/9 each per flip: every one drawn.
  assert.ok(Math.abs(flipped - m / 2) < 120, `${flipped} of ${m} flipped`);
  assert.ok(
    counts.every((c) => c > 50),
    `draws per move ${counts.join(', ')}`,
  );
  const again = Float32Array.from(copy);
  augmentBatch(again, m, SHAPE, a, new Rng(3));
  assert.deepEqual(again, xs, 'the same seed moves the same samples the same way');
  const none = Float32Array.from(copy);
  augmentBatch(none, m, SHAPE, { flip: false, shift: 0 }, new Rng(3));
  assert.deepEqual(none, copy);
});

test('--finetune-augment: parsed, resolved against the input, refused with the fix', () => {
  assert.deepEqual(parseAugmentation('flip,shift=4', 'finetune-augment'), { flip: true, shift: 4 });
  assert.deepEqual(parseAugmentation('none', 'finetune-augment'), { flip: false, shift: 0 });
  assert.deepEqual(resolveAugmentation(parseAugmentation('shift', 'x'), [32, 32, 3]), { flip: false, shift: 4 });
  assert.equal(describeAugmentation({ flip: true, shift: 4 }), 'flip, shift 4');
  assert.throws(
    () => parseAugmentation('flip,rotate', 'finetune-augment'),
    (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /unknown augmentation "rotate"/);
      assert.match(e.fix, /flip, shift, shift=N/);
      return true;
    },
  );
  assert.throws(() => parseAugmentation('shift=2.5', 'finetune-augment'), /whole number of pixels/);
  assert.throws(
    () => resolveAugmentation({ flip: true, shift: 0 }, [784]),
    /input is \[784\], not \(height, width, channels\)/,
  );
  assert.throws(() => resolveAugmentation({ flip: false, shift: 40 }, [32, 32, 3]), /out of its frame/);
});

test('analyze: augmentation without fine-tuning refused; with it the report records it and the run differs from one without', async () => {
  const o = {
    model: example('mnist-cnn'),
    data: MNIST_TEST_IMAGES,
    labels: MNIST_TEST_LABELS,
    calib: 600,
    heldout: 400,
    finetuneEpochs: 2,
    targetLevels: 7,
  };
  await assert.rejects(
    analyze({ ...o, finetuneEpochs: 0, finetuneAugment: { flip: false, shift: 2 } }),
    /--finetune-augment.*no fine-tuning epochs/,
  );
  const plain = await analyze(o);
  // The editor's setting gives the flag's text: the same.
  const moved = await analyze({ ...o, finetuneAugment: 'shift' });
  assert.equal(plain.finetune!.augment, undefined);
  assert.deepEqual(moved.finetune!.augment, { flip: false, shift: 4 });
  assert.notDeepEqual(
    moved.finetune!.perEpoch.map((e) => e.loss),
    plain.finetune!.perEpoch.map((e) => e.loss),
  );
});

test('the CLI: a bad --finetune-augment is refused in one line before anything is loaded', () => {
  const r = cli(
    'analyze',
    example('mnist-cnn'),
    '--data',
    MNIST_TEST_IMAGES,
    '--finetune-epochs',
    '1',
    '--finetune-augment',
    'rotate',
  );
  assertOneLineError(r, /--finetune-augment rotate: unknown augmentation "rotate".*Fix: pass --finetune-augment flip/);
});
