// Document fingerprints in the pgvector destination (docs/fingerprints.md), driven through
// open()/write()/fingerprints()/documents() the way the engine drives them, on PGlite and on native
// PostgreSQL + pgvector. "Writes nothing" is measured by the server: n_tup_ins/upd/del in
// pg_stat_user_tables, the HNSW index's block accesses, the table's OID and (native) WAL bytes.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeOnPgvectorBackends, type PgvectorBackend } from '../../test/helpers/pgvector-backends.ts';
import type { DestinationMessage, DestinationStream, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import { sha256 } from '../../src/protocol/identity.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { scratchDir } from '../../src/testing/context.ts';
import destination from './index.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { KeepLog, idHash, idHashSql } from './keep-log.ts';
import { qualified } from './sql.ts';
import { documentMessage, drain, stateMessage, testContext } from './testing.ts';

const DIMS = 16;
let url: string;
let admin: pg.Client;
let native = false;

const uniqueSchema = () => `fp_${randomBytes(4).toString('hex')}`;
const config = (over: Record<string, unknown> = {}): PgvectorConfig => PgvectorConfigSchema.parse({ url, schema: uniqueSchema(), ...over });
const stream = (name: string, mode: DestinationStream['destinationSyncMode']): DestinationStream => ({
  name,
  destinationSyncMode: mode,
  primaryKey: [['id']],
});

/** What the engine computes; here a stand-in that changes exactly when the test says so. */
const fingerprintOf = (id: string, version: number, meta: number): DocumentFingerprint => ({
  content: sha256(`content ${id} v${version}`),
  metadata: sha256(`metadata ${id} m${meta}`),
});

/** A document at content `version` and metadata version `meta`, with its fingerprint. */
function doc(s: string, id: string, chunks: number, version = 1, meta = 1): Extract<DestinationMessage, { type: 'DOCUMENT' }> {
  const m = documentMessage(s, id, chunks, DIMS, version) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
  for (const c of m.chunks) c.metadata = { ...c.metadata, tag: `m${meta}` };
  return { ...m, fingerprint: fingerprintOf(id, version, meta) };
}

/** The metadata-only form the engine sends: same chunk ids and texts, no vectors, new metadata. */
function metadataOnly(s: string, id: string, chunks: number, version: number, meta: number): DestinationMessage {
  const m = doc(s, id, chunks, version, meta);
  return { ...m, metadataOnly: true, chunks: m.chunks.map(({ embedding: _drop, ...c }) => c) };
}

const keep = (s: string, id: string): DestinationMessage => ({ type: 'KEEP', stream: s, documentId: id });
const complete = (s: string): DestinationMessage => ({ type: 'STREAM_COMPLETE', stream: s });

/** How the engine decides for a batch of documents: one fingerprints() call, then skip / metadata / write. */
async function engineLike(
  w: Awaited<ReturnType<typeof destination.open>>,
  s: string,
  docs: Array<{ id: string; chunks: number; version: number; meta: number }>,
  overwrite: boolean,
): Promise<{ messages: DestinationMessage[]; lookups: number }> {
  const messages: DestinationMessage[] = [];
  let lookups = 0;
  for (let i = 0; i < docs.length; i += 1000) {
    const part = docs.slice(i, i + 1000);
    const stored = await w.fingerprints!(
      s,
      part.map((d) => d.id),
    );
    lookups++;
    for (const d of part) {
      const fp = fingerprintOf(d.id, d.version, d.meta);
      const old = stored.get(d.id);
      if (old?.content === fp.content && old.metadata === fp.metadata) {
        if (overwrite) messages.push(keep(s, d.id));
      } else if (old?.content === fp.content) messages.push(metadataOnly(s, d.id, d.chunks, d.version, d.meta));
      else messages.push(doc(s, d.id, d.chunks, d.version, d.meta));
    }
  }
  return { messages, lookups };
}

interface TableStats {
  ins: number;
  upd: number;
  del: number;
}

/** Cumulative tuple counts of a table, as the server's statistics report them once flushed. */
async function tupleStats(schema: string, table: string): Promise<TableStats> {
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await admin.query<{ ins: string; upd: string; del: string }>(
    `SELECT n_tup_ins AS ins, n_tup_upd AS upd, n_tup_del AS del FROM pg_stat_user_tables WHERE relid = to_regclass($1)`,
    [qualified(schema, table)],
  );
  const r = rows[0] ?? { ins: '0', upd: '0', del: '0' };
  return { ins: Number(r.ins), upd: Number(r.upd), del: Number(r.del) };
}

/**
 * Statistics are flushed by the writing backend (at its exit, or within a second): poll until they
 * reach `until`, or return what they are after a while (for "nothing changed", the settle time).
 */
async function settledStats(schema: string, table: string, until?: (s: TableStats) => boolean): Promise<TableStats> {
  // PGlite: one backend behind every connection; ask it to flush at its next idle moment.
  await admin.query('SELECT pg_stat_force_next_flush()');
  await admin.query('SELECT 1');
  let s = await tupleStats(schema, table);
  const deadline = Date.now() + (until ? 10_000 : 1_500);
  while (Date.now() < deadline && !until?.(s)) {
    await new Promise((r) => setTimeout(r, 100));
    await admin.query('SELECT pg_stat_force_next_flush()');
    s = await tupleStats(schema, table);
  }
  return s;
}

const delta = (a: TableStats, b: TableStats) => ({ ins: b.ins - a.ins, upd: b.upd - a.upd, del: b.del - a.del });

async function walLsn(): Promise<string | undefined> {
  if (!native) return undefined;
  return (await admin.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l;
}
/**
 * WAL is counted server-wide, and other test files write to the same server meanwhile: an unchanged
 * run (the same every time) is repeated, up to three runs, until one shows its own few bytes. A run
 * that rewrote rows would show hundreds of kB every time.
 */
async function quietest(run: () => Promise<number | undefined>): Promise<number | undefined> {
  let least: number | undefined;
  for (let i = 0; i < 3; i++) {
    const wal = await run();
    if (wal === undefined) return undefined;
    least = Math.min(least ?? wal, wal);
    if (least < 8192) break;
  }
  return least;
}

async function walBytesSince(lsn: string | undefined): Promise<number | undefined> {
  if (!lsn) return undefined;
  return Number((await admin.query<{ b: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS b', [lsn])).rows[0].b);
}

async function tableOid(schema: string, table: string): Promise<number | null> {
  return (await admin.query<{ o: number | null }>('SELECT to_regclass($1)::oid::int AS o', [qualified(schema, table)])).rows[0].o;
}

/** Block accesses of a table's vector index (reads + hits) and its size: both still means no index work. */
async function vectorIndexWork(schema: string, table: string): Promise<{ blocks: number; bytes: number }> {
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await admin.query<{ blocks: string; bytes: string }>(
    `SELECT coalesce(s.idx_blks_read, 0) + coalesce(s.idx_blks_hit, 0) AS blocks, pg_relation_size(i.indexrelid) AS bytes
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
       LEFT JOIN pg_statio_user_indexes s ON s.indexrelid = i.indexrelid
      WHERE i.indrelid = to_regclass($1) AND am.amname = 'hnsw'`,
    [qualified(schema, table)],
  );
  expect(rows).toHaveLength(1);
  return { blocks: Number(rows[0].blocks), bytes: Number(rows[0].bytes) };
}

async function snapshot(schema: string, table: string) {
  const { rows } = await admin.query<{
    id: string;
    content: string;
    metadata: Record<string, unknown>;
    embedding: string;
    fingerprint_content: string | null;
    fingerprint_metadata: string | null;
  }>(
    `SELECT id, content, metadata, embedding::text AS embedding, fingerprint_content, fingerprint_metadata
       FROM ${qualified(schema, table)} ORDER BY id`,
  );
  return rows;
}

async function listDocuments(cfg: PgvectorConfig, s: string): Promise<StoredDocument[]> {
  const out: StoredDocument[] = [];
  for await (const d of destination.documents!(cfg, testContext('list'), s)) out.push(d);
  return out;
}

const docsOf = (n: number, chunks = 2) =>
  Array.from({ length: n }, (_, i) => ({ id: `d${String(i).padStart(4, '0')}`, chunks, version: 1, meta: 1 }));

describeOnPgvectorBackends('pgvector fingerprints', (backend: PgvectorBackend) => {
  beforeAll(async () => {
    url = backend.url;
    native = !backend.isPglite;
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  describe('append_dedup', () => {
    it('an unchanged re-sync writes 0 rows, no WAL to speak of and no HNSW index work; 1 % changed rewrites only those documents', async () => {
      const cfg = config({ index: 'hnsw' });
      const ctx = testContext('fp-dedup');
      const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
      const docs = docsOf(200);

      const lsn0 = await walLsn();
      const first = await destination.open(cfg, ctx, opts);
      await first.readState!();
      const load = await engineLike(first, 'docs', docs, false);
      expect(load.messages.every((m) => m.type === 'DOCUMENT' && !m.metadataOnly)).toBe(true);
      await drain(first, [...load.messages, stateMessage('docs', 1)]);
      await first.close();
      const firstWal = await walBytesSince(lsn0);
      const base = await settledStats(cfg.schema, 'docs', (s) => s.ins >= 400);
      expect(base.ins).toBe(400);
      const before = await snapshot(cfg.schema, 'docs');
      expect(before.every((r) => r.fingerprint_content && r.fingerprint_metadata)).toBe(true);
      const index0 = await vectorIndexWork(cfg.schema, 'docs');
      const oid0 = await tableOid(cfg.schema, 'docs');

      // Unchanged: one lookup per 1,000 documents, nothing sent but the (same) state.
      const unchangedRun = async () => {
        const lsn1 = await walLsn();
        const again = await destination.open(cfg, ctx, opts);
        await again.readState!();
        const rerun = await engineLike(again, 'docs', docs, false);
        expect(rerun.messages).toEqual([]);
        expect(rerun.lookups).toBe(1);
        const events = await drain(again, [stateMessage('docs', 1)]);
        await again.close();
        expect(events.map((e) => e.type)).toEqual(['STATE_COMMITTED']);
        return walBytesSince(lsn1);
      };
      const unchangedWal = await quietest(unchangedRun);
      expect(delta(base, await settledStats(cfg.schema, 'docs'))).toEqual({ ins: 0, upd: 0, del: 0 });
      expect(await vectorIndexWork(cfg.schema, 'docs')).toEqual(index0);
      expect(await tableOid(cfg.schema, 'docs')).toBe(oid0);
      expect(await snapshot(cfg.schema, 'docs')).toEqual(before);
      if (native) {
        // Background activity (autovacuum, checkpoints) may add a little; a rewrite adds far more.
        expect(firstWal!).toBeGreaterThan(200_000);
        expect(unchangedWal!).toBeLessThan(8192);
      }

      // 1 % changed (2 of 200 documents): exactly their chunks are written, nothing else touched.
      const changed = docs.map((d, i) => (i === 17 || i === 150 ? { ...d, version: 2, chunks: 3 } : d));
      const third = await destination.open(cfg, ctx, opts);
      await third.readState!();
      const partial = await engineLike(third, 'docs', changed, false);
      expect(partial.messages.map((m) => (m as { documentId: string }).documentId)).toEqual(['d0017', 'd0150']);
      const written = await drain(third, [...partial.messages, stateMessage('docs', 2)]);
      await third.close();
      expect(written[0]).toEqual({ type: 'WRITTEN', stream: 'docs', records: 2, chunksWritten: 6, chunksDeleted: 0 });
      // 2 × (2 chunks updated in place + 1 new), counted once the statistics arrive
      expect(delta(base, await settledStats(cfg.schema, 'docs', (s) => s.ins + s.upd >= base.ins + base.upd + 6))).toEqual({
        ins: 2,
        upd: 4,
        del: 0,
      });
      const after = await snapshot(cfg.schema, 'docs');
      const untouched = after.filter((r) => !r.id.startsWith('d0017') && !r.id.startsWith('d0150'));
      expect(untouched).toEqual(before.filter((r) => !r.id.startsWith('d0017') && !r.id.startsWith('d0150')));
      expect(after.find((r) => r.id === 'd0150#2')!.fingerprint_content).toBe(fingerprintOf('d0150', 2, 1).content);
    });

    it('a metadata-only change updates metadata and fingerprint in place; the vectors stay as stored', async () => {
      const cfg = config();
      const ctx = testContext('fp-meta');
      const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
      const w = await destination.open(cfg, ctx, opts);
      await drain(w, [doc('docs', 'a', 3), doc('docs', 'b', 2), stateMessage('docs', 1)]);
      await w.close();
      const before = await snapshot(cfg.schema, 'docs');
      const base = await settledStats(cfg.schema, 'docs', (s) => s.ins >= 5);

      const w2 = await destination.open(cfg, ctx, opts);
      const { messages } = await engineLike(
        w2,
        'docs',
        [
          { id: 'a', chunks: 3, version: 1, meta: 2 },
          { id: 'b', chunks: 2, version: 1, meta: 1 },
        ],
        false,
      );
      expect(messages).toHaveLength(1);
      expect(messages[0]).toMatchObject({ type: 'DOCUMENT', documentId: 'a', metadataOnly: true });
      expect((messages[0] as { chunks: Array<{ embedding?: unknown }> }).chunks.every((c) => c.embedding === undefined)).toBe(true);
      const events = await drain(w2, [...messages, stateMessage('docs', 2)]);
      await w2.close();
      expect(events[0]).toEqual({ type: 'WRITTEN', stream: 'docs', records: 1, chunksWritten: 3, chunksDeleted: 0 });

      const after = await snapshot(cfg.schema, 'docs');
      for (const [i, r] of after.entries()) {
        expect(r.embedding).toBe(before[i].embedding);
        expect(r.content).toBe(before[i].content);
        if (r.id.startsWith('a#')) {
          expect(r.metadata.tag).toBe('m2');
          expect(r.fingerprint_metadata).toBe(fingerprintOf('a', 1, 2).metadata);
        } else expect(r).toEqual(before[i]);
      }
      expect(delta(base, await settledStats(cfg.schema, 'docs', (s) => s.upd >= base.upd + 3))).toEqual({ ins: 0, upd: 3, del: 0 });

      // A metadata-only update whose stored content is not the one it was decided against fails, in words.
      const w3 = await destination.open(cfg, ctx, opts);
      const stale = metadataOnly('docs', 'b', 2, 7, 3);
      await expect(drain(w3, [stale, stateMessage('docs', 3)])).rejects.toThrow(
        /metadata-only update found 0 of 2 stored chunks of document\(s\) b/,
      );
      await w3.close();
      expect((await snapshot(cfg.schema, 'docs')).filter((r) => r.id.startsWith('b#'))).toEqual(
        before.filter((r) => r.id.startsWith('b#')),
      );
    });

    it('migrates a table written before fingerprints in place: rows kept, their documents count as changed', async () => {
      const cfg = config();
      const table = qualified(cfg.schema, 'docs');
      await admin.query(`CREATE SCHEMA ${cfg.schema}`);
      // The layout sluice wrote before fingerprints (no fingerprint columns).
      await admin.query(`CREATE TABLE ${table} (id text PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL,
        content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, embedding vector(${DIMS}))`);
      await admin.query(`CREATE INDEX ON ${table} (document_id)`);
      await admin.query(
        `INSERT INTO ${table} SELECT 'old' || g || '#0', 'old' || g, 0, 'text ' || g, '{}', NULL FROM generate_series(1, 30) g`,
      );
      const oid = await tableOid(cfg.schema, 'docs');
      const listedBefore = await listDocuments(cfg, 'docs');
      expect(listedBefore).toHaveLength(30);
      expect(listedBefore.every((d) => d.fingerprint === undefined && d.chunks === 1)).toBe(true);
      // documents() only read: the columns are not there yet
      expect(
        (
          await admin.query(`SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND column_name LIKE 'fingerprint%'`, [
            cfg.schema,
          ])
        ).rowCount,
      ).toBe(0);

      const w = await destination.open(cfg, testContext('fp-migrate'), { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      expect(await tableOid(cfg.schema, 'docs')).toBe(oid);
      expect((await admin.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n).toBe(30);
      // Stored without a fingerprint ⇒ unknown ⇒ the engine rewrites it.
      expect(await w.fingerprints!('docs', ['old1', 'old2', 'never'])).toEqual(new Map());
      await drain(w, [doc('docs', 'old1', 2), stateMessage('docs', 1)]);
      expect(await w.fingerprints!('docs', ['old1', 'old2'])).toEqual(new Map([['old1', fingerprintOf('old1', 1, 1)]]));
      await w.close();
      const listed = await listDocuments(cfg, 'docs');
      expect(listed).toHaveLength(30);
      expect(listed.find((d) => d.documentId === 'old1')).toEqual({
        documentId: 'old1',
        chunks: 2,
        fingerprint: fingerprintOf('old1', 1, 1),
      });
      expect(listed.filter((d) => d.fingerprint).length).toBe(1);
      const cols = await admin.query(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'docs' ORDER BY ordinal_position`,
        [cfg.schema],
      );
      expect(cols.rows.map((r) => r.column_name)).toEqual([
        'id',
        'document_id',
        'chunk_index',
        'content',
        'metadata',
        'embedding',
        'fingerprint_content',
        'fingerprint_metadata',
        'fingerprint_embedder',
        'fingerprint_source',
      ]);
    });
  });

  describe('overwrite', () => {
    it('an unchanged overwrite (every live document KEEP) writes nothing and keeps the live table', async () => {
      const cfg = config({ index: 'hnsw' });
      const ctx = testContext('fp-ow');
      const opts = { streams: [stream('pages', 'overwrite')], dimensions: DIMS };
      const docs = docsOf(150);
      const w = await destination.open(cfg, ctx, opts);
      const load = await engineLike(w, 'pages', docs, true);
      await drain(w, [...load.messages, complete('pages'), stateMessage('pages', 1)]);
      await w.close();
      const oid = await tableOid(cfg.schema, 'pages');
      const before = await snapshot(cfg.schema, 'pages');
      const base = await settledStats(cfg.schema, 'pages', (s) => s.ins >= 300);
      const index0 = await vectorIndexWork(cfg.schema, 'pages');
      const catalog = async () =>
        (await admin.query(`SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [cfg.schema])).rows.map((r) => r.tablename);
      expect(await catalog()).toEqual(['_sluice_state', 'pages']);

      const unchangedRun = async () => {
        const lsn = await walLsn();
        const w2 = await destination.open(cfg, ctx, opts);
        // the lookup reads the live generation
        expect((await w2.fingerprints!('pages', ['d0000'])).get('d0000')).toEqual(fingerprintOf('d0000', 1, 1));
        const rerun = await engineLike(w2, 'pages', docs, true);
        expect(rerun.messages.every((m) => m.type === 'KEEP')).toBe(true);
        const events = await drain(w2, [...rerun.messages, complete('pages'), stateMessage('pages', 1)]);
        await w2.close();
        expect(events.map((e) => e.type)).toEqual(['STATE_COMMITTED']);
        return walBytesSince(lsn);
      };
      const wal = await quietest(unchangedRun);
      expect(await tableOid(cfg.schema, 'pages')).toBe(oid);
      expect(await catalog()).toEqual(['_sluice_state', 'pages']);
      expect(await snapshot(cfg.schema, 'pages')).toEqual(before);
      expect(delta(base, await settledStats(cfg.schema, 'pages'))).toEqual({ ins: 0, upd: 0, del: 0 });
      expect(await vectorIndexWork(cfg.schema, 'pages')).toEqual(index0);
      if (native) expect(wal!).toBeLessThan(8192);
    });

    it('1 % changed: kept documents are copied server-side, metadata-only ones keep their vectors, missing ones go; the swap happens', async () => {
      const cfg = config({ batch_rows: 60 });
      const ctx = testContext('fp-ow2');
      const opts = { streams: [stream('pages', 'overwrite')], dimensions: DIMS };
      const docs = docsOf(100);
      const w = await destination.open(cfg, ctx, opts);
      await drain(w, [...(await engineLike(w, 'pages', docs, true)).messages, complete('pages'), stateMessage('pages', 1)]);
      await w.close();
      const oid = await tableOid(cfg.schema, 'pages');
      const before = new Map((await snapshot(cfg.schema, 'pages')).map((r) => [r.id, r]));

      // d0003 content changed (1 %), d0004 metadata changed, d0099 gone from the source.
      const next = docs
        .filter((d) => d.id !== 'd0099')
        .map((d) => (d.id === 'd0003' ? { ...d, version: 2 } : d.id === 'd0004' ? { ...d, meta: 2 } : d));
      const w2 = await destination.open(cfg, ctx, opts);
      const { messages } = await engineLike(w2, 'pages', next, true);
      expect(
        messages
          .filter((m) => m.type !== 'KEEP')
          .map((m) => [(m as { documentId: string }).documentId, !!(m as { metadataOnly?: boolean }).metadataOnly]),
      ).toEqual([
        ['d0003', false],
        ['d0004', true],
      ]);
      const events = await drain(w2, [...messages, complete('pages'), stateMessage('pages', 2)]);
      await w2.close();
      const written = events.filter((e) => e.type === 'WRITTEN');
      // KEEPs are not counted as written: only the changed and the metadata-only document
      expect(written.reduce((n, e) => n + (e.type === 'WRITTEN' ? e.records : 0), 0)).toBe(2);
      expect(await tableOid(cfg.schema, 'pages')).not.toBe(oid);

      const after = await snapshot(cfg.schema, 'pages');
      expect(after).toHaveLength(198);
      for (const r of after) {
        const old = before.get(r.id)!;
        if (r.id.startsWith('d0003')) {
          expect(r.content).not.toBe(old.content);
          expect(r.fingerprint_content).toBe(fingerprintOf('d0003', 2, 1).content);
        } else if (r.id.startsWith('d0004')) {
          expect({ ...r, metadata: undefined, fingerprint_metadata: undefined }).toEqual({
            ...old,
            metadata: undefined,
            fingerprint_metadata: undefined,
          });
          expect(r.metadata.tag).toBe('m2');
          expect(r.fingerprint_metadata).toBe(fingerprintOf('d0004', 1, 2).metadata);
        } else expect(r).toEqual(old);
      }
      expect(after.some((r) => r.id.startsWith('d0099'))).toBe(false);
    });

    it('KEEPs that are not every live document (one missing, one repeated) still switch, so deletions are not missed', async () => {
      const cfg = config();
      const ctx = testContext('fp-ow3');
      const opts = { streams: [stream('pages', 'overwrite')], dimensions: DIMS };
      const w = await destination.open(cfg, ctx, opts);
      await drain(w, [doc('pages', 'x', 1), doc('pages', 'y', 1), doc('pages', 'z', 1), complete('pages'), stateMessage('pages', 1)]);
      await w.close();
      const run = async (ids: string[]) => {
        const oid = await tableOid(cfg.schema, 'pages');
        const w2 = await destination.open(cfg, ctx, opts);
        await drain(w2, [...ids.map((id) => keep('pages', id)), complete('pages'), stateMessage('pages', 2)]);
        await w2.close();
        const docs = (await listDocuments(cfg, 'pages')).map((d) => d.documentId);
        return { switched: (await tableOid(cfg.schema, 'pages')) !== oid, docs };
      };
      expect(await run(['x', 'y', 'y'])).toEqual({ switched: true, docs: ['x', 'y'] });
      expect(await run(['y', 'x'])).toEqual({ switched: false, docs: ['x', 'y'] });
      expect(await run(['x'])).toEqual({ switched: true, docs: ['x'] });
      // an overwrite the source does not complete changes nothing, KEEPs or not
      const oid = await tableOid(cfg.schema, 'pages');
      const w3 = await destination.open(cfg, ctx, opts);
      await drain(w3, [keep('pages', 'x'), doc('pages', 'q', 1)]);
      await w3.close();
      expect(await tableOid(cfg.schema, 'pages')).toBe(oid);
      expect(
        (await admin.query(`SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [cfg.schema])).rows.map((r) => r.tablename),
      ).toEqual(['_sluice_state', 'pages']);
    });

    it('KEEPs past the in-memory bound are spilled and replayed when a change arrives late', async () => {
      const cfg = config({ index: 'none', insert_rows: 2000, batch_rows: 5000 });
      const ctx = testContext('fp-ow4');
      const opts = { streams: [stream('big', 'overwrite')], dimensions: DIMS };
      const n = 12_500;
      const load: DestinationMessage[] = [];
      for (let i = 0; i < n; i++) load.push(doc('big', `k${i}`, 1));
      const w = await destination.open(cfg, ctx, opts);
      await drain(w, [...load, complete('big'), stateMessage('big', 1)]);
      await w.close();
      const w2 = await destination.open(cfg, ctx, opts);
      const msgs: DestinationMessage[] = [];
      for (let i = 0; i < n - 1; i++) msgs.push(keep('big', `k${i}`));
      msgs.push(doc('big', 'late', 1), complete('big'), stateMessage('big', 2)); // k12499 is gone
      await drain(w2, msgs);
      await w2.close();
      const { rows } = await admin.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE document_id = 'late')::int AS late,
        count(*) FILTER (WHERE fingerprint_content IS NOT NULL)::int AS fp FROM ${qualified(cfg.schema, 'big')}`);
      expect(rows[0]).toEqual({ n: n, late: 1, fp: n });
      expect((await listDocuments(cfg, 'big')).some((d) => d.documentId === `k${n - 1}`)).toBe(false);
    });
  });

  describe('documents()', () => {
    it('lists every document in pages with chunk count and fingerprint (none when its rows disagree), reading only', async () => {
      const cfg = config({ index: 'none' });
      // Nothing there: nothing listed, nothing created.
      expect(await listDocuments(cfg, 'docs')).toEqual([]);
      expect((await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [cfg.schema])).rowCount).toBe(0);

      const msgs: DestinationMessage[] = [];
      for (let i = 0; i < 2100; i++) msgs.push(doc('docs', `p${String(i).padStart(5, '0')}`, 1 + (i % 3)));
      const w = await destination.open(cfg, testContext('fp-docs'), { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      await drain(w, [...msgs, stateMessage('docs', 1)]);
      await w.close();
      await admin.query(`UPDATE ${qualified(cfg.schema, 'docs')} SET fingerprint_content = 'other' WHERE id = 'p00002#1'`);
      const base = await settledStats(cfg.schema, 'docs', (s) => s.upd >= 1);

      const listed = await listDocuments(cfg, 'docs');
      expect(listed).toHaveLength(2100);
      expect(listed.map((d) => d.documentId)).toEqual(msgs.map((m) => (m as { documentId: string }).documentId));
      expect(listed[1]).toEqual({ documentId: 'p00001', chunks: 2, fingerprint: fingerprintOf('p00001', 1, 1) });
      expect(listed[2]).toEqual({ documentId: 'p00002', chunks: 3 });
      expect(delta(base, await settledStats(cfg.schema, 'docs'))).toEqual({ ins: 0, upd: 0, del: 0 });
    });

    it('look-ups asked for together reach the connection one at a time, each with its own answer', async () => {
      const cfg = config();
      const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
      const w = await destination.open(cfg, testContext('fp-serial'), opts);
      await drain(w, [...docsOf(30).map((d) => doc('docs', d.id, d.chunks)), stateMessage('docs', 1)]);
      await w.close();
      const w2 = await destination.open(cfg, testContext('fp-serial'), opts);
      // Count the queries outstanding on the writer's connection (pg queues a second one, and
      // warns from the third: "Calling client.query() when the client is already executing a query").
      const client = (w2 as unknown as { session: { client: pg.Client } }).session.client;
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
      let outstanding = 0;
      let most = 0;
      (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
        most = Math.max(most, ++outstanding);
        return query(...args).finally(() => outstanding--);
      };
      const ids = docsOf(30).map((d) => d.id);
      const answers = await Promise.all([
        w2.fingerprints!('docs', ids.slice(0, 10)),
        w2.fingerprints!('docs', ids.slice(10, 20)),
        w2.fingerprints!('docs', ['nope', ...ids.slice(20)]),
      ]);
      expect(most).toBe(1);
      expect(answers.map((a) => [...a.keys()].sort())).toEqual([ids.slice(0, 10), ids.slice(10, 20), ids.slice(20)]);
      expect(answers[0].get(ids[0])).toEqual(fingerprintOf(ids[0], 1, 1));
      await w2.close();
    });

    it('the id hash of the KEEP check is the same in SQL and in JavaScript, and the spill file keeps order', async () => {
      const ids = ['a', 'ünïcødé 文書', 'with "quotes" and \\ backslash', ''];
      const { rows } = await admin.query<{ h: string }>(
        `SELECT ${idHashSql('x')}::text AS h FROM unnest($1::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n`,
        [ids],
      );
      expect(rows.map((r) => BigInt(r.h))).toEqual(ids.map(idHash));

      const log = new KeepLog(testContext().workDir);
      const many = Array.from({ length: 23_456 }, (_, i) => `id-${i}`);
      for (const id of many) log.add(id);
      const replayed: string[] = [];
      for await (const b of log.batches(5000)) {
        expect(b.length).toBeLessThanOrEqual(5000);
        replayed.push(...b);
      }
      expect(replayed).toEqual(many);
      expect(log.count).toBe(many.length);
      expect(log.sum).toBe(many.reduce((s, id) => s + idHash(id), 0n));
      log.dispose();
    });
  });
});

describe('embedded PGlite', () => {
  it(
    'documents() joins the database its own process has open for writing (the sweep of a sync); a second writer is still refused',
    { timeout: 240_000 },
    async () => {
      const baseDir = scratchDir('sluice-emb-fp-');
      const cfg = PgvectorConfigSchema.parse({ embedded: '.sluice/pg', index: 'none' });
      const ctx = testContext('emb-fp', baseDir);
      const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
      const w = await destination.open(cfg, ctx, opts);
      await drain(w, [doc('docs', 'a', 2), doc('docs', 'b', 1), stateMessage('docs', 1)]);
      // the writer is still open: listing reads through another connection to its database
      const listed: StoredDocument[] = [];
      for await (const d of destination.documents!(cfg, ctx, 'docs')) listed.push(d);
      expect(listed).toEqual([
        { documentId: 'a', chunks: 2, fingerprint: fingerprintOf('a', 1, 1) },
        { documentId: 'b', chunks: 1, fingerprint: fingerprintOf('b', 1, 1) },
      ]);
      const busy = await destination.open(cfg, ctx, opts).catch((e: unknown) => e);
      expect(busy).toBeInstanceOf(SluiceError);
      expect((busy as Error).message).toMatch(/is in use by process/);
      await w.close();
      expect(existsSync(join(baseDir, '.sluice/pg/sluice.lock'))).toBe(false);
      // the next run opens it again and finds what was written
      const again = await destination.open(cfg, ctx, opts);
      expect(await again.fingerprints!('docs', ['a', 'c'])).toEqual(new Map([['a', fingerprintOf('a', 1, 1)]]));
      await again.close();
    },
  );
});
