import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { recordBatchToRows } from '../src/metrics/schema.js';
import { readRecording } from '../src/streams/readRecording.js';
import { expandTrials, parseSweepConfig, trialId } from '../src/sweep/config.js';
import { resultPath, runTrial, trialDir } from '../src/sweep/runTrial.js';

const GRNG_BIN = fileURLToPath(new URL('../bin/grng.js', import.meta.url));
import { readSessions } from '../src/sweep/sessionClock.js';
import { runCli } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-sweep-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cli = (argv: readonly string[]) => runCli(argv);

function configFile(name: string, config: object): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(config));
  return path;
}

/** A small sweep on the synthetic set: 2 optimizers × 3 rates × 2 seeds, halving at 10 and 20. */
const HALVING = {
  name: 'halving',
  base: { dataset: 'synthetic', steps: 40, 'eval-every': 10, 'batch-size': 32, backend: 'wasm' },
  optimizers: { sgd: { lr: [0.01, 0.03, 0.1] }, adamw: { lr: [0.0003, 0.001, 0.003] } },
  seeds: [1, 2],
  halving: { rungs: [10, 20], reduction: 3 },
  checkpointEvery: 10,
};

function recordedSteps(path: string): number[] {
  return readRecording(path)
    .batches.flatMap((batch) => recordBatchToRows(batch))
    .map((row) => row.step);
}

describe('sweep config', () => {
  const parse = (config: unknown): unknown => parseSweepConfig(JSON.stringify(config), 'cfg.json');
  const CASES: Array<[string, unknown, string]> = [
    ['not JSON', '{', 'cfg.json: (the file) is not JSON'],
    ['an unknown key', { optimizers: { sgd: {} }, seed: 1 }, 'cfg.json: seed is not a sweep key'],
    ['no optimizers', { base: {} }, 'cfg.json: optimizers must name at least one optimizer'],
    [
      'an empty axis',
      { optimizers: { sgd: { lr: [] } } },
      'cfg.json: optimizers.sgd.lr must be a non-empty list',
    ],
    [
      'a value twice',
      { optimizers: { sgd: { lr: [0.1, 0.1] } } },
      'optimizers.sgd.lr lists a value twice',
    ],
    [
      'a dashed flag',
      { base: { '--lr': 1 }, optimizers: { sgd: {} } },
      'base.--lr must be written without dashes',
    ],
    [
      'a seed in the base',
      { base: { seed: 3 }, optimizers: { sgd: {} } },
      'seed is set by the sweep for each trial (use "seeds")',
    ],
    [
      'bad seeds',
      { optimizers: { sgd: {} }, seeds: [1, 1] },
      'seeds must be a non-empty list of different whole numbers',
    ],
    [
      'a range in a grid',
      { optimizers: { sgd: { lr: { min: 0.01, max: 0.1 } } } },
      'optimizers.sgd.lr is a range {min, max}: a grid needs a list',
    ],
    [
      'a bad range',
      { optimizers: { sgd: { lr: { min: 1, max: 0.1 } } }, search: { random: 2 } },
      'must have numbers min < max',
    ],
    [
      'a bad metric',
      { optimizers: { sgd: {} }, metric: 'f1' },
      'metric must be one of testAccuracy, testLoss, finalLoss',
    ],
    [
      'bad rungs',
      { optimizers: { sgd: {} }, halving: { rungs: [30, 10] } },
      'halving.rungs must be increasing step budgets',
    ],
    [
      'a bad search',
      { optimizers: { sgd: {} }, search: 'bayes' },
      'search must be "grid" or { "random": N, "seed": S }',
    ],
  ];
  for (const [what, config, message] of CASES)
    it(`${what} is one line naming the key`, () => {
      let error: unknown;
      try {
        if (typeof config === 'string') parseSweepConfig(config, 'cfg.json');
        else parse(config);
      } catch (caught) {
        error = caught;
      }
      expect(isGrngError(error), String(error)).toBe(true);
      expect((error as Error).message).toContain(message);
      expect((error as Error).message).not.toContain('\n');
    });

  it('a grid is every combination of each optimizer’s axes with the shared ones, × seeds, with stable ids', () => {
    const config = parseSweepConfig(
      JSON.stringify({
        base: { dataset: 'synthetic' },
        optimizers: { sgd: { lr: [0.1, 0.3] }, kfac: { lr: [0.05], damping: [0.001, 0.01] } },
        space: { 'batch-size': [32, 64] },
        seeds: [1, 2, 3],
      }),
      'cfg.json',
    );
    const trials = expandTrials(config);
    expect(trials).toHaveLength((2 + 2) * 2 * 3);
    expect(new Set(trials.map((t) => t.id)).size).toBe(trials.length);
    expect(trials[0]!.settings).toEqual({ optimizer: 'sgd', 'batch-size': 32, lr: 0.1, seed: 1 });
    // The id is the flags' hash, whatever the key order.
    expect(trialId({ a: 1, b: 'x' })).toBe(trialId({ b: 'x', a: 1 }));
    expect(expandTrials(config).map((t) => t.id)).toEqual(trials.map((t) => t.id));
  });

  it('random search draws the same configurations for the same seed, per optimizer', () => {
    const make = (seed: number) =>
      expandTrials(
        parseSweepConfig(
          JSON.stringify({
            optimizers: {
              sgd: { lr: { min: 0.001, max: 1, log: true } },
              adamw: { lr: [1e-3, 3e-3] },
            },
            search: { random: 4, seed },
          }),
          'cfg.json',
        ),
      );
    const a = make(1);
    // Four distinct draws for sgd; adamw's space has only its two rates.
    expect(a).toHaveLength(6);
    expect(make(1).map((t) => t.id)).toEqual(a.map((t) => t.id));
    expect(make(2).map((t) => t.id)).not.toEqual(a.map((t) => t.id));
    for (const t of a.filter((t) => t.settings.optimizer === 'sgd')) {
      expect(t.settings.lr).toBeGreaterThanOrEqual(0.001);
      expect(t.settings.lr).toBeLessThanOrEqual(1);
    }
  });
});

