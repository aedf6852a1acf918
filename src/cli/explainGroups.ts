import { prepareRun, type TrainOptions } from '../run/train.js';
import type { CliIo } from './io.js';

/** One parameter group as `--explain-groups --json` prints it. */
export interface GroupExplanation {
  readonly scalars: number;
  readonly parameters: ReadonlyArray<{ key: string; shape: number[]; scalars: number }>;
}

/**
 * `--explain-groups`: builds each run (data, model, optimizer; nothing is trained) and prints
 * which parameter group each parameter is in, with the scalars per group: a Kronecker-factored
 * optimizer preconditions only the layers it has curvature blocks for and leaves the rest
 * (embeddings, layer norms) to another optimizer, and this is where a user sees the split.
 * With `json`, stdout's last line is the JSON (an object for one run, an array for several).
 */
export async function explainGroups(
  runs: readonly TrainOptions[],
  io: CliIo,
  json: boolean,
): Promise<void> {
  const explained: object[] = [];
  for (const options of runs) {
    const run = await prepareRun(options);
    try {
      const { meta, model } = run;
      const grouped = new Set(Object.values(meta.groups).flat());
      const ungrouped = Object.keys(model.params).filter((key) => !grouped.has(key));
      // A parameter in no group would not be trained: shown rather than hidden.
      const entries = [
        ...Object.entries(meta.groups),
        ...(ungrouped.length > 0 ? [['(no group: not trained)', ungrouped] as const] : []),
      ];
      const groups: Record<string, GroupExplanation> = {};
      for (const [name, keys] of entries) {
        const parameters = keys.map((key) => {
          const p = model.params[key]!;
          return { key, shape: [...p.shape], scalars: p.size };
        });
        groups[name] = { scalars: parameters.reduce((n, p) => n + p.scalars, 0), parameters };
      }
      explained.push({
        optimizer: meta.optimizer,
        model: meta.model,
        dataset: meta.dataset,
        parameters: meta.parameters,
        groups,
      });
      const lines = [
        `${meta.optimizer} on ${meta.model} (${meta.dataset}): ${plural(entries.length, 'group')}, ${plural(Object.keys(model.params).length, 'parameter')}, ${count(meta.parameters)} scalars`,
      ];
      for (const [name, group] of Object.entries(groups)) {
        lines.push(
          `  ${name}: ${plural(group.parameters.length, 'parameter')}, ${count(group.scalars)} scalars`,
        );
        for (const p of group.parameters)
          lines.push(`    ${p.key} [${p.shape.join(', ')}] ${count(p.scalars)}`);
      }
      (json ? io.err : io.out)(`${lines.join('\n')}\n`);
    } finally {
      run.dispose();
    }
  }
  if (json) io.out(`${JSON.stringify(runs.length === 1 ? explained[0] : explained)}\n`);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}
