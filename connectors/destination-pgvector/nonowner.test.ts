// A sync user that does not own an older table (owned by a migration role; the sync user granted
// SELECT, INSERT, UPDATE, DELETE) may not add the fingerprint columns it lacks. A table with
// fingerprint_content and fingerprint_metadata is then synced without fingerprint_source (and
// fingerprint_embedder, if missing too): every write path stores everything else, one warning
// names the cost and the owner's fix, and once the owner adds the columns the next sync stores them.
// Native PostgreSQL only: PGlite serves one session whatever user connects, so it has no other owner.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeOnNativePgvector, type PgvectorBackend } from '../../test/helpers/pgvector-backends.ts';
import type {
  ConnectorContext,
  DestinationMessage,
  DestinationStream,
  DocumentFingerprint,
  StoredDocument,
} from '../../src/protocol/connector.ts';
import destination from './index.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { STATE_TABLE, ensureStateTable, inspectTable } from './schema.ts';
import { qualified } from './sql.ts';
import {
  deleteMessage,
  drain,
  stateMessage,
  testContext,
  FINGERPRINT_TEST_DIMS as DIMS,
  FINGERPRINT_TEST_EMBEDDER as EMBEDDER,
  completeMessage as complete,
  fingerprintOf,
  fingerprintedDoc as doc,
  keepMessage as keep,
  metadataOnlyDoc as metadataOnly,
  sourceDigest as digest,
} from './testing.ts';

const stream = (mode: DestinationStream['destinationSyncMode']): DestinationStream => ({
  name: 'docs',
  destinationSyncMode: mode,
  primaryKey: [['id']],
});

/** A context whose warnings are kept (message and fields). */
function recordingContext(connection: string): ConnectorContext & { warnings: Array<{ fields: Record<string, unknown>; msg: string }> } {
  const warnings: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  const base = testContext(connection);
  const logger = { ...base.logger, warn: (fields: Record<string, unknown>, msg: string) => void warnings.push({ fields, msg }) };
  return { ...base, logger: logger as ConnectorContext['logger'], warnings };
}

