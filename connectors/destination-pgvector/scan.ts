// `Destination.scanChunks` for pgvector (`sluice verify`): every row of a stream's table in pages
// of 1,000 by primary key (keyset pagination, so memory and each query stay small), read-only.
import type { ConnectorContext, ScanOptions, ScannedChunk } from '../../src/protocol/connector.ts';
import type { PgvectorConfig } from './config.ts';
import { fingerprintColumnsSql, inspectTable, storedFingerprint } from './schema.ts';
import { openSession, pgError } from './session.ts';
import { ident, qualified, tableNameFor } from './sql.ts';

const PAGE = 1000;

export async function* scanChunks(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ScanOptions = {},
): AsyncGenerator<ScannedChunk> {
  const session = await openSession(config, ctx);
  const table = tableNameFor(stream, config.table);
  try {
    const info = await inspectTable(session.client, config.schema, table);
    if (!info.exists) return;
    // Tables written before fingerprints (or their embedder tag) were kept lack those columns.
    const fingerprint = fingerprintColumnsSql(info);
    const { rows: ext } = await session.client.query<{ nspname: string }>(
      `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'`,
    );
    // The size of each stored vector (an unsized `vector` column may hold several).
    const dims = ext[0] ? `${ident(ext[0].nspname)}.vector_dims(embedding)` : 'NULL::int';
    const name = qualified(config.schema, table);
    let after: string | null = null;
    let left = options.limit ?? Infinity;
    for (;;) {
      const limit = Math.min(PAGE, left);
      if (limit <= 0) return;
      const params: unknown[] = [after, limit];
      let where = '($1::text IS NULL OR id > $1)';
      if (options.documentIds) {
        params.push(options.documentIds);
        where += ' AND document_id = ANY($3::text[])';
      }
      let rows: {
        id: string;
        document_id: string;
        chunk_index: number;
        content: string;
        dims: number | null;
        fingerprint_content: string | null;
        fingerprint_metadata: string | null;
        fingerprint_embedder: string | null;
        fingerprint_source: string | null;
      }[];
      try {
        ({ rows } = await session.client.query(
          `SELECT id, document_id, chunk_index, content, ${dims} AS dims, ${fingerprint} FROM ${name} WHERE ${where} ORDER BY id LIMIT $2`,
          params,
        ));
      } catch (err) {
        throw pgError(
          err,
          `connection ${ctx.connection}, stream ${stream}, destination ${session.label}`,
          `cannot read table ${config.schema}.${table}`,
        );
      }
      for (const r of rows) {
        const fingerprint = storedFingerprint(r);
        yield {
          id: r.id,
          documentId: r.document_id,
          chunkIndex: r.chunk_index,
          content: r.content,
          ...(r.dims !== null ? { dimensions: r.dims } : {}),
          ...(fingerprint ? { fingerprint } : {}),
        };
      }
      if (rows.length < limit) return;
      left -= rows.length;
      after = rows[rows.length - 1].id;
    }
  } finally {
    await session.close();
  }
}
