// Full refresh and cursor-incremental reads. Both page through the table in a stable order with
// bounded pages, and checkpoint after every page, so memory stays flat and a crash resumes at
// the last committed page instead of starting over.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { DigestCheck } from '../../src/protocol/connector.ts';
import type { AirbyteMessage } from '../../src/protocol/messages.ts';
import { message } from '../../src/protocol/messages.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { copyDigestedRows, copyRows, type DigestedRows } from './copy.ts';
import { fromClause, qi, qlit, type Column, type Relation } from './db.ts';
import { SESSION_OPTIONS, toParam } from './types.ts';

export interface ReadOptions {
  batchSize: number;
  /**
   * Rows per pass-1 page of a read that skips by digest (default 100,000). Larger than batchSize:
   * a page is one COPY the server computes while sluice checks what arrived, and pages follow each
   * other without overlap; only the keys of a page's changed rows are held.
   */
  digestPageSize?: number;
  signal: AbortSignal;
  lookback?: string | number;
  /** Sharded runs: read only this primary-key range (see planRanges). */
  range?: KeyRange;
  /** Source digests for this stream (full refresh with a primary key; see skippingRead). */
  digests?: StreamDigests;
}

/**
 * What a full refresh needs to read with digests: the engine's check (still pending when the read
 * starts: it waits for the destination's listing) and the key fields it wants.
 */
export interface StreamDigests {
  check: Promise<DigestCheck | undefined>;
  /**
   * The columns of the key record offered to check.unchanged: the primary key, plus the columns the
   * configured primary_key names (the engine identifies documents by that one).
   */
  keyColumns: string[];
}

/**
 * One worker's slice of a table in a sharded full refresh: `from <= column < to` on the first
 * primary-key column (an absent bound is open), or nothing at all. Bounds are text, cast back in SQL.
 */
export interface KeyRange {
  column: string;
  from?: string;
  to?: string;
  none?: boolean;
}

/**
 * Splits a table into `count` key ranges of about equal size: boundaries are quantiles of the first
 * primary-key column (from a sample on large tables). The ranges cover every possible key, so rows
 * added later still land in exactly one range.
 */
export async function planRanges(client: pg.Client, rel: Relation, count: number): Promise<KeyRange[] | undefined> {
  if (!rel.primaryKey.length || count < 2) return undefined;
  const col = column(rel, rel.primaryKey[0]);
  if (col.type.isArray) return undefined;
  let sample = '';
  if (rel.kind === 'table') {
    const [{ tuples }] = await query(client, rel, 'SELECT reltuples::float8 AS tuples FROM pg_class WHERE oid = $1', [rel.oid]);
    // Quantiles of ~200k sampled rows are as good as exact ones for balancing, and cost no full sort.
    if (Number(tuples) > 1_000_000) sample = ` TABLESAMPLE SYSTEM (${Math.max(0.01, (100 * 200_000) / Number(tuples)).toFixed(4)})`;
  }
  const fractions = Array.from({ length: count - 1 }, (_, i) => (i + 1) / count);
  const [{ bounds }] = await query(
    client,
    rel,
    `SELECT (percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY ${qi(col.name)}))::text[] AS bounds FROM ${fromClause(rel)}${sample}`,
    [fractions],
  );
  const b = bounds as (string | null)[] | null;
  if (!b || b.some((x) => x === null)) {
    // Empty (so far): the first worker takes every key.
    return Array.from({ length: count }, (_, i) => (i === 0 ? { column: col.name } : { column: col.name, none: true }));
  }
  return Array.from({ length: count }, (_, i) => ({
    column: col.name,
    ...(i > 0 ? { from: b[i - 1]! } : {}),
    ...(i < count - 1 ? { to: b[i]! } : {}),
  }));
}

function rangeCondition(rel: Relation, range: KeyRange | undefined): string[] {
  if (!range) return [];
  const c = column(rel, range.column);
  return [
    ...(range.from !== undefined ? [`${qi(c.name)} >= ${qlit(range.from)}${cast(c)}`] : []),
    ...(range.to !== undefined ? [`${qi(c.name)} < ${qlit(range.to)}${cast(c)}`] : []),
  ];
}

function selectList(rel: Relation): string {
  return rel.kind === 'query' ? '*' : rel.columns.map((c) => qi(c.name)).join(', ');
}

