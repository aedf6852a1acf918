import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/*
 * Enforces docs/architecture.md: the allowed-imports table is read from the document itself
 * (one source of truth), the import graph of src/ is built with the TypeScript parser, and every
 * edge is checked against the table; cycles among folders and among files fail on their own.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');
const DOC = join(ROOT, 'docs', 'architecture.md');
const TABLE_MARKER = '<!-- allowed-imports';

/** One import of a module, as written. */
interface ImportSite {
  readonly specifier: string;
  readonly line: number;
  /** `import type`, `export type … from`, all-type named bindings, or an `import('…')` type. */
  readonly typeOnly: boolean;
  readonly kind:
    'import' | 'export from' | 'dynamic import()' | 'import() type' | 'require()' | 'import =';
}

/** Every module reference in a TypeScript source with a literal specifier. */
function importsIn(fileName: string, text: string): ImportSite[] {
  const source = ts.createSourceFile(
    fileName,
    text,
    ts.ScriptTarget.Latest,
    true,
    ts.ScriptKind.TS,
  );
  const sites: ImportSite[] = [];
  const add = (literal: ts.Node, typeOnly: boolean, kind: ImportSite['kind']): void => {
    if (!ts.isStringLiteralLike(literal)) return;
    sites.push({
      specifier: literal.text,
      line: source.getLineAndCharacterOfPosition(literal.getStart(source)).line + 1,
      typeOnly,
      kind,
    });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const bindings = clause?.namedBindings;
      // `import { type A, type B } from` is erased like `import type`; a bare `import './x.js'` runs.
      const allTypeNames =
        !!bindings &&
        ts.isNamedImports(bindings) &&
        bindings.elements.length > 0 &&
        bindings.elements.every((e) => e.isTypeOnly);
      add(
        node.moduleSpecifier,
        !!clause && (clause.isTypeOnly || (!clause.name && allTypeNames)),
        'import',
      );
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier) {
      const names = node.exportClause;
      const allTypeNames =
        !!names &&
        ts.isNamedExports(names) &&
        names.elements.length > 0 &&
        names.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, node.isTypeOnly || allTypeNames, 'export from');
    } else if (
      ts.isImportEqualsDeclaration(node) &&
      ts.isExternalModuleReference(node.moduleReference)
    ) {
      add(node.moduleReference.expression, node.isTypeOnly, 'import =');
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal, true, 'import() type');
    } else if (ts.isCallExpression(node) && node.arguments.length > 0) {
      if (node.expression.kind === ts.SyntaxKind.ImportKeyword)
        add(node.arguments[0]!, false, 'dynamic import()');
      else if (ts.isIdentifier(node.expression) && node.expression.text === 'require')
        add(node.arguments[0]!, false, 'require()');
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return sites;
}

/** An edge of the import graph between two files of src/ (paths relative to the repository). */
interface Edge {
  readonly from: string;
  readonly to: string;
  readonly line: number;
  readonly typeOnly: boolean;
  readonly kind: ImportSite['kind'];
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (name.endsWith('.ts')) out.push(path);
  }
  return out;
}

const isFile = (path: string): boolean => {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
};

/** Where a relative specifier points, as NodeNext resolves a `.js` suffix to its `.ts` source. */
function resolveRelative(fromFile: string, specifier: string): string | undefined {
  const target = resolve(dirname(fromFile), specifier);
  const candidates = /\.[cm]?js$/.test(target)
    ? [target.replace(/\.([cm]?)js$/, '.$1ts'), target.replace(/\.([cm]?)js$/, '.d.$1ts'), target]
    : [target, `${target}.ts`, join(target, 'index.ts')];
  return candidates.find(isFile);
}

/** The import graph of src/: files, edges, and references that resolve to no file in src/. */
function importGraph(): { files: string[]; edges: Edge[]; unresolved: string[] } {
  const files = sourceFiles(SRC);
  const edges: Edge[] = [];
  const unresolved: string[] = [];
  const rel = (path: string): string => relative(ROOT, path).split('\\').join('/');
  for (const file of files) {
    for (const site of importsIn(file, readFileSync(file, 'utf8'))) {
      if (!site.specifier.startsWith('./') && !site.specifier.startsWith('../')) continue;
      const target = resolveRelative(file, site.specifier);
      if (!target || !target.startsWith(SRC + '/')) {
        unresolved.push(
          `${rel(file)}:${site.line} imports '${site.specifier}', which is no file in src/`,
        );
        continue;
      }
      edges.push({
        from: rel(file),
        to: rel(target),
        line: site.line,
        typeOnly: site.typeOnly,
        kind: site.kind,
      });
    }
  }
  return { files: files.map(rel), edges, unresolved };
}

