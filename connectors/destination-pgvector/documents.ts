// `Destination.documents()` for pgvector: every document of a stream's table with its chunk count
// and fingerprint, read-only. In every full_refresh + append_dedup sync the engine lists the stream
// once (deletion sweep and unchanged decisions), so this is on the sync's critical path.
import { copyOut } from '../../src/cdk/postgres-copy.ts';
import type { ConnectorContext, StoredDocument, StoredSource } from '../../src/protocol/connector.ts';
import type { PgvectorConfig } from './config.ts';
import {
  documentFingerprintSql,
  fingerprintColumnsSql,
  hasEmbedderColumn,
  hasFingerprintColumns,
  hasSourceColumn,
  inspectTable,
  storedFingerprint,
  type TableInfo,
} from './schema.ts';
import { openSession, pgError, type Session } from './session.ts';
import { takeListingSession, takeTableColumns } from './spare.ts';
import { qualified, tableNameFor } from './sql.ts';
import { DocumentFold, SourceFold } from './document-fold.ts';

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
 * STDOUT (FORMAT binary)`: the chunk rows in document_id order (off its index: no sort, no hash
 * table, no work_mem), streamed without a round trip per batch, and folded into documents here
 * (./document-fold.ts `DocumentFold`, the same rule as documentFingerprintSql). The server's min/max
 * text aggregates cost about 5x the scan itself, so folding here is what keeps the listing cheap for
 * a server that is busy with the sync's own reads. The socket is read as the caller takes arrays: a
 * slow caller leaves the rest in the socket and the server waits (memory stays bounded).
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
export function listDocumentBatches(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ListOptions = {},
): AsyncGenerator<StoredDocument[]> {
  const batch = options.batchSize ?? DOCUMENTS_BATCH;
  return listTable(config, ctx, stream, (session, name, info) =>
    session.isPglite ? keysetPages(session, name, info, batch) : copyPass(session, name, info, batch),
  );
}

/**
 * `documentSources()`: the same documents, each with only the source digest its listed fingerprint
 * would carry (the light listing for streams read with digests). Native: one COPY of
 * `document_id, hashtext(fingerprint_content || ':' || fingerprint_metadata), fingerprint_source`
 * (about a third of the full listing's bytes, off the same covering index), folded by SourceFold,
 * which gives a source only where DocumentFold would give a fingerprint with it. PGlite: the keyset
 * pages of documents(), sources only.
 */
export function listDocumentSources(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ListOptions = {},
): AsyncGenerator<StoredSource[]> {
  const batch = options.batchSize ?? DOCUMENTS_BATCH;
  return listTable(config, ctx, stream, (session, name, info) =>
    session.isPglite ? sourceKeysetPages(session, name, info, batch) : sourceCopyPass(session, name, info, batch),
  );
}

/** A listing of the stream's table (nothing when it does not exist) on the sync's spare session or a new one, closed at the end. */
async function* listTable<T>(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  pass: (session: Session, name: string, info: TableInfo) => AsyncGenerator<T[]>,
): AsyncGenerator<T[]> {
  // The engine lists a stream while its own writer has the database open (end-of-read sweep).
  const session = (await takeListingSession(config, ctx)) ?? (await openSession(config, ctx, { joinOpen: true }));
  const table = tableNameFor(stream, config.table);
  const name = qualified(config.schema, table);
  const where = `connection ${ctx.connection}, stream ${stream}, destination ${session.label}`;
  try {
    let info: TableInfo;
    // In a sync, the writer opened the table moments ago and left its columns (see ./spare.ts).
    const columns = takeTableColumns(config, ctx, table);
    try {
      info = columns ? { exists: true, columns } : await inspectTable(session.client, config.schema, table);
    } catch (err) {
      throw pgError(err, where, `cannot inspect table ${config.schema}.${table}`);
    }
    if (!info.exists) return;
    try {
      // In document_id order off the document index, never sorted: a sort holds back the first row
      // until the whole table is read, and spills past work_mem. The planner sorts a narrow enough
      // listing (the light one, 50,000 rows: seq scan and an external sort, 110-140 ms before the
      // first row, against 70 ms streamed off the index). LOCAL: for this transaction, which ends
      // with the session (a read-only COPY: one statement, one snapshot, as without it).
      if (!session.isPglite) await session.client.query('BEGIN READ ONLY; SET LOCAL enable_sort = off');
      yield* pass(session, name, info);
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
  fingerprint_source: string | null;
};

/** The native listing: one COPY, its rows folded into documents (one document at a time: its rows are adjacent in document_id order). */
function copyPass(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredDocument[]> {
  // One page at a time: while the caller holds one, the socket is not read and the server waits.
  return copyOut(
    session.client,
    `COPY (SELECT document_id, ${fingerprintColumnsSql(info)} FROM ${name} ORDER BY document_id) TO STDOUT (FORMAT binary)`,
    new DocumentFold(batch),
  );
}

async function* keysetPages(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredDocument[]> {
  const fingerprint = hasFingerprintColumns(info)
    ? documentFingerprintSql(hasEmbedderColumn(info), hasSourceColumn(info))
    : 'NULL AS fingerprint_content, NULL AS fingerprint_metadata, NULL AS fingerprint_embedder, NULL AS fingerprint_source';
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

/** The light listing's per-row columns: a hash of the fingerprint (NULL without one) and the source digest. */
function sourceColumnsSql(info: TableInfo): string {
  const hash = hasFingerprintColumns(info) ? `hashtext(fingerprint_content || ':' || fingerprint_metadata)` : 'NULL::int4';
  return `${hash}, ${hasSourceColumn(info) ? 'fingerprint_source' : 'NULL::text'}`;
}

function sourceCopyPass(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredSource[]> {
  return copyOut(
    session.client,
    `COPY (SELECT document_id, ${sourceColumnsSql(info)} FROM ${name} ORDER BY document_id) TO STDOUT (FORMAT binary)`,
    new SourceFold(batch),
  );
}

/** PGlite: keysetPages' documents (the same rule, in-process: no bytes to save) with their sources only. */
async function* sourceKeysetPages(session: Session, name: string, info: TableInfo, batch: number): AsyncGenerator<StoredSource[]> {
  for await (const page of keysetPages(session, name, info, batch))
    yield page.map((d) =>
      d.fingerprint?.source ? { documentId: d.documentId, source: d.fingerprint.source } : { documentId: d.documentId },
    );
}