function column(rel: Relation, name: string): Column {
  const c = rel.columns.find((x) => x.name === name);
  if (!c) {
    throw new SluiceError(`stream "${rel.stream}" has no column "${name}"`, {
      kind: 'config',
      where: `stream ${rel.stream}`,
      hint: 'check cursor_field / primary_key against `sluice discover`',
    });
  }
  return c;
}

const cast = (c: Column) => (c.type.isArray ? '' : `::${c.type.sqlType}`);

/** A failed read as an error that names the stream (and the missing privilege, when that is it). */
function readError(rel: Relation, err: unknown): SluiceError {
  const code = (err as { code?: string }).code;
  return new SluiceError(`reading stream "${rel.stream}" failed: ${describeUnknown(err)}`, {
    kind: code === '42501' ? 'config' : 'source',
    where: `stream ${rel.stream}`,
    hint:
      code === '42501'
        ? `grant SELECT on ${rel.kind === 'query' ? 'the tables of the query' : `${rel.schema}.${rel.table}`} to the sync user`
        : undefined,
    transient: code === '40001' || code === '57P01' || code === 'ECONNRESET',
    cause: err,
  });
}

async function query(client: pg.Client, rel: Relation, sql: string, params: unknown[]): Promise<Record<string, unknown>[]> {
  try {
    return (await client.query(sql, params)).rows;
  } catch (err) {
    throw readError(rel, err);
  }
}

/** State keys must round-trip: we keep the emitted values and cast them back in SQL. */
function keyOf(row: Record<string, unknown>, cols: string[]): unknown[] {
  return cols.map((c) => row[c] ?? null);
}

/** A value inlined into the COPY statement (COPY takes no parameters): a quoted literal with its cast. */
function literal(value: unknown, c: Column): string {
  const text = toParam(value, c.type);
  return text === null ? 'NULL' : `${qlit(text)}${cast(c)}`;
}

/**
 * Bump when what a record holds for the same column text changes (types.ts parsers, the record's
 * shape): every stored digest then mismatches and each row is read in full once.
 */
const RECORD_FORMAT = 1;
/** Names how digestSql hashes a row (a new method must not compare equal to the old one's digests). */
const DIGEST_METHOD = 'column-hashes-xor-2';

/**
 * The prefix of every digest of a relation: a hash of what turns a row's column texts into its
 * RECORD besides the texts themselves (column names and types, session output settings, parsers).
 * A renamed column or a changed type leaves the row's text alone but changes the record.
 */
export function digestTag(rel: Relation): string {
  const shape = JSON.stringify([
    RECORD_FORMAT,
    DIGEST_METHOD,
    SESSION_OPTIONS,
    rel.columns.map((c) => [c.name, c.type.oid, c.type.isArray]),
  ]);
  return createHash('sha256').update(shape).digest('hex').slice(0, 12);
}

/**
 * Built-in types whose `::text` is the type's output text (an I/O cast) or an injective function
 * of the value (bool, inet, cidr, name, "char"): hashed through `::text`. Any other type (bpchar,
 * whose cast drops trailing spaces; enums, composites and extension types, whose cast to text a
 * user may define) goes through its one-column row text, which is always the output text but
 * costs the server ~2 µs a value more.
 */
const TEXT_CAST_EXACT = new Set([
  'int2', 'int4', 'int8', 'oid', 'numeric', 'float4', 'float8', 'money', 'bool',
  'date', 'time', 'timetz', 'timestamp', 'timestamptz', 'interval',
  'uuid', 'json', 'jsonb', 'bytea', 'xml', 'name', 'char', 'inet', 'cidr', 'macaddr', 'macaddr8',
]); // prettier-ignore

/**
 * The digest as a SQL expression: the tag, then the XOR of each column's 64-bit hash
 * (hashtextextended, PostgreSQL 11+) of its text, seeded with the column's position so that equal
 * values in two columns, or two swapped values, do not cancel out. text and varchar values are
 * hashed as stored bytes (COLLATE "C", whatever the column's collation), other types through
 * their text (TEXT_CAST_EXACT); NULL hashes to a constant of its own, apart from ''. Combining
 * 64-bit hashes by XOR instead of md5 of their list costs the server a quarter of the time (md5
 * is ~3 µs a call there); either way a changed column goes unseen with probability ~2^-64. Not a
 * defence against crafted collisions: a digest only decides whether a row is read again.
 */
