import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command, Option } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { FLAG_OF_OPTION, OPTIMIZER_FLAGS } from '../src/cli/optionFlags.js';
import type { OptionFlag } from '../src/optim/optionSpec.js';
import { buildProgram } from '../src/cli/program.js';

/**
 * Every option of every command, given a bad value, must exit non-zero with exactly one line on
 * stderr naming the flag and the value, and nothing on stdout. The options are read from the
 * commander program itself, so a flag added without an entry below fails `has a bad-value case
 * for every option`.
 */

const dir = mkdtempSync(join(tmpdir(), 'grng-validation-'));
const folderNamedCsv = join(dir, 'folder.csv');
mkdirSync(folderNamedCsv);
const emptyServeDir = join(dir, 'recordings');
mkdirSync(emptyServeDir);
writeFileSync(join(dir, 'notes.txt'), 'label,a\n0,1\n');
/** 20 features, as the synthetic dataset and mlp:20-8-4 have; and a file with one. */
const rowsCsv = join(dir, 'rows.csv');
writeFileSync(
  rowsCsv,
  `${Array.from({ length: 20 }, (_, i) => `f${i}`).join(',')}\n${Array(20).fill('0.5').join(',')}\n`,
);
writeFileSync(join(dir, 'short.csv'), 'f0\n0.5\n');
const brokenModelJson = join(dir, 'broken', 'model.json');
mkdirSync(join(dir, 'broken'));
writeFileSync(
  brokenModelJson,
  '{"modelTopology": {"class_name": "Sequential", "config": {"layers": [',
);
/** A small sweep config (and one with a report block) for sweep and report. */
const sweepConfig = join(dir, 'sweep.json');
writeFileSync(
  sweepConfig,
  JSON.stringify({
    name: 'validation',
    base: { dataset: 'synthetic', steps: 2 },
    optimizers: { sgd: {} },
    report: { kind: 'comparison', title: 'validation' },
  }),
);
/** A fresh folder per sweep case: a bad flag that passes parsing must not meet an earlier case's sweep. */
let sweeps = 0;
/** The commands that take a saved model (--model DIR | --checkpoint DIR). */
const MODEL_COMMANDS = ['export', 'evaluate', 'predict'];
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** One bad value: `--flag value`, or `=value` for `--flag=value` (how a boolean flag gets one). */
interface BadValue {
  readonly value: string;
  /** What the line must also contain besides the flag (default: the value itself). */
  readonly names?: string;
  /** Optimizer that takes the flag, so the value (not the optimizer's choice) is what fails. */
  readonly optimizer?: string;
  /** Extra arguments the case needs (e.g. --serve for server-only checks). */
  readonly with?: readonly string[];
  /** The commands the case is for, when a flag means something else elsewhere. */
  readonly only?: readonly string[];
}

const v = (value: string, more: Omit<BadValue, 'value'> = {}): BadValue => ({ value, ...more });
const on = (optimizer: string, ...values: string[]): BadValue[] =>
  values.map((value) => ({ value, optimizer }));

/**
 * Bad values of an optimizer flag, from its option table: not a number, past each bound (the
 * constructor's and, where it starts lower, the parser's), not an integer, not a choice; on the
 * first optimizer that takes the flag, so the value (not the optimizer's choice) is what fails.
 */
function badValuesFromTable({ spec, takenBy }: OptionFlag): BadValue[] {
  const optimizer = takenBy[0]!.optimizer;
  const below = (min: number, exclusive: boolean): string => String(exclusive ? min : min - 1);
  switch (spec.kind) {
    case 'boolean':
      return [v('=1')];
    case 'choice':
      return [v('bogus', { optimizer })];
    case 'integer':
      return on(
        optimizer,
        'x',
        '2.5',
        below(spec.min, false),
        ...(spec.flagMin !== undefined ? [below(spec.flagMin, false)] : []),
        ...(spec.max !== undefined ? [String(spec.max + 1)] : []),
      );
    case 'number':
      return on(
        optimizer,
        'abc',
        ...(spec.min !== undefined ? [below(spec.min, spec.minExclusive ?? false)] : []),
        ...(spec.max !== undefined
          ? [spec.maxExclusive ? String(spec.max) : String(spec.max + 0.5)]
          : []),
      );
  }
}

