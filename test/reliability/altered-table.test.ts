// The chunk table altered by hand between runs (a column dropped or retyped, the vector column
// resized, the primary key dropped, a view in its place): the next sync fails naming the table and
// what is wrong, before it writes anything — never a run that "succeeds" into a broken index.
import { join } from 'node:path';
import pg from 'pg';
import { expect, it } from 'vitest';
import { qualified } from '../../connectors/destination-pgvector/sql.ts';
import { STACK_LINE, runCli, tempDir } from '../helpers/cli.ts';
import { corpusWriter, filePipeline } from '../helpers/e2e.ts';
import { describeOnPgvectorBackends } from '../helpers/pgvector-backends.ts';

const CASES: { name: string; alter: (t: string) => string; message: RegExp }[] = [
  { name: 'a column dropped', alter: (t) => `ALTER TABLE ${t} DROP COLUMN content`, message: /lacks the column\(s\) content/ },
  {
    name: 'the vector column resized',
    alter: (t) => `ALTER TABLE ${t} ALTER COLUMN embedding TYPE vector(8) USING subvector(embedding, 1, 8)::vector(8)`,
    message: /has 8 dimensions, embedding model hash .*gives 16/,
  },
  {
    name: 'the vector column made real[]',
    // The vector index has to go first: its operator class takes only vector.
    alter: (t) =>
      `DROP INDEX ${t.replace('"docs"', '"docs_embedding_idx"')}; ALTER TABLE ${t} ALTER COLUMN embedding TYPE real[] USING embedding::real[]`,
    message: /column embedding is real\[\], expected vector/,
  },
  {
    name: 'metadata made json',
    alter: (t) => `ALTER TABLE ${t} ALTER COLUMN metadata TYPE json`,
    message: /column metadata is json, expected jsonb/,
  },
  {
    name: 'chunk_index made bigint',
    alter: (t) => `ALTER TABLE ${t} ALTER COLUMN chunk_index TYPE bigint`,
    message: /column chunk_index is bigint, expected int4/,
  },
  {
    name: 'the primary key dropped',
    alter: (t) => `ALTER TABLE ${t} DROP CONSTRAINT docs_pkey`,
    message: /column id is not its primary key/,
  },
  {
    name: 'the table replaced by a view of the same columns',
    alter: (t) => `ALTER TABLE ${t} RENAME TO docs_old; CREATE VIEW ${t} AS SELECT * FROM ${t.replace('"docs"', '"docs_old"')}`,
    message: /it is a view, not a table/,
  },
];

describeOnPgvectorBackends('destination table altered by hand between runs', (backend) => {
  const query = async (text: string) => {
    const c = new pg.Client({ connectionString: backend.url });
    await c.connect();
    try {
      return (await c.query(text)).rows;
    } finally {
      await c.end();
    }
  };

  it('an overwrite stream replaces a retyped table, but refuses a view in its place', { timeout: 120_000 }, async () => {
    const schema = `altered_${backend.name}_overwrite`;
    const table = qualified(schema, 'docs');
    const dir = tempDir('altered-');
    const write = corpusWriter(join(dir, 'corpus'));
    for (let i = 0; i < 10; i++) write(`doc${i}`, 3);
    const file = filePipeline(
      join(dir, 'p'),
      join(dir, 'corpus'),
      { type: 'pgvector', config: { url: backend.url, schema } },
      { mode: 'overwrite' },
    );
    expect((await runCli(['sync', file])).code).toBe(0);
    const loaded = await query(`SELECT id, content FROM ${table} ORDER BY id`);

    await query(`ALTER TABLE ${table} ALTER COLUMN metadata TYPE json`);
    const replaced = await runCli(['sync', file]);
    expect(replaced.code, replaced.stderr).toBe(0);
    expect(await query(`SELECT id, content FROM ${table} ORDER BY id`)).toEqual(loaded);
    expect(
      await query(
        `SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = '${table}'::regclass AND attname = 'metadata'`,
      ),
    ).toEqual([{ t: 'jsonb' }]);

    await query(`ALTER TABLE ${table} RENAME TO docs_old; CREATE VIEW ${table} AS SELECT * FROM ${qualified(schema, 'docs_old')}`);
    const refused = await runCli(['sync', file]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).not.toMatch(STACK_LINE);
    expect(refused.stderr, refused.stderr).toContain(
      `table ${schema}.docs was altered and sluice cannot write it: it is a view, not a table`,
    );
    expect(await query(`SELECT tablename FROM pg_tables WHERE schemaname = '${schema}' AND tablename LIKE '%sluice_new%'`)).toEqual([]);
    expect(await query(`SELECT id, content FROM ${table} ORDER BY id`)).toEqual(loaded);
  });

  CASES.forEach((c, n) => {
    it(`${c.name}: the next sync fails naming the table and writes nothing`, { timeout: 120_000 }, async () => {
      const schema = `altered_${backend.name}_${n}`;
      const table = qualified(schema, 'docs');
      const dir = tempDir('altered-');
      const write = corpusWriter(join(dir, 'corpus'));
      for (let i = 0; i < 10; i++) write(`doc${i}`, 3);
      const file = filePipeline(join(dir, 'p'), join(dir, 'corpus'), { type: 'pgvector', config: { url: backend.url, schema } });
      const first = await runCli(['sync', file]);
      expect(first.code, first.stderr).toBe(0);

      await query(c.alter(table));
      // Something to write: changed and new documents.
      write('doc0', 5, ' (changed)');
      write('doc10', 2);
      const before = await query(`SELECT * FROM ${table} ORDER BY id`);
      const stateBefore = await query(`SELECT state, updated_at FROM ${qualified(schema, '_sluice_state')}`);

      // --dry-run finds it too, without writing.
      const dry = await runCli(['sync', file, '--dry-run']);
      expect([1, 2]).toContain(dry.code);
      expect(dry.stderr, dry.stderr).toMatch(c.message);

      const res = await runCli(['sync', file]);
      expect([1, 2]).toContain(res.code);
      expect(res.stderr).not.toMatch(STACK_LINE);
      expect(res.stderr).toContain(`table ${schema}.docs`);
      expect(res.stderr, res.stderr).toMatch(c.message);
      expect(await query(`SELECT * FROM ${table} ORDER BY id`)).toEqual(before);
      expect(await query(`SELECT state, updated_at FROM ${qualified(schema, '_sluice_state')}`)).toEqual(stateBefore);
    });
  });
});
