// `grng report` (src/report/, src/cli/reportCommand.ts) on real sweeps of the synthetic set: a
// comparison of all seven optimizers with successive halving and an ablation whose ρ = 0 variant
// must equal K-FAC, run by `grng report --run`; the report names the tuned configurations, checks
// the claims, writes valid SVG plots, and is the same bytes when generated again.
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stat, compare } from '../src/report/statistics.js';
import { runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-report-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const BASE = {
  dataset: 'synthetic',
  model: 'mlp:20-16-4',
  'batch-size': 32,
  steps: 60,
  'eval-every': 10,
  backend: 'cpu',
};
const COMPARISON = {
  name: 'report-test-comparison',
  base: BASE,
  optimizers: {
    sgd: { lr: [0.05, 0.2] },
    adamw: { lr: [0.003, 0.01] },
    sophia: { lr: [0.003] },
    kfac: { lr: [0.05], damping: [0.01, 0.1] },
    ring: { lr: [0.05], damping: [0.01, 0.1] },
    reng: { lr: [0.05] },
    rkalman: { lr: [1] },
  },
  seeds: [1, 2, 3],
  halving: { rungs: [20], reduction: 2 },
  checkpointEvery: 10,
  report: { kind: 'comparison', title: 'Synthetic MLP', target: 0.5 },
};
const ABLATION = {
  name: 'report-test-rho',
  base: { ...BASE, steps: 30 },
  optimizers: { ring: { rho: [0, 0.1] }, kfac: { damping: [0.001, 0.03] } },
  seeds: [1, 2],
  checkpointEvery: 10,
  report: {
    kind: 'ablation',
    title: 'GR strength ρ',
    question: 'Does ρ matter, and is ρ = 0 K-FAC?',
    defaults: { rho: 0.1 },
  },
};

function write(name: string, config: object): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

describe('statistics', () => {
  it('mean ± sample sd, and "beats" only beyond two standard errors', () => {
    const a = stat([0.9, 0.92, 0.91])!;
    expect(a.mean).toBeCloseTo(0.91, 12);
    expect(a.sd).toBeCloseTo(0.01, 12);
    expect(stat([null, Number.NaN])).toBeUndefined();
    const b = stat([0.8, 0.81, 0.82])!;
    expect(compare(a, b, true)).toBe('better');
    expect(compare(b, a, true)).toBe('worse');
    expect(compare(a, b, false)).toBe('worse');
    expect(compare(a, stat([0.905, 0.915, 0.925])!, true)).toBe('tie');
    expect(compare(stat([1, 1])!, stat([1, 1])!, true)).toBe('tie');
  });
});

describe('grng report', () => {
  it('runs the sweeps (--run) and writes the claims, the tuned optimizers, the ablation and valid SVG plots, the same bytes twice', async () => {
    const comparison = write('comparison', COMPARISON);
    const rho = write('rho', ABLATION);
    const runs = join(dir, 'runs');
    const out = join(dir, 'docs', 'results.md');
    const first = await runCli(['report', comparison, rho, '--runs', runs, '--out', out, '--run']);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toContain('grng: report: running sweep report-test-comparison');
    expect(first.err).toMatch(/1 model family, 1 ablation; .*results\.md and 5 plots in/);
    const markdown = readFileSync(out, 'utf8');
    // The claims table: four checked claims and two not tested, each with its outcome.
    for (const claim of [
      'GRNG optimises faster early than first-order methods',
      'GRNG generalises better than K-FAC and Sophia',
      'GRNG keeps the average gradient norm lower',
      'R-Kalman has the cheapest runtime of the second-order variants',
    ])
      expect(markdown).toMatch(
        new RegExp(`\\| ${claim} \\| \\*\\*(holds|does not hold|mixed)\\*\\* \\|`),
      );
    expect(markdown.match(/\*\*not tested\*\*/g)).toHaveLength(2);
    // One tuned configuration per optimizer, the one halving promoted.
    const tuned = markdown
      .split('\n')
      .filter((line) => /^\| (sgd|adamw|sophia|kfac|ring|reng|rkalman) \| (lr|defaults)/.test(line))
      // The tuned table's rows (ten cells), not the tuning table's (four).
      .filter((line) => line.split(' | ').length >= 10);
    expect(tuned.map((line) => line.split(' | ')[0])).toEqual(
      ['sgd', 'adamw', 'sophia', 'kfac', 'ring', 'reng', 'rkalman'].map((o) => `| ${o}`),
    );
    const results = JSON.parse(
      readFileSync(join(runs, 'report-test-comparison', 'results.json'), 'utf8'),
    ) as Array<{ optimizer: string; lr: number; damping: number | null; status: string }>;
    const ringDone = results.filter((r) => r.optimizer === 'ring' && r.status === 'done');
    expect(new Set(ringDone.map((r) => r.damping)).size).toBe(1);
    expect(tuned[4]).toContain(`damping ${ringDone[0]!.damping}`);
    expect(markdown).toContain("RING's damping γ = λ + ρ·ḡ², averaged over its run:");
    // The ablation: ρ = 0 is K-FAC exactly, the default is marked, the verdict is a sentence.
    expect(markdown).toContain('### GR strength ρ');
    expect(markdown).toContain('| ★ ring rho=0.1 |');
    expect(markdown).toMatch(
      /ring rho=0 and kfac damping=0\.001 give the same test accuracy on every seed\./,
    );
    // RING against the K-FAC whose λ is nearest its mean γ, with what that means.
    expect(markdown).toMatch(
      /RING \(mean γ [\d.e-]+\) [\d.]+ ± [\d.]+ against kfac damping=0\.0\d+ \(λ nearest that γ\) [\d.]+ ± [\d.]+: .*(damping level)/,
    );
    expect(markdown).toMatch(/\*\*What it means for the default:\*\* .+\./);
    expect(markdown).toMatch(/\| \*\*all\*\* \| 41 \| \| \*\*\d+\.\d min\*\* \| \|/);
    // Plots: valid SVG, linked relative to the report.
    const plots = readdirSync(join(dir, 'docs', 'results')).sort();
    expect(plots).toEqual([
      'report-test-comparison-epochs.svg',
      'report-test-comparison-gradnorm.svg',
      'report-test-comparison-loss.svg',
      'report-test-comparison-seconds.svg',
      'report-test-rho-epochs.svg',
    ]);
    for (const plot of plots) {
      const svg = readFileSync(join(dir, 'docs', 'results', plot), 'utf8');
      expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
      expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
      expect(markdown).toContain(`](results/${plot})`);
    }
    // Again, from the same recordings: the same bytes.
    const svgBefore = readFileSync(join(dir, 'docs', 'results', plots[0]!), 'utf8');
    // (a digest that is missing, the report writes from the folder it read)
    const comparisonDigest = join(dir, 'digests', 'report-test-comparison.json');
    rmSync(comparisonDigest);
    const again = await runCli(['report', comparison, rho, '--runs', runs, '--out', out]);
    expect(again.code, again.err).toBe(0);
    expect(again.err).toContain(
      `${comparisonDigest} written from ${join(runs, 'report-test-comparison')}`,
    );
    expect(again.err).not.toContain('running sweep');
    expect(readFileSync(out, 'utf8')).toBe(markdown);
    expect(readFileSync(join(dir, 'docs', 'results', plots[0]!), 'utf8')).toBe(svgBefore);
    // Without the sweeps' folders (they do not outlive the machine that ran them), the digests
    // written beside the configs give the same bytes, and --run has nothing left to run
    // (each sweep wrote its own at its end, so the report found them current)
    expect(first.err).toContain(
      `grng: sweep report-test-rho: digest ${join(dir, 'digests', 'report-test-rho.json')} written`,
    );
    expect(first.err).not.toContain('written from');
    const svgs = plots.map((plot) => readFileSync(join(dir, 'docs', 'results', plot), 'utf8'));
    rmSync(join(dir, 'docs'), { recursive: true });
    renameSync(runs, `${runs}-elsewhere`);
    try {
      const fromDigests = await runCli([
        'report',
        comparison,
        rho,
        '--runs',
        runs,
        '--out',
        out,
        '--run',
      ]);
      expect(fromDigests.code, fromDigests.err).toBe(0);
      expect(fromDigests.err).not.toContain('running sweep');
      expect(readFileSync(out, 'utf8')).toBe(markdown);
      for (const [i, plot] of plots.entries())
        expect(readFileSync(join(dir, 'docs', 'results', plot), 'utf8')).toBe(svgs[i]);
    } finally {
      renameSync(`${runs}-elsewhere`, runs);
    }
  }, 600_000);

  it('a config without a report block, an unfinished sweep or a changed config is one line saying so', async () => {
    const plain = write('plain', { ...COMPARISON, report: undefined, name: 'plain' });
    const missing = write('missing', { ...COMPARISON, name: 'never-run' });
    const runs = join(dir, 'runs');
    for (const [argv, message] of [
      [[plain], 'has no "report" block'],
      [[missing], 'holds no sweep never-run'],
    ] as const) {
      const result = await runCli(['report', ...argv, '--runs', runs, '--out', join(dir, 'x.md')]);
      expect(result.code, result.err).toBe(2);
      expect(result.err.trim().split('\n')).toHaveLength(1);
      expect(result.err).toContain(message);
    }
    if (existsSync(join(runs, 'report-test-comparison'))) {
      const changed = write('changed', {
        ...COMPARISON,
        optimizers: { ...COMPARISON.optimizers, sgd: { lr: [0.05] } },
      });
      const result = await runCli(['report', changed, '--runs', runs, '--out', join(dir, 'x.md')]);
      expect(result.code).toBe(2);
      expect(result.err).toContain('its trials are not the ones');
      // Its digest was made from the other version of the config: said, where there is no folder.
      const fromDigest = await runCli([
        'report',
        changed,
        '--runs',
        join(dir, 'no-runs'),
        '--out',
        join(dir, 'x.md'),
      ]);
      expect(fromDigest.code).toBe(2);
      expect(fromDigest.err.trim().split('\n')).toHaveLength(1);
      expect(fromDigest.err).toContain('it was made from another version of');
    }
  });
});
