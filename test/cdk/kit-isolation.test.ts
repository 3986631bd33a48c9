// Invariant 9 for the conformance kit: `sluice test-connector <pipeline>` against a pipeline that
// has synced into pgvector leaves that pipeline's tables, its saved state (in `_sluice_state` and
// in the state directory) and the database's schemas exactly as they were.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';

/** Every row of every table in `schema` (ordered), and the database's schema names. */
async function snapshot(db: pg.Client, schema: string): Promise<string> {
  const tables = (
    await db.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`, [
      schema,
    ])
  ).rows.map((r) => r.table_name);
  const out: Record<string, unknown> = {};
  for (const t of tables) {
    const { rows } = await db.query(`SELECT to_jsonb(x)::text AS row FROM "${schema}"."${t}" x ORDER BY 1`);
    out[t] = rows.map((r: { row: string }) => r.row);
  }
  return JSON.stringify(out);
}

/** The kit's sandbox schemas (sluice_conformance_<run>) and tables named like its test streams. */
async function kitLeftovers(db: pg.Client): Promise<string[]> {
  const { rows } = await db.query<{ nspname: string; relname: string | null }>(
    `SELECT n.nspname, c.relname FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname LIKE 'conformance\\_%'
      WHERE n.nspname LIKE 'sluice\\_conformance\\_%' OR c.relname IS NOT NULL ORDER BY 1, 2`,
  );
  return rows.map((r) => `${r.nspname}.${r.relname ?? ''}`);
}

/**
 * What the kit run left behind. Other test files run the kit against this shared database at the
 * same time, each in a sandbox of its own that it drops at its end: a name that was not there before
 * this run may be theirs, so it counts only if it is still there 30 s later (a kit run takes
 * seconds, and every run's sandbox has a new name).
 */
async function leftBehind(db: pg.Client, before: string[]): Promise<string[]> {
  let left = (await kitLeftovers(db)).filter((n) => !before.includes(n));
  for (const deadline = Date.now() + 30_000; left.length && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await kitLeftovers(db);
    left = left.filter((n) => now.includes(n));
  }
  return left;
}

/** Path and sha256 of every file under `dir`. */
function filesOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out[p.slice(dir.length)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

async function hasPgvector(db: pg.Client): Promise<boolean> {
  const { rowCount } = await db.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'vector'`);
  return !!rowCount;
}

for (const server of ['pglite', 'postgres'] as const) {
  describe(`sluice test-connector on a synced pgvector pipeline (${server})`, () => {
    const schema = `kit_isolation_${process.pid}`;
    let url: string;
    let db: pg.Client;
    let pgvector = true;
    let folder: string;
    let pipeline: string;
    beforeAll(async () => {
      url = server === 'pglite' ? inject('pgliteUrl') : inject('pgUrl');
      db = new pg.Client({ connectionString: url });
      await db.connect();
      pgvector = await hasPgvector(db);
      folder = tempDir('sluice-kit-isolation-');
      const write = corpusWriter(join(folder, 'corpus'));
      for (let i = 1; i <= 5; i++) write(`note-${i}`, 3);
      pipeline = filePipeline(folder, join(folder, 'corpus'), { type: 'pgvector', config: { url, schema } });
      if (pgvector) {
        const sync = await runCli(['sync', pipeline]);
        expect(sync.stderr).toBe('');
        expect(sync.code).toBe(0);
      } else {
        // No pgvector on this server: a pipeline's tables and state as a sync would have left them.
        await db.query(`CREATE SCHEMA "${schema}"`);
        await db.query(
          `CREATE TABLE "${schema}"._sluice_state (connection text PRIMARY KEY, state jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
        );
        await db.query(`INSERT INTO "${schema}"._sluice_state VALUES ('e2e', '{"streams":{"docs":{"cursor":"x"}}}', now())`);
        await db.query(`CREATE TABLE "${schema}".docs (id text PRIMARY KEY, content text)`);
        await db.query(`INSERT INTO "${schema}".docs VALUES ('a#0', 'kept as it is')`);
      }
    });
    afterAll(async () => {
      await db?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
      await db?.end();
    });

    it(
      'leaves the pipeline’s tables, saved state and the database’s schemas byte-for-byte as they were',
      { timeout: 180_000 },
      async () => {
        const before = await snapshot(db, schema);
        const kitBefore = await kitLeftovers(db);
        const stateBefore = filesOf(join(folder, '.sluice'));
        const state = await db.query(`SELECT state::text FROM "${schema}"._sluice_state WHERE connection = 'e2e'`);
        expect(state.rows).toHaveLength(1);

        const r = await runCli(['test-connector', pipeline, '--side', 'both', '--strict']);
        if (pgvector) {
          expect(r.stdout).toMatch(/destination pgvector: PASSED/);
          expect(r.stdout).toMatch(/source file: PASSED/);
          expect(r.stdout).toMatch(/\d+ passed, 0 failed, 0 skipped/);
          expect(r.code).toBe(0);
        } else {
          // The kit fails (no pgvector to write with) but still touches nothing.
          expect(r.stdout).toMatch(/destination pgvector: FAILED/);
          expect(r.code).toBe(1);
        }
        expect(await snapshot(db, schema)).toBe(before);
        expect(filesOf(join(folder, '.sluice'))).toEqual(stateBefore);
        // No sandbox schema or test-stream table of this run is left behind.
        expect(await leftBehind(db, kitBefore)).toEqual([]);

        if (pgvector) {
          // The next sync finds its state: nothing is re-read or re-embedded.
          const again = await runCli(['sync', pipeline, '--json']);
          expect(again.code).toBe(0);
          const summary = JSON.parse(again.stdout) as { streams?: Record<string, { records_read: number }> } & Record<string, unknown>;
          expect(JSON.stringify(summary)).toMatch(/"records_read":0/);
        }
      },
    );
  });
}
