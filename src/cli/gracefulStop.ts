import type { RunControl } from '../run/runControl.js';
import type { CliIo } from './io.js';

const SIGNAL_EXIT_CODES: Readonly<Record<string, number>> = { SIGINT: 130, SIGTERM: 143 };

/**
 * Turns SIGINT/SIGTERM into a graceful stop for the duration of a command: the first signal asks
 * the run to stop after the step in progress (its metrics are recorded, a checkpoint written when
 * configured, WebSocket clients closed with a reason, exit 0); a second one exits at once (the
 * recording keeps every batch already written). Returns the function that removes the handlers.
 *
 * @example
 * const restore = handleStopSignals(io, control);
 * try { await train({ control }); } finally { restore(); }
 */
export function handleStopSignals(
  io: CliIo,
  control: RunControl,
  exit: (code: number) => void = (code) => process.exit(code),
): () => void {
  let received = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    received += 1;
    if (received === 1) {
      control.requestStop(signal);
      io.err(
        `grng: ${signal}: finishing the current step, then saving and stopping (${signal} again exits at once)\n`,
      );
      return;
    }
    io.err(`grng: ${signal} again: exiting now\n`);
    exit(SIGNAL_EXIT_CODES[signal] ?? 1);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}
