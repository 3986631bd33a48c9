// tableFacts (one round trip, used by the writer's open) tells exactly what the separate
// queries tell — columns and vector size, relation kind, shape problems, sluice's note, vector
// index — for every kind of table open() meets: a sluice table, an altered one, a view, a table
// with another tool's comment, one without columns, none at all.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnPgvectorBackends } from '../../test/helpers/pgvector-backends.ts';
import { inspectTable, readTableNote, vectorIndexOf } from './schema.ts';
import { notATable, notATableOfKind, shapeProblemsOf, tableShapeProblems } from './shape.ts';
import { tableFacts } from './table-facts.ts';

describeOnPgvectorBackends('pgvector tableFacts', (backend) => {
  let client: pg.Client;
  const schema = `facts_${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    client = new pg.Client({ connectionString: backend.url });
    await client.connect();
    await client.query(`CREATE SCHEMA ${schema}`);
    await client.query(`SET search_path = ${schema}, public`);
    await client.query(`
      CREATE TABLE sluice_made (id text PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL, content text NOT NULL,
                                metadata jsonb NOT NULL, embedding vector(3), fingerprint_content text, fingerprint_metadata text);
      CREATE INDEX sluice_made_embedding_idx ON sluice_made USING hnsw (embedding vector_l2_ops) WITH (m = 8, ef_construction = 32);
      COMMENT ON TABLE sluice_made IS '{"sluice":{"primary_key":[["id"]]}}';
      CREATE TABLE altered (id int, document_id text, chunk_index int, content json, metadata jsonb, embedding vector);
      ALTER TABLE altered DROP COLUMN content;
      COMMENT ON TABLE altered IS 'written by another tool';
      CREATE VIEW a_view AS SELECT * FROM sluice_made;
      CREATE TABLE no_columns ();
      CREATE TABLE keyed_twice (id text, k int, document_id text, chunk_index int, content text, metadata jsonb, embedding vector(2),
                                UNIQUE (id, k));
      CREATE UNIQUE INDEX keyed_twice_partial ON keyed_twice (id) WHERE k > 0;
    `);
  });
  afterAll(async () => {
    await client?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client?.end();
  });

  for (const table of ['sluice_made', 'altered', 'a_view', 'no_columns', 'keyed_twice', 'missing']) {
    it(`${table}: the same as the separate queries`, async () => {
      const facts = await tableFacts(client, schema, table);
      const info = await inspectTable(client, schema, table);
      expect({ ...facts.info, columns: [...facts.info.columns].sort() }).toEqual({ ...info, columns: [...info.columns].sort() });
      expect(notATableOfKind(facts.relkind)).toEqual(await notATable(client, schema, table));
      if (info.exists) {
        expect(shapeProblemsOf(facts).sort()).toEqual((await tableShapeProblems(client, schema, table)).sort());
        expect(facts.note).toEqual(await readTableNote(client, schema, table));
        expect(facts.vectorIndex).toEqual(await vectorIndexOf(client, schema, table));
      }
    });
  }

  it('reads what the writer acts on', async () => {
    const made = await tableFacts(client, schema, 'sluice_made');
    expect(made.info).toMatchObject({ exists: true, dimensions: 3 });
    expect(made.note).toEqual({ primary_key: [['id']] });
    expect(made.vectorIndex).toMatchObject({ method: 'hnsw', opclass: 'vector_l2_ops', options: { m: '8', ef_construction: '32' } });
    expect(shapeProblemsOf(made)).toEqual([]);
    const altered = await tableFacts(client, schema, 'altered');
    expect(altered.note).toBe('foreign');
    expect(altered.info.dimensions).toBeUndefined();
    expect(shapeProblemsOf(altered)).toEqual([
      'column id is integer, expected text',
      'column id is not its primary key (no unique index on id)',
    ]);
    expect(shapeProblemsOf(await tableFacts(client, schema, 'a_view'))).toEqual(['it is a view, not a table']);
    expect(shapeProblemsOf(await tableFacts(client, schema, 'keyed_twice'))).toEqual([
      'column id is not its primary key (no unique index on id)',
    ]);
    expect((await tableFacts(client, schema, 'no_columns')).info.exists).toBe(false);
    expect((await tableFacts(client, schema, 'missing')).info.exists).toBe(false);
  });

  it("tells sluice's document index from before a fingerprint column (rebuilt) from a covering one and someone else's (left alone)", async () => {
    const kinds: Record<string, string> = {
      none: '(document_id)',
      three: '(document_id) INCLUDE (fingerprint_content, fingerprint_metadata, fingerprint_embedder)',
      all: '(document_id) INCLUDE (fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)',
      other: '(document_id) INCLUDE (content)',
      twokeys: '(document_id, chunk_index)',
    };
    const found: Record<string, string | undefined> = {};
    for (const [name, keys] of Object.entries(kinds)) {
      const table = `docidx_${name}`;
      await client.query(`CREATE TABLE ${table} (id text PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL, content text NOT NULL,
        metadata jsonb NOT NULL, embedding vector(3), fingerprint_content text, fingerprint_metadata text, fingerprint_embedder text,
        fingerprint_source text)`);
      await client.query(`CREATE INDEX ${table}_document_id_idx ON ${table} ${keys}`);
      found[name] = (await tableFacts(client, schema, table)).documentIndex;
    }
    expect(found).toEqual({ none: 'plain', three: 'plain', all: 'covering', other: 'covering', twokeys: undefined });
  });
});
