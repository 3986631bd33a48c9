// The source PostgreSQL (a cluster of this test's own) restarted with `pg_ctl restart -m fast` and
// `-m immediate` while sluice reads from it — mid full refresh, mid incremental, mid CDC — and
// the walsender terminated (pg_terminate_backend) mid CDC stream. Each time: the run fails in
// words (or finishes, if it was done first), and a plain re-run ends with exactly the documents of
// a clean run over the same table: none lost, none stale, none twice, chunk indexes contiguous.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { documents } from '../helpers/exact.ts';
import { restartPostgres, useOwnPostgres } from '../helpers/pg-ctl.ts';

const server = useOwnPostgres('CREATE DATABASE restarts');
let url: string;
beforeAll(() => {
  url = server.url.replace(/\/postgres$/, '/restarts');
});

async function sql(target: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  for (let attempt = 0; ; attempt++) {
    const c = new pg.Client({ connectionString: target });
    try {
      await c.connect();
      return await c.query(text, params);
    } catch (err) {
      // Right after a restart the server may still be starting up.
      if (attempt < 50 && /starting up|ECONNREFUSED|terminat|shut ?down|recovery/i.test(String(err))) {
        await sleep(200);
        continue;
      }
      throw err;
    } finally {
      await c.end().catch(() => {});
    }
  }
}

type Mode = 'full_refresh' | 'incremental' | 'cdc';
const streamLine: Record<Mode, string> = {
  full_refresh: 'sync_mode: full_refresh, destination_sync_mode: overwrite',
  incremental: 'sync_mode: incremental, cursor_field: updated, destination_sync_mode: append_dedup',
  cdc: 'sync_mode: cdc, destination_sync_mode: append_dedup',
};
const pipeline = (name: string, table: string, mode: Mode) => `version: 1
connections:
  - name: ${name}
    source: { type: postgres, config: { url: "${url}", batch_size: 500 } }
    destination: { type: jsonl, config: { path: ./out.jsonl, include_embeddings: false, batch_records: 500 } }
    processing: { text_fields: [title, body], chunk_size: 700, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: ${table}, ${streamLine[mode]} } ]
`;

const ROWS = 20_000;
const fill = (table: string, from: number, to: number) =>
  sql(
    url,
    `INSERT INTO ${table} SELECT g, 'Title ' || g, 'row ' || g || ' ' || repeat('carries a body of about a kilobyte ', 30), g FROM generate_series($1::int, $2::int) g`,
    [from, to],
  );