function digestSql(rel: Relation): string {
  const tag = qlit(digestTag(rel) + ':');
  const names = rel.columns.map((c) => c.name);
  // A query whose columns share a name cannot name them one by one: its whole row text it is.
  if (new Set(names).size !== names.length) return `${tag} || hashtextextended(ROW(${qi('q')}.*)::text COLLATE "C", 0)::text`;
  if (rel.columns.length === 0) return `${tag} || '0'`;
  const hashes = rel.columns.map((c, i) => {
    const seed = i + 1;
    const { typname, isArray } = c.type;
    if (!isArray && (typname === 'text' || typname === 'varchar'))
      return `coalesce(hashtextextended(${qi(c.name)} COLLATE "C", ${seed}), ${-seed})`;
    // An array's text is array_out over its elements' output functions, whatever their casts.
    if (isArray || TEXT_CAST_EXACT.has(typname)) return `coalesce(hashtextextended(${qi(c.name)}::text COLLATE "C", ${seed}), ${-seed})`;
    return `hashtextextended(ROW(${qi(c.name)})::text COLLATE "C", ${seed})`;
  });
  return `${tag} || (${hashes.join(' # ')})::text`;
}

/**
 * Whether the server computes digests: hashtextextended is PostgreSQL 11+. Without it, reads
 * carry no digests.
 */
export async function digestsWork(client: pg.Client): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    await client.query(`SELECT hashtextextended('sluice' COLLATE "C", 1)`);
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: describeUnknown(err) };
  }
}

/**
 * Primary-key types whose emitted value, cast back from its text (toParam + literal), is exactly the
 * stored key: paging and re-reading by key is safe only for them. With another type a skipping
 * check reads the stream in full with digests instead (a key that did not round-trip would leave a
 * row unread, and then swept).
 */
const EXACT_KEY_TYPES = new Set([
  'int2',
  'int4',
  'int8',
  'oid',
  'numeric',
  'text',
  'varchar',
  'bpchar',
  'uuid',
  'date',
  'timestamp',
  'timestamptz',
  'bool',
  'bytea',
]);

/** Streams a SELECT through COPY, mapping failures to errors that name the stream. */
async function* rowsOf(client: pg.Client, rel: Relation, select: string): AsyncGenerator<Record<string, unknown>[]> {
  try {
    yield* copyRows(
      client,
      select,
      rel.columns.map((c) => ({ name: c.name, oid: c.type.oid })),
    );
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    throw readError(rel, err);
  }
}

/** rowsOf for a SELECT whose last column is the row's digest (digestSql). */
async function* digestedRowsOf(client: pg.Client, rel: Relation, select: string, columns: Column[]): AsyncGenerator<DigestedRows> {
  try {
    yield* copyDigestedRows(
      client,
      select,
      columns.map((c) => ({ name: c.name, oid: c.type.oid })),
    );
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    throw readError(rel, err);
  }
}

/**
 * Full refresh of one stream. Yields messages in arrays (one per network chunk): read() flattens
 * them, and per-row async-generator hops are what a fast read spends its time on otherwise.
 */
