import { defineConfig } from 'vitest/config';

// The 60-second, 50-client load test on its own (see vitest.config.ts): nothing else runs, so
// its throughput comparison measures the server, not the other test files.
export default defineConfig({
  test: {
    include: ['test/server.load.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 300_000,
  },
});
