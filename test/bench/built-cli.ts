// The benches run sluice as a user does: the built package (dist/, `node bin/sluice.js` with
// SLUICE_RUN_BUILD=1), not the checkout's TypeScript through tsx (which transpiles on every start).
// dist/ is built first when it is missing or older than a source file (`npm run build`, which
// writes only dist/ in this checkout), and the report says which.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Newest modification time of the sources the build compiles or copies (src/, connectors/, scripts/build.mjs). */
function newestSource(root: string): number {
  let newest = statSync(join(root, 'scripts', 'build.mjs')).mtimeMs;
  for (const top of ['src', 'connectors']) {
    for (const e of readdirSync(join(root, top), { recursive: true, withFileTypes: true })) {
      if (!e.isFile() || !/\.(ts|mts|mjs|cjs|json)$/.test(e.name) || /\.test\./.test(e.name)) continue;
      newest = Math.max(newest, statSync(join(e.parentPath, e.name)).mtimeMs);
    }
  }
  return newest;
}

export interface BuiltCli {
  /** argv after `node`: the command's entry point. */
  entry: string;
  /** Environment that makes bin/sluice.js run dist/ even in a checkout. */
  env: NodeJS.ProcessEnv;
  /** For the report: how the CLI was run and whether dist/ was built now. */
  how: string;
}

export function builtCli(root: string): BuiltCli {
  const main = join(root, 'dist', 'src', 'cli', 'main.js');
  let how = 'built package (dist/, node bin/sluice.js with SLUICE_RUN_BUILD=1)';
  const stale = !existsSync(main) ? 'missing' : statSync(main).mtimeMs < newestSource(root) ? 'older than the sources' : undefined;
  if (stale) {
    process.stderr.write(`bench: dist/ is ${stale}: running npm run build first\n`);
    const built = spawnSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    if (built.status !== 0) throw new Error('npm run build failed');
    how += `; dist/ was ${stale}, built now`;
  } else how += '; dist/ up to date, reused';
  return { entry: join(root, 'bin', 'sluice.js'), env: { ...process.env, SLUICE_RUN_BUILD: '1' }, how };
}
