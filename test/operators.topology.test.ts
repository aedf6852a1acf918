import * as tf from '@tensorflow/tfjs';
import {
  concat,
  from,
  lastValueFrom,
  map,
  of,
  take,
  tap,
  throwError,
  toArray,
  type Observable,
  type OperatorFunction,
} from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Split } from '../src/data/dataset.js';
import { isGrngError } from '../src/errors.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import { softmaxCrossEntropyPerSample } from '../src/nn/losses.js';
import { evaluate } from '../src/operators/evaluate.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { sgd } from '../src/optim/sgd.js';
import type { GradientTransformation, UpdateContext } from '../src/optim/transform.js';
import { tensorsIn } from '../src/linalg/tree.js';
import type { Batch, MetricsRow, Params, Step } from '../src/types.js';
import { makeBatch, useTestBackend } from './helpers.js';

type TestBatch = ReturnType<typeof makeBatch>;

const scheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => expect(actual).toEqual(expected));

/** A GrngError notification as the marble frames see it (compared with toEqual). */
const grngErrorLike = (operator: string, step: number, code: string): unknown =>
  expect.objectContaining({
    name: 'GrngError',
    code,
    context: expect.objectContaining({ operator, step }),
  });

/** A malformed optimizer diagnostic (a vector where a scalar belongs), which metrics cannot pack. */
const notAScalar = (): tf.Scalar => tf.tensor1d([1, 2]) as unknown as tf.Scalar;

const tick = (ms = 10): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A 3-feature, 2-class host split. */
function split(rows: number[][], labels: number[]): Split {
  return { x: Float32Array.from(rows.flat()), y: Int32Array.from(labels), n: labels.length };
}

/** A step as `update`/`evaluate` receive it, with gradients of the model's shapes that the test owns. */
function makeStep(model: Sequential, batch: Batch, scale: number): Step {
  const grads = tf.tidy(() => {
    const tree: Params = {};
    for (const [key, p] of Object.entries(model.params)) tree[key] = tf.fill(p.shape, scale);
    return tree;
  });
  return { batch, loss: tf.scalar(1 + scale), correct: tf.scalar(1), grads };
}

function disposeStep(step: Step): void {
  tf.dispose(
    tensorsIn({
      loss: step.loss,
      correct: step.correct,
      grads: step.grads,
      signals: step.signals,
      update: step.update,
      evaluation: step.evaluation,
    }),
  );
}

/** Copies of a step's tensors, so it outlives the `next` call that emitted it. */
function keepStep(step: Step): Step {
  const cloneTree = (tree: Params): Params =>
    Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, tf.clone(v)]));
  return {
    batch: step.batch,
    loss: tf.clone(step.loss),
    correct: tf.clone(step.correct),
    grads: cloneTree(step.grads),
    ...(step.update
      ? {
          update: {
            updates: cloneTree(step.update.updates),
            learningRate: step.update.learningRate,
            diagnostics: Object.fromEntries(
              Object.entries(step.update.diagnostics).map(([k, v]) => [
                k,
                typeof v === 'number' ? v : tf.clone(v),
              ]),
            ),
          },
        }
      : {}),
    ...(step.evaluation
      ? { evaluation: tf.clone(step.evaluation), evaluationMs: step.evaluationMs ?? 0 }
      : {}),
  };
}

/** Wraps an optimizer to count `update` calls and remember every state tensor it ever made. */
function tracking<S>(
  inner: GradientTransformation<S>,
  failAtStep?: number,
): GradientTransformation<S> & { calls: number; stateTensors: tf.Tensor[] } {
  const tracker = {
    calls: 0,
    stateTensors: [] as tf.Tensor[],
    init(params: Params): S {
      const state = inner.init(params);
      tracker.stateTensors.push(...tensorsIn(state));
      return state;
    },
    update(updates: Params, state: S, params: Params, context: UpdateContext) {
      tracker.calls += 1;
      if (context.step === failAtStep) throw new Error('optimizer exploded');
      const result = inner.update(updates, state, params, context);
      tracker.stateTensors.push(...tensorsIn(result.state));
      return result;
    },
  };
  return tracker;
}

