// Connection state (and, by default, the embedding cache) in a PostgreSQL database, for runs whose
// local disk does not survive (Kubernetes pods, CI). Several processes may share it: every update
// runs in a transaction that holds the connection's row lock, so the engine's read-modify-write
// (deep merge for shared workers, shard slots) is serialised across processes.
import type pg from 'pg';
import { pgDriver } from '../runtime-navigator.ts';
import type { SourceState } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import type { EmbeddingCache } from '../embedding/types.ts';
import { dropStreams } from './merge.ts';
import type { StateStore } from './store.ts';

export interface PostgresStateConfig {
  url: string;
  schema: string;
}

const ident = (name: string) => '"' + name.replace(/"/g, '""') + '"';

/** host:port/database and user of a URL, never its password. */
export function describeDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    return `postgres://${u.username ? `${decodeURIComponent(u.username)}@` : ''}${u.host}${u.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

const HINTS: Record<string, string> = {
  '28P01': 'check the user and password in state.url',
  '28000': 'the server refused this user/host (pg_hba.conf)',
  '3D000': 'check the database name in state.url (the database must exist; its schema and tables are created)',
  '42501': 'the user needs CREATE on the database (or create the schema beforehand and grant CREATE, USAGE on it)',
  ECONNREFUSED: 'is the server running and listening on that host/port?',
  ENOTFOUND: 'check the host name in state.url',
  ETIMEDOUT: 'check network access to the server',
};

export class PostgresStateStore implements StateStore {
  private readonly pool: pg.Pool;
  private ready?: Promise<void>;
  readonly label: string;
  readonly stateTable: string;
  readonly cacheTable: string;

  constructor(
    readonly config: PostgresStateConfig,
    /** Local directory for what must stay local (connector work files, an opted-in LMDB cache). */
    readonly dir: string,
  ) {
    this.label = describeDatabaseUrl(config.url);
    this.pool = new (pgDriver().Pool)({
      connectionString: config.url,
      max: 6,
      application_name: 'sluice-state',
      connectionTimeoutMillis: 20_000,
    });
    // An idle client dropped by the server must not crash the process; the next query reports it.
    this.pool.on('error', () => {});
    this.stateTable = `${ident(config.schema)}.connection_state`;
    this.cacheTable = `${ident(config.schema)}.embedding_cache`;
  }

  private fail(err: unknown, doing: string): SluiceError {
    if (err instanceof SluiceError) return err;
    const code = (err as { code?: string }).code;
    return new SluiceError(`state database ${this.label}: ${doing} failed: ${describeUnknown(err)}`, {
      kind: 'connection',
      where: `state (${this.label}, schema ${this.config.schema})`,
      hint: (code && HINTS[code]) ?? 'check state.url and that the server is reachable',
      transient: code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ECONNRESET' || code === '57P03',
      cause: err,
    });
  }

  /** Creates the schema and tables when missing (once per process; concurrent creators serialised). */
  private ensure(): Promise<void> {
    this.ready ??= (async () => {
      const client = await this.pool.connect().catch((err) => {
        throw this.fail(err, 'connecting');
      });
      try {
        const exists = await client.query(`SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS ok`, [
          this.stateTable,
          this.cacheTable,
        ]);
        if (exists.rows[0]?.ok) return;
        await client.query('BEGIN');
        // CREATE … IF NOT EXISTS still races with itself across sessions; one creator at a time.
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`sluice-state-schema:${this.config.schema}`]);
        await client.query(`CREATE SCHEMA IF NOT EXISTS ${ident(this.config.schema)}`);
        await client.query(
          `CREATE TABLE IF NOT EXISTS ${this.stateTable} (
             connection text PRIMARY KEY,
             state jsonb,
             updated_at timestamptz NOT NULL DEFAULT now())`,
        );
        // model_key: 16 hex digits of sha256([provider, model, dimensions]); content_hash: sha256 of
        // the chunk text; vector: little-endian float4s (bit-exact with what the embedder returned).
        await client.query(
          `CREATE TABLE IF NOT EXISTS ${this.cacheTable} (
             model_key text NOT NULL,
             content_hash bytea NOT NULL,
             vector bytea NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (model_key, content_hash))`,
        );
        // Vectors do not compress; keep them inline rather than trying pglz on every row.
        await client.query(`ALTER TABLE ${this.cacheTable} ALTER COLUMN vector SET STORAGE EXTERNAL`);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw this.fail(err, `creating schema ${this.config.schema}`);
      } finally {
        client.release();
      }
    })().catch((err) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[], doing: string): Promise<pg.QueryResult<R>> {
    await this.ensure();
    try {
      return await this.pool.query<R>(sql, params);
    } catch (err) {
      throw this.fail(err, doing);
    }
  }

  async load(connection: string): Promise<SourceState | undefined> {
    const r = await this.query<{ state: SourceState | null }>(
      `SELECT state FROM ${this.stateTable} WHERE connection = $1`,
      [connection],
      `reading the state of ${connection}`,
    );
    return r.rows[0]?.state ?? undefined;
  }

  async update(connection: string, fn: (stored: SourceState | undefined) => SourceState): Promise<SourceState> {
    await this.ensure();
    const client = await this.pool.connect().catch((err) => {
      throw this.fail(err, 'connecting');
    });
    let broken = false;
    try {
      await client.query('BEGIN');
      // The row must exist for FOR UPDATE to lock it; a NULL state reads as "no state".
      await client.query(`INSERT INTO ${this.stateTable} (connection, state) VALUES ($1, NULL) ON CONFLICT (connection) DO NOTHING`, [
        connection,
      ]);
      const r = await client.query<{ state: SourceState | null }>(`SELECT state FROM ${this.stateTable} WHERE connection = $1 FOR UPDATE`, [
        connection,
      ]);
      const next = fn(r.rows[0]?.state ?? undefined);
      await client.query(`UPDATE ${this.stateTable} SET state = $2::jsonb, updated_at = now() WHERE connection = $1`, [
        connection,
        JSON.stringify(next),
      ]);
      await client.query('COMMIT');
      return next;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw this.fail(err, `saving the state of ${connection}`);
    } finally {
      client.release(broken);
    }
  }

  async reset(connection: string, streams?: string[]): Promise<void> {
    if (!streams?.length) {
      await this.query(`DELETE FROM ${this.stateTable} WHERE connection = $1`, [connection], `resetting the state of ${connection}`);
      return;
    }
    await this.update(connection, (stored) => dropStreams(stored, streams));
  }

  async list(): Promise<string[]> {
    const r = await this.query<{ connection: string }>(
      `SELECT connection FROM ${this.stateTable} WHERE state IS NOT NULL ORDER BY connection`,
      [],
      'listing connections',
    );
    return r.rows.map((row) => row.connection);
  }

  /** The embedding cache in the same database (table `<schema>.embedding_cache`), sharing this pool. */
  openEmbeddingCache(): EmbeddingCache {
    return new PostgresEmbeddingCache(this);
  }

  /** @internal used by the cache */
  run<R extends pg.QueryResultRow>(sql: string, params: unknown[], doing: string) {
    return this.query<R>(sql, params, doing);
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {});
  }
}

/** Cache keys are `<model_key>:<sha256 hex>` (embeddingCacheKey); the hash is stored as 32 bytes. */
function splitKey(key: string): [string, Buffer] {
  const i = key.indexOf(':');
  const model = i < 0 ? '' : key.slice(0, i);
  const hash = key.slice(i + 1);
  return [model, /^[0-9a-f]{64}$/.test(hash) ? Buffer.from(hash, 'hex') : Buffer.from(hash, 'utf8')];
}

export function vectorToBytes(v: Float32Array): Buffer {
  // Little-endian float4s; a copy, since v may be a view into a larger response buffer.
  const out = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) out.writeFloatLE(v[i], i * 4);
  return out;
}

export function bytesToVector(b: Buffer): Float32Array {
  const v = new Float32Array(b.byteLength / 4);
  for (let i = 0; i < v.length; i++) v[i] = b.readFloatLE(i * 4);
  return v;
}

class PostgresEmbeddingCache implements EmbeddingCache {
  constructor(private readonly store: PostgresStateStore) {}

  async getMany(keys: string[]): Promise<(Float32Array | undefined)[]> {
    if (!keys.length) return [];
    const parts = keys.map(splitKey);
    // One round trip per batch: the keys go in as two arrays and come back with their position.
    const r = await this.store.run<{ i: string; vector: Buffer }>(
      `SELECT k.i, c.vector
         FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS k(model_key, content_hash, i)
         JOIN ${this.store.cacheTable} c ON c.model_key = k.model_key AND c.content_hash = k.content_hash`,
      [parts.map((p) => p[0]), parts.map((p) => p[1])],
      'reading the embedding cache',
    );
    const out: (Float32Array | undefined)[] = new Array(keys.length).fill(undefined);
    for (const row of r.rows) out[Number(row.i) - 1] = bytesToVector(row.vector);
    return out;
  }

  async putMany(entries: Array<[string, Float32Array]>): Promise<void> {
    if (!entries.length) return;
    const parts = entries.map(([k]) => splitKey(k));
    // Durable when the statement returns (a committed autocommit INSERT); a vector another worker
    // stored meanwhile is the same vector, so a conflict keeps the row that is there.
    await this.store.run(
      `INSERT INTO ${this.store.cacheTable} (model_key, content_hash, vector)
       SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
       ON CONFLICT (model_key, content_hash) DO NOTHING`,
      [parts.map((p) => p[0]), parts.map((p) => p[1]), entries.map(([, v]) => vectorToBytes(v))],
      'writing the embedding cache',
    );
  }

  async close(): Promise<void> {
    // The pool belongs to the state store, which closes it.
  }
}
