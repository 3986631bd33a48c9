// Full refresh and cursor-incremental reads. Both page through the table in a stable order with
// bounded pages, and checkpoint after every page, so memory stays flat and a crash resumes at
// the last committed page instead of starting over.
import type pg from 'pg';
import type { AirbyteMessage } from '../../src/protocol/messages.ts';
import { message } from '../../src/protocol/messages.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { fromClause, qi, type Column, type Relation } from './db.ts';
import { toParam } from './types.ts';

export interface ReadOptions {
  batchSize: number;
  signal: AbortSignal;
  lookback?: string | number;
}

function selectList(rel: Relation): string {
  return rel.kind === 'query' ? '*' : rel.columns.map((c) => qi(c.name)).join(', ');
}

function column(rel: Relation, name: string): Column {
  const c = rel.columns.find((x) => x.name === name);
  if (!c) {
    throw new SluiceError(`stream "${rel.stream}" has no column "${name}"`, { kind: 'config', where: `stream ${rel.stream}`, hint: 'check cursor_field / primary_key against `sluice discover`' });
  }
  return c;
}

const cast = (c: Column) => (c.type.isArray ? '' : `::${c.type.sqlType}`);

async function query(client: pg.Client, rel: Relation, sql: string, params: unknown[]): Promise<Record<string, unknown>[]> {
  try {
    return (await client.query(sql, params)).rows;
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new SluiceError(`reading stream "${rel.stream}" failed: ${describeUnknown(err)}`, {
      kind: code === '42501' ? 'config' : 'source',
      where: `stream ${rel.stream}`,
      hint: code === '42501' ? `grant SELECT on ${rel.kind === 'query' ? 'the tables of the query' : `${rel.schema}.${rel.table}`} to the sync user` : undefined,
      transient: code === '40001' || code === '57P01' || code === 'ECONNRESET',
      cause: err,
    });
  }
}

/** State keys must round-trip: we keep the emitted values and cast them back in SQL. */
function keyOf(row: Record<string, unknown>, cols: string[]): unknown[] {
  return cols.map((c) => row[c] ?? null);
}

export async function* fullRefresh(client: pg.Client, rel: Relation, state: Record<string, unknown> | undefined, opts: ReadOptions): AsyncGenerator<AirbyteMessage> {
  const from = fromClause(rel);
  const select = selectList(rel);
  if (rel.primaryKey.length) {
    const pkCols = rel.primaryKey.map((k) => column(rel, k));
    const order = pkCols.map((c) => qi(c.name)).join(', ');
    let after = Array.isArray(state?.pk_after) ? (state!.pk_after as unknown[]) : undefined;
    if (after) yield message.log('INFO', `stream ${rel.stream}: resuming full refresh after primary key ${JSON.stringify(after)}`);
    for (;;) {
      if (opts.signal.aborted) return;
      const where = after ? `WHERE (${order}) > (${pkCols.map((c, i) => `$${i + 1}${cast(c)}`).join(', ')})` : '';
      const params = after ? after.map((v, i) => toParam(v, pkCols[i].type)) : [];
      const rows = await query(client, rel, `SELECT ${select} FROM ${from} ${where} ORDER BY ${order} LIMIT ${opts.batchSize}`, params);
      for (const row of rows) yield message.record(rel.stream, row);
      if (rows.length) {
        after = keyOf(rows[rows.length - 1], rel.primaryKey);
        if (rows.length === opts.batchSize) yield message.streamState(rel.stream, { mode: 'full_refresh', pk_after: after });
      }
      if (rows.length < opts.batchSize) break;
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
        const [{ blocks: now }] = await query(client, rel, `SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int)::int AS blocks`, [rel.oid]);
        if (block >= Number(now)) break;
        end = Number(now);
      }
      const next = block + step;
      const rows = await query(client, rel, `SELECT ${select} FROM ${from} WHERE ctid >= $1::tid AND ctid < $2::tid`, [`(${block},0)`, `(${next},0)`]);
      for (const row of rows) yield message.record(rel.stream, row);
      block = next;
      yield message.streamState(rel.stream, { mode: 'full_refresh', block_after: block });
    }
  } else {
    // Views and custom queries without a key: one server-side cursor, restarted from the top after a crash.
    yield* cursorScan(client, rel, `SELECT ${select} FROM ${from}`, [], opts, () => undefined);
  }
  yield message.streamState(rel.stream, { mode: 'full_refresh', completed_at: new Date().toISOString() });
  yield message.streamStatus(rel.stream, 'COMPLETE');
}

