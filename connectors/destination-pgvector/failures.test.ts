// What users hit when something goes wrong (issue 14): a failed overwrite must leave no
// `<table>__sluice_new` behind and keep the previous generation, its error names each place once;
// `search` refuses a stream the connection does not have and an empty query (exit 2, no NaN).
// PostgreSQL 15 is the source, PGlite + pgvector the destination, both real servers.
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import { SluiceError, withContext } from '../../src/protocol/errors.ts';
import { createDatabase, sql } from '../source-postgres/test/helpers.ts';

let srcUrl: string;
const destUrl = inject('pgliteUrl');
let dest: pg.Client;

beforeAll(async () => {
  srcUrl = await createDatabase(inject('pgUrl'), 'pgv_failures');
  await sql(
    srcUrl,
    `CREATE TABLE ctl (ok int NOT NULL); INSERT INTO ctl VALUES (1);
     CREATE TABLE articles (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);
     INSERT INTO articles SELECT i, 'Title ' || i, 'Body text number ' || i || ' about refunds and shipping.' FROM generate_series(1, 600) i;`,
  );
  dest = new pg.Client({ connectionString: destUrl });
  await dest.connect();
});
afterAll(async () => {
  await dest.end();
});

function pipeline(dir: string, schema: string, extraDest = '') {
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: fail
    source:
      type: postgres
      config:
        url: ${JSON.stringify(srcUrl)}
        batch_size: 50
        streams:
          # Fails with a division by zero past row 500 once ctl.ok is 0.
          - name: docs
            query: "SELECT d.id, d.title, d.body FROM articles d WHERE 1 / (CASE WHEN d.id > 500 THEN (SELECT ok FROM ctl) ELSE 1 END) = 1"
            primary_key: [id]
    destination:
      type: pgvector
      config: { url: ${JSON.stringify(destUrl)}, schema: ${schema}, batch_rows: 100${extraDest} }
    embedding: { provider: hash, dimensions: 16 }
    processing: { text_fields: [title, body], chunk_size: 200 }
    streams:
      - { name: docs, sync_mode: full_refresh, destination_sync_mode: overwrite }
`,
  });
  return join(dir, 'pipeline.yaml');
}

const tables = async (schema: string) =>
  (await dest.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [schema])).rows.map((r) => r.t);

describe('a failed overwrite', () => {
  it('drops its new generation, keeps the previous table, and names each place once', async () => {
    const dir = tempDir('pgv-fail-');
    const schema = 'fail_overwrite';
    const file = pipeline(dir, schema);
    await sql(srcUrl, 'UPDATE ctl SET ok = 1');
    const first = await runCli(['sync', file]);
    expect(first.code, first.stderr).toBe(0);
    expect((await dest.query(`SELECT count(*)::int AS n FROM ${schema}.docs`)).rows[0].n).toBe(600);

    await sql(srcUrl, 'UPDATE ctl SET ok = 0');
    const failed = await runCli(['sync', file]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/division by zero/);
    const where = /where: (.*)/.exec(failed.stderr)?.[1] ?? '';
    expect(where).toContain('stream docs');
    const parts = where.split(', ');
    expect(new Set(parts).size, where).toBe(parts.length);

    expect(await tables(schema)).not.toContain('docs__sluice_new');
    expect((await dest.query(`SELECT count(*)::int AS n FROM ${schema}.docs`)).rows[0].n).toBe(600);
    await sql(srcUrl, 'UPDATE ctl SET ok = 1');
  });
});

it('an error that already names its stream is not told the stream again', () => {
  // The engine adds "connection, source, stream" to what a source throws, which often names the stream itself.
  const inner = new SluiceError('reading stream "docs" failed', { where: 'stream docs, table public.docs' });
  expect(withContext(inner, 'connection fail, source postgres, stream docs').where).toBe(
    'connection fail, source postgres, stream docs, table public.docs',
  );
});

describe('search', () => {
  it('refuses a stream the connection does not have, even with a fixed table', { timeout: 180_000 }, async () => {
    const dir = tempDir('pgv-search-');
    const file = pipeline(dir, 'search_fixed', ', table: fixed_docs');
    await sql(srcUrl, 'UPDATE ctl SET ok = 1');
    expect((await runCli(['sync', file])).code).toBe(0);

    const ok = await runCli(['search', file, 'refunds', '--stream', 'docs', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    const hits = (JSON.parse(ok.stdout) as { hits: Array<{ stream: string; score: number }> }).hits;
    expect(hits.length).toBeGreaterThan(0);
    expect(hits.every((h) => h.stream === 'docs' && Number.isFinite(h.score))).toBe(true);
    // The table of the source is not a stream of this connection (only the query is).
    expect((await runCli(['search', file, 'refunds', '--stream', 'articles'])).code).toBe(2);

    const nope = await runCli(['search', file, 'refunds', '--stream', 'nope']);
    expect(nope.code).toBe(2);
    expect(nope.stderr).toMatch(/has no stream "nope"/);
    expect(nope.stderr).toMatch(/streams: docs/);
    expect(nope.stdout).not.toMatch(/nope\//);
  });

  it('an empty query is a usage error, never NaN scores', async () => {
    const dir = tempDir('pgv-search-empty-');
    const file = pipeline(dir, 'search_empty');
    expect((await runCli(['sync', file])).code).toBe(0);
    for (const q of ['', '   ']) {
      const r = await runCli(['search', file, q]);
      expect(r.code, q).toBe(2);
      expect(r.stderr).toMatch(/query is empty/);
      expect(r.stdout).not.toMatch(/NaN/);
    }
    const punct = await runCli(['search', file, '?!']);
    expect(punct.stdout).not.toMatch(/NaN/);
    expect(punct.code).toBe(2);
  });
});
