/**
 * A named place where a running operator exposes its per-subscription state, so that a
 * checkpoint can read it between steps and a resumed run can put saved state back before the
 * first step. The operator attaches an accessor when subscribed and detaches on teardown;
 * state restored before that is handed over at attach time.
 *
 * @example
 * const slot = new StateSlot<AdamState>('optimizer');
 * steps$.pipe(update(model, adamw(), { state: slot }));
 * // between steps: const state = slot.get();
 */
export class StateSlot<S> {
  private accessor: { get(): S | undefined; set(state: S): void } | undefined;
  private pending: S | undefined;

  constructor(readonly name: string) {}

  /** Called by the operator on subscribe; a pending restored state is handed over now. */
  attach(accessor: { get(): S | undefined; set(state: S): void }): void {
    this.accessor = accessor;
    if (this.pending !== undefined) {
      accessor.set(this.pending);
      this.pending = undefined;
    }
  }

  detach(): void {
    this.accessor = undefined;
  }

  /** The operator's current state (undefined before its first step or when not running). */
  get(): S | undefined {
    return this.accessor?.get();
  }

  /** Disposes a restored state no operator took (a run prepared and never subscribed). */
  discard(dispose: (state: S) => void): void {
    if (this.pending !== undefined) dispose(this.pending);
    this.pending = undefined;
  }

  /**
   * Puts state in: into the running operator, or kept until it attaches. The slot takes ownership.
   */
  set(state: S): void {
    if (this.accessor) this.accessor.set(state);
    else this.pending = state;
  }
}