/** Hand-picked bad values per flag, for every command that has the flag (optimizer flags get theirs from the tables too). */
const HAND_PICKED: Readonly<Record<string, readonly BadValue[]>> = {
  '--dataset': [
    v('cifar'),
    v('/no/such/file.csv'),
    v(''),
    v(folderNamedCsv),
    v(join(dir, 'notes.txt'), { names: '.txt' }),
  ],
  '--input-shape': [
    v('2by2'),
    v('0x20'),
    v(''),
    v('28x28x1', { names: 'holds 784 values, but dataset synthetic has 20 features' }),
  ],
  '--model': [
    v('mlp:'),
    v('mlp:20--4'),
    v('mlp:20-0-4'),
    v('mlp:20-8-4:sigmoid'),
    v('mlp:20-70000-70000-4'),
    v('mlp:10-4', { only: ['train', 'compare', 'evaluate'] }),
    v('mlp:20-8-7', { only: ['train', 'compare', 'evaluate'] }),
    v('resnet'),
    v('mlp:20-x-4'),
    v(dir, { only: MODEL_COMMANDS }),
    v(brokenModelJson, { only: MODEL_COMMANDS }),
  ],
  '--epochs': [v('0'), v('-1'), v('1.5'), v('abc')],
  '--steps': [v('0'), v('-2'), v('x')],
  '--batch-size': [v('0'), v('-3'), v('2.5'), v('NaN')],
  '--partial': [v('sometimes')],
  '--seed': [v('-1'), v('1.5'), v('abc')],
  '--init': [v('zeros')],
  '--backend': [v('tpu')],
  '--json': [v('=1')],
  '--lr': [v('NaN'), v('Infinity'), v('')],
  '--momentum': on('sgd', 'abc'),
  '--b1': on('adamw', 'x'),
  '--newton-tol': on('kfac', 'tiny'),
  '--record': [v(dir), v('')],
  '--overwrite': [v('=1')],
  '--serve': [v('=1')],
  '--keep-serving': [v('=1')],
  '--no-keep-serving': [v('=1')],
  '--port': [v('-1'), v('70000'), v('abc')],
  '--host': [v('', { with: ['--serve'], names: '""' }), v('local host', { with: ['--serve'] })],
  '--token': [v(''), v('   ')],
  '--max-clients': [v('0'), v('abc')],
  '--eval-every': [v('-1'), v('x')],
  '--context': [v('0'), v('x'), v('8', { names: 'text dataset' })],
  '--explain-groups': [v('=1')],
  '--optimizer': [v('rmsprop')],
  '--optimizers': [v('sgd,lbfgs'), v(''), v(',')],
  '--target': [v('2'), v('-0.1'), v('abc')],
  '--speed': [v('0'), v('-1'), v('abc')],
  '--summary': [v('=1')],
  '--checkpoint-every': [v('-1'), v('x'), v('0'), v('5', { names: '--checkpoint-dir' })],
  '--checkpoint-dir': [v(''), v(join(dir, 'notes.txt'))],
  '--max-bad-steps': [v('-1'), v('x'), v('0')],
  '--wasm-threads': [v('0'), v('9'), v('two')],
  '--resume': [
    v('/no/such/checkpoint', { only: ['train', 'compare'] }),
    v(dir, { only: ['train', 'compare'] }),
    v(join(dir, 'notes.txt'), { only: ['train', 'compare'] }),
    v('=1', { only: ['sweep'] }),
  ],
  '--workers': [v('0'), v('65'), v('two')],
  '--queue': [v(''), v('http://127.0.0.1:6379', { names: 'invalid --queue' }), v('localhost:6379')],
  '--dry-run': [v('=1')],
  '--advertise': [v(''), v('http://me:8080', { names: 'only with --queue, --serve and --token' })],
  '--concurrency': [v('0'), v('65'), v('x')],
  '--files': [v('nfs')],
  '--cache': [v('')],
  '--runs': [v(''), v(join(dir, 'no-runs'), { names: 'holds no sweep validation' })],
  '--plots': [v('')],
  '--run': [v('=1')],
  '--save-model': [v(join(dir, 'notes.txt'), { names: 'a file' }), v('')],
  '--export-output': [v('softmax')],
  '--checkpoint': [v('/no/such/checkpoint'), v(dir, { names: 'no checkpoint' })],
  '--out': [
    v(join(dir, 'notes.txt'), { only: ['export'], names: 'is a file' }),
    v(join(dir, 'predictions.json'), { only: ['predict'], names: '.json' }),
    v(''),
  ],
  '--input': [
    v('/no/such/rows.csv'),
    v(join(dir, 'notes.txt'), { names: '.txt' }),
    v(join(dir, 'short.csv'), { names: '1 feature column' }),
    v(''),
  ],
  '--split': [v('validation')],
};

