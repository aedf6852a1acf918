import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, map, range, take, tap } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { disposeReplaced, mapParams, tensorsIn } from '../src/linalg/tree.js';
import { update } from '../src/operators/update.js';
import { adamw } from '../src/optim/adamw.js';
import { partition, type PartitionState } from '../src/optim/partition.js';
import { sgd } from '../src/optim/sgd.js';
import type { GradientTransformation, UpdateContext } from '../src/optim/transform.js';
import { decodeTree, encodeTree } from '../src/run/checkpoint.js';
import type { Params, Step } from '../src/types.js';
import { expectNoTensorLeftPerTest, useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});
expectNoTensorLeftPerTest();

const SHAPES: Record<string, number[]> = {
  'dense0/kernel': [3, 4],
  'dense0/bias': [4],
  'dense1/kernel': [4, 2],
  'dense1/bias': [2],
};
const KEYS = Object.keys(SHAPES);
const KERNELS = KEYS.filter((k) => k.endsWith('/kernel'));
const BIASES = KEYS.filter((k) => k.endsWith('/bias'));
const byKind = (key: string): string => (key.endsWith('/kernel') ? 'kernels' : 'biases');

/** Deterministic, different per key, step and element, so a swapped key or step shows. */
function filled(key: string, salt: number): tf.Tensor {
  const shape = SHAPES[key]!;
  const size = shape.reduce((a, b) => a * b, 1);
  const k = KEYS.indexOf(key) + 1;
  return tf.tensor(
    Array.from(
      { length: size },
      (_, i) => Math.sin(1.7 * k + 0.31 * i + 2.3 * salt) * (0.5 + 0.1 * k),
    ),
    shape,
  );
}

const initialParams = (keys: readonly string[]): Params =>
  Object.fromEntries(keys.map((k) => [k, filled(k, 100)]));
const gradientsAt = (keys: readonly string[], step: number): Params =>
  Object.fromEntries(keys.map((k) => [k, filled(k, step)]));

interface Trajectory {
  /** θ after each step, by key. */
  readonly thetas: Array<Record<string, number[]>>;
  readonly diagnostics: Array<Record<string, number>>;
}

/**
 * Runs an optimizer by hand over `steps` steps of the fixed gradients, as the update operator
 * would (tidy, dispose replaced state); `between` may swap the state after a step.
 */
async function train(
  opt: GradientTransformation<any>,
  keys: readonly string[],
  steps: number,
  between?: (state: unknown, step: number) => Promise<unknown>,
): Promise<Trajectory> {
  let theta = initialParams(keys);
  let state: unknown = tf.tidy(() => opt.init(theta) as tf.TensorContainer);
  const thetas: Trajectory['thetas'] = [];
  const diagnostics: Trajectory['diagnostics'] = [];
  for (let step = 0; step < steps; step++) {
    const grads = gradientsAt(keys, step);
    const result = tf.tidy(() => {
      const r = opt.update(grads, state, theta, { step });
      return {
        updates: r.updates,
        state: r.state,
        diagnostics: r.diagnostics ?? {},
      } as unknown as tf.TensorContainer;
    }) as unknown as {
      updates: Params;
      state: unknown;
      diagnostics: Record<string, tf.Scalar | number>;
    };
    const next = mapParams(theta, (p, k) => tf.add(p, result.updates[k]!));
    diagnostics.push(
      Object.fromEntries(
        Object.entries(result.diagnostics).map(([name, v]) => [
          name,
          typeof v === 'number' ? v : v.dataSync()[0]!,
        ]),
      ),
    );
    const kept = new Set([...tensorsIn(result.state), ...Object.values(grads)]);
    tf.dispose([
      ...Object.values(result.updates).filter((u) => !kept.has(u)),
      ...tensorsIn(result.diagnostics),
      ...Object.values(grads),
      ...Object.values(theta),
    ]);
    disposeReplaced(state, result.state);
    state = between ? await between(result.state, step) : result.state;
    theta = next;
    thetas.push(Object.fromEntries(keys.map((k) => [k, Array.from(theta[k]!.dataSync())])));
  }
  tf.dispose([...Object.values(theta), ...tensorsIn(state)]);
  return { thetas, diagnostics };
}

