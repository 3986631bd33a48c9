// The pgvector destination driven directly through open()/write(), on both servers users run:
// PGlite + pgvector served over the wire protocol (test/servers/pglite.global.ts; batched INSERTs)
// and native PostgreSQL 15 + pgvector (COPY BINARY into staging + merge; see
// test/helpers/pgvector-backends.ts).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeOnPgvectorBackends } from '../../test/helpers/pgvector-backends.ts';
import type { DestinationEvent, DestinationMessage, DestinationStream } from '../../src/protocol/connector.ts';
import type { StateMessage } from '../../src/protocol/messages.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import destination from './index.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { decodeVectorText, qualified } from './sql.ts';
import { chunkContent, deleteMessage, documentMessage, drain, stateMessage, testContext, vectorFor } from './testing.ts';

const DIMS = 8;
// Set by each backend's suite before its tests run (suites run one after the other).
let url: string;
let admin: pg.Client;

const uniqueSchema = (prefix = 's') => `${prefix}_${randomBytes(4).toString('hex')}`;

function config(over: Partial<Record<string, unknown>> = {}): PgvectorConfig {
  return PgvectorConfigSchema.parse({ url, schema: uniqueSchema(), ...over });
}

const stream = (name: string, mode: DestinationStream['destinationSyncMode']): DestinationStream => ({
  name,
  destinationSyncMode: mode,
  primaryKey: [['id']],
});

async function rows(schema: string, table: string) {
  const { rows } = await admin.query<{
    id: string;
    document_id: string;
    chunk_index: number;
    content: string;
    metadata: Record<string, unknown>;
    embedding: string;
  }>(
    `SELECT id, document_id, chunk_index, content, metadata, embedding::text AS embedding FROM ${qualified(schema, table)} ORDER BY document_id, chunk_index`,
  );
  return rows;
}

/** document id → its chunk contents, in chunk order. */
async function byDocument(schema: string, table: string) {
  const out: Record<string, string[]> = {};
  for (const r of await rows(schema, table)) (out[r.document_id] ??= []).push(r.content);
  return out;
}

const expectedChunks = (doc: string, n: number, version: number) => Array.from({ length: n }, (_, i) => chunkContent(doc, i, version));

