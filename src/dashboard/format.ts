/** Short number for axes and legends: 4 significant digits, `2.5e-4` form when tiny or huge. */
export function formatNumber(v: number | null | undefined): string {
  if (v === null || v === undefined || v !== v) return '—';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) {
    const [mantissa, exponent] = v.toExponential(2).split('e');
    return `${Number(mantissa)}e${Number(exponent)}`;
  }
  return String(Number(v.toPrecision(4)));
}

/** Milliseconds as `850ms`, `12.5s`, `3m 05s`, `1h 02m`. */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms !== ms) return '—';
  const sign = ms < 0 ? '-' : '';
  const a = Math.abs(ms);
  if (a < 1000) return `${sign}${Math.round(a)}ms`;
  if (a < 60_000) return `${sign}${Number((a / 1000).toPrecision(3))}s`;
  const s = Math.round(a / 1000);
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  const m = Math.round(s / 60);
  return `${sign}${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** Integer with thousands separators: 100,000. */
export function formatCount(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/**
 * Tick labels of a linear axis: as many digits as the tick spacing needs (0.04001, 0.04002, …
 * rather than 0.04 three times), exponent form for tiny or huge values. uPlot passes null for
 * ticks it leaves unlabelled (log axes).
 */
export function tickLabels(splits: readonly (number | null)[], log = false): string[] {
  const finite = splits.filter(
    (v): v is number => v !== null && v !== undefined && Number.isFinite(v),
  );
  let step = Infinity;
  for (let i = 1; i < finite.length; i++) {
    const d = Math.abs(finite[i]! - finite[i - 1]!);
    if (d > 0 && d < step) step = d;
  }
  const maxAbs = finite.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  // Enough decimals to write the spacing exactly (0.025 needs 3, not 2).
  let decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  for (let d = decimals; d <= decimals + 3; d++) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * scaled) {
      decimals = d;
      break;
    }
  }
  return splits.map((v) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return '';
    if (log || step === Infinity) return formatNumber(v);
    if (maxAbs < 1e5 && maxAbs >= 1e-3 && decimals <= 6) return v.toFixed(decimals);
    if (v === 0) return '0';
    const digits = Math.min(8, Math.max(1, Math.ceil(Math.log10(maxAbs / step) - 1e-9) + 1));
    const [mantissa, exponent] = v.toExponential(digits - 1).split('e');
    return `${Number(mantissa)}e${Number(exponent)}`;
  });
}

/** Step-axis ticks: 500, 20k, 1.5M. */
export function formatStep(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`;
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(4))}k`;
  return String(Number(v.toPrecision(6)));
}
