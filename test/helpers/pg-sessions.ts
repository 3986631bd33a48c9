// Counting one test's own PostgreSQL sessions: the test's URL carries its own application_name
// (a URL's application_name wins over the one pg sets), so other suites' sessions on the shared
// server are not counted.
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';

/** `url` with `application_name` set to `name`. */
export function urlNamed(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.set('application_name', name);
  return u.toString();
}

export function sessionCounter(admin: () => pg.Client, name: string) {
  const sessions = async (): Promise<number> =>
    (
      await admin().query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`,
        [name],
      )
    ).rows[0].n;
  /** Waits up to ~1 s for the count to become `n` (a closed session leaves pg_stat_activity shortly after); returns the count. */
  const settle = async (n: number): Promise<number> => {
    for (let i = 0; i < 50 && (await sessions()) !== n; i++) await sleep(20);
    return sessions();
  };
  /** Ends every session of this test from the server side, as a restart or an idle timeout would. */
  const terminate = async (): Promise<void> => {
    await admin().query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`,
      [name],
    );
  };
  return { sessions, settle, terminate };
}