/** Streams a query through a server-side cursor (constant memory for any result size). */
async function* cursorScan(
  client: pg.Client,
  rel: Relation,
  sql: string,
  params: unknown[],
  opts: ReadOptions,
  checkpoint: (last: Record<string, unknown>) => Record<string, unknown> | undefined,
): AsyncGenerator<AirbyteMessage> {
  await query(client, rel, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', []);
  let open = true;
  try {
    await query(client, rel, `DECLARE sluice_scan NO SCROLL CURSOR FOR ${sql}`, params);
    for (;;) {
      if (opts.signal.aborted) return;
      const rows = await query(client, rel, `FETCH ${opts.batchSize} FROM sluice_scan`, []);
      for (const row of rows) yield message.record(rel.stream, row);
      if (rows.length) {
        const st = checkpoint(rows[rows.length - 1]);
        if (st) yield message.streamState(rel.stream, st);
      }
      if (rows.length < opts.batchSize) break;
    }
    await query(client, rel, 'COMMIT', []);
    open = false;
  } finally {
    if (open) await client.query('ROLLBACK').catch(() => {});
  }
}

export async function* incremental(
  client: pg.Client,
  rel: Relation,
  cursorField: string | undefined,
  state: Record<string, unknown> | undefined,
  opts: ReadOptions,
): AsyncGenerator<AirbyteMessage> {
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
  let cursor = sameCursor ? state!.cursor : undefined;
  let pkAfter = sameCursor && Array.isArray(state!.pk) ? (state!.pk as unknown[]) : undefined;
  const lookback = opts.lookback;
  const lookbackExpr = typeof lookback === 'number' ? `::numeric` : `::interval`;
  const cq = qi(cur.name);
  if (rel.primaryKey.length) {
    const pkCols = rel.primaryKey.map((k) => column(rel, k));
    const order = [cq, ...pkCols.map((c) => qi(c.name))].join(', ');
    // With a lookback the first page starts inclusively `lookback` before the saved cursor.
    let first = lookback != null && cursor != null;
    for (;;) {
      if (opts.signal.aborted) return;
      let where: string;
      let params: unknown[];
      if (cursor == null) {
        where = `${cq} IS NOT NULL`;
        params = [];
      } else if (first) {
        where = `${cq} >= ($1${cast(cur)} - $2${lookbackExpr})`;
        params = [toParam(cursor, cur.type), String(lookback)];
      } else {
        // Tie-safe: (cursor, pk) is a total order, so rows sharing a cursor value are never skipped.
        where = `(${order}) > ($1${cast(cur)}, ${pkCols.map((c, i) => `$${i + 2}${cast(c)}`).join(', ')})`;
        params = [toParam(cursor, cur.type), ...pkAfter!.map((v, i) => toParam(v, pkCols[i].type))];
      }
      first = false;
      const rows = await query(client, rel, `SELECT ${select} FROM ${from} WHERE ${where} ORDER BY ${order} LIMIT ${opts.batchSize}`, params);
      for (const row of rows) yield message.record(rel.stream, row);
      if (rows.length) {
        const last = rows[rows.length - 1];
        cursor = last[cur.name];
        pkAfter = keyOf(last, rel.primaryKey);
        yield message.streamState(rel.stream, { mode: 'incremental', cursor_field: cursorName, cursor, pk: pkAfter });
      }
      if (rows.length < opts.batchSize) break;
    }
  } else {
    // No key to break ties: re-read the last cursor value inclusively (duplicates, never gaps).
    const where = cursor == null ? `${cq} IS NOT NULL` : lookback != null ? `${cq} >= ($1${cast(cur)} - $2${lookbackExpr})` : `${cq} >= $1${cast(cur)}`;
    const params = cursor == null ? [] : lookback != null ? [toParam(cursor, cur.type), String(lookback)] : [toParam(cursor, cur.type)];
    yield* cursorScan(client, rel, `SELECT ${select} FROM ${from} WHERE ${where} ORDER BY ${cq}`, params, opts, (last) => ({
      mode: 'incremental',
      cursor_field: cursorName,
      cursor: last[cur.name],
    }));
  }
  yield message.streamStatus(rel.stream, 'COMPLETE');
}
