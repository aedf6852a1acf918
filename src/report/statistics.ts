/**
 * The few statistics a report states: mean and sample standard deviation over seeds, and the rule
 * by which one mean is "clearly" above another (their difference beyond twice its standard
 * error). With three seeds this is a loose test, and the report says so where it uses it.
 */

/** A quantity over seeds. */
export interface Stat {
  readonly values: readonly number[];
  readonly mean: number;
  /** Sample standard deviation (n − 1); 0 for one value. */
  readonly sd: number;
}

/** The stat of the finite values (undefined when there are none). */
export function stat(values: readonly (number | null | undefined)[]): Stat | undefined {
  const finite = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (finite.length === 0) return undefined;
  const mean = finite.reduce((a, b) => a + b, 0) / finite.length;
  const sd =
    finite.length < 2
      ? 0
      : Math.sqrt(finite.reduce((a, v) => a + (v - mean) ** 2, 0) / (finite.length - 1));
  return { values: finite, mean, sd };
}

/** How a compares with b: 'better' or 'worse' beyond 2 standard errors of the difference, else 'tie'. */
export type Verdict = 'better' | 'worse' | 'tie';

/**
 * Compares two stats where `higherIsBetter` says which way is better. The difference counts when
 * it exceeds twice √(sd_a²/n_a + sd_b²/n_b); equal values on every seed are a tie.
 *
 * @example
 * compare(ring, kfac, true); // 'better' when RING's mean is clearly higher
 */
export function compare(a: Stat, b: Stat, higherIsBetter: boolean): Verdict {
  const difference = (a.mean - b.mean) * (higherIsBetter ? 1 : -1);
  const se = standardError(a, b);
  if (se === 0) return difference > 0 ? 'better' : difference < 0 ? 'worse' : 'tie';
  return difference > 2 * se ? 'better' : difference < -2 * se ? 'worse' : 'tie';
}

/** √(sd_a²/n_a + sd_b²/n_b). */
export function standardError(a: Stat, b: Stat): number {
  return Math.sqrt(a.sd ** 2 / a.values.length + b.sd ** 2 / b.values.length);
}

/** The median of some numbers (NaN for none). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** "mean ± sd" at a number of decimals; '–' for no values, as the report's tables show a gap. */
export function formatStat(s: Stat | undefined, digits: number): string {
  return s ? `${s.mean.toFixed(digits)} ± ${s.sd.toFixed(digits)}` : '–';
}

/** "+Δ ± standard error" of a's mean over b's, signed so a reader sees the direction at once. */
export function formatDifference(a: Stat, b: Stat, digits: number): string {
  const delta = a.mean - b.mean;
  return `${delta >= 0 ? '+' : ''}${delta.toFixed(digits)} ± ${standardError(a, b).toFixed(digits)}`;
}