let model: Sequential;
let b0: TestBatch;
let b1: TestBatch;
let b2: TestBatch;
/** Two features where the model expects three. */
let narrow: TestBatch;
const owned: Array<{ dispose(): void }> = [];

beforeAll(async () => {
  await useTestBackend();
});

beforeEach(() => {
  model = mlp({ inputs: 3, layers: [{ units: 4 }, { units: 2 }], seed: 1 });
  b0 = makeBatch(
    [
      [1, 2, 3],
      [0, 1, 0],
    ],
    [0, 1],
    0,
  );
  b1 = makeBatch(
    [
      [0.5, -1, 2],
      [1, 1, 1],
    ],
    [1, 0],
    1,
  );
  b2 = makeBatch(
    [
      [2, 0, -1],
      [-1, 0.5, 0],
    ],
    [0, 1],
    2,
  );
  narrow = makeBatch(
    [
      [1, 2],
      [3, 4],
    ],
    [0, 1],
    1,
  );
  owned.push(model, b0, b1, b2, narrow);
});

afterEach(() => {
  for (const o of owned.splice(0)) o.dispose();
});

const goodTest = split(
  [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
    [1, 1, 1],
  ],
  [0, 1, 1, 0],
);
const narrowTest = split(
  [
    [1, 0],
    [0, 1],
    [1, 1],
    [0, 0],
  ],
  [0, 1, 1, 0],
);

/**
 * The conventions checklist for one synchronous operator. `inputs` makes the three source
 * values (owned by the test), `op` the operator under test, `broken` an operator and inputs
 * whose step 1 throws, `project` the plain data that crosses the marble boundary.
 */
interface Checklist<T> {
  readonly operator: 'forwardBackward' | 'update' | 'evaluate';
  inputs(): { a: T; b: T; c: T };
  op(): OperatorFunction<T, Step>;
  broken(): {
    op: OperatorFunction<T, Step>;
    inputs: { a: T; b: T; c: T };
    code: string;
    message: RegExp;
  };
  project(step: Step): unknown;
  /** The tensors the operator made for this step (disposed once downstream `next` returns). */
  produced(step: Step): tf.Tensor[];
  /** Plain data expected for a, b, c on the happy path. */
  expected(): { a: unknown; b: unknown; c: unknown };
}