describeOnPgvectorBackends('pgvector destination', (backend) => {
  beforeAll(async () => {
    url = backend.url;
    admin = new pg.Client({ connectionString: url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  describe('append_dedup', () => {
    it('replaces a document as a unit: shrink 7→5, grow, delete; stores and returns the state', async () => {
      const cfg = config();
      const ctx = testContext('dedup-conn');
      const w = await destination.open(cfg, ctx, { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      const events = await drain(w, [
        documentMessage('docs', 'a', 7, DIMS, 1),
        documentMessage('docs', 'b', 2, DIMS, 1),
        documentMessage('docs', 'c', 3, DIMS, 1),
        stateMessage('docs', 1),
        documentMessage('docs', 'a', 5, DIMS, 2), // shrink
        documentMessage('docs', 'b', 4, DIMS, 2), // grow
        deleteMessage('docs', 'c'),
        stateMessage('docs', 2),
      ]);
      await w.close();

      expect(await byDocument(cfg.schema, 'docs')).toEqual({ a: expectedChunks('a', 5, 2), b: expectedChunks('b', 4, 2) });
      const all = await rows(cfg.schema, 'docs');
      expect(all.map((r) => r.id)).toEqual(['a#0', 'a#1', 'a#2', 'a#3', 'a#4', 'b#0', 'b#1', 'b#2', 'b#3']);
      expect(all[0].metadata).toEqual({ version: 2, path: 'a.md' });
      const stored = decodeVectorText(all[0].embedding);
      const want = vectorFor(chunkContent('a', 0, 2), DIMS);
      stored.forEach((x, i) => expect(x).toBeCloseTo(want[i], 6));

      expect(events.map((e) => e.type)).toEqual(['WRITTEN', 'STATE_COMMITTED', 'WRITTEN', 'STATE_COMMITTED']);
      expect(events[0]).toEqual({ type: 'WRITTEN', stream: 'docs', records: 3, chunksWritten: 12, chunksDeleted: 0 });
      // second batch: a loses 2 chunks, c loses 3; a's 5 and b's 4 are rewritten
      expect(events[2]).toEqual({ type: 'WRITTEN', stream: 'docs', records: 2, chunksWritten: 9, chunksDeleted: 5 });

      const state = await admin.query(`SELECT state FROM ${qualified(cfg.schema, '_sluice_state')} WHERE connection = 'dedup-conn'`);
      expect(state.rows[0].state).toEqual({ streams: { docs: { cursor: 2 } } });
      const again = await destination.open(cfg, ctx, { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      expect(await again.readState!()).toEqual({ streams: { docs: { cursor: 2 } } });
      await again.close();
      // a connection that never wrote has no state
      const other = await destination.open(cfg, testContext('other-conn'), { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      expect(await other.readState!()).toBeUndefined();
      await other.close();
    });

    it('an unchanged re-run leaves the database untouched: the same state with nothing to write is not written again', async () => {
      const cfg = config();
      const ctx = testContext('noop-conn');
      const opts = { streams: [stream('docs', 'append_dedup')], dimensions: DIMS };
      const first = await destination.open(cfg, ctx, opts);
      await first.readState!();
      await drain(first, [documentMessage('docs', 'a', 2, DIMS, 1), stateMessage('docs', 1)]);
      await first.close();
      const stateRow = async () =>
        (
          await admin.query(
            `SELECT xmin::text AS xmin, state FROM ${qualified(cfg.schema, '_sluice_state')} WHERE connection = 'noop-conn'`,
          )
        ).rows[0];
      const written = await stateRow();

      const again = await destination.open(cfg, ctx, opts);
      expect(await again.readState!()).toEqual({ streams: { docs: { cursor: 1 } } });
      const events = await drain(again, [stateMessage('docs', 1)]);
      expect(events.map((e) => e.type)).toEqual(['STATE_COMMITTED']); // still acknowledged
      expect(await stateRow()).toEqual(written); // same row version: no transaction wrote it
      // A new state, or the same state with data, is written as always.
      await drain(again, [stateMessage('docs', 2)]);
      const next = await stateRow();
      expect(next.state).toEqual({ streams: { docs: { cursor: 2 } } });
      expect(next.xmin).not.toBe(written.xmin);
      await drain(again, [documentMessage('docs', 'b', 1, DIMS, 1), stateMessage('docs', 2)]);
      expect((await stateRow()).xmin).not.toBe(next.xmin);
      expect(Object.keys(await byDocument(cfg.schema, 'docs'))).toEqual(['a', 'b']);
      await again.close();
    });

    it('keeps only the last version of a document repeated within one batch, and builds the vector index after the load', async () => {
      const cfg = config();
      const w = await destination.open(cfg, testContext(), { streams: [stream('Docs/Guide', 'append_dedup')], dimensions: DIMS });
      const table = 'docs_guide';
      let indexedDuringLoad: boolean | undefined;
      async function* input(): AsyncGenerator<DestinationMessage> {
        yield documentMessage('Docs/Guide', 'x', 6, DIMS, 1);
        yield stateMessage('Docs/Guide', 1);
        const { rowCount } = await admin.query(
          `SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexdef ILIKE '%hnsw%'`,
          [cfg.schema, table],
        );
        indexedDuringLoad = !!rowCount;
        yield documentMessage('Docs/Guide', 'x', 4, DIMS, 2);
        yield deleteMessage('Docs/Guide', 'x');
        yield documentMessage('Docs/Guide', 'x', 2, DIMS, 3);
      }
      const events = await drain(w, input());
      await w.close();
      expect(indexedDuringLoad).toBe(false);
      expect(await byDocument(cfg.schema, table)).toEqual({ x: expectedChunks('x', 2, 3) });
      expect(events.at(-1)).toEqual({ type: 'WRITTEN', stream: 'Docs/Guide', records: 2, chunksWritten: 2, chunksDeleted: 4 });
      const idx = await admin.query(
        `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`,
        [cfg.schema, table],
      );
      expect(idx.rows.map((r) => r.indexname)).toEqual(['docs_guide_document_id_idx', 'docs_guide_embedding_idx', 'docs_guide_pkey']);
      expect(idx.rows[1].indexdef).toMatch(/USING hnsw \(embedding .*vector_cosine_ops\) WITH \(m='16', ef_construction='64'\)/);
    });

    it('commits on the row threshold without a state and acks every state in order', async () => {
      const cfg = config({ batch_rows: 10 });
      const w = await destination.open(cfg, testContext('thresh'), { streams: [stream('s', 'append_dedup')], dimensions: DIMS });
      const msgs: DestinationMessage[] = [];
      for (let d = 0; d < 12; d++) msgs.push(documentMessage('s', `d${d}`, 3, DIMS));
      msgs.push(stateMessage('s', 7));
      const events = await drain(w, msgs);
      await w.close();
      const written = events.filter((e) => e.type === 'WRITTEN');
      expect(written.length).toBeGreaterThanOrEqual(3);
      expect(written.reduce((n, e) => n + (e.type === 'WRITTEN' ? e.chunksWritten : 0), 0)).toBe(36);
      expect(events.at(-1)!.type).toBe('STATE_COMMITTED');
      expect((await rows(cfg.schema, 's')).length).toBe(36);
    });
  });

  describe('append', () => {
    it('upserts by chunk id (replays never duplicate) and deletes remove every chunk', async () => {
      const cfg = config();
      const w = await destination.open(cfg, testContext(), { streams: [stream('events', 'append')], dimensions: DIMS });
      await drain(w, [
        documentMessage('events', 'e1', 4, DIMS, 1),
        documentMessage('events', 'e2', 2, DIMS, 1),
        stateMessage('events', 1),
        documentMessage('events', 'e1', 4, DIMS, 1), // replay
        documentMessage('events', 'e1', 2, DIMS, 2), // append keeps e1#2, e1#3 from v1
        deleteMessage('events', 'e2'),
        stateMessage('events', 2),
      ]);
      await w.close();
      expect(await byDocument(cfg.schema, 'events')).toEqual({
        e1: [chunkContent('e1', 0, 2), chunkContent('e1', 1, 2), chunkContent('e1', 2, 1), chunkContent('e1', 3, 1)],
      });
    });
  });

  describe('exactly once', () => {
    it('writes the state in the same transaction as its batch: when the state cannot be stored, the batch is not there either', async () => {
      const cfg = config();
      const w = await destination.open(cfg, testContext('atomic'), { streams: [stream('s', 'append_dedup')], dimensions: DIMS });
      await drain(w, [documentMessage('s', 'kept', 2, DIMS), stateMessage('s', 1)]);
      // Sabotage the state table so the state write fails after the batch's rows went in.
      await admin.query(`ALTER TABLE ${qualified(cfg.schema, '_sluice_state')} ADD CONSTRAINT no_more CHECK (false) NOT VALID`);
      const events: string[] = [];
      const err = await (async () => {
        try {
          for await (const e of w.write(
            (async function* () {
              yield documentMessage('s', 'lost', 3, DIMS);
              yield stateMessage('s', 2);
            })(),
          ))
            events.push(e.type);
        } catch (e) {
          return e;
        }
      })();
      await w.close();
      expect(err).toBeInstanceOf(SluiceError);
      expect((err as SluiceError).where).toMatch(/connection atomic/);
      expect(events).toEqual([]);
      expect(await byDocument(cfg.schema, 's')).toEqual({ kept: expectedChunks('kept', 2, 1) });
      const state = await admin.query(`SELECT state FROM ${qualified(cfg.schema, '_sluice_state')}`);
      expect(state.rows.map((r) => r.state)).toEqual([{ streams: { s: { cursor: 1 } } }]);
    });
  });

  describe('pipelined commits', () => {
    it('a failed commit stops every later one: earlier batches and states stay, nothing after them lands', async () => {
      const cfg = config({ batch_rows: 4 });
      const w = await destination.open(cfg, testContext('pipelined'), { streams: [stream('s', 'append_dedup')], dimensions: DIMS });
      await drain(w, []);
      // Only the state with cursor 2 is refused, so the second transaction fails mid-run.
      await admin.query(
        `ALTER TABLE ${qualified(cfg.schema, '_sluice_state')} ADD CONSTRAINT not_two CHECK ((state->'streams'->'s'->>'cursor')::int <> 2)`,
      );
      const events: DestinationEvent[] = [];
      const err = await (async () => {
        try {
          for await (const e of w.write(
            (async function* () {
              for (let i = 0; i < 6; i++) yield documentMessage('s', `a${i}`, 1, DIMS); // a commit at 4 rows, then 2 buffered
              yield stateMessage('s', 1);
              for (let i = 0; i < 3; i++) yield documentMessage('s', `b${i}`, 1, DIMS);
              yield stateMessage('s', 2);
              for (let i = 0; i < 5; i++) yield documentMessage('s', `c${i}`, 1, DIMS);
              yield stateMessage('s', 3);
            })(),
          ))
            events.push(e);
        } catch (e) {
          return e;
        }
      })();
      await w.close();
      expect(err).toBeInstanceOf(SluiceError);
      expect(
        events.filter((e) => e.type === 'STATE_COMMITTED').map((e) => (e as { state: StateMessage }).state.stream?.stream_state),
      ).toEqual([{ cursor: 1 }]);
      expect(Object.keys(await byDocument(cfg.schema, 's')).sort()).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5']);
      const state = await admin.query(`SELECT state FROM ${qualified(cfg.schema, '_sluice_state')}`);
      expect(state.rows.map((r) => r.state)).toEqual([{ streams: { s: { cursor: 1 } } }]);
    });
  });

  describe('acknowledgements', () => {
    it('reports a commit while the input is quiet: a source that waits for the ack before sending more does not stall', async () => {
      const cfg = config({ batch_rows: 2 });
      const w = await destination.open(cfg, testContext('acks'), { streams: [stream('s', 'append_dedup')], dimensions: DIMS });
      let acked = 0;
      let wake: (() => void) | undefined;
      const events: string[] = [];
      const run = (async () => {
        for await (const e of w.write(
          (async function* () {
            for (let round = 1; round <= 3; round++) {
              for (let i = 0; i < 3; i++) yield documentMessage('s', `r${round}d${i}`, 1, DIMS);
              yield stateMessage('s', round);
              // Like Kafka or CDC: nothing more until this state is acknowledged.
              while (acked < round) await new Promise<void>((resolve) => (wake = resolve));
            }
          })(),
        )) {
          events.push(e.type);
          if (e.type === 'STATE_COMMITTED') {
            acked++;
            wake?.();
          }
        }
      })();
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('stalled waiting for an acknowledgement')), 20_000));
      await Promise.race([run, timeout]);
      await w.close();
      expect(acked).toBe(3);
      expect(Object.keys(await byDocument(cfg.schema, 's'))).toHaveLength(9);
    });
  });

  describe('overwrite', () => {
    it('swaps generations atomically: a concurrent reader never sees 0 rows or a half-loaded table', async () => {
      const cfg = config({ batch_rows: 40 });
      const load = async (docs: number, version: number, complete = true) => {
        const w = await destination.open(cfg, testContext('ow'), { streams: [stream('pages', 'overwrite')], dimensions: DIMS });
        const msgs: DestinationMessage[] = [];
        for (let d = 0; d < docs; d++) msgs.push(documentMessage('pages', `p${d}`, 2, DIMS, version));
        if (complete) msgs.push({ type: 'STREAM_COMPLETE', stream: 'pages' }, stateMessage('pages', version));
        const events = await drain(w, msgs);
        await w.close();
        return events;
      };
      await load(50, 1);
      expect((await rows(cfg.schema, 'pages')).length).toBe(100);

      const reader = new pg.Client({ connectionString: url });
      await reader.connect();
      const seen: number[] = [];
      let stop = false;
      const poller = (async () => {
        while (!stop) {
          const r = await reader.query(`SELECT count(*)::int AS n FROM ${qualified(cfg.schema, 'pages')}`);
          seen.push(r.rows[0].n);
          await new Promise((res) => setImmediate(res));
        }
      })();
      const events = await load(80, 2);
      stop = true;
      await poller;
      await reader.end();

      expect(seen.length).toBeGreaterThan(3);
      expect(seen.every((n) => n === 100 || n === 160)).toBe(true);
      expect(seen[0]).toBe(100);
      expect(await byDocument(cfg.schema, 'pages')).toMatchObject({ p0: expectedChunks('p0', 2, 2), p79: expectedChunks('p79', 2, 2) });
      expect((await rows(cfg.schema, 'pages')).length).toBe(160);
      expect(events.at(-1)!.type).toBe('STATE_COMMITTED');
      const tables = await admin.query(`SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [cfg.schema]);
      expect(tables.rows.map((r) => r.tablename)).toEqual(['_sluice_state', 'pages']);
      const idx = await admin.query(`SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'pages' ORDER BY 1`, [
        cfg.schema,
      ]);
      expect(idx.rows.map((r) => r.indexname)).toEqual(['pages_document_id_idx', 'pages_embedding_idx', 'pages_pkey']);

      // An overwrite the source never completes leaves the live generation alone.
      await load(10, 3, false);
      expect((await rows(cfg.schema, 'pages')).length).toBe(160);
      const after = await admin.query(`SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1`, [cfg.schema]);
      expect(after.rows.map((r) => r.tablename)).toEqual(['_sluice_state', 'pages']);
      // and a third generation can take the names again
      await load(5, 4);
      expect(await byDocument(cfg.schema, 'pages')).toEqual(
        Object.fromEntries(Array.from({ length: 5 }, (_, d) => [`p${d}`, expectedChunks(`p${d}`, 2, 4)])),
      );
    });
  });

  describe('identifiers and errors', () => {
    it('quotes schema and table names with capitals, spaces and quotes; search and maintain work on them', async () => {
      const schema = `My "Schema" ${randomBytes(2).toString('hex')}`;
      const cfg = PgvectorConfigSchema.parse({ url, schema, table: { notes: 'Notes "2" Table' }, distance: 'l2' });
      const w = await destination.open(cfg, testContext(), { streams: [stream('notes', 'append_dedup')], dimensions: DIMS });
      await drain(w, [documentMessage('notes', 'n1', 3, DIMS), documentMessage('notes', 'n2', 1, DIMS), stateMessage('notes', 1)]);
      await w.close();
      expect(await byDocument(schema, 'Notes "2" Table')).toEqual({ n1: expectedChunks('n1', 3, 1), n2: expectedChunks('n2', 1, 1) });

      const hits = await destination.search!(cfg, testContext(), {
        vector: vectorFor(chunkContent('n1', 2, 1), DIMS),
        topK: 2,
        streams: ['notes'],
      });
      expect(hits).toHaveLength(2);
      expect(hits[0]).toMatchObject({
        stream: 'notes',
        documentId: 'n1',
        chunkIndex: 2,
        content: chunkContent('n1', 2, 1),
        metadata: { path: 'n1.md' },
      });
      expect(hits[0].score).toBeCloseTo(1, 5); // l2 distance 0 → 1 / (1 + 0)
      expect(hits[1].score).toBeLessThan(hits[0].score);

      const report = (await destination.maintain!(cfg, testContext(), { reindex: true, streams: ['notes'] })) as {
        tables: Array<Record<string, any>>;
      };
      expect(report.tables[0]).toMatchObject({ table: `${schema}.Notes "2" Table`, rows: 4, dimensions: DIMS, reindexed: true });
      expect(report.tables[0].totalBytes).toBeGreaterThan(report.tables[0].tableBytes);
      expect(report.tables[0].indexes.map((i: { method: string }) => i.method).sort()).toEqual(['btree', 'btree', 'hnsw']);
    });

    it('refuses an existing table of another dimension before writing anything', async () => {
      const cfg = config();
      const w = await destination.open(cfg, testContext(), { streams: [stream('docs', 'append_dedup')], dimensions: DIMS });
      await drain(w, [documentMessage('docs', 'a', 2, DIMS), stateMessage('docs', 1)]);
      await w.close();
      const err = await destination
        .open(cfg, testContext(), {
          streams: [stream('docs', 'append_dedup'), stream('fresh', 'append')],
          dimensions: 4,
          embedderName: 'hash',
        })
        .catch((e) => e);
      expect(err).toBeInstanceOf(SluiceError);
      expect(err.message).toBe(`table ${cfg.schema}.docs has ${DIMS} dimensions, embedding model hash gives 4`);
      expect(err.hint).toMatch(/another table/);
      // nothing was created for the other stream either
      const { rowCount } = await admin.query(`SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'fresh'`, [cfg.schema]);
      expect(rowCount).toBe(0);
    });

    it('rejects COPY on PGlite (takes it on PostgreSQL), two streams on one table, and an unreachable server, in words', async () => {
      const copyCfg = config({ write_method: 'copy' });
      const copy = await destination.open(copyCfg, testContext(), { streams: [stream('a', 'append')], dimensions: DIMS }).catch((e) => e);
      if (backend.isPglite) {
        expect(copy).toBeInstanceOf(SluiceError);
        expect(copy.message).toMatch(/not available on PGlite/);
      } else {
        await drain(copy, [documentMessage('a', 'd', 3, DIMS), stateMessage('a', 1)]);
        await copy.close();
        expect(await byDocument(copyCfg.schema, 'a')).toEqual({ d: expectedChunks('d', 3, 1) });
      }

      const clash = await destination
        .open(config({ table: 'same' }), testContext(), { streams: [stream('a', 'append'), stream('b', 'append')], dimensions: DIMS })
        .catch((e) => e);
      expect(clash.message).toMatch(/streams a and b would both write table .*\.same/);

      const down = await destination
        .open(PgvectorConfigSchema.parse({ url: 'postgres://u:hunter2@127.0.0.1:1/db' }), testContext(), {
          streams: [stream('a', 'append')],
          dimensions: DIMS,
        })
        .catch((e) => e);
      expect(down).toBeInstanceOf(SluiceError);
      expect(down.kind).toBe('connection');
      expect(down.message + down.where + down.hint).not.toMatch(/hunter2/);
      expect(down.where).toMatch(/127\.0\.0\.1:1/);

      expect(() => PgvectorConfigSchema.parse({ schema: 'x' })).toThrow(/exactly one of url or embedded/);
      const check = await destination.check(config(), testContext());
      expect(check.ok).toBe(true);
    });
  });

  describe('options', () => {
    it('table templates, ivfflat with inner product, connections without an embedder, NUL characters', async () => {
      const cfg = config({ table: 'kb_{stream}', index: 'ivfflat', ivfflat: { lists: 3 }, distance: 'inner_product' });
      const w = await destination.open(cfg, testContext(), { streams: [stream('faq', 'append_dedup')], dimensions: DIMS });
      const doc = documentMessage('faq', 'q1', 2, DIMS) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
      doc.chunks[0].content = 'nul\u0000inside';
      doc.chunks[0].metadata = { note: 'a\u0000b' };
      const tricky = 'quotes " \' back\\slash {braces}, commas, NULL, \n newline, ü€😀';
      doc.chunks[1].content = tricky;
      doc.chunks[1].metadata = { tricky, list: [1, 'two', { three: null }], empty: '' };
      await drain(w, [doc, { type: 'STREAM_COMPLETE', stream: 'faq' }, stateMessage('faq', 1)]);
      await w.close();
      const stored = await rows(cfg.schema, 'kb_faq');
      expect(stored.map((r) => r.content)).toEqual(['nulinside', tricky]);
      expect(stored[0].metadata).toEqual({ note: 'ab' });
      expect(stored[1].metadata).toEqual({ tricky, list: [1, 'two', { three: null }], empty: '' });
      const idx = await admin.query(`SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'kb_faq_embedding_idx'`, [
        cfg.schema,
      ]);
      expect(idx.rows[0].indexdef).toMatch(/USING ivfflat \(embedding .*vector_ip_ops\) WITH \(lists='3'\)/);
      const hits = await destination.search!(cfg, testContext(), {
        vector: vectorFor(chunkContent('q1', 1, 1), DIMS),
        topK: 1,
        streams: ['faq'],
      });
      expect(hits[0].chunkIndex).toBe(1);
      expect(hits[0].score).toBeCloseTo(1, 5); // unit vectors: inner product with itself

      // no embedding block: an unsized vector column, NULL embeddings, no vector index
      const plain = config();
      const pw = await destination.open(plain, testContext(), { streams: [stream('notes', 'append')] });
      const bare = documentMessage('notes', 'n', 2, DIMS) as Extract<DestinationMessage, { type: 'DOCUMENT' }>;
      for (const c of bare.chunks) delete c.embedding;
      await drain(pw, [bare]);
      await pw.close();
      const r = await admin.query(`SELECT count(*)::int AS n, count(embedding)::int AS e FROM ${qualified(plain.schema, 'notes')}`);
      expect(r.rows[0]).toEqual({ n: 2, e: 0 });
      const vi = await admin.query(`SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'notes' ORDER BY 1`, [
        plain.schema,
      ]);
      expect(vi.rows.map((x) => x.indexname)).toEqual(['notes_document_id_idx', 'notes_pkey']);
    });
  });

  describe('search', () => {
    it('returns top-k hits through the HNSW index even when k exceeds pgvector’s default ef_search of 40', async () => {
      const cfg = config();
      const w = await destination.open(cfg, testContext(), { streams: [stream('many', 'append_dedup')], dimensions: DIMS });
      await drain(
        w,
        Array.from({ length: 90 }, (_, i) => documentMessage('many', `m${i}`, 1, DIMS)),
      );
      await w.close();
      // PGlite has one session behind every connection: this makes the search's planner use the index.
      // On PostgreSQL the search's own session gets the setting through the url.
      await admin.query('SET enable_seqscan = off');
      const searchCfg = backend.isPglite ? cfg : { ...cfg, url: `${url}?options=${encodeURIComponent('-c enable_seqscan=off')}` };
      try {
        const hits = await destination.search!(searchCfg, testContext(), {
          vector: vectorFor(chunkContent('m3', 0, 1), DIMS),
          topK: 60,
          streams: ['many'],
        });
        expect(hits).toHaveLength(60);
        expect(hits[0]).toMatchObject({ documentId: 'm3', chunkIndex: 0 });
        expect(hits.every((h, i) => i === 0 || h.score <= hits[i - 1].score)).toBe(true);
        const plan = await admin.query(
          `EXPLAIN SELECT id FROM ${qualified(cfg.schema, 'many')} ORDER BY embedding <=> $1::vector LIMIT 60`,
          [`[${Array(DIMS).fill(0.1).join(',')}]`],
        );
        expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/many_embedding_idx/);
      } finally {
        await admin.query('RESET enable_seqscan');
      }
    });
  });
});
