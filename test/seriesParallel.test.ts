/** Depth on graphs (src/core/cost/seriesParallel.ts): the DP is exact on series-parallel networks, and a bound elsewhere. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  DepthTables,
  NodeChoices,
  SpExpr,
  criticalPath,
  decompose,
  fixedLevels,
  longestPath,
} from '../src/core/cost/seriesParallel';
import { Graph, GraphNode, Op } from '../src/core/model/graph';
import { Rng } from '../src/core/rng';

/** A graph builder: nodes in topological order, every shape [4]. */
class Builder {
  readonly nodes: GraphNode[] = [
    { id: 0, name: 'in', layer: 'in', className: 'InputLayer', inputs: [], shape: [4], spec: { op: 'input' } },
  ];
  add(spec: Op, inputs: number[]): number {
    const id = this.nodes.length;
    this.nodes.push({ id, name: `n${id}`, layer: `n${id}`, className: spec.op, inputs, shape: [4], spec });
    return id;
  }
  dense(from: number): number {
    return this.add({ op: 'dense', units: 4, kernel: new Float32Array(16), kernelShape: [4, 4], bias: null }, [from]);
  }
  act(from: number): number {
    return this.add({ op: 'activation', act: { kind: 'relu' } }, [from]);
  }
  graph(out: number): Graph {
    return {
      name: 'g',
      nodes: this.nodes,
      input: 0,
      output: out,
      inputShape: [4],
      notes: [],
      droppedFinalSoftmax: false,
    };
  }
}

/** A random series-parallel block from `from`: a chain, or branches joined by an Add, nested up to `depth`. */
function block(b: Builder, rng: Rng, from: number, depth: number): number {
  let x = from;
  const parts = 1 + rng.int(3);
  for (let p = 0; p < parts; p++) {
    if (depth > 0 && rng.next() < 0.5) {
      const k = 2 + rng.int(2);
      const ends = Array.from({ length: k }, (_, i) => (i === 0 && rng.next() < 0.4 ? x : block(b, rng, x, depth - 1)));
      x = b.add({ op: 'add' }, ends);
    } else {
      x = rng.next() < 0.6 ? b.act(b.dense(x)) : b.act(x);
    }
  }
  return x;
}

/** Exhaustive: the least energy with longest path <= d, for every d. */
function exhaustive(g: Graph, acts: number[], ch: Map<number, NodeChoices>, D: number): Float64Array {
  const fixed = fixedLevels(g);
  const best = new Float64Array(D + 1).fill(Infinity);
  const picks = new Array<number>(acts.length).fill(0);
  const rec = (i: number, energy: number) => {
    if (i === acts.length) {
      const lv = fixed.slice();
      acts.forEach((id, j) => {
        lv[id] = ch.get(id)!.depth[picks[j]];
      });
      const d = longestPath(g, lv);
      for (let k = d; k <= D; k++) if (energy < best[k]) best[k] = energy;
      return;
    }
    const c = ch.get(acts[i])!;
    for (let k = 0; k < c.depth.length; k++) {
      picks[i] = k;
      rec(i + 1, energy + c.energy[k]);
    }
  };
  rec(0, 0);
  return best;
}

function randomChoices(rng: Rng, acts: number[]): Map<number, NodeChoices> {
  return new Map(
    acts.map((id) => {
      const K = 2 + rng.int(3);
      // Deeper candidates are more accurate (less energy), as polynomials of higher degree are.
      const depth = Array.from({ length: K }, (_, k) => k + rng.int(2));
      const energy = Array.from({ length: K }, (_, k) => (K - k) * (0.5 + rng.next()));
      return [id, { depth, energy, mults: depth.map((d) => 2 * d) }];
    }),
  );
}

