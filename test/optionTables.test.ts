import { readFileSync } from 'node:fs';
import { Command, type Option } from 'commander';
import { beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import {
  addOptimizerOptions,
  FLAG_OF_OPTION,
  OPTIMIZER_FLAGS,
  optimizerOptionsOf,
} from '../src/cli/optionFlags.js';
import { buildProgram } from '../src/cli/program.js';
import { resolveCurvatureOptions } from '../src/curvature/options.js';
import { buildModel } from '../src/nn/buildModel.js';
import { modelFamily } from '../src/nn/modelFamily.js';
import { parseCnnSpec } from '../src/nn/modelSpec.js';
import { mlp } from '../src/nn/sequential.js';
import { kfac } from '../src/optim/kfac.js';
import {
  formatDefault,
  namedDefault,
  namedDefaults,
  optionFlags,
  readOption,
  type OptionSpec,
} from '../src/optim/optionSpec.js';
import {
  acceptsOption,
  createOptimizer,
  optimizerDefaults,
  optimizerOptionTable,
  optimizerOptionTables,
  OPTIMIZERS,
  resolveOptimizerOptions,
} from '../src/optim/registry.js';
import { SGD_OPTIONS } from '../src/optim/sgd.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

/**
 * The defaults by name the registry listed before the option tables: recordings hold exactly
 * these keys in this order, and training with them must not change. One value changed since, by
 * measurement: K-FAC's and RENG's dense-net damping λ went from 1e-3 to 0.1 (docs/results.md, the
 * MLP comparison and "K-FAC at RING's typical damping").
 */
const DEFAULTS_BEFORE_TABLES = {
  sgd: { learningRate: 0.05, momentum: 0.9, nesterov: false, weightDecay: 0 },
  adamw: { learningRate: 1e-3, weightDecay: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8 },
  kfac: {
    learningRate: 0.05,
    damping: 0.1,
    momentum: 0.9,
    klClip: 1e-3,
    weightDecay: 0,
    fisher: 'sampled',
    beta: 0.95,
    statsEvery: 1,
    inverseEvery: 10,
  },
  ring: {
    learningRate: 0.05,
    damping: 1e-3,
    rho: 0.1,
    ringNorm: 'mean',
    momentum: 0.9,
    klClip: 1e-3,
    weightDecay: 0,
    fisher: 'sampled',
    beta: 0.95,
    statsEvery: 1,
    inverseEvery: 10,
  },
  reng: {
    learningRate: 0.05,
    damping: 0.1,
    rho: 0.1,
    hvp: 'double-backprop',
    momentum: 0.9,
    klClip: 1e-3,
    weightDecay: 0,
    fisher: 'sampled',
    beta: 0.95,
    statsEvery: 1,
    inverseEvery: 10,
  },
  rkalman: {
    learningRate: 1,
    rows: 32,
    p0: 0.1,
    r0: 1,
    fading: 0.999,
    processNoise: 0,
    rho: 0.1,
    betaR: 0.99,
    rMin: 1e-2,
    pMin: 1e-6,
  },
  sophia: {
    learningRate: 1e-3,
    b1: 0.965,
    b2: 0.99,
    gamma: 0.04,
    weightDecay: 0.1,
    eps: 1e-12,
    hessianEvery: 10,
  },
} as const;

/** The keys each optimizer accepted by name before the tables, plus the two the tables made reachable, plus those added since. */
const ACCEPTED_BEFORE_TABLES: Record<string, readonly string[]> = {
  sgd: ['learningRate', 'momentum', 'nesterov', 'weightDecay'],
  adamw: ['learningRate', 'weightDecay', 'b1', 'b2', 'eps'],
  kfac: [
    'damping',
    'klClip',
    'fisher',
    'beta',
    'statsEvery',
    'inverseEvery',
    'earlyRefresh',
    'newtonTolerance',
    'newtonMaxIterations',
    'newtonWarmTrials',
    'inverse',
    'convFactors',
    'convPatchRows',
    'sequenceFactors',
    'seed',
    'learningRate',
    'momentum',
    'weightDecay',
  ],
  rkalman: [
    'learningRate',
    'rows',
    'p0',
    'r0',
    'fading',
    'processNoise',
    'rho',
    'betaR',
    'rMin',
    'pMin',
    'solveIterations',
  ],
  sophia: ['learningRate', 'b1', 'b2', 'gamma', 'weightDecay', 'eps', 'hessianEvery', 'seed'],
};
ACCEPTED_BEFORE_TABLES.ring = [...ACCEPTED_BEFORE_TABLES.kfac!, 'rho', 'ringNorm'];
ACCEPTED_BEFORE_TABLES.reng = [...ACCEPTED_BEFORE_TABLES.kfac!, 'rho', 'hvp', 'hvpEpsilon'];

const program = buildProgram({ out: () => {}, err: () => {}, isTTY: false });
const optionsOf = (name: string): readonly Option[] =>
  program.commands.find((c) => c.name() === name)!.options;
const entries = OPTIMIZERS.flatMap((optimizer) =>
  Object.entries(optimizerOptionTable(optimizer)).map(([key, spec]) => ({ optimizer, key, spec })),
);

describe('the registry is its option tables', () => {
  for (const name of OPTIMIZERS) {
    it(`${name}: defaults by name and accepted keys are the ones it had`, () => {
      const defaults = optimizerDefaults(name);
      expect(defaults).toEqual(DEFAULTS_BEFORE_TABLES[name]);
      expect(Object.keys(defaults)).toEqual(Object.keys(DEFAULTS_BEFORE_TABLES[name]));
      expect(resolveOptimizerOptions(name)).toEqual(namedDefaults(optimizerOptionTable(name)));
      expect(Object.keys(optimizerOptionTable(name)).sort()).toEqual(
        [...ACCEPTED_BEFORE_TABLES[name]!].sort(),
      );
      for (const key of ACCEPTED_BEFORE_TABLES[name]!)
        expect(acceptsOption(name, key as never), key).toBe(true);
      expect(acceptsOption(name, 'nope' as never)).toBe(false);
    });
  }

  it('SGD by name keeps the reference runs momentum 0.9; sgd() keeps PyTorch momentum 0', () => {
    expect(namedDefault(SGD_OPTIONS.momentum)).toBe(0.9);
    expect(readOption(SGD_OPTIONS, {}, 'momentum')).toBe(0);
    expect(() => readOption(SGD_OPTIONS, {}, 'learningRate')).toThrow(
      /invalid learningRate: undefined \(expected a number or a schedule\)/,
    );
  });

  it('the curvature options resolve to the curvature table defaults', () => {
    expect(resolveCurvatureOptions()).toEqual({
      fisher: 'sampled',
      beta: 0.95,
      statsEvery: 1,
      inverseEvery: 10,
      earlyRefresh: 'doubling',
      newtonTolerance: 1e-4,
      newtonMaxIterations: 30,
      newtonWarmTrials: 1,
      inverse: 'auto',
      convFactors: 'expand',
      convPatchRows: 0,
      sequenceFactors: 'expand',
      seed: 1,
    });
  });

  it('every constructor takes its table defaults and rejects values past its table bounds, naming the option', () => {
    const model = mlp({ inputs: 2, layers: [{ units: 2 }, { units: 2 }], seed: 0 });
    try {
      for (const { optimizer, key, spec } of entries) {
        const good = namedDefault(spec);
        if (good !== undefined)
          expect(
            () => createOptimizer(optimizer, model, { [key]: good }),
            `${optimizer} ${key}`,
          ).not.toThrow();
        const bad =
          spec.kind === 'choice'
            ? 'bogus'
            : spec.kind === 'boolean'
              ? 1
              : spec.kind === 'integer'
                ? spec.min - 1
                : spec.min !== undefined
                  ? spec.minExclusive
                    ? spec.min
                    : spec.min - 1
                  : Number.NaN;
        expect(
          () => createOptimizer(optimizer, model, { [key]: bad }),
          `${optimizer} ${key} ${bad}`,
        ).toThrow(new RegExp(`^invalid ${key}: `));
      }
    } finally {
      model.dispose();
    }
  });
});

describe('the CLI flags are the option tables', () => {
  it('every table entry has its flag on train and compare, and FLAG_OF_OPTION maps the key to it', () => {
    for (const command of ['train', 'compare']) {
      const flags = new Set(optionsOf(command).map((o) => o.long));
      for (const { optimizer, key, spec } of entries) {
        expect(flags.has(spec.flag), `${command} ${spec.flag} (${optimizer} ${key})`).toBe(true);
        expect(FLAG_OF_OPTION[key], `${optimizer} ${key}`).toBe(spec.flag);
      }
    }
  });

  it('every optimizer flag maps back to one key, which each optimizer taking the flag has under that flag', () => {
    const optimizerGroup = optionsOf('train').filter((o) =>
      o.helpGroupHeading?.startsWith('Optimizer options'),
    );
    expect(optimizerGroup.map((o) => o.long)).toEqual(OPTIMIZER_FLAGS.map((f) => f.flag));
    for (const flag of OPTIMIZER_FLAGS) {
      expect(FLAG_OF_OPTION[flag.key]).toBe(flag.flag);
      for (const { optimizer, spec } of flag.takenBy) {
        expect(optimizerOptionTable(optimizer as never)[flag.key]).toBe(spec);
        expect(spec.flag).toBe(flag.flag);
      }
      const takers = entries.filter((e) => e.spec.flag === flag.flag).map((e) => e.optimizer);
      expect(flag.takenBy.map((t) => t.optimizer)).toEqual(takers);
    }
  });

  it('run flags handed to optimizers (--seed) are the run command flags, not optimizer flags', () => {
    const runFlagged = entries.filter((e) => e.spec.runFlag);
    expect(runFlagged.map((e) => e.key)).toEqual(expect.arrayContaining(['seed']));
    for (const { spec } of runFlagged)
      expect(OPTIMIZER_FLAGS.some((f) => f.flag === spec.flag)).toBe(false);
  });

  it('each flag help names every optimizer that takes it with its default by name', () => {
    const help = new Map(optionsOf('train').map((o) => [o.long, o.description]));
    for (const flag of OPTIMIZER_FLAGS) {
      const text = help.get(flag.flag)!;
      for (const { optimizer, spec } of flag.takenBy) {
        expect(text, flag.flag).toContain(optimizer);
        if (spec.kind !== 'boolean')
          expect(text, `${flag.flag} ${optimizer}`).toContain(
            formatDefault(namedDefault(spec as OptionSpec)),
          );
      }
    }
    expect(help.get('--lr')).toBe(
      'learning rate η (default: sgd/kfac/ring/reng 0.05, adamw/sophia 1e-3, rkalman 1)',
    );
  });

  it('parsed flags become library options under their keys (--stats-decay → beta, --solve-iterations → solveIterations)', () => {
    const command = addOptimizerOptions(new Command()).exitOverride();
    command.parse(
      [
        '--lr',
        '0.1',
        '--stats-decay',
        '0.9',
        '--kalman-rows',
        '8',
        '--solve-iterations',
        '12',
        '--nesterov',
        '--fisher',
        'empirical',
      ],
      { from: 'user' },
    );
    expect(optimizerOptionsOf(command.opts())).toEqual({
      learningRate: 0.1,
      beta: 0.9,
      rows: 8,
      solveIterations: 12,
      nesterov: true,
      fisher: 'empirical',
    });
  });

  it("R-Kalman's solveIterations is reachable by name and by flag, with its bounds", async () => {
    const model = mlp({ inputs: 2, layers: [{ units: 2 }, { units: 2 }], seed: 0 });
    try {
      expect(
        createOptimizer('rkalman', model, { solveIterations: 12 }).options.solveIterations,
      ).toBe(12);
      expect(() => createOptimizer('rkalman', model, { solveIterations: 201 })).toThrow(
        'invalid solveIterations: 201 (expected an integer ≥ 1 and ≤ 200)',
      );
    } finally {
      model.dispose();
    }
    let err = '';
    const code = await main(
      [
        'train',
        '--dataset',
        'synthetic',
        '--backend',
        'wasm',
        '--steps',
        '1',
        '--optimizer',
        'sgd',
        '--solve-iterations',
        '12',
      ],
      { out: () => {}, err: (t) => void (err += t), isTTY: false },
    );
    expect(code).toBe(2);
    expect(err.trim()).toMatch(
      /^grng: --solve-iterations: invalid option solveIterations for optimizer sgd: 12 \(sgd takes only learningRate, momentum, nesterov, weightDecay\)$/,
    );
  });

  it("the README's table lists each optimizer's flags, no more, no fewer", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const rows = new Map(
      [...readme.matchAll(/^\| (\w+) \| (.+) \|$/gm)].map((m) => [m[1]!, m[2]!]),
    );
    const flagsIn = (name: string): string[] => {
      const row = rows.get(name) ?? '';
      return [
        ...(row.startsWith("kfac's") ? flagsIn('kfac') : []),
        ...(row.match(/--[\w-]+/g) ?? []),
      ];
    };
    for (const name of OPTIMIZERS) {
      const expected = Object.values(optimizerOptionTable(name))
        .filter((spec) => !spec.runFlag)
        .map((spec) => spec.flag);
      expect(flagsIn(name).sort(), name).toEqual(expected.sort());
    }
  });

  it('a key with two flags, or a flag with two meanings, is refused when the flags are derived', () => {
    expect(optionFlags(optimizerOptionTables()).map((f) => f.flag)).toEqual(
      OPTIMIZER_FLAGS.map((f) => f.flag),
    );
    const rate = {
      kind: 'number',
      min: 0,
      default: 1,
      flag: '--lr',
      help: 'learning rate η',
    } as const;
    expect(() =>
      optionFlags({ a: { learningRate: rate }, b: { learningRate: { ...rate, flag: '--rate' } } }),
    ).toThrow(/option learningRate has two flags: --lr and --rate \(b\)/);
    expect(() => optionFlags({ a: { learningRate: rate }, b: { eta: rate } })).toThrow(
      /flag --lr means different things for a and b/,
    );
    expect(() =>
      optionFlags({
        a: { rows: { kind: 'integer', min: 1, flag: '--rows', help: 'rows' } },
        b: { rows: { kind: 'integer', min: 2, flag: '--rows', help: 'rows' } },
      }),
    ).toThrow(/flag --rows means different things/);
  });
});

