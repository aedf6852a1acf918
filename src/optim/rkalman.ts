import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import type { LayerSignals, Params } from '../types.js';
import { checkInteger, checkKeys, checkNumber, checkUnitInterval } from '../validate.js';
import { inverseSpd } from './inverseSpd.js';
import { checkHyper, valueAt, type Hyper } from './schedules.js';
import { mapParams, sumAll } from './tree.js';
import type { GradientTransformation, TransformResult, UpdateContext } from './transform.js';

export interface RkalmanOptions {
  /** η_K, the step along the Kalman correction, constant or scheduled; default 1 (the plain filter). */
  readonly learningRate?: Hyper;
  /** k: observation rows per step, the first min(m, k) rows of the batch; default 32. Cost O(k²·n). */
  readonly rows?: number;
  /** p₀, initial (diagonal) parameter variance; default 0.1. */
  readonly p0?: number;
  /** r₀, initial observation-noise variance; default 1. */
  readonly r0?: number;
  /** φ in (0, 1], fading memory: the prior is P/φ; default 0.999. */
  readonly fading?: number;
  /** q ≥ 0, process noise added to the prior variance; default 0. */
  readonly processNoise?: number;
  /** ρ ≥ 0, gradient-regularisation strength of the prior [ours: tune]; default 0.1; 0 = plain filter. */
  readonly rho?: number;
  /** β_r in [0, 1), moving-average rate of the observation noise; default 0.99. */
  readonly betaR?: number;
  /**
   * r_min > 0, floor of the observation-noise estimate; default 1e-2 [ours]. It is also the
   * smallest eigenvalue of S = H P⁻ Hᵀ + r I, so it bounds S's condition number.
   */
  readonly rMin?: number;
  /**
   * p_min ≥ 0, floor of every variance after the update; default 1e-6 [ours]: P⁻ − diag(·) is
   * ≥ 0 in exact arithmetic, but float32 cancellation leaves noise of ~1e-8 at p₀ = 0.1.
   */
  readonly pMin?: number;
  /** Newton–Schulz iterations of the k×k solve (see {@link inverseSpd}); default 30 [ours]. */
  readonly solveIterations?: number;
}

export interface RkalmanState {
  /** Steps taken (drives the learning-rate schedule). */
  readonly count: number;
  /** Diagonal of the parameter covariance P, keyed and shaped like the parameters. */
  readonly p: Params;
  /** Observation-noise variance r (device scalar). */
  readonly r: tf.Scalar;
}

/** The k observation rows of one dense layer, with the parameter keys they belong to. */
interface LayerRows {
  readonly kernel: string;
  readonly bias: string;
  /** Ā, the homogeneous inputs [a | 1] (k×(in+1)). */
  readonly aBar: tf.Tensor2D;
  /** Δ, the per-sample signals (k×out). */
  readonly delta: tf.Tensor2D;
}

/**
 * R-Kalman, the regularized Kalman optimizer (form [ours], modelled on Ollivier 2017 [prior]:
 * an extended Kalman filter on a static parameter is online natural gradient, and on the
 * authors' diagonal-covariance Kalman optimizers LoKO / Kalman-CLIP [prior]). It treats each of
 * the first k rows of the batch as an observation h_i(θ) = log p(y_i | x_i, θ) of target 0, so
 * the innovation is e_i = l_i and the Jacobian rows are −∇l_i. With P the diagonal covariance
 * (shape of θ) and r the observation noise, per step:
 *
 *   1. P⁻ = P/φ + q                                 (fading memory, process noise)
 *   2. P⁻ ← P⁻ / (1 + ρ‖g‖²·P⁻)                      (GR prior: ρ‖g‖² added to the information) [ours]
 *   3. e_i = l_i,  H = −[∇l_1; …; ∇l_k]
 *   4. S = H P⁻ Hᵀ + r I                              (k×k)
 *   5. w = S⁻¹e;  θ ← θ − η_K · P⁻ ⊙ Σ_i w_i ∇l_i     (the Kalman mean update θ + K e)
 *   6. P ← max(P⁻ − diag(P⁻ Hᵀ S⁻¹ H P⁻), p_min)
 *   7. r ← β_r·r + (1−β_r)·max(mean(e²) − mean(diag(H P⁻ Hᵀ)), r_min)
 *
 * H is never formed. For a dense layer with kernel W (in×out, as stored) and bias, the
 * per-sample gradient is ā_i ⊗ δ_i (ā = [a; 1]), so with P̄ = [P_W; P_b] ((in+1)×out):
 *   S_ij = Σ_{c,o} (ā_ic ā_jc) P̄_co (δ_io δ_jo),   diag(P⁻HᵀS⁻¹HP⁻)_co = P̄²_co Σ_ij S⁻¹_ij ā_ic ā_jc δ_io δ_jo,
 * both one matmul over the k² pairwise products of rows: O(k²·n) time, O(k²·(in + out)) memory,
 * and no n×n matrix. S⁻¹ comes from {@link inverseSpd} (r I keeps S SPD).
 *
 * Needs the per-sample signals and losses: run `forwardBackward(model, { signals: true })`.
 * Covers models made only of dense layers keyed `dense{i}/kernel`, `dense{i}/bias`.
 * Diagnostics: `learningRate` (η_K), `kalmanTraceP` (tr(P)/n), `kalmanNoise` (r) and
 * `kalmanInnovationNorm` (‖e‖), the last three device scalars.
 *
 * @example
 * batches(data.train, { batchSize: 128 }).pipe(forwardBackward(model, { signals: true }), update(model, rkalman({ rows: 32 })));
 */
