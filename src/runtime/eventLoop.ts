/** Longest stretch of training without letting the event loop run (ms). */
export const YIELD_EVERY_MS = 20;

let lastYield = performance.now();

/**
 * Lets the event loop run (timers, sockets, signal handlers) if it has not for `everyMs`.
 * Read-backs on the cpu and wasm backends resolve as microtasks, so a chain of them — a step, a
 * Newton–Schulz refresh of a large factor taking seconds — would otherwise keep the dashboard
 * server, the recorder's time-based flush and Ctrl-C waiting until it ends. Not every call:
 * a macrotask hop per step measurably slows small steps.
 *
 * @example
 * for (;;) { work(); await yieldToEventLoop(); }
 */
export async function yieldToEventLoop(everyMs = YIELD_EVERY_MS): Promise<void> {
  if (performance.now() - lastYield < everyMs) return;
  await new Promise<void>((resolve) => setImmediate(resolve));
  lastYield = performance.now();
}
