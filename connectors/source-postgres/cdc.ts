// Change data capture over logical replication (pgoutput).
//
// Order of a run:
//   1. publication and slot exist (created when missing); a new slot exports a snapshot;
//   2. streams not yet snapshotted are read in keyset pages inside that exported snapshot (after a
//      crash mid-snapshot: a fresh snapshot, still correct because the stream replays every change
//      since the slot's position and applying a change twice gives the same row);
//   3. changes stream from the LSN in the state; a GLOBAL state with the commit LSN follows
//      committed transactions. The server learns an LSN as flushed only when the engine reports the
//      state holding it as committed (onStateCommitted), or when read() starts with that state.
import pg from 'pg';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown, isTransientNetworkError } from '../../src/protocol/errors.ts';
import { message, type AirbyteMessage } from '../../src/protocol/messages.ts';
import type { PostgresSourceConfig } from './config.ts';
import { copyRows } from './copy.ts';
import { connect, qi, qlit, type Relation } from './db.ts';
import {
  lsnFromText,
  lsnToText,
  parsePgoutput,
  standbyStatus,
  type Lsn,
  type PgoutputMessage,
  type RelationMessage,
  type TupleValue,
} from './pgoutput.ts';
import { parserFor, toParam } from './types.ts';
import { cdcNames, savedSlot } from './cdc-names.ts';

export { cdcNames, defaultSlotName, legacySlotName, lsnOfState, savedSlot } from './cdc-names.ts';

export const HEARTBEAT_PREFIX = 'sluice_heartbeat';

// ---- acknowledgement registry: onStateCommitted reaches the live stream through it ------------

interface LiveSession {
  ack(lsn: Lsn): void;
}
const sessions = new Map<string, LiveSession>();

/**
 * Called by the engine after it persisted a state: the server may now discard WAL before it. A state
 * committed after the read ended (the pipeline drains after the source stops) has no live stream to
 * carry it, so the slot is advanced by SQL instead; without that the slot would confirm one run
 * behind the saved state and retain its WAL until the next run.
 */
export async function acknowledgeCommitted(
  slot: string,
  lsn: Lsn,
  late?: { cfg: PostgresSourceConfig; ctx: Pick<ConnectorContext, 'baseDir' | 'logger'> },
): Promise<void> {
  const live = sessions.get(slot);
  if (live) return live.ack(lsn);
  if (!late) return;
  let client: pg.Client | undefined;
  try {
    client = await connect(late.cfg, late.ctx);
    await client.query(
      `SELECT pg_replication_slot_advance($1, $2::pg_lsn)
         WHERE (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1) < $2::pg_lsn`,
      [slot, lsnToText(lsn)],
    );
  } catch (err) {
    // Not fatal: the state is saved, and the next run confirms it when it starts streaming.
    late.ctx.logger.debug({ slot, err: describeUnknown(err) }, 'confirming the last committed position on the slot failed');
  } finally {
    await client?.end().catch(() => {});
  }
}

// ---- replication connection ---------------------------------------------------------------------

type StreamEvent = { kind: 'data'; msg: PgoutputMessage } | { kind: 'keepalive'; walEnd: Lsn };

const HIGH_WATER = 2_000;
const LOW_WATER = 200;

/** The copy-both stream, as a pull queue with backpressure (the socket pauses while we lag). */
class ReplicationStream {
  private queue: StreamEvent[] = [];
  private wake?: () => void;
  private failure?: unknown;
  private ended = false;
  private paused = false;
  private stopping = false;
  received: Lsn = 0n;
  flushed: Lsn = 0n;
  private timer?: NodeJS.Timeout;

  constructor(private readonly client: pg.Client) {}

  private get con(): {
    on(e: string, f: (m: { chunk: Buffer }) => void): void;
    sendCopyFromChunk(b: Buffer): void;
    stream: { pause(): void; resume(): void };
  } {
    return (this.client as unknown as { connection: never }).connection;
  }