/** A transformation that records what it was given and negates its input. */
function probe(
  tag: string,
  seen: { init: string[][]; update: string[][]; params: string[][]; contexts: UpdateContext[] },
): GradientTransformation<{ count: number }> {
  return {
    init(params) {
      seen.init.push(Object.keys(params));
      return { count: 0 };
    },
    update(updates, state, params, context) {
      seen.update.push(Object.keys(updates));
      seen.params.push(Object.keys(params));
      seen.contexts.push(context);
      return {
        updates: mapParams(updates, (u) => tf.neg(u)),
        state: { count: state.count + 1 },
        diagnostics: { calls: state.count + 1, [`only${tag}`]: 7 },
      };
    },
  };
}

describe('partition', () => {
  it('gives every parameter to exactly one group, with its own gradients and parameters, and merges the updates', () => {
    const seenA = {
      init: [] as string[][],
      update: [] as string[][],
      params: [] as string[][],
      contexts: [] as UpdateContext[],
    };
    const seenB = {
      init: [] as string[][],
      update: [] as string[][],
      params: [] as string[][],
      contexts: [] as UpdateContext[],
    };
    const seenUnused = {
      init: [] as string[][],
      update: [] as string[][],
      params: [] as string[][],
      contexts: [] as UpdateContext[],
    };
    const opt = partition({
      transforms: {
        kernels: probe('A', seenA),
        biases: probe('B', seenB),
        unused: probe('C', seenUnused),
      },
      label: (key) => byKind(key),
    });
    const params = initialParams(KEYS);
    const grads = gradientsAt(KEYS, 0);
    const state = opt.init(params);
    expect(Object.keys(state)).toEqual(['kernels', 'biases']);
    expect(seenA.init).toEqual([KERNELS]);
    expect(seenB.init).toEqual([BIASES]);
    expect(seenUnused.init).toEqual([]);

    const context: UpdateContext = { step: 4 };
    let result: { state: unknown; diagnostics: unknown } = {
      state: undefined,
      diagnostics: undefined,
    };
    tf.tidy(() => {
      const r = opt.update(grads, state, params, context);
      expect(Object.keys(r.updates)).toEqual(KEYS);
      for (const key of KEYS)
        expect(Array.from(r.updates[key]!.dataSync())).toEqual(
          Array.from(tf.neg(grads[key]!).dataSync()),
        );
      result = { state: r.state, diagnostics: r.diagnostics };
    });
    expect(seenA.update).toEqual([KERNELS]);
    expect(seenA.params).toEqual([KERNELS]);
    expect(seenB.update).toEqual([BIASES]);
    expect(seenB.params).toEqual([BIASES]);
    expect(seenUnused.update).toEqual([]);
    expect(seenA.contexts[0]).toBe(context);
    expect(seenB.contexts[0]).toBe(context);
    const everyKey = [...seenA.update[0]!, ...seenB.update[0]!];
    expect(everyKey.sort()).toEqual([...KEYS].sort());
    expect(new Set(everyKey).size).toBe(everyKey.length);
    // `calls` is reported by both groups, so both are prefixed; `onlyA`/`onlyB` by one each.
    expect(result.diagnostics).toEqual({
      'kernels/calls': 1,
      onlyA: 7,
      'biases/calls': 1,
      onlyB: 7,
    });
    expect(result.state).toEqual({ kernels: { count: 1 }, biases: { count: 1 } });
    tf.dispose([...Object.values(params), ...Object.values(grads)]);
  });

  it('keeps the primary group’s names on a collision and prefixes the others', () => {
    const none = () => ({
      init: [] as string[][],
      update: [] as string[][],
      params: [] as string[][],
      contexts: [] as UpdateContext[],
    });
    const opt = partition({
      transforms: { kernels: probe('A', none()), biases: probe('B', none()) },
      label: (key) => byKind(key),
      primary: 'biases',
    });
    const params = initialParams(KEYS);
    const grads = gradientsAt(KEYS, 0);
    const diagnostics = tf.tidy(
      () => opt.update(grads, opt.init(params), params, { step: 0 }).diagnostics,
    );
    expect(diagnostics).toEqual({ 'kernels/calls': 1, onlyA: 7, calls: 1, onlyB: 7 });
    tf.dispose([...Object.values(params), ...Object.values(grads)]);
  });

  it('equals SGD on the kernels and AdamW on the biases applied by hand, bit for bit, with a function or a map as label', async () => {
    const steps = 6;
    const makeSgd = () =>
      sgd({ learningRate: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-3 });
    const makeAdamw = () => adamw({ learningRate: 1e-2, weightDecay: 1e-2 });
    const kernelsByHand = await train(makeSgd(), KERNELS, steps);
    const biasesByHand = await train(makeAdamw(), BIASES, steps);
    const byFunction = await train(
      partition({
        transforms: { kernels: makeSgd(), biases: makeAdamw() },
        label: (key) => byKind(key),
      }),
      KEYS,
      steps,
    );
    const byMap = await train(
      partition({
        transforms: { kernels: makeSgd(), biases: makeAdamw() },
        label: Object.fromEntries(KEYS.map((k) => [k, byKind(k)])),
      }),
      KEYS,
      steps,
    );
    for (let step = 0; step < steps; step++) {
      const expected = { ...kernelsByHand.thetas[step], ...biasesByHand.thetas[step] };
      for (const key of KEYS) {
        expect(byFunction.thetas[step]![key]).toEqual(expected[key]);
        expect(byMap.thetas[step]![key]).toEqual(expected[key]);
      }
      expect(byFunction.diagnostics[step]).toEqual({
        'kernels/learningRate': kernelsByHand.diagnostics[step]!.learningRate,
        'biases/learningRate': biasesByHand.diagnostics[step]!.learningRate,
      });
    }
    // The parameters moved (a transform that did nothing would also "match" a no-op by hand).
    const start = filled('dense0/bias', 100);
    expect(byFunction.thetas[steps - 1]!['dense0/bias']).not.toEqual(Array.from(start.dataSync()));
    start.dispose();
  });

  it('keeps a plain state that a checkpoint saves and restores without changing the run', async () => {
    const make = () =>
      partition({
        transforms: {
          kernels: sgd({ learningRate: 0.05, momentum: 0.9 }),
          biases: adamw({ learningRate: 1e-2 }),
        },
        label: (key) => byKind(key),
      });
    const straight = await train(make(), KEYS, 6);
    let encodedSize = 0;
    const resumed = await train(make(), KEYS, 6, async (state, step) => {
      if (step !== 2) return state;
      const blobs: Array<Float32Array | Int32Array> = [];
      const encoded = await encodeTree(state, blobs);
      encodedSize = blobs.length;
      tf.dispose(tensorsIn(state));
      return decodeTree(encoded, blobs);
    });
    // SGD's momentum trace (2 kernels) and Adam's two moments (2 biases each) are tensors.
    expect(encodedSize).toBe(6);
    expect(resumed.thetas).toEqual(straight.thetas);
  });

  it('leaks no tensor over many steps in the update operator and disposes its state on complete and unsubscribe', async () => {
    const model = {
      params: Object.fromEntries(
        KEYS.map((k) => [k, tf.tidy(() => tf.variable(filled(k, 100)))]),
      ) as Record<string, tf.Variable>,
    };
    const opt = partition({
      transforms: {
        kernels: sgd({ learningRate: 0.05, momentum: 0.9 }),
        biases: adamw({ learningRate: 1e-2 }),
      },
      label: (key) => byKind(key),
    });
    const baseline = tf.memory().numTensors;
    const stepAt = (i: number): Step =>
      ({ batch: { step: i }, grads: gradientsAt(KEYS, i), loss: tf.scalar(0) }) as unknown as Step;
    const counts: number[] = [];
    await lastValueFrom(
      range(0, 40).pipe(
        map(stepAt),
        update(model, opt),
        tap((step) => {
          tf.dispose([...Object.values(step.grads), step.loss]);
          counts.push(tf.memory().numTensors);
        }),
      ),
    );
    expect(counts).toHaveLength(40);
    // After the first step: the state (momentum, moments) plus the step's updates, the same every step.
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(counts[1]).toBeGreaterThan(baseline);
    expect(tf.memory().numTensors).toBe(baseline);

    await lastValueFrom(
      range(0, 40).pipe(
        map(stepAt),
        update(model, opt),
        tap((step) => tf.dispose([...Object.values(step.grads), step.loss])),
        take(3),
      ),
    );
    expect(tf.memory().numTensors).toBe(baseline);
    tf.dispose(Object.values(model.params));
  });
});