/** One row of the allowed-imports table. */
interface Rule {
  readonly group: string;
  /** Folders (ending in `/`) or single files, relative to the repository. */
  readonly paths: readonly string[];
  readonly mayImport: readonly string[];
}

const backticked = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

/**
 * Reads the table that follows the `<!-- allowed-imports -->` marker: columns group, paths,
 * what it holds, may import. Names in backticks count; everything else in a cell is prose.
 */
function parseRules(markdown: string): Rule[] {
  const start = markdown.indexOf(TABLE_MARKER);
  if (start < 0)
    throw new Error(
      `docs/architecture.md has no '${TABLE_MARKER} -->' marker before its allowed-imports table`,
    );
  const lines = markdown.slice(start).split('\n').slice(1);
  const tableLines: string[] = [];
  for (const line of lines) {
    if (line.trim().startsWith('|')) tableLines.push(line.trim());
    else if (tableLines.length > 0) break;
  }
  const cells = (line: string): string[] =>
    line
      .slice(1, line.endsWith('|') ? -1 : undefined)
      .split('|')
      .map((c) => c.trim());
  const header = cells(tableLines[0] ?? '').map((c) => c.toLowerCase());
  const [groupCol, pathsCol, importsCol] = ['group', 'paths', 'may import'].map((name) =>
    header.indexOf(name),
  );
  if (groupCol! < 0 || pathsCol! < 0 || importsCol! < 0)
    throw new Error(
      `the allowed-imports table needs the columns group, paths and may import; it has ${header.join(', ')}`,
    );
  return tableLines.slice(2).map((line) => {
    const row = cells(line);
    const [group] = backticked(row[groupCol!] ?? '');
    if (!group) throw new Error(`allowed-imports row without a group name: ${line}`);
    return {
      group,
      paths: backticked(row[pathsCol!] ?? ''),
      mayImport: backticked(row[importsCol!] ?? ''),
    };
  });
}

/** The group a file belongs to: a single-file path wins over a folder. */
function groupOf(rules: readonly Rule[], file: string): string | undefined {
  return (
    rules.find((r) => r.paths.includes(file))?.group ??
    rules.find((r) => r.paths.some((p) => p.endsWith('/') && file.startsWith(p)))?.group
  );
}

const describeEdge = (e: Edge): string =>
  `${e.from}:${e.line} imports ${e.to}${e.typeOnly ? ' (type-only)' : ''}`;

/** Edges the table does not allow, each with the rule it breaks. Imports within a group are free. */
function disallowedImports(rules: readonly Rule[], edges: readonly Edge[]): string[] {
  const byGroup = new Map(rules.map((r) => [r.group, r]));
  const problems: string[] = [];
  for (const e of edges) {
    const from = groupOf(rules, e.from);
    const to = groupOf(rules, e.to);
    if (from === undefined || to === undefined) {
      problems.push(
        `${describeEdge(e)}: ${from === undefined ? e.from : e.to} is in no group of the allowed-imports table`,
      );
    } else if (from !== to && !byGroup.get(from)!.mayImport.includes(to)) {
      const allowed = byGroup.get(from)!.mayImport;
      problems.push(
        `${describeEdge(e)}: ${from} may import ${allowed.length ? allowed.join(', ') : 'no other group'}, not ${to} (docs/architecture.md, allowed imports)`,
      );
    }
  }
  return problems;
}

/**
 * Strongly connected components with more than one node (or a self-loop), each as one closed
 * path through its smallest member followed by any other members of the component.
 */
function cycles(
  edges: ReadonlyArray<{ from: string; to: string }>,
): Array<{ cycle: string[]; others: string[] }> {
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) {
    if (!next.has(from)) next.set(from, []);
    if (!next.has(to)) next.set(to, []);
    next.get(from)!.push(to);
  }
  // Tarjan's algorithm, iterative enough for a source tree.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v)!) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || next.get(v)!.includes(v)) components.push(component);
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) connect(v);
  // One concrete cycle per component, through its smallest member (breadth-first inside it).
  return components.map((component): { cycle: string[]; others: string[] } => {
    const members = new Set(component);
    const startNode = [...component].sort()[0]!;
    const previous = new Map<string, string>();
    const queue = [startNode];
    while (queue.length > 0) {
      const v = queue.shift()!;
      for (const w of next.get(v)!) {
        if (!members.has(w)) continue;
        if (w === startNode) {
          const path = [v];
          while (path[0] !== startNode) path.unshift(previous.get(path[0]!)!);
          return {
            cycle: [...path, startNode],
            others: component.filter((c) => !path.includes(c)).sort(),
          };
        }
        if (!previous.has(w)) {
          previous.set(w, v);
          queue.push(w);
        }
      }
    }
    return { cycle: [...component, component[0]!], others: [] };
  });
}

