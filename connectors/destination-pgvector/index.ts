// pgvector destination: any PostgreSQL with pgvector (`url`), or an embedded PGlite with pgvector
// kept in a directory (`embedded`). One table per stream; state stored with the data (exactly once).
import type {
  CheckResult,
  ConnectorContext,
  Destination,
  SearchHit,
  SourceState,
  StoredDocument,
  StoredSource,
} from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { PgvectorConfigSchema, type PgvectorConfig } from './config.ts';
import { OPS, STATE_TABLE, inspectTable } from './schema.ts';
import { describeUrl, openSession, parkSession, pgError, type Session } from './session.ts';
import { encodeVector, ident, qualified, tableNameFor } from './sql.ts';
import { openWriter } from './writer.ts';
import { preflight } from './preflight.ts';
import { scanChunks } from './scan.ts';
import { listDocumentBatches, listDocumentSources, listDocuments } from './documents.ts';
import { prepareListingSession } from './spare.ts';
import { hasPrevious, rollback } from './generations.ts';

export type { PgvectorConfig } from './config.ts';

async function withSession<T>(config: PgvectorConfig, ctx: ConnectorContext, fn: (s: Session) => Promise<T>): Promise<T> {
  const session = await openSession(config, ctx);
  try {
    return await fn(session);
  } catch (err) {
    throw pgError(err, `connection ${ctx.connection}, destination ${session.label}`);
  } finally {
    await session.close();
  }
}

async function vectorSchemaOf(session: Session): Promise<string | undefined> {
  const { rows } = await session.client.query<{ nspname: string }>(
    `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'`,
  );
  return rows[0]?.nspname;
}

/** What the configured user lacks to create the schema, tables and state table sluice writes. */
async function privilegeProblems(s: Session, config: PgvectorConfig): Promise<string[]> {
  if (s.isPglite) return []; // one superuser session
  const { rows } = await s.client.query<{
    usr: string;
    db: string;
    superuser: boolean;
    schema_exists: boolean;
    schemacreate: boolean | null;
    dbcreate: boolean;
  }>(
    `SELECT current_user AS usr, current_database() AS db, r.rolsuper AS superuser,
            EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS schema_exists,
            CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) THEN has_schema_privilege($1, 'CREATE') END AS schemacreate,
            has_database_privilege(current_database(), 'CREATE') AS dbcreate
       FROM pg_roles r WHERE r.rolname = current_user`,
    [config.schema],
  );
  const r = rows[0];
  if (r.superuser) return [];
  const user = ident(r.usr);
  if (!r.schema_exists && !r.dbcreate)
    return [`schema ${config.schema} does not exist and ${r.usr} may not create it (GRANT CREATE ON DATABASE ${ident(r.db)} TO ${user};)`];
  if (r.schema_exists && !r.schemacreate)
    return [
      `${r.usr} may not create tables in schema ${config.schema} (GRANT USAGE, CREATE ON SCHEMA ${ident(config.schema)} TO ${user};)`,
    ];
  return [];
}

async function stateTableExists(s: Session, config: PgvectorConfig): Promise<boolean> {
  const { rows } = await s.client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qualified(config.schema, STATE_TABLE)]);
  return !!rows[0].t;
}

/** Turns a distance into a score where higher is closer. */
function score(distance: PgvectorConfig['distance'], d: number): number {
  if (distance === 'cosine') return 1 - d;
  if (distance === 'inner_product') return -d; // pgvector's <#> is the negative inner product
  return 1 / (1 + d);
}

