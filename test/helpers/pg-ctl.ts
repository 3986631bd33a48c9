// pg_ctl on a test cluster started by scripts/postgres-test-server.ts: run as the `postgres` OS
// user when we are root (as startPostgres does, since the data dir belongs to that user).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { PostgresServer } from '../../scripts/postgres-test-server.ts';

/** `pg_ctl -D <data> -l <log> -w -t 60 <args>` on the cluster; the test fails with pg_ctl's stderr if it does not exit 0. */
export function pgCtl(server: PostgresServer, ...args: string[]): void {
  const cmd = join(server.bin, 'pg_ctl');
  const full = ['-D', join(server.dataDir, 'data'), '-l', join(server.dataDir, 'server.log'), '-w', '-t', '60', ...args];
  const r =
    process.getuid?.() === 0
      ? spawnSync('runuser', ['-u', 'postgres', '--', cmd, ...full], { encoding: 'utf8' })
      : spawnSync(cmd, full, { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
}

/** `pg_ctl restart -m <mode>`: waits until the cluster accepts connections again. */
export function restartPostgres(server: PostgresServer, mode: 'fast' | 'immediate'): void {
  pgCtl(server, '-m', mode, 'restart');
}