const rules = parseRules(readFileSync(DOC, 'utf8'));
const graph = importGraph();

describe('the allowed-imports table of docs/architecture.md', () => {
  it('names every group once, points at paths that exist, and lists only known groups', () => {
    const groups = rules.map((r) => r.group);
    expect(groups.length).toBeGreaterThan(5);
    expect(groups.filter((g, i) => groups.indexOf(g) !== i)).toEqual([]);
    const missing = rules.flatMap((r) =>
      r.paths
        .filter((p) =>
          p.endsWith('/') ? !graph.files.some((f) => f.startsWith(p)) : !graph.files.includes(p),
        )
        .map((p) => `${r.group}: ${p}`),
    );
    expect(missing).toEqual([]);
    const unknown = rules.flatMap((r) =>
      r.mayImport
        .filter((g) => !groups.includes(g))
        .map((g) => `${r.group} may import ${g}, which is no group`),
    );
    expect(unknown).toEqual([]);
  });

  it('places every source file of src/ in a group', () => {
    expect(graph.files.length).toBeGreaterThan(50);
    expect(graph.files.filter((f) => groupOf(rules, f) === undefined)).toEqual([]);
  });

  it('allows no cycle itself, so following it can never make one', () => {
    expect(
      cycles(rules.flatMap((r) => r.mayImport.map((to) => ({ from: r.group, to })))).map(
        ({ cycle }) => cycle.join(' → '),
      ),
    ).toEqual([]);
  });
});

describe('the import graph of src/', () => {
  it('finds the imports (a sanity floor: an empty graph would pass everything)', () => {
    expect(graph.edges.length).toBeGreaterThan(200);
    expect(graph.edges.some((e) => e.from === 'src/index.ts' && e.to === 'src/run/train.ts')).toBe(
      true,
    );
    expect(graph.edges.some((e) => e.typeOnly)).toBe(true);
  });

  it('resolves every relative import to a file in src/', () => {
    expect(graph.unresolved).toEqual([]);
  });

  it('(a) has only imports the table allows', () => {
    expect(disallowedImports(rules, graph.edges)).toEqual([]);
  });

  it('(b) has no cycle among folders', () => {
    const groupEdges = graph.edges
      .map((e) => ({
        from: groupOf(rules, e.from) ?? e.from,
        to: groupOf(rules, e.to) ?? e.to,
        edge: e,
      }))
      .filter((e) => e.from !== e.to);
    const found = cycles(groupEdges).map(({ cycle, others }) => {
      const witnesses = cycle
        .slice(1)
        .map((to, i) => groupEdges.find((e) => e.from === cycle[i] && e.to === to)!.edge);
      return `folder cycle ${cycle.join(' → ')}: ${witnesses.map(describeEdge).join('; ')}${others.length ? ` (also in the cycle: ${others.join(', ')})` : ''}`;
    });
    expect(found).toEqual([]);
  });

  it('(c) has no cycle among files', () => {
    const found = cycles(graph.edges).map(({ cycle, others }) => {
      const witnesses = cycle
        .slice(1)
        .map((to, i) => graph.edges.find((e) => e.from === cycle[i] && e.to === to)!);
      return `file cycle ${cycle.join(' → ')}: ${witnesses.map(describeEdge).join('; ')}${others.length ? ` (also in the cycle: ${others.join(', ')})` : ''}`;
    });
    expect(found).toEqual([]);
  });

  it('keeps src/index.ts, the public API, imported by nothing in src/', () => {
    expect(graph.edges.filter((e) => e.to === 'src/index.ts').map(describeEdge)).toEqual([]);
  });

  it('lets the browser dashboard import only types from src/metrics/ and no Node built-in', () => {
    const dashboard = graph.files.filter((f) => f.startsWith('src/dashboard/'));
    expect(dashboard.length).toBeGreaterThan(3);
    const outward = graph.edges.filter(
      (e) => e.from.startsWith('src/dashboard/') && !e.to.startsWith('src/dashboard/'),
    );
    expect(outward.length).toBeGreaterThan(0);
    const notMetricsTypes = outward
      .filter((e) => !e.typeOnly || !e.to.startsWith('src/metrics/'))
      .map(
        (e) =>
          `${describeEdge(e)}: the dashboard may import only types, and only from src/metrics/`,
      );
    const builtins = new Set(builtinModules);
    const nodeImports = dashboard.flatMap((f) =>
      importsIn(f, readFileSync(join(ROOT, f), 'utf8'))
        .filter((s) => s.specifier.startsWith('node:') || builtins.has(s.specifier.split('/')[0]!))
        .map((s) => `${f}:${s.line} imports ${s.specifier}: the dashboard runs in a browser`),
    );
    expect([...notMetricsTypes, ...nodeImports]).toEqual([]);
  });
});

