import type { FlagValue } from '../sweep/config.js';
import type { MetricsRow } from '../types.js';
import {
  compare,
  formatDifference,
  formatStat,
  median,
  stat,
  standardError,
  type Stat,
  type Verdict,
} from './statistics.js';
import type { SweepData, TrialData, TrialSummary } from './sweepData.js';

/** How a sweep's quality metric is read from evaluation rows and shown. */
export interface MetricView {
  readonly name: string;
  readonly higherIsBetter: boolean;
  readonly digits: number;
  of(row: Pick<MetricsRow, 'testLoss' | 'testAccuracy'>): number | null;
}

/**
 * Test accuracy for classifiers; for a language model swept on test loss, bits per character
 * (nats per byte ÷ ln 2), as the paper's language results and grng's CLI state them.
 */
export function metricView(sweep: SweepData): MetricView {
  const languageModel = sweep.trials.some((t) => (t.run?.labelsPerExample ?? 1) > 1);
  if (sweep.config.metric.name === 'testAccuracy')
    return {
      name: languageModel ? 'next-byte accuracy' : 'test accuracy',
      higherIsBetter: true,
      digits: 4,
      of: (row) => row.testAccuracy,
    };
  if (languageModel)
    return {
      name: 'test bits per character',
      higherIsBetter: false,
      digits: 3,
      of: (row) => (row.testLoss === null ? null : row.testLoss / Math.LN2),
    };
  return { name: 'test loss', higherIsBetter: false, digits: 4, of: (row) => row.testLoss };
}

/** One evaluation of a run: where it was (step, epoch, training seconds) and the metric. */
export interface EvalPoint {
  readonly step: number;
  readonly epoch: number;
  /** Seconds of training before it (the run's clock less its evaluations). */
  readonly seconds: number;
  readonly value: number;
}

/** One seed's run of a configuration, reduced to what the report states. */
export interface SeedRun {
  readonly trial: TrialData;
  readonly evals: readonly EvalPoint[];
  readonly steps: number;
  readonly trainingSeconds: number;
  readonly msPerStep: number;
  readonly final: number | null;
  readonly meanGradNorm: number | null;
  readonly meanCorrelation: number | null;
  /** Mean damping the optimizer reported (RING's γ = λ + ρ·ḡ²; K-FAC's λ). */
  readonly meanDamping: number | null;
  /** Mean training loss over the first tenth of the full run's steps. */
  readonly earlyLoss: number | null;
  /** Per-step rows (training loss, ‖g‖) in 40 bins over the run, for plots. */
  readonly binned: TrialSummary['binned'];
}

/** A configuration (settings without the seed) and its seeds' runs. */
export interface Configuration {
  readonly optimizer: string;
  readonly setting: Readonly<Record<string, FlagValue>>;
  /** `ring lr=0.05 damping=0.001`. */
  readonly label: string;
  /** Every seed ran the whole run. */
  readonly done: boolean;
  readonly seeds: readonly SeedRun[];
  readonly final: Stat | undefined;
  readonly trainingSeconds: Stat | undefined;
  readonly msPerStep: Stat | undefined;
  readonly gradNorm: Stat | undefined;
  readonly correlation: Stat | undefined;
  readonly damping: Stat | undefined;
  readonly earlyLoss: Stat | undefined;
  /** The metric at the first halving rung (what promotion ranked by). */
  readonly atRung: Stat | undefined;
}

/** Groups a sweep's trials into configurations, in the config's order. */
export function configurations(sweep: SweepData, view: MetricView): Configuration[] {
  const rung = sweep.config.halving?.rungs[0];
  const groups = new Map<string, TrialData[]>();
  for (const trial of sweep.trials) {
    const key = `${trial.optimizer} ${JSON.stringify(trial.setting)}`;
    groups.set(key, [...(groups.get(key) ?? []), trial]);
  }
  return [...groups.values()].map((trials) => {
    const seeds = trials.map((trial) => seedRun(trial, view));
    const { optimizer, setting } = trials[0]!;
    const parts = Object.entries(setting).map(([k, v]) => `${k}=${String(v)}`);
    return {
      optimizer,
      setting,
      label: [optimizer, ...parts].join(' '),
      done: trials.every((t) => t.status === 'done'),
      seeds,
      final: stat(seeds.map((s) => s.final)),
      trainingSeconds: stat(seeds.map((s) => s.trainingSeconds)),
      msPerStep: stat(seeds.map((s) => s.msPerStep)),
      gradNorm: stat(seeds.map((s) => s.meanGradNorm)),
      correlation: stat(seeds.map((s) => s.meanCorrelation)),
      damping: stat(seeds.map((s) => s.meanDamping)),
      earlyLoss: stat(seeds.map((s) => s.earlyLoss)),
      atRung:
        rung === undefined
          ? undefined
          : stat(seeds.map((s) => s.evals.find((e) => e.step === rung - 1)?.value ?? null)),
    };
  });
}

