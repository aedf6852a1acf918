/**
 * A Node client of the live dashboard stream (protocol: docs/protocol.md): connects, decodes each
 * Arrow batch, and prints every run's latest step, loss and test accuracy. Run a server first,
 * e.g. `grng train --serve --keep-serving`, then:
 *   npx tsx examples/dashboard-client.ts ws://127.0.0.1:8080/ws [--until-ended]
 * With --until-ended it exits once every run it has seen has ended.
 */
import { tableFromIPC } from 'apache-arrow';
import WebSocket from 'ws';

const url = process.argv[2] ?? 'ws://127.0.0.1:8080/ws';
const untilEnded = process.argv.includes('--until-ended');
const runs = new Map<string, { label: string; rows: number; ended: boolean }>();
let pendingHeader: { runId: string; missed: number } | undefined;

const socket = new WebSocket(url);
socket.on('message', (data, isBinary) => {
  if (isBinary) {
    const table = tableFromIPC(data as Buffer);
    const run = runs.get(pendingHeader!.runId)!;
    run.rows += table.numRows;
    const last = table.get(table.numRows - 1)!.toJSON() as {
      step: number;
      loss: number;
      testAccuracy: number | null;
    };
    const missed = pendingHeader!.missed ? ` (missed ${pendingHeader!.missed})` : '';
    console.log(
      `${run.label.padEnd(10)} step ${String(last.step).padStart(5)}  loss ${last.loss.toFixed(4)}  test acc ${last.testAccuracy?.toFixed(4) ?? '   -  '}  rows ${run.rows}${missed}`,
    );
    return;
  }
  const message = JSON.parse(String(data)) as {
    type: string;
    run?: { id: string; label: string };
    runId?: string;
    missed?: number;
  };
  if (message.type === 'run')
    runs.set(message.run!.id, { label: message.run!.label, rows: 0, ended: false });
  if (message.type === 'batch')
    pendingHeader = { runId: message.runId!, missed: message.missed ?? 0 };
  if (message.type === 'end') {
    runs.get(message.runId!)!.ended = true;
    console.log(`${runs.get(message.runId!)!.label} ended`);
    if (untilEnded && [...runs.values()].every((r) => r.ended)) socket.close();
  }
});
socket.on('close', () => process.exit(0));
socket.on('error', (error) => {
  console.error(`cannot connect to ${url}: ${error.message}`);
  process.exit(1);
});