const BAD: Readonly<Record<string, readonly BadValue[]>> = { ...HAND_PICKED };
for (const flag of OPTIMIZER_FLAGS) {
  const derived = badValuesFromTable(flag).filter(
    (bad) => !HAND_PICKED[flag.flag]?.some((hand) => hand.value === bad.value),
  );
  (BAD as Record<string, readonly BadValue[]>)[flag.flag] = [
    ...derived,
    ...(HAND_PICKED[flag.flag] ?? []),
  ];
}

/** Arguments that make each command reach its checks quickly (a tiny synthetic run). */
function argsFor(command: string, flag: string, bad: BadValue): string[] {
  const optimizer = bad.optimizer
    ? command === 'compare'
      ? ['--optimizers', bad.optimizer]
      : ['--optimizer', bad.optimizer]
    : command === 'compare'
      ? ['--optimizers', 'sgd']
      : [];
  const base: Record<string, string[]> = {
    train: ['train', '--dataset', 'synthetic', '--backend', 'wasm', '--steps', '1', ...optimizer],
    compare: [
      'compare',
      '--dataset',
      'synthetic',
      '--backend',
      'wasm',
      '--steps',
      '1',
      ...optimizer,
    ],
    replay: ['replay', join(dir, 'missing.arrows')],
    serve: ['serve', emptyServeDir],
    export: ['export', '--model', 'mlp:20-8-4', '--out', join(dir, 'exported'), '--overwrite'],
    evaluate: ['evaluate', '--model', 'mlp:20-8-4', '--dataset', 'synthetic'],
    predict: ['predict', '--model', 'mlp:20-8-4', '--input', rowsCsv],
    sweep: ['sweep', sweepConfig, '--out', join(dir, `sweep-${(sweeps += 1)}`)],
    worker: ['worker', '--queue', 'redis://127.0.0.1:1'],
    report: ['report', sweepConfig, '--runs', join(dir, 'no-runs'), '--out', join(dir, 'r.md')],
  };
  // A flag given twice is the later one: the bad value must be the only one.
  if (flag === '--out' || flag === '--runs' || flag === '--queue')
    base[command] = base[command]!.filter((_, i, all) => all[i] !== flag && all[i - 1] !== flag);
  // A bad --checkpoint is the only model source: --model beside it would be the error.
  if (flag === '--checkpoint')
    base[command] = base[command]!.filter(
      (_, i, all) => all[i] !== '--model' && all[i - 1] !== '--model',
    );
  const given = bad.value.startsWith('=') ? [`${flag}${bad.value}`] : [flag, bad.value];
  // `serve` always serves, so it has no --serve to add.
  const extra = (bad.with ?? []).filter((arg) =>
    commandOf(command).options.some((o) => o.long === arg),
  );
  return [...base[command]!, ...extra, ...given];
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    isTTY: false,
  });
  return { code, out, err };
}

function expectOneLine(
  result: { code: number; out: string; err: string },
  ...names: string[]
): string {
  expect(result.code, result.err).not.toBe(0);
  expect(result.out).toBe('');
  const lines = result.err.split('\n').filter((line) => line !== '');
  expect(lines, result.err).toHaveLength(1);
  expect(result.err.endsWith('\n')).toBe(true);
  if (process.env.GRNG_DUMP_LINES) console.log(`LINE ${lines[0]}`);
  for (const name of names) expect(lines[0], `${lines[0]} should name ${name}`).toContain(name);
  expect(lines[0]).toMatch(/^grng: /);
  return lines[0]!;
}

const program = buildProgram({ out: () => {}, err: () => {}, isTTY: false });
const COMMANDS = [
  'train',
  'compare',
  'replay',
  'serve',
  ...MODEL_COMMANDS,
  'sweep',
  'worker',
  'report',
];
/** A misspelt option per command, and what commander suggests for it. */
const TYPO: Readonly<Record<string, readonly [string, string]>> = {
  worker: ['--queu', '--queue'],
  report: ['--plotz', '--plots'],
};
const commandOf = (name: string): Command => program.commands.find((c) => c.name() === name)!;
const optionsOf = (name: string): readonly Option[] =>
  commandOf(name).options.filter((o) => o.long !== '--help');
