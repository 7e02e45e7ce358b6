/**
 * Folding a polynomial's scalars into the linear layer before it (src/core/cost/fold.ts): the
 * folded forms equal the series, cost what the cost model says on the simulator and on SEAL, and
 * the plan follows the graph (shared or non-linear inputs, per-channel signs).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { SimBackend, SimCt } from '../src/core/he/backend';
import { chooseParams } from '../src/core/he/params';
import { VecOps, evalFoldedCkks } from '../src/core/he/polyEval';
import { SealBackend } from '../src/core/he/seal';
import { Fold, affineLane, foldLevels, foldedInput, planFold, squareLane } from '../src/core/cost/fold';
import { chebval } from '../src/core/numerics/chebyshev';
import { loadModel } from '../src/core/model/load';
import { example } from './helpers';

const primes = (levels: number) => [
  2 ** 60,
  ...Array.from({ length: levels }, (_, i) => 2 ** 40 * (1 - 1.1e-5 * ((i % 7) + 1))),
];
const xs = [-3.7, -1.2, -0.05, 0, 0.4, 1.9, 5.5, 7.25];

test('affine and square forms equal the Chebyshev series (a ReLU-like, a concave and a near-linear lane)', () => {
  const lanes = [
    { coeffs: [1.1, 1.5, 0.45], a: -4, b: 8 },
    { coeffs: [-0.3, 0.8, -0.6], a: -2, b: 3 },
    { coeffs: [0.2, 2.0, 1e-3], a: -1, b: 1 },
  ];
  for (const l of lanes) {
    const q = squareLane(l)!;
    assert.ok(q, 'a square form exists');
    for (const x of xs) {
      const u = q.mul * x + q.add;
      const ref = chebval(x, l.coeffs, l);
      assert.ok(
        Math.abs(q.sign * u * u + q.offset - ref) < 1e-9 * Math.max(1, Math.abs(ref)),
        `square at ${x}: ${q.sign * u * u + q.offset} vs ${ref}`,
      );
    }
    assert.equal(q.sign, l.coeffs[2] > 0 ? 1 : -1);
  }
  const lin = { coeffs: [0.7, -1.3], a: -5, b: 2 };
  const q = affineLane(lin);
  for (const x of xs) assert.ok(Math.abs(q.mul * x + q.add - chebval(x, lin.coeffs, lin)) < 1e-12);
});

test('a degree-2 term too small against the linear one has no square form (it would lose over 10 bits); a constant has a trivial one', () => {
  assert.equal(squareLane({ coeffs: [0.1, 1, 1e-9], a: -1, b: 1 }), null);
  assert.equal(squareLane({ coeffs: [0.1, 1, 0], a: -1, b: 1 }), null);
  assert.deepEqual(squareLane({ coeffs: [0.5, 0, 0], a: -1, b: 1 }), { mul: 0, add: 0, sign: 1, offset: 0.5 });
});

type Vec = VecOps<SimCt>;
function simVec(be: SimBackend): Vec {
  return {
    mulVec: (c, v, e) => {
      const r = be.mulConst(c, 1, e);
      return { ...r, v: c.v.map((x, i) => x * v[i % v.length]) };
    },
    addVec: (c, v) => ({ ...c, v: c.v.map((x, i) => x + v[i % v.length]) }),
  };
}

test('folded forms on the simulator: levels 0/1 (degree 1) and 1/2 (degree 2), exact values and scale, per-lane signs', () => {
  const lanes = [
    { coeffs: [1.1, 1.5, 0.45], a: -4, b: 8 },
    { coeffs: [-0.3, 0.8, -0.6], a: -2, b: 3 },
  ];
  const cases: [Fold, number][] = [
    [{ form: 'affine', intoPrevious: true, mixedSigns: false, why: null }, 0],
    [{ form: 'affine', intoPrevious: false, mixedSigns: false, why: null }, 1],
    [{ form: 'square', intoPrevious: false, mixedSigns: true, why: null }, 2],
  ];
  for (const [fold, levels] of cases) {
    const deg1 = fold.form === 'affine';
    const ls = deg1 ? lanes.map((l) => ({ ...l, coeffs: l.coeffs.slice(0, 2) })) : lanes;
    const be = new SimBackend(primes(5));
    const input = xs.map((x, i) => foldedInput(ls[i % 2], fold, x));
    const out = evalFoldedCkks(be, be.fresh(input, 5, 2 ** 40), ls, fold, simVec(be));
    assert.equal(5 - out.level, levels, `${fold.form} ${fold.intoPrevious ? 'folded' : 'unfolded'}: levels`);
    assert.equal(
      5 - out.level,
      foldLevels(fold, 2).polyDepth + foldLevels(fold, 2).affineLevel,
      "the cost model's levels",
    );
    xs.forEach((x, i) =>
      assert.ok(
        Math.abs(out.v[i] - chebval(x, ls[i % 2].coeffs, ls[i % 2])) < 1e-9,
        `${fold.form} lane ${i % 2} at ${x}`,
      ),
    );
  }
  // One sign per ciphertext (rank-3 values): folded, one level, negated exactly.
  for (const l of lanes) {
    const fold: Fold = { form: 'square', intoPrevious: true, mixedSigns: false, why: null };
    const be = new SimBackend(primes(5));
    const out = evalFoldedCkks(
      be,
      be.fresh(
        xs.map((x) => foldedInput(l, fold, x)),
        5,
        2 ** 40,
      ),
      l,
      fold,
    );
    assert.equal(5 - out.level, 1);
    assert.equal(be.counts.mul, 1);
    xs.forEach((x, i) => assert.ok(Math.abs(out.v[i] - chebval(x, l.coeffs, l)) < 1e-9));
  }
  assert.ok(lanes[0].coeffs[2] > 0 && lanes[1].coeffs[2] < 0, "the lanes' squares take both signs");
});

test("SEAL: folded square forms (one sign, and mixed signs in one ciphertext) to ~1e-6 at the simulator's level and scale", async () => {
  const lanes = [
    { coeffs: [1.1, 1.5, 0.45], a: -4, b: 8 },
    { coeffs: [-0.3, 0.8, -0.6], a: -2, b: 3 },
  ];
  const params = chooseParams(2, 'test', []);
  const be = await SealBackend.create(params);
  try {
    const vec = be.tiledVecOps();
    const vals = Float64Array.from({ length: be.slots }, (_, i) => -2 + (5 * ((i * 7919) % be.slots)) / be.slots);
    const cases: [Fold, typeof lanes][] = [
      [{ form: 'square', intoPrevious: true, mixedSigns: false, why: null }, [lanes[1]]],
      [{ form: 'square', intoPrevious: false, mixedSigns: true, why: null }, lanes],
    ];
    for (const [fold, ls] of cases) {
      const ct = be.encrypt(vals.map((x, i) => foldedInput(ls[i % ls.length], fold, x)));
      const out = evalFoldedCkks(be, ct, ls.length > 1 ? ls : ls[0], fold, vec);
      const dec = be.decrypt(out);
      let err = 0;
      for (let i = 0; i < be.slots; i++)
        err = Math.max(err, Math.abs(dec[i] - chebval(vals[i], ls[i % ls.length].coeffs, ls[i % ls.length])));
      assert.ok(err < 1e-5, `${fold.mixedSigns ? 'mixed' : 'one sign'}: max error ${err}`);
      const sim = new SimBackend(Array.from({ length: params.levels + 1 }, (_, l) => be.prime(l)));
      const sOut = evalFoldedCkks(
        sim,
        sim.fresh([0.1], params.levels, 2 ** 40),
        ls.length > 1 ? ls : ls[0],
        fold,
        simVec(sim),
      );
      assert.equal(be.level(out), sOut.level);
      assert.equal(be.scale(out), sOut.scale);
      be.free(ct);
      be.free(out);
    }
  } finally {
    be.dispose();
  }
});

test("fold plans follow the graph: linear inputs fold, an Add does not, and a flat value's mixed signs unfold its map", async () => {
  const poly = (c2s: number[]) => ({
    coeffs: [0, 1, 0.5],
    a: -1,
    b: 1,
    channels: { intervals: c2s.map(() => ({ a: -2, b: 3 })), coeffs: c2s.map((c2) => [0.1, 1, c2]) },
  });
  const mlp = (await loadModel(example('mnist-mlp'))).graph;
  const act = mlp.nodes.find((n) => n.spec.op === 'activation')!;
  const C = act.shape[act.shape.length - 1];
  assert.deepEqual(planFold(mlp, act, poly(new Array(C).fill(0.4)), 2), {
    form: 'square',
    intoPrevious: true,
    mixedSigns: false,
    why: null,
  });
  const mixed = planFold(mlp, act, poly(Array.from({ length: C }, (_, i) => (i % 2 ? 0.4 : -0.4))), 2);
  assert.equal(mixed.form, 'square');
  assert.equal(mixed.intoPrevious, false);
  assert.equal(mixed.mixedSigns, true);
  assert.match(mixed.why!, /different signs/);
  assert.equal(planFold(mlp, act, poly(new Array(C).fill(1e-9)), 2).form, 'series');
  assert.deepEqual(planFold(mlp, act, poly(new Array(C).fill(0.4)), 1), {
    form: 'affine',
    intoPrevious: true,
    mixedSigns: false,
    why: null,
  });
  // Rank-3 values: one ciphertext per channel, so mixed signs still fold.
  const cnn = (await loadModel(example('mnist-cnn'))).graph;
  const conv = cnn.nodes.find((n) => n.spec.op === 'activation' && n.shape.length === 3)!;
  const Cc = conv.shape[2];
  assert.equal(
    planFold(cnn, conv, poly(Array.from({ length: Cc }, (_, i) => (i % 2 ? 0.4 : -0.4))), 2).intoPrevious,
    true,
  );
  // After an Add: nothing to fold into.
  const res = (await loadModel(example('mnist-resnet'))).graph;
  const afterAdd = res.nodes.find((n) => n.spec.op === 'activation' && res.nodes[n.inputs[0]].spec.op === 'add')!;
  const f = planFold(res, afterAdd, { coeffs: [0.1, 1, 0.4], a: -1, b: 1 }, 2);
  assert.equal(f.intoPrevious, false);
  assert.match(f.why!, /Add/);
});
