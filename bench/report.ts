/** Renders the benchmark results (bench/index.ts) as the Markdown section of docs/benchmarks.md. */

type Json = Record<string, any>;

const fixed = (x: unknown, digits = 2): string =>
  typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–';

export function renderReport(results: Json): string {
  const m = results.machine ?? {};
  const parts: string[] = [
    `### Latest \`npm run bench\` (${m.date?.slice(0, 10) ?? ''}, ${m.cpus} × ${m.cpu}, ${m.memoryGiB} GiB, Node ${m.node}; ${results.seconds} s)`,
    '',
  ];
  const p = results.pipeline as Json | undefined;
  if (p) {
    parts.push(
      `**Pipeline vs a bare tfjs loop** (\`bench/pipeline.ts\`, ${p.backend}, ${p.model}, batch ${p.batchSize}, ${p.steps} steps × ${p.rounds} rounds, median):`,
      '',
    );
    parts.push('| variant | ms/step | ÷ bare loop |', '|---|---|---|');
    for (const [k, v] of Object.entries(p.msPerStep as Json))
      parts.push(
        `| ${k} | ${fixed(v)} | ${fixed((v as number) / p.msPerStep.bareLoopSameLayers, 3)} |`,
      );
    parts.push('');
    if (p.ratios) {
      // Paired within each round (variants of a round run seconds apart), then the median over rounds.
      parts.push(
        'Ratios paired within each round, median over rounds (what the goals are read against):',
        '',
      );
      parts.push('| ratio | value |', '|---|---|');
      for (const [k, v] of Object.entries(p.ratios as Json))
        parts.push(`| ${k} | ${fixed(v, 3)} |`);
      parts.push('');
    }
  }
  for (const o of [results.optimizers, results.optimizersCnn, results.optimizersGpt] as (
    Json | undefined
  )[]) {
    if (!o) continue;
    parts.push(
      `**Optimizer overhead** (\`bench/optimizers.ts\`, ${o.backend}, ${o.model}, batch ${o.batchSize}, ${o.steps} timed steps after ${o.warmup}; stage times in ms per step, refresh amortized over its period):`,
      '',
    );
    if (o.skipped) {
      parts.push(`**Optimizer overhead** on ${o.model}: skipped (${o.skipped}).`, '');
      continue;
    }
    const baseline = o.baseline === 'adamw' ? 'AdamW' : 'SGD';
    parts.push(
      `| optimizer | ms/step | × ${baseline} | goal | fwd/bwd | statistics | Newton refresh | update | metrics |`,
      '|---|---|---|---|---|---|---|---|---|',
    );
    for (const [name, r] of Object.entries(o.results as Json)) {
      const s = (r as Json).stages;
      const goal = o.goals?.[name];
      parts.push(
        `| ${name} | ${fixed(r.msPerStep, 1)} | ${fixed(r.overBaseline ?? r.overSgd)} | ${goal ? `≤ ${goal}` : ''} | ${fixed(s.forwardBackward, 1)} | ${fixed(s.statistics, 1)} | ${fixed(s.refresh, 1)} | ${fixed(s.update, 1)} | ${fixed(s.metrics, 1)} |`,
      );
    }
    parts.push('');
  }
  for (const key of ['scaling', 'memory', 'torch', 'torchCnn', 'torchGpt', 'accuracy']) {
    if (results[key] === undefined) continue;
    const rendered = renderers[key.startsWith('torch') ? 'torch' : key]?.(results[key]);
    parts.push(
      rendered ??
        `**${key}**:\n\n\`\`\`json\n${JSON.stringify(results[key], null, 1).slice(0, 4000)}\n\`\`\``,
      '',
    );
  }
  return parts.join('\n').trimEnd();
}