  start(slot: string, publication: string, from: Lsn): void {
    this.flushed = from;
    this.received = from;
    this.con.on('copyData', ({ chunk }) => this.onCopyData(chunk));
    const sql = `START_REPLICATION SLOT ${qi(slot)} LOGICAL ${lsnToText(from)} (proto_version '1', publication_names ${qlit(qi(publication))}, messages 'true')`;
    this.client.query(sql).then(
      () => {
        this.ended = true;
        this.wake?.();
      },
      (err) => {
        if (!this.stopping) this.failure = err;
        this.ended = true;
        this.wake?.();
      },
    );
    // Status updates keep wal_sender_timeout away even while the consumer is slow.
    this.timer = setInterval(() => this.sendStatus(), 10_000);
    this.timer.unref();
  }

  private onCopyData(chunk: Buffer): void {
    if (chunk[0] === 0x77) {
      const start = chunk.readBigUInt64BE(1);
      if (start > this.received) this.received = start;
      this.queue.push({ kind: 'data', msg: parsePgoutput(chunk.subarray(25)) });
    } else if (chunk[0] === 0x6b) {
      const walEnd = chunk.readBigUInt64BE(1);
      if (chunk[17]) this.sendStatus();
      this.queue.push({ kind: 'keepalive', walEnd });
    }
    if (!this.paused && this.queue.length > HIGH_WATER) {
      this.paused = true;
      this.con.stream.pause();
    }
    this.wake?.();
  }

  sendStatus(ping = false): void {
    if (this.stopping || this.ended) return;
    try {
      this.con.sendCopyFromChunk(standbyStatus(this.received > this.flushed ? this.received : this.flushed, this.flushed, ping));
    } catch {
      /* the connection is going away; the next read reports it */
    }
  }

  /** Events received and not yet consumed. */
  get backlog(): number {
    return this.queue.length;
  }

  ack(lsn: Lsn): void {
    if (lsn > this.flushed) {
      this.flushed = lsn;
      this.sendStatus();
    }
  }

  /** Next event, `idle` after `timeoutMs` without one, or `end`. */
  async next(timeoutMs: number, signal: AbortSignal): Promise<StreamEvent | 'idle' | 'end'> {
    if (!this.queue.length && !this.ended && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, timeoutMs);
        const onAbort = () => done();
        signal.addEventListener('abort', onAbort, { once: true });
        function done() {
          clearTimeout(t);
          signal.removeEventListener('abort', onAbort);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
    }
    const ev = this.queue.shift();
    if (this.paused && this.queue.length < LOW_WATER) {
      this.paused = false;
      this.con.stream.resume();
    }
    if (ev) return ev;
    if (this.failure) throw this.failure;
    return this.ended ? 'end' : 'idle';
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    await this.client.end().catch(() => {});
  }
}

// ---- the CDC read --------------------------------------------------------------------------------

interface SlotInfo {
  plugin: string | null;
  database: string | null;
  wal_status: string | null;
  confirmed_flush_lsn: string | null;
  active: boolean;
}

