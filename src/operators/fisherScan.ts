import * as tf from '@tensorflow/tfjs';
import { concatMap, defer, finalize, map, Observable, type OperatorFunction } from 'rxjs';
import { dampFactors } from '../curvature/damping.js';
import { curvatureBlocks, foldStatistics } from '../curvature/blocks/index.js';
import { averageValue, type FactorAverage } from '../curvature/movingAverage.js';
import { newtonSchulzInverse, type NewtonSchulzResult } from '../linalg/newtonSchulz.js';
import {
  resolveCurvatureOptions,
  type CurvatureOptions,
  type DampingRule,
} from '../curvature/options.js';
import { modelFamily } from '../nn/modelFamily.js';
import { sampledLabelPass, sampledSignals } from '../nn/sampledLabels.js';
import { asGrngError, GrngError } from '../errors.js';
import { nativeSpdInverse, nativeSpdInverseAvailable } from '../runtime/nativeBlas.js';
import type { Sequential } from '../nn/sequential.js';
import { sumOfSquares } from '../linalg/reductions.js';
import type { Curvature, KroneckerInverse, Step, StepHealth } from '../types.js';
import { checkKeys, checkNumber } from '../validate.js';
import { retainStep } from './retainStep.js';
import type { StateSlot } from './stateSlot.js';

/** One curvature block's factor averages and damped inverses. */
export interface LayerState {
  a: FactorAverage;
  g: FactorAverage;
  inverse?: KroneckerInverse;
}

/** What fisherScan keeps between steps (and what a checkpoint saves of it). */
export interface ScanState {
  layers: LayerState[] | undefined;
  /** Σ‖g‖² over the steps since the last refresh (device scalar), and their count. */
  gradNormSquaredSum: tf.Scalar | undefined;
  stepsSinceRefresh: number;
  /** Set on teardown, so a refresh still in flight disposes what it makes. */
  closed: boolean;
  /** The refresh in flight (settles, never rejects), so teardown can wait for it. */
  refreshing?: Promise<void> | undefined;
  last: Omit<Curvature, 'layers' | 'refreshed'>;
}

/** What fisherScan shares with the rest of a run besides its steps. */
export interface FisherScanRun {
  /**
   * Skipped non-finite steps: not folded into the factors; each raises the damping (×10) and forces
   * a refresh.
   */
  readonly health?: StepHealth;
  /** Exposes the scan state to checkpoints and takes a restored one. */
  readonly state?: StateSlot<ScanState>;
}

/**
 * The Kronecker-factored Fisher as an RxJS scan [prior: K-FAC, Martens & Grosse 2015]. It owns,
 * per subscription, each curvature block's (curvature/blocks: one per dense layer of an MLP)
 * moving averages of A = ĀᵀĀ/m and G = Δ̃ᵀΔ̃/m (bias
 * corrected, decay β), updated every `statsEvery` steps from the step's signals (and, for the
 * true Fisher, a sampled-label backward pass), and the damped inverses
 * (A + π√γ I)⁻¹, (G + √γ/π I)⁻¹ refreshed (Newton–Schulz, or float64 Cholesky: option `inverse`)
 * every `inverseEvery` steps (and at steps 1, 2, 4, … before the first: option `earlyRefresh`) with the
 * damping γ = λ + ρ·ḡ² of `damping`. Steps leave with `curvature` attached; replaced tensors are
 * disposed, and all of them on complete, error and unsubscribe.
 *
 * Refresh steps are asynchronous (Newton–Schulz reads its residual back to stop early); they
 * hold the batch, so a paced source waits. Needs `forwardBackward(model, { signals: true })`.
 *
 * @example
 * steps$.pipe(fisherScan(model, { lambda: 1e-3, rho: 0, norm: 'mean' }), update(model, kfac()));
 */