const destination: Destination<PgvectorConfig> = {
  kind: 'destination',
  spec: {
    name: 'pgvector',
    title: 'PostgreSQL + pgvector',
    description:
      'One table per stream (id, document_id, chunk_index, content, metadata, embedding) in PostgreSQL with pgvector, or in an embedded PGlite.',
    documentationUrl: 'docs/pgvector.md',
    config: PgvectorConfigSchema,
  },
  capabilities: { destinationSyncModes: ['append', 'append_dedup', 'overwrite'], vectors: true, sourceDigests: true },

  async check(config, ctx): Promise<CheckResult> {
    try {
      return await withSession(config, ctx, async (s) => {
        const warnings: string[] = [];
        // Every privilege a sync needs, all reported at once, each with what to grant.
        const problems = await privilegeProblems(s, config);
        const installed = await vectorSchemaOf(s);
        if (!installed) {
          const { rows } = await s.client.query<{ trusted: boolean }>(
            `SELECT bool_or(trusted) AS trusted FROM pg_available_extension_versions WHERE name = 'vector'`,
          );
          if (rows[0]?.trusted === null || rows[0]?.trusted === undefined) {
            problems.push(`pgvector is not available on ${s.label}; install it (https://github.com/pgvector/pgvector#installation)`);
          } else {
            const who = (
              await s.client.query<{ superuser: boolean; dbcreate: boolean; db: string; usr: string }>(
                `SELECT rolsuper AS superuser, has_database_privilege(current_database(), 'CREATE') AS dbcreate, current_database() AS db,
                        current_user AS usr
                   FROM pg_roles WHERE rolname = current_user`,
              )
            ).rows[0];
            if (who.superuser || (rows[0].trusted && who.dbcreate))
              warnings.push('pgvector is available but not yet created in this database; sluice will run CREATE EXTENSION vector');
            else
              problems.push(
                `pgvector is installed on ${s.label} but not created in database ${who.db}, and user ${who.usr} may not create it; have a superuser run: CREATE EXTENSION vector;`,
              );
          }
        }
        if (problems.length) return { ok: false, message: `${s.label}: ${problems.join('; ')}`, warnings };
        if (s.isPglite && config.url)
          warnings.push('the server is PGlite: writes use batched INSERTs (no COPY), one session serves all connections');
        return { ok: true, message: `connected to ${s.label}`, warnings };
      });
    } catch (err) {
      const e = err instanceof SluiceError ? err : pgError(err, `destination`);
      return { ok: false, message: e.hint ? `${e.message} (${e.hint})` : e.message };
    }
  },

  open(config, ctx, options) {
    return openWriter(config, ctx, options);
  },

  // The state a sync stores with the data (in STATE_TABLE, one row per connection): read and
  // forgotten here without creating anything, so `state show` changes nothing.
  // In a sync, the session stays open for the writer the run opens next (ConnectorContext.shelf),
  // with the state read here: the writer starts from it instead of reading it again (the run holds
  // the connection's lock from before this read, so no other sync of it commits in between).
  async readState(config, ctx) {
    prepareListingSession(config, ctx);
    const s = await openSession(config, ctx);
    let state: SourceState | undefined;
    let tableExisted = false;
    let vectorSchema: string | undefined;
    try {
      // With the schema pgvector is installed in, for the writer (off its open's critical path: this
      // runs while the source discovers).
      const { rows } = await s.client.query<{ t: string | null; vector_schema: string | null }>(
        `SELECT to_regclass($1)::text AS t,
                (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector') AS vector_schema`,
        [qualified(config.schema, STATE_TABLE)],
      );
      tableExisted = !!rows[0].t;
      vectorSchema = rows[0].vector_schema ?? undefined;
      if (tableExisted) {
        const { rows } = await s.client.query<{ state: SourceState }>(
          `SELECT state FROM ${qualified(config.schema, STATE_TABLE)} WHERE connection = $1`,
          [ctx.connection],
        );
        state = rows[0]?.state ?? undefined;
      }
    } catch (err) {
      await s.close();
      throw pgError(err, `connection ${ctx.connection}, destination ${s.label}`);
    }
    await parkSession(config, ctx, s, { state, tableExisted, vectorSchema });
    return state;
  },

  async resetState(config, ctx, streams) {
    await withSession(config, ctx, async (s) => {
      if (!(await stateTableExists(s, config))) return;
      const table = qualified(config.schema, STATE_TABLE);
      if (!streams?.length) {
        await s.client.query(`DELETE FROM ${table} WHERE connection = $1`, [ctx.connection]);
        return;
      }
      await s.client.query(
        `UPDATE ${table} SET state = jsonb_set(state, '{streams}', (state->'streams') - $2::text[]), updated_at = now()
          WHERE connection = $1 AND jsonb_typeof(state->'streams') = 'object'`,
        [ctx.connection, streams],
      );
    });
  },

  describeState(config) {
    const where = config.embedded ? `embedded PGlite in ${config.embedded}` : describeUrl(config.url!);
    return `table ${config.schema}.${STATE_TABLE} in ${where}`;
  },

  // `sluice reindex`: the writer switches every stream at once; --keep-previous keeps the old tables.
  reindex: { hasPrevious, rollback },

  preflight(config, ctx, options) {
    return preflight(config, ctx, options);
  },

  async search(config, ctx, query): Promise<SearchHit[]> {
    return withSession(config, ctx, async (s) => {
      const vs = await vectorSchemaOf(s);
      if (!vs)
        throw new SluiceError(`nothing to search in ${s.label}: pgvector is not installed there yet`, {
          kind: 'destination',
          hint: 'run sluice sync first',
        });
      const op = `OPERATOR(${ident(vs)}.${OPS[config.distance].operator})`;
      const vectorType = `${ident(vs)}.vector`;
      const hits: SearchHit[] = [];
      let searched = 0;
      // An HNSW scan returns at most ef_search rows, so it must be at least top-k.
      const efSearch = Math.min(1000, Math.max(config.ef_search ?? 40, query.topK));
      const probes = config.probes ?? (config.ivfflat?.lists ? Math.max(1, Math.round(Math.sqrt(config.ivfflat.lists))) : 10);
      await s.client.query('BEGIN');
      try {
        await s.client.query(`SET LOCAL hnsw.ef_search = ${efSearch}`);
        await s.client.query(`SET LOCAL ivfflat.probes = ${probes}`);
        for (const stream of query.streams) {
          const table = tableNameFor(stream, config.table);
          const info = await inspectTable(s.client, config.schema, table);
          if (!info.exists) continue;
          if (info.dimensions && info.dimensions !== query.vector.length) {
            throw new SluiceError(
              `table ${config.schema}.${table} has ${info.dimensions} dimensions, the query vector has ${query.vector.length}`,
              {
                kind: 'config',
                where: `stream ${stream}`,
                hint: 'search with the same embedding model the table was synced with',
              },
            );
          }
          searched++;
          const { rows } = await s.client.query<{
            document_id: string;
            chunk_index: number;
            content: string;
            metadata: Record<string, unknown>;
            distance: number;
          }>(
            `SELECT document_id, chunk_index, content, metadata, (embedding ${op} $1::${vectorType})::float8 AS distance
               FROM ${qualified(config.schema, table)} WHERE embedding IS NOT NULL
              ORDER BY embedding ${op} $1::${vectorType} LIMIT $2`,
            [encodeVector(query.vector), query.topK],
          );
          for (const r of rows) {
            hits.push({
              score: score(config.distance, r.distance),
              stream,
              documentId: r.document_id,
              chunkIndex: r.chunk_index,
              content: r.content,
              metadata: r.metadata ?? {},
            });
          }
        }
      } finally {
        await s.client.query('ROLLBACK').catch(() => {});
      }
      if (!searched && query.streams.length) {
        throw new SluiceError(`no table to search in ${s.label} for stream(s) ${query.streams.join(', ')}`, {
          kind: 'destination',
          hint: 'run sluice sync first',
        });
      }
      return hits.sort((a, b) => b.score - a.score).slice(0, query.topK);
    });
  },

  /** The conformance kit writes into a schema of its own, dropped afterwards with everything in it. */
  async sandbox(config, ctx, id) {
    const schema = `sluice_conformance_${id}`;
    const hadExtension = await withSession(config, ctx, async (s) => !!(await vectorSchemaOf(s)));
    return {
      config: { ...config, schema, table: undefined },
      remove: () =>
        withSession(config, ctx, async (s) => {
          await s.client.query(`DROP SCHEMA IF EXISTS ${ident(schema)} CASCADE`);
          // Created for the test only: removed again unless something else uses it by now.
          if (!hadExtension) await s.client.query('DROP EXTENSION IF EXISTS vector').catch(() => {});
        }),
    };
  },

  /** Every chunk of a stream, exactly (search() is approximate with an ANN index). */
  async readBack(config, ctx, stream) {
    return withSession(config, ctx, async (s) => {
      const table = tableNameFor(stream, config.table);
      if (!(await inspectTable(s.client, config.schema, table)).exists) return [];
      const { rows } = await s.client.query<{ document_id: string; chunk_index: number; content: string }>(
        `SELECT document_id, chunk_index, content FROM ${qualified(config.schema, table)} ORDER BY id`,
      );
      return rows.map((r) => ({ documentId: r.document_id, chunkIndex: r.chunk_index, content: r.content }));
    });
  },

  /**
   * Every document of a stream's table with its chunk count and fingerprint, each once, committed rows
   * only: one COPY on PostgreSQL, keyset pages on PGlite (documents.ts). Reads only: creates
   * and migrates nothing.
   */
  documents(config, ctx, stream): AsyncGenerator<StoredDocument> {
    return listDocuments(config, ctx, stream);
  },

  /** The same, in arrays: at most 2,000 documents each (native) or one per page (PGlite). */
  documentBatches(config, ctx, stream): AsyncGenerator<StoredDocument[]> {
    return listDocumentBatches(config, ctx, stream);
  },

  /**
   * The light listing for streams read with source digests: each document's id and the source its
   * fingerprint carries, a third of documentBatches' bytes (documents.ts).
   */
  documentSources(config, ctx, stream): AsyncGenerator<StoredSource[]> {
    return listDocumentSources(config, ctx, stream);
  },

  scanChunks,

  async maintain(config, ctx, action): Promise<Record<string, unknown>> {
    return withSession(config, ctx, async (s) => {
      const version = Number((await s.client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
      // CONCURRENTLY keeps the table readable and writable during the rebuild (not on PGlite: one session).
      const concurrently = !s.isPglite && version >= 120000;
      const tables: Record<string, unknown>[] = [];
      for (const stream of action.streams) {
        const table = tableNameFor(stream, config.table);
        const name = qualified(config.schema, table);
        const info = await inspectTable(s.client, config.schema, table);
        if (!info.exists) {
          tables.push({ stream, table: `${config.schema}.${table}`, exists: false });
          continue;
        }
        let reindexMs: number | undefined;
        if (action.reindex) {
          const started = Date.now();
          await s.client.query(`REINDEX TABLE ${concurrently ? 'CONCURRENTLY ' : ''}${name}`);
          reindexMs = Date.now() - started;
          ctx.logger.info({ stream, table: `${config.schema}.${table}`, ms: reindexMs }, 'reindexed');
        }
        await s.client.query(`ANALYZE ${name}`);
        const size = (
          await s.client.query<{ rows: string; table_bytes: string; indexes_bytes: string; total_bytes: string }>(
            `SELECT (SELECT count(*) FROM ${name}) AS rows, pg_table_size(to_regclass($1)) AS table_bytes,
                    pg_indexes_size(to_regclass($1)) AS indexes_bytes, pg_total_relation_size(to_regclass($1)) AS total_bytes`,
            [name],
          )
        ).rows[0];
        const indexes = (
          await s.client.query<{ name: string; method: string; bytes: string }>(
            `SELECT c.relname AS name, am.amname AS method, pg_relation_size(c.oid) AS bytes
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
              WHERE i.indrelid = to_regclass($1) ORDER BY c.relname`,
            [name],
          )
        ).rows.map((r) => ({ name: r.name, method: r.method, bytes: Number(r.bytes) }));
        tables.push({
          stream,
          table: `${config.schema}.${table}`,
          rows: Number(size.rows),
          dimensions: info.dimensions,
          tableBytes: Number(size.table_bytes),
          indexesBytes: Number(size.indexes_bytes),
          totalBytes: Number(size.total_bytes),
          indexes,
          ...(action.reindex ? { reindexed: true, reindexMs } : {}),
        });
      }
      return { destination: s.label, tables };
    });
  },
};

export default destination;
