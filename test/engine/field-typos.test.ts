// Issue 14, defect 2: a typo in text_fields must never empty an index with exit 0. Unknown
// text_fields / metadata_fields / text_template placeholders are refused by `validate` (sources
// that discover offline), `check` and every sync before a write; a run in which most records
// yield no text stops before replacing or deleting anything (processing.max_empty_share).
// Real servers: PostgreSQL 15 as the source, PGlite + pgvector as the destination.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../helpers/cli.ts';

let srcUrl: string;
const destUrl = inject('pgliteUrl');
let dest: pg.Client;

beforeAll(async () => {
  srcUrl = await createDatabase(inject('pgUrl'), 'field_typos');
  await sql(
    srcUrl,
    `CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL, author text);
     INSERT INTO docs SELECT i, 'Title ' || i, 'Body ' || i || ' explains refunds in some detail.', 'ann' FROM generate_series(1, 300) i;`,
  );
  dest = new pg.Client({ connectionString: destUrl });
  await dest.connect();
});
afterAll(async () => {
  await dest.end();
});

const count = async (schema: string, table = 'docs') =>
  (
    await dest.query<{ n: number; docs: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT document_id)::int AS docs FROM ${schema}.${table}`,
    )
  ).rows[0];

function pgPipeline(dir: string, schema: string, processing: string) {
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: typos
    source:
      type: postgres
      config: { url: ${JSON.stringify(srcUrl)}, batch_size: 100 }
    destination:
      type: pgvector
      config: { url: ${JSON.stringify(destUrl)}, schema: ${schema} }
    embedding: { provider: hash, dimensions: 16 }
    processing: ${processing}
    streams:
      - { name: docs, sync_mode: full_refresh, destination_sync_mode: overwrite }
`,
  });
  return join(dir, 'pipeline.yaml');
}

describe('unknown processing fields (postgres source: checked by check and sync)', () => {
  it('check and a full refresh refuse text_fields [titel, bdy]; the index keeps its rows', { timeout: 180_000 }, async () => {
    const dir = tempDir('typos-pg-');
    const schema = 'typos_pg';
    const good = pgPipeline(dir, schema, '{ text_fields: [title, body], metadata_fields: [author] }');
    expect((await runCli(['sync', good])).code).toBe(0);
    expect((await count(schema)).docs).toBe(300);

    const bad = pgPipeline(dir, schema, '{ text_fields: [title, bdy], metadata_fields: [autor] }');
    const check = await runCli(['check', bad]);
    expect(check.code).toBe(1);
    expect(check.stdout).toContain('connections[0].processing.text_fields[1]: stream docs has no field "bdy" — did you mean "body"?');
    expect(check.stdout).toContain(
      'connections[0].processing.metadata_fields[0]: stream docs has no field "autor" — did you mean "author"?',
    );

    const sync = await runCli(['sync', bad, '--full-refresh']);
    expect(sync.code).not.toBe(0);
    expect(sync.stderr).toMatch(
      /pipeline.yaml:\d+: connections\[0\]\.processing\.text_fields\[1\]: stream docs has no field "bdy" — did you mean "body"\?/,
    );
    expect(sync.stderr).not.toMatch(STACK_LINE);
    // Nothing was written: every document keeps its chunks (title and body, not the title alone).
    expect((await count(schema)).docs).toBe(300);
    const sample = await dest.query<{ content: string }>(`SELECT content FROM ${schema}.docs WHERE document_id = '7'`);
    expect(sample.rows[0].content).toContain('explains refunds');

    const template = pgPipeline(dir, schema, '{ text_template: "{{ title }}: {{ bodyy }}" }');
    const t = await runCli(['sync', template]);
    expect(t.code).not.toBe(0);
    expect(t.stderr).toContain(
      'connections[0].processing.text_template: stream docs has no field "bodyy" (placeholder {{bodyy}}) — did you mean "body"?',
    );
  });
});