describeOnNativePgvector('pgvector: a sync user that does not own an older table', (backend: PgvectorBackend) => {
  const role = `sluice_sync_${randomBytes(4).toString('hex')}`;
  let admin: pg.Client;
  let syncUrl: string;
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
    await admin.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER PASSWORD 'sync-pw'`);
    const u = new URL(backend.url);
    u.username = role;
    u.password = 'sync-pw';
    syncUrl = u.toString();
  });
  afterAll(async () => {
    if (!admin) return;
    // The role's grants go with the schemas the tests made.
    await admin.query(`DROP OWNED BY ${role}`).catch(() => {});
    await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    await admin.end();
  });

  /** The owner's view (superuser) and the sync user's view of the same schema. */
  const configs = (over: Record<string, unknown> = {}) => {
    const schema = `nonowner_${randomBytes(4).toString('hex')}`;
    const owner: PgvectorConfig = PgvectorConfigSchema.parse({ url: backend.url, schema, index: 'none', ...over });
    const sync: PgvectorConfig = PgvectorConfigSchema.parse({ url: syncUrl, schema, index: 'none', ...over });
    return { owner, sync, schema, table: qualified(schema, 'docs') };
  };

  /**
   * A table as sluice made it before fingerprint_source (and, with `embedder: false`, before
   * fingerprint_embedder), holding documents a, b, c; owned by the test's superuser, the sync role
   * granted only what a sync needs on it and the state table.
   */
  async function oldTable(schema: string, table: string, embedder: boolean): Promise<void> {
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.query(`CREATE TABLE ${table} (id text CONSTRAINT docs_pkey PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL,
      content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, embedding vector(${DIMS}),
      fingerprint_content text, fingerprint_metadata text${embedder ? ', fingerprint_embedder text' : ''})`);
    await admin.query(
      `CREATE INDEX docs_document_id_idx ON ${table} (document_id) INCLUDE (fingerprint_content, fingerprint_metadata${embedder ? ', fingerprint_embedder' : ''})`,
    );
    await admin.query(`COMMENT ON TABLE ${table} IS '{"sluice":{"primary_key":[["id"]]}}'`);
    for (const id of ['a', 'b', 'c']) {
      const m = doc('docs', id, 2);
      for (const c of m.chunks)
        await admin.query(
          `INSERT INTO ${table} (id, document_id, chunk_index, content, metadata, embedding, fingerprint_content, fingerprint_metadata${embedder ? ', fingerprint_embedder' : ''})
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8${embedder ? ', $9' : ''})`,
          [
            c.id,
            id,
            c.chunkIndex,
            c.content,
            c.metadata,
            `[${[...c.embedding!].join(',')}]`,
            m.fingerprint!.content,
            m.fingerprint!.metadata,
            ...(embedder ? [EMBEDDER] : []),
          ],
        );
    }
    await ensureStateTable(admin, schema);
    await admin.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${table}, ${qualified(schema, STATE_TABLE)} TO ${role}`);
  }

  async function listed(cfg: PgvectorConfig): Promise<Map<string, StoredDocument>> {
    const out = new Map<string, StoredDocument>();
    for await (const page of destination.documentBatches!(cfg, testContext('list'), 'docs')) for (const d of page) out.set(d.documentId, d);
    return out;
  }
  const columnsOf = async (schema: string) => (await inspectTable(admin, schema, 'docs')).columns;
  const rows = async (table: string) =>
    (
      await admin.query<Record<string, unknown>>(
        `SELECT id, content, metadata->>'tag' AS tag, embedding::text AS embedding, to_jsonb(t) - 'id' - 'document_id' - 'chunk_index' - 'content' - 'metadata' - 'embedding' AS fingerprints
           FROM ${table} AS t ORDER BY id`,
      )
    ).rows;
  /** What the table stores of a fingerprint: `fp` without the parts the table has no column for. */
  const stored = (fp: DocumentFingerprint, embedder: boolean) => ({
    fingerprint_content: fp.content,
    fingerprint_metadata: fp.metadata,
    ...(embedder ? { fingerprint_embedder: fp.embedder ?? null } : {}),
  });

  for (const embedder of [true, false])
    for (const writeMethod of ['auto', 'insert'] as const)
      describe(`${embedder ? 'without fingerprint_source' : 'without fingerprint_embedder and fingerprint_source'}, write_method ${writeMethod}`, () => {
        it('writes, re-syncs, updates metadata only and deletes, storing everything but the missing columns; one warning with the fix', async () => {
          const { sync, schema, table } = configs({ write_method: writeMethod });
          await oldTable(schema, table, embedder);
          const before = await columnsOf(schema);
          const missing = embedder ? ['fingerprint_source'] : ['fingerprint_embedder', 'fingerprint_source'];

          const ctx = recordingContext('nonowner');
          const w = await destination.open(sync, ctx, { streams: [stream('append_dedup')], dimensions: DIMS });
          // The warning: once, naming what is missing, what it costs and the owner's exact SQL.
          const missingWarnings = ctx.warnings.filter((x) => x.msg.includes('lacks column'));
          expect(missingWarnings).toHaveLength(1);
          const warning = missingWarnings[0];
          expect(warning.fields.missing).toEqual(missing);
          expect(warning.msg).toContain('must be owner of table docs');
          expect(warning.msg).toContain('reads all of the stream');
          expect(warning.msg.includes('no embedder tag')).toBe(!embedder);
          expect(warning.fields.fix).toBe(`ALTER TABLE ${table} ${missing.map((c) => `ADD COLUMN IF NOT EXISTS ${c} text`).join(', ')}`);
          expect(warning.msg).toContain(String(warning.fields.fix));
          expect(warning.msg).toContain('document index');
          // No second warning about the document index: it cannot cover a column the table lacks.
          expect(ctx.warnings).toHaveLength(1);

          // Stored fingerprints, without the parts the table cannot hold.
          const old = embedder
            ? fingerprintOf('a', 1, 1)
            : { content: fingerprintOf('a', 1, 1).content, metadata: fingerprintOf('a', 1, 1).metadata };
          expect((await w.fingerprints!('docs', ['a', 'none'])).get('a')).toEqual(old);

          const vectorsOfB = (await rows(table)).filter((r) => String(r.id).startsWith('b')).map((r) => r.embedding);
          await drain(w, [
            doc('docs', 'a', 3, { version: 2, source: digest('a', 2) }), // changed: rewritten, one chunk more
            metadataOnly('docs', 'b', 2, { meta: 2, source: digest('b', 2) }), // metadata only: vectors stay
            deleteMessage('docs', 'c'),
            doc('docs', 'd', 1, { source: digest('d', 1) }), // new
            stateMessage('docs', 1),
          ]);
          await w.close();

          expect(await columnsOf(schema)).toEqual(before);
          const now = await rows(table);
          expect(now.map((r) => r.id)).toEqual(['a#0', 'a#1', 'a#2', 'b#0', 'b#1', 'd#0']);
          const byId = new Map(now.map((r) => [String(r.id), r]));
          expect(byId.get('a#2')!.content).toBe('a chunk 2 v2');
          expect(byId.get('a#0')!.fingerprints).toEqual(stored(fingerprintOf('a', 2, 1), embedder));
          expect(byId.get('b#0')!.tag).toBe('m2');
          expect(byId.get('b#1')!.fingerprints).toEqual(stored(fingerprintOf('b', 1, 2), embedder));
          expect(now.filter((r) => String(r.id).startsWith('b')).map((r) => r.embedding)).toEqual(vectorsOfB);
          expect(byId.get('d#0')!.fingerprints).toEqual(stored(fingerprintOf('d', 1, 1), embedder));
          const state = await admin.query(`SELECT state FROM ${qualified(schema, STATE_TABLE)} WHERE connection = 'nonowner'`);
          expect(state.rows[0].state).toEqual({ streams: { docs: { cursor: 1 } } });

          // A re-sync: the listing and the writer's look-up give what the table holds (no source).
          const list = await listed(sync);
          expect([...list.keys()]).toEqual(['a', 'b', 'd']);
          expect(list.get('a')).toEqual({
            documentId: 'a',
            chunks: 3,
            fingerprint: embedder
              ? fingerprintOf('a', 2, 1)
              : { content: fingerprintOf('a', 2, 1).content, metadata: fingerprintOf('a', 2, 1).metadata },
          });
          const ctx2 = recordingContext('nonowner');
          const w2 = await destination.open(sync, ctx2, { streams: [stream('append_dedup')], dimensions: DIMS });
          expect(ctx2.warnings.filter((x) => x.msg.includes('lacks column'))).toHaveLength(1);
          expect((await w2.fingerprints!('docs', ['b'])).get('b')?.metadata).toBe(fingerprintOf('b', 1, 2).metadata);
          await drain(w2, [doc('docs', 'd', 2, { version: 2, source: digest('d', 2) }), stateMessage('docs', 2)]);
          await w2.close();

          // An unchanged document read with a source digest comes as metadata-only on every run (its
          // digest is never stored here): its rows are matched but not rewritten (same row versions).
          const versionsOfB = async () =>
            (await admin.query(`SELECT id, xmin::text AS v FROM ${table} WHERE document_id = 'b' ORDER BY id`)).rows;
          const beforeB = await versionsOfB();
          const w3 = await destination.open(sync, recordingContext('nonowner'), { streams: [stream('append_dedup')], dimensions: DIMS });
          await drain(w3, [metadataOnly('docs', 'b', 2, { meta: 2, source: digest('b', 3) }), stateMessage('docs', 3)]);
          expect(await versionsOfB()).toEqual(beforeB);
          // A document whose stored content is not the one compared against still fails the commit.
          await expect(
            drain(w3, [metadataOnly('docs', 'a', 3, { meta: 1, source: digest('a', 3) }), stateMessage('docs', 4)]),
          ).rejects.toThrow(/found 0 of 3 stored chunks of document\(s\) a with the expected content/);
          await w3.close();
          expect((await rows(table)).find((r) => r.id === 'b#0')!.tag).toBe('m2');
          expect((await rows(table)).filter((r) => String(r.id).startsWith('d')).map((r) => r.fingerprints)).toEqual([
            stored(fingerprintOf('d', 2, 1), embedder),
            stored(fingerprintOf('d', 2, 1), embedder),
          ]);
        });
      });

  it('overwrite: an all-KEEP run keeps the live table (nothing written); one that changes something fails at the switch (DROP needs the owner), the live table intact', async () => {
    const { sync, schema, table } = configs();
    await oldTable(schema, table, true);
    await admin.query(`GRANT CREATE ON SCHEMA ${schema} TO ${role}`); // for the new generation
    const before = await rows(table);

    const ctx = recordingContext('nonowner-ow');
    const w = await destination.open(sync, ctx, { streams: [stream('overwrite')], dimensions: DIMS });
    expect(ctx.warnings.filter((x) => x.msg.includes('lacks column'))).toHaveLength(1);
    await drain(w, [keep('docs', 'a'), keep('docs', 'b'), keep('docs', 'c'), complete('docs'), stateMessage('docs', 1)]);
    await w.close();
    expect(await rows(table)).toEqual(before);

    // KEEPs are copied from the live table (its missing column as NULL) into the new generation,
    // then the switch needs the owner: the run fails and the live table stays as it was.
    const w2 = await destination.open(sync, recordingContext('nonowner-ow'), { streams: [stream('overwrite')], dimensions: DIMS });
    await expect(
      drain(w2, [
        keep('docs', 'a'),
        doc('docs', 'b', 1, { version: 2, source: digest('b', 2) }),
        complete('docs'),
        stateMessage('docs', 2),
      ]),
    ).rejects.toThrow(/must be owner of table docs/);
    await w2.close();
    expect(await rows(table)).toEqual(before);
    const leftovers = await admin.query(
      `SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = $1 AND relname LIKE '%sluice_new%'`,
      [schema],
    );
    expect(leftovers.rows).toEqual([]);
  });

  it('once the owner adds the columns, the next sync by the sync user stores the source (and warns no more about columns)', async () => {
    const { sync, schema, table } = configs();
    await oldTable(schema, table, false);
    await admin.query(
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS fingerprint_embedder text, ADD COLUMN IF NOT EXISTS fingerprint_source text`,
    );

    const ctx = recordingContext('nonowner-fixed');
    const w = await destination.open(sync, ctx, { streams: [stream('append_dedup')], dimensions: DIMS });
    expect(ctx.warnings.filter((x) => x.msg.includes('lacks column'))).toEqual([]);
    await drain(w, [
      doc('docs', 'a', 2, { version: 2, source: digest('a', 2) }),
      metadataOnly('docs', 'b', 2, { meta: 2, source: digest('b', 2) }),
      stateMessage('docs', 1),
    ]);
    await w.close();
    const list = await listed(sync);
    expect(list.get('a')?.fingerprint).toEqual(fingerprintOf('a', 2, 1, digest('a', 2)));
    expect(list.get('b')?.fingerprint).toEqual(fingerprintOf('b', 1, 2, digest('b', 2)));
    expect(list.get('c')?.fingerprint).toEqual({ content: fingerprintOf('c', 1, 1).content, metadata: fingerprintOf('c', 1, 1).metadata });
  });

  it('a table without fingerprint_content/metadata stays an error that names the owner’s SQL', async () => {
    const { sync, schema, table } = configs();
    await admin.query(`CREATE SCHEMA ${schema}`);
    await admin.query(`CREATE TABLE ${table} (id text PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL,
      content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, embedding vector(${DIMS}))`);
    await admin.query(`COMMENT ON TABLE ${table} IS '{"sluice":{"primary_key":[["id"]]}}'`);
    await ensureStateTable(admin, schema);
    await admin.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${table}, ${qualified(schema, STATE_TABLE)} TO ${role}`);
    const err = await destination.open(sync, testContext('nonowner-old'), { streams: [stream('append_dedup')], dimensions: DIMS }).then(
      () => undefined,
      (e: unknown) => e as Error & { hint?: string },
    );
    expect(err?.message).toMatch(/cannot add the fingerprint columns to table .*must be owner of table docs/);
    expect(err?.hint).toContain(
      `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS fingerprint_content text, ADD COLUMN IF NOT EXISTS fingerprint_metadata text, ADD COLUMN IF NOT EXISTS fingerprint_embedder text, ADD COLUMN IF NOT EXISTS fingerprint_source text`,
    );
  });
});