async function slotInfo(client: pg.Client, slot: string): Promise<SlotInfo | undefined> {
  const r = await client.query<SlotInfo>(
    `SELECT plugin, database, wal_status, confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return r.rows[0];
}

/** No persisted progress: a slot of ours is a leftover of a run that never committed. Start clean. */
async function dropLeftover(meta: pg.Client, slot: string, info: SlotInfo): Promise<void> {
  if (info.active)
    throw new SluiceError(`replication slot "${slot}" is in use by another process`, {
      kind: 'source',
      hint: 'stop the other sync of this connection',
    });
  await meta.query('SELECT pg_drop_replication_slot($1)', [slot]);
}

/** WAL the slot keeps on the server (bytes behind the current position). */
export async function slotLag(client: pg.Client, slot: string): Promise<{ retained: number; unconfirmed: number } | undefined> {
  const r = await client.query<{ retained: string | null; unconfirmed: string | null }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint::text AS unconfirmed
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const row = r.rows[0];
  return row ? { retained: Number(row.retained ?? 0), unconfirmed: Number(row.unconfirmed ?? 0) } : undefined;
}

function privilegeError(err: unknown, action: string, privilege: string, hint: string): SluiceError {
  const code = (err as { code?: string }).code;
  if (code === '42501')
    return new SluiceError(`${action} needs ${privilege}: ${describeUnknown(err)}`, { kind: 'config', hint, cause: err });
  return new SluiceError(`${action} failed: ${describeUnknown(err)}`, { kind: 'source', hint, cause: err });
}

async function ensurePublication(
  client: pg.Client,
  cfg: PostgresSourceConfig,
  publication: string,
  rels: Relation[],
  ctx: ConnectorContext,
): Promise<void> {
  const tables = rels.map((r) => `${qi(r.schema!)}.${qi(r.table!)}`);
  const exists = await client.query<{ pubname: string }>('SELECT pubname FROM pg_publication WHERE pubname = $1', [publication]);
  if (!exists.rowCount) {
    if (!cfg.cdc.create_publication) {
      throw new SluiceError(`publication "${publication}" does not exist`, {
        kind: 'config',
        hint: `create it: CREATE PUBLICATION ${qi(publication)} FOR TABLE ${tables.join(', ')};  or set cdc.create_publication: true`,
      });
    }
    try {
      // Via the partition root: changes to partitions arrive under the partitioned table's name.
      await client.query(`CREATE PUBLICATION ${qi(publication)} FOR TABLE ${tables.join(', ')} WITH (publish_via_partition_root = true)`);
    } catch (err) {
      throw privilegeError(
        err,
        `creating publication "${publication}"`,
        'the CREATE privilege on the database and ownership of the tables',
        `ask an administrator to run: CREATE PUBLICATION ${qi(publication)} FOR TABLE ${tables.join(', ')};  then set cdc.publication: ${publication}`,
      );
    }
    ctx.logger.info({ publication }, 'created publication');
    return;
  }
  const viaRoot = await client.query<{ pubviaroot: boolean }>('SELECT pubviaroot FROM pg_publication WHERE pubname = $1', [publication]);
  const partitioned = rels.filter((r) => r.partitioned);
  if (partitioned.length && !viaRoot.rows[0]?.pubviaroot) {
    throw new SluiceError(
      `publication "${publication}" does not publish via the partition root, so changes to ${partitioned.map((r) => `${r.schema}.${r.table}`).join(', ')} would arrive under partition names`,
      {
        kind: 'config',
        hint: `ALTER PUBLICATION ${qi(publication)} SET (publish_via_partition_root = true);`,
      },
    );
  }
  const inPub = await client.query<{ schemaname: string; tablename: string }>(
    'SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1',
    [publication],
  );
  const have = new Set(inPub.rows.map((r) => `${r.schemaname}.${r.tablename}`));
  const missing = rels.filter((r) => !have.has(`${r.schema}.${r.table}`));
  if (!missing.length) return;
  const list = missing.map((r) => `${qi(r.schema!)}.${qi(r.table!)}`).join(', ');
  try {
    await client.query(`ALTER PUBLICATION ${qi(publication)} ADD TABLE ${list}`);
  } catch (err) {
    throw privilegeError(
      err,
      `adding ${list} to publication "${publication}"`,
      'ownership of the publication and the tables',
      `ask an administrator to run: ALTER PUBLICATION ${qi(publication)} ADD TABLE ${list};`,
    );
  }
}

interface StreamSnapshotState {
  snapshot?: 'done';
  pk_after?: unknown[];
  /** Column names as of the state's LSN: a change while we were away is still noticed. */
  columns?: string[];
}

export interface CdcRead {
  cfg: PostgresSourceConfig;
  rels: Relation[];
  state: SourceState | undefined;
  ctx: ConnectorContext;
}

export async function* readCdc({ cfg, rels, state, ctx }: CdcRead): AsyncGenerator<AirbyteMessage> {
  for (const r of rels) {
    if (r.kind !== 'table')
      throw new SluiceError(`stream "${r.stream}" cannot use CDC: only tables are replicated`, {
        kind: 'config',
        where: `stream ${r.stream}`,
        hint: 'use full_refresh or incremental for views and SQL streams',
      });
    if (!r.primaryKey.length)
      throw new SluiceError(`stream "${r.stream}" cannot use CDC without a primary key`, {
        kind: 'config',
        where: `stream ${r.stream}`,
        hint: `add a primary key to ${r.schema}.${r.table}, or use full_refresh`,
      });
  }
  const meta = await connect(cfg, ctx);
  let repl: pg.Client | undefined;
  let stream: ReplicationStream | undefined;
  const dbName = await meta
    .query<{ db: string }>('SELECT current_database() AS db')
    .then((r) => r.rows[0].db)
    .catch(async (err) => {
      await meta.end().catch(() => {});
      throw err;
    });
  const names = cdcNames(cfg, ctx.connection, dbName);
  const publication = names.publication;
  // A saved state goes on with the slot it names (existing users keep their `sluice_<connection>`).
  let slot = cfg.cdc.slot ?? savedSlot(state) ?? names.slot;
  try {
    const wal = (await meta.query<{ wal_level: string }>('SHOW wal_level')).rows[0].wal_level;
    if (wal !== 'logical') {
      throw new SluiceError(`CDC needs wal_level=logical, the server has wal_level=${wal}`, {
        kind: 'config',
        hint: "set wal_level = 'logical' in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the server",
      });
    }
    await ensurePublication(meta, cfg, publication, rels, ctx);

    const shared = (state?.shared ?? {}) as Record<string, unknown>;
    let lsn: Lsn | undefined = typeof shared.lsn === 'string' && shared.slot === slot ? lsnFromText(shared.lsn) : undefined;
    let perStream: Record<string, StreamSnapshotState> = lsn ? { ...((state?.streams ?? {}) as Record<string, StreamSnapshotState>) } : {};
    let info = await slotInfo(meta, slot);
    // A slot of another database or plugin is someone else's: never dropped, never suggested for dropping.
    const foreign = (i: SlotInfo | undefined) => !!i && (i.plugin !== 'pgoutput' || i.database !== dbName);
    const foreignError = (i: SlotInfo, what: string) =>
      new SluiceError(
        `replication slot "${slot}" belongs to ${i.database !== dbName ? `database ${i.database ?? '(none)'}` : `plugin ${i.plugin}`}, not to this connection (database ${dbName}, pgoutput)${what}`,
        {
          kind: 'source',
          hint: cfg.cdc.slot
            ? 'it is another pipeline’s slot: leave it alone and set cdc.slot to a name of this connection’s own'
            : `it is another pipeline’s slot: leave it alone; set cdc.on_invalid_slot: resnapshot (or run sluice state reset <pipeline> --connection ${ctx.connection}) to start on this database's own slot ${names.slot}`,
        },
      );

    if (lsn !== undefined) {
      const problem = !info
        ? `replication slot "${slot}" no longer exists`
        : foreign(info)
          ? undefined // handled below: not ours, so not ours to drop or re-snapshot into
          : info.wal_status === 'lost'
            ? `replication slot "${slot}" was invalidated (the server removed WAL it still needed)`
            : info.confirmed_flush_lsn && lsnFromText(info.confirmed_flush_lsn) > lsn
              ? `replication slot "${slot}" is ahead of the saved state (${info.confirmed_flush_lsn} > ${lsnToText(lsn)}): changes in between were consumed elsewhere`
              : undefined;
      if (info && foreign(info)) {
        if (cfg.cdc.on_invalid_slot === 'fail' || cfg.cdc.slot)
          throw foreignError(info, `; changes since ${lsnToText(lsn)} cannot be replayed from it`);
        // resnapshot: onto this connection's own slot; the other one stays as it is.
        yield message.log(
          'WARN',
          `replication slot "${slot}" belongs to another database or plugin; taking a new snapshot on slot ${names.slot}`,
        );
        ctx.logger.warn({ slot, newSlot: names.slot }, 'saved slot belongs to another database or plugin; re-snapshotting on our own slot');
        slot = names.slot;
        info = await slotInfo(meta, slot);
        lsn = undefined;
        perStream = {};
        if (info && foreign(info)) throw foreignError(info, '');
        if (info) await dropLeftover(meta, slot, info);
      } else if (problem) {
        if (cfg.cdc.on_invalid_slot === 'fail') {
          throw new SluiceError(`${problem}; changes since ${lsnToText(lsn)} cannot be replayed`, {
            kind: 'source',
            hint: 'set cdc.on_invalid_slot: resnapshot to re-read the tables and continue, or reset the connection state',
          });
        }
        yield message.log('WARN', `${problem}; taking a new snapshot (on_invalid_slot: resnapshot)`);
        ctx.logger.warn({ slot }, `${problem}; re-snapshotting`);
        if (info) await meta.query('SELECT pg_drop_replication_slot($1)', [slot]);
        lsn = undefined;
        perStream = {};
      }
    } else if (info) {
      if (foreign(info)) throw foreignError(info, '');
      await dropLeftover(meta, slot, info);
    }

    repl = await connect(cfg, ctx, { replication: true }).catch((err) => {
      const text = describeUnknown(err);
      if (/replication|walsender|superuser/i.test(text)) {
        throw new SluiceError(`opening a replication connection failed: ${text}`, {
          kind: 'config',
          hint: 'the user needs the REPLICATION attribute (ALTER ROLE <user> REPLICATION) and a pg_hba.conf entry for replication connections',
        });
      }
      throw err;
    });
    let snapshotName: string | undefined;
    if (lsn === undefined) {
      try {
        const r = await repl.query(`CREATE_REPLICATION_SLOT ${qi(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`);
        lsn = lsnFromText(r.rows[0].consistent_point);
        snapshotName = r.rows[0].snapshot_name;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === '53400')
          throw new SluiceError(`creating replication slot "${slot}" failed: ${describeUnknown(err)}`, {
            kind: 'source',
            hint: 'raise max_replication_slots or drop unused slots',
            cause: err,
          });
        throw privilegeError(
          err,
          `creating replication slot "${slot}"`,
          'the REPLICATION attribute',
          "ALTER ROLE <user> REPLICATION; or ask an administrator to create the slot: SELECT pg_create_logical_replication_slot(…, 'pgoutput')",
        );
      }
      ctx.logger.info({ slot, lsn: lsnToText(lsn) }, 'created replication slot');
    }
    const sharedState = () => ({ lsn: lsnToText(lsn!), slot, publication });
    const globalState = () => message.globalState(sharedState(), perStream as Record<string, Record<string, unknown>>);

    // ---- snapshot of streams not read yet ----
    const pending = rels.filter((r) => perStream[r.stream]?.snapshot !== 'done');
    if (pending.length) {
      await meta.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      if (snapshotName) await meta.query(`SET TRANSACTION SNAPSHOT ${qlit(snapshotName)}`);
      else
        yield message.log(
          'INFO',
          `snapshot of ${pending.map((r) => r.stream).join(', ')} resumes in a new snapshot; changes since ${lsnToText(lsn)} are replayed after it`,
        );
      for (const rel of pending) {
        // One ordered COPY per table inside the snapshot; a checkpoint every batch_size rows.
        const pkCols = rel.primaryKey.map((k) => rel.columns.find((c) => c.name === k)!);
        const order = pkCols.map((c) => qi(c.name)).join(', ');
        // Generated columns are not replicated; leaving them out of the snapshot too keeps a row the same either way.
        const cols = rel.columns.filter((c) => !c.generated);
        const select = cols.map((c) => qi(c.name)).join(', ');
        const after = perStream[rel.stream]?.pk_after;
        const where = after
          ? `WHERE (${order}) > (${pkCols
              .map((c, i) => {
                const t = toParam(after[i], c.type);
                return t === null ? 'NULL' : `${qlit(t)}${c.type.isArray ? '' : '::' + c.type.sqlType}`;
              })
              .join(', ')})`
          : '';
        let n = 0;
        const sqlText = `SELECT ${select} FROM ${qi(rel.schema!)}.${qi(rel.table!)} ${where} ORDER BY ${order}`;
        for await (const rows of copyRows(
          meta,
          sqlText,
          cols.map((c) => ({ name: c.name, oid: c.type.oid })),
        )) {
          for (const row of rows) {
            yield message.record(rel.stream, row);
            if (++n % cfg.batch_size === 0) {
              perStream[rel.stream] = { pk_after: rel.primaryKey.map((k) => row[k]) };
              yield globalState();
            }
          }
          if (ctx.signal.aborted) return; // the COPY is abandoned with its connection
        }
        perStream[rel.stream] = { snapshot: 'done', columns: cols.map((c) => c.name) };
        yield globalState();
      }
      await meta.query('COMMIT');
    } else {
      yield globalState();
    }

    // ---- streaming ----
    yield* streamChanges({
      cfg,
      rels,
      ctx,
      meta,
      repl,
      slot,
      publication,
      startLsn: lsn,
      perStream,
      onStream: (s) => (stream = s),
      setLsn: (l) => (lsn = l),
      globalState,
    });
    repl = undefined; // closed by streamChanges
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    // A server restart or a terminated walsender ends the replication connection; a later run
    // resumes from the saved LSN.
    const transient = isTransientNetworkError(err as NodeJS.ErrnoException) || /Connection terminated/i.test(describeUnknown(err));
    throw new SluiceError(`CDC on slot "${slot}" failed: ${describeUnknown(err)}`, {
      kind: 'source',
      cause: err,
      transient,
      ...(transient ? { hint: 'the connection to the server was lost; run the sync again: it resumes from the last committed state' } : {}),
    });
  } finally {
    sessions.delete(slot);
    await (stream as ReplicationStream | undefined)?.stop();
    await repl?.end().catch(() => {});
    await meta.end().catch(() => {});
  }
}