describe('unknown processing fields (file source: checked by validate)', () => {
  it('validate refuses them with file, line, YAML path and a suggestion (exit 2)', { timeout: 180_000 }, async () => {
    const dir = tempDir('typos-file-');
    writeFiles(dir, { 'corpus/a.md': '# A\n\nSome text.\n' });
    const write = (processing: string) => {
      writeFileSync(
        join(dir, 'pipeline.yaml'),
        `version: 1
connections:
  - name: notes
    source:
      type: file
      config: { path: corpus, stream: notes }
    destination:
      type: jsonl
      config: { path: out.jsonl }
    processing:
${processing}
`,
      );
      return join(dir, 'pipeline.yaml');
    };
    const bad = write('      text_fields: [content]\n      metadata_fields: [path, { field: modifed_at, as: mtime }]');
    const r = await runCli(['validate', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      'pipeline.yaml:12: connections[0].processing.metadata_fields[1].field: stream notes has no field "modifed_at" — did you mean "modified_at"?',
    );
    const good = write('      text_fields: [content]\n      metadata_fields: [path, { field: modified_at, as: mtime }]');
    expect((await runCli(['validate', good])).code).toBe(0);
    expect(existsSync(join(dir, '.sluice')), 'validate creates nothing').toBe(false);
    // A directory with no file yet says nothing about its fields: nothing is called a typo.
    const empty = tempDir('typos-file-empty-');
    writeFiles(empty, {
      'corpus/.keep': '',
      'pipeline.yaml': readFileSync(good, 'utf8').replace('text_fields: [content]', 'text_fields: [body]'),
    });
    const r2 = await runCli(['validate', join(empty, 'pipeline.yaml')]);
    expect(r2.code, r2.stderr).toBe(0);
  });
});

describe('processing.max_empty_share', () => {
  it('a full refresh in which most records yield no text fails before replacing the table', { timeout: 180_000 }, async () => {
    // JSON lines have no fixed schema, so the field check cannot catch the typo: the run must.
    const dir = tempDir('typos-empty-');
    const schema = 'typos_empty';
    const lines = Array.from({ length: 60 }, (_, i) => JSON.stringify({ id: i, title: `T${i}`, body: `Body ${i} on shipping.` }));
    writeFiles(dir, { 'data/docs.jsonl': lines.join('\n') + '\n' });
    const write = (processing: string) => {
      writeFileSync(
        join(dir, 'pipeline.yaml'),
        `version: 1
connections:
  - name: empty
    source:
      type: file
      config: { path: data, stream: docs }
    destination:
      type: pgvector
      config: { url: ${JSON.stringify(destUrl)}, schema: ${schema} }
    embedding: { provider: hash, dimensions: 16 }
    processing: ${processing}
    streams:
      - { name: docs, primary_key: [id], sync_mode: full_refresh, destination_sync_mode: overwrite }
`,
      );
      return join(dir, 'pipeline.yaml');
    };
    expect((await runCli(['sync', write('{ text_fields: [title, body] }')])).code).toBe(0);
    expect((await count(schema)).docs).toBe(60);

    // A changed text_fields is a new index identity: a plain sync refuses it (exit 2, nothing
    // written; docs/embeddings.md). Rebuilding with it goes through `sluice reindex`, where the
    // empty-text guard stops the new generation before it replaces anything.
    const refused = await runCli(['sync', write('{ text_fields: [titel, bdy] }')]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/processing\.text_fields/);
    const typo = await runCli(['reindex', write('{ text_fields: [titel, bdy] }')]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('stream docs: 60 of 60 records (100%) yield no text with text_fields [titel, bdy]');
    expect(typo.stderr).toMatch(/max_empty_share/);
    expect((await count(schema)).docs).toBe(60);
    const tables = await dest.query(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename LIKE '%sluice_new'`, [schema]);
    expect(tables.rowCount).toBe(0);

    // Under the share the run goes through: 1 of 60 records without text is normal.
    lines[5] = JSON.stringify({ id: 5, title: '', body: '' });
    writeFiles(dir, { 'data/docs.jsonl': lines.join('\n') + '\n' });
    const some = await runCli(['sync', write('{ text_fields: [title, body] }')]);
    expect(some.code, some.stderr).toBe(0);
    expect((await count(schema)).docs).toBe(59);

    // Turned off, the user gets what they asked for.
    const off = await runCli(['reindex', write('{ text_fields: [titel], max_empty_share: 1 }')]);
    expect(off.code, off.stderr).toBe(0);
    expect((await count(schema)).n).toBe(0);
  });
});
