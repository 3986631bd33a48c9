// Cold start of the installed command: `sluice --version` from the build (dist/, as the published
// package runs it) next to `node -e 0` on the same machine in the same run; the ratio is what
// to compare across machines. Budget: well under 300 ms. Builds dist/ first when it is missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const RUNS = Number(process.env.SLUICE_BENCH_STARTUP_RUNS ?? 15);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function timeCommand(args: string[], env: NodeJS.ProcessEnv): number {
  const times: number[] = [];
  for (let i = 0; i < RUNS + 1; i++) {
    const started = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr}`);
    if (i > 0) times.push(ms); // the first run warms the file system cache
  }
  return median(times);
}

export default async function startup(): Promise<Record<string, unknown>> {
  if (!existsSync(join(ROOT, 'dist/src/cli/main.js'))) {
    const built = spawnSync(process.execPath, [join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: 'inherit' });
    if (built.status !== 0) throw new Error('npm run build failed');
  }
  const env = { ...process.env, SLUICE_RUN_BUILD: '1' };
  const nodeMs = timeCommand(['-e', '0'], env);
  const sluiceMs = timeCommand([join(ROOT, 'bin/sluice.js'), '--version'], env);
  return {
    runs: RUNS,
    node: process.version,
    'node -e 0 (ms, median)': Math.round(nodeMs),
    'sluice --version (ms, median)': Math.round(sluiceMs),
    'ratio sluice/node': Number((sluiceMs / nodeMs).toFixed(2)),
    'budget (ms)': 300,
    within_budget: sluiceMs < 300,
  };
}
