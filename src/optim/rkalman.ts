import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { GrngError } from '../errors.js';
import {
  curvatureBlocks,
  type KroneckerBlock,
  type OuterProductRows,
} from '../curvature/blocks/index.js';
import type { Sequential } from '../nn/sequential.js';
import type { LayerSignals, Params } from '../types.js';
import { checkKeys } from '../validate.js';
import { floorAt } from '../linalg/floorAt.js';
import { matMulTransposeA, matMulTransposeB } from '../nn/ops.js';
import {
  nativeKalmanPosterior,
  nativeKalmanPrior,
  nativeSpdInverse,
} from '../runtime/nativeBlas.js';
import { inverseSpd } from '../linalg/inverseSpd.js';
import { valueAt, type Hyper } from './schedules.js';
import {
  GRADIENT_REGULARIZATION_OPTION,
  optionKeys,
  readOption,
  type OptionTable,
} from './optionSpec.js';
import { mapParams } from '../linalg/tree.js';
import { sumAll, sumOfSquares } from '../linalg/reductions.js';
import type { GradientTransformation, TransformResult, UpdateContext } from './transform.js';

export interface RkalmanOptions {
  /**
   * η_K, the step along the Kalman correction, constant or scheduled; default 1 (the plain filter).
   */
  readonly learningRate?: Hyper;
  /**
   * k: observation rows per step, the first min(m, k) rows of the batch; default 32. Cost O(k²·n).
   */
  readonly rows?: number;
  /** p₀, initial (diagonal) parameter variance; default 0.1. */
  readonly p0?: number;
  /** r₀, initial observation-noise variance; default 1. */
  readonly r0?: number;
  /** φ in (0, 1], fading memory: the prior is P/φ; default 0.999. */
  readonly fading?: number;
  /** q ≥ 0, process noise added to the prior variance; default 0. */
  readonly processNoise?: number;
  /**
   * ρ ≥ 0, gradient-regularisation strength of the prior [ours: tune]; default 0.1; 0 = plain
   * filter.
   */
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
  /**
   * Newton–Schulz iterations of the k×k solve (see {@link inverseSpd}); default 30 [ours]. Unused
   * where the native addon's LAPACK is loaded: S⁻¹ is then a float64 Cholesky inverse.
   */
  readonly solveIterations?: number;
}

/** R-Kalman's options (see {@link RkalmanOptions}). */
export const RKALMAN_OPTIONS = {
  learningRate: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 1,
    flag: '--lr',
    help: 'learning rate η',
  },
  rows: {
    kind: 'integer',
    min: 1,
    flagMin: 0,
    default: 32,
    flag: '--kalman-rows',
    help: "observation rows k per step (the batch's first min(batch, k) rows; a language model's: k tokens drawn per step)",
  },
  p0: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 0.1,
    flag: '--p0',
    help: 'initial covariance p₀',
  },
  r0: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 1,
    flag: '--r0',
    help: 'initial observation noise r₀',
  },
  fading: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    max: 1,
    default: 0.999,
    flag: '--fading',
    help: 'fading memory φ',
  },
  processNoise: {
    kind: 'number',
    min: 0,
    default: 0,
    flag: '--process-noise',
    help: 'process noise q',
  },
  rho: GRADIENT_REGULARIZATION_OPTION,
  betaR: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.99,
    flag: '--beta-r',
    help: 'observation-noise decay β_r',
  },
  rMin: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 1e-2,
    flag: '--r-min',
    help: 'floor of the observation noise r',
  },
  pMin: {
    kind: 'number',
    min: 0,
    default: 1e-6,
    flag: '--p-min',
    help: 'floor of the variances P',
  },
  solveIterations: {
    kind: 'integer',
    min: 1,
    max: 200,
    default: 30,
    listed: false,
    flag: '--solve-iterations',
    help: 'Newton–Schulz iterations of the k×k solve (unused where the native LAPACK inverts it)',
  },
} as const satisfies OptionTable;