function seedRun(trial: TrialData, view: MetricView): SeedRun {
  const summary = trial.summary;
  const evals: EvalPoint[] = [];
  for (const row of summary.evals) {
    const value = view.of(row);
    if (value !== null && Number.isFinite(value))
      evals.push({ step: row.step, epoch: row.epoch, seconds: row.seconds, value });
  }
  return {
    trial,
    evals,
    steps: summary.steps,
    trainingSeconds: summary.trainingSeconds,
    msPerStep: summary.msPerStep ?? NaN,
    final: evals.at(-1)?.value ?? null,
    meanGradNorm: summary.meanGradNorm,
    meanCorrelation: summary.meanCorrelation,
    meanDamping: summary.meanDamping,
    earlyLoss: summary.earlyLoss,
    binned: summary.binned,
  };
}

/** A comparison sweep: the configuration each optimizer was tuned to, and what it reached. */
export interface Comparison {
  readonly sweep: SweepData;
  readonly view: MetricView;
  readonly all: readonly Configuration[];
  /** One per optimizer, in the config's order: the configuration that ran the whole run. */
  readonly chosen: readonly Configuration[];
  /** The equal-time budget: the least mean training time of the chosen configurations. */
  readonly equalSeconds: number;
  /** Per chosen configuration, the metric at the last evaluation within equalSeconds. */
  readonly atEqualTime: ReadonlyMap<Configuration, Stat | undefined>;
  readonly target: number | undefined;
  /** Per chosen configuration: seconds to reach the target, over the seeds that did. */
  readonly toTarget: ReadonlyMap<Configuration, { seconds: Stat | undefined; reached: number }>;
}

/**
 * Reads a comparison: per optimizer the configuration that finished the whole run (successive
 * halving promoted it; without halving, the best mean final metric), then the equal-epochs
 * numbers (the whole run), the equal-time numbers and the time to the report's target.
 */
export function comparison(sweep: SweepData): Comparison {
  const view = metricView(sweep);
  const all = configurations(sweep, view);
  const chosen: Configuration[] = [];
  for (const optimizer of Object.keys(sweep.config.optimizers)) {
    const finished = all.filter((c) => c.optimizer === optimizer && c.done && c.final);
    const best = finished.sort(
      (a, b) => (b.final!.mean - a.final!.mean) * (view.higherIsBetter ? 1 : -1),
    )[0];
    if (best) chosen.push(best);
  }
  const equalSeconds = Math.min(...chosen.map((c) => c.trainingSeconds?.mean ?? Infinity));
  const atEqualTime = new Map(
    chosen.map((c) => [
      c,
      stat(c.seeds.map((s) => s.evals.filter((e) => e.seconds <= equalSeconds).at(-1)?.value)),
    ]),
  );
  const target = sweep.config.report?.target;
  const reaches = (value: number): boolean =>
    target !== undefined && (view.higherIsBetter ? value >= target : value <= target);
  const toTarget = new Map(
    chosen.map((c) => {
      const times = c.seeds
        .map((s) => s.evals.find((e) => reaches(e.value))?.seconds)
        .filter((t): t is number => t !== undefined);
      return [c, { seconds: stat(times), reached: times.length }];
    }),
  );
  return { sweep, view, all, chosen, equalSeconds, atEqualTime, target, toTarget };
}

/** An ablation sweep: every variant of the choice, against the library's default. */
export interface Ablation {
  readonly sweep: SweepData;
  readonly view: MetricView;
  readonly variants: readonly Configuration[];
  readonly defaultVariant: Configuration | undefined;
  /** Pairs of variants with the same final metric on every seed (e.g. RING ρ = 0 and K-FAC). */
  readonly identical: readonly [Configuration, Configuration][];
  /** The sentence on what the result means for the default. */
  readonly verdict: string;
}

export function ablation(sweep: SweepData): Ablation {
  const view = metricView(sweep);
  const variants = configurations(sweep, view).filter((c) => c.final);
  const defaults = sweep.config.report?.defaults ?? {};
  // The variant that sets the defaults' keys to the defaults (one without those keys, e.g. K-FAC
  // beside RING's ρ values, is not the default).
  const defaultVariant = variants.find(
    (v) =>
      Object.keys(defaults).some((key) => key in v.setting) &&
      Object.entries(v.setting).every(
        ([key, value]) => !(key in defaults) || String(defaults[key]) === String(value),
      ),
  );
  const identical = identicalPairs(variants);
  return {
    sweep,
    view,
    variants,
    defaultVariant,
    identical,
    verdict: verdictOf(variants, defaultVariant, view),
  };
}