/** Per-benchmark renderers; a benchmark without one is shown as JSON. */
const renderers: Record<string, (r: Json) => string | undefined> = {
  scaling: (r) => {
    const lines = [
      `**Scaling** (\`bench/scaling.ts\`, ${r.backendDetail}, ${r.model}; log–log slope of amortized ms/step against batch m (width ${r.batchSweep?.width}) and width W (batch ${r.widthSweep?.batch}), measured vs what the multiply–add count predicts; plot: docs/scaling.svg):`,
      '',
      '| optimizer | slope in m | expected | slope in W | expected | worse than the math? |',
      '|---|---|---|---|---|---|',
    ];
    for (const [name, sl] of Object.entries((r.slopes ?? {}) as Record<string, Json>)) {
      const b = sl.batch as Json | undefined;
      const w = sl.width as Json | undefined;
      lines.push(
        `| ${name} | ${fixed(b?.measured)} | ${fixed(b?.expected)} | ${fixed(w?.measured)} | ${fixed(w?.expected)} | ${b?.worseThanMath || w?.worseThanMath ? 'yes' : 'no'} |`,
      );
    }
    if (Array.isArray(r.skipped) && r.skipped.length > 0)
      lines.push(
        '',
        `Not run: ${r.skipped.map((k: unknown) => (typeof k === 'string' ? k : JSON.stringify(k))).join('; ')}.`,
      );
    return lines.join('\n');
  },
  memory: (r) => {
    const lines = [
      `**Memory** (\`bench/memory.ts\`, ${r.backend}, ${r.model}, ${r.steps} steps, batch ${r.batchSize}; slopes per 1,000 steps over the second half):`,
      '',
      '| optimizer | numTensors constant | RSS MiB / 1000 steps | heap MiB / 1000 steps | tensors after dispose |',
      '|---|---|---|---|---|',
    ];
    for (const run of (r.runs ?? []) as Json[])
      lines.push(
        `| ${run.optimizer} | ${run.tensorsConstant ? 'yes' : 'no'} | ${fixed(run.rssSlopeMiBPer1000, 3)} | ${fixed(run.heapSlopeMiBPer1000, 3)} | ${run.tensorsAfterDispose} |`,
      );
    lines.push(
      '',
      `Flat: ${r.flat ? 'yes' : 'no'}; tensors left after all runs: ${r.tensorsLeftAfterDispose}.`,
    );
    return lines.join('\n');
  },
  torch: (r) => {
    if (r.skipped) return `**PyTorch reference**: skipped (${r.skipped}).`;
    const lines = [
      `**CPU throughput vs PyTorch** (\`bench/torchReference.ts\`, ${r.model}, batch ${r.batchSize}, ${String(r.model).startsWith('gpt:') ? 'AdamW' : 'SGD'}, ${r.steps} steps × ${r.rounds} rounds, median):`,
      '',
      '| run | ms/step | grng ÷ it |',
      '|---|---|---|',
      `| grng (${r.grng?.backendDetail ?? r.grng?.backend ?? 'wasm'}) | ${fixed(r.grng?.msPerStep)} | |`,
      `| PyTorch ${r.torch?.version ?? ''} reference (${r.torch?.threads} threads) | ${fixed(r.torch?.msPerStep)} | **${fixed(r.ratio)}** (goal ≤ ${r.goal}) |`,
    ];
    if (r.torchSingleThread)
      lines.push(
        `| PyTorch, 1 thread | ${fixed(r.torchSingleThread.msPerStep)} | ${fixed(r.ratioSingleThread)} |`,
      );
    if (r.torchOutOfTheBox)
      lines.push(
        `| PyTorch, out of the box | ${fixed(r.torchOutOfTheBox.msPerStep)} | ${fixed(r.ratioOutOfTheBox)} |`,
      );
    if (r.ratioBest !== undefined)
      lines.push(`| grng ÷ the fastest PyTorch above | | **${fixed(r.ratioBest)}** |`);
    if (Array.isArray(r.warnings) && r.warnings.length > 0)
      lines.push('', ...r.warnings.map((w: unknown) => `Warning: ${String(w)}`));
    return lines.join('\n');
  },
};