export interface RkalmanState {
  /** Steps taken (drives the learning-rate schedule). */
  readonly count: number;
  /** Diagonal of the parameter covariance P, keyed and shaped like the parameters. */
  readonly p: Params;
  /** Observation-noise variance r (device scalar). */
  readonly r: tf.Scalar;
}

/**
 * R-Kalman, the regularized Kalman optimizer ([paper]: a Bayesian update that inverts no Fisher
 * matrix; the form below is [ours], modelled on Ollivier 2017 [prior]:
 * an extended Kalman filter on a static parameter is online natural gradient, and on the
 * authors' diagonal-covariance Kalman optimizers LoKO / Kalman-CLIP [prior]). It treats each of
 * the first k rows of the batch as an observation h_i(θ) = log p(y_i | x_i, θ) of target 0, so
 * the innovation is e_i = l_i and the Jacobian rows are −∇l_i. With P the diagonal covariance
 * (shape of θ) and r the observation noise, per step:
 *
 *   1. P⁻ = P/φ + q                                 (fading memory, process noise)
 * 2. P⁻ ← P⁻ / (1 + ρ‖g‖²·P⁻) (GR prior: ρ‖g‖² added to the information) [ours]
 *   3. e_i = l_i,  H = −[∇l_1; …; ∇l_k]
 *   4. S = H P⁻ Hᵀ + r I                              (k×k)
 *   5. w = S⁻¹e;  θ ← θ − η_K · P⁻ ⊙ Σ_i w_i ∇l_i     (the Kalman mean update θ + K e)
 *   6. P ← max(P⁻ − diag(P⁻ Hᵀ S⁻¹ H P⁻), p_min)
 *   7. r ← β_r·r + (1−β_r)·max(mean(e²) − mean(diag(H P⁻ Hᵀ)), r_min)
 *
 * H is never formed. For a dense layer with kernel W (in×out, as stored) and bias, the
 * per-sample gradient is ā_i ⊗ δ_i (ā = [a; 1]), so with P̄ = [P_W; P_b] ((in+1)×out):
 * S_ij = Σ_{c,o} (ā_ic ā_jc) P̄_co (δ_io δ_jo), diag(P⁻HᵀS⁻¹HP⁻)_co = P̄²_co Σ_ij S⁻¹_ij ā_ic ā_jc
 * δ_io δ_jo,
 * both one matmul over the pairwise products of rows (the k(k+1)/2 pairs i ≤ j, by symmetry):
 * O(k²·n) time, O(k²·(in + out)) memory, and no n×n matrix. S⁻¹ comes from {@link inverseSpd}
 * (r ≥ r_min > 0 keeps S SPD), or from float64 Cholesky where the native addon has LAPACK. With
 * the addon, the prior and the posterior/update are one native pass per parameter each.
 *
 * Needs the per-sample signals and losses: run `forwardBackward(model, { signals: true })`.
 * Covers models whose every parameter belongs to a curvature block with per-example gradients:
 * outer products (dense, the pairwise form above) or sums of them as matrices (conv2d:
 * S = (G ⊙ p̄) Gᵀ over the flattened per-example gradients G, docs/algorithms.md).
 * Diagnostics: `learningRate` (η_K), `kalmanTraceP` (tr(P)/n), `kalmanNoise` (r) and
 * `kalmanInnovationNorm` (‖e‖), the last three device scalars.
 *
 * @example
 * batches(data.train, { batchSize: 128 }).pipe(forwardBackward(model, { signals: true }), update(model, rkalman(model, { rows: 32 })));
 */
