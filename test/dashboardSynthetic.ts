import { metricsSchema, rowsToRecordBatch, type RecordedRun } from '../src/metrics/schema.js';
import type { RunHub } from '../src/sinks/runHub.js';
import type { MetricsRow } from '../src/types.js';

/** Synthetic training runs for the dashboard's tests and demo (no tfjs). */
export type SyntheticKind = 'ring' | 'adamw' | 'sophia' | 'rkalman';

export function syntheticRun(
  id: string,
  kind: SyntheticKind,
  extra: Partial<RecordedRun> = {},
): RecordedRun {
  const options: Record<SyntheticKind, Record<string, unknown>> = {
    ring: { learningRate: 0.05, damping: 1e-3, rho: 0.1, momentum: 0.9, klClip: 1e-3 },
    adamw: { learningRate: 1e-3, beta1: 0.9, beta2: 0.999, weightDecay: 0.01 },
    sophia: { learningRate: 2e-4, rho: 0.04, beta1: 0.965 },
    rkalman: { learningRate: 1, noise: 0.1 },
  };
  return {
    id,
    label: `${kind} seed 1`,
    optimizer: kind,
    optimizerOptions: options[kind],
    model: 'mlp:784-256-10',
    dataset: 'mnist',
    backend: 'wasm',
    seed: 1,
    batchSize: 64,
    totalSteps: 100_000,
    batchesPerEpoch: 938,
    version: '0.1.0',
    startedAt: new Date().toISOString(),
    group: 'synthetic compare',
    ...extra,
  };
}

/** Deterministic noise in [-1, 1]. */
function noise(step: number, salt: number): number {
  const x = Math.sin(step * 12.9898 + salt * 78.233) * 43758.5453;
  return 2 * (x - Math.floor(x)) - 1;
}

export function syntheticRow(kind: SyntheticKind, step: number): MetricsRow {
  const salt = kind.length;
  const speed = kind === 'ring' ? 600 : kind === 'sophia' ? 900 : kind === 'rkalman' ? 1100 : 1400;
  const loss = 0.04 + 2.26 * Math.exp(-step / speed) * (1 + 0.25 * noise(step, salt));
  const accuracy = Math.min(1, Math.max(0, 1 - loss / 2.4 + 0.03 * noise(step, salt + 1)));
  const evaluated = step > 0 && step % 100 === 0;
  const diagnostics: Record<string, number> = {};
  if (kind === 'ring') {
    diagnostics.damping = 1e-3 * (1 + 0.5 * Math.cos(step / 300));
    diagnostics.newtonIterations = 3 + Math.round(2 * Math.abs(noise(step, 7)));
    diagnostics.klClip = Math.min(1, 0.2 + step / 3000);
    diagnostics.hgNorm = 0.3 * Math.exp(-step / 2000) * (1 + 0.2 * noise(step, 9));
  } else if (kind === 'sophia') {
    diagnostics.winRate = 0.6 + 0.3 * Math.tanh(step / 1000) + 0.02 * noise(step, 3);
  } else if (kind === 'rkalman') {
    diagnostics.kalmanTraceP = 10 * Math.exp(-step / 1500) + 0.1;
    diagnostics.kalmanNoise = 0.1 * (1 + 0.1 * noise(step, 4));
  }
  return {
    step,
    epoch: Math.floor(step / 938),
    wallMs: step * 12 + 40 * Math.floor(step / 100),
    stepMs: 12,
    evaluationMs: evaluated ? 40 : 0,
    samples: 64,
    loss,
    accuracy,
    learningRate:
      kind === 'adamw' ? 1e-3 * Math.min(1, (step + 1) / 200) : 0.05 * Math.exp(-step / 5000),
    gradNorm: 2 * Math.exp(-step / 1500) * (1 + 0.3 * noise(step, salt + 2)) + 0.05,
    updateNorm: 0.02 * Math.exp(-step / 3000),
    updateGradCorrelation: 0.5 + 0.3 * noise(step, salt + 3),
    testLoss: evaluated ? loss * 1.1 : null,
    testAccuracy: evaluated ? accuracy * 0.98 : null,
    diagnostics,
  };
}

/** A live synthetic run in `hub`: `first` rows at once, then `perTick` more every `everyMs`. */
export function feedHub(
  hub: RunHub,
  run: RecordedRun,
  kind: SyntheticKind,
  options: {
    first?: number;
    perTick?: number;
    everyMs?: number;
    total?: number;
    finished?: boolean;
  } = {},
): { stop(): void } {
  const schema = metricsSchema(run);
  const make = (from: number, n: number) =>
    rowsToRecordBatch(
      schema,
      Array.from({ length: n }, (_, i) => syntheticRow(kind, from + i)),
    );
  const first = options.first ?? 0;
  const total = options.total ?? run.totalSteps;
  if (options.finished) {
    const batches = [];
    for (let at = 0; at < total; at += 1000) batches.push(make(at, Math.min(1000, total - at)));
    hub.addRun(run, schema, { batches, finished: true });
    return { stop() {} };
  }
  hub.addRun(run, schema, first > 0 ? { batches: [make(0, first)] } : {});
  let step = first;
  const perTick = options.perTick ?? 16;
  const timer = setInterval(() => {
    const n = Math.min(perTick, total - step);
    if (n <= 0) {
      clearInterval(timer);
      hub.endRun(run.id);
      return;
    }
    hub.pushBatch(run.id, make(step, n));
    step += n;
  }, options.everyMs ?? 100);
  return { stop: () => clearInterval(timer) };
}
