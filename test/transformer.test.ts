// The GPT-style model and its curvature (docs/algorithms.md, "Transformers"; spec layers.md §3–6):
// the gpt: spec, causality, twice-differentiable attention softmax / layer norm / GELU (Hg against
// finite differences), the sequence-dense block's exactness against the explicit float64 Fisher
// (expand with a per-token loss, reduce with tokens pooled before the loss), the preconditioned
// direction against a float64 Kronecker solve, parameter groups and the KL clip, and all seven
// optimizers training a tiny GPT on text without leaking.
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, tap, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { precondition } from '../src/curvature/blocks/index.js';
import { sequenceDenseBlock } from '../src/curvature/blocks/sequenceDense.js';
import { resolveCurvatureOptions } from '../src/curvature/options.js';
import { dampFactors } from '../src/curvature/damping.js';
import { secondMoments } from '../src/curvature/factors.js';
import { textWindows } from '../src/data/textDataset.js';
import { inverseSpd } from '../src/linalg/inverseSpd.js';
import { buildModel } from '../src/nn/buildModel.js';
import { parseGptSpec, parseModelJson } from '../src/nn/modelSpec.js';
import { modelFamily } from '../src/nn/modelFamily.js';
import { addBroadcast, mulBroadcast, softmaxLastAxis } from '../src/nn/ops.js';
import { sequenceDenseLayer } from '../src/nn/sequenceDense.js';
import type { Sequential } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { computeStep, forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { createOptimizer } from '../src/optim/registry.js';
import { finiteDifferenceHg, hessianGradientProduct } from '../src/optim/reng.js';
import { batches } from '../src/streams/batches.js';
import type { Batch, Params } from '../src/types.js';
import { averageGram, kron, maxError, solve, uniform } from './convReference.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const gpt = (spec: string, seed = 1): Sequential =>
  buildModel(parseGptSpec(spec), { seed, description: spec });

/** A batch of token windows [m, ctx] with next-token labels [m·ctx]. */
function tokenBatch(tokens: number[][], labels: number[]): Batch {
  return {
    step: 0,
    epoch: 0,
    index: 0,
    batchesPerEpoch: 1,
    lastOfEpoch: false,
    last: false,
    size: tokens.length,
    x: tf.tensor2d(tokens),
    y: tf.tensor1d(labels, 'int32'),
    hold: () => () => undefined,
  };
}

describe('the gpt: spec', () => {
  it('reads L, d, h, ctx and the optional m and v in any order, and names a bad part', () => {
    const spec = parseGptSpec('gpt:ctx64-h4-d128-L2');
    expect(spec.inputShape).toEqual([64]);
    expect(spec.layers.map((l) => l.type)).toEqual([
      'embedding',
      'transformerBlock',
      'transformerBlock',
      'layerNorm',
      'dense',
    ]);
    expect(parseGptSpec('gpt:L1-d8-h2-ctx4-m24-v16').layers).toContainEqual({
      type: 'transformerBlock',
      heads: 2,
      hidden: 24,
    });
    expect(() => parseGptSpec('gpt:L2-d130-h4-ctx64')).toThrow(/width 130 is not a multiple/);
    expect(() => parseGptSpec('gpt:L2-d128-h4')).toThrow(/no context \(ctx<n>\)/);
    expect(() => parseGptSpec('gpt:L2-d128-h4-ctx64-x3')).toThrow(/part "x3"/);
    expect(() => parseGptSpec('gpt:L2-L3-d128-h4-ctx64')).toThrow(/blocks \(L\) is given twice/);
  });

  it('gpt:L2-d128-h4-ctx64 has the PyTorch twin’s 470,784 parameters (bench/torch_models.py)', () => {
    const model = gpt('gpt:L2-d128-h4-ctx64');
    expect(model.size).toBe(470_784);
    expect(model.outputs).toBe(256);
    expect(model.labelsPerExample).toBe(64);
    expect(modelFamily(model)).toBe('transformer');
    expect(model.signalLayers.map((l) => l.name)).toEqual([
      ...['q', 'k', 'v', 'o', 'fc1', 'fc2'].map((p) => `block0/${p}`),
      ...['q', 'k', 'v', 'o', 'fc1', 'fc2'].map((p) => `block1/${p}`),
      'dense0',
    ]);
    model.dispose();
  });

  it('a JSON model file describes the same model', () => {
    const json = JSON.stringify({
      inputShape: [8],
      layers: [
        { type: 'embedding', vocabulary: 16, width: 8 },
        { type: 'transformerBlock', heads: 2, hidden: 24 },
        { type: 'layerNorm' },
        { type: 'dense', units: 16 },
      ],
    });
    const fromJson = buildModel(parseModelJson(json, 'gpt.json'), { seed: 4 });
    const fromSpec = gpt('gpt:L1-d8-h2-ctx8-m24-v16', 4);
    expect(Object.keys(fromJson.params)).toEqual(Object.keys(fromSpec.params));
    for (const key of Object.keys(fromSpec.params))
      expect(fromJson.params[key]!.arraySync()).toEqual(fromSpec.params[key]!.arraySync());
    fromJson.dispose();
    fromSpec.dispose();
    expect(() =>
      parseModelJson(
        JSON.stringify({ inputShape: [8], layers: [{ type: 'transformerBlock', heads: 0 }] }),
        'bad.json',
      ),
    ).toThrow(/layer 0 \(transformerBlock\): heads must be a whole number ≥ 1/);
  });
});

describe('causal attention', () => {
  it('changing token t+1 leaves the logits at positions ≤ t unchanged, and changes later ones', () => {
    const model = gpt('gpt:L2-d16-h2-ctx8-v32', 3);
    const window = [5, 9, 20, 3, 17, 8, 30, 1];
    for (const t of [0, 3, 6]) {
      const changed = [...window];
      changed[t + 1] = (changed[t + 1]! + 7) % 32;
      const [a, b] = tf.tidy(() =>
        [window, changed].map((w) =>
          model.apply(model.params as Params, tf.tensor2d([w])).logits.arraySync(),
        ),
      ) as [number[][], number[][]];
      for (let p = 0; p <= t; p++)
        expect(b[p], `position ${p}, token ${t + 1} changed`).toEqual(a[p]);
      expect(maxError(b[t + 1], a[t + 1]).error).toBeGreaterThan(1e-4);
    }
    model.dispose();
  });
});

describe('twice-differentiable ops', () => {
  it('softmaxLastAxis, addBroadcast and mulBroadcast equal tfjs’s values and first gradients', () => {
    tf.tidy(() => {
      const x = tf.randomNormal([3, 4, 5], 0, 2, 'float32', 1);
      const b = tf.randomNormal([4, 5], 0, 1, 'float32', 2);
      const w = tf.randomNormal([3, 4, 5], 0, 1, 'float32', 3);
      const close = (p: tf.Tensor, q: tf.Tensor) =>
        expect(maxError(p.arraySync(), q.arraySync()).error).toBeLessThan(1e-5);
      close(softmaxLastAxis(x), tf.softmax(x));
      const ours = tf.grads((u: tf.Tensor, v: tf.Tensor) =>
        tf.sum(tf.mul(mulBroadcast(addBroadcast(u, v), v), w)),
      )([x, b]);
      const theirs = tf.grads((u: tf.Tensor, v: tf.Tensor) =>
        tf.sum(tf.mul(tf.mul(tf.add(u, v), v), w)),
      )([x, b]);
      close(ours[0]!, theirs[0]!);
      close(ours[1]!, theirs[1]!);
      close(
        tf.grad((u: tf.Tensor) => tf.sum(tf.mul(softmaxLastAxis(u), w)))(x),
        tf.grad((u: tf.Tensor) => tf.sum(tf.mul(tf.softmax(u), w)))(x),
      );
    });
  });

  it('RENG’s Hg through embeddings, layer norm, attention softmax and GELU equals central differences', () => {
    const model = gpt('gpt:L1-d8-h2-ctx4-m16-v8', 6);
    const next = uniform(9);
    const tokens = Array.from({ length: 3 }, () =>
      Array.from({ length: 4 }, () => Math.floor(((next() + 1) / 2) * 8)),
    );
    const batch = tokenBatch(
      tokens,
      tokens.flatMap((w) => w.map((t) => (t + 3) % 8)),
    );
    const params = model.params as Params;
    const keys = Object.keys(params);
    const gradientAt = (theta: Params): Params => {
      model.load(theta);
      const { value, owned } = computeStep(model, batch, false);
      const grads = Object.fromEntries(keys.map((k) => [k, tf.clone(value.grads[k]!)]));
      tf.dispose([...owned]);
      return grads;
    };
    const theta = model.snapshot();
    const g = gradientAt(theta);
    const exact = hessianGradientProduct(model, params, batch.x, batch.y);
    // A central difference along g/‖g‖: the layer norm over the small initial embeddings makes the
    // curvature steep (‖Hg‖ ≈ 70‖g‖ here), so the step is 1e-3 (measured: relative error 0.15 at
    // 1e-2, 0.016 at 3e-3, 0.0018 at 1e-3, as h²), not the 1e-2 of RENG's own forward difference.
    const norm = Math.sqrt(
      keys.reduce((sum, k) => sum + tf.sum(tf.square(g[k]!)).dataSync()[0]!, 0),
    );
    const h = 1e-3;
    const shifted = (sign: number) =>
      gradientAt(
        Object.fromEntries(
          keys.map((k) => [k, tf.tidy(() => tf.add(theta[k]!, tf.mul(g[k]!, (sign * h) / norm)))]),
        ),
      );
    const [plus, minus] = [shifted(1), shifted(-1)];
    model.load(theta);
    const flat = (tree: Params) => keys.flatMap((k) => Array.from(tree[k]!.dataSync()));
    const approx = keys.flatMap((k) =>
      Array.from(tf.tidy(() => tf.mul(tf.sub(plus[k]!, minus[k]!), norm / (2 * h))).dataSync()),
    );
    const e = flat(exact);
    const scale = Math.max(...e.map(Math.abs));
    expect(scale).toBeGreaterThan(1e-2);
    e.forEach((v, i) => expect(Math.abs(approx[i]! - v) / scale).toBeLessThan(1e-2));
    // Every parameter, attention's and the norms' included, has curvature through the path, but
    // the key bias: softmax is invariant to a shift of a query's scores, so its Hg is ~0.
    for (const key of keys.filter((k) => k !== 'block0/k/bias'))
      expect(Math.max(...Array.from(exact[key]!.dataSync()).map(Math.abs)), key).toBeGreaterThan(
        1e-3,
      );
    tf.dispose([theta, g, exact, plus, minus].flatMap((tree) => Object.values(tree)));
    tf.dispose([batch.x, batch.y]);
    model.dispose();
  });
});

describe('the sequence-dense block', () => {
  // Token-wise linear layer s_t = W a_t + b on N sequences of R tokens, d inputs, u outputs;
  // a Gaussian (squared-error) output with Hessian H = RᵀR: the sampled δ ~ N(0, H) realised
  // exactly by repeating the batch once per row R_c of the square root, δ = √u·R_c.
  const [n, positions, d, u] = [2, 3, 3, 3];
  const layer = sequenceDenseLayer({ name: 'seq', positions, inputs: d, units: u });
  const next = uniform(17);
  const inputs = Array.from({ length: n }, () =>
    Array.from({ length: positions }, () => Array.from({ length: d }, () => next() * 2 - 1)),
  );
  const root = Array.from({ length: u }, () => Array.from({ length: u }, () => next() * 2 - 1));
  const h = root[0]!.map((_, i) =>
    root[0]!.map((__, j) => root.reduce((s, r) => s + r[i]! * r[j]!, 0)),
  );
  /** Jacobian of one output vector (u) by V = [W; b] (row-major (d+1)×u) for input ā. */
  const jacobian = (a: number[]) =>
    Array.from({ length: u }, (_, o) =>
      [...a, 1].flatMap((ai) => Array.from({ length: u }, (__, p) => (p === o ? ai : 0))),
    );
  const factorsOf = (deltaRows: (c: number, seq: number, t: number) => number[], context = {}) =>
    tf.tidy(() => {
      const block = sequenceDenseBlock(layer, { sequenceFactors: 'expand', ...context });
      const x = tf.tensor3d(Array.from({ length: u }, () => inputs).flat());
      const delta = tf.tensor3d(
        Array.from({ length: u }, (_, c) =>
          inputs.map((seq, s) => seq.map((_, t) => deltaRows(c, s, t))),
        ).flat(),
      );
      const rows = block.statisticRows(x, delta, { rowsPerExample: positions });
      const { a, g } = secondMoments(rows.a, rows.g);
      return { a: a.arraySync(), g: g.arraySync() };
    });

  it('expand: A ⊗ G equals the exact Fisher of a per-token loss (every token a row)', () => {
    const exact = averageGram(
      inputs.flatMap((seq) => seq.map(jacobian)),
      h,
    );
    const factors = factorsOf((c) => root[c]!.map((v) => v * Math.sqrt(u)));
    const e = maxError(kron(factors.a, factors.g), exact);
    expect(e.scale).toBeGreaterThan(0.1);
    expect(e.error / e.scale).toBeLessThan(2e-6);
  });

  it('reduce: Ā_red ⊗ Ḡ_red equals the exact Fisher when the tokens are mean-pooled before the loss', () => {
    // Output per sequence mean_t s_t: J_n = jacobian(mean_t a_t), δ_t = R_c·√u / R at every token.
    const exact = averageGram(
      inputs.map((seq) =>
        jacobian(seq[0]!.map((_, i) => seq.reduce((s, a) => s + a[i]!, 0) / positions)),
      ),
      h,
    );
    const factors = tf.tidy(() => {
      const block = sequenceDenseBlock(layer, { sequenceFactors: 'reduce' });
      const x = tf.tensor3d(Array.from({ length: u }, () => inputs).flat());
      const delta = tf.tensor3d(
        Array.from({ length: u }, (_, c) =>
          inputs.map((seq) => seq.map(() => root[c]!.map((v) => (v * Math.sqrt(u)) / positions))),
        ).flat(),
      );
      // One loss row per sequence: rowsPerExample 1.
      const rows = block.statisticRows(x, delta, { rowsPerExample: 1 });
      const { a, g } = secondMoments(rows.a, rows.g);
      return { a: a.arraySync(), g: g.arraySync() };
    });
    const e = maxError(kron(factors.a, factors.g), exact);
    expect(e.scale).toBeGreaterThan(0.01);
    expect(e.error / e.scale).toBeLessThan(2e-6);
  });

  it('reduce with a per-token loss keeps the per-row scale: G is divided by the rows per sequence', () => {
    const scaled = tf.tidy(() => {
      const block = sequenceDenseBlock(layer, { sequenceFactors: 'reduce' });
      const x = tf.tensor3d(inputs);
      const delta = tf.tensor3d(inputs.map((seq) => seq.map((_, t) => root[t % u]!)));
      const per = (rowsPerExample: number) => {
        const rows = block.statisticRows(x, delta, { rowsPerExample });
        return secondMoments(rows.a, rows.g).g.arraySync();
      };
      return { one: per(1), tokens: per(positions) };
    });
    expect(
      maxError(
        scaled.tokens,
        scaled.one.map((r) => r.map((v) => v / positions)),
      ).error,
    ).toBeLessThan(1e-5);
  });

  it('the preconditioned direction equals a float64 solve of (A_γ ⊗ G_γ) vec U = vec V', () => {
    const block = sequenceDenseBlock(
      sequenceDenseLayer({ name: 'seq', positions: 4, inputs: 3, units: 4 }),
    );
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const x = tf.randomNormal([5, 4, 3], 0, 1, 'float32', 11);
      const delta = tf.randomNormal([5, 4, 4], 0, 1, 'float32', 12);
      const rows = block.statisticRows(x, delta);
      const { a, g } = secondMoments(rows.a, rows.g);
      const damped = dampFactors(a, g, 1e-2);
      const inverses = [{ aInverse: inverseSpd(damped.a, 80), gInverse: inverseSpd(damped.g, 80) }];
      const v: Params = {
        'seq/kernel': tf.randomNormal([3, 4], 0, 1, 'float32', 13),
        'seq/bias': tf.randomNormal([4], 0, 1, 'float32', 14),
      };
      const preconditioned = precondition([block], inverses, v);
      const explicit = solve(
        kron(damped.a.arraySync(), damped.g.arraySync()),
        block.toMatrix(v).arraySync().flat(),
      );
      const e = maxError(block.toMatrix(preconditioned).arraySync().flat(), explicit);
      expect(e.error / e.scale).toBeLessThan(1e-3);
    });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('parameter groups on a GPT', () => {
  it('every parameter is in exactly one group: projections and head preconditioned, embeddings and norms in AdamW', () => {
    const model = gpt('gpt:L1-d8-h2-ctx4-m16-v8');
    for (const name of ['kfac', 'ring', 'reng', 'rkalman'] as const) {
      const { groups } = createOptimizer(name, model);
      const all = Object.values(groups).flat();
      expect(new Set(all).size).toBe(all.length);
      expect([...all].sort()).toEqual(Object.keys(model.params).sort());
      expect(groups[name]!.every((k) => /\/(q|k|v|o|fc1|fc2)\/|^dense0\//.test(k))).toBe(true);
      expect([...groups.adamw!].sort()).toEqual(
        Object.keys(model.params)
          .filter((k) => /^embed0\/|\/ln[12]\/|^norm0\//.test(k))
          .sort(),
      );
    }
    for (const name of ['sgd', 'adamw', 'sophia'] as const)
      expect(Object.keys(createOptimizer(name, model).groups)).toEqual([name]);
    model.dispose();
  });

  it('the KL clip runs over the preconditioned group only: scaling the AdamW group’s gradient changes nothing of RING’s step', async () => {
    const model = gpt('gpt:L1-d8-h2-ctx4-m16-v8', 2);
    const tokens = [
      [1, 2, 3, 4],
      [5, 6, 7, 0],
    ];
    const labels = tokens.flatMap((w) => w.map((t) => (t + 1) % 8));
    const stepOnce = async (scale: number) => {
      const optimizer = createOptimizer('ring', model, { seed: 1 });
      const snapshot = model.snapshot();
      const rows = await lastValueFrom(
        batches(
          {
            x: Float32Array.from(tokens.flat()),
            y: Int32Array.from(labels),
            n: 2,
            shape: [4],
            targets: 4,
          },
          { batchSize: 2, epochs: 1, seed: 1 },
        ).pipe(
          forwardBackward(model, { signals: true }),
          tap((step) => {
            // The AdamW group's gradients ×scale, in place of the originals (the step owns both).
            for (const key of optimizer.groups.adamw!) {
              const scaled = tf.mul(step.grads[key]!, scale);
              step.grads[key]!.dispose();
              (step.grads as Params)[key] = scaled;
            }
          }),
          fisherScan(model, optimizer.curvature!.damping, optimizer.curvature!.options),
          update(model, optimizer.transform),
          metrics(),
          toArray(),
        ),
      );
      const after = Object.fromEntries(
        optimizer.groups.ring!.map((k) => [k, Array.from(model.params[k]!.dataSync())]),
      );
      model.load(snapshot);
      tf.dispose(Object.values(snapshot));
      return { klClip: rows[0]!.diagnostics.klClip, after };
    };
    const plain = await stepOnce(1);
    const scaled = await stepOnce(1000);
    expect(plain.klClip).toBeGreaterThan(0);
    expect(scaled.klClip).toBeCloseTo(plain.klClip!, 6);
    for (const key of Object.keys(plain.after))
      expect(maxError(scaled.after[key], plain.after[key]).error, key).toBeLessThan(1e-6);
    model.dispose();
  });
});

describe('training a tiny GPT on text', () => {
  const text = Buffer.from(
    'the quick brown fox jumps over the lazy dog. '.repeat(40) +
      'pack my box with five dozen liquor jugs. '.repeat(40),
  );
  const train = textWindows(new Uint8Array(text), 16);
  const run = async (name: string, options: Record<string, unknown>, steps: number) => {
    const model = gpt('gpt:L1-d16-h2-ctx16-m32-v128', 3);
    const optimizer = createOptimizer(name, model, { seed: 1, ...options } as never, {
      lenient: true,
    });
    const counts: number[] = [];
    const rows = await lastValueFrom(
      batches(train, { batchSize: 8, epochs: 100, steps, seed: 1 }).pipe(
        forwardBackward(model, { signals: optimizer.needsSignals }),
        optimizer.curvature
          ? fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options)
          : (s) => s,
        update(model, optimizer.transform),
        metrics(),
        tap(() => counts.push(tf.memory().numTensors)),
        toArray(),
      ),
    );
    model.dispose();
    return { rows, counts };
  };
  const meanLoss = (rows: { loss: number }[]) => rows.reduce((s, r) => s + r.loss, 0) / rows.length;

  it('pull pacing: the source makes the next batch only after the GPT step’s metrics are read', async () => {
    const model = gpt('gpt:L1-d16-h2-ctx16-m32-v128', 3);
    const optimizer = createOptimizer('kfac', model, { seed: 1 });
    let made = 0;
    let read = 0;
    let ahead = 0;
    await lastValueFrom(
      batches(train, { batchSize: 8, steps: 12, seed: 1 }).pipe(
        tap(() => {
          made += 1;
          ahead = Math.max(ahead, made - read);
        }),
        forwardBackward(model, { signals: true }),
        fisherScan(model, optimizer.curvature!.damping, optimizer.curvature!.options),
        update(model, optimizer.transform),
        metrics(),
        tap(() => (read += 1)),
        toArray(),
      ),
    );
    expect(read).toBe(12);
    expect(ahead).toBe(1);
    model.dispose();
  });

  for (const [name, options] of [
    ['sgd', { learningRate: 0.3 }],
    ['adamw', { learningRate: 3e-3 }],
    ['kfac', {}],
    ['ring', {}],
    ['reng', {}],
    ['kfac', { sequenceFactors: 'reduce' }],
    ['rkalman', {}],
    ['sophia', { learningRate: 3e-3 }],
  ] as const) {
    it(`${name} ${JSON.stringify(options)}: the loss falls and numTensors stays flat over 60 steps`, async () => {
      const before = tf.memory().numTensors;
      const { rows, counts } = await run(name, options, 60);
      expect(rows).toHaveLength(60);
      expect(rows.every((r) => Number.isFinite(r.loss))).toBe(true);
      expect(meanLoss(rows.slice(-10))).toBeLessThan(0.9 * meanLoss(rows.slice(0, 10)));
      // Per-token accuracy: a fraction of the 8·16 labels of a batch.
      expect(rows.every((r) => r.accuracy >= 0 && r.accuracy <= 1)).toBe(true);
      // Flat at the same point of every inverse period (the transformer default's), after the
      // first period made the state and factors.
      const period = resolveCurvatureOptions({}, 'transformer').inverseEvery;
      const atPeriod = counts.filter((_, i) => i >= period && i % period === 0);
      expect(atPeriod.length).toBeGreaterThanOrEqual(2);
      expect(new Set(atPeriod).size).toBe(1);
      expect(tf.memory().numTensors).toBe(before);
    }, 60_000);
  }
});