export function rkalman(
  model: Pick<Sequential, 'signalLayers'>,
  options: RkalmanOptions = {},
): GradientTransformation<RkalmanState> {
  checkKeys('rkalman', options, optionKeys(RKALMAN_OPTIONS));
  const lr = readOption(RKALMAN_OPTIONS, options, 'learningRate');
  const rows = readOption(RKALMAN_OPTIONS, options, 'rows');
  const p0 = readOption(RKALMAN_OPTIONS, options, 'p0');
  const r0 = readOption(RKALMAN_OPTIONS, options, 'r0');
  const fading = readOption(RKALMAN_OPTIONS, options, 'fading');
  const q = readOption(RKALMAN_OPTIONS, options, 'processNoise');
  const rho = readOption(RKALMAN_OPTIONS, options, 'rho');
  const betaR = readOption(RKALMAN_OPTIONS, options, 'betaR');
  const rMin = readOption(RKALMAN_OPTIONS, options, 'rMin');
  const pMin = readOption(RKALMAN_OPTIONS, options, 'pMin');
  const iterations = readOption(RKALMAN_OPTIONS, options, 'solveIterations');
  const blocks = curvatureBlocks(model);
  const tokenRows = ((model as { labelsPerExample?: number }).labelsPerExample ?? 1) > 1;

  return {
    init: (params: Params) => ({
      count: 0,
      p: mapParams(params, (t) => tf.fill(t.shape, p0)),
      r: tf.scalar(r0),
    }),

    update(
      grads: Params,
      state: RkalmanState,
      params: Params,
      context: UpdateContext,
    ): TransformResult<RkalmanState> {
      const { signals, losses } = context.source ?? {};
      if (!signals || !losses) {
        throw new GrngError(
          'step',
          'rkalman needs per-sample signals and losses: run forwardBackward(model, { signals: true }) before update',
          { step: context.step },
        );
      }
      const total = losses.shape[0];
      const k = Math.min(total, rows);
      // A language model's loss rows are tokens, m·positions of them, and its first k rows would
      // all be early tokens of the first window: observe k tokens drawn anew every step
      // (seeded by the step count, so a resumed run draws the same), spread over the batch.
      const picked =
        tokenRows && total > k ? tf.tensor1d(drawRows(total, k, state.count), 'int32') : undefined;
      const observedSignals = picked
        ? signals.map((s) => ({
            ...s,
            a: tf.gather(tf.reshape(s.a, [total, -1]), picked),
            delta: tf.gather(tf.reshape(s.delta, [total, -1]), picked),
          }))
        : signals;
      const observed = observationRows(blocks, observedSignals, params, k);
      const layers = observed.filter((o): o is OuterProductRows => !('gradients' in o));
      const examples = observed.filter((o): o is ExampleGradients => 'gradients' in o);
      const eta = valueAt(lr, state.count);

      // 1–2. Prior. ‖g‖² stays a device scalar: the GR shrinkage needs no read-back.
      // With q = 0 the two steps fold into P⁻ = P / (φ + ρ‖g‖²·P).
      const gradSquared = tf.addN(Object.values(grads).map((g) => sumOfSquares(g)));
      const rhoG2 = tf.mul(gradSquared, rho) as tf.Scalar;
      const prior = mapParams(state.p, (p) => {
        const fused = nativeKalmanPrior(p, rhoG2, fading, q);
        if (fused) return fused;
        if (q === 0)
          return rho === 0 ? tf.div(p, fading) : tf.div(p, tf.add(tf.mul(p, rhoG2), fading));
        const faded = tf.add(tf.div(p, fading), q);
        return rho === 0 ? faded : tf.div(faded, tf.add(tf.mul(faded, rhoG2), 1));
      });

      // 3–4. Innovation and its covariance over the pairs of rows i ≤ j only: S and S⁻¹ are
      // symmetric, so the other half would just double the two O(k²·n) products. Kernel and
      // bias are handled apart (the bias is the homogeneous column, ā_ic ā_jc = 1) because
      // concatenating and slicing P and the updates costs more than the products themselves.
      const e = picked ? tf.gather(losses, picked) : tf.slice(losses, [0], [k]);
      const pairs = rowPairIndex(k);
      // Pair rows are picked by products with 0/1 selection matrices (exact in float32): on
      // tfjs-wasm tf.gather of the same rows is ~15× slower than these small matmuls.
      const first = tf.cast(
        tf.oneHot(tf.tensor1d(pairs.first, 'int32'), k),
        'float32',
      ) as tf.Tensor2D;
      const second = tf.cast(
        tf.oneHot(tf.tensor1d(pairs.second, 'int32'), k),
        'float32',
      ) as tf.Tensor2D;
      const rowPairs = (x: tf.Tensor2D): tf.Tensor2D =>
        tf.mul(tf.matMul(first, x), tf.matMul(second, x));
      const aa = layers.map((l) => rowPairs(l.a));
      const dd = layers.map((l) => rowPairs(l.delta));
      // (a_i⊙a_j)ᵀ P_W (δ_i⊙δ_j) + P_bᵀ (δ_i⊙δ_j), summed over layers, for every pair.
      const hphPairs =
        layers.length === 0
          ? undefined
          : tf.addN(
              layers.map((l, i) =>
                tf.sum(
                  tf.mul(
                    tf.add(tf.matMul(aa[i]!, prior[l.kernel] as tf.Tensor2D), prior[l.bias]!),
                    dd[i]!,
                  ),
                  1,
                ),
              ),
            );
      const outerHph =
        layers.length > 0
          ? (tf.reshape(tf.gather(hphPairs!, tf.tensor1d(pairs.square, 'int32')), [
              k,
              k,
            ]) as tf.Tensor2D)
          : undefined;
      // Blocks with per-example gradient matrices (conv2d): with G the k×n gradients of the
      // block's parameters (laid out as its toMatrix) and p̄ their prior variances,
      // (H P⁻ Hᵀ)_ij = Σ p̄ ⊙ G_i ⊙ G_j = (G ⊙ p̄) Gᵀ, one k×k product per block.
      const flatPriors = examples.map((x) =>
        tf.reshape(x.block.toMatrix(prior), [1, -1]),
      ) as tf.Tensor2D[];
      const exampleHph = examples.map((x, i) =>
        matMulTransposeB(tf.mul(x.gradients, flatPriors[i]!) as tf.Tensor2D, x.gradients),
      );
      const hphTerms = [...(outerHph ? [outerHph] : []), ...exampleHph];
      const hph = (hphTerms.length === 1 ? hphTerms[0]! : tf.addN(hphTerms)) as tf.Tensor2D;
      const s = tf.add(hph, tf.mul(tf.eye(k), state.r)) as tf.Tensor2D;

      // 5. w = S⁻¹e; the gain applied to e is P⁻ ⊙ Hᵀw = −P⁻ ⊙ Σ_i w_i ∇l_i, and −η_K is folded
      // into w so that the big tensors see one multiplication.
      // Float64 Cholesky where the native LAPACK is loaded (one call instead of ~90 small ops).
      const sInverse = nativeSpdInverse(s)?.inverse ?? inverseSpd(s, iterations);
      const w = tf.mul(tf.matMul(sInverse, tf.reshape(e, [k, 1])), -eta);
      // S⁻¹_ij for the pairs i ≤ j, off-diagonal ones counted twice (they stand for j, i too).
      const sInversePairs = tf.reshape(
        tf.mul(
          tf.gather(tf.reshape(sInverse, [-1]), tf.tensor1d(pairs.flat, 'int32')),
          tf.tensor1d(pairs.weight),
        ),
        [-1, 1],
      );
      const updates: Params = {};
      const p: Params = {};
      // 6. P⁻ − P⁻² ⊙ R, with R = Σ_ij S⁻¹_ij (per-sample gradient i) ⊙ (per-sample gradient j).
      const posterior = (prior: tf.Tensor, reduced: tf.Tensor): tf.Tensor =>
        floorAt(tf.sub(prior, tf.mul(tf.square(prior), reduced)), pMin);
      let posteriorSum: number | undefined = 0;
      // P and the update of one parameter: one native pass where the addon is loaded.
      const finish = (key: string, reduced: tf.Tensor, gain: tf.Tensor): void => {
        const fused = nativeKalmanPosterior(prior[key]!, reduced, gain, pMin);
        if (fused) {
          p[key] = fused.p;
          updates[key] = fused.update;
          if (posteriorSum !== undefined) posteriorSum += fused.sum;
          return;
        }
        p[key] = posterior(prior[key]!, reduced);
        updates[key] = tf.mul(prior[key]!, gain);
        posteriorSum = undefined;
      };
      layers.forEach((l, i) => {
        // Σ_i w_i a_i ⊗ δ_i = aᵀ diag(w) Δ in the kernel's in×out layout; Σ_i w_i δ_i for the bias.
        const weightedDelta = tf.mul(l.delta, w) as tf.Tensor2D;
        const weightedPairs = tf.mul(dd[i]!, sInversePairs) as tf.Tensor2D;
        finish(
          l.kernel,
          matMulTransposeA(aa[i]!, weightedPairs),
          matMulTransposeA(l.a, weightedDelta),
        );
        finish(l.bias, tf.sum(weightedPairs, 0), tf.sum(weightedDelta, 0));
      });
      examples.forEach((x) => {
        // R = Σ_ij S⁻¹_ij G_i ⊙ G_j = Σ_i (S⁻¹G)_i ⊙ G_i, and the gain Σ_i w_i G_i = wᵀG, both
        // back in the parameters' shapes through the block's matrix layout.
        const [aSize, gSize] = [x.block.aSize, x.block.gSize];
        const reduced = x.block.fromMatrix(
          tf.reshape(tf.sum(tf.mul(tf.matMul(sInverse, x.gradients), x.gradients), 0), [
            aSize,
            gSize,
          ]) as tf.Tensor2D,
        );
        const gain = x.block.fromMatrix(
          tf.reshape(matMulTransposeA(w as tf.Tensor2D, x.gradients), [
            aSize,
            gSize,
          ]) as tf.Tensor2D,
        );
        for (const key of x.block.params) finish(key, reduced[key]!, gain[key]!);
      });

      // 7. Observation noise: what the innovations show beyond the predicted H P⁻ Hᵀ.
      const excess = tf.sub(tf.mean(tf.square(e)), tf.div(tf.sum(tf.mul(hph, tf.eye(k))), k));
      const r = tf.add(
        tf.mul(state.r, betaR),
        tf.mul(floorAt(excess, rMin), 1 - betaR),
      ) as tf.Scalar;

      const coordinates = Object.values(p).reduce((n, t) => n + t.size, 0);
      const traceP =
        posteriorSum !== undefined
          ? tf.scalar(posteriorSum / coordinates)
          : (tf.div(tf.addN(Object.values(p).map((t) => sumAll(t))), coordinates) as tf.Scalar);
      return {
        updates,
        state: { count: state.count + 1, p, r },
        // r is state: the update operator disposes diagnostics after the step, so report a copy.
        diagnostics: {
          learningRate: eta,
          kalmanTraceP: traceP,
          kalmanNoise: tf.clone(r),
          kalmanInnovationNorm: tf.norm(e) as tf.Scalar,
        },
      };
    },
  };
}

