import { defineConfig } from 'vitest/config';

const long = process.env.GRNG_LONG_TESTS === '1';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The long load test measures training throughput, so it must not share the two cores with
    // the other test files: with GRNG_LONG_TESTS it runs alone afterwards (vitest.load.config.ts,
    // `npm run test:load`); its short version runs here with lax bounds.
    exclude: long ? ['test/server.load.test.ts'] : [],
    // tfjs keeps one global engine per process; files run in separate forks, tests in a file
    // run in order. Two cores: two forks.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    // The default report, then the tests skipped for a missing Debian package and why
    // (test/systemPackages.ts).
    reporters: ['default', './test/systemPackagesReporter.ts'],
    hookTimeout: 60_000,
  },
});