const tally = { cases: 0, missing: 0 };

describe('every CLI option rejects bad values with one line', () => {
  it('has a bad-value case for every option of every command', () => {
    expect(program.commands.map((c) => c.name())).toEqual(expect.arrayContaining(COMMANDS));
    const untested = COMMANDS.flatMap((name) =>
      optionsOf(name)
        .filter((o) => !BAD[o.long!]?.some((b) => !b.only || b.only.includes(name)))
        .map((o) => `${name} ${o.long}`),
    );
    expect(untested, 'add bad values for these flags to BAD in test/validation.test.ts').toEqual(
      [],
    );
  });

  for (const command of COMMANDS) {
    describe(command, () => {
      for (const option of optionsOf(command)) {
        const flag = option.long!;
        for (const bad of (BAD[flag] ?? []).filter((b) => !b.only || b.only.includes(command))) {
          tally.cases += 1;
          it(`${flag} ${JSON.stringify(bad.value)}${bad.optimizer ? ` (${bad.optimizer})` : ''}`, async () => {
            const value = bad.value.replace(/^=/, '');
            const line = expectOneLine(
              await cli(argsFor(command, flag, bad)),
              flag,
              ...(bad.names ? [bad.names] : value.trim() ? [value] : []),
            );
            if (!bad.names && value.trim() === '') expect(line).toMatch(/""|" +"/);
          });
        }
        if (option.required) {
          tally.missing += 1;
          it(`${flag} without its value`, async () => {
            const argv = argsFor(command, flag, v('x'));
            expectOneLine(await cli(argv.slice(0, -1)), flag, 'argument missing');
          });
        }
      }

      it('an unknown option, with the suggestion on the same line', async () => {
        // With the command's required options, so that the unknown one is what fails.
        const base = argsFor(command, '--x', v('x')).slice(0, -2);
        expectOneLine(await cli([...base, '--bogus']), "unknown option '--bogus'");
        const [typo, meant] =
          TYPO[command] ??
          (MODEL_COMMANDS.includes(command) ? ['--bakend', '--backend'] : ['--prot', '--port']);
        expectOneLine(
          await cli([...base, typo, '1']),
          `unknown option '${typo}'`,
          `Did you mean ${meant}?`,
        );
      });
    });
  }

  it('a missing file or folder argument, an extra argument and an unknown command', async () => {
    expectOneLine(await cli(['replay']), "missing required argument 'files'");
    expectOneLine(await cli(['serve']), "missing required argument 'dir'");
    expectOneLine(await cli(['serve', join(dir, 'nope')]), join(dir, 'nope'));
    expectOneLine(await cli(['train', 'extra']), 'unexpected argument "extra"', "'train'");
    expectOneLine(await cli(['train', '--nesterov', '1']), 'unexpected argument "1"');
    expectOneLine(
      await cli(['serve', emptyServeDir, 'more']),
      'unexpected argument "more"',
      "'serve'",
    );
    expectOneLine(await cli(['frobnicate']), "unknown command 'frobnicate'");
  });

  it('accepts the same command with good values (the harness can tell success from failure)', async () => {
    const result = await cli([
      'train',
      '--dataset',
      'synthetic',
      '--backend',
      'wasm',
      '--steps',
      '1',
      '--json',
    ]);
    expect(result.code, result.err).toBe(0);
    expect(JSON.parse(result.out.trim().split('\n').at(-1)!)).toMatchObject({
      dataset: 'synthetic',
      steps: 1,
    });
  });

  it('counts its cases', () => {
    // Printed so a reader can see the size of the table; the first test guards completeness.
    console.log(
      `validation: ${tally.cases} bad values + ${tally.missing} missing values over ${COMMANDS.map((c) => `${c} ${optionsOf(c).length}`).join(', ')} options`,
    );
    expect(tally.cases).toBeGreaterThan(100);
  });
});

describe('FLAG_OF_OPTION', () => {
  it('maps library options only to flags the CLI has', () => {
    const flags = new Set(COMMANDS.flatMap((c) => optionsOf(c).map((o) => o.long)));
    expect(Object.values(FLAG_OF_OPTION).filter((flag) => !flags.has(flag))).toEqual([]);
  });
});