function checklist<T>(spec: Checklist<T>): void {
  describe(`${spec.operator}: marble checklist`, () => {
    it('happy path: values and timing preserved, emitted tensors disposed after next', () => {
      const inputs = spec.inputs();
      const before = tf.memory().numTensors;
      const emitted: tf.Tensor[] = [];
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-b-c-|', inputs);
        const out = source.pipe(
          spec.op(),
          tap((s) => emitted.push(...spec.produced(s))),
          map((s) => spec.project(s)),
        );
        expectObservable(out).toBe('-a-b-c-|', spec.expected());
        expectSubscriptions(source.subscriptions).toBe('^------!');
      });
      expect(emitted.length).toBeGreaterThan(0);
      expect(emitted.filter((t) => !t.isDisposed)).toEqual([]);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('hot source: only values after subscription, timing preserved', () => {
      const inputs = spec.inputs();
      scheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
        const source = hot('-a-^-b-c-|', inputs);
        expectObservable(
          source.pipe(
            spec.op(),
            map((s) => spec.project(s)),
          ),
        ).toBe('--b-c-|', spec.expected());
        expectSubscriptions(source.subscriptions).toBe('^-----!');
      });
    });

    it('source error propagates unchanged', () => {
      const inputs = spec.inputs();
      const failure = new Error('source failed');
      let seen: unknown;
      const before = tf.memory().numTensors;
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-#', inputs, failure);
        const out = source.pipe(
          spec.op(),
          tap({ error: (e: unknown) => (seen = e) }),
          map((s) => spec.project(s)),
        );
        expectObservable(out).toBe('-a-#', spec.expected(), failure);
        expectSubscriptions(source.subscriptions).toBe('^--!');
      });
      expect(seen).toBe(failure);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('an error inside the step is a GrngError naming the operator and step; the source is unsubscribed at that frame', () => {
      const broken = spec.broken();
      let seen: unknown;
      const before = tf.memory().numTensors;
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-b-c-|', broken.inputs);
        const out = source.pipe(
          broken.op,
          tap({ error: (e: unknown) => (seen = e) }),
          map((s) => s.batch.step),
        );
        expectObservable(out).toBe('-a-#', { a: 0 }, grngErrorLike(spec.operator, 1, broken.code));
        expectSubscriptions(source.subscriptions).toBe('^--!');
      });
      expect(isGrngError(seen)).toBe(true);
      if (!isGrngError(seen)) return;
      expect(seen.code).toBe(broken.code);
      expect(seen.context).toMatchObject({ operator: spec.operator, step: 1 });
      expect(seen.message).toMatch(broken.message);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('empty source completes at once', () => {
      const before = tf.memory().numTensors;
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold<T>('|');
        expectObservable(
          source.pipe(
            spec.op(),
            map((s) => spec.project(s)),
          ),
        ).toBe('|');
        expectSubscriptions(source.subscriptions).toBe('(^!)');
      });
      expect(tf.memory().numTensors).toBe(before);
    });

    it('early unsubscribe unsubscribes the source at that frame', () => {
      const inputs = spec.inputs();
      const before = tf.memory().numTensors;
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-b-c-|', inputs);
        expectObservable(
          source.pipe(
            spec.op(),
            map((s) => spec.project(s)),
          ),
          '--!',
        ).toBe('-a', spec.expected());
        expectSubscriptions(source.subscriptions).toBe('^-!');
      });
      expect(tf.memory().numTensors).toBe(before);
    });

    it('take(1) downstream: one value, then the source is unsubscribed in the same frame', () => {
      const inputs = spec.inputs();
      const before = tf.memory().numTensors;
      scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-b-c-|', inputs);
        expectObservable(
          source.pipe(
            spec.op(),
            take(1),
            map((s) => spec.project(s)),
          ),
        ).toBe('-(a|)', spec.expected());
        expectSubscriptions(source.subscriptions).toBe('^!');
      });
      expect(tf.memory().numTensors).toBe(before);
    });

    it('synchronous source stopped by take(1): exactly one value, completes, no tensors left', () => {
      const { a, b, c } = spec.inputs();
      const before = tf.memory().numTensors;
      const values: unknown[] = [];
      let completed = false;
      of(a, b, c)
        .pipe(
          spec.op(),
          take(1),
          map((s) => spec.project(s)),
        )
        .subscribe({ next: (v) => values.push(v), complete: () => (completed = true) });
      expect(values).toEqual([spec.expected().a]);
      expect(completed).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });

    // Regression: a synchronous source must stop being pulled once take(1) unsubscribes, or
    // every remaining value would still be computed (for `update`: applied to the model).
    it('synchronous source stopped by take(1): the source is not pulled again', () => {
      const { a, b, c } = spec.inputs();
      let pulled = 0;
      of(a, b, c)
        .pipe(
          tap(() => (pulled += 1)),
          spec.op(),
          take(1),
        )
        .subscribe();
      expect(pulled).toBe(1);
    });
  });
}

