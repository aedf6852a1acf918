import { Subject } from 'rxjs';

/**
 * How code outside a running pipeline talks to it: ask it to stop after the step in progress
 * (a signal handler, a UI), and ask the sinks to write out the rows they are batching (before a
 * checkpoint, so the recording covers every step the checkpoint does). Pass one to
 * `prepareRun({ control })`.
 *
 * @example
 * const control = new RunControl();
 * process.once('SIGINT', () => control.requestStop('SIGINT'));
 * await train({ optimizer: 'ring', control });
 */
export class RunControl {
  private reason: string | undefined;
  private readonly flushRequests = new Subject<void>();
  /** Emits when the sinks should write out what they hold (toRecordBatches listens). */
  readonly flushes = this.flushRequests.asObservable();

  /**
   * Stop after the current step: it finishes, its metrics are recorded, a checkpoint is written
   * when configured.
   */
  requestStop(reason = 'stop requested'): void {
    this.reason ??= reason;
  }

  get stopRequested(): boolean {
    return this.reason !== undefined;
  }

  /** Why the stop was asked for (the first reason given), undefined while running. */
  get stopReason(): string | undefined {
    return this.reason;
  }

  flush(): void {
    this.flushRequests.next();
  }
}
