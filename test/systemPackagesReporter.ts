// Lists the tests skipped for a missing Debian package (test/systemPackages.ts): one line per file
// as it finishes, and a summary at the end of the run (each test's note is in the verbose report). A reporter, because it runs in the main
// process and receives every test's skip note from the forked workers: no files to share.
import type { Reporter, TestModule } from 'vitest/node';
import { MISSING_PACKAGE_NOTE, REQUIRE_VARIABLE } from './systemPackages.js';

interface PackageSkip {
  readonly file: string;
  readonly note: string;
}

function packageSkipsOf(module: TestModule): PackageSkip[] {
  const skips: PackageSkip[] = [];
  for (const test of module.children.allTests()) {
    const result = test.result();
    if (result.state === 'skipped' && result.note?.startsWith(MISSING_PACKAGE_NOTE))
      skips.push({ file: module.relativeModuleId, note: result.note });
  }
  return skips;
}

/** Groups by note (one per package), in first-seen order. */
function byNote(skips: readonly PackageSkip[]): Map<string, PackageSkip[]> {
  const groups = new Map<string, PackageSkip[]>();
  for (const skip of skips) groups.set(skip.note, [...(groups.get(skip.note) ?? []), skip]);
  return groups;
}

const tests = (n: number): string => `${n} test${n === 1 ? '' : 's'}`;

export default class SystemPackagesReporter implements Reporter {
  private log: (line: string) => void = (line) => console.log(line);

  onInit(vitest: { logger: { log(...args: unknown[]): void } }): void {
    // Through vitest's logger, so the line does not tear the live summary on a terminal.
    this.log = (line) => vitest.logger.log(line);
  }

  onTestModuleEnd(module: TestModule): void {
    for (const [note, skips] of byNote(packageSkipsOf(module)))
      this.log(` ↓ ${module.relativeModuleId}: ${tests(skips.length)} skipped: ${note}`);
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const groups = byNote(modules.flatMap(packageSkipsOf));
    if (groups.size === 0) return;
    const total = [...groups.values()].reduce((n, skips) => n + skips.length, 0);
    const lines = [
      ``,
      `Skipped for missing Debian packages: ${tests(total)} (${REQUIRE_VARIABLE}=1 makes them failures)`,
    ];
    for (const [note, skips] of groups) {
      const perFile = new Map<string, number>();
      for (const skip of skips) perFile.set(skip.file, (perFile.get(skip.file) ?? 0) + 1);
      lines.push(
        `  ${note}: ${tests(skips.length)}`,
        `    in ${[...perFile].map(([file, n]) => `${file} (${n})`).join(', ')}`,
      );
    }
    this.log(lines.join('\n'));
  }
}
