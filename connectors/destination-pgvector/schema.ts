// Table layout (public, other tools rely on it) and the DDL that creates, inspects and swaps it:
//   id text primary key, document_id text, chunk_index int, content text, metadata jsonb,
//   embedding vector(N), fingerprint_content text, fingerprint_metadata text, fingerprint_embedder
//   text, fingerprint_source text, plus an index on document_id and the vector index. Every chunk
//   row carries its document's fingerprint (docs/fingerprints.md), so a lookup is one indexed query
//   and KEEP copies rows as they are; fingerprint_embedder (`provider/model/dimensions`) names the
//   model of its vector; fingerprint_source is the source row's digest (NULL when the source gave none).
import type pg from 'pg';
import type { DocumentFingerprint } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { PgvectorConfig } from './config.ts';
import { derivedName, ident, literal, qualified } from './sql.ts';

export const STATE_TABLE = '_sluice_state';
/** pgvector's HNSW and IVFFlat indexes take `vector` up to this many dimensions. */
export const MAX_INDEXED_DIMENSIONS = 2000;

export const OPS = {
  cosine: { opclass: 'vector_cosine_ops', operator: '<=>' },
  l2: { opclass: 'vector_l2_ops', operator: '<->' },
  inner_product: { opclass: 'vector_ip_ops', operator: '<#>' },
} as const;

export const documentIndexName = (table: string) => derivedName(table, '_document_id_idx');
export const vectorIndexName = (table: string) => derivedName(table, '_embedding_idx');
export const primaryKeyName = (table: string) => derivedName(table, '_pkey');
export const newGenerationName = (table: string) => derivedName(table, '__sluice_new');

/** Schema pgvector lives in, installing the extension when missing. */
export async function ensureExtension(client: pg.Client, where: string): Promise<string> {
  const find = async () =>
    (
      await client.query<{ nspname: string }>(
        `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'`,
      )
    ).rows[0]?.nspname;
  const found = await find();
  if (found) return found;
  try {
    await client.query('CREATE EXTENSION IF NOT EXISTS vector');
  } catch (err) {
    throw new SluiceError(`the pgvector extension is not installed and could not be created: ${(err as Error).message}`, {
      kind: 'destination',
      where,
      cause: err,
      hint: 'install pgvector on the server (https://github.com/pgvector/pgvector#installation) and run CREATE EXTENSION vector as a superuser or database owner',
    });
  }
  const created = await find();
  if (!created) throw new SluiceError('the pgvector extension could not be found after CREATE EXTENSION', { kind: 'destination', where });
  return created;
}