checklist<Batch>({
  operator: 'forwardBackward',
  inputs: () => ({ a: b0, b: b1, c: b2 }),
  op: () => forwardBackward(model),
  broken: () => ({
    op: forwardBackward(model),
    inputs: { a: b0, b: narrow, c: b2 },
    code: 'shape',
    message: /2 features.*expects 3/,
  }),
  produced: (s) => [s.loss, s.correct, ...Object.values(s.grads)],
  project: (s) => ({
    step: s.batch.step,
    grads: Object.keys(s.grads).sort(),
    lossFinite: Number.isFinite(s.loss.dataSync()[0]!),
    correct: s.correct.dataSync()[0],
  }),
  expected: () => {
    const grads = ['dense0/bias', 'dense0/kernel', 'dense1/bias', 'dense1/kernel'];
    const correct = (b: Batch): number =>
      tf.tidy(
        () =>
          tf
            .sum(
              tf.cast(
                tf.equal(tf.argMax(model.apply(model.params, b.x).logits, 1), b.y),
                'float32',
              ),
            )
            .dataSync()[0]!,
      );
    return {
      a: { step: 0, grads, lossFinite: true, correct: correct(b0) },
      b: { step: 1, grads, lossFinite: true, correct: correct(b1) },
      c: { step: 2, grads, lossFinite: true, correct: correct(b2) },
    };
  },
});

