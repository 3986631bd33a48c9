// `Destination.documents()` for pgvector: every document of a stream's table with its chunk count
// and fingerprint, read-only. In every full_refresh + append_dedup sync the engine lists the stream
// once (deletion sweep and unchanged decisions), so this is on the sync's critical path.
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import type pg from 'pg';
import type { ConnectorContext, StoredDocument } from '../../src/protocol/connector.ts';
import type { PgvectorConfig } from './config.ts';
import {
  documentFingerprintSql,
  fingerprintColumnsSql,
  hasEmbedderColumn,
  hasFingerprintColumns,
  inspectTable,
  storedFingerprint,
  type TableInfo,
} from './schema.ts';
import { openSession, pgError, type Session } from './session.ts';
import { takeListingSession } from './spare.ts';
import { qualified, tableNameFor } from './sql.ts';
import { CopyTextRows } from './copy-rows.ts';

const require = createRequire(import.meta.url);
const { to: copyTo } = require('pg-copy-streams') as { to: (sql: string) => Readable & pg.Submittable };

/** Documents per array handed out (native) or per keyset page (PGlite): bounds Node's memory. */
export const DOCUMENTS_BATCH = 2000;

export interface ListOptions {
  /** Documents per array (tests make it small to cross batch boundaries). */
  batchSize?: number;
}

/**
 * Lists in document id order (both ways below), though callers may not rely on any order.
 *
 * Native PostgreSQL: ONE `COPY (SELECT document_id, <fingerprint columns> … ORDER BY document_id) TO
 * STDOUT`: the chunk rows in document_id order (off its index: no sort, no hash table, no
 * work_mem), streamed without a round trip per batch, and folded into documents here
 * (`DocumentFold`, the same rule as documentFingerprintSql). The server's min/max text aggregates
 * cost about 5x the scan itself, so folding here is what keeps the listing cheap for a server that
 * is busy with the sync's own reads. The stream is read one chunk at a time as the caller takes
 * arrays: a slow caller leaves the rest in the socket and the server waits (memory stays bounded).
 * One statement, one snapshot: committed rows only, each document once, however long the caller
 * takes. Its ACCESS SHARE lock on the table is held while the COPY runs (plain writes go on;
 * DROP/ALTER of that table wait for it).
 *
 * PGlite serves one session behind every connection: an open transaction or cursor here would take
 * in the writer's statements (and its uncommitted rows), and COPY over its socket is not safe. So
 * there each page is its own statement (keyset on document_id, aggregated by
 * documentFingerprintSql), as before.
 */
export async function* listDocuments(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ListOptions = {},
): AsyncGenerator<StoredDocument> {
  for await (const page of listDocumentBatches(config, ctx, stream, options)) yield* page;
}

/** `documentBatches()`: listDocuments' documents in arrays of at most `batchSize` (native) or one per page (PGlite). */
export async function* listDocumentBatches(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ListOptions = {},
): AsyncGenerator<StoredDocument[]> {
  const batch = options.batchSize ?? DOCUMENTS_BATCH;
  // The engine lists a stream while its own writer has the database open (end-of-read sweep).
  const session = (await takeListingSession(config, ctx)) ?? (await openSession(config, ctx, { joinOpen: true }));
  const table = tableNameFor(stream, config.table);
  const name = qualified(config.schema, table);
  const where = `connection ${ctx.connection}, stream ${stream}, destination ${session.label}`;
  try {
    let info;
    try {
      info = await inspectTable(session.client, config.schema, table);
    } catch (err) {
      throw pgError(err, where, `cannot inspect table ${config.schema}.${table}`);
    }
    if (!info.exists) return;
    const pages = session.isPglite ? keysetPages(session, name, info, batch) : copyPass(session, name, info, batch);
    try {
      yield* pages;
    } catch (err) {
      throw pgError(err, where, `cannot list the documents of ${config.schema}.${table}`);
    }
  } finally {
    // Ending the connection also ends a COPY still running (an early return needs nothing else).
    await session.close();
  }
}

type ChunkRow = {
  document_id: string;
  fingerprint_content: string | null;
  fingerprint_metadata: string | null;
  fingerprint_embedder: string | null;
};