export function rkalman(options: RkalmanOptions = {}): GradientTransformation<RkalmanState> {
  checkKeys('rkalman', options, ['learningRate', 'rows', 'p0', 'r0', 'fading', 'processNoise', 'rho', 'betaR', 'rMin', 'pMin', 'solveIterations']);
  const lr = checkHyper('learningRate', options.learningRate ?? 1, { min: 0 });
  const rows = checkInteger('rows', options.rows ?? 32, 1);
  const p0 = checkNumber('p0', options.p0 ?? 0.1, { min: 0, minExclusive: true });
  const r0 = checkNumber('r0', options.r0 ?? 1, { min: 0, minExclusive: true });
  const fading = checkNumber('fading', options.fading ?? 0.999, { min: 0, minExclusive: true, max: 1 });
  const q = checkNumber('processNoise', options.processNoise ?? 0, { min: 0 });
  const rho = checkNumber('rho', options.rho ?? 0.1, { min: 0 });
  const betaR = checkUnitInterval('betaR', options.betaR ?? 0.99);
  const rMin = checkNumber('rMin', options.rMin ?? 1e-2, { min: 0, minExclusive: true });
  const pMin = checkNumber('pMin', options.pMin ?? 1e-6, { min: 0 });
  const iterations = checkInteger('solveIterations', options.solveIterations ?? 30, 1, 200);

  return {
    init: (params: Params) => ({ count: 0, p: mapParams(params, (t) => tf.fill(t.shape, p0)), r: tf.scalar(r0) }),

    update(grads: Params, state: RkalmanState, params: Params, context: UpdateContext): TransformResult<RkalmanState> {
      const { signals, losses } = context.source ?? {};
      if (!signals || !losses) {
        throw new GrngError('step', 'rkalman needs per-sample signals and losses: run forwardBackward(model, { signals: true }) before update', { step: context.step });
      }
      const k = Math.min(losses.shape[0], rows);
      const layers = observationRows(signals, params, k);
      const eta = valueAt(lr, state.count);

      // 1–2. Prior. ‖g‖² is a device scalar: the GR shrinkage is applied without a read-back.
      const gradSquared = tf.addN(Object.values(grads).map((g) => sumAll(tf.square(g))));
      const rhoG2 = tf.mul(gradSquared, rho);
      const prior = mapParams(state.p, (p) => {
        const faded = q === 0 ? tf.div(p, fading) : tf.add(tf.div(p, fading), q);
        return rho === 0 ? faded : tf.div(faded, tf.add(tf.mul(faded, rhoG2), 1));
      });

      // 3–4. Innovation and its covariance, layer by layer over the k² pairs of rows.
      const e = tf.slice(losses, [0], [k]);
      const pBars = layers.map((l) => homogeneous(prior[l.kernel]!, prior[l.bias]!));
      const pairs = layers.map((l) => ({ aa: rowPairs(l.aBar), dd: rowPairs(l.delta) }));
      const hph = tf.reshape(tf.addN(pairs.map(({ aa, dd }, i) => tf.sum(tf.mul(tf.matMul(aa, pBars[i]!), dd), 1))), [k, k]) as tf.Tensor2D;
      const s = tf.add(hph, tf.mul(tf.eye(k), state.r)) as tf.Tensor2D;

      // 5. w = S⁻¹e; then the gain applied to e: P⁻ ⊙ Hᵀw = −P⁻ ⊙ Σ_i w_i ∇l_i.
      const sInverse = inverseSpd(s, iterations);
      const w = tf.matMul(sInverse, tf.reshape(e, [k, 1]));
      const sInverseFlat = tf.reshape(sInverse, [k * k, 1]);
      const updates: Params = {};
      const p: Params = {};
      const minusEta = tf.scalar(-eta);
      layers.forEach((l, i) => {
        const pBar = pBars[i]!;
        // Σ_i w_i ā_i ⊗ δ_i = Āᵀ diag(w) Δ, in the kernel's in×out layout (bias in the last row).
        const weighted = tf.matMul(tf.transpose(l.aBar), tf.mul(l.delta, w));
        const [du, db] = splitHomogeneous(tf.mul(tf.mul(pBar, weighted), minusEta) as tf.Tensor2D);
        updates[l.kernel] = du;
        updates[l.bias] = db;
        // 6. Σ_ij S⁻¹_ij (ā_i⊙ā_j)(δ_i⊙δ_j)ᵀ = (ĀĀ)ᵀ (vec S⁻¹ ⊙ ΔΔ); (ĀĀ)ᵀ is built directly
        // from Āᵀ, so the big pairwise matrix is never transposed.
        const reduced = tf.matMul(rowPairs(tf.transpose(l.aBar) as tf.Tensor2D, true), tf.mul(pairs[i]!.dd, sInverseFlat));
        const [pk, pb] = splitHomogeneous(tf.maximum(tf.sub(pBar, tf.mul(tf.square(pBar), reduced)), pMin) as tf.Tensor2D);
        p[l.kernel] = pk;
        p[l.bias] = pb;
      });

      // 7. Observation noise: what the innovations show beyond the predicted H P⁻ Hᵀ.
      const excess = tf.sub(tf.mean(tf.square(e)), tf.div(tf.sum(tf.mul(hph, tf.eye(k))), k));
      const r = tf.add(tf.mul(state.r, betaR), tf.mul(tf.maximum(excess, rMin), 1 - betaR)) as tf.Scalar;

      const coordinates = Object.values(p).reduce((n, t) => n + t.size, 0);
      const traceP = tf.div(tf.addN(Object.values(p).map((t) => sumAll(t))), coordinates) as tf.Scalar;
      return {
        updates,
        state: { count: state.count + 1, p, r },
        // r is state: the update operator disposes diagnostics after the step, so report a copy.
        diagnostics: { learningRate: eta, kalmanTraceP: traceP, kalmanNoise: tf.clone(r), kalmanInnovationNorm: tf.norm(e) as tf.Scalar },
      };
    },
  };
}

