// State whose data is gone is never trusted: after the chunk table is dropped by hand, emptied, or
// `table:` points at a new table, the next sync re-reads the stream from scratch instead of
// "succeeding" with 0 rows because the saved state says it is caught up. File source (incremental)
// and PostgreSQL CDC (the dropped stream is re-snapshotted, the other streams keep streaming).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { runCli, tempDir } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';
import { describeOnPgvectorBackends } from '../helpers/pgvector-backends.ts';

let admin: pg.Client;
const count = async (schema: string, table: string) =>
  (await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${qualified(schema, table)}`)).rows[0].n;

async function sync(yaml: string) {
  const r = await runCli(['sync', yaml, '--json']);
  expect(r.code, r.stderr + r.stdout).toBe(0);
  return { summary: JSON.parse(r.stdout), stderr: r.stderr };
}

describeOnPgvectorBackends('state whose data is gone', (backend) => {
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  it(
    'file source: a dropped, emptied or renamed table is re-read from scratch, never left empty with exit 0',
    { timeout: 240_000 },
    async () => {
      const dir = tempDir('vanished-');
      const write = corpusWriter(join(dir, 'corpus'));
      for (let i = 0; i < 12; i++) write(`doc${i}`, 3);
      const schema = `vanish_${Math.random().toString(36).slice(2, 8)}`;
      const dest = (table?: string) => ({ type: 'pgvector', config: { url: backend.url, schema, ...(table ? { table } : {}) } });
      const yaml = filePipeline(dir, join(dir, 'corpus'), dest());
      const first = await sync(yaml);
      expect(first.summary.connections[0].streams.docs.records_read).toBe(12);
      const full = await count(schema, 'docs');
      expect(full).toBeGreaterThan(12);
      expect((await sync(yaml)).summary.connections[0].streams.docs.records_read).toBe(0); // caught up: nothing to do

      await admin.query(`DROP TABLE ${qualified(schema, 'docs')}`);
      const afterDrop = await sync(yaml);
      expect(afterDrop.summary.connections[0].streams.docs.records_read).toBe(12);
      expect(afterDrop.stderr).toMatch(/stream docs: the destination has no data for this stream .* re-reading the stream from scratch/);
      expect(await count(schema, 'docs')).toBe(full);

      // Emptied (e.g. a run that created the table and died before its first commit, or a TRUNCATE).
      await admin.query(`TRUNCATE ${qualified(schema, 'docs')}`);
      expect((await sync(yaml)).summary.connections[0].streams.docs.records_read).toBe(12);
      expect(await count(schema, 'docs')).toBe(full);

      // `table:` changed to a new table: the state (kept per connection) must not skip it.
      filePipeline(dir, join(dir, 'corpus'), dest('docs_v2'));
      expect((await sync(yaml)).summary.connections[0].streams.docs.records_read).toBe(12);
      expect(await count(schema, 'docs_v2')).toBe(full);
      // and the stream is caught up again afterwards
      expect((await sync(yaml)).summary.connections[0].streams.docs.records_read).toBe(0);
    },
  );

  it(
    'CDC: the dropped stream is re-snapshotted, the other stream goes on streaming from the saved position',
    { timeout: 240_000 },
    async () => {
      const tag = Math.random().toString(36).slice(2, 8);
      const srcUrl = await createDatabase(inject('pgUrl'), `vanish_src_${tag}`);
      await sql(
        srcUrl,
        `CREATE TABLE a (id int PRIMARY KEY, body text); CREATE TABLE b (id int PRIMARY KEY, body text);
       INSERT INTO a SELECT g, 'alpha ' || g FROM generate_series(1, 20) g;
       INSERT INTO b SELECT g, 'bravo ' || g FROM generate_series(1, 15) g;`,
      );
      const dir = tempDir('vanished-cdc-');
      const schema = `vanish_cdc_${tag}`;
      const yaml = join(dir, 'pipeline.yaml');
      writeFileSync(
        yaml,
        stringify({
          version: 1,
          connections: [
            {
              name: `cdc_${tag}`,
              source: { type: 'postgres', config: { url: srcUrl } },
              destination: { type: 'pgvector', config: { url: backend.url, schema, index: 'none' } },
              embedding: { provider: 'hash', dimensions: 8 },
              streams: [
                { name: 'a', sync_mode: 'cdc', destination_sync_mode: 'append_dedup' },
                { name: 'b', sync_mode: 'cdc', destination_sync_mode: 'append_dedup' },
              ],
            },
          ],
        }),
      );
      const first = await sync(yaml);
      const streamNames = Object.keys(first.summary.connections[0].streams);
      expect(streamNames.sort()).toEqual(['a', 'b']);
      const tableA = 'a';
      const tableB = 'b';
      expect(await count(schema, tableA)).toBe(20);
      expect(await count(schema, tableB)).toBe(15);

      await admin.query(`DROP TABLE ${qualified(schema, tableA)}`);
      await sql(srcUrl, `INSERT INTO b VALUES (16, 'bravo 16'); UPDATE a SET body = 'alpha one' WHERE id = 1`);
      const again = await sync(yaml);
      const s = again.summary.connections[0].streams;
      expect(s.a.records_read).toBe(20 + 1); // the snapshot, then the replayed update
      expect(s.b.records_read).toBe(1); // only the new change
      expect(await count(schema, tableA)).toBe(20);
      expect(await count(schema, tableB)).toBe(16);
      const one = await admin.query(`SELECT content FROM ${qualified(schema, tableA)} WHERE document_id = '1'`);
      expect(one.rows[0].content).toMatch(/alpha one/);
    },
  );
});