test('decompose + DepthTables: exact least energy for every depth on random residual-style graphs', () => {
  const rng = new Rng(3);
  let branched = 0;
  for (let t = 0; t < 400 && branched < 40; t++) {
    const b = new Builder();
    const out = b.dense(block(b, rng, 0, 2));
    const g = b.graph(out);
    const acts = g.nodes.filter((n) => n.spec.op === 'activation').map((n) => n.id);
    if (acts.length > 7 || acts.length < 2) continue;
    const expr = decompose(g);
    const hasParallel = (x: SpExpr): boolean =>
      x.kind === 'parallel' || (x.kind === 'series' && x.parts.some(hasParallel));
    if (hasParallel(expr)) branched++;
    const ch = randomChoices(rng, acts);
    const D = 40;
    const tab = new DepthTables(fixedLevels(g), ch, D).table(expr);
    const ref = exhaustive(g, acts, ch, D);
    for (let d = 0; d <= D; d++) {
      if (ref[d] === Infinity) {
        assert.equal(tab.e[d], Infinity, `trial ${t}, d=${d}`);
        continue;
      }
      assert.ok(Math.abs(tab.e[d] - ref[d]) < 1e-9, `trial ${t}, d=${d}: DP ${tab.e[d]} vs exhaustive ${ref[d]}`);
      // The picks behind the entry have that energy and fit in d levels.
      const picks = new Map<number, number>();
      tab.pick(d, picks);
      const lv = fixedLevels(g);
      let e = 0;
      for (const id of acts) {
        const k = picks.get(id)!;
        lv[id] = ch.get(id)!.depth[k];
        e += ch.get(id)!.energy[k];
      }
      assert.ok(longestPath(g, lv) <= d);
      assert.ok(Math.abs(e - tab.e[d]) < 1e-9);
    }
  }
  assert.ok(branched >= 40, `only ${branched} graphs had branches`);
});

test('two branches side by side cost the deeper one, where a chain would add them', () => {
  const b = new Builder();
  const s = b.dense(0);
  const l = b.act(b.dense(s));
  const r = b.act(b.dense(s));
  const out = b.dense(b.add({ op: 'concat', axis: 0 }, [l, r]));
  const g = b.graph(out);
  const expr = decompose(g);
  const acts = [l, r];
  const ch = new Map(acts.map((id) => [id, { depth: [3], energy: [1], mults: [5] }]));
  const tab = new DepthTables(fixedLevels(g), ch, 20).table(expr);
  // dense, dense, act (3), dense: 6 levels, not 9.
  const first = tab.e.findIndex((e) => e < Infinity);
  assert.equal(first, 6);
  const lv = fixedLevels(g);
  lv[l] = 3;
  lv[r] = 3;
  assert.deepEqual(
    criticalPath(g, lv, (n) => n.spec.op === 'activation'),
    { total: 6, activation: 3 },
  );
});

test('a graph that is not series-parallel is bounded: never fewer levels than its longest path', () => {
  // in -> a -> b, in -> c, a -> c (a bridge), b + c: the Wheatstone bridge, the smallest non-series-parallel graph.
  const bld = new Builder();
  const a = bld.act(bld.dense(0));
  const bb = bld.act(a);
  const c = bld.act(bld.add({ op: 'add' }, [0, a]));
  const out = bld.add({ op: 'add' }, [bb, c]);
  const g = bld.graph(out);
  const acts = [a, bb, c];
  const rng = new Rng(5);
  for (let t = 0; t < 20; t++) {
    const ch = randomChoices(rng, acts);
    const tab = new DepthTables(fixedLevels(g), ch, 30).table(decompose(g));
    const ref = exhaustive(g, acts, ch, 30);
    for (let d = 0; d <= 30; d++) {
      if (tab.e[d] === Infinity) continue;
      // Never better than exact (the bound only over-charges), and what it picks really fits.
      assert.ok(tab.e[d] >= ref[d] - 1e-9);
      const picks = new Map<number, number>();
      tab.pick(d, picks);
      const lv = fixedLevels(g);
      for (const id of acts) lv[id] = ch.get(id)!.depth[picks.get(id)!];
      assert.ok(longestPath(g, lv) <= d);
    }
  }
});
