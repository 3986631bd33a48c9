// Document fingerprints end to end through the CLI: a PostgreSQL table (full refresh) → chunks →
// the OpenAI-compatible fixture (counting requests) → pgvector, on PGlite and on native
// PostgreSQL + pgvector. An unchanged re-sync embeds and writes nothing (server statistics and the
// table's OID say so, for append_dedup and for overwrite); a title change (metadata only) updates
// the stored metadata with 0 embedding requests; a body change re-embeds that document alone; a
// row deleted at the source is swept.
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { describeOnPgvectorBackends } from '../../test/helpers/pgvector-backends.ts';
import { runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import { startOpenAIServer, type OpenAIServer } from '../../test/fixtures/openai-server.ts';
import { createDatabase, sql } from '../source-postgres/test/helpers.ts';
import { qualified } from './sql.ts';

const ROWS = 60;
const KEY = 'sk-fp-e2e-secret-0000';
let openai: OpenAIServer;
let sourceUrl: string;

beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 1 });
  sourceUrl = await createDatabase(inject('pgUrl'), 'fp_e2e_src');
});
afterAll(async () => {
  await openai?.close();
});

const pipeline = (url: string, schema: string) => `version: 1
connections:
  - name: kb
    source: { type: postgres, config: { url: "\${SOURCE_DB_URL}", include: [articles, pages] } }
    destination: { type: pgvector, config: { url: "${url}", schema: ${schema}, batch_rows: 40 } }
    embedding: { provider: openai, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: 16, batch_size: 16 }
    processing: { text_fields: [body], metadata_fields: [title], chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }
    streams:
      - { name: articles, sync_mode: full_refresh, destination_sync_mode: append_dedup }
      - { name: pages, sync_mode: full_refresh, destination_sync_mode: overwrite }
`;

type Stats = Record<string, number>;

