// Native pgvector on the test PostgreSQL 15 (scripts/install-system-deps.sh builds it from the
// vendored archive). The global setup calls this once: when the extension is installed in the
// server, it creates a database `sluice_pgvector` with the extension created, for the pgvector
// tests that run against a real server; otherwise it returns why not, so those tests are reported
// as not run with that reason (and fail under SLUICE_REQUIRE_PGVECTOR=1, as in CI).
import pg from 'pg';

export type NativePgvector = { url: string; version: string } | { reason: string };

export const NATIVE_PGVECTOR_DATABASE = 'sluice_pgvector';

export async function prepareNativePgvector(superuserUrl: string): Promise<NativePgvector> {
  const admin = new pg.Client({ connectionString: superuserUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ v: string | null }>(
      `SELECT default_version AS v FROM pg_available_extensions WHERE name = 'vector'`,
    );
    if (!rows[0]?.v) {
      const { rows: ver } = await admin.query<{ server_version: string }>('SHOW server_version');
      return {
        reason: `pgvector is not installed in the test PostgreSQL ${ver[0].server_version} (run scripts/install-system-deps.sh with ../shared/vendor/pgvector-0.8.6.tar.gz beside the repo)`,
      };
    }
    await admin.query(`CREATE DATABASE ${NATIVE_PGVECTOR_DATABASE}`);
  } finally {
    await admin.end();
  }
  const url = new URL(superuserUrl);
  url.pathname = `/${NATIVE_PGVECTOR_DATABASE}`;
  const db = new pg.Client({ connectionString: url.toString() });
  await db.connect();
  try {
    await db.query('CREATE EXTENSION vector');
    const { rows } = await db.query<{ v: string }>(`SELECT extversion AS v FROM pg_extension WHERE extname = 'vector'`);
    return { url: url.toString(), version: rows[0].v };
  } finally {
    await db.end();
  }
}