export async function ensureSchema(client: pg.Client, schema: string): Promise<void> {
  const { rowCount } = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  if (!rowCount) await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(schema)}`);
}

export async function ensureStateTable(client: pg.Client, schema: string): Promise<void> {
  try {
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${qualified(schema, STATE_TABLE)} (connection text PRIMARY KEY, state jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
    );
  } catch (err) {
    // PostgreSQL checks CREATE on the schema before it sees the table exists: a sync user granted
    // only the use of existing tables gets 42501 for a state table that is there. Checked only
    // then, so the usual open costs no extra round trip.
    if ((err as { code?: string }).code !== '42501') throw err;
    const { rows } = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qualified(schema, STATE_TABLE)]);
    if (!rows[0]?.t) throw err;
  }
}

export interface TableInfo {
  exists: boolean;
  /** Declared vector dimensions, undefined for an unsized `vector` column. */
  dimensions?: number;
  /** pg_type oid of the embedding column's type (for binary arrays). */
  vectorOid?: number;
  columns: string[];
}

export async function inspectTable(client: pg.Client, schema: string, table: string): Promise<TableInfo> {
  const { rows } = await client.query<{ attname: string; atttypid: number; atttypmod: number; typname: string }>(
    `SELECT a.attname, a.atttypid::int AS atttypid, a.atttypmod, t.typname
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`,
    [qualified(schema, table)],
  );
  if (!rows.length) return { exists: false, columns: [] };
  const emb = rows.find((r) => r.attname === 'embedding');
  return {
    exists: true,
    dimensions: emb && emb.atttypmod > 0 ? emb.atttypmod : undefined,
    vectorOid: emb?.atttypid,
    columns: rows.map((r) => r.attname),
  };
}

export const REQUIRED_COLUMNS = ['id', 'document_id', 'chunk_index', 'content', 'metadata', 'embedding'];
/**
 * Added to tables made before fingerprints were kept (NULL there: those documents count as changed).
 * fingerprint_embedder and then fingerprint_source came later than the first two: tables that lack
 * only those get just them (NULL: no embedder tag, no source digest until a document is rewritten).
 */
export const FINGERPRINT_COLUMNS = ['fingerprint_content', 'fingerprint_metadata', 'fingerprint_embedder', 'fingerprint_source'];

/** The columns the skip needs (a table with these but no fingerprint_embedder still skips unchanged documents). */
export const hasFingerprintColumns = (info: TableInfo) => FINGERPRINT_COLUMNS.slice(0, 2).every((c) => info.columns.includes(c));
export const hasEmbedderColumn = (info: TableInfo) => info.columns.includes('fingerprint_embedder');
export const hasSourceColumn = (info: TableInfo) => info.columns.includes('fingerprint_source');
/** Every fingerprint column is there (nothing to add in place). */
export const hasAllFingerprintColumns = (info: TableInfo) => FINGERPRINT_COLUMNS.every((c) => info.columns.includes(c));

/** Every column of a chunk row, in the order the writer sends them. */
export const CHUNK_COLUMNS: readonly string[] = [...REQUIRED_COLUMNS, ...FINGERPRINT_COLUMNS];
/**
 * The chunk columns a table has (of CHUNK_COLUMNS, in that order): a table the sync user may not
 * alter keeps lacking fingerprint_embedder or fingerprint_source, and is written without them.
 */
export const chunkColumnsOf = (info: TableInfo): readonly string[] => CHUNK_COLUMNS.filter((c) => info.columns.includes(c));

/**
 * Adds the fingerprint columns a table made before them lacks, in place: nullable columns without a
 * default, so PostgreSQL only changes the catalog (no table rewrite, no row touched).
 */
export async function addFingerprintColumns(client: pg.Client, schema: string, table: string): Promise<void> {
  await client.query(
    `ALTER TABLE ${qualified(schema, table)} ${FINGERPRINT_COLUMNS.map((c) => `ADD COLUMN IF NOT EXISTS ${ident(c)} text`).join(', ')}`,
  );
}

/** The per-row fingerprint columns of a table as it is (NULL for those it was made without). */
export const fingerprintColumnsSql = (info: TableInfo) =>
  [
    hasFingerprintColumns(info) ? 'fingerprint_content, fingerprint_metadata' : 'NULL AS fingerprint_content, NULL AS fingerprint_metadata',
    hasEmbedderColumn(info) ? 'fingerprint_embedder' : 'NULL::text AS fingerprint_embedder',
    hasSourceColumn(info) ? 'fingerprint_source' : 'NULL::text AS fingerprint_source',
  ].join(', ');

/**
 * The fingerprint of a document, from its chunk rows: only when every row has the same one (rows
 * without one, or mixed ones, mean the document is not known to be unchanged); its embedder tag
 * and its source digest each only when every row has the same. Use with GROUP BY document_id;
 * `hasEmbedder`, `hasSource`: the table has fingerprint_embedder, fingerprint_source.
 */
export const documentFingerprintSql = (
  hasEmbedder = true,
  hasSource = true,
) => `CASE WHEN count(*) = count(fingerprint_content) AND count(*) = count(fingerprint_metadata)
   AND min(fingerprint_content) = max(fingerprint_content) AND min(fingerprint_metadata) = max(fingerprint_metadata)
  THEN min(fingerprint_content) END AS fingerprint_content,
  min(fingerprint_metadata) AS fingerprint_metadata,
  ${
    hasEmbedder
      ? 'CASE WHEN count(*) = count(fingerprint_embedder) AND min(fingerprint_embedder) = max(fingerprint_embedder) THEN min(fingerprint_embedder) END'
      : 'NULL::text'
  } AS fingerprint_embedder,
  ${
    hasSource
      ? 'CASE WHEN count(*) = count(fingerprint_source) AND min(fingerprint_source) = max(fingerprint_source) THEN min(fingerprint_source) END'
      : 'NULL::text'
  } AS fingerprint_source`;

/** A stored fingerprint row as `DocumentFingerprint` (the embedder tag and source digest only where stored). */
export function storedFingerprint(r: {
  fingerprint_content: string | null;
  fingerprint_metadata: string | null;
  fingerprint_embedder?: string | null;
  fingerprint_source?: string | null;
}): DocumentFingerprint | undefined {
  if (r.fingerprint_content === null || r.fingerprint_metadata === null) return undefined;
  return fingerprintOf(r.fingerprint_content, r.fingerprint_metadata, r.fingerprint_embedder, r.fingerprint_source);
}

/**
 * A DocumentFingerprint with the optional parts only when set (null, undefined and '' are unset).
 * Literal shapes rather than a spread or added properties: this runs once per listed document, and
 * each shape is built the same way every time.
 */
export function fingerprintOf(
  content: string,
  metadata: string,
  embedder: string | null | undefined,
  source: string | null | undefined,
): DocumentFingerprint {
  if (source) return embedder ? { content, metadata, embedder, source } : { content, metadata, source };
  return embedder ? { content, metadata, embedder } : { content, metadata };
}

export async function createChunkTable(
  client: pg.Client,
  schema: string,
  table: string,
  vectorSchema: string,
  dimensions: number | undefined,
): Promise<void> {
  const type = `${ident(vectorSchema)}.vector${dimensions ? `(${dimensions})` : ''}`;
  await client.query(
    `CREATE TABLE IF NOT EXISTS ${qualified(schema, table)} (
       id text CONSTRAINT ${ident(primaryKeyName(table))} PRIMARY KEY,
       document_id text NOT NULL,
       chunk_index int NOT NULL,
       content text NOT NULL,
       metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
       embedding ${type},
       fingerprint_content text,
       fingerprint_metadata text,
       fingerprint_embedder text,
       fingerprint_source text
     )`,
  );
  await client.query(`CREATE INDEX IF NOT EXISTS ${ident(documentIndexName(table))} ON ${qualified(schema, table)} ${DOCUMENT_INDEX_KEYS}`);
}

/**
 * The document index carries the fingerprint columns (INCLUDE): the listing (./documents.ts) reads
 * every document's fingerprints, and from this index PostgreSQL answers it with an index-only scan
 * of ~200 bytes a chunk instead of reading the whole table (its vectors and text: ~10x the pages),
 * which a busy server with a cold backend and a small shared_buffers pays for on every sync.
 */
export const DOCUMENT_INDEX_KEYS = `(document_id) INCLUDE (${FINGERPRINT_COLUMNS.join(', ')})`;

/**
 * Replaces a document index made before it carried the fingerprint columns (same name, same key),
 * in one transaction: readers wait only for the swap at the end, writers for the build (one pass
 * over the table, once).
 */
export const SWAP_LOCK_TIMEOUT_MS = 3000;

export async function coverDocumentIndex(client: pg.Client, schema: string, table: string): Promise<void> {
  const name = documentIndexName(table);
  const building = derivedName(table, '_document_id_new');
  await client.query('BEGIN');
  try {
    await client.query(`CREATE INDEX ${ident(building)} ON ${qualified(schema, table)} ${DOCUMENT_INDEX_KEYS}`);
    // The swap locks out readers: it waits at most this long for a long reader (else it is tried
    // again by a later sync), rather than queueing every new reader behind it meanwhile.
    await client.query(`SET LOCAL lock_timeout = '${SWAP_LOCK_TIMEOUT_MS}ms'`);
    await client.query(`DROP INDEX ${qualified(schema, name)}`);
    await client.query(`ALTER INDEX ${qualified(schema, building)} RENAME TO ${ident(name)}`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

export async function hasVectorIndex(client: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rowCount } = await client.query(
    `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
      WHERE i.indrelid = to_regclass($1) AND a.attname = 'embedding'`,
    [qualified(schema, table)],
  );
  return !!rowCount;
}

/** CREATE INDEX for the vector column, once the table holds its first bulk load. */
export async function buildVectorIndex(
  client: pg.Client,
  config: Pick<PgvectorConfig, 'index' | 'distance' | 'hnsw' | 'ivfflat' | 'maintenance_work_mem'>,
  schema: string,
  table: string,
  indexName: string,
  vectorSchema: string,
): Promise<boolean> {
  if (config.index === 'none') return false;
  const opclass = `${ident(vectorSchema)}.${OPS[config.distance].opclass}`;
  let withClause: string;
  if (config.index === 'hnsw') {
    const m = config.hnsw?.m ?? 16;
    const ef = config.hnsw?.ef_construction ?? 64;
    withClause = `WITH (m = ${m}, ef_construction = ${ef})`;
  } else {
    let lists = config.ivfflat?.lists;
    if (!lists) {
      const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(schema, table)}`);
      const n = Number(rows[0].n);
      lists = Math.max(1, n > 1_000_000 ? Math.round(Math.sqrt(n)) : Math.round(n / 1000));
    }
    withClause = `WITH (lists = ${lists})`;
  }
  await client.query('BEGIN');
  try {
    if (config.maintenance_work_mem) await client.query(`SET LOCAL maintenance_work_mem = ${literal(config.maintenance_work_mem)}`);
    await client.query(
      `CREATE INDEX IF NOT EXISTS ${ident(indexName)} ON ${qualified(schema, table)} USING ${config.index} (embedding ${opclass}) ${withClause}`,
    );
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  return true;
}