export function fisherScan(
  model: Sequential,
  damping: DampingRule,
  options: CurvatureOptions = {},
  run: FisherScanRun = {},
): OperatorFunction<Step, Step> {
  checkKeys('damping', damping, ['lambda', 'rho', 'norm']);
  checkNumber('damping', damping.lambda, { min: 0 });
  checkNumber('rho', damping.rho, { min: 0 });
  if (damping.lambda === 0 && damping.rho === 0)
    checkNumber('damping', damping.lambda, { min: 0, minExclusive: true });
  const resolved = resolveCurvatureOptions(options, modelFamily(model));
  // One block per signal layer, in order; a layer kind without a block is an error here, before any
  // step.
  const blocks = curvatureBlocks(model, resolved);
  const blockParams = blocks.flatMap((block) => block.params);
  const inverseEvery = damping.norm === 'step' ? 1 : resolved.inverseEvery;
  const needsGradNorm = damping.rho > 0;

  return (source) =>
    defer(() => {
      // Decided at subscription, when the backend is known; `cholesky` where it cannot run is
      // the user's mistake, said before any step.
      const cholesky =
        resolved.inverse === 'cholesky' ||
        (resolved.inverse === 'auto' && nativeSpdInverseAvailable());
      if (cholesky && !nativeSpdInverseAvailable()) {
        throw new GrngError(
          'invalid-option',
          `invalid inverse: "cholesky" needs the native BLAS matMul with LAPACK on the wasm backend (backend ${tf.getBackend()}; see GRNG_BLAS in the README); use "auto" or "newton-schulz"`,
          { option: 'inverse', value: 'cholesky' },
        );
      }
      const state: ScanState = {
        layers: undefined,
        gradNormSquaredSum: undefined,
        stepsSinceRefresh: 0,
        closed: false,
        last: { damping: NaN, newtonIterations: 0, newtonResidual: NaN },
      };
      run.state?.attach({
        get: () => state,
        set: (restored) => {
          disposeScanState(state);
          Object.assign(state, { ...restored, closed: false });
        },
      });
      const health = run.health;
      return source.pipe(
        // Statistics synchronously, while the step's tensors are alive; retained copies let the
        // (possibly asynchronous) emission happen later without upstream's tensors being gone.
        map((step) => {
          try {
            accumulate(step, state);
          } catch (error) {
            throw asGrngError(error, { operator: 'fisherScan', step: step.batch.step });
          }
          return retainStep(step);
        }),
        concatMap(
          ({ step, retained }) =>
            new Observable<Step>((subscriber) => {
              const emit = (refreshed: boolean): void => {
                try {
                  // A skipped step before any statistics has no curvature; update skips it anyway.
                  subscriber.next(
                    state.layers ? { ...step, curvature: snapshot(state, refreshed) } : step,
                  );
                } finally {
                  tf.dispose(retained);
                }
                subscriber.complete();
              };
              const forced = health?.refreshDue === true;
              if (
                !state.layers ||
                (!refreshScheduled(step.batch.step) &&
                  !forced &&
                  state.layers.every((l) => l.inverse))
              ) {
                emit(false);
                return;
              }
              const release = step.batch.hold();
              let cancelled = false;
              if (forced) health!.refreshDue = false;
              const refreshing = refresh(state, forced, step.batch.step, cholesky);
              state.refreshing = refreshing.then(
                () => void (state.refreshing = undefined),
                () => void (state.refreshing = undefined),
              );
              refreshing
                .then(() => {
                  if (!cancelled) emit(true);
                  else tf.dispose(retained);
                })
                .catch((error: unknown) => {
                  tf.dispose(retained);
                  subscriber.error(
                    asGrngError(error, { operator: 'fisherScan', step: step.batch.step }),
                  );
                })
                .finally(release);
              return () => {
                cancelled = true;
              };
            }),
        ),
        finalize(() => {
          run.state?.detach();
          state.closed = true;
          // A refresh in flight still reads the factors and warm-starts from the inverses (it
          // yields to the event loop between iterations, so teardown can come mid-refresh):
          // dispose once it has stopped; it disposes what it made itself when it sees `closed`.
          if (state.refreshing) void state.refreshing.then(() => disposeScanState(state));
          else disposeScanState(state);
        }),
      );
    });

  /** Steps below the first scheduled refresh, while `earlyRefresh: 'doubling'` is in force. */
  function inEarlyRefreshes(step: number): boolean {
    return resolved.earlyRefresh === 'doubling' && step < inverseEvery;
  }

  /**
   * Refresh at every multiple of `inverseEvery`, and with `doubling` also at 1, 2, 4, 8, … below
   * it: one batch's factors have rank ≤ the batch size, so the step-0 inverse of a wide layer is
   * mostly damping; each early refresh doubles the statistics behind it.
   */
  function refreshScheduled(step: number): boolean {
    if (step % inverseEvery === 0) return true;
    return inEarlyRefreshes(step) && (step & (step - 1)) === 0;
  }

  function accumulate(step: Step, state: ScanState): void {
    if (step.skipped) return;
    const signals = step.signals;
    if (!signals || signals.length !== blocks.length) {
      throw new GrngError(
        'step',
        'fisherScan needs per-layer signals: run forwardBackward(model, { signals: true }) before it',
        { got: signals?.length ?? 0 },
      );
    }
    blocks.forEach((block, i) => {
      if (signals[i]!.layer !== block.layer)
        throw new GrngError(
          'step',
          `fisherScan: signal ${i} is from layer ${signals[i]!.layer}, the model's block ${i} is layer ${block.layer}`,
          { layer: block.layer },
        );
    });
    if (needsGradNorm) {
      const previous = state.gradNormSquaredSum;
      state.gradNormSquaredSum = tf.tidy(() => {
        // Over the preconditioned parameters only: ρ‖g‖² regularises their Fisher, and the
        // gradients of a first-order group (embeddings, norms) are another scale altogether.
        const g2 = tf.addN(blockParams.map((key) => sumOfSquares(step.grads[key]!)));
        return (previous && damping.norm === 'mean' ? tf.add(previous, g2) : g2) as tf.Scalar;
      });
      previous?.dispose();
    }
    state.stepsSinceRefresh += 1;
    const due =
      state.layers === undefined ||
      step.batch.step % resolved.statsEvery === 0 ||
      inEarlyRefreshes(step.batch.step);
    if (!due) return;
    const seed = resolved.seed * 100_003 + step.batch.step;
    const sampled =
      resolved.fisher === 'sampled'
        ? (sampledSignals(model, signals, seed) ??
          sampledLabelPass(model, step.batch.x, { signals: true, seed }).deltas!)
        : undefined;
    try {
      const deltaOf = (i: number): tf.Tensor => (sampled ? sampled[i]! : signals[i]!.delta);
      // Blocks that sample rows (conv2d's convPatchRows) draw them from this step's seed.
      const context = { seed, rowsPerExample: model.labelsPerExample };
      if (state.layers === undefined) {
        state.layers = blocks.map((block, i) =>
          foldStatistics(block, undefined, signals[i]!.a, deltaOf(i), resolved.beta, context),
        );
      } else {
        state.layers.forEach((layer, i) => {
          const next = foldStatistics(
            blocks[i]!,
            layer,
            signals[i]!.a,
            deltaOf(i),
            resolved.beta,
            context,
          );
          tf.dispose([layer.a.sum, layer.g.sum]);
          layer.a = next.a;
          layer.g = next.g;
        });
      }
    } finally {
      if (sampled) tf.dispose(sampled);
    }
  }

  /**
   * One damped factor's inverse: Cholesky when chosen (Newton–Schulz if it fails), else
   * Newton–Schulz from `warm`.
   */
  async function invert(
    m: tf.Tensor2D,
    warm: tf.Tensor2D | undefined,
    cholesky: boolean,
  ): Promise<NewtonSchulzResult> {
    if (cholesky) {
      const exact = nativeSpdInverse(m);
      if (exact)
        return { inverse: exact.inverse, iterations: 0, residual: exact.residual, coldStart: true };
    }
    return newtonSchulzInverse(m, {
      ...(warm ? { warmStart: warm } : {}),
      tolerance: resolved.newtonTolerance,
      maxIterations: resolved.newtonMaxIterations,
      warmTrials: resolved.newtonWarmTrials,
    });
  }

  async function refresh(
    state: ScanState,
    forced: boolean,
    step: number,
    cholesky: boolean,
  ): Promise<void> {
    let meanGradNormSquared = 0;
    if (needsGradNorm && state.gradNormSquaredSum) {
      const total = (await state.gradNormSquaredSum.data())[0]!;
      meanGradNormSquared =
        damping.norm === 'mean' ? total / Math.max(1, state.stepsSinceRefresh) : total;
      state.gradNormSquaredSum.dispose();
      state.gradNormSquaredSum = undefined;
    }
    state.stepsSinceRefresh = 0;
    // A scheduled refresh a whole period after the last skipped step takes back one ×10.
    const health = run.health;
    if (health && !forced && health.dampingBoost > 1 && step - health.lastBadStep >= inverseEvery)
      health.dampingBoost = Math.max(1, health.dampingBoost / 10);
    const gamma =
      (damping.lambda + damping.rho * meanGradNormSquared) * (health?.dampingBoost ?? 1);
    if (!Number.isFinite(gamma) || gamma <= 0) {
      throw new GrngError(
        'step',
        `damping became ${gamma} (λ = ${damping.lambda}, ρ = ${damping.rho}, mean ‖g‖² = ${meanGradNormSquared})`,
        { gamma },
      );
    }
    let iterations = 0;
    let residual = 0;
    for (const layer of state.layers!) {
      const damped = tf.tidy(() => {
        const a = averageValue(layer.a);
        const g = averageValue(layer.g);
        return dampFactors(a, g, gamma);
      });
      try {
        const aInv = await invert(damped.a, layer.inverse?.aInverse, cholesky);
        const gInv = await invert(damped.g, layer.inverse?.gInverse, cholesky);
        if (state.closed) {
          tf.dispose([aInv.inverse, gInv.inverse]);
          return;
        }
        if (layer.inverse) tf.dispose([layer.inverse.aInverse, layer.inverse.gInverse]);
        layer.inverse = { aInverse: aInv.inverse, gInverse: gInv.inverse };
        iterations += aInv.iterations + gInv.iterations;
        residual = Math.max(residual, aInv.residual, gInv.residual);
      } finally {
        tf.dispose([damped.a, damped.g, damped.pi]);
      }
    }
    state.last = { damping: gamma, newtonIterations: iterations, newtonResidual: residual };
  }
}

function snapshot(state: ScanState, refreshed: boolean): Curvature {
  return { layers: state.layers!.map((l) => l.inverse!), ...state.last, refreshed };
}

function disposeScanState(state: ScanState): void {
  for (const layer of state.layers ?? []) {
    tf.dispose([layer.a.sum, layer.g.sum]);
    if (layer.inverse) tf.dispose([layer.inverse.aInverse, layer.inverse.gInverse]);
  }
  state.gradNormSquaredSum?.dispose();
  state.layers = undefined;
  state.gradNormSquaredSum = undefined;
}
