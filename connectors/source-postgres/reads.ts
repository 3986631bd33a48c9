// Full refresh and cursor-incremental reads. Both page through the table in a stable order with
// bounded pages, and checkpoint after every page, so memory stays flat and a crash resumes at
// the last committed page instead of starting over.
import type pg from 'pg';
import type { AirbyteMessage } from '../../src/protocol/messages.ts';
import { message } from '../../src/protocol/messages.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { copyRows } from './copy.ts';
import { fromClause, qi, qlit, type Column, type Relation } from './db.ts';
import { toParam } from './types.ts';

export interface ReadOptions {
  batchSize: number;
  signal: AbortSignal;
  lookback?: string | number;
  /** Sharded runs: read only this primary-key range (see planRanges). */
  range?: KeyRange;
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
    const where = conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
    let n = 0;
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