describe('update', () => {
  let steps: { a: Step; b: Step; c: Step };
  beforeEach(() => {
    steps = { a: makeStep(model, b0, 1), b: makeStep(model, b1, 2), c: makeStep(model, b2, 3) };
    owned.push(...Object.values(steps).map((s) => ({ dispose: () => disposeStep(s) })));
  });

  // Momentum, so that the optimizer state holds tensors whose disposal the checks can see.
  const optimizer = (): GradientTransformation<unknown[]> =>
    sgd({ learningRate: 0.1, momentum: 0.9 });

  checklist<Step>({
    operator: 'update',
    inputs: () => steps,
    op: () => update(model, optimizer()),
    broken: () => ({
      op: update(model, tracking(optimizer(), 1)),
      inputs: steps,
      code: 'step',
      message: /^update at step 1: optimizer exploded$/,
    }),
    produced: (s) => Object.values(s.update?.updates ?? {}),
    project: (s) => ({
      step: s.batch.step,
      learningRate: s.update?.learningRate,
      updates: Object.keys(s.update?.updates ?? {}).sort(),
    }),
    expected: () => {
      const updates = ['dense0/bias', 'dense0/kernel', 'dense1/bias', 'dense1/kernel'];
      return {
        a: { step: 0, learningRate: 0.1, updates },
        b: { step: 1, learningRate: 0.1, updates },
        c: { step: 2, learningRate: 0.1, updates },
      };
    },
  });

  it('applies θ ← θ + u to the model (SGD with momentum, by hand)', () => {
    const initial = model.snapshot();
    owned.push({ dispose: () => tf.dispose(Object.values(initial)) });
    scheduler().run(({ cold, expectObservable }) => {
      expectObservable(
        cold('-a-b-|', steps).pipe(
          update(model, optimizer()),
          map((s) => s.batch.step),
        ),
      ).toBe('-a-b-|', { a: 0, b: 1 });
    });
    // Gradients are 1 then 2 everywhere: trace 1, then 2 + 0.9·1 = 2.9; θ = θ0 − 0.1·(1 + 2.9).
    for (const [key, p] of Object.entries(model.params)) {
      const expected = Array.from(initial[key]!.dataSync(), (v) => v - 0.1 * 3.9);
      const actual = Array.from(p.dataSync());
      actual.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    }
  });

  describe('optimizer state is disposed', () => {
    const run = (
      marbles: string,
      unsubscribe: string | null,
      failAtStep?: number,
    ): ReturnType<typeof tracking<unknown[]>> => {
      const tracked = tracking(optimizer(), failAtStep);
      scheduler().run(({ cold, expectObservable }) => {
        const out = cold(marbles, steps).pipe(
          update(model, tracked),
          map((s) => s.batch.step),
        );
        if (unsubscribe) expectObservable(out, unsubscribe).toBe('-a', { a: 0 });
        else if (failAtStep !== undefined)
          expectObservable(out).toBe('-a-#', { a: 0 }, grngErrorLike('update', failAtStep, 'step'));
        else expectObservable(out).toBe(marbles, { a: 0, b: 1, c: 2 });
      });
      return tracked;
    };

    it('on complete', () => {
      const before = tf.memory().numTensors;
      const tracked = run('-a-b-c-|', null);
      expect(tracked.calls).toBe(3);
      // init state + one new state per step: momentum traces, one per parameter.
      expect(tracked.stateTensors.length).toBe(4 * 4);
      expect(tracked.stateTensors.every((t) => t.isDisposed)).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('on error', () => {
      const before = tf.memory().numTensors;
      const tracked = run('-a-b-c-|', null, 1);
      expect(tracked.calls).toBe(2);
      expect(tracked.stateTensors.length).toBe(4 * 2);
      expect(tracked.stateTensors.every((t) => t.isDisposed)).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('on unsubscribe', () => {
      const before = tf.memory().numTensors;
      const tracked = run('-a-b-c-|', '--!');
      expect(tracked.calls).toBe(1);
      expect(tracked.stateTensors.length).toBe(4 * 2);
      expect(tracked.stateTensors.every((t) => t.isDisposed)).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('each subscription starts from a fresh state', () => {
      const tracked = tracking(optimizer());
      const op = update(model, tracked);
      scheduler().run(({ cold, expectObservable }) => {
        const source = cold('-a-|', steps);
        const out = source.pipe(
          op,
          map((s) => s.batch.step),
        );
        expectObservable(out).toBe('-a-|', { a: 0 });
        expectObservable(out).toBe('-a-|', { a: 0 });
      });
      // Two init states (one per subscription) + two updated states.
      expect(tracked.stateTensors.length).toBe(4 * 4);
      expect(tracked.stateTensors.every((t) => t.isDisposed)).toBe(true);
    });
  });

  const incomplete = (): GradientTransformation<{ t: tf.Tensor }> => ({
    init: () => ({ t: tf.zeros([2]) }),
    update: (_u, state) => ({
      updates: {},
      state: { t: tf.add(state.t, 1) },
      diagnostics: { d: tf.scalar(1) },
    }),
  });

  it('an optimizer that omits a parameter: an internal GrngError naming update, the step and the parameter', () => {
    let seen: unknown;
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a-b-|', steps);
      const out = source.pipe(
        update(model, incomplete()),
        tap({ error: (e: unknown) => (seen = e) }),
        map((s) => s.batch.step),
      );
      expectObservable(out).toBe('-#', {}, grngErrorLike('update', 0, 'internal'));
      expectSubscriptions(source.subscriptions).toBe('^!');
    });
    expect(isGrngError(seen) && seen.context.key).toBe('dense0/kernel');
  });

  // Regression: a step that fails its update check must dispose the state, updates and
  // diagnostics it made.
  it('an optimizer that omits a parameter: no tensors leak', () => {
    const before = tf.memory().numTensors;
    let failed = false;
    of(steps.a)
      .pipe(update(model, incomplete()))
      .subscribe({ error: () => (failed = true) });
    expect(failed).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('evaluate', () => {
  let steps: { a: Step; b: Step; c: Step };
  beforeEach(() => {
    steps = { a: makeStep(model, b0, 1), b: makeStep(model, b1, 2), c: makeStep(model, b2, 3) };
    owned.push(...Object.values(steps).map((s) => ({ dispose: () => disposeStep(s) })));
  });

  checklist<Step>({
    operator: 'evaluate',
    inputs: () => steps,
    op: () => evaluate(model, goodTest, { every: 2 }),
    broken: () => ({
      op: evaluate(model, narrowTest, { every: 2 }),
      inputs: steps,
      code: 'shape',
      message: /expects input of shape \[batch, 3\], got \[4, 2\]/,
    }),
    produced: (s) => (s.evaluation ? [s.evaluation] : []),
    project: (s) => ({ step: s.batch.step, evaluated: s.evaluation !== undefined }),
    expected: () => ({
      a: { step: 0, evaluated: false },
      b: { step: 1, evaluated: true },
      c: { step: 2, evaluated: false },
    }),
  });

  it('evaluation is [mean test loss, accuracy] of the current model, also at epoch ends', () => {
    const expected = tf.tidy(() => {
      const x = tf.tensor2d(goodTest.x, [goodTest.n, 3]);
      const y = tf.tensor1d(goodTest.y, 'int32');
      const logits = model.apply(model.params, x).logits;
      const loss = tf.mean(
        softmaxCrossEntropyPerSample(logits, tf.oneHot(y, 2).toFloat() as tf.Tensor2D),
      );
      const accuracy = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), y), 'float32'));
      return [loss.dataSync()[0]!, accuracy.dataSync()[0]!];
    });
    const endOfEpoch = makeBatch([[1, 1, 1]], [0], 2, { lastOfEpoch: true });
    const last = makeStep(model, endOfEpoch, 3);
    owned.push(endOfEpoch, { dispose: () => disposeStep(last) });
    const seen: Array<number[] | null> = [];
    of(steps.a, steps.b, last)
      .pipe(evaluate(model, goodTest, { every: 2, batchSize: 3 }))
      .subscribe((s) => seen.push(s.evaluation ? Array.from(s.evaluation.dataSync()) : null));
    expect(seen[0]).toBeNull();
    expect(seen[1]![0]).toBeCloseTo(expected[0]!, 5);
    expect(seen[1]![1]).toBeCloseTo(expected[1]!, 5);
    expect(seen[2]![0]).toBeCloseTo(expected[0]!, 5);
  });
});

describe('metrics (asynchronous read-back)', () => {
  let batches: TestBatch[];
  let steps: Step[];
  let before: number;

  beforeEach(() => {
    batches = [b0, b1, b2];
    steps = [];
    of(...batches)
      .pipe(
        forwardBackward(model),
        update(model, sgd({ learningRate: 0.1 })),
        evaluate(model, goodTest, { every: 2 }),
        map(keepStep),
      )
      .subscribe((s) => steps.push(s));
    owned.push(...steps.map((s) => ({ dispose: () => disposeStep(s) })));
    before = tf.memory().numTensors;
  });

  const scalar = (t: tf.Tensor): number => t.dataSync()[0]!;

  it('rows come out in step order and carry the steps’ values', async () => {
    const rows = await lastValueFrom(from(steps).pipe(metrics({ correlationEvery: 1 }), toArray()));
    expect(rows.map((r) => r.step)).toEqual([0, 1, 2]);
    rows.forEach((row, i) => {
      const step = steps[i]!;
      expect(row.epoch).toBe(0);
      expect(row.samples).toBe(2);
      expect(row.loss).toBeCloseTo(scalar(step.loss), 5);
      expect(row.accuracy).toBeCloseTo(scalar(step.correct) / 2, 5);
      expect(row.learningRate).toBe(0.1);
      const g2 = Object.values(step.grads).reduce(
        (s, g) => s + Array.from(g.dataSync()).reduce((a, v) => a + v * v, 0),
        0,
      );
      expect(row.gradNorm).toBeCloseTo(Math.sqrt(g2), 4);
      // Plain SGD: the update is −η g, perfectly correlated with −g, with norm η‖g‖.
      expect(row.updateNorm).toBeCloseTo(0.1 * Math.sqrt(g2), 4);
      expect(row.updateGradCorrelation).toBeCloseTo(1, 4);
    });
    expect(rows.map((r) => r.testLoss === null)).toEqual([true, false, true]);
    expect(rows[1]!.testLoss).toBeCloseTo(steps[1]!.evaluation!.dataSync()[0]!, 5);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('complete waits for the reads in flight; each batch held once and released once', async () => {
    const events: string[] = [];
    let sourceCompletedAfter = -1;
    const done = new Promise<void>((resolve, reject) => {
      from(steps)
        .pipe(tap({ complete: () => (sourceCompletedAfter = events.length) }), metrics())
        .subscribe({
          next: (row) => events.push(`row ${row.step}`),
          error: reject,
          complete: () => {
            events.push(`complete, released ${batches.map((b) => b.releases).join('')}`);
            resolve();
          },
        });
    });
    // The source has completed synchronously, no row is out yet, every batch is held.
    expect(sourceCompletedAfter).toBe(0);
    expect(events).toEqual([]);
    expect(batches.map((b) => [b.holds, b.releases])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
    await done;
    expect(events).toEqual(['row 0', 'row 1', 'row 2', 'complete, released 111']);
    expect(batches.map((b) => [b.holds, b.releases])).toEqual([
      [1, 1],
      [1, 1],
      [1, 1],
    ]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a source error arrives unchanged, after the rows already read', async () => {
    const failure = new Error('source failed');
    const events: Array<MetricsRow | Error> = [];
    const error = await new Promise<unknown>((resolve) => {
      concat(from(steps), throwError(() => failure) as Observable<Step>)
        .pipe(metrics())
        .subscribe({
          next: (row) => events.push(row),
          error: resolve,
          complete: () => resolve('completed'),
        });
    });
    expect(error).toBe(failure);
    expect(events.map((r) => (r instanceof Error ? r : r.step))).toEqual([0, 1, 2]);
    expect(batches.map((b) => [b.holds, b.releases])).toEqual([
      [1, 1],
      [1, 1],
      [1, 1],
    ]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('unsubscribing with reads in flight: no rows, every batch still released once, no tensors left', async () => {
    const rows: MetricsRow[] = [];
    const subscription = from(steps)
      .pipe(metrics())
      .subscribe((row) => rows.push(row));
    expect(batches.map((b) => b.holds)).toEqual([1, 1, 1]);
    subscription.unsubscribe();
    await tick();
    expect(rows).toEqual([]);
    expect(batches.map((b) => [b.holds, b.releases])).toEqual([
      [1, 1],
      [1, 1],
      [1, 1],
    ]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an error inside the step is a GrngError naming metrics and the step', async () => {
    const bad: Step = {
      ...steps[0]!,
      batch: makeBatch([[1, 2, 3]], [0], 7),
      update: {
        updates: steps[0]!.update!.updates,
        learningRate: 0.1,
        diagnostics: { broken: notAScalar() },
      },
    };
    owned.push(bad.batch as TestBatch, {
      dispose: () => tf.dispose(bad.update!.diagnostics.broken as tf.Tensor),
    });
    const start = tf.memory().numTensors;
    const error = await lastValueFrom(of(bad).pipe(metrics())).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGrngError(error)).toBe(true);
    if (!isGrngError(error)) return;
    expect(error.context).toMatchObject({ operator: 'metrics', step: 7 });
    expect(error.message).toMatch(/^metrics at step 7: /);
    expect(tf.memory().numTensors).toBe(start);
  });

  // Regression: an error while packing a step is queued behind the reads in flight, so rows
  // already being read still come out ("completion and errors wait for reads in flight").
  it('an error inside the step waits for the rows already in flight', async () => {
    const bad: Step = {
      ...steps[2]!,
      update: {
        updates: steps[2]!.update!.updates,
        learningRate: 0.1,
        diagnostics: { broken: notAScalar() },
      },
    };
    owned.push({ dispose: () => tf.dispose(bad.update!.diagnostics.broken as tf.Tensor) });
    const rows: number[] = [];
    await new Promise<void>((resolve) => {
      from([steps[0]!, steps[1]!, bad])
        .pipe(metrics())
        .subscribe({
          next: (row) => rows.push(row.step),
          error: () => resolve(),
          complete: resolve,
        });
    });
    expect(rows).toEqual([0, 1]);
  });
});