interface StreamArgs {
  cfg: PostgresSourceConfig;
  rels: Relation[];
  ctx: ConnectorContext;
  meta: pg.Client;
  repl: pg.Client;
  slot: string;
  publication: string;
  startLsn: Lsn;
  perStream: Record<string, StreamSnapshotState>;
  onStream(s: ReplicationStream): void;
  setLsn(l: Lsn): void;
  globalState(): AirbyteMessage;
}

interface LiveRelation {
  rel: Relation;
  msg: RelationMessage;
  parsers: ((s: string) => unknown)[];
}

async function* streamChanges(a: StreamArgs): AsyncGenerator<AirbyteMessage> {
  const { cfg, ctx, meta, slot } = a;
  const byTable = new Map(a.rels.map((r) => [`${r.schema}.${r.table}`, r]));
  const live = new Map<number, LiveRelation>();
  // Position the server had flushed when we started: without --follow we stop once past it.
  const startWal = lsnFromText((await meta.query<{ l: string }>('SELECT pg_current_wal_flush_lsn()::text AS l')).rows[0].l);
  const stream = new ReplicationStream(a.repl);
  a.onStream(stream);
  stream.start(slot, a.publication, a.startLsn);
  stream.sendStatus(); // the state we were started with is committed: confirm it
  sessions.set(slot, { ack: (l) => stream.ack(l) });

  let position = a.startLsn; // everything before it has been yielded
  let stated = a.startLsn; // LSN of the last STATE we emitted
  let inTx = false;
  let txCommitTime: number | undefined;
  let sinceState = 0;
  let lastEventAt = Date.now();
  let lastStateAt = Date.now();
  let lastLagAt = 0;
  const heartbeatMs = cfg.cdc.heartbeat_seconds * 1000;
  let heartbeatPending = false;
  let heartbeatWarned = false;

  const emitState = (): AirbyteMessage => {
    a.setLsn(position);
    stated = position;
    sinceState = 0;
    lastStateAt = Date.now();
    return a.globalState();
  };

  const lag = await slotLag(meta, slot).catch(() => undefined);
  if (lag) yield message.log('INFO', `slot ${slot}: ${lag.retained} bytes of WAL retained, ${lag.unconfirmed} bytes not yet confirmed`);
  lastLagAt = Date.now();

  for (;;) {
    if (ctx.signal.aborted) {
      if (!inTx && position > stated) yield emitState();
      return;
    }
    const ev = await stream.next(inTx ? 5_000 : 200, ctx.signal);
    const now = Date.now();
    if (ev === 'end')
      throw new SluiceError('the server ended the replication stream', {
        kind: 'source',
        transient: true,
        hint: 'run the sync again; it resumes from the last committed state',
      });
    if (ev === 'idle') {
      if (inTx) continue;
      if (position > stated) yield emitState();
      if (!a.ctx.follow) stream.sendStatus(true); // ask for a keepalive carrying the server's position
      if (now - lastEventAt >= heartbeatMs && !heartbeatPending) {
        heartbeatPending = true;
        lastEventAt = now;
        meta.query('SELECT pg_logical_emit_message(false, $1, $2)', [HEARTBEAT_PREFIX, new Date().toISOString()]).then(
          () => (heartbeatPending = false),
          (err) => {
            heartbeatPending = false;
            if (!heartbeatWarned)
              ctx.logger.warn(
                { slot, err: describeUnknown(err) },
                'heartbeat failed; the slot only advances with changes to the watched tables',
              );
            heartbeatWarned = true;
          },
        );
      }
      if (now - lastLagAt >= cfg.cdc.lag_report_seconds * 1000) {
        lastLagAt = now;
        const l = await slotLag(meta, slot).catch(() => undefined);
        if (l) {
          ctx.logger.info({ slot, walRetainedBytes: l.retained, unconfirmedBytes: l.unconfirmed }, 'replication slot lag');
          yield message.log('INFO', `slot ${slot}: ${l.retained} bytes of WAL retained, ${l.unconfirmed} bytes not yet confirmed`);
        }
      }
      continue;
    }
    if (ev.kind === 'keepalive') {
      if (inTx) continue;
      // The server has decoded everything before walEnd: nothing of ours lies before it unsent.
      if (ev.walEnd > position && (now - lastStateAt >= heartbeatMs || (!ctx.follow && ev.walEnd >= startWal))) {
        position = ev.walEnd;
        yield emitState();
      }
      if (!ctx.follow && ev.walEnd >= startWal) {
        if (position > stated) yield emitState();
        return;
      }
      continue;
    }
    lastEventAt = now;
    const m = ev.msg;
    switch (m.tag) {
      case 'begin':
        inTx = true;
        // Records carry their transaction's commit time, so lag is measured from the source commit.
        txCommitTime = m.commitTime;
        break;
      case 'commit':
        inTx = false;
        if (m.endLsn > position) position = m.endLsn;
        // Checkpoint when caught up with what the server sent (low latency), else every batch.
        if (sinceState >= cfg.batch_size || now - lastStateAt >= 1_000 || (sinceState > 0 && stream.backlog === 0)) yield emitState();
        break;
      case 'message':
        if (m.prefix === HEARTBEAT_PREFIX && !m.transactional && !inTx) {
          if (m.lsn > position) position = m.lsn;
          yield emitState();
        }
        break;
      case 'relation': {
        const rel = byTable.get(`${m.schema}.${m.table}`);
        if (!rel) break;
        const prev = live.get(m.oid)?.msg;
        const known = prev
          ? prev.columns.map((c) => c.name)
          : (a.perStream[rel.stream]?.columns ?? rel.columns.filter((c) => !c.generated).map((c) => c.name));
        const now_ = m.columns.map((c) => c.name);
        const added = now_.filter((c) => !known.includes(c));
        const dropped = known.filter((c) => !now_.includes(c));
        const retyped = prev
          ? m.columns.filter((c) => prev.columns.some((p) => p.name === c.name && p.typeOid !== c.typeOid)).map((c) => c.name)
          : [];
        if (added.length || dropped.length || retyped.length) {
          const what = [
            added.length && `added ${added.join(', ')}`,
            dropped.length && `dropped ${dropped.join(', ')}`,
            retyped.length && `retyped ${retyped.join(', ')}`,
          ]
            .filter(Boolean)
            .join('; ');
          if (cfg.cdc.schema_change === 'fail') {
            throw new SluiceError(`the columns of ${m.schema}.${m.table} changed (${what})`, {
              kind: 'source',
              where: `stream ${rel.stream}`,
              hint: 'set cdc.schema_change: propagate to continue with the new columns, or revert the change',
            });
          }
          yield message.log('WARN', `stream ${rel.stream}: columns changed (${what}); records now carry the new columns`);
          ctx.logger.warn({ stream: rel.stream, added, dropped, retyped }, 'schema change propagated');
          rel.columns = m.columns.map(
            (c) =>
              rel.columns.find((x) => x.name === c.name) ?? {
                name: c.name,
                type: { oid: c.typeOid, sqlType: 'text', typname: 'text', isArray: false, notNull: false },
              },
          );
        }
        a.perStream[rel.stream] = { ...a.perStream[rel.stream], snapshot: 'done', columns: m.columns.map((c) => c.name) };
        live.set(m.oid, { rel, msg: m, parsers: m.columns.map((c) => parserFor(c.typeOid)) });
        break;
      }
      case 'insert': {
        const lr = live.get(m.oid);
        if (!lr) break;
        yield message.record(lr.rel.stream, decode(lr, m.newTuple), txCommitTime);
        sinceState++;
        break;
      }
      case 'update': {
        const lr = live.get(m.oid);
        if (!lr) break;
        const data = decode(lr, m.newTuple, m.oldTuple);
        const oldKeyTuple = m.keyTuple ?? m.oldTuple;
        if (oldKeyTuple) {
          const oldKey = keyOf(lr, decode(lr, oldKeyTuple));
          const newKey = keyOf(lr, data);
          if (JSON.stringify(oldKey) !== JSON.stringify(newKey)) yield message.deletion(lr.rel.stream, oldKey, txCommitTime);
        }
        const missing = lr.msg.columns.filter((c) => data[c.name] === UNCHANGED).map((c) => c.name);
        if (missing.length) {
          // Unchanged TOASTed values are not in the WAL: read them from the row as it is now.
          // If the row is gone, a later change in this stream removes it, so skipping is safe.
          const filled = await fetchUnchanged(meta, lr.rel, keyOf(lr, data), missing);
          if (!filled) break;
          Object.assign(data, filled);
        }
        yield message.record(lr.rel.stream, data, txCommitTime);
        sinceState++;
        break;
      }
      case 'delete': {
        const lr = live.get(m.oid);
        if (!lr) break;
        const t = m.keyTuple ?? m.oldTuple;
        if (!t) break;
        yield message.deletion(lr.rel.stream, keyOf(lr, decode(lr, t)), txCommitTime);
        sinceState++;
        break;
      }
      case 'truncate': {
        // The WAL has no rows for a TRUNCATE, so the chunks of the removed rows cannot be deleted
        // one by one. Going on would leave them in the index for good; stop before the TRUNCATE
        // (the state never passes it) and say how to rebuild.
        const hit = m.oids.map((o) => live.get(o)?.rel).filter((r): r is Relation => !!r);
        if (hit.length) {
          const what = hit.map((r) => `${r.schema}.${r.table} (stream ${r.stream})`).join(', ');
          throw new SluiceError(
            `TRUNCATE of ${what} after ${lsnToText(position)}: the removed rows are not in the WAL, so their chunks cannot be deleted from the index; stopped before it (nothing after it was applied)`,
            {
              kind: 'source',
              where: `stream ${hit[0].stream}`,
              hint: `rebuild this connection from a new snapshot: delete its documents in the destination, run sluice state reset <pipeline> --connection ${ctx.connection}, then sync again`,
            },
          );
        }
        break;
      }
      default:
        break;
    }
  }
}