describe('defaults per model family', () => {
  beforeAll(() => useTestBackend());

  it('a model with a conv layer gets the conv defaults, by name and from the constructor; given values win', () => {
    const cnn = buildModel(parseCnnSpec('cnn:6x6x1-c2k3-p2-4'), { seed: 1 });
    const dense = mlp({ inputs: 4, layers: [{ units: 3 }], seed: 1 });
    try {
      expect(modelFamily(cnn)).toBe('conv');
      expect(modelFamily(dense)).toBe('dense');
      for (const name of ['kfac', 'ring', 'reng'] as const) {
        const conv = createOptimizer(name, cnn);
        expect(conv.options).toMatchObject({ damping: 0.1, statsEvery: 10, inverseEvery: 20 });
        expect(conv.curvature!.damping.lambda).toBe(0.1);
        expect(resolveCurvatureOptions(conv.curvature!.options, 'conv')).toMatchObject({
          statsEvery: 10,
          inverseEvery: 20,
        });
        const mlpOptimizer = createOptimizer(name, dense);
        expect(mlpOptimizer.options).toMatchObject({
          // RING's ρ·ḡ² makes its damping; K-FAC's and RENG's is λ alone (src/optim/kfac.ts).
          damping: name === 'ring' ? 1e-3 : 0.1,
          statsEvery: 1,
          inverseEvery: 10,
        });
        const given = createOptimizer(name, cnn, { damping: 0.02, statsEvery: 3 });
        expect(given.options).toMatchObject({ damping: 0.02, statsEvery: 3, inverseEvery: 20 });
      }
      expect(createOptimizer('ring', cnn).options.rho).toBe(0.01);
      expect(createOptimizer('reng', cnn).options).toMatchObject({
        rho: 0.01,
        hvp: 'finite-difference',
      });
      expect(createOptimizer('reng', dense).options).toMatchObject({
        rho: 0.1,
        hvp: 'double-backprop',
      });
      // R-Kalman's ρ (a prior shrinkage, not a damping) keeps 0.1 on conv nets.
      expect(createOptimizer('rkalman', cnn).options.rho).toBe(0.1);
      // Constructors read the family too: kfac(model) on a CNN damps with 0.1.
      expect(kfac(cnn).curvature.damping.lambda).toBe(0.1);
      expect(kfac(dense).curvature.damping.lambda).toBe(0.1);
      expect(resolveCurvatureOptions({}, 'conv').statsEvery).toBe(10);
      expect(resolveCurvatureOptions({}).statsEvery).toBe(1);
    } finally {
      cnn.dispose();
      dense.dispose();
    }
  });
});
