// sluice as an installed package, without npm: the build (scripts/build.mjs) in a temporary
// directory laid out like node_modules/sluice (package.json, bin/, dist/, specs/), its
// dependencies linked to the repository's. Projects get it through node_modules/sluice.
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO, tempDir } from './cli.ts';

const run = promisify(execFile);

let built: Promise<string> | undefined;

/** Builds sluice once per test file; resolves to the package directory. */
export function builtPackage(): Promise<string> {
  built ??= (async () => {
    const pkg = join(tempDir('sluice-package-'), 'sluice');
    mkdirSync(pkg, { recursive: true });
    await run(process.execPath, [join(REPO, 'scripts/build.mjs'), join(pkg, 'dist')], { cwd: REPO, timeout: 600_000 });
    cpSync(join(REPO, 'package.json'), join(pkg, 'package.json'));
    cpSync(join(REPO, 'bin'), join(pkg, 'bin'), { recursive: true });
    cpSync(join(REPO, 'specs'), join(pkg, 'specs'), { recursive: true });
    symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'), 'dir');
    return pkg;
  })();
  return built;
}

/** Makes `sluice` (and the given packages from the repository's node_modules) installed in `project`. */
export function installInto(project: string, pkg: string, alsoFromRepo: string[] = []): void {
  mkdirSync(join(project, 'node_modules/.bin'), { recursive: true });
  symlinkSync(pkg, join(project, 'node_modules/sluice'), 'dir');
  for (const name of alsoFromRepo) {
    mkdirSync(join(project, 'node_modules', name, '..'), { recursive: true });
    symlinkSync(join(REPO, 'node_modules', name), join(project, 'node_modules', name), 'dir');
  }
}

/** The installed package's `sluice` command. */
export const sluiceBin = (pkg: string) => join(pkg, 'bin/sluice.js');

/** Runs the installed package's `sluice` in `cwd`, as `npx sluice …` would. */
export async function runInstalled(pkg: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [sluiceBin(pkg), ...args], {
      cwd,
      env: { ...process.env, SLUICE_LOG_LEVEL: 'warn', NO_COLOR: '1' },
      timeout: 300_000,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