/**
 * Pairs of configurations of one optimizer whose metric (at the first rung when there is one,
 * else at the end) is the same number on every seed: a setting that changed nothing, such as a
 * learning rate above the point where the KL clip decides the step. Pairs across optimizers
 * count too (RING with ρ = 0 and K-FAC).
 */
export function identicalPairs(
  configs: readonly Configuration[],
): [Configuration, Configuration][] {
  const valuesOf = (c: Configuration): readonly number[] | undefined =>
    c.atRung && c.atRung.values.length === c.seeds.length ? c.atRung.values : c.final?.values;
  const pairs: [Configuration, Configuration][] = [];
  for (const [i, a] of configs.entries()) {
    const mine = valuesOf(a);
    if (!mine) continue;
    for (const b of configs.slice(i + 1)) {
      const theirs = valuesOf(b);
      if (theirs && theirs.length === mine.length && theirs.every((v, k) => v === mine[k]))
        pairs.push([a, b]);
    }
  }
  return pairs;
}

function verdictOf(
  variants: readonly Configuration[],
  base: Configuration | undefined,
  view: MetricView,
): string {
  if (!base) return 'No variant has the default settings, so nothing is said about the default.';
  const better = variants.filter(
    (v) => v !== base && compare(v.final!, base.final!, view.higherIsBetter) === 'better',
  );
  const worse = variants.filter(
    (v) => v !== base && compare(v.final!, base.final!, view.higherIsBetter) === 'worse',
  );
  const cost = (v: Configuration): string =>
    v.msPerStep && base.msPerStep
      ? `, at ×${(v.msPerStep.mean / base.msPerStep.mean).toFixed(2)} the time per step`
      : '';
  if (better.length === 0)
    return `No variant beats the default (${base.label}) beyond seed noise${worse.length ? `; ${worse.map((v) => v.label).join(', ')} ${worse.length === 1 ? 'is' : 'are'} clearly worse` : ''}: the default stands.`;
  const best = better.sort(
    (a, b) => (b.final!.mean - a.final!.mean) * (view.higherIsBetter ? 1 : -1),
  )[0]!;
  return `${best.label} beats the default (${base.label}) by ${formatDifference(best.final!, base.final!, view.digits)}${cost(best)}: a candidate default on this model, to confirm on the other families before it changes.`;
}

/** How a claim fares: on one family, and over all. */
export type ClaimOutcome = 'holds' | 'does not hold' | 'mixed' | 'not tested';

/** A comparison of one GRNG variant with a reference, as a claim states it. */
export interface ClaimCheck {
  readonly family: string;
  readonly variant: string;
  readonly against: string;
  readonly verdict: Verdict;
  readonly text: string;
}

/** The outcome of checks: all 'better' → holds; none → does not hold; else mixed. */
export function outcomeOf(checks: readonly ClaimCheck[]): ClaimOutcome {
  if (checks.length === 0) return 'not tested';
  const held = checks.filter((c) => c.verdict === 'better').length;
  return held === checks.length ? 'holds' : held === 0 ? 'does not hold' : 'mixed';
}

export const GRNG_VARIANTS = ['ring', 'reng', 'rkalman'] as const;

/**
 * Checks each GRNG variant against references on one quantity: `pick` reads it from a chosen
 * configuration; `reference` picks which of the other optimizers it is held against (the best of
 * them by that quantity, or each).
 */
export function checkClaim(
  family: Comparison,
  quantity: (c: Configuration) => Stat | undefined,
  higherIsBetter: boolean,
  references: readonly string[],
  how: 'best of' | 'each',
  digits: number,
): ClaimCheck[] {
  const by = new Map(family.chosen.map((c) => [c.optimizer, c]));
  const refs = references
    .map((name) => by.get(name))
    .filter((c): c is Configuration => c !== undefined && quantity(c) !== undefined);
  if (refs.length === 0) return [];
  const sorted = [...refs].sort(
    (a, b) => (quantity(b)!.mean - quantity(a)!.mean) * (higherIsBetter ? 1 : -1),
  );
  const targets = how === 'best of' ? [sorted[0]!] : refs;
  const f = (s: Stat): string => formatStat(s, digits);
  const checks: ClaimCheck[] = [];
  for (const name of GRNG_VARIANTS) {
    const variant = by.get(name);
    const mine = variant && quantity(variant);
    if (!mine) continue;
    for (const reference of targets) {
      const theirs = quantity(reference)!;
      checks.push({
        family: family.sweep.config.report?.title ?? family.sweep.config.name,
        variant: name,
        against: reference.optimizer,
        verdict: compare(mine, theirs, higherIsBetter),
        text: `${name} ${f(mine)} vs ${reference.optimizer} ${f(theirs)}`,
      });
    }
  }
  return checks;
}
