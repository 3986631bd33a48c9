// `Destination.documents()` for pgvector: every document of a stream's table with its chunk count
// and fingerprint, read-only. In every full_refresh + append_dedup sync the engine lists the stream
// once (deletion sweep and unchanged decisions), so this is on the sync's critical path.
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

/** Chunk rows per FETCH (native) or documents per keyset page (PGlite): bounds Node's memory. */
export const DOCUMENTS_BATCH = 2000;

export interface ListOptions {
  /** Documents per round trip (tests make it small to cross batch boundaries). */
  batchSize?: number;
}

/**
 * Lists in document id order (both ways below), though callers may not rely on any order.
 *
 * Native PostgreSQL: ONE query in a READ ONLY transaction, read through a cursor in batches: the
 * chunk rows' document id and fingerprint columns in document_id order (off its index: no sort, no
 * hash table, no work_mem), folded into documents here (`DocumentFold`, the same rule as
 * documentFingerprintSql). The server's min/max text aggregates cost about 5x the scan itself, so
 * folding here is what keeps the listing cheap for a server that is busy with the sync's own reads.
 * The next batch is asked for before the current one is handed out, so the server works while the
 * caller does. The cursor's snapshot is taken once: committed rows only, each document once,
 * however long the caller takes. The cursor holds an ACCESS SHARE lock on the table until the
 * listing ends (plain writes go on; DROP/ALTER of that table wait for it).
 *
 * PGlite serves one session behind every connection: an open transaction or cursor here would take
 * in the writer's statements (and its uncommitted rows). So there each page is its own statement
 * (keyset on document_id, aggregated by documentFingerprintSql), as before.
 */
export async function* listDocuments(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ListOptions = {},
): AsyncGenerator<StoredDocument> {
  for await (const page of listDocumentBatches(config, ctx, stream, options)) yield* page;
}

/** `documentBatches()`: listDocuments' documents in arrays, one per FETCH (native) or page (PGlite). */
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
    const pages = session.isPglite ? keysetPages(session, name, info, batch) : cursorPass(session, name, info, batch);
    try {
      yield* pages;
    } catch (err) {
      throw pgError(err, where, `cannot list the documents of ${config.schema}.${table}`);
    }
  } finally {
    // Ending the connection also ends its transaction and cursor (an early return needs nothing else).
    await session.close();
  }
}

type ChunkRow = {
  document_id: string;
  fingerprint_content: string | null;
  fingerprint_metadata: string | null;
  fingerprint_embedder: string | null;
};

/** A chunk row of the cursor: document_id, fingerprint_content, fingerprint_metadata, fingerprint_embedder. */
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

async function* cursorPass(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredDocument[]> {
  const { client } = session;
  await client.query('BEGIN READ ONLY');
  // Rows of one document are adjacent in document_id order, so one document is folded at a time.
  await client.query(
    `DECLARE sluice_documents NO SCROLL CURSOR FOR SELECT document_id, ${fingerprintColumnsSql(info)} FROM ${name} ORDER BY document_id`,
  );
  // Rows as arrays (columns in the order selected): cheaper for pg to build than objects.
  const fetch = () => client.query<ChunkRowArray>({ text: `FETCH ${batch} FROM sluice_documents`, rowMode: 'array' });
  let next = fetch();
  let current: DocumentFold | undefined;
  try {
    for (;;) {
      const { rows } = await next;
      const more = rows.length === batch;
      // Asked for before the caller gets this batch: the server works while the caller does.
      if (more) next = fetch();
      // The documents this batch completes (the last one may go on in the next batch).
      const page: StoredDocument[] = [];
      for (const r of rows) {
        if (current?.documentId === r[0]) current.add(r);
        else {
          if (current) page.push(current.done());
          current = new DocumentFold(r);
        }
      }
      if (!more) {
        await client.query('COMMIT');
        if (current) page.push(current.done());
        if (page.length) yield page;
        break;
      }
      if (page.length) yield page;
    }
  } finally {
    // An early return or an error leaves a FETCH in flight; session.close() fails it, unobserved here.
    next.catch(() => {});
  }
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