export interface VectorIndexInfo {
  name: string;
  method: string;
  opclass: string;
  /** reloptions as key → value, e.g. { m: '16', ef_construction: '64' }. */
  options: Record<string, string>;
}

/** The index on the embedding column, if any. */
export async function vectorIndexOf(client: pg.Client, schema: string, table: string): Promise<VectorIndexInfo | undefined> {
  const { rows } = await client.query<{ name: string; method: string; opclass: string; options: string[] | null }>(
    `SELECT c.relname AS name, am.amname AS method, opc.opcname AS opclass, c.reloptions AS options
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
       JOIN pg_opclass opc ON opc.oid = i.indclass[0]
      WHERE i.indrelid = to_regclass($1) AND a.attname = 'embedding'`,
    [qualified(schema, table)],
  );
  const r = rows[0];
  if (!r) return undefined;
  return vectorIndexFrom(r);
}

export function vectorIndexFrom(r: { name: string; method: string; opclass: string; options: string[] | null }): VectorIndexInfo {
  return { ...r, options: Object.fromEntries((r.options ?? []).map((o) => o.split('=', 2) as [string, string])) };
}

/** How the configured index differs from the existing one ('' when it does not). */
export function indexDrift(
  config: Pick<PgvectorConfig, 'index' | 'distance' | 'hnsw' | 'ivfflat'>,
  current: VectorIndexInfo | undefined,
): string {
  if (!current) return '';
  if (config.index === 'none') return `${current.method} index ${current.name} exists but index is none`;
  const wanted = OPS[config.distance].opclass;
  if (current.method !== config.index || current.opclass !== wanted)
    return `${current.method} (${current.opclass}) → ${config.index} (${wanted})`;
  if (config.index === 'hnsw') {
    const m = String(config.hnsw?.m ?? 16);
    const ef = String(config.hnsw?.ef_construction ?? 64);
    if ((current.options.m ?? '16') !== m || (current.options.ef_construction ?? '64') !== ef)
      return `hnsw m=${current.options.m ?? 16}, ef_construction=${current.options.ef_construction ?? 64} → m=${m}, ef_construction=${ef}`;
  }
  if (config.index === 'ivfflat' && config.ivfflat?.lists && current.options.lists !== String(config.ivfflat.lists))
    return `ivfflat lists=${current.options.lists} → lists=${config.ivfflat.lists}`;
  return '';
}

/** What sluice records about a table in its comment: the primary key its document ids come from. */
export interface TableNote {
  primary_key: string[][];
}

export async function readTableNote(client: pg.Client, schema: string, table: string): Promise<TableNote | undefined | 'foreign'> {
  const { rows } = await client.query<{ c: string | null }>(`SELECT obj_description(to_regclass($1), 'pg_class') AS c`, [
    qualified(schema, table),
  ]);
  return parseTableNote(rows[0]?.c);
}

/** A table comment as sluice's note: undefined without a comment, 'foreign' for one someone else wrote. */
export function parseTableNote(text: string | null | undefined): TableNote | undefined | 'foreign' {
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as { sluice?: TableNote };
    return parsed.sluice && Array.isArray(parsed.sluice.primary_key) ? parsed.sluice : 'foreign';
  } catch {
    return 'foreign'; // a comment someone else wrote: left alone
  }
}

export async function writeTableNote(client: pg.Client, schema: string, table: string, note: TableNote): Promise<void> {
  await client.query(`COMMENT ON TABLE ${qualified(schema, table)} IS ${literal(JSON.stringify({ sluice: note }))}`);
}