const UNCHANGED = Symbol('unchanged-toast');

function decode(lr: LiveRelation, tuple: TupleValue[], old?: TupleValue[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const cols = lr.msg.columns;
  for (let i = 0; i < cols.length; i++) {
    let v = tuple[i];
    if (v !== null && typeof v === 'object' && old && typeof old[i] === 'string') v = old[i];
    if (v === null || v === undefined) out[cols[i].name] = null;
    else if (typeof v === 'object') out[cols[i].name] = UNCHANGED;
    else out[cols[i].name] = lr.parsers[i](v);
  }
  return out;
}

function keyOf(lr: LiveRelation, data: Record<string, unknown>): Record<string, unknown> {
  const key: Record<string, unknown> = {};
  for (const k of lr.rel.primaryKey) key[k] = data[k];
  return key;
}

async function fetchUnchanged(
  meta: pg.Client,
  rel: Relation,
  key: Record<string, unknown>,
  columns: string[],
): Promise<Record<string, unknown> | undefined> {
  const pkCols = rel.primaryKey.map((k) => rel.columns.find((c) => c.name === k)!);
  const where = pkCols.map((c, i) => `${qi(c.name)} = $${i + 1}${c.type.isArray ? '' : '::' + c.type.sqlType}`).join(' AND ');
  const r = await meta.query(
    `SELECT ${columns.map(qi).join(', ')} FROM ${qi(rel.schema!)}.${qi(rel.table!)} WHERE ${where}`,
    pkCols.map((c) => toParam(key[c.name], c.type)),
  );
  return r.rows[0];
}
