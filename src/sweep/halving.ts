import type { SweepConfig } from './config.js';
import { readResult } from './runTrial.js';
import type { Trial, TrialExecutor, TrialResult } from './types.js';

/**
 * The step budget of a whole run: `--steps` far past any run, so each trial stops where its own
 * epochs (or the base's `steps`) end.
 */
export const FULL_RUN = 2 ** 31 - 1;

/** One row of the sweep table. */
export interface SweepRow {
  readonly trial: Trial;
  /** done: ran its whole budget; stopped: not promoted past a rung; failed: its run failed. */
  readonly status: 'done' | 'stopped' | 'failed';
  /** The last budget it ran (the rung it stopped at). */
  readonly rung: number;
  readonly result: TrialResult;
}

/**
 * Runs a sweep's trials through an executor with synchronous successive halving: every trial to
 * the first rung's budget; then, per optimizer, the configurations (trials grouped over seeds) are
 * ranked by their mean metric and the best ⌈n / reduction⌉ go on to the next rung, all their
 * seeds with them, resumed from their checkpoints; the last rung is the whole run. Without halving
 * every trial runs its whole run. Synchronous rungs (rather than ASHA's asynchronous promotions)
 * make the promotions depend on the results only, never on which worker was faster: a sweep gives
 * the same table on one machine or many.
 *
 * @example
 * const rows = await runHalving(config, trials, sweepDir, localPool({ workers: 2, … }));
 */
export async function runHalving(
  config: SweepConfig,
  trials: readonly Trial[],
  sweepDir: string,
  executor: TrialExecutor,
  onResult: (result: TrialResult, trial: Trial, kept: boolean) => void = () => undefined,
): Promise<SweepRow[]> {
  const budgets = [...(config.halving?.rungs ?? []), FULL_RUN];
  const latest = new Map<string, { result: TrialResult; rung: number }>();
  let active = [...trials];
  for (const [index, budget] of budgets.entries()) {
    const results = await Promise.all(
      active.map(async (trial) => {
        const before = latest.get(trial.id)?.result;
        // A run that ended before the last budget (its epochs are done) has nothing more to run.
        const ended = before && before.status === 'done' && before.steps < before.budget;
        // A result already on disk (a resumed sweep) is kept, not asked of a worker again.
        const kept = ended ? undefined : readResult(sweepDir, trial.id, budget);
        const result =
          before && ended
            ? before
            : (kept ?? (await executor.run({ sweepDir, trial, steps: budget })));
        if (!ended) onResult(result, trial, kept !== undefined);
        latest.set(trial.id, { result, rung: budget });
        return result;
      }),
    );
    if (index === budgets.length - 1) break;
    active = promote(config, active, results, config.halving!.reduction);
  }
  const finalists = new Set(active.map((t) => t.id));
  return trials.map((trial) => {
    const { result, rung } = latest.get(trial.id)!;
    const status =
      result.status === 'failed' ? 'failed' : finalists.has(trial.id) ? 'done' : 'stopped';
    return { trial, status, rung, result };
  });
}

/** The trials of the best ⌈n / reduction⌉ configurations of each optimizer. */
function promote(
  config: SweepConfig,
  trials: readonly Trial[],
  results: readonly TrialResult[],
  reduction: number,
): Trial[] {
  const sign = config.metric.higherIsBetter ? -1 : 1;
  const groups = new Map<string, Map<string, { trials: Trial[]; values: number[] }>>();
  trials.forEach((trial, i) => {
    const { seed: _seed, ...configuration } = trial.settings;
    const key = JSON.stringify(configuration);
    const optimizer = String(trial.settings.optimizer);
    const byConfiguration = groups.get(optimizer) ?? new Map();
    groups.set(optimizer, byConfiguration);
    const group = byConfiguration.get(key) ?? { trials: [], values: [] };
    byConfiguration.set(key, group);
    group.trials.push(trial);
    // A failed or never-evaluated trial ranks last.
    const metric = results[i]!.status === 'done' ? results[i]!.metric : null;
    group.values.push(metric ?? Number.NaN);
  });
  const promoted: Trial[] = [];
  for (const byConfiguration of groups.values()) {
    const ranked = [...byConfiguration.values()]
      .map((group) => ({
        group,
        score: group.values.some((v) => !Number.isFinite(v))
          ? Infinity
          : (sign * group.values.reduce((a, b) => a + b, 0)) / group.values.length,
      }))
      // Stable: ties keep the config's order, so the promotion is the same on every machine.
      .sort((a, b) => a.score - b.score);
    const keep = Math.ceil(ranked.length / reduction);
    for (const { group } of ranked.slice(0, keep)) promoted.push(...group.trials);
  }
  const order = new Map(trials.map((t, i) => [t.id, i]));
  return promoted.sort((a, b) => order.get(a.id)! - order.get(b.id)!);
}
