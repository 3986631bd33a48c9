// pgvector `documents()` (documents.ts): one COPY … TO STDOUT on native PostgreSQL, keyset pages on
// PGlite. The tables are written here with SQL in the layout the writer makes, and every listing is
// checked against documentFingerprintSql (the rule the writer's look-ups use) run by the server.
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnPgvectorBackends, type PgvectorBackend } from '../../test/helpers/pgvector-backends.ts';
import type { StoredDocument } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { listDocumentBatches, listDocuments } from './documents.ts';
import { documentFingerprintSql, storedFingerprint } from './schema.ts';
import { qualified } from './sql.ts';
import { documentMessage, drain, stateMessage, testContext } from './testing.ts';
import destination from './index.ts';

describeOnPgvectorBackends('pgvector documents()', (backend: PgvectorBackend) => {
  let admin: pg.Client;
  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
  });

  const config = (): PgvectorConfig =>
    PgvectorConfigSchema.parse({ url: backend.url, schema: `docs_${randomBytes(4).toString('hex')}`, index: 'none' });

  /**
   * The chunk table as the writer makes it (`fingerprints: false`: the layout from before
   * fingerprints; `embedder: false`, `source: false`: from before those columns).
   */
  async function createTable(
    cfg: PgvectorConfig,
    opts: { fingerprints?: boolean; embedder?: boolean; source?: boolean } = {},
  ): Promise<string> {
    const table = qualified(cfg.schema, 'docs');
    const fingerprints = opts.fingerprints ?? true;
    const embedder = fingerprints && (opts.embedder ?? true);
    await admin.query(`CREATE SCHEMA ${cfg.schema}`);
    await admin.query(`CREATE TABLE ${table} (id text PRIMARY KEY, document_id text NOT NULL, chunk_index int NOT NULL,
      content text NOT NULL, metadata jsonb NOT NULL DEFAULT '{}'::jsonb, embedding vector(3)
      ${fingerprints ? ', fingerprint_content text, fingerprint_metadata text' : ''}${embedder ? ', fingerprint_embedder text' : ''}${
        embedder && (opts.source ?? true) ? ', fingerprint_source text' : ''
      })`);
    await admin.query(`CREATE INDEX ON ${table} (document_id)`);
    return table;
  }

  /** Documents d000..d(n-1) with 1 + (i % 3) chunks, each chunk with the document's fingerprint. */
  async function insertDocuments(table: string, n: number, from = 0, withFingerprints = true): Promise<void> {
    await admin.query(
      `INSERT INTO ${table} (id, document_id, chunk_index, content${withFingerprints ? ', fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source' : ''})
       SELECT d || '#' || c, d, c, 'text ' || d || ' ' || c${withFingerprints ? `, 'content-' || d, 'meta-' || d, 'hash/hash/3', '0123456789abcdef:' || md5(d)` : ''}
         FROM generate_series($1::int, $2::int) g, LATERAL (SELECT 'd' || lpad(g::text, 3, '0') AS d) x, generate_series(0, g % 3) c`,
      [from, from + n - 1],
    );
  }

  /** What documentFingerprintSql makes of the table, by the server (the writer's rule). */
  async function expected(table: string, hasEmbedder = true, hasSource = hasEmbedder): Promise<StoredDocument[]> {
    const { rows } = await admin.query<{
      document_id: string;
      chunks: number;
      fingerprint_content: string | null;
      fingerprint_metadata: string | null;
      fingerprint_embedder: string | null;
      fingerprint_source: string | null;
    }>(`SELECT document_id, count(*)::int AS chunks, ${documentFingerprintSql(hasEmbedder, hasSource)} FROM ${table} GROUP BY document_id`);
    return rows
      .map((r) => {
        const fingerprint = storedFingerprint(r);
        return { documentId: r.document_id, chunks: r.chunks, ...(fingerprint ? { fingerprint } : {}) };
      })
      .sort(byId);
  }

  const byId = (a: StoredDocument, b: StoredDocument) => (a.documentId < b.documentId ? -1 : a.documentId > b.documentId ? 1 : 0);

  async function list(cfg: PgvectorConfig, batchSize?: number): Promise<StoredDocument[]> {
    const out: StoredDocument[] = [];
    for await (const d of listDocuments(cfg, testContext('list'), 'docs', batchSize ? { batchSize } : {})) out.push(d);
    return out;
  }

  /** Sessions (other than the admin's) holding a lock on the table: an open listing transaction. */
  async function lockHolders(table: string): Promise<number> {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks WHERE relation = to_regclass($1) AND pid <> pg_backend_pid()`,
      [table],
    );
    return rows[0].n;
  }

  /**
   * Native: documents w00000..w(n-1) with 1 + (i % 2) chunks and ids of ~1,500 characters, so the
   * listing's COPY output (tens of MB) is more than the socket buffers between the server and Node
   * hold: its COPY still runs while the caller holds the first arrays.
   */
  async function insertWideDocuments(table: string, n: number): Promise<void> {
    await admin.query(
      `INSERT INTO ${table} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata, fingerprint_embedder)
       SELECT d || '#' || c, d, c, 'x', 'content-' || g, 'meta-' || g, 'hash/hash/3'
         FROM generate_series(0, $1::int - 1) g, LATERAL (SELECT 'w' || lpad(g::text, 6, '0') || repeat('.', 1500) AS d) x,
              generate_series(0, g % 2) c`,
      [n],
    );
  }

  /** The listing's COPY on the server, while it runs: its pid and what it waits for. */
  async function runningCopy(table: string): Promise<{ pid: number; wait_event: string | null }[]> {
    const { rows } = await admin.query<{ pid: number; wait_event: string | null }>(
      `SELECT pid, wait_event FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT document_id%' AND query LIKE '%' || $1 || '%'
         AND state = 'active' AND pid <> pg_backend_pid()`,
      [table],
    );
    return rows;
  }

  /** Waits until no session runs or holds anything on the table (an ended listing's server side is gone). */
  async function settled(table: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (((await lockHolders(table)) > 0 || (await runningCopy(table)).length > 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(await lockHolders(table)).toBe(0);
    expect(await runningCopy(table)).toEqual([]);
  }

  it('lists every document once, across many batches, with its chunk count and the fingerprint its rows agree on', async () => {
    const cfg = config();
    const table = await createTable(cfg);
    await insertDocuments(table, 40);
    // Chunk rows that disagree: another content fingerprint, a missing one, another embedder only.
    await admin.query(`UPDATE ${table} SET fingerprint_content = 'other' WHERE id = 'd002#1'`);
    await admin.query(`UPDATE ${table} SET fingerprint_metadata = NULL WHERE id = 'd005#2'`);
    await admin.query(`UPDATE ${table} SET fingerprint_embedder = 'openai/x/3' WHERE id = 'd008#0'`);
    await admin.query(
      `UPDATE ${table} SET fingerprint_content = NULL, fingerprint_metadata = NULL, fingerprint_embedder = NULL WHERE document_id = 'd011'`,
    );
    // Source digests that disagree: another one, a missing one (the fingerprint stays, without source).
    await admin.query(`UPDATE ${table} SET fingerprint_source = 'tag:other' WHERE id = 'd014#1'`);
    await admin.query(`UPDATE ${table} SET fingerprint_source = NULL WHERE id = 'd017#2'`);
    const want = await expected(table);
    expect(want).toHaveLength(40);
    expect(want.find((d) => d.documentId === 'd013')?.fingerprint?.source).toMatch(/^0123456789abcdef:[0-9a-f]{32}$/);
    for (const id of ['d014', 'd017'])
      expect(want.find((d) => d.documentId === id)).toEqual({
        documentId: id,
        chunks: 3,
        fingerprint: { content: `content-${id}`, metadata: `meta-${id}`, embedder: 'hash/hash/3' },
      });
    expect(want.find((d) => d.documentId === 'd002')).toEqual({ documentId: 'd002', chunks: 3 });
    expect(want.find((d) => d.documentId === 'd005')).toEqual({ documentId: 'd005', chunks: 3 });
    expect(want.find((d) => d.documentId === 'd008')).toEqual({
      documentId: 'd008',
      chunks: 3,
      fingerprint: { content: 'content-d008', metadata: 'meta-d008', source: expect.stringMatching(/^0123456789abcdef:/) },
    });
    expect(want.find((d) => d.documentId === 'd011')).toEqual({ documentId: 'd011', chunks: 3 });
    expect(want.find((d) => d.documentId === 'd004')).toEqual({
      documentId: 'd004',
      chunks: 2,
      fingerprint: {
        content: 'content-d004',
        metadata: 'meta-d004',
        embedder: 'hash/hash/3',
        source: '0123456789abcdef:' + createHash('md5').update('d004').digest('hex'),
      },
    });

    // Batches of 1, 2 and 5 split documents of 2 and 3 chunks across batch boundaries.
    for (const batchSize of [1, 2, 5, undefined]) {
      const listed = await list(cfg, batchSize);
      expect(new Set(listed.map((d) => d.documentId)).size).toBe(listed.length);
      expect([...listed].sort(byId)).toEqual(want);
    }
    // Through the Destination interface too.
    const viaDestination: StoredDocument[] = [];
    for await (const d of destination.documents!(cfg, testContext('list'), 'docs')) viaDestination.push(d);
    expect(viaDestination.sort(byId)).toEqual(want);
  });

  it('documentBatches(): the same documents in arrays, none empty, none longer than a batch; an early return or an error ends it', async () => {
    const cfg = config();
    const table = await createTable(cfg);
    await insertDocuments(table, 40);
    await admin.query(`UPDATE ${table} SET fingerprint_content = 'other' WHERE id = 'd002#1'`);
    const want = await expected(table);
    for (const batchSize of [1, 2, 5, undefined]) {
      const pages: StoredDocument[][] = [];
      for await (const page of listDocumentBatches(cfg, testContext('list'), 'docs', batchSize ? { batchSize } : {})) pages.push(page);
      expect(pages.every((p) => p.length > 0 && p.length <= (batchSize ?? 2000))).toBe(true);
      // Documents of 2 and 3 chunks are split across FETCHes of 1, 2 and 5 rows (native), yet each is listed once.
      expect(pages.flat().sort(byId)).toEqual(want);
      if (batchSize === 5) expect(pages.length).toBeGreaterThan(1);
    }
    const viaDestination: StoredDocument[][] = [];
    for await (const page of destination.documentBatches!(cfg, testContext('list'), 'docs')) viaDestination.push(page);
    expect(viaDestination.flat().sort(byId)).toEqual(want);

    // An early return: the session (and, native, its COPY) ends.
    for await (const page of listDocumentBatches(cfg, testContext('list'), 'docs', { batchSize: 4 })) {
      expect(page[0].documentId).toBe('d000');
      break;
    }
    await settled(table);

    // An error between two arrays names the table (PGlite: the table goes away between two pages).
    if (!backend.isPglite) return; // native: 'a COPY that fails while it runs …' below
    let pages = 0;
    const err = await (async () => {
      for await (const _ of listDocumentBatches(cfg, testContext('list'), 'docs', { batchSize: 3 })) {
        if (++pages === 1) await admin.query(`DROP TABLE ${table}`);
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toContain(`cannot list the documents of ${cfg.schema}.docs`);
    expect(pages).toBe(1);
  });

  it('after a first load the writer has given the table statistics and (native) vacuumed it: the next listing reads the index only', async () => {
    /** One first load into a new schema; the plan of the listing after it (native), or undefined on PGlite. */
    const firstLoad = async (): Promise<string | undefined> => {
      const cfg = config();
      const w = await destination.open(cfg, testContext('first-load'), {
        streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }],
        dimensions: 3,
      });
      await w.readState?.();
      const docs = Array.from({ length: 60 }, (_, i) => documentMessage('docs', `d${String(i).padStart(3, '0')}`, 1 + (i % 2), 3));
      await drain(w, [...docs, { type: 'STREAM_COMPLETE', stream: 'docs' }, stateMessage('docs', 1)]);
      await w.close();
      expect(await list(cfg)).toHaveLength(60);
      if (backend.isPglite) return undefined; // PGlite: ANALYZE only (one session shared with the sync's other work)
      const table = qualified(cfg.schema, 'docs');
      const { rows } = await admin.query<{ vacuumed: boolean; analyzed: boolean }>(
        `SELECT last_vacuum IS NOT NULL AS vacuumed, last_analyze IS NOT NULL AS analyzed FROM pg_stat_user_tables WHERE relid = to_regclass($1)`,
        [table],
      );
      expect(rows).toEqual([{ vacuumed: true, analyzed: true }]);
      await admin.query('SET enable_seqscan = off');
      try {
        const plan = await admin.query<{ 'QUERY PLAN': string }>(
          `EXPLAIN (ANALYZE, COSTS OFF) SELECT document_id, fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source FROM ${table} ORDER BY document_id`,
        );
        return plan.rows.map((r) => r['QUERY PLAN']).join('\n');
      } finally {
        await admin.query('RESET enable_seqscan');
      }
    };
    // The visibility map is set: the listing's index-only scan fetches no heap page. Other test
    // files share this server, and a transaction of theirs still open when the writer's VACUUM runs
    // keeps it from marking the new rows visible to all; so a few first loads, one of which (with
    // no such neighbour) must show it. A writer that did not vacuum fails every one.
    const quiet = async () => {
      for (let waited = 0; waited < 15_000; waited += 100) {
        const { rows } = await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)`,
        );
        if (!rows[0].n) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    let text = await firstLoad();
    for (let attempt = 1; text !== undefined && !text.includes('Heap Fetches: 0') && attempt < 5; attempt++) {
      await quiet(); // wait (at most 15 s) until no other session holds a snapshot or a transaction
      text = await firstLoad();
    }
    if (text === undefined) return;
    expect(text).toContain('Index Only Scan');
    expect(text).toContain('Heap Fetches: 0');
  });

  it('a table from before fingerprints (or before the embedder tag, or the source digest) lists chunk counts, fingerprints only where kept', async () => {
    const old = config();
    const oldTable = await createTable(old, { fingerprints: false });
    await insertDocuments(oldTable, 7, 0, false);
    const listed = await list(old, 2);
    expect(listed.sort(byId).map((d) => [d.documentId, d.chunks, d.fingerprint])).toEqual(
      Array.from({ length: 7 }, (_, i) => [`d00${i}`, 1 + (i % 3), undefined]),
    );

    const noEmbedder = config();
    const table = await createTable(noEmbedder, { embedder: false });
    await admin.query(
      `INSERT INTO ${table} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata)
       VALUES ('a#0', 'a', 0, 'x', 'c', 'm'), ('a#1', 'a', 1, 'y', 'c', 'm'), ('b#0', 'b', 0, 'z', 'c2', 'm2')`,
    );
    expect((await list(noEmbedder, 1)).sort(byId)).toEqual([
      { documentId: 'a', chunks: 2, fingerprint: { content: 'c', metadata: 'm' } },
      { documentId: 'b', chunks: 1, fingerprint: { content: 'c2', metadata: 'm2' } },
    ]);
    expect((await list(noEmbedder, 1)).sort(byId)).toEqual(await expected(table, false));

    const noSource = config();
    const sourceless = await createTable(noSource, { source: false });
    await admin.query(
      `INSERT INTO ${sourceless} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata, fingerprint_embedder)
       VALUES ('a#0', 'a', 0, 'x', 'c', 'm', 'e/m/3'), ('a#1', 'a', 1, 'y', 'c', 'm', 'e/m/3'), ('b#0', 'b', 0, 'z', 'c2', 'm2', NULL)`,
    );
    for (const batch of [1, undefined])
      expect((await list(noSource, batch)).sort(byId)).toEqual([
        { documentId: 'a', chunks: 2, fingerprint: { content: 'c', metadata: 'm', embedder: 'e/m/3' } },
        { documentId: 'b', chunks: 1, fingerprint: { content: 'c2', metadata: 'm2' } },
      ]);
    expect((await list(noSource, 1)).sort(byId)).toEqual(await expected(sourceless, true, false));
  });

  it('a missing table lists nothing and creates nothing', async () => {
    const cfg = config();
    expect(await list(cfg)).toEqual([]);
    expect((await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [cfg.schema])).rowCount).toBe(0);
    await admin.query(`CREATE SCHEMA ${cfg.schema}`);
    expect(await list(cfg)).toEqual([]);
  });

  it('an early return ends the listing: its session and (native) its transaction are gone', async () => {
    const cfg = config();
    const table = await createTable(cfg);
    await insertDocuments(table, 30);
    // At once, with the rest of the COPY output unread (its failure on close must go unobserved).
    for await (const d of listDocuments(cfg, testContext('list'), 'docs', { batchSize: 4 })) {
      expect(d.documentId).toBe('d000');
      break;
    }
    const seen: string[] = [];
    for await (const d of listDocuments(cfg, testContext('list'), 'docs', { batchSize: 4 })) {
      seen.push(d.documentId);
      if (seen.length === 3) break;
    }
    expect(seen).toHaveLength(3);
    // The server notices the closed connection right away or shortly.
    await settled(table);
    // Nothing left half-open: the table takes an exclusive lock, and a new listing sees everything.
    await admin.query(`ALTER TABLE ${table} ADD COLUMN extra int`);
    expect(await list(cfg, 4)).toHaveLength(30);
  });

  it('an error in the middle of the listing names the table', async () => {
    const cfg = config();
    const table = await createTable(cfg);
    const documents = backend.isPglite ? 30 : 20_000;
    if (backend.isPglite) await insertDocuments(table, documents);
    else await insertWideDocuments(table, documents);
    let listed = 0;
    const err = await (async () => {
      for await (const _ of listDocuments(cfg, testContext('list'), 'docs', { batchSize: 3 })) {
        if (++listed !== 1) continue;
        if (backend.isPglite) {
          // Between two keyset pages nothing holds the table: it can go away.
          await admin.query(`DROP TABLE ${table}`);
        } else {
          // The listing's server session ends (a restart, an administrator) while its COPY runs.
          const copies = await runningCopy(table);
          expect(copies).toHaveLength(1);
          await admin.query('SELECT pg_terminate_backend($1)', [copies[0].pid]);
        }
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toContain(`cannot list the documents of ${cfg.schema}.docs`);
    expect((err as SluiceError).where).toContain('stream docs');
    expect(listed).toBeGreaterThan(0);
    expect(listed).toBeLessThan(documents);
    if (!backend.isPglite) await settled(table);
  });

  it('document ids with tabs, newlines, backslashes, \\N and non-ASCII characters, and non-ASCII fingerprints, are listed exactly as stored', async () => {
    const cfg = config();
    const table = await createTable(cfg);
    const ids = [
      'tab\there',
      'new\nline',
      'carriage\rreturn',
      'back\\slash',
      '\\',
      '\\N',
      'N',
      '\\t (not a tab)',
      'bell\u0007 backspace\b formfeed\f vtab\v',
      'trailing backslash\\',
      'ünïcödé — 日本語 😀',
      ' spaced ',
      '',
    ];
    let n = 0;
    for (const id of ids)
      for (let c = 0; c < 2; c++)
        await admin.query(
          `INSERT INTO ${table} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)
           VALUES ($1, $2, $3, 'x', $4, 'm\tm', 'e\\e', $5)`,
          [`row${n++}`, id, c, `c-${id}`, `t:${id}`],
        );
    // Non-ASCII fingerprint values: rows that agree, and rows that differ in one character of the
    // same UTF-8 length (the listing compares a document's further rows as bytes).
    const accented: [string, string, string, string, string][] = [
      ['agree', 'cé😀', 'mé', 'e/ü/3', 't:é😀'],
      ['agree', 'cé😀', 'mé', 'e/ü/3', 't:é😀'],
      ['differ', 'cé', 'mé', 'e/ü/3', 't:é'],
      ['differ', 'cè', 'mé', 'e/ü/3', 't:é'],
      ['embedders', 'c', 'm', 'e/ü/3', 't:e'],
      ['embedders', 'c', 'm', 'e/ű/3', 't:e'],
      ['sources', 'c', 'm', 'e/ü/3', 't:é'],
      ['sources', 'c', 'm', 'e/ü/3', 't:è'],
    ];
    for (const [id, content, metadata, embedder, source] of accented)
      await admin.query(
        `INSERT INTO ${table} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source)
         VALUES ($1, $2, 0, 'x', $3, $4, $5, $6)`,
        [`row${n++}`, id, content, metadata, embedder, source],
      );
    const want = await expected(table);
    expect(want.map((d) => d.documentId).sort()).toEqual([...ids, 'agree', 'differ', 'embedders', 'sources'].sort());
    expect(want.find((d) => d.documentId === 'agree')?.fingerprint).toEqual({
      content: 'cé😀',
      metadata: 'mé',
      embedder: 'e/ü/3',
      source: 't:é😀',
    });
    expect(want.find((d) => d.documentId === 'differ')?.fingerprint).toBeUndefined();
    expect(want.find((d) => d.documentId === 'embedders')?.fingerprint).toEqual({ content: 'c', metadata: 'm', source: 't:e' });
    expect(want.find((d) => d.documentId === 'sources')?.fingerprint).toEqual({ content: 'c', metadata: 'm', embedder: 'e/ü/3' });
    expect(want.find((d) => d.documentId === 'tab\there')?.fingerprint).toEqual({
      content: 'c-tab\there',
      metadata: 'm\tm',
      embedder: 'e\\e',
      source: 't:tab\there',
    });
    for (const batchSize of [1, 3, undefined]) expect((await list(cfg, batchSize)).sort(byId)).toEqual(want);
  });

  // Native only: PGlite serves one session behind every connection, so there is no other writer.
  if (!backend.isPglite)
    it('committed rows only: a writer transaction open during the listing, and one committed after it began, are not seen', async () => {
      const cfg = config();
      const table = await createTable(cfg);
      await insertDocuments(table, 20);
      const writer = new pg.Client({ connectionString: backend.url });
      await writer.connect();
      try {
        await writer.query('BEGIN');
        await writer.query(
          `INSERT INTO ${table} (id, document_id, chunk_index, content, fingerprint_content, fingerprint_metadata) VALUES ('new#0', 'new', 0, 'x', 'c', 'm')`,
        );
        await writer.query(`DELETE FROM ${table} WHERE document_id = 'd001'`);
        await writer.query(`UPDATE ${table} SET fingerprint_content = 'changed' WHERE document_id = 'd004'`);
        const before = await expected(table);
        const listed: StoredDocument[] = [];
        for await (const d of listDocuments(cfg, testContext('list'), 'docs', { batchSize: 2 })) {
          listed.push(d);
          // Committed while the listing runs: after the COPY's snapshot, so not part of this listing.
          if (listed.length === 1) await admin.query(`DELETE FROM ${table} WHERE document_id = 'd019'`);
        }
        expect(listed.sort(byId)).toEqual(before);
        expect(listed.map((d) => d.documentId)).not.toContain('new');
        expect(listed.map((d) => d.documentId)).toContain('d001');
        expect(listed.find((d) => d.documentId === 'd004')?.fingerprint?.content).toBe('content-d004');
        expect(listed.map((d) => d.documentId)).toContain('d019');
      } finally {
        await writer.query('ROLLBACK').catch(() => {});
        await writer.end();
      }
      expect((await list(cfg)).map((d) => d.documentId)).not.toContain('d019');
    });
  // Native only: the listing is one COPY, read as the caller takes arrays.
  if (!backend.isPglite)
    it('a slow caller holds the COPY back: the server waits to write, Node does not take in the table; then every document comes', async () => {
      const cfg = config();
      const table = await createTable(cfg);
      const documents = 20_000; // ~45 MB of COPY output, more than the socket buffers hold
      await insertWideDocuments(table, documents);
      const listing = listDocumentBatches(cfg, testContext('list'), 'docs', { batchSize: 100 });
      const iterator = listing[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done) throw new Error('the listing ended before its first array');
      expect(first.value).toHaveLength(100);
      // The caller takes its time: the COPY is still running, blocked on writing to the client.
      let copies: { pid: number; wait_event: string | null }[] = [];
      const deadline = Date.now() + 10_000;
      do {
        await new Promise((r) => setTimeout(r, 100));
        copies = await runningCopy(table);
      } while (copies[0]?.wait_event !== 'ClientWrite' && Date.now() < deadline);
      expect(copies).toEqual([{ pid: expect.any(Number), wait_event: 'ClientWrite' }]);
      // Then it reads on: every document exactly once, in arrays of at most 100.
      const ids = first.value.map((d) => d.documentId);
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        expect(r.value.length).toBeGreaterThan(0);
        expect(r.value.length).toBeLessThanOrEqual(100);
        for (const d of r.value) ids.push(d.documentId);
      }
      expect(ids).toHaveLength(documents);
      expect(new Set(ids).size).toBe(documents);
      expect(ids[documents - 1]).toBe(`w${String(documents - 1).padStart(6, '0')}${'.'.repeat(1500)}`);
      await settled(table);
    });
});
