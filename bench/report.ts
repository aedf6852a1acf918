/** Renders the benchmark results (bench/index.ts) as the Markdown section of docs/benchmarks.md. */

type Json = Record<string, any>;

const fixed = (x: unknown, digits = 2): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–');

export function renderReport(results: Json): string {
  const m = results.machine ?? {};
  const parts: string[] = [
    `### Latest \`npm run bench\` (${m.date?.slice(0, 10) ?? ''}, ${m.cpus} × ${m.cpu}, ${m.memoryGiB} GiB, Node ${m.node}; ${results.seconds} s)`,
    '',
  ];
  const p = results.pipeline as Json | undefined;
  if (p) {
    parts.push(`**Pipeline vs a bare tfjs loop** (\`bench/pipeline.ts\`, ${p.backend}, ${p.model}, batch ${p.batchSize}, ${p.steps} steps × ${p.rounds} rounds, median):`, '');
    parts.push('| variant | ms/step | ÷ bare loop |', '|---|---|---|');
    for (const [k, v] of Object.entries(p.msPerStep as Json)) parts.push(`| ${k} | ${fixed(v)} | ${fixed((v as number) / p.msPerStep.bareLoopSameLayers, 3)} |`);
    parts.push('');
  }
  const o = results.optimizers as Json | undefined;
  if (o) {
    parts.push(`**Optimizer overhead** (\`bench/optimizers.ts\`, ${o.backend}, ${o.model}, batch ${o.batchSize}, ${o.steps} timed steps after ${o.warmup}; stage times in ms per step, refresh amortized over its period):`, '');
    parts.push('| optimizer | ms/step | × SGD | goal | fwd/bwd | statistics | Newton refresh | update | metrics |', '|---|---|---|---|---|---|---|---|---|');
    for (const [name, r] of Object.entries(o.results as Json)) {
      const s = (r as Json).stages;
      const goal = o.goals?.[name];
      parts.push(`| ${name} | ${fixed(r.msPerStep, 1)} | ${fixed(r.overSgd)} | ${goal ? `≤ ${goal}` : ''} | ${fixed(s.forwardBackward, 1)} | ${fixed(s.statistics, 1)} | ${fixed(s.refresh, 1)} | ${fixed(s.update, 1)} | ${fixed(s.metrics, 1)} |`);
    }
    parts.push('');
  }
  for (const key of ['scaling', 'memory', 'torch', 'accuracy']) {
    if (results[key] === undefined) continue;
    const rendered = renderers[key]?.(results[key]);
    parts.push(rendered ?? `**${key}**:\n\n\`\`\`json\n${JSON.stringify(results[key], null, 1).slice(0, 4000)}\n\`\`\``, '');
  }
  return parts.join('\n').trimEnd();
}

/** Per-benchmark renderers; a benchmark without one is shown as JSON. */
const renderers: Record<string, (r: Json) => string | undefined> = {};