/** Starts a sync and, once it is writing, applies `fault`; returns the run's result. */
async function syncWithFault(dir: string, fault: () => Promise<void> | void) {
  // What the destination wrote: the file, plus the staged generation of an overwrite stream.
  const written = () =>
    readdirSync(dir)
      .filter((f) => f.startsWith('out.jsonl'))
      .reduce((n, f) => n + (statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0), 0);
  const before = written();
  const run = startCli(['sync', 'p.yaml', '--json'], { cwd: dir });
  // Mid-read: the sync is writing and its source session is still connected to the database.
  const reading = async () =>
    (
      await sql(
        server.url,
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = 'restarts' AND pid <> pg_backend_pid() AND backend_type IN ('client backend', 'walsender')`,
      )
    ).rows[0].n > 0;
  for (let i = 0; i < 6000 && run.child.exitCode === null; i++) {
    if (written() > before && (await reading())) break;
    await sleep(10);
  }
  const midRun = run.child.exitCode === null && (await reading());
  await fault();
  const res = await run.done;
  expect(res.stderr).not.toMatch(STACK_LINE);
  if (res.code !== 0) {
    const err = JSON.parse(res.stdout).connections[0].error;
    expect(err.message).toMatch(/terminat|connection|ECONNRESET|ECONNREFUSED|shut ?down|closed|recovery|starting up|replication stream/i);
    expect(err.message).not.toMatch(/undefined|\[object Object\]/);
  }
  return { res, midRun };
}

/** Re-run until done (a restart may also hit the re-run's first connection), then compare with a clean run. */
async function expectExactAfterRerun(dir: string, table: string, mode: Mode) {
  let again = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
  for (let i = 0; i < 3 && again.code !== 0; i++) again = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
  expect(again.code, again.stdout + again.stderr).toBe(0);
  const clean = tempDir(`restart-clean-${table}-`);
  writeFiles(clean, { 'p.yaml': pipeline(`clean_${table}`, table, 'full_refresh') });
  expect((await runCli(['sync', 'p.yaml'], { cwd: clean })).code).toBe(0);
  const got = documents(join(dir, 'out.jsonl'));
  const want = documents(join(clean, 'out.jsonl'));
  expect(got.size).toBe(want.size);
  expect(got).toEqual(want);
  process.stdout.write(`[soak] ${table} (${mode}): exact after the re-run, ${got.size} documents\n`);
}

describe('source PostgreSQL restarted mid-read', () => {
  for (const mode of ['full_refresh', 'incremental', 'cdc'] as const) {
    for (const how of ['fast', 'immediate'] as const) {
      it(`pg_ctl restart -m ${how} mid ${mode}: a clear failure, and a plain re-run is exact`, { timeout: 600_000 }, async () => {
        const table = `${mode}_${how}`;
        await sql(url, `CREATE TABLE ${table} (id int PRIMARY KEY, title text, body text, updated int)`);
        const dir = tempDir(`restart-${table}-`);
        writeFiles(dir, { 'p.yaml': pipeline(`c_${table}`, table, mode) });
        if (mode === 'full_refresh') await fill(table, 1, ROWS);
        else {
          // A first run reads (or snapshots) a little; the fault hits the next run's bulk.
          await fill(table, 1, 100);
          expect((await runCli(['sync', 'p.yaml'], { cwd: dir })).code).toBe(0);
          await fill(table, 101, ROWS);
          await sql(url, `UPDATE ${table} SET body = body || ' (changed)', updated = updated + ${ROWS} WHERE id % 97 = 0`);
          // Incremental reads cannot see deletions (docs/postgres.md); CDC must apply them.
          if (mode === 'cdc') await sql(url, `DELETE FROM ${table} WHERE id % 89 = 0`);
        }
        const { res, midRun } = await syncWithFault(dir, () => restartPostgres(server, how));
        expect(midRun, 'the restart hit a running sync').toBe(true);
        process.stdout.write(`[soak] restart -m ${how} mid ${mode}: run exit ${res.code}\n`);
        await expectExactAfterRerun(dir, table, mode);
        if (mode !== 'full_refresh') {
          // And it goes on: later changes arrive exactly once.
          await sql(url, `UPDATE ${table} SET body = 'after the restart', updated = updated + ${2 * ROWS} WHERE id % 50 = 0`);
          await expectExactAfterRerun(dir, table, mode);
        }
      });
    }
  }

  it(
    'the walsender terminated (pg_terminate_backend) mid CDC stream: a clear failure, and a plain re-run is exact',
    { timeout: 600_000 },
    async () => {
      const table = 'walsender_kill';
      await sql(url, `CREATE TABLE ${table} (id int PRIMARY KEY, title text, body text, updated int)`);
      await fill(table, 1, 100);
      const dir = tempDir('restart-walsender-');
      writeFiles(dir, { 'p.yaml': pipeline('c_walsender', table, 'cdc') });
      expect((await runCli(['sync', 'p.yaml'], { cwd: dir })).code).toBe(0);
      await fill(table, 101, ROWS);
      let killed = 0;
      const { res, midRun } = await syncWithFault(dir, async () => {
        const r = await sql(url, 'SELECT pg_terminate_backend(pid) FROM pg_stat_replication');
        killed = r.rowCount ?? 0;
      });
      expect(midRun).toBe(true);
      expect(killed).toBeGreaterThan(0);
      expect(res.code).not.toBe(0);
      const err = JSON.parse(res.stdout).connections[0].error;
      expect(err.message).toMatch(/^CDC on slot "sluice_c_walsender_[0-9a-f]{8}" failed: |^the server ended the replication stream/);
      expect(err.hint).toMatch(/run the sync again[:;] it resumes from the last committed state/);
      process.stdout.write(`[soak] walsender terminated mid CDC: run exit ${res.code}: ${err.message}\n`);
      await expectExactAfterRerun(dir, table, 'cdc');
    },
  );
});