/**
 * The first k examples' outer-product rows of every block (curvature/blocks), matched to its
 * parameters; checks that the blocks cover the parameter tree exactly, since P has one entry per
 * parameter.
 */
function observationRows(
  blocks: readonly KroneckerBlock[],
  signals: readonly LayerSignals[],
  params: Params,
  k: number,
): (OuterProductRows | ExampleGradients)[] {
  if (signals.length !== blocks.length) {
    throw new GrngError(
      'step',
      `rkalman: got signals for ${signals.length} layers, the model has ${blocks.length} (${blocks.map((b) => b.layer).join(', ')})`,
      { layers: blocks.map((b) => b.layer) },
    );
  }
  const covered = new Set<string>();
  const layers = blocks.map((block, index) => {
    const { layer, a, delta } = signals[index]!;
    if (layer !== block.layer)
      throw new GrngError(
        'step',
        `rkalman: signal ${index} is from layer ${layer}, the model's block ${index} is layer ${block.layer}`,
        { layer: block.layer },
      );
    if (!block.outerProductRows) {
      if (!block.exampleGradients)
        throw new GrngError(
          'invalid-model',
          `rkalman: layer ${block.layer} (${block.kind}) gives no per-example gradients; rkalman covers dense and conv2d layers`,
          { layer: block.layer },
        );
      for (const key of block.params) {
        if (!params[key])
          throw new GrngError(
            'shape',
            `rkalman: layer ${block.layer} has signals but its parameter ${key} is missing`,
            { layer: block.layer },
          );
        covered.add(key);
      }
      const gradients = block.exampleGradients(a, delta, k);
      return {
        block,
        gradients: tf.reshape(gradients, [k, block.aSize * block.gSize]) as tf.Tensor2D,
      };
    }
    const rows = block.outerProductRows(a, delta, k);
    const [inputs, units] = [rows.a.shape[1], rows.delta.shape[1]];
    const w = params[rows.kernel];
    const b = params[rows.bias];
    if (!w || !b || w.shape.join() !== `${inputs},${units}` || b.shape.join() !== `${units}`) {
      throw new GrngError(
        'shape',
        `rkalman: layer ${block.layer} has signals for ${inputs}→${units} but the parameters ${rows.kernel} [${w?.shape.join(', ') ?? 'missing'}] and ${rows.bias} [${b?.shape.join(', ') ?? 'missing'}] do not match`,
        { layer: block.layer },
      );
    }
    covered.add(rows.kernel).add(rows.bias);
    return rows;
  });
  const uncovered = Object.keys(params).filter((key) => !covered.has(key));
  if (uncovered.length > 0) {
    throw new GrngError(
      'invalid-model',
      `rkalman covers dense and conv2d layers only; no layer signals for ${uncovered.join(', ')}`,
      { keys: uncovered },
    );
  }
  return layers;
}

