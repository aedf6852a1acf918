/**
 * Reads recordings and compares their runs: steps and wall time to a target test accuracy, best
 * test accuracy, final train loss and mean ‖g‖. Run:
 *   npx tsx examples/replay-analysis.ts runs/*.arrows [--target 0.9]
 * (record some first, e.g. `grng compare --optimizers ring,adamw --record runs/cmp.arrows`).
 */
import { lastValueFrom, toArray } from 'rxjs';
import { replayArrow } from 'grng';

const args = process.argv.slice(2);
const targetIndex = args.indexOf('--target');
const target = targetIndex >= 0 ? Number(args[targetIndex + 1]) : 0.9;
const files = args.filter((a, i) => a !== '--target' && i !== targetIndex + 1);
if (files.length === 0) {
  console.error('usage: npx tsx examples/replay-analysis.ts FILE.arrows... [--target 0.9]');
  process.exit(2);
}

const replayed = await lastValueFrom(
  replayArrow(files, { onWarning: (m) => console.error(`warning: ${m}`) }).pipe(toArray()),
);
const byRun = new Map<string, typeof replayed>();
for (const item of replayed) byRun.set(item.run.id, [...(byRun.get(item.run.id) ?? []), item]);

console.log(
  `run                         steps→${target}  seconds→${target}  best test acc  final loss  mean ‖g‖`,
);
for (const items of byRun.values()) {
  const { run } = items[0]!;
  const rows = items.map((i) => i.row);
  const hit = rows.find((r) => r.testAccuracy !== null && r.testAccuracy >= target);
  const best = Math.max(...rows.map((r) => r.testAccuracy ?? 0));
  const lastEpoch = rows.filter((r) => r.step > rows.length - 1 - run.batchesPerEpoch);
  const finalLoss = lastEpoch.reduce((s, r) => s + r.loss, 0) / lastEpoch.length;
  const meanGradNorm = rows.reduce((s, r) => s + r.gradNorm, 0) / rows.length;
  console.log(
    `${`${run.label} (${run.optimizer}, seed ${run.seed})`.padEnd(28)}${(hit ? String(hit.step + 1) : '—').padStart(11)}${(hit ? (hit.wallMs / 1000).toFixed(1) : '—').padStart(13)}${best.toFixed(4).padStart(15)}${finalLoss.toFixed(4).padStart(12)}${meanGradNorm.toFixed(4).padStart(10)}`,
  );
}
