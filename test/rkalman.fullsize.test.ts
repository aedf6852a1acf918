import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadMnist } from '../src/data/mnist.js';
import { mlp } from '../src/nn/sequential.js';
import { computeStep } from '../src/operators/forwardBackward.js';
import { rkalman, type RkalmanState } from '../src/optim/rkalman.js';
import type { TransformResult } from '../src/optim/transform.js';
import type { Batch, Params } from '../src/types.js';
import { useTestBackend } from './helpers.js';

// The float64 check of test/rkalman.test.ts at full size: one R-Kalman step of the real
// mlp:784-256-10 (relu) on a real MNIST batch, k = 32 of 128 rows, after 40 steps of training,
// against steps 1–7 written out in float64 with H (32 × 203,530) materialised from the same a, δ
// and per-sample losses, and S inverted by Gauss–Jordan. ~10 s, so behind GRNG_LONG_TESTS.
const LONG = process.env.GRNG_LONG_TESTS === '1';

beforeAll(async () => {
  if (LONG) await useTestBackend();
});

describe.runIf(LONG)('R-Kalman at full size against float64 formulas', () => {
  it('matches the update, P and r of the explicit formulas after 40 steps of MNIST training', async () => {
    const data = await loadMnist();
    const model = mlp({
      inputs: 784,
      layers: [{ units: 256, activation: 'relu' }, { units: 10 }],
      seed: 1,
    });
    const opt = rkalman(model);
    let state = opt.init(model.params as Params) as RkalmanState;
    let seed = 12345;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const batchAt = (step: number): Batch => {
      const m = 128;
      const x = new Float32Array(m * 784);
      const y = new Int32Array(m);
      for (let i = 0; i < m; i++) {
        const j = Math.floor(rand() * data.train.n);
        x.set(data.train.x.subarray(j * 784, (j + 1) * 784), i * 784);
        y[i] = data.train.y[j]!;
      }
      return {
        step,
        epoch: 0,
        index: step,
        batchesPerEpoch: 1,
        lastOfEpoch: false,
        last: false,
        size: m,
        x: tf.tensor2d(x, [m, 784]),
        y: tf.tensor1d(y, 'int32'),
        hold: () => () => {},
      };
    };
    const CHECK_AT = 40;
    for (let t = 0; t <= CHECK_AT; t++) {
      const batch = batchAt(t);
      const { value: step, owned } = computeStep(model, batch, true);
      const result = tf.tidy(
        () =>
          opt.update(step.grads, state, model.params as Params, {
            step: t,
            source: step,
          }) as unknown as tf.TensorContainer,
      ) as unknown as TransformResult<RkalmanState>;
      if (t === CHECK_AT) {
        const k = 32;
        const keys = model.layers.flatMap((l) => [l.kernel, l.bias]);
        const sizes = keys.map((key) => state.p[key]!.size);
        const n = sizes.reduce((a, c) => a + c, 0);
        const flat = (tree: Params): Float64Array => {
          const out = new Float64Array(n);
          let at = 0;
          for (const key of keys) {
            const d = tree[key]!.dataSync();
            out.set(d, at);
            at += d.length;
          }
          return out;
        };
        const p = flat(state.p);
        const r = state.r.dataSync()[0]!;
        const losses = Array.from(step.losses!.dataSync()).slice(0, k);
        // Per-sample gradients ∇l_i = δ_i ā_iᵀ (kernel in×out row-major, then bias), float64.
        const G = Array.from({ length: k }, () => new Float64Array(n));
        let offset = 0;
        for (const { a, delta } of step.signals!) {
          const A = a.arraySync() as number[][];
          const D = delta.arraySync() as number[][];
          const inputs = A[0]!.length;
          const outputs = D[0]!.length;
          for (let i = 0; i < k; i++) {
            const g = G[i]!;
            for (let c = 0; c < inputs; c++) {
              const ac = A[i]![c]!;
              if (ac !== 0)
                for (let o = 0; o < outputs; o++) g[offset + c * outputs + o] = ac * D[i]![o]!;
            }
            for (let o = 0; o < outputs; o++) g[offset + inputs * outputs + o] = D[i]![o]!;
          }
          offset += inputs * outputs + outputs;
        }
        let g2 = 0;
        for (const key of keys) for (const v of step.grads[key]!.dataSync()) g2 += v * v;
        // Steps 1–2: predict with fading φ = 0.999, then GR with ρ = 0.1.
        const prior = p.map((v) => v / 0.999).map((v) => v / (1 + 0.1 * g2 * v));
        // Step 4: S = H P⁻ Hᵀ + r I.
        const S = Array.from({ length: k }, (_, i) =>
          Array.from({ length: k }, (_, j) => {
            let s = 0;
            const gi = G[i]!;
            const gj = G[j]!;
            for (let c = 0; c < n; c++) s += gi[c]! * prior[c]! * gj[c]!;
            return s + (i === j ? r : 0);
          }),
        );
        const M = S.map((row, i) => [...row, ...row.map((_, j) => (i === j ? 1 : 0))]);
        for (let c = 0; c < k; c++) {
          const pivot = M[c]![c]!;
          for (let j = 0; j < 2 * k; j++) M[c]![j]! /= pivot;
          for (let row = 0; row < k; row++) {
            if (row === c) continue;
            const f = M[row]![c]!;
            for (let j = 0; j < 2 * k; j++) M[row]![j]! -= f * M[c]![j]!;
          }
        }
        const Sinv = M.map((row) => row.slice(k));
        // Step 5: w = S⁻¹ e, update −η P⁻ ⊙ Σ w_i ∇l_i (η = 1).
        const w = Sinv.map((row) => row.reduce((s, v, j) => s + v * losses[j]!, 0));
        const update = new Float64Array(n);
        for (let i = 0; i < k; i++)
          for (let c = 0; c < n; c++) update[c]! -= prior[c]! * w[i]! * G[i]![c]!;
        // Step 6: P = max(P⁻ − diag(P⁻ Hᵀ S⁻¹ H P⁻), p_min).
        const reduction = new Float64Array(n);
        for (let i = 0; i < k; i++) {
          const u = new Float64Array(n);
          for (let j = 0; j < k; j++) for (let c = 0; c < n; c++) u[c]! += Sinv[i]![j]! * G[j]![c]!;
          for (let c = 0; c < n; c++) reduction[c]! += G[i]![c]! * u[c]!;
        }
        const posterior = prior.map((v, c) => Math.max(v - v * v * reduction[c]!, 1e-6));
        // Step 7: r ← β_r r + (1 − β_r) max(mean e² − mean diag(H P⁻ Hᵀ), r_min).
        const meanDiag = S.reduce((s, row, i) => s + row[i]! - r, 0) / k;
        const meanE2 = losses.reduce((s, v) => s + v * v, 0) / k;
        const rExpected = 0.99 * r + 0.01 * Math.max(meanE2 - meanDiag, 1e-2);

        const relative = (got: Float64Array, want: Float64Array): number => {
          let num = 0;
          let den = 0;
          for (let c = 0; c < n; c++) {
            num += (got[c]! - want[c]!) ** 2;
            den += want[c]! ** 2;
          }
          return Math.sqrt(num / den);
        };
        const updateError = relative(flat(result.updates), update);
        const pError = relative(flat((result.state as RkalmanState).p), posterior);
        const rGot = (result.state as RkalmanState).r.dataSync()[0]!;
        console.log(
          `R-Kalman full size, step ${t}, n = ${n}, k = ${k}: update rel. error ${updateError.toExponential(2)}, P rel. error ${pError.toExponential(2)}, r ${rGot} vs ${rExpected}`,
        );
        expect(n).toBe(203_530);
        expect(updateError).toBeLessThan(1e-5);
        expect(pError).toBeLessThan(1e-6);
        expect(rGot).toBeCloseTo(rExpected, 5);
      }
      for (const key of Object.keys(model.params))
        model.params[key]!.assign(tf.add(model.params[key]!, result.updates[key]!));
      tf.dispose([
        ...Object.values(result.updates),
        ...Object.values(result.diagnostics ?? {}).filter(
          (d): d is tf.Scalar => typeof d !== 'number',
        ),
      ]);
      tf.dispose([...Object.values(state.p), state.r]);
      state = result.state as RkalmanState;
      tf.dispose([...owned]);
      tf.dispose([batch.x, batch.y]);
    }
    tf.dispose([...Object.values(state.p), state.r]);
    model.dispose();
  }, 120_000);
});