export async function* fullRefresh(
  client: pg.Client,
  rel: Relation,
  state: Record<string, unknown> | undefined,
  opts: ReadOptions,
): AsyncGenerator<AirbyteMessage[]> {
  const from = fromClause(rel);
  const select = selectList(rel);
  if (opts.range?.none) {
    // A sharded run's worker whose key range is empty: nothing to read.
  } else if (rel.primaryKey.length) {
    // One ordered stream; a checkpoint every batch_size rows names the last key delivered.
    const pkCols = rel.primaryKey.map((k) => column(rel, k));
    const order = pkCols.map((c) => qi(c.name)).join(', ');
    const after = Array.isArray(state?.pk_after) ? (state!.pk_after as unknown[]) : undefined;
    if (after) yield [message.log('INFO', `stream ${rel.stream}: resuming full refresh after primary key ${JSON.stringify(after)}`)];
    const conditions = [
      ...(after ? [`(${order}) > (${pkCols.map((c, i) => literal(after[i], c)).join(', ')})`] : []),
      ...rangeCondition(rel, opts.range),
    ];
    let digests: DigestCheck | undefined;
    if (opts.digests && pkCols.every((c) => !c.type.isArray && EXACT_KEY_TYPES.has(c.type.typname))) {
      const skipped = yield* skippingRead(client, rel, pkCols, conditions, opts.digests, opts);
      if (opts.signal.aborted) return;
      if (skipped === true) {
        yield [
          message.streamState(rel.stream, { mode: 'full_refresh', completed_at: new Date().toISOString() }),
          message.streamStatus(rel.stream, 'COMPLETE'),
        ];
        return;
      }
      digests = skipped;
    } else if (opts.digests) digests = await opts.digests.check;
    const where = conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
    let n = 0;
    if (digests) {
      // The same read, each record with its row's digest (an extra last column, not in the record).
      const sqlText = `SELECT ${select}, ${digestSql(rel)} FROM ${from} ${where} ORDER BY ${order}`;
      for await (const { rows, digests: sums } of digestedRowsOf(client, rel, sqlText, rel.columns)) {
        const out: AirbyteMessage[] = [];
        const now = Date.now();
        for (let i = 0; i < rows.length; i++) {
          const row = rows[i];
          out.push(message.record(rel.stream, row, now, sums[i]));
          if (++n % opts.batchSize === 0)
            out.push(message.streamState(rel.stream, { mode: 'full_refresh', pk_after: keyOf(row, rel.primaryKey) }));
        }
        yield out;
        if (opts.signal.aborted) return;
      }
    } else
      for await (const rows of rowsOf(client, rel, `SELECT ${select} FROM ${from} ${where} ORDER BY ${order}`)) {
        const out: AirbyteMessage[] = [];
        const now = Date.now();
        for (const row of rows) {
          out.push(message.record(rel.stream, row, now));
          if (++n % opts.batchSize === 0)
            out.push(message.streamState(rel.stream, { mode: 'full_refresh', pk_after: keyOf(row, rel.primaryKey) }));
        }
        yield out;
        if (opts.signal.aborted) return;
      }
  } else if (rel.kind === 'table') {
    // No primary key: page by physical block ranges (ctid), which needs no sort and resumes by block.
    const [{ blocks, per_block }] = await query(
      client,
      rel,
      `SELECT (pg_relation_size(c.oid) / current_setting('block_size')::int)::int AS blocks,
              CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples / c.relpages ELSE 50 END AS per_block
         FROM pg_class c WHERE c.oid = $1`,
      [rel.oid],
    );
    const step = Math.max(1, Math.floor(opts.batchSize / Math.max(1, Number(per_block))));
    let block = typeof state?.block_after === 'number' ? (state.block_after as number) : 0;
    let end = Number(blocks);
    for (;;) {
      if (opts.signal.aborted) return;
      if (block >= end) {
        // The table may have grown while we read it.
        const [{ blocks: now }] = await query(
          client,
          rel,
          `SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int)::int AS blocks`,
          [rel.oid],
        );
        if (block >= Number(now)) break;
        end = Number(now);
      }
      const next = block + step;
      for await (const rows of rowsOf(
        client,
        rel,
        `SELECT ${select} FROM ${from} WHERE ctid >= '(${block},0)'::tid AND ctid < '(${next},0)'::tid`,
      )) {
        yield rows.map((row) => message.record(rel.stream, row));
      }
      block = next;
      yield [message.streamState(rel.stream, { mode: 'full_refresh', block_after: block })];
    }
  } else {
    // Views and custom queries without a key: one stream, restarted from the top after a crash.
    for await (const rows of rowsOf(client, rel, `SELECT ${select} FROM ${from}`)) {
      yield rows.map((row) => message.record(rel.stream, row));
      if (opts.signal.aborted) return;
    }
  }
  if (opts.signal.aborted) return;
  yield [
    message.streamState(rel.stream, { mode: 'full_refresh', completed_at: new Date().toISOString() }),
    message.streamStatus(rel.stream, 'COMPLETE'),
  ];
}

/** Default rows per pass-1 page (config digest_page_size). */
const DIGEST_PAGE_SIZE = 100_000;