/**
 * The first k rows of every dense layer's input and signal, matched to its parameters; checks
 * that the layers cover the parameter tree exactly, since P has one entry per parameter.
 */
function observationRows(signals: readonly LayerSignals[], params: Params, k: number): LayerRows[] {
  const covered = new Set<string>();
  const layers = signals.map(({ a, delta }, index) => {
    const kernel = `dense${index}/kernel`;
    const bias = `dense${index}/bias`;
    const [inputs, units] = [a.shape[1], delta.shape[1]];
    const w = params[kernel];
    const b = params[bias];
    if (!w || !b || w.shape.join() !== `${inputs},${units}` || b.shape.join() !== `${units}`) {
      throw new GrngError('shape', `rkalman: layer ${index} has signals for ${inputs}→${units} but the parameters ${kernel} [${w?.shape.join(', ') ?? 'missing'}] and ${bias} [${b?.shape.join(', ') ?? 'missing'}] do not match`, { layer: index });
    }
    covered.add(kernel).add(bias);
    const rowsOf = (t: tf.Tensor2D): tf.Tensor2D => (t.shape[0] === k ? t : tf.slice(t, [0, 0], [k, -1]));
    const aRows = rowsOf(a);
    return { kernel, bias, aBar: tf.concat([aRows, tf.ones([k, 1])], 1) as tf.Tensor2D, delta: rowsOf(delta) };
  });
  const uncovered = Object.keys(params).filter((key) => !covered.has(key));
  if (uncovered.length > 0) {
    throw new GrngError('invalid-model', `rkalman covers dense layers only; no layer signals for ${uncovered.join(', ')}`, { keys: uncovered });
  }
  return layers;
}

/**
 * Row-pair products: for X (k×d), the k²×d matrix whose row i·k+j is X_i ⊙ X_j. With
 * `columns`, the same for the columns of X (d×k → d×k², column i·k+j is X_{:,i} ⊙ X_{:,j}).
 */
function rowPairs(x: tf.Tensor2D, columns = false): tf.Tensor2D {
  if (columns) {
    const [d, k] = x.shape;
    return tf.reshape(tf.mul(tf.reshape(x, [d, k, 1]), tf.reshape(x, [d, 1, k])), [d, k * k]);
  }
  const [k, d] = x.shape;
  return tf.reshape(tf.mul(tf.reshape(x, [k, 1, d]), tf.reshape(x, [1, k, d])), [k * k, d]);
}

/** [kernel; bias] as one (in+1)×out matrix, matching the homogeneous input ā = [a; 1]. */
function homogeneous(kernel: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  return tf.concat([kernel as tf.Tensor2D, tf.reshape(bias, [1, -1]) as tf.Tensor2D], 0) as tf.Tensor2D;
}

/** The inverse of {@link homogeneous}: the kernel rows and the bias row. */
function splitHomogeneous(m: tf.Tensor2D): [tf.Tensor2D, tf.Tensor1D] {
  const inputs = m.shape[0] - 1;
  return [tf.slice(m, [0, 0], [inputs, -1]), tf.reshape(tf.slice(m, [inputs, 0], [1, -1]), [-1]) as tf.Tensor1D];
}
