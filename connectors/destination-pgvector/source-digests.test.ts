// Source digests in the pgvector destination (docs/fingerprints.md, "Source digests"): the
// fingerprint's `source` is stored in fingerprint_source on every chunk row by every write path
// (COPY BINARY straight into a fresh table, COPY through the staging table, INSERT, metadata-only
// updates, KEEP copies) and comes back from documents(), the writer's fingerprints() and
// scanChunks(); absent stays absent (NULL); a table made before the column gets it in place.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeOnPgvectorBackends, type PgvectorBackend } from '../../test/helpers/pgvector-backends.ts';
import type { DestinationMessage, DestinationStream, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import destination from './index.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { tableFacts } from './table-facts.ts';
import { qualified } from './sql.ts';
import {
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

describeOnPgvectorBackends('pgvector source digests', (backend: PgvectorBackend) => {
  let admin: pg.Client;
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
  });

  const config = (over: Record<string, unknown> = {}): PgvectorConfig =>
    PgvectorConfigSchema.parse({ url: backend.url, schema: `src_${randomBytes(4).toString('hex')}`, index: 'none', ...over });
  const stream = (name: string, mode: DestinationStream['destinationSyncMode']): DestinationStream => ({
    name,
    destinationSyncMode: mode,
    primaryKey: [['id']],
  });

  async function listed(cfg: PgvectorConfig, s: string): Promise<Map<string, StoredDocument>> {
    const out = new Map<string, StoredDocument>();
    for await (const page of destination.documentBatches!(cfg, testContext('list'), s)) for (const d of page) out.set(d.documentId, d);
    return out;
  }

  /** documentSources() (the light listing), as a map. */
  async function listedSources(cfg: PgvectorConfig, s: string): Promise<Map<string, string | undefined>> {
    const out = new Map<string, string | undefined>();
    for await (const page of destination.documentSources!(cfg, testContext('list-light'), s))
      for (const d of page) out.set(d.documentId, d.source);
    return out;
  }

  /** Every chunk's fingerprint as scanChunks (sluice verify) reads it. */
  async function scanned(cfg: PgvectorConfig, s: string): Promise<Map<string, DocumentFingerprint | undefined>> {
    const out = new Map<string, DocumentFingerprint | undefined>();
    for await (const c of destination.scanChunks!(cfg, testContext('scan'), s)) out.set(c.id, c.fingerprint);
    return out;
  }

  /** fingerprint_source of each row, straight from the table. */
  async function storedSources(cfg: PgvectorConfig, table: string): Promise<Record<string, string | null>> {
    const { rows } = await admin.query<{ id: string; fingerprint_source: string | null }>(
      `SELECT id, fingerprint_source FROM ${qualified(cfg.schema, table)} ORDER BY id`,
    );
    return Object.fromEntries(rows.map((r) => [r.id, r.fingerprint_source]));
  }

  /**
   * Write paths on this backend: native auto is COPY BINARY (straight into a fresh table, else
   * through the staging table), insert is the INSERT … unnest path (PGlite's only one).
   */
  const writeMethods = backend.isPglite ? (['auto'] as const) : (['auto', 'insert'] as const);

  for (const writeMethod of writeMethods) {
    describe(`write_method ${writeMethod}`, () => {
      it('round trip: source goes in with the document and comes back from documents(), fingerprints() and scanChunks(); absent stays absent', async () => {
        const cfg = config({ write_method: writeMethod });
        const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
        // A fresh table: the first load (native auto: COPY BINARY straight into it).
        const first = [doc('docs', 'a', 2, { source: digest('a', 1) }), doc('docs', 'b', 1), doc('docs', 'c', 3, { source: 'tag:ünï😀' })];
        const w1 = await destination.open(cfg, testContext('src-rt'), opts);
        await drain(w1, [...first, complete('docs'), stateMessage('docs', 1)]);
        await w1.close();

        expect(await storedSources(cfg, 'docs')).toEqual({
          'a#0': digest('a', 1),
          'a#1': digest('a', 1),
          'b#0': null,
          'c#0': 'tag:ünï😀',
          'c#1': 'tag:ünï😀',
          'c#2': 'tag:ünï😀',
        });
        const list1 = await listed(cfg, 'docs');
        expect(list1.get('a')).toEqual({ documentId: 'a', chunks: 2, fingerprint: fingerprintOf('a', 1, 1, digest('a', 1)) });
        expect(list1.get('b')).toEqual({ documentId: 'b', chunks: 1, fingerprint: fingerprintOf('b', 1, 1) });
        expect('source' in list1.get('b')!.fingerprint!).toBe(false);
        expect(list1.get('c')?.fingerprint?.source).toBe('tag:ünï😀');
        const scan1 = await scanned(cfg, 'docs');
        expect(scan1.get('a#1')).toEqual(fingerprintOf('a', 1, 1, digest('a', 1)));
        expect(scan1.get('b#0')).toEqual(fingerprintOf('b', 1, 1));
        expect(scan1.get('c#2')?.source).toBe('tag:ünï😀');

        // A second run over the table: rows are merged (native auto: COPY into the staging table).
        // a gets a new source, b gets one, c loses its own (the source gave none this time).
        const w2 = await destination.open(cfg, testContext('src-rt'), opts);
        expect(await w2.fingerprints!('docs', ['a', 'b', 'c', 'none'])).toEqual(
          new Map([
            ['a', fingerprintOf('a', 1, 1, digest('a', 1))],
            ['b', fingerprintOf('b', 1, 1)],
            ['c', fingerprintOf('c', 1, 1, 'tag:ünï😀')],
          ]),
        );
        await drain(w2, [
          doc('docs', 'a', 2, { version: 2, source: digest('a', 2) }),
          doc('docs', 'b', 1, { version: 2, source: digest('b', 2) }),
          doc('docs', 'c', 3, { version: 2 }),
          stateMessage('docs', 2),
        ]);
        expect(await w2.fingerprints!('docs', ['a', 'b', 'c'])).toEqual(
          new Map([
            ['a', fingerprintOf('a', 2, 1, digest('a', 2))],
            ['b', fingerprintOf('b', 2, 1, digest('b', 2))],
            ['c', fingerprintOf('c', 2, 1)],
          ]),
        );
        await w2.close();
        const list2 = await listed(cfg, 'docs');
        expect([...list2.values()].map((d) => d.fingerprint)).toEqual([
          fingerprintOf('a', 2, 1, digest('a', 2)),
          fingerprintOf('b', 2, 1, digest('b', 2)),
          fingerprintOf('c', 2, 1),
        ]);
        expect((await storedSources(cfg, 'docs'))['c#1']).toBeNull();
        expect((await scanned(cfg, 'docs')).get('b#0')).toEqual(fingerprintOf('b', 2, 1, digest('b', 2)));
      });
    });
  }

  it('a metadata-only document writes its new source (append_dedup in place; overwrite into the new generation), vectors stay', async () => {
    for (const mode of ['append_dedup', 'overwrite'] as const) {
      const cfg = config();
      const opts = { streams: [stream('docs', mode)], dimensions: DIMS };
      const w1 = await destination.open(cfg, testContext('src-meta'), opts);
      await drain(w1, [doc('docs', 'a', 2), doc('docs', 'b', 2, { source: digest('b', 1) }), complete('docs'), stateMessage('docs', 1)]);
      await w1.close();
      const vectors = async () =>
        (await admin.query(`SELECT id, embedding::text AS e FROM ${qualified(cfg.schema, 'docs')} ORDER BY id`)).rows;
      const before = await vectors();

      // What the engine sends for rows read again only because their digest was missing or changed.
      const w2 = await destination.open(cfg, testContext('src-meta'), opts);
      await drain(w2, [
        metadataOnly('docs', 'a', 2, { meta: 1, source: digest('a', 2) }),
        metadataOnly('docs', 'b', 2, { meta: 2, source: digest('b', 2) }),
        complete('docs'),
        stateMessage('docs', 2),
      ]);
      await w2.close();
      expect(await vectors()).toEqual(before);
      expect(await storedSources(cfg, 'docs')).toEqual({
        'a#0': digest('a', 2),
        'a#1': digest('a', 2),
        'b#0': digest('b', 2),
        'b#1': digest('b', 2),
      });
      const list = await listed(cfg, 'docs');
      expect(list.get('a')?.fingerprint).toEqual(fingerprintOf('a', 1, 1, digest('a', 2)));
      expect(list.get('b')?.fingerprint).toEqual(fingerprintOf('b', 1, 2, digest('b', 2)));
    }
  });

  it('KEEP copies rows with their source (overwrite: kept documents in the new generation keep fingerprint_source as stored)', async () => {
    const cfg = config();
    const opts = { streams: [stream('docs', 'overwrite')], dimensions: DIMS };
    const w1 = await destination.open(cfg, testContext('src-keep'), opts);
    await drain(w1, [
      doc('docs', 'a', 2, { source: digest('a', 1) }),
      doc('docs', 'b', 1),
      doc('docs', 'c', 1, { source: digest('c', 1) }),
      complete('docs'),
      stateMessage('docs', 1),
    ]);
    await w1.close();
    const before = await storedSources(cfg, 'docs');

    // KEEPs first (held back until something else arrives), one changed document, one more KEEP.
    const w2 = await destination.open(cfg, testContext('src-keep'), opts);
    await drain(w2, [
      keep('docs', 'a'),
      doc('docs', 'c', 1, { version: 2, source: digest('c', 2) }),
      keep('docs', 'b'),
      complete('docs'),
      stateMessage('docs', 2),
    ]);
    await w2.close();
    expect(await storedSources(cfg, 'docs')).toEqual({ ...before, 'c#0': digest('c', 2) });
    const list = await listed(cfg, 'docs');
    expect(list.get('a')?.fingerprint).toEqual(fingerprintOf('a', 1, 1, digest('a', 1)));
    expect(list.get('b')?.fingerprint).toEqual(fingerprintOf('b', 1, 1));
  });

  /** A table as sluice made it before fingerprint_source: three fingerprint columns, the index covering them. */
  async function tableWithoutSource(cfg: PgvectorConfig): Promise<string> {
    const table = qualified(cfg.schema, 'docs');
    await admin.query(`CREATE SCHEMA ${cfg.schema}`);
    await admin.query(`CREATE TABLE ${table} (id text CONSTRAINT docs_pkey PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL,
      content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, embedding vector(${DIMS}),
      fingerprint_content text, fingerprint_metadata text, fingerprint_embedder text)`);
    await admin.query(
      `CREATE INDEX docs_document_id_idx ON ${table} (document_id) INCLUDE (fingerprint_content, fingerprint_metadata, fingerprint_embedder)`,
    );
    await admin.query(`COMMENT ON TABLE ${table} IS '{"sluice":{"primary_key":[["id"]]}}'`);
    const fp = (id: string) => fingerprintOf(id, 1, 1);
    for (const id of ['a', 'b'])
      for (const [i, chunk] of (doc('docs', id, 2).chunks ?? []).entries())
        await admin.query(
          `INSERT INTO ${table} (id, document_id, chunk_index, content, metadata, embedding, fingerprint_content, fingerprint_metadata, fingerprint_embedder)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          [
            chunk.id,
            id,
            i,
            chunk.content,
            chunk.metadata,
            `[${[...chunk.embedding!].join(',')}]`,
            fp(id).content,
            fp(id).metadata,
            EMBEDDER,
          ],
        );
    return table;
  }

  it('a table made before fingerprint_source gets it in place (and its document index rebuilt to cover it); its documents list without source', async () => {
    const cfg = config();
    const table = await tableWithoutSource(cfg);
    const oid = (await admin.query(`SELECT to_regclass($1)::oid::int AS o`, [table])).rows[0].o;
    // Listing a table without the column only reads it: no source, the table untouched.
    const old = await listed(cfg, 'docs');
    expect(old.get('a')).toEqual({ documentId: 'a', chunks: 2, fingerprint: fingerprintOf('a', 1, 1) });
    expect((await tableFacts(admin, cfg.schema, 'docs')).info.columns).not.toContain('fingerprint_source');
    expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('plain');

    const w = await destination.open(cfg, testContext('src-old'), { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
    const facts = await tableFacts(admin, cfg.schema, 'docs');
    expect(facts.info.columns).toContain('fingerprint_source');
    expect(facts.documentIndex).toBe('covering');
    expect((await admin.query(`SELECT to_regclass($1)::oid::int AS o`, [table])).rows[0].o).toBe(oid);
    expect(await storedSources(cfg, 'docs')).toEqual({ 'a#0': null, 'a#1': null, 'b#0': null, 'b#1': null });
    // Stored fingerprints stay valid (no source: the engine reads those rows in full once).
    expect(await w.fingerprints!('docs', ['a', 'b'])).toEqual(
      new Map([
        ['a', fingerprintOf('a', 1, 1)],
        ['b', fingerprintOf('b', 1, 1)],
      ]),
    );
    await drain(w, [metadataOnly('docs', 'a', 2, { meta: 1, source: digest('a', 1) }), stateMessage('docs', 1)]);
    await w.close();
    const now = await listed(cfg, 'docs');
    expect(now.get('a')?.fingerprint).toEqual(fingerprintOf('a', 1, 1, digest('a', 1)));
    expect(now.get('b')).toEqual({ documentId: 'b', chunks: 2, fingerprint: fingerprintOf('b', 1, 1) });
    expect(await listedSources(cfg, 'docs')).toEqual(
      new Map([
        ['a', digest('a', 1)],
        ['b', undefined],
      ]),
    );
  });

  it('documentSources() (the light listing) gives each document exactly the source documents() lists, damaged rows included; nothing for a missing table', async () => {
    const cfg = config();
    expect(await listedSources(cfg, 'docs')).toEqual(new Map());
    const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
    const w = await destination.open(cfg, testContext('src-light'), opts);
    const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'ü😀'];
    await drain(w, [
      ...ids.map((id, i) => doc('docs', id, 1 + (i % 3), id === 'g' ? {} : { source: digest(id, i) })),
      stateMessage('docs', 1),
    ]);
    await w.close();
    // Damage some rows as only a hand-made change could: one chunk with another source, another
    // fingerprint, no fingerprint, an empty source.
    const table = qualified(cfg.schema, 'docs');
    await admin.query(`UPDATE ${table} SET fingerprint_source = 'tag:other' WHERE id = 'b#1'`);
    await admin.query(`UPDATE ${table} SET fingerprint_content = 'changed' WHERE id = 'c#2'`);
    await admin.query(`UPDATE ${table} SET fingerprint_metadata = NULL WHERE id = 'd#0'`);
    await admin.query(`UPDATE ${table} SET fingerprint_source = '' WHERE document_id = 'e'`);
    await admin.query(`UPDATE ${table} SET fingerprint_source = NULL WHERE id = 'f#0'`);
    const whole = await listed(cfg, 'docs');
    const light = await listedSources(cfg, 'docs');
    expect(light).toEqual(new Map([...whole].map(([id, d]) => [id, d.fingerprint?.source])));
    // What the damage did, so the comparison above is not between two empty answers.
    expect([...light].filter(([, src]) => src !== undefined).map(([id]) => id)).toEqual(['a', 'ü😀']);
  });

  it('an overwrite over a table made before fingerprint_source adds it in place and KEEPs its rows (source NULL), writing new ones with theirs', async () => {
    const cfg = config();
    await tableWithoutSource(cfg);
    const w = await destination.open(cfg, testContext('src-old-ow'), { streams: [stream('docs', 'overwrite')], dimensions: DIMS });
    await drain(w, [
      keep('docs', 'a'),
      doc('docs', 'b', 1, { version: 2, source: digest('b', 2) }),
      complete('docs'),
      stateMessage('docs', 1),
    ]);
    await w.close();
    expect(await storedSources(cfg, 'docs')).toEqual({ 'a#0': null, 'a#1': null, 'b#0': digest('b', 2) });
    const list = await listed(cfg, 'docs');
    expect(list.get('a')?.fingerprint).toEqual(fingerprintOf('a', 1, 1));
    expect(list.get('b')?.fingerprint).toEqual(fingerprintOf('b', 2, 1, digest('b', 2)));
    expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('covering');
  });

  it('declares the capability', () => {
    expect(destination.capabilities.sourceDigests).toBe(true);
  });
});
