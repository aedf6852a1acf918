import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.js';
import { isGrngError } from '../src/errors.js';
import {
  disableNativeBlas,
  enableNativeBlas,
  nativeBlasAvailable,
  nativeBlasCounts,
  nativeBlasLabel,
  nativeBlasRequested,
} from '../src/runtime/nativeBlas.js';
import { softmaxCrossEntropy } from '../src/nn/losses.js';
import { mlp } from '../src/nn/sequential.js';
import type { Params } from '../src/types.js';
import { needsPackage } from './systemPackages.js';

describe('nativeBlasRequested', () => {
  it('reads GRNG_BLAS: 1/true on, unset/empty/0/false off', () => {
    expect(nativeBlasRequested({ GRNG_BLAS: '1' })).toBe(true);
    expect(nativeBlasRequested({ GRNG_BLAS: 'true' })).toBe(true);
    for (const off of ['0', 'false']) expect(nativeBlasRequested({ GRNG_BLAS: off })).toBe(false);
    // Unset: used when it loads.
    for (const unset of [undefined, ''])
      expect(nativeBlasRequested(unset === undefined ? {} : { GRNG_BLAS: unset })).toBe('auto');
  });

  it('rejects other values with an error naming the variable', () => {
    let error: unknown;
    try {
      nativeBlasRequested({ GRNG_BLAS: 'yes' });
    } catch (caught) {
      error = caught;
    }
    expect(isGrngError(error) && error.code).toBe('invalid-option');
    expect((error as Error).message).toMatch(/^invalid GRNG_BLAS: "yes"/);
  });
});

const available = nativeBlasAvailable();

/** Runs `f` on the wasm backend's own kernel and on the BLAS one; returns both results. */
async function both(
  f: () => tf.Tensor,
  path: 'native' | 'fallback',
): Promise<{ wasm: Float32Array; blas: Float32Array; shape: number[] }> {
  disableNativeBlas();
  const w = f();
  const wasm = (await w.data()) as Float32Array;
  expect(enableNativeBlas().enabled).toBe(true);
  const before = nativeBlasCounts();
  const b = f();
  // Without this the comparison could pass with the wasm kernel on both sides.
  expect(nativeBlasCounts()[path]).toBe(before[path] + 1);
  const blas = (await b.data()) as Float32Array;
  expect(b.shape).toEqual(w.shape);
  const shape = b.shape;
  tf.dispose([w, b]);
  return { wasm, blas, shape };
}

/** max |blas − wasm| / max |wasm|: the error relative to the product's scale. */
function relativeError(wasm: Float32Array, blas: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < wasm.length; i++) {
    diff = Math.max(diff, Math.abs(blas[i]! - wasm[i]!));
    scale = Math.max(scale, Math.abs(wasm[i]!));
  }
  return diff / scale;
}

