// Serves the dashboard with two synthetic live runs (RING and AdamW, no training), for
// working on the page: npx tsx scripts/dashboard-demo.ts [--port 8080] [--history 100000]
// [--rate 160] [--token T]. --history starts each run with that many steps already done (to
// try long runs); --rate is steps per second per run. Rebuilds the bundle first. Ctrl-C stops.
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer } from '../src/sinks/server.js';
import { feedHub, syntheticRun } from '../test/dashboardSynthetic.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    history: { type: 'string', default: '0' },
    rate: { type: 'string', default: '160' },
    token: { type: 'string' },
  },
});
const dashboardDir = join(root, 'dist', 'dashboard');
execFileSync(process.execPath, [join(root, 'scripts', 'build-dashboard.mjs'), dashboardDir], {
  stdio: 'inherit',
});

const hub = new RunHub();
const history = Number(values.history);
const rate = Number(values.rate);
const everyMs = 100;
const perTick = Math.max(1, Math.round((rate * everyMs) / 1000));
const feeds = [
  feedHub(hub, syntheticRun('demo-ring', 'ring', { label: 'ring' }), 'ring', {
    first: history,
    perTick,
    everyMs,
  }),
  feedHub(hub, syntheticRun('demo-adamw', 'adamw', { label: 'adamw' }), 'adamw', {
    first: history,
    perTick,
    everyMs,
  }),
];
const server = await startServer({
  hub,
  port: Number(values.port),
  token: values.token,
  dashboardDir,
});
console.log(`dashboard: ${server.url}`);
process.on('SIGINT', () => {
  for (const f of feeds) f.stop();
  void server.close().then(() => process.exit(0));
});