/**
 * A full refresh that skips unchanged rows, page by page in key order: pass 1 reads only each row's
 * key and digest and asks the check; pass 2 reads the rows it rejects in full, by key. Both passes
 * of a page run in one REPEATABLE READ transaction, so every key pass 1 saw is there for pass 2
 * (a row missing there would not be emitted, and so be swept). A checkpoint follows every page.
 *
 * The first page is read while the check is still pending (it waits for the destination's listing
 * of the stream): the server computes the digests meanwhile instead of after it (on a machine with
 * cores to spare; on 2 shared cores the two compete and the gain was within our measurements'
 * noise). Each page is read whole before it is checked, so memory is
 * bounded by the page's keys and digests. When the check then says not to skip (the first run with
 * digests, a changed setting), nothing was emitted: the read returns the check (or undefined) for
 * fullRefresh's read in full, and that first page was the only extra work. True: the stream was read.
 */

async function* skippingRead(
  client: pg.Client,
  rel: Relation,
  pkCols: Column[],
  conditions: string[],
  digests: StreamDigests,
  opts: ReadOptions,
): AsyncGenerator<AirbyteMessage[], true | DigestCheck | undefined> {
  const from = fromClause(rel);
  const order = pkCols.map((c) => qi(c.name)).join(', ');
  const keyCols = digests.keyColumns.map((k) => column(rel, k));
  const keySelect = keyCols.map((c) => qi(c.name)).join(', ');
  const digest = digestSql(rel);
  let check: DigestCheck | undefined;
  // A custom query's key may be NULL, which row comparisons cannot page past: those rows are read
  // in full at the end (a table's primary key is never NULL).
  const nullable = rel.kind === 'query';
  const notNull = nullable ? pkCols.map((c) => `${qi(c.name)} IS NOT NULL`) : [];
  const pageSize = opts.digestPageSize ?? DIGEST_PAGE_SIZE;
  let after: Record<string, unknown> | undefined;
  for (;;) {
    const where = [
      ...conditions,
      ...notNull,
      ...(after ? [`(${order}) > (${pkCols.map((c) => literal(after![c.name], c)).join(', ')})`] : []),
    ];
    const whereSql = where.length ? `WHERE ${where.join(' AND ')}` : '';
    await query(client, rel, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', []);
    let seen = 0;
    let last: Record<string, unknown> | undefined;
    const page: DigestedRows[] = [];
    for await (const rows of digestedRowsOf(
      client,
      rel,
      `SELECT ${keySelect}, ${digest} FROM ${from} ${whereSql} ORDER BY ${order} LIMIT ${pageSize}`,
      keyCols,
    ))
      page.push(rows);
    if (!check) {
      check = await digests.check;
      if (!check?.skipping) {
        await query(client, rel, 'COMMIT', []);
        return check;
      }
    }
    const changed: Record<string, unknown>[] = [];
    for (const { rows, digests: sums } of page) {
      for (let i = 0; i < rows.length; i++) if (!check.unchanged(rows[i], sums[i])) changed.push(rows[i]);
      seen += rows.length;
      if (rows.length) last = rows[rows.length - 1];
    }
    page.length = 0;
    if (changed.length) {
      let found = 0;
      for (const group of keyGroups(changed, pkCols)) {
        const select = `SELECT ${selectList(rel)}, ${digest} FROM ${from} WHERE (${order}) IN (${group}) ORDER BY ${order}`;
        for await (const batch of fullRows(select)) {
          found += batch.length;
          yield batch;
          if (opts.signal.aborted) return;
        }
      }
      if (found < changed.length) {
        throw new SluiceError(
          `stream "${rel.stream}": ${changed.length - found} of ${changed.length} changed rows were not found again by primary key`,
          { kind: 'source', where: `stream ${rel.stream}`, hint: "a bug in source digests: report it with the key columns' types" },
        );
      }
    }
    await query(client, rel, 'COMMIT', []);
    if (opts.signal.aborted) return;
    if (seen < pageSize || !last) break;
    after = last;
    yield [message.streamState(rel.stream, { mode: 'full_refresh', pk_after: keyOf(last, rel.primaryKey) })];
  }
  if (nullable) {
    const isNull = pkCols.map((c) => `${qi(c.name)} IS NULL`).join(' OR ');
    const where = [...conditions, `(${isNull})`].join(' AND ');
    yield* fullRows(`SELECT ${selectList(rel)}, ${digest} FROM ${from} WHERE ${where} ORDER BY ${order}`);
  }
  return true;

  /** Rows of `select` (the relation's columns and the digest) as RECORDs with their digests. */
  async function* fullRows(select: string): AsyncGenerator<AirbyteMessage[]> {
    for await (const { rows, digests: sums } of digestedRowsOf(client, rel, select, rel.columns)) {
      const now = Date.now();
      const out: AirbyteMessage[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) out[i] = message.record(rel.stream, rows[i], now, sums[i]);
      yield out;
    }
  }
}

/** The keys as SQL row literals for `IN (…)`, in groups of at most ~1 MB of statement text. */
function* keyGroups(keys: Record<string, unknown>[], pkCols: Column[]): Generator<string> {
  let group: string[] = [];
  let size = 0;
  for (const key of keys) {
    const lit = `(${pkCols.map((c) => literal(key[c.name], c)).join(', ')})`;
    group.push(lit);
    size += lit.length + 2;
    if (size > 1_000_000) {
      yield group.join(', ');
      group = [];
      size = 0;
    }
  }
  if (group.length) yield group.join(', ');
}

export async function* incremental(
  client: pg.Client,
  rel: Relation,
  cursorField: string | undefined,
  state: Record<string, unknown> | undefined,
  opts: ReadOptions,
): AsyncGenerator<AirbyteMessage[]> {
  const cursorName = cursorField ?? rel.defaultCursor;
  if (!cursorName) {
    throw new SluiceError(`stream "${rel.stream}" is incremental but has no cursor_field`, {
      kind: 'config',
      where: `stream ${rel.stream}`,
      hint: 'set cursor_field to a column that grows on every insert/update (e.g. updated_at)',
    });
  }
  const cur = column(rel, cursorName);
  const from = fromClause(rel);
  const select = selectList(rel);
  const sameCursor = state?.cursor_field === cursorName;
  const cursor = sameCursor ? state!.cursor : undefined;
  const pkAfter = sameCursor && Array.isArray(state!.pk) ? (state!.pk as unknown[]) : undefined;
  const lookback = opts.lookback;
  const cq = qi(cur.name);
  const pkCols = rel.primaryKey.map((k) => column(rel, k));
  const order = [cq, ...pkCols.map((c) => qi(c.name))].join(', ');
  let where: string;
  if (cursor == null) where = `${cq} IS NOT NULL`;
  else if (lookback != null) {
    // Re-read inclusively `lookback` before the saved cursor: rows committed late are caught.
    const window = typeof lookback === 'number' ? `${Number(lookback)}::numeric` : `${qlit(String(lookback))}::interval`;
    where = `${cq} >= (${literal(cursor, cur)} - ${window})`;
  } else if (pkCols.length && pkAfter) {
    // Tie-safe: (cursor, pk) is a total order, so rows sharing a cursor value are never skipped.
    where = `(${order}) > (${[literal(cursor, cur), ...pkCols.map((c, i) => literal(pkAfter[i], c))].join(', ')})`;
  } else {
    // No key to break ties: re-read the last cursor value inclusively (duplicates, never gaps).
    where = `${cq} >= ${literal(cursor, cur)}`;
  }
  let n = 0;
  let last: Record<string, unknown> | undefined;
  for await (const rows of rowsOf(client, rel, `SELECT ${select} FROM ${from} WHERE ${where} ORDER BY ${order}`)) {
    const out: AirbyteMessage[] = [];
    const now = Date.now();
    for (const row of rows) {
      last = row;
      out.push(message.record(rel.stream, row, now));
      if (++n % opts.batchSize === 0) out.push(message.streamState(rel.stream, stateAfter(row)));
    }
    yield out;
    if (opts.signal.aborted) return;
  }
  function stateAfter(row: Record<string, unknown>) {
    return {
      mode: 'incremental',
      cursor_field: cursorName,
      cursor: row[cur.name],
      ...(pkCols.length ? { pk: keyOf(row, rel.primaryKey) } : {}),
    };
  }
  if (opts.signal.aborted) return;
  // Final checkpoint at the last row (the loop only checkpoints whole batches).
  yield [
    ...(last && n % opts.batchSize !== 0 ? [message.streamState(rel.stream, stateAfter(last))] : []),
    message.streamStatus(rel.stream, 'COMPLETE'),
  ];
}