describe('native BLAS BatchMatMul on the wasm backend', () => {
  beforeEach((context) => needsPackage(context, 'libopenblas0-pthread'));
  beforeAll(async () => {
    await initBackend('wasm');
  });
  afterAll(() => {
    disableNativeBlas();
  });

  it('reports the library it loaded', () => {
    // With OpenBLAS installed, the addon must load it: a failure here names why it did not.
    expect(available.enabled, available.reason).toBe(true);
    expect(enableNativeBlas()).toEqual({ enabled: true, library: available.library });
    expect(tf.getKernel(tf.BatchMatMul, 'wasm')).toBeDefined();
  });

  // Odd sizes so that no dimension is a multiple of a SIMD width or a BLAS block.
  const [m, k, n] = [37, 53, 29];
  const cases: Array<{
    name: string;
    a: number[];
    b: number[];
    ta: boolean;
    tb: boolean;
    out: number[];
    path?: 'fallback';
  }> = [];
  for (const ta of [false, true]) {
    for (const tb of [false, true]) {
      const a = (batch: number[]): number[] => [...batch, ...(ta ? [k, m] : [m, k])];
      const b = (batch: number[]): number[] => [...batch, ...(tb ? [n, k] : [k, n])];
      cases.push({ name: `2-D ta=${ta} tb=${tb}`, a: a([]), b: b([]), ta, tb, out: [m, n] });
      cases.push({
        name: `batched [3] ta=${ta} tb=${tb}`,
        a: a([3]),
        b: b([3]),
        ta,
        tb,
        out: [3, m, n],
      });
      cases.push({
        name: `batched [2,3] ta=${ta} tb=${tb}`,
        a: a([2, 3]),
        b: b([2, 3]),
        ta,
        tb,
        out: [2, 3, m, n],
      });
      cases.push({
        name: `broadcast a [1] vs b [4] ta=${ta} tb=${tb}`,
        a: a([1]),
        b: b([4]),
        ta,
        tb,
        out: [4, m, n],
      });
      cases.push({
        name: `broadcast a [2,3] vs 2-D b ta=${ta} tb=${tb}`,
        a: a([2, 3]),
        b: b([]),
        ta,
        tb,
        out: [2, 3, m, n],
      });
    }
  }
  cases.push({ name: 'tiny 1×1×1', a: [1, 1], b: [1, 1], ta: false, tb: false, out: [1, 1] });
  cases.push({
    name: 'row times matrix 1×513×7',
    a: [1, 513],
    b: [513, 7],
    ta: false,
    tb: false,
    out: [1, 7],
  });
  // [2,1] against [1,3] broadcasts both ways: no single stride does it, so the wasm kernel runs.
  cases.push({
    name: 'two-way broadcast [2,1] vs [1,3] (wasm fallback)',
    a: [2, 1, 5, 6],
    b: [1, 3, 6, 4],
    ta: false,
    tb: false,
    out: [2, 3, 5, 4],
    path: 'fallback',
  });

  it.each(cases)(
    '$name matches the wasm kernel (rel. error ≤ 1e-5)',
    async ({ a, b, ta, tb, out, path }) => {
      const before = tf.memory().numTensors;
      const x = tf.randomNormal(a, 0, 1, 'float32', 1);
      const y = tf.randomNormal(b, 0, 1, 'float32', 2);
      const { wasm, blas, shape } = await both(() => tf.matMul(x, y, ta, tb), path ?? 'native');
      tf.dispose([x, y]);
      expect(shape).toEqual(out);
      expect(relativeError(wasm, blas)).toBeLessThanOrEqual(1e-5);
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  it('keeps the wasm kernel for int32 and for mismatched shapes (its own errors)', () => {
    enableNativeBlas();
    const ints = tf.ones([4, 4], 'int32');
    const fallbacks = nativeBlasCounts().fallback;
    expect(() => tf.matMul(ints, ints)).toThrow(/non-float32/);
    expect(nativeBlasCounts().fallback).toBe(fallbacks + 1);
    const a = tf.ones([3, 5]);
    const b = tf.ones([4, 2]);
    expect(() => tf.matMul(a, b)).toThrow(/inner shapes \(5\) and \(4\)/);
    tf.dispose([ints, a, b]);
  });

  it('Identity shares its input’s buffer while the BLAS is on (a clone outlives its source), and copies again after disable', () => {
    enableNativeBlas();
    const buffers = tf.memory().numDataBuffers;
    const x = tf.tensor1d([1, 2, 3, 4]);
    const copy = tf.clone(x);
    expect(tf.memory().numDataBuffers).toBe(buffers + 1); // one buffer for both
    x.dispose();
    expect(Array.from(copy.dataSync())).toEqual([1, 2, 3, 4]);
    // Saved-for-gradient clones: the gradient through a kernel that saves its input is unchanged.
    const w = tf.tensor1d([0.5, -1, 2]);
    expect(
      Array.from(
        tf
          .grad((v: tf.Tensor) => tf.sum(tf.exp(v)))(w)
          .dataSync(),
      ),
    ).toEqual(Array.from(tf.exp(w).dataSync()));
    copy.dispose();
    disableNativeBlas();
    const y = tf.tensor1d([5, 6]);
    const before = tf.memory().numDataBuffers;
    const second = tf.clone(y);
    expect(tf.memory().numDataBuffers).toBe(before + 1); // tfjs's copying kernel is back
    tf.dispose([y, second, w]);
    enableNativeBlas();
  });

  it('writes the right values when its own output allocation grows the wasm heap', async () => {
    enableNativeBlas();
    const heapBytes = (): number =>
      (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.byteLength;
    const before = heapBytes();
    // An outer product whose output alone is larger than the whole heap: makeOutput's malloc
    // must grow memory, which detaches any heap view taken before it.
    const rows = Math.ceil(before / 4 / 64) + 1024;
    const column = tf.randomNormal([rows, 1], 0, 1, 'float32', 3);
    const row = tf.randomNormal([1, 64], 0, 1, 'float32', 4);
    const calls = nativeBlasCounts().native;
    const product = tf.matMul(column, row);
    expect(nativeBlasCounts().native).toBe(calls + 1);
    expect(heapBytes()).toBeGreaterThan(before);
    const [c, r, p] = [await column.data(), await row.data(), await product.data()];
    let wrong = 0;
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < 64; j++) if (p[i * 64 + j] !== Math.fround(c[i]! * r[j]!)) wrong += 1;
    expect(wrong).toBe(0);
    tf.dispose([column, row, product]);
  });

  it('10 SGD steps of a 784-64-32-10 MLP give losses within 1e-4 of the wasm kernel, numTensors flat', async () => {
    const x = tf.randomNormal([128, 784], 0, 1, 'float32', 4) as tf.Tensor2D;
    const labels = tf.tensor1d(
      Array.from({ length: 128 }, (_, i) => (i * 7) % 10),
      'int32',
    );
    const oneHot = tf.cast(tf.oneHot(labels, 10), 'float32') as tf.Tensor2D;
    const train = async (): Promise<{ losses: number[]; tensorsPerStep: number[] }> => {
      const model = mlp({
        inputs: 784,
        layers: [
          { units: 64, activation: 'relu' },
          { units: 32, activation: 'relu' },
          { units: 10 },
        ],
        seed: 5,
      });
      const vars = Object.values(model.params);
      const losses: number[] = [];
      const tensorsPerStep: number[] = [];
      for (let step = 0; step < 10; step++) {
        const loss = tf.tidy(() => {
          const { value, grads } = tf.variableGrads(
            () => softmaxCrossEntropy(model.apply(model.params as Params, x).logits, oneHot),
            vars,
          );
          for (const v of vars) v.assign(tf.sub(v, tf.mul(grads[v.name]!, 0.1)));
          return value;
        });
        losses.push((await loss.data())[0]!);
        loss.dispose();
        tensorsPerStep.push(tf.memory().numTensors);
      }
      model.dispose();
      return { losses, tensorsPerStep };
    };
    disableNativeBlas();
    const wasm = await train();
    enableNativeBlas();
    const calls = nativeBlasCounts().native;
    const blas = await train();
    // Per step: 3 forward products and 5 gradient products (the first layer's input needs none).
    expect(nativeBlasCounts().native - calls).toBeGreaterThanOrEqual(10 * 3);
    tf.dispose([x, labels, oneHot]);
    expect(blas.losses[9]!).toBeLessThan(blas.losses[0]!);
    for (let step = 0; step < 10; step++)
      expect(Math.abs(blas.losses[step]! - wasm.losses[step]!)).toBeLessThanOrEqual(1e-4);
    expect(new Set(blas.tensorsPerStep).size).toBe(1);
    expect(blas.tensorsPerStep[0]).toBe(wasm.tensorsPerStep[0]);
  });
});

describe('GRNG_BLAS in a fresh process', () => {
  beforeEach((context) => needsPackage(context, 'libopenblas0-pthread'));
  const detail = (env: Record<string, string>): string => {
    const code =
      "const { initBackend } = await import('./src/runtime/backend.ts'); console.log((await initBackend()).detail);";
    const child = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', code],
      {
        cwd: new URL('..', import.meta.url).pathname,
        env: { ...process.env, GRNG_WASM_THREADS: '', ...env },
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    expect(child.status, child.stderr).toBe(0);
    return child.stdout.trim();
  };

  it('GRNG_BLAS=1 or unset names the BLAS in the backend detail; GRNG_BLAS=0 leaves the wasm kernel', () => {
    expect(detail({ GRNG_BACKEND: 'wasm', GRNG_BLAS: '1' })).toBe(
      `tfjs-backend-wasm (SIMD, ${nativeBlasLabel(available.library!)})`,
    );
    expect(detail({ GRNG_BACKEND: 'wasm', GRNG_BLAS: '0' })).toBe('tfjs-backend-wasm (SIMD)');
    // Unset: on, since it loads here.
    expect(detail({ GRNG_BACKEND: 'wasm', GRNG_BLAS: '' })).toBe(
      `tfjs-backend-wasm (SIMD, ${nativeBlasLabel(available.library!)})`,
    );
  });
});
