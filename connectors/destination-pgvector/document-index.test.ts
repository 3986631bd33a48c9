// The document index carries the fingerprint columns (schema.ts DOCUMENT_INDEX_KEYS), so listing a
// table's documents is an index-only scan: new tables get it, and an append-mode open replaces the
// plain index an older sluice made (same name), leaving rows and listing answers exactly as they were.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnPgvectorBackends, type PgvectorBackend } from '../../test/helpers/pgvector-backends.ts';
import type { DestinationMessage, DestinationStream, StoredDocument } from '../../src/protocol/connector.ts';
import { sha256 } from '../../src/protocol/identity.ts';
import destination from './index.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { tableFacts } from './table-facts.ts';
import { qualified } from './sql.ts';
import { SWAP_LOCK_TIMEOUT_MS } from './schema.ts';
import { documentMessage, drain, stateMessage, testContext } from './testing.ts';

const DIMS = 4;

describeOnPgvectorBackends('pgvector document index', (backend: PgvectorBackend) => {
  let admin: pg.Client;
  const config = (): PgvectorConfig =>
    PgvectorConfigSchema.parse({ url: backend.url, schema: `docidx_${randomBytes(4).toString('hex')}`, index: 'none' });
  const stream = (mode: DestinationStream['destinationSyncMode']): DestinationStream => ({
    name: 'docs',
    destinationSyncMode: mode,
    primaryKey: [['id']],
  });

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
  });

  /** Name, key and included columns of every index on the table but its primary key and vector index. */
  async function documentIndexes(schema: string) {
    const { rows } = await admin.query<{ name: string; def: string }>(
      `SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary ORDER BY c.relname`,
      [qualified(schema, 'docs')],
    );
    return rows.map((r) => ({ name: r.name, columns: r.def.slice(r.def.indexOf('(')) }));
  }

  /** A document as the engine sends it: with its fingerprint, so the table stores one. */
  const doc = (id: string, chunks: number, version = 1): DestinationMessage => ({
    ...(documentMessage('docs', id, chunks, DIMS, version) as Extract<DestinationMessage, { type: 'DOCUMENT' }>),
    fingerprint: { content: sha256(`content ${id} v${version}`), metadata: sha256(`metadata ${id}`), embedder: 'test/model/4' },
  });

  async function listed(cfg: PgvectorConfig): Promise<StoredDocument[]> {
    const out: StoredDocument[] = [];
    for await (const d of destination.documents!(cfg, testContext('list'), 'docs')) out.push(d);
    // documents() promises each document once, in any order.
    return out.sort((a, b) => (a.documentId < b.documentId ? -1 : 1));
  }

  it('a table sluice creates has a document index that includes the fingerprint columns', async () => {
    const cfg = config();
    const w = await destination.open(cfg, testContext('docidx-new'), { streams: [stream('append_dedup')], dimensions: DIMS });
    await drain(w, [doc('a', 2), stateMessage('docs', 1)]);
    await w.close();
    expect(await documentIndexes(cfg.schema)).toEqual([
      {
        name: 'docs_document_id_idx',
        columns: '(document_id) INCLUDE (fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)',
      },
    ]);
    expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('covering');
  });

  it('an append-mode open replaces the plain document index of an older table: same name, rows and listing unchanged', async () => {
    const cfg = config();
    const table = qualified(cfg.schema, 'docs');
    const w0 = await destination.open(cfg, testContext('docidx-old'), { streams: [stream('append_dedup')], dimensions: DIMS });
    await drain(w0, [doc('a', 2), doc('b', 1), stateMessage('docs', 1)]);
    await w0.close();
    // The index as sluice made it before it carried the fingerprint columns.
    await admin.query(`DROP INDEX ${qualified(cfg.schema, 'docs_document_id_idx')}`);
    await admin.query(`CREATE INDEX docs_document_id_idx ON ${table} (document_id)`);
    expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('plain');
    const rowsBefore = (await admin.query(`SELECT * FROM ${table} ORDER BY id`)).rows;
    const before = await listed(cfg);
    expect(before.map((d) => [d.documentId, d.chunks, !!d.fingerprint])).toEqual([
      ['a', 2, true],
      ['b', 1, true],
    ]);

    const ctx = testContext('docidx-old');
    const infos: string[] = [];
    ctx.logger = { ...ctx.logger, info: (_o: unknown, msg?: string) => void infos.push(String(msg)) } as typeof ctx.logger;
    const w = await destination.open(cfg, ctx, { streams: [stream('append_dedup')], dimensions: DIMS });
    expect(await documentIndexes(cfg.schema)).toEqual([
      {
        name: 'docs_document_id_idx',
        columns: '(document_id) INCLUDE (fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)',
      },
    ]);
    expect(infos.some((m) => m.includes('rebuilt index docs_document_id_idx') && m.includes(`${cfg.schema}.docs`))).toBe(true);
    expect((await admin.query(`SELECT * FROM ${table} ORDER BY id`)).rows).toEqual(rowsBefore);
    expect(await listed(cfg)).toEqual(before);
    // The writer's look-ups and writes work on the rebuilt index.
    expect([...(await w.fingerprints!('docs', ['a', 'b', 'none'])).keys()].sort()).toEqual(['a', 'b']);
    await drain(w, [doc('c', 1, 2), stateMessage('docs', 2)]);
    await w.close();
    expect((await listed(cfg)).map((d) => d.documentId)).toEqual(['a', 'b', 'c']);

    // Once covering, a later open leaves it alone (nothing is rebuilt twice).
    const oid = (await admin.query(`SELECT to_regclass($1)::oid::int AS o`, [qualified(cfg.schema, 'docs_document_id_idx')])).rows[0].o;
    const again: string[] = [];
    const ctx2 = testContext('docidx-old');
    ctx2.logger = { ...ctx2.logger, info: (_o: unknown, msg?: string) => void again.push(String(msg)) } as typeof ctx2.logger;
    await (await destination.open(cfg, ctx2, { streams: [stream('append_dedup')], dimensions: DIMS })).close();
    expect((await admin.query(`SELECT to_regclass($1)::oid::int AS o`, [qualified(cfg.schema, 'docs_document_id_idx')])).rows[0].o).toBe(
      oid,
    );
    expect(again.some((m) => m.includes('rebuilt index'))).toBe(false);
  });

  // PGlite has one session behind every connection: a reader there cannot hold a lock against the writer.
  if (!backend.isPglite)
    it('a long reader holding the table: the rebuild gives up after its lock timeout, the sync goes on, a later open rebuilds', async () => {
      const cfg = config();
      const table = qualified(cfg.schema, 'docs');
      const w0 = await destination.open(cfg, testContext('docidx-busy'), { streams: [stream('append_dedup')], dimensions: DIMS });
      await drain(w0, [doc('a', 2), stateMessage('docs', 1)]);
      await w0.close();
      await admin.query(`DROP INDEX ${qualified(cfg.schema, 'docs_document_id_idx')}`);
      await admin.query(`CREATE INDEX docs_document_id_idx ON ${table} (document_id)`);

      const reader = new pg.Client({ connectionString: backend.url });
      await reader.connect();
      try {
        await reader.query(`BEGIN; SELECT count(*) FROM ${table}`); // holds ACCESS SHARE until it ends
        const ctx = testContext('docidx-busy');
        const warnings: string[] = [];
        ctx.logger = { ...ctx.logger, warn: (_o: unknown, msg?: string) => void warnings.push(String(msg)) } as typeof ctx.logger;
        const started = Date.now();
        const w = await destination.open(cfg, ctx, { streams: [stream('append_dedup')], dimensions: DIMS });
        expect(Date.now() - started).toBeGreaterThanOrEqual(SWAP_LOCK_TIMEOUT_MS - 100);
        expect(warnings.some((m) => m.includes('could not rebuild index docs_document_id_idx') && m.includes('lock timeout'))).toBe(true);
        expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('plain');
        // The sync goes on: it writes and lists as before.
        await drain(w, [doc('b', 1), stateMessage('docs', 2)]);
        await w.close();
        expect((await listed(cfg)).map((d) => d.documentId)).toEqual(['a', 'b']);
      } finally {
        await reader.query('COMMIT').catch(() => {});
        await reader.end();
      }
      await (await destination.open(cfg, testContext('docidx-busy'), { streams: [stream('append_dedup')], dimensions: DIMS })).close();
      expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBe('covering');
    });

  it('an index of that name that is not sluice’s plain document index is left alone', async () => {
    const cfg = config();
    const table = qualified(cfg.schema, 'docs');
    const w0 = await destination.open(cfg, testContext('docidx-other'), { streams: [stream('append_dedup')], dimensions: DIMS });
    await w0.close();
    await admin.query(`DROP INDEX ${qualified(cfg.schema, 'docs_document_id_idx')}`);
    await admin.query(`CREATE INDEX docs_document_id_idx ON ${table} (chunk_index)`);
    expect((await tableFacts(admin, cfg.schema, 'docs')).documentIndex).toBeUndefined();
    await (await destination.open(cfg, testContext('docidx-other'), { streams: [stream('append_dedup')], dimensions: DIMS })).close();
    expect(await documentIndexes(cfg.schema)).toEqual([{ name: 'docs_document_id_idx', columns: '(chunk_index)' }]);
  });
});