/**
 * A block's first k per-example gradients, [k, d_A·d_G] in its toMatrix layout (for blocks whose
 * per-example gradient is a sum of outer products, as conv2d's).
 */
interface ExampleGradients {
  readonly block: KroneckerBlock;
  readonly gradients: tf.Tensor2D;
}

/** Host-side indices of the row pairs i ≤ j of k rows (k(k+1)/2 of them). */
interface RowPairs {
  /** i and j of each pair. */
  readonly first: Int32Array;
  readonly second: Int32Array;
  /** Row-major index i·k + j of each pair in a k×k matrix. */
  readonly flat: Int32Array;
  /** 1 on the diagonal, 2 off it: each off-diagonal pair stands for (i, j) and (j, i). */
  readonly weight: Float32Array;
  /** For each entry of the k×k matrix (row-major), the pair that holds it. */
  readonly square: Int32Array;
}

const pairCache = new Map<number, RowPairs>();

/**
 * Row pairs for k rows; host arrays, cached per k (tensors are made per step, so nothing outlives a
 * run).
 */
function rowPairIndex(k: number): RowPairs {
  let pairs = pairCache.get(k);
  if (!pairs) {
    const count = (k * (k + 1)) / 2;
    pairs = {
      first: new Int32Array(count),
      second: new Int32Array(count),
      flat: new Int32Array(count),
      weight: new Float32Array(count),
      square: new Int32Array(k * k),
    };
    let n = 0;
    for (let i = 0; i < k; i++) {
      for (let j = i; j < k; j++) {
        pairs.first[n] = i;
        pairs.second[n] = j;
        pairs.flat[n] = i * k + j;
        pairs.weight[n] = i === j ? 1 : 2;
        pairs.square[i * k + j] = n;
        pairs.square[j * k + i] = n;
        n += 1;
      }
    }
    pairCache.set(k, pairs);
  }
  return pairs;
}

/**
 * k distinct row indices out of `total`, in increasing order, a seeded draw per step (partial
 * Fisher–Yates on a seedrandom stream): the observed tokens of a language model.
 */
function drawRows(total: number, k: number, step: number): number[] {
  const rng = seedrandom(`grng-rkalman-rows-${step}`);
  const order = Int32Array.from({ length: total }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng() * (total - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return Array.from(order.subarray(0, k)).sort((a, b) => a - b);
}
