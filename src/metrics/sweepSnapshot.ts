/**
 * What `GET /api/sweep` answers (docs/protocol.md): a sweep folder as it is now. The contract
 * between the sweep (src/sweep/snapshot.ts writes it) and the dashboard's sweep view (reads it).
 */

export type SweepTrialStatus = 'pending' | 'running' | 'done' | 'stopped' | 'failed';
export type SweepSettingValue = string | number | boolean;

/** One trial of a sweep. */
export interface SweepSnapshotTrial {
  readonly trial: string;
  /** The run id of its recording (what the dashboard's runs are keyed by); null before it exists. */
  readonly runId: string | null;
  readonly status: SweepTrialStatus;
  /** The last step budget it has a result for (FULL_RUN, 2³¹ − 1, for the whole run); null: none. */
  readonly rung: number | null;
  /** The settings the sweep varies, as the trial has them. */
  readonly settings: Readonly<Record<string, SweepSettingValue>>;
  readonly steps: number | null;
  /** The sweep metric at its last evaluation, and the best over its run. */
  readonly metric: number | null;
  readonly best: number | null;
  readonly seconds: number | null;
  readonly stepsPerSecond: number | null;
  /** The error line of a failed trial. */
  readonly error?: string;
}

/** A sweep folder as it is now. */
export interface SweepSnapshot {
  readonly name: string;
  /** The metric trials are ranked by (`testAccuracy`, `testLoss`, `finalLoss`). */
  readonly metric: string;
  readonly higherIsBetter: boolean;
  /** The varied settings (table columns), the seed last. */
  readonly settings: readonly string[];
  /** In the sweep's own order (sweep.json). */
  readonly trials: readonly SweepSnapshotTrial[];
}