/** A chunk row of the COPY: document_id, fingerprint_content, fingerprint_metadata, fingerprint_embedder. */
type ChunkRowArray = [string, string | null, string | null, string | null];

/**
 * One document from its chunk rows, by the rule of documentFingerprintSql: a fingerprint only when
 * every row has one and all are the same; the embedder tag only when every row has the same.
 * (Text equality in PostgreSQL's deterministic collations is byte equality, as here.)
 */
class DocumentFold {
  readonly documentId: string;
  private chunks = 1;
  private readonly content: string | null;
  private readonly metadata: string | null;
  private readonly embedder: string | null;
  private sameFingerprint: boolean;
  private sameEmbedder: boolean;

  constructor(r: ChunkRowArray) {
    this.documentId = r[0];
    this.content = r[1];
    this.metadata = r[2];
    this.embedder = r[3];
    this.sameFingerprint = r[1] !== null && r[2] !== null;
    this.sameEmbedder = r[3] !== null;
  }

  add(r: ChunkRowArray): void {
    this.chunks++;
    if (this.sameFingerprint && (r[1] !== this.content || r[2] !== this.metadata)) this.sameFingerprint = false;
    if (this.sameEmbedder && r[3] !== this.embedder) this.sameEmbedder = false;
  }

  done(): StoredDocument {
    const fingerprint = this.sameFingerprint
      ? storedFingerprint({
          fingerprint_content: this.content,
          fingerprint_metadata: this.metadata,
          fingerprint_embedder: this.sameEmbedder ? this.embedder : null,
        })
      : undefined;
    return fingerprint
      ? { documentId: this.documentId, chunks: this.chunks, fingerprint }
      : { documentId: this.documentId, chunks: this.chunks };
  }
}

async function* copyPass(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredDocument[]> {
  // Rows of one document are adjacent in document_id order, so one document is folded at a time.
  const copy = session.client.query(
    copyTo(`COPY (SELECT document_id, ${fingerprintColumnsSql(info)} FROM ${name} ORDER BY document_id) TO STDOUT`),
  );
  // pg reports a failure of the COPY (or of its connection, also after an early return) by emitting
  // 'error' on the stream itself; the loop below sees it through the iterator, this keeps it from
  // ever being unhandled.
  copy.on('error', () => {});
  const rows = new CopyTextRows(4);
  let current: DocumentFold | undefined;
  let page: StoredDocument[] = [];
  const ready: StoredDocument[][] = [];
  const onRow = (r: (string | null)[]) => {
    const row = r as ChunkRowArray;
    if (current?.documentId === row[0]) return current.add(row);
    if (current) {
      page.push(current.done());
      if (page.length === batch) {
        ready.push(page);
        page = [];
      }
    }
    current = new DocumentFold(row);
  };
  // One chunk at a time: while the caller holds an array, nothing is read, the stream's buffer
  // fills, pg-copy-streams stops reading the socket and the server waits (backpressure).
  for await (const chunk of copy as AsyncIterable<Buffer>) {
    rows.push(chunk, onRow);
    while (ready.length) yield ready.shift()!;
  }
  rows.end();
  if (current) page.push(current.done());
  if (page.length) yield page;
}

async function* keysetPages(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredDocument[]> {
  const fingerprint = hasFingerprintColumns(info)
    ? documentFingerprintSql(hasEmbedderColumn(info))
    : 'NULL AS fingerprint_content, NULL AS fingerprint_metadata, NULL AS fingerprint_embedder';
  let after: string | undefined;
  for (;;) {
    const { rows } = await session.client.query<ChunkRow & { chunks: number }>(
      `SELECT document_id, count(*)::int AS chunks, ${fingerprint} FROM ${name}
        ${after === undefined ? '' : 'WHERE document_id > $1'} GROUP BY document_id ORDER BY document_id LIMIT ${batch}`,
      after === undefined ? [] : [after],
    );
    if (rows.length)
      yield rows.map((r) => {
        const fp = storedFingerprint(r);
        return fp ? { documentId: r.document_id, chunks: r.chunks, fingerprint: fp } : { documentId: r.document_id, chunks: r.chunks };
      });
    if (rows.length < batch) return;
    after = rows[rows.length - 1].document_id;
  }
}