describeOnPgvectorBackends('pgvector fingerprints end to end', (backend) => {
  let admin: pg.Client;
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  it('unchanged: 0 requests, 0 rows; metadata only: 0 requests, rows updated in place; one body: that document alone; deleted: swept', async () => {
    const schema = `fpe_${backend.name}`;
    for (const t of ['articles', 'pages']) {
      await sql(sourceUrl, `DROP TABLE IF EXISTS ${t}`);
      await sql(sourceUrl, `CREATE TABLE ${t} (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL)`);
      await sql(
        sourceUrl,
        `INSERT INTO ${t} SELECT i, 'Title ' || i, 'Row ' || i || ' of ${t} explains how valve ' || i || ' regulates the flow into basin ' || (i % 7) || '. It also covers the pressure gauge and its calibration.'
           FROM generate_series(1, ${ROWS}) i`,
      );
    }
    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline(backend.url, schema) });
    const sync = async (): Promise<Record<string, Stats>> => {
      const r = await runCli(['sync', join(dir, 'p.yaml'), '--json'], {
        cwd: dir,
        env: { SOURCE_DB_URL: sourceUrl, TEST_OPENAI_KEY: KEY },
      });
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(r.stdout + r.stderr).not.toContain(KEY);
      // Look-ups and commits share the writer's connection without piling queries up on it (pg
      // warns about that, and pg@9 will refuse it).
      expect(r.stderr).not.toContain('DeprecationWarning');
      return (JSON.parse(r.stdout) as { connections: Array<{ streams: Record<string, Stats> }> }).connections[0].streams;
    };
    const stats = async (table: string) => {
      // Statistics reach the view when the writing backend flushes them (at its exit, or soon after).
      await admin.query('SELECT pg_stat_force_next_flush()');
      await new Promise((r) => setTimeout(r, 1200));
      await admin.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await admin.query<{ w: string }>(
        `SELECT n_tup_ins + n_tup_upd + n_tup_del AS w FROM pg_stat_user_tables WHERE relid = to_regclass($1)`,
        [qualified(schema, table)],
      );
      return Number(rows[0]?.w ?? 0);
    };
    const oid = async (table: string) =>
      (await admin.query<{ o: number }>('SELECT to_regclass($1)::oid::int AS o', [qualified(schema, table)])).rows[0].o;
    const rowsOf = async (table: string) =>
      (
        await admin.query<{ id: string; document_id: string; metadata: { title: string }; embedding: string; content: string }>(
          `SELECT id, document_id, metadata, embedding::text AS embedding, content FROM ${qualified(schema, table)} ORDER BY id`,
        )
      ).rows;

    const first = await sync();
    expect(first.articles.records_read).toBe(ROWS);
    const chunks = first.articles.chunks_written;
    expect(chunks).toBeGreaterThan(ROWS);
    const before = await rowsOf('articles');
    expect(before).toHaveLength(chunks);
    const writes0 = await stats('articles');
    const pagesOid = await oid('pages');
    const pagesBefore = await rowsOf('pages');

    // Unchanged re-sync: nothing embedded, nothing written, the overwrite table kept as it is.
    const requests0 = openai.stats.requests;
    const unchanged = await sync();
    expect(openai.stats.requests).toBe(requests0);
    expect(unchanged.articles).toMatchObject({ records_read: ROWS, records_unchanged: ROWS, chunks_written: 0, chunks_deleted: 0 });
    expect(unchanged.pages).toMatchObject({ records_read: ROWS, records_unchanged: ROWS, chunks_written: 0 });
    expect(await stats('articles')).toBe(writes0);
    expect(await oid('pages')).toBe(pagesOid);
    expect(await rowsOf('pages')).toEqual(pagesBefore);

    // A title is metadata: its chunks get the new title, their vectors stay, nothing is embedded.
    await sql(sourceUrl, `UPDATE articles SET title = 'Renamed 7' WHERE id = 7`);
    await sql(sourceUrl, `UPDATE pages SET title = 'Renamed 8' WHERE id = 8`);
    const meta = await sync();
    expect(openai.stats.requests).toBe(requests0);
    expect(meta.articles).toMatchObject({ records_metadata_updated: 1, records_unchanged: ROWS - 1 });
    expect(meta.pages).toMatchObject({ records_metadata_updated: 1, records_unchanged: ROWS - 1 });
    const afterMeta = await rowsOf('articles');
    const seven = afterMeta.filter((r) => r.document_id === '7');
    expect(seven.length).toBeGreaterThan(0);
    expect(seven.every((r) => r.metadata.title === 'Renamed 7')).toBe(true);
    expect(afterMeta.map(({ metadata: _m, ...r }) => r)).toEqual(before.map(({ metadata: _m, ...r }) => r));
    expect(await stats('articles')).toBe(writes0 + seven.length);
    const pagesEight = (await rowsOf('pages')).filter((r) => r.document_id === '8');
    expect(pagesEight.every((r) => r.metadata.title === 'Renamed 8')).toBe(true);
    expect(pagesEight.map((r) => r.embedding)).toEqual(pagesBefore.filter((r) => r.document_id === '8').map((r) => r.embedding));

    // One body changes and one row goes: that document is embedded and written, the other swept.
    await sql(sourceUrl, `UPDATE articles SET body = 'A wholly new text for row nine.' WHERE id = 9`);
    await sql(sourceUrl, `DELETE FROM articles WHERE id = 11`);
    const inputs0 = openai.stats.inputs;
    const changed = await sync();
    expect(openai.stats.inputs - inputs0).toBe(1);
    expect(changed.articles).toMatchObject({ records_unchanged: ROWS - 2, chunks_written: 1 });
    const final = await rowsOf('articles');
    expect(final.filter((r) => r.document_id === '9').map((r) => r.content)).toEqual(['A wholly new text for row nine.']);
    expect(final.some((r) => r.document_id === '11')).toBe(false);
  }, 180_000);
});