describe('grng sweep', () => {
  it('--dry-run prints the plan and every trial, runs nothing', async () => {
    const result = await cli(['sweep', configFile('dry', HALVING), '--dry-run']);
    expect(result.code, result.err).toBe(0);
    const lines = result.out.trim().split('\n');
    expect(lines[0]).toContain(
      '12 trials (2 optimizers, 2 seeds), grid search, successive halving at 10, 20 steps',
    );
    expect(lines.slice(1)).toHaveLength(12);
    expect(lines[1]).toMatch(/^[0-9a-f]{12} {2}sgd lr=0.01 seed=1$/);
  });

  it('a trial a train flag refuses is one line naming the trial and the flag, before anything runs', async () => {
    for (const [axes, names] of [
      [{ lr: [0.1, -1] }, '--lr'],
      [{ lrr: [0.1] }, "unknown option '--lrr'"],
      [{ momentum: ['fast'] }, '--momentum'],
    ] as const) {
      const file = configFile('bad', { ...HALVING, optimizers: { sgd: axes } });
      const result = await cli(['sweep', file, '--dry-run']);
      expect(result.code).toBe(2);
      const lines = result.err.trim().split('\n');
      expect(lines, result.err).toHaveLength(1);
      expect(lines[0]).toMatch(/^grng: .*bad\.json: trial [0-9a-f]{12} \(sgd /);
      expect(lines[0]).toContain(names);
    }
  });

  it('runs with successive halving on local workers: promotions, resumed curves whole, the same numbers as one uninterrupted run, the table in three formats', async () => {
    const out = join(dir, 'halving-run');
    const result = await cli([
      'sweep',
      configFile('halving', HALVING),
      '--out',
      out,
      '--workers',
      '2',
      '--json',
    ]);
    expect(result.code, result.err).toBe(0);
    const records = JSON.parse(result.out.trim().split('\n').at(-1)!) as Array<
      Record<string, unknown>
    >;
    expect(records).toHaveLength(12);
    // One configuration of three per optimizer (both seeds) reaches the whole run.
    const done = records.filter((r) => r.status === 'done');
    expect(done).toHaveLength(4);
    expect(new Set(done.map((r) => `${r.optimizer} ${r.lr}`)).size).toBe(2);
    expect(records.filter((r) => r.status === 'stopped at 10')).toHaveLength(8);
    for (const r of done) {
      expect(r.steps).toBe(40);
      // Resumed at two rungs, its recording holds every step once.
      expect(recordedSteps(join(trialDir(out, String(r.trial)), 'run.arrows'))).toEqual(
        Array.from({ length: 40 }, (_, i) => i),
      );
    }
    // The promoted sgd trial equals the same run done in one go.
    const sgd = done.find((r) => r.optimizer === 'sgd' && r.seed === 1)!;
    const alone = await cli([
      'train',
      '--dataset',
      'synthetic',
      '--steps',
      '40',
      '--eval-every',
      '10',
      '--batch-size',
      '32',
      '--backend',
      'wasm',
      '--optimizer',
      'sgd',
      '--lr',
      String(sgd.lr),
      '--seed',
      '1',
      '--json',
    ]);
    expect(JSON.parse(alone.out.trim().split('\n').at(-1)!).testAccuracy).toBeCloseTo(
      sgd.testAccuracy as number,
      6,
    );
    // The same table as CSV, JSON and Arrow.
    const csv = readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe(
      'trial,optimizer,lr,seed,status,steps,metric,best,testAccuracy,testLoss,finalLoss,seconds,stepsPerSecond',
    );
    expect(csv).toHaveLength(13);
    expect(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'))).toEqual(records);
    const arrow = tableFromIPC(readFileSync(join(out, 'results.arrow')));
    expect(arrow.numRows).toBe(12);
    expect(arrow.getChild('trial')!.toArray()).toEqual(records.map((r) => r.trial));
    expect(Array.from(arrow.getChild('steps')!.toArray() as Float64Array)).toEqual(
      records.map((r) => r.steps),
    );
  });

  it('--resume keeps finished trials and runs only what is missing; without it the folder is refused', async () => {
    const config = configFile('resume', {
      ...HALVING,
      name: 'resume',
      halving: undefined,
      optimizers: { sgd: { lr: [0.03, 0.1] } },
      seeds: [1],
    });
    const out = join(dir, 'resume-run');
    const first = await cli(['sweep', config, '--out', out, '--workers', '1', '--json']);
    expect(first.code, first.err).toBe(0);
    const refused = await cli(['sweep', config, '--out', out]);
    expect(refused.code).toBe(2);
    expect(refused.err).toContain('already holds a sweep: continue it with --resume');
    const records = JSON.parse(first.out.trim().split('\n').at(-1)!) as Array<
      Record<string, unknown>
    >;
    const lost = String(records[1]!.trial);
    rmSync(resultPath(out, lost, 2 ** 31 - 1));
    const again = await cli(['sweep', config, '--out', out, '--resume', '--json']);
    expect(again.code, again.err).toBe(0);
    // Only the trial whose result was gone ran again (one progress line), with the same numbers.
    expect(again.err.match(/grng: \[\d+\]/g)).toHaveLength(1);
    expect(again.err).toContain(lost);
    expect(JSON.parse(again.out.trim().split('\n').at(-1)!)).toEqual(
      records.map((r) => ({
        ...r,
        seconds: expect.any(Number),
        stepsPerSecond: expect.any(Number),
      })),
    );
    // Each session's wall clock, for the report's "what it took": the resume adds its own.
    const sessions = readSessions(out);
    // (The resume finishes its one trial from that trial's last checkpoint, in well under 1 s.)
    expect(sessions.map((session) => session.workers)).toEqual([1, 2]);
    // Each names its machine's processor (hosts can share a name).
    expect(sessions.map((session) => session.cpu)).toEqual([
      cpus()[0]!.model.trim(),
      cpus()[0]!.model.trim(),
    ]);
    expect(sessions[0]!.seconds).toBeGreaterThan(0);
    expect(sessions[1]!.seconds).toBeGreaterThanOrEqual(0);
    expect(sessions[1]!.seconds).toBeLessThan(sessions[0]!.seconds);
  });

  it('SIGTERM stops a sweep with its time recorded once its trial has checkpointed and stopped; --resume finishes it, each step recorded once', async () => {
    const config = configFile('signal', {
      ...HALVING,
      name: 'signal',
      // Long enough (about 15 s) to be stopped while it trains.
      base: { ...HALVING.base, steps: 20000, epochs: 1000, 'eval-every': 5000 },
      halving: undefined,
      optimizers: { sgd: { lr: [0.03] } },
      seeds: [1],
      checkpointEvery: 5000,
    });
    const out = join(dir, 'signal-run');
    // The real CLI in its own process, as a terminal or a job system runs it.
    const child = spawn(
      process.execPath,
      [GRNG_BIN, 'sweep', config, '--out', out, '--workers', '1'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString('utf8')));
    const exited = new Promise<number | null>((resolve) =>
      child.on('close', (code) => resolve(code)),
    );
    const [trial] = expandTrials(parseSweepConfig(readFileSync(config, 'utf8'), config));
    const recording = join(trialDir(out, trial!.id), 'run.arrows');
    // Stopped once its trial is training (its recording has rows).
    for (let i = 0; i < 600 && !(existsSync(recording) && statSync(recording).size > 2000); i++)
      await new Promise((r) => setTimeout(r, 100));
    const stoppedAt = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(Date.now() - stoppedAt).toBeLessThan(20_000);
    expect(err).toContain(
      `grng: sweep signal: stopped by SIGTERM; trials in progress checkpoint and stop; go on with grng sweep ${config} --out ${out} --resume`,
    );
    // Its time is the session's, to the stop, not to the last 15-s tick.
    const [session] = readSessions(out);
    expect(session!.seconds).toBeGreaterThan(0.5);
    // It exited once its trial had checkpointed after its current step and stopped, and its
    // lock was released: a resume starts at once.
    expect(existsSync(join(trialDir(out, trial!.id), 'checkpoint', 'checkpoint.grng'))).toBe(true);
    expect(existsSync(join(trialDir(out, trial!.id), 'lock'))).toBe(false);
    const resumed = await cli(['sweep', config, '--out', out, '--resume', '--json']);
    expect(resumed.code, resumed.err).toBe(0);
    const steps = recordedSteps(recording);
    // Each step once, to the end.
    expect(steps).toEqual(Array.from({ length: 20000 }, (_, i) => i));
  }, 180_000);

  it('bad flags and files are one line naming them, before any folder is made', async () => {
    const file = configFile('flags', HALVING);
    const out = join(dir, 'never-made');
    for (const [argv, names] of [
      [['sweep', file, '--workers', '0'], '--workers'],
      [['sweep', file, '--queue', ''], '--queue'],
      [['sweep', file, '--queue', 'http://localhost:6379', '--out', out], '--queue'],
      [['sweep', join(dir, 'missing.json')], 'missing.json'],
      [['sweep', file, '--resume', '--out', out], '--resume'],
      [['worker', '--queue', 'localhost:6379'], '--queue'],
      [['worker'], "required option '--queue <url>'"],
      [
        ['worker', '--queue', 'redis://127.0.0.1:1', '--files', 'http'],
        '--files http needs --token',
      ],
      [['worker', '--queue', 'redis://127.0.0.1:1', '--files', 'nfs'], '--files'],
      [['sweep', file, '--advertise', 'http://me:8080', '--out', out], '--advertise'],
      [
        [
          'sweep',
          file,
          '--queue',
          'redis://127.0.0.1:1',
          '--serve',
          '--token',
          't',
          '--advertise',
          'me:8080',
          '--out',
          out,
        ],
        'invalid --advertise: "me:8080"',
      ],
    ] as const) {
      const result = await cli([...argv]);
      expect(result.code, result.err).toBe(2);
      const lines = result.err.trim().split('\n');
      expect(lines, result.err).toHaveLength(1);
      expect(lines[0]).toContain(names);
    }
    expect(existsSync(out)).toBe(false);
  });

  it('two runners racing for one trial run it once', async () => {
    const config = parseSweepConfig(
      JSON.stringify({
        ...HALVING,
        halving: undefined,
        optimizers: { sgd: { lr: [0.1] } },
        seeds: [7],
      }),
      'race.json',
    );
    const [trial] = expandTrials(config);
    const sweepDir = join(dir, 'race');
    const options = { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 10 } as const;
    const [a, b] = await Promise.all([
      runTrial({ sweepDir, trial: trial!, steps: 20 }, options),
      runTrial({ sweepDir, trial: trial!, steps: 20 }, options),
    ]);
    expect(a).toEqual(b);
    expect(a.status).toBe('done');
    expect(recordedSteps(join(trialDir(sweepDir, trial!.id), 'run.arrows'))).toEqual(
      Array.from({ length: 20 }, (_, i) => i),
    );
  });
});
