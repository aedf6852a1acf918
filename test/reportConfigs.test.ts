import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FLAG_OF_OPTION } from '../src/cli/optionFlags.js';
import { resolveCurvatureOptions } from '../src/curvature/options.js';
import { buildModel } from '../src/nn/buildModel.js';
import { modelFamily, type ModelFamily } from '../src/nn/modelFamily.js';
import { resolveOptimizerOptions } from '../src/optim/registry.js';
import { resolveModel } from '../src/run/options.js';
import { parseSweepConfig } from '../src/sweep/config.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const REPORT_SWEEPS = 'sweeps/report';

/**
 * Defaults that pick by machine, as the report's machine resolves them: `inverse: 'auto'` is
 * Cholesky where the native LAPACK loads (docs/algorithms.md), and the inverse ablation names the
 * resolved choice so that it compares two methods everywhere (its question says so).
 */
const AUTO_AS_RUN: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  inverse: { auto: 'cholesky' },
};

function familyOf(model: unknown): ModelFamily {
  const { layered } = resolveModel(typeof model === 'string' ? model : undefined);
  if (!layered) return 'dense';
  const built = buildModel(layered.spec);
  try {
    return modelFamily(built);
  } finally {
    built.dispose();
  }
}

describe("the report's sweep configs", () => {
  // An ablation's `defaults` mark which variant is the library's default; the report's verdict
  // ("the default stands" or "a candidate") is only true while they are. When a default changes
  // by measurement (K-FAC's dense λ did), this names every ablation that must follow it.
  it("each ablation's defaults are the library's defaults for its model family", () => {
    const flagToKey = new Map(Object.entries(FLAG_OF_OPTION).map(([key, flag]) => [flag, key]));
    const checked: string[] = [];
    for (const file of readdirSync(REPORT_SWEEPS).filter((f) => f.endsWith('.json'))) {
      const path = join(REPORT_SWEEPS, file);
      const config = parseSweepConfig(readFileSync(path, 'utf8'), path);
      if (config.report?.kind !== 'ablation') continue;
      const family = familyOf(config.base.model);
      for (const [flag, value] of Object.entries(config.report.defaults ?? {})) {
        const key = flagToKey.get(`--${flag}`);
        expect(key, `${file}: --${flag} is an optimizer flag`).toBeDefined();
        const varying = Object.entries(config.optimizers).filter(([, axes]) => flag in axes);
        expect(varying.length, `${file}: some optimizer varies --${flag}`).toBeGreaterThan(0);
        for (const [name] of varying) {
          // Curvature options without a default by name (convFactors, inverse) resolve later.
          const resolved = {
            ...resolveCurvatureOptions({}, family),
            ...resolveOptimizerOptions(name, {}, { family }),
          } as Record<string, unknown>;
          const library = String(resolved[key!]);
          expect(
            AUTO_AS_RUN[key!]?.[library] ?? library,
            `${file}: ${name}'s default --${flag} (${family})`,
          ).toBe(String(value));
          checked.push(`${file}:${name}:${flag}`);
        }
      }
    }
    expect(checked.length).toBeGreaterThanOrEqual(10);
  });
});