describe('partition errors', () => {
  const transforms = () => ({ kernels: sgd({ learningRate: 0.1 }), biases: adamw() });

  function errorOf(fn: () => unknown): {
    message: string;
    code?: string;
    context?: Record<string, unknown>;
  } {
    try {
      tf.tidy(() => {
        fn();
      });
    } catch (error) {
      expect(isGrngError(error)).toBe(true);
      return error as { message: string; code: string; context: Record<string, unknown> };
    }
    throw new Error('expected an error');
  }

  it('names the parameter that has no group', () => {
    const params = initialParams(KEYS);
    const byFunction = errorOf(() =>
      partition({
        transforms: transforms(),
        label: (key) => (key === 'dense1/bias' ? (undefined as unknown as string) : byKind(key)),
      }).init(params),
    );
    expect(byFunction.message).toBe(
      'partition: parameter "dense1/bias" has no group (label gave undefined; groups: kernels, biases)',
    );
    expect(byFunction.context).toMatchObject({ option: 'label', parameter: 'dense1/bias' });
    const byMap = errorOf(() =>
      partition({
        transforms: transforms(),
        label: { 'dense0/kernel': 'kernels', 'dense0/bias': 'biases', 'dense1/kernel': 'kernels' },
      }).init(params),
    );
    expect(byMap.message).toMatch(/^partition: parameter "dense1\/bias" has no group/);
    tf.dispose(Object.values(params));
  });

  it('names the parameter whose label has no transform, at construction for a map', () => {
    const params = initialParams(KEYS);
    const byFunction = errorOf(() =>
      partition({
        transforms: transforms(),
        label: (key) => (key === 'dense0/bias' ? 'adam' : byKind(key)),
      }).init(params),
    );
    expect(byFunction.message).toBe(
      'partition: parameter "dense0/bias" is labelled "adam", which has no transform (transforms: kernels, biases)',
    );
    expect(byFunction.context).toMatchObject({
      option: 'label',
      parameter: 'dense0/bias',
      label: 'adam',
    });
    expect(
      errorOf(() => partition({ transforms: transforms(), label: { 'dense0/kernel': 'kernel' } }))
        .message,
    ).toMatch(/parameter "dense0\/kernel" is labelled "kernel", which has no transform/);
    tf.dispose(Object.values(params));
  });

  it('rejects a map that labels a parameter the model lacks', () => {
    const params = initialParams(KEYS);
    const label = {
      ...Object.fromEntries(KEYS.map((k) => [k, byKind(k)])),
      'dense9/kernel': 'kernels',
    };
    expect(
      errorOf(() => partition({ transforms: transforms(), label }).init(params)).message,
    ).toMatch(/label names parameter "dense9\/kernel", which the model does not have/);
    tf.dispose(Object.values(params));
  });

  it('rejects bad options by name', () => {
    expect(errorOf(() => partition({ transforms: {}, label: byKind })).message).toMatch(
      /invalid partition transforms/,
    );
    expect(
      errorOf(() =>
        partition({
          transforms: { kernels: { init: () => ({}) } as unknown as GradientTransformation },
          label: byKind,
        }),
      ).message,
    ).toMatch(/invalid partition transforms\.kernels/);
    expect(
      errorOf(() =>
        partition({
          transforms: transforms(),
          label: 'kernels' as unknown as Record<string, string>,
        }),
      ).message,
    ).toMatch(/invalid partition label/);
    expect(
      errorOf(() => partition({ transforms: transforms(), label: byKind, primary: 'bias' }))
        .message,
    ).toMatch(/invalid partition primary: "bias" \(expected one of kernels, biases\)/);
    expect(
      errorOf(() => partition({ transforms: transforms(), label: byKind, labels: byKind } as never))
        .message,
    ).toMatch(/partition option "labels"/);
  });

  it('says so when the state holds no entry for a group (state from another partition)', () => {
    const params = initialParams(KEYS);
    const grads = gradientsAt(KEYS, 0);
    const opt = partition({ transforms: transforms(), label: byKind });
    const state = tf.tidy(
      () => opt.init(params) as unknown as tf.TensorContainer,
    ) as unknown as PartitionState;
    const error = errorOf(() => opt.update(grads, { kernels: state.kernels }, params, { step: 0 }));
    expect(error.message).toMatch(/no entry for group "biases" \(it holds kernels\)/);
    tf.dispose([...Object.values(params), ...Object.values(grads), ...tensorsIn(state)]);
  });
});
