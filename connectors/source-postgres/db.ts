// Connections, quoting and the catalog model shared by every read mode.
import pg from 'pg';
import { createRequire } from 'node:module';
import type picomatch from 'picomatch';
import type { ConnectorContext } from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { clientConfig, describeServer, type PostgresSourceConfig } from './config.ts';
import { pgTypes, registerArrayType, registerDomain, SESSION_OPTIONS, type ColumnType } from './types.ts';

/** Quotes an identifier: every table, column, slot and publication name goes through here. */
export const qi = (name: string): string => '"' + name.replace(/"/g, '""') + '"';
export const qlit = (value: string): string => "'" + value.replace(/'/g, "''") + "'";

export async function connect(
  cfg: PostgresSourceConfig,
  ctx: Pick<ConnectorContext, 'baseDir'>,
  opts: { replication?: boolean } = {},
): Promise<pg.Client> {
  const base = clientConfig(cfg, ctx.baseDir);
  const make = (ssl: typeof base.ssl) => {
    const c = new pg.Client({
      ...base,
      ssl,
      types: pgTypes,
      options: SESSION_OPTIONS,
      ...(opts.replication ? { replication: 'database' } : {}),
    } as pg.ClientConfig);
    // A dropped connection must surface as the query's error, not crash the process.
    c.on('error', () => {});
    return c;
  };
  let client = make(base.ssl);
  try {
    await client.connect();
  } catch (err) {
    const noSsl = /does not support SSL/i.test(describeUnknown(err));
    if (noSsl && (cfg.sslmode === 'prefer' || (!cfg.sslmode && base.ssl))) {
      client = make(undefined);
      try {
        await client.connect();
        return client;
      } catch (err2) {
        throw connectionError(err2, cfg, ctx.baseDir);
      }
    }
    throw connectionError(err, cfg, ctx.baseDir);
  }
  return client;
}

export function connectionError(err: unknown, cfg: PostgresSourceConfig, baseDir: string): SluiceError {
  if (err instanceof SluiceError) return err;
  const where = describeServer(cfg, baseDir);
  const code = (err as { code?: string }).code;
  const text = describeUnknown(err);
  const hints: Record<string, string> = {
    '28P01': 'check user and password',
    '28000': 'the server refused this user/host (pg_hba.conf); ask the DBA to allow it, for replication too if you use CDC',
    '3D000': 'check the database name',
    ECONNREFUSED: 'is the server running and listening on that host/port?',
    ENOTFOUND: 'check the host name',
    ETIMEDOUT: 'check network access to the server',
  };
  return new SluiceError(`cannot connect to ${where}: ${text}`, {
    kind: 'connection',
    where,
    hint: (code && hints[code]) ?? 'check the connection settings',
    transient: code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'ECONNRESET' || code === '57P03',
    cause: err,
  });
}

export interface Column {
  name: string;
  type: ColumnType;
  /** Generated (computed) column: logical replication does not carry it. */
  generated?: boolean;
}

export interface Relation {
  /** Stream name: `table` in schema public, else `schema.table`; custom streams use their own name. */
  stream: string;
  schema?: string;
  table?: string;
  kind: 'table' | 'view' | 'query';
  /** For custom SQL streams. */
  query?: string;
  columns: Column[];
  primaryKey: string[];
  defaultCursor?: string;
  replicaIdentity?: 'd' | 'n' | 'f' | 'i';
  /** A partitioned table: CDC needs a publication that publishes via the partition root. */
  partitioned?: boolean;
  oid?: number;
}

export function streamNameFor(schema: string, table: string): string {
  return schema === 'public' ? table : `${schema}.${table}`;
}

/** `FROM` target of a relation: a quoted table name or the wrapped custom query. */
export function fromClause(rel: Relation): string {
  if (rel.kind === 'query') return `(${rel.query!.trim().replace(/;\s*$/, '')}) AS ${qi('q')}`;
  return `${qi(rel.schema!)}.${qi(rel.table!)}`;
}

function matches(patterns: string[], schema: string, table: string): boolean {
  return patterns.some((p) => (p.includes('.') ? globMatch(`${schema}.${table}`, p) : globMatch(table, p)));
}

// A pattern of only these characters matches exactly itself under picomatch (test/include-patterns.test.ts),
// so plain table names skip loading picomatch (7 modules at start-up); globs load it on first use.
const LITERAL_PATTERN = /^[A-Za-z0-9_.-]+$/;
let picomatchLoaded: typeof picomatch | undefined;

export function globMatch(name: string, pattern: string): boolean {
  if (LITERAL_PATTERN.test(pattern)) return name === pattern;
  picomatchLoaded ??= createRequire(import.meta.url)('picomatch') as typeof picomatch;
  return picomatchLoaded.isMatch(name, pattern, { dot: true });
}

const CURSOR_NAMES = ['updated_at', 'modified_at', 'last_modified', 'updated', 'modified', 'changed_at', 'last_updated', 'created_at'];

function pickCursor(cols: Column[]): string | undefined {
  for (const n of CURSOR_NAMES) {
    const c = cols.find(
      (x) => x.name === n && ['timestamp', 'timestamptz', 'date', 'int8', 'int4'].includes(x.type.typname) && !x.type.isArray,
    );
    if (c) return c.name;
  }
  return undefined;
}

/** Tables, views and custom streams of the configured schemas, after include/exclude. */
export async function loadRelations(client: pg.Client, cfg: PostgresSourceConfig): Promise<Relation[]> {
  const rels = await client.query<{ oid: number; nspname: string; relname: string; relkind: string; relreplident: 'd' | 'n' | 'f' | 'i' }>(
    `SELECT c.oid::int AS oid, n.nspname, c.relname, c.relkind, c.relreplident
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r','p','v','m','f') AND NOT c.relispartition
      ORDER BY n.nspname, c.relname`,
    [cfg.schemas],
  );
  const chosen = rels.rows.filter(
    (r) =>
      (!cfg.include?.length || matches(cfg.include, r.nspname, r.relname)) &&
      !(cfg.exclude?.length && matches(cfg.exclude, r.nspname, r.relname)),
  );
  const oids = chosen.map((r) => r.oid);
  const cols = oids.length
    ? await client.query<{
        attrelid: number;
        attname: string;
        sqltype: string;
        typname: string;
        elemname: string | null;
        typoid: number;
        attnotnull: boolean;
        domainoid: number | null;
        generated: boolean;
        pkpos: number | null;
      }>(
        // pkpos: the column's place in the primary key (null when not in it): the columns and the
        // key in one round trip.
        `SELECT a.attrelid::int AS attrelid, a.attname, format_type(a.atttypid, a.atttypmod) AS sqltype,
                t.typname, e.typname AS elemname, t.oid::int AS typoid, a.attnotnull, d.oid::int AS domainoid, a.attgenerated <> '' AS generated,
                array_position(i.indkey::int2[], a.attnum) AS pkpos
           FROM pg_attribute a
           LEFT JOIN pg_type d ON d.oid = a.atttypid AND d.typtype = 'd'
           JOIN pg_type t ON t.oid = COALESCE(d.typbasetype, a.atttypid)
           LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
           LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
          WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attrelid, a.attnum`,
        [oids],
      )
    : { rows: [] };
  const pkBy = new Map<number, string[]>();
  for (const c of [...cols.rows].filter((c) => c.pkpos !== null).sort((x, y) => x.attrelid - y.attrelid || x.pkpos! - y.pkpos!)) {
    const key = pkBy.get(c.attrelid) ?? [];
    key.push(c.attname);
    pkBy.set(c.attrelid, key);
  }
  const colsBy = new Map<number, Column[]>();
  for (const c of cols.rows) {
    const isArray = c.elemname != null;
    if (isArray) registerArrayType(c.typoid);
    if (c.domainoid != null) registerDomain(c.domainoid, c.typoid);
    const list = colsBy.get(c.attrelid) ?? [];
    list.push({
      name: c.attname,
      type: { oid: c.typoid, sqlType: c.sqltype, typname: isArray ? c.elemname! : c.typname, isArray, notNull: c.attnotnull },
      ...(c.generated ? { generated: true } : {}),
    });
    colsBy.set(c.attrelid, list);
  }
  const out: Relation[] = chosen.map((r) => {
    const columns = colsBy.get(r.oid) ?? [];
    return {
      stream: streamNameFor(r.nspname, r.relname),
      schema: r.nspname,
      table: r.relname,
      kind: r.relkind === 'v' || r.relkind === 'm' ? 'view' : 'table',
      partitioned: r.relkind === 'p',
      columns,
      primaryKey: pkBy.get(r.oid) ?? [],
      defaultCursor: pickCursor(columns),
      replicaIdentity: r.relreplident,
      oid: r.oid,
    };
  });
  for (const s of cfg.streams ?? []) out.push(await describeQuery(client, s));
  return out;
}

async function describeQuery(client: pg.Client, s: NonNullable<PostgresSourceConfig['streams']>[number]): Promise<Relation> {
  const rel: Relation = { stream: s.name, kind: 'query', query: s.query, columns: [], primaryKey: s.primary_key ?? [] };
  let res: pg.QueryResult;
  try {
    res = await client.query(`SELECT * FROM ${fromClause(rel)} LIMIT 0`);
  } catch (err) {
    throw new SluiceError(`custom stream "${s.name}": its query fails: ${describeUnknown(err)}`, {
      kind: 'config',
      where: `source config streams[${s.name}].query`,
      hint: 'run the query in psql to fix it',
    });
  }
  const typeOids = [...new Set(res.fields.map((f) => f.dataTypeID))];
  const types = await client.query<{ oid: number; typname: string; elemname: string | null; sqltype: string }>(
    `SELECT t.oid::int AS oid, t.typname, e.typname AS elemname, format_type(t.oid, NULL) AS sqltype
       FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' WHERE t.oid = ANY($1::oid[])`,
    [typeOids],
  );
  const byOid = new Map(types.rows.map((t) => [t.oid, t]));
  rel.columns = res.fields.map((f) => {
    const t = byOid.get(f.dataTypeID);
    const isArray = t?.elemname != null;
    if (isArray) registerArrayType(f.dataTypeID);
    return {
      name: f.name,
      type: {
        oid: f.dataTypeID,
        sqlType: t?.sqltype ?? 'text',
        typname: isArray ? t!.elemname! : (t?.typname ?? 'text'),
        isArray,
        notNull: false,
      },
    };
  });
  for (const k of rel.primaryKey) {
    if (!rel.columns.some((c) => c.name === k))
      throw new SluiceError(`custom stream "${s.name}": primary_key column "${k}" is not in the query's result`, {
        kind: 'config',
        where: `source config streams[${s.name}].primary_key`,
      });
  }
  rel.defaultCursor = s.cursor_field ?? pickCursor(rel.columns);
  return rel;
}

/** Finds the relation a configured stream names (by name, or namespace + name). */
export function resolveStream(relations: Relation[], name: string, namespace?: string): Relation {
  const r =
    relations.find((x) => x.stream === name && (!namespace || x.kind === 'query' || x.schema === namespace)) ??
    (namespace ? relations.find((x) => x.schema === namespace && x.table === name) : undefined);
  if (!r) {
    throw new SluiceError(`stream "${name}" is not a table, view or custom stream of this source`, {
      kind: 'config',
      where: `stream ${name}`,
      hint: 'run `sluice discover` to list streams; check `schemas` and include/exclude patterns',
    });
  }
  return r;
}
