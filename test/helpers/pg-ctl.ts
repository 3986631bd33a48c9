// A PostgreSQL cluster of a test's own (scripts/postgres-test-server.ts), for tests that restart
// or stop it, and pg_ctl on it: run as the `postgres` OS user when we are root (as startPostgres
// does, since the data dir belongs to that user).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { startPostgres, type PostgresServer } from '../../scripts/postgres-test-server.ts';

/**
 * Starts a cluster before the block's tests (then runs `setupSql` on it, e.g. `CREATE EXTENSION
 * vector`) and stops it after; the returned server is usable inside hooks and tests.
 */
export function useOwnPostgres(setupSql?: string): PostgresServer {
  let server: PostgresServer | undefined;
  beforeAll(async () => {
    server = await startPostgres();
    if (!setupSql) return;
    const c = new pg.Client({ connectionString: server.url });
    await c.connect();
    try {
      await c.query(setupSql);
    } finally {
      await c.end();
    }
  });
  afterAll(async () => {
    await server?.stop();
  });
  const started = (): PostgresServer => {
    if (!server) throw new Error('useOwnPostgres: the cluster is used before its beforeAll hook started it');
    return server;
  };
  return {
    get url() {
      return started().url;
    },
    get port() {
      return started().port;
    },
    get dataDir() {
      return started().dataDir;
    },
    get bin() {
      return started().bin;
    },
    stop: () => started().stop(),
  };
}

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
