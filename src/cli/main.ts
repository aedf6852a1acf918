import { CommanderError } from 'commander';
import { isGrngError } from '../errors.js';
import { cliMessage } from './optionFlags.js';
import { buildProgram } from './program.js';

/**
 * Runs the CLI and returns the exit code: 0 on success, 2 for bad input (unknown flags, bad
 * values, invalid options, data or model), 1 for anything else. Errors are one line on stderr;
 * set GRNG_DEBUG=1 for the stack.
 */
export async function main(
  argv: readonly string[],
  io = {
    out: (t: string) => void process.stdout.write(t),
    err: (t: string) => void process.stderr.write(t),
    isTTY: Boolean(process.stderr.isTTY),
  },
): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed its one-line message (or help / version, exit code 0).
      return error.exitCode === 0 ? 0 : 2;
    }
    if (isGrngError(error)) {
      io.err(`grng: ${cliMessage(error)}\n`);
      if (process.env.GRNG_DEBUG) io.err(`${error.stack}\n`);
      return error.code === 'internal' || error.code === 'step' || error.code === 'backend' ? 1 : 2;
    }
    io.err(
      `grng: ${error instanceof Error ? error.message.split('\n')[0] : String(error).split('\n')[0]}\n`,
    );
    if (process.env.GRNG_DEBUG && error instanceof Error) io.err(`${error.stack}\n`);
    return 1;
  }
}