describe('the checker itself', () => {
  const table = [
    '<!-- allowed-imports: parsed by test/architecture.test.ts -->',
    '| group | paths | holds | may import |',
    '|---|---|---|---|',
    '| `leaves` | `src/types.ts`, `src/errors.ts` | shared | – |',
    '| `low` | `src/low/` | bottom | `leaves` |',
    '| `high` | `src/high/` | top | `low`, `leaves` (types only) |',
  ].join('\n');
  const edge = (from: string, to: string, typeOnly = false): Edge => ({
    from,
    to,
    line: 1,
    typeOnly,
    kind: 'import',
  });

  it('parses groups, paths and allowed imports from backticked names only', () => {
    expect(parseRules(`# Title\n\nprose\n\n${table}\n\nafter`)).toEqual([
      { group: 'leaves', paths: ['src/types.ts', 'src/errors.ts'], mayImport: [] },
      { group: 'low', paths: ['src/low/'], mayImport: ['leaves'] },
      { group: 'high', paths: ['src/high/'], mayImport: ['low', 'leaves'] },
    ]);
    expect(() => parseRules('no table here')).toThrow(/marker/);
  });

  it('reports an upward import, type-only included, naming both files and the rule', () => {
    const parsed = parseRules(table);
    expect(
      disallowedImports(parsed, [
        edge('src/high/a.ts', 'src/low/b.ts'),
        edge('src/low/b.ts', 'src/types.ts'),
        edge('src/low/b.ts', 'src/low/c.ts'),
      ]),
    ).toEqual([]);
    expect(disallowedImports(parsed, [edge('src/low/b.ts', 'src/high/a.ts', true)])).toEqual([
      'src/low/b.ts:1 imports src/high/a.ts (type-only): low may import leaves, not high (docs/architecture.md, allowed imports)',
    ]);
    expect(disallowedImports(parsed, [edge('src/types.ts', 'src/low/b.ts')])[0]).toMatch(
      /leaves may import no other group, not low/,
    );
    expect(disallowedImports(parsed, [edge('src/stray.ts', 'src/types.ts')])[0]).toMatch(
      /src\/stray\.ts is in no group/,
    );
  });

  it('finds cycles and gives each as a closed path', () => {
    expect(cycles([edge('a', 'b'), edge('b', 'c')])).toEqual([]);
    expect(cycles([edge('a', 'b'), edge('b', 'c'), edge('c', 'a'), edge('c', 'd')])).toEqual([
      { cycle: ['a', 'b', 'c', 'a'], others: [] },
    ]);
    expect(cycles([edge('a', 'b'), edge('b', 'a'), edge('b', 'e'), edge('e', 'b')])).toEqual([
      { cycle: ['a', 'b', 'a'], others: ['e'] },
    ]);
    expect(cycles([edge('x', 'x')])).toEqual([{ cycle: ['x', 'x'], others: [] }]);
  });

  it('sees static, re-exported, type-only, dynamic and type-position imports', () => {
    const sites = importsIn(
      'x.ts',
      [
        "import { a } from './a.js';",
        "import type { B } from './b.js';",
        "import { type C, type D } from './c.js';",
        "import { type E, f } from './e.js';",
        "export { g } from './g.js';",
        "export type { H } from './h.js';",
        "const m = await import('./m.js');",
        "let t: typeof import('./t.js');",
        "import './side.js';",
        '/** @example import { z } from "./comment.js"; */',
      ].join('\n'),
    );
    expect(sites.map((s) => [s.specifier, s.typeOnly, s.kind])).toEqual([
      ['./a.js', false, 'import'],
      ['./b.js', true, 'import'],
      ['./c.js', true, 'import'],
      ['./e.js', false, 'import'],
      ['./g.js', false, 'export from'],
      ['./h.js', true, 'export from'],
      ['./m.js', false, 'dynamic import()'],
      ['./t.js', true, 'import() type'],
      ['./side.js', false, 'import'],
    ]);
  });
});
