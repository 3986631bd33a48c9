// PostgreSQL source: discover tables/views/SQL streams, full refresh and cursor-incremental reads
// with keyset pagination and per-page checkpoints, and CDC over logical replication (pgoutput).
import type pg from 'pg';
import type {
  CheckOptions,
  CheckResult,
  ConnectorContext,
  ResourceShelf,
  Source,
  SourceState,
  StoredDigests,
} from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import {
  message,
  type AirbyteCatalog,
  type AirbyteMessage,
  type ConfiguredCatalog,
  type ConfiguredStream,
  type StateMessage,
} from '../../src/protocol/messages.ts';
// The replication code (./cdc.ts) loads only when a run, check or commit involves CDC.
import { cdcNames, legacySlotName, lsnOfState, savedSlot } from './cdc-names.ts';
import { PostgresSourceConfigSchema, describeServer, type PostgresSourceConfig } from './config.ts';
import { connect, loadRelations, resolveStream, type Relation } from './db.ts';
import { lsnFromText } from './pgoutput.ts';
import { batchedMessages } from '../../src/cdk/batches.ts';
import { checkConfiguredStreams } from './privileges.ts';
import { fullRefresh, incremental, digestsWork, planRanges, type KeyRange, type StreamDigests } from './reads.ts';
import { isCursorCandidate, jsonSchemaFor } from './types.ts';

function parseConfig(config: unknown): PostgresSourceConfig {
  const r = PostgresSourceConfigSchema.safeParse(config);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new SluiceError(`invalid postgres source config: ${issue.message}`, {
      kind: 'config',
      where: `source config ${issue.path.join('.')}`,
    });
  }
  return r.data;
}

async function withClient<T>(config: PostgresSourceConfig, ctx: ConnectorContext, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(config, ctx);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** A session discover() left for read() in the same run (ConnectorContext.shelf), with what it discovered. */
interface ParkedSession {
  client: pg.Client;
  relations: Relation[];
  /** Whether the server computes digests, asked while the session waited (see discover). */
  digestsWork?: ReturnType<typeof digestsWork>;
  /** The server ended or broke the session while it waited: read() connects afresh. */
  broken: boolean;
}

const shelfKey = (config: unknown) => `source-postgres ${JSON.stringify(config)}`;

function parkSession(
  shelf: ResourceShelf,
  config: unknown,
  client: pg.Client,
  relations: Relation[],
  digestsAsked?: ReturnType<typeof digestsWork>,
): void {
  const parked: ParkedSession = { client, relations, digestsWork: digestsAsked, broken: false };
  const broke = () => {
    parked.broken = true;
  };
  client.once('error', broke);
  client.once('end', broke);
  shelf.park(shelfKey(config), parked, () => endParked(parked));
}

/**
 * Ends a parked session once the digest question asked on it is answered: pg's end() with a query
 * in flight drops the socket without saying goodbye to the server.
 */
async function endParked(parked: ParkedSession): Promise<void> {
  await parked.digestsWork?.catch(() => undefined);
  await parked.client.end().catch(() => {});
}

function takeSession(ctx: ConnectorContext, config: unknown): ParkedSession | undefined {
  const parked = ctx.shelf?.take<ParkedSession>(shelfKey(config));
  if (!parked?.broken) return parked;
  void endParked(parked);
  return undefined;
}

function toCatalog(rels: Relation[]): AirbyteCatalog {
  return {
    streams: rels.map((r) => ({
      name: r.stream,
      ...(r.schema ? { namespace: r.schema } : {}),
      json_schema: {
        type: 'object',
        properties: Object.fromEntries(r.columns.map((c) => [c.name, jsonSchemaFor(c.type)])),
      },
      supported_sync_modes: ['full_refresh', 'incremental'],
      source_defined_cursor: false,
      ...(r.defaultCursor ? { default_cursor_field: [r.defaultCursor] } : {}),
      ...(r.primaryKey.length ? { source_defined_primary_key: r.primaryKey.map((k) => [k]) } : {}),
      is_resumable: r.primaryKey.length > 0 || r.kind === 'table',
      cursor_candidates: r.columns.filter((c) => isCursorCandidate(c.type)).map((c) => c.name),
      supports_cdc: r.kind === 'table' && r.primaryKey.length > 0,
    })),
  };
}

async function check(config: PostgresSourceConfig, ctx: ConnectorContext, options?: CheckOptions): Promise<CheckResult> {
  const cfg = parseConfig(config);
  const where = describeServer(cfg, ctx.baseDir);
  let client: pg.Client;
  try {
    client = await connect(cfg, ctx);
  } catch (err) {
    const e = err instanceof SluiceError ? err : undefined;
    return { ok: false, message: `${e?.message ?? describeUnknown(err)}${e?.hint ? ` (${e.hint})` : ''}` };
  }
  const warnings: string[] = [];
  try {
    const rels = await loadRelations(client, cfg);
    const tables = rels.filter((r) => r.kind !== 'query');
    if (!rels.length)
      return { ok: false, message: `${where}: no tables or views found in schemas ${cfg.schemas.join(', ')} (after include/exclude)` };
    const version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0].server_version;
    if (options?.catalog) {
      // The pipeline's streams and modes are known: verify exactly what their sync needs.
      const found = await checkConfiguredStreams(client, cfg, rels, options.catalog, ctx);
      const n = options.catalog.streams.length;
      if (found.problems.length)
        return { ok: false, message: `${where} (PostgreSQL ${version}): ${found.problems.join('; ')}`, warnings: found.warnings };
      return {
        ok: true,
        message: `connected to ${where} (PostgreSQL ${version}); ${n} stream${n === 1 ? '' : 's'} readable`,
        warnings: found.warnings,
      };
    }
    const priv = await client.query<{ oid: number; ok: boolean }>(
      "SELECT oid::int AS oid, has_table_privilege(oid, 'SELECT') AS ok FROM pg_class WHERE oid = ANY($1::oid[])",
      [tables.map((t) => t.oid)],
    );
    const denied = tables.filter((t) => priv.rows.some((p) => p.oid === t.oid && !p.ok));
    if (denied.length === tables.length && tables.length) {
      return {
        ok: false,
        message: `${where}: the user cannot SELECT from any discovered table`,
        warnings: [`GRANT SELECT ON ALL TABLES IN SCHEMA ${cfg.schemas.join(', ')} TO <user>`],
      };
    }
    for (const t of denied)
      warnings.push(`no SELECT privilege on ${t.schema}.${t.table}: GRANT SELECT ON ${t.schema}.${t.table} TO <user>`);

    // CDC readiness: reported as warnings because the catalog, not the config, decides whether CDC is used.
    const facts = (
      await client.query<{ wal_level: string; repl: boolean; emit: boolean }>(
        `SELECT current_setting('wal_level') AS wal_level,
                (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS repl,
                has_function_privilege('pg_logical_emit_message(boolean,text,text)', 'EXECUTE') AS emit`,
      )
    ).rows[0];
    if (facts.wal_level !== 'logical')
      warnings.push(
        `CDC: wal_level is ${facts.wal_level}; CDC streams need wal_level = logical (ALTER SYSTEM SET wal_level = logical; restart)`,
      );
    if (!facts.repl) warnings.push('CDC: the user lacks the REPLICATION attribute (ALTER ROLE <user> REPLICATION)');
    if (!facts.emit)
      warnings.push(
        'CDC: the user cannot execute pg_logical_emit_message, so idle heartbeats are off and the slot only advances with changes to the watched tables',
      );
    for (const t of tables) {
      if (t.kind !== 'table') continue;
      if (!t.primaryKey.length)
        warnings.push(`${t.schema}.${t.table}: no primary key; it can be read by full refresh or incremental but not by CDC`);
      else if (t.replicaIdentity === 'n')
        warnings.push(
          `${t.schema}.${t.table}: REPLICA IDENTITY NOTHING, CDC cannot see deletes (ALTER TABLE ${t.schema}.${t.table} REPLICA IDENTITY DEFAULT)`,
        );
      else if (t.replicaIdentity === 'i')
        warnings.push(`${t.schema}.${t.table}: REPLICA IDENTITY USING INDEX; CDC deletes need the primary key columns in that index`);
      else if (
        t.replicaIdentity === 'd' &&
        t.columns.some((c) => ['text', 'varchar', 'bytea', 'json', 'jsonb'].includes(c.type.typname) || c.type.isArray)
      ) {
        warnings.push(
          `${t.schema}.${t.table}: REPLICA IDENTITY DEFAULT; an UPDATE that leaves a large (TOASTed) value unchanged does not carry it, so CDC reads it back from the table by primary key. ALTER TABLE ${t.schema}.${t.table} REPLICA IDENTITY FULL avoids that read`,
        );
      }
    }
    const db = (await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0].db;
    // This database's own slot: the configured or default name, or the pre-hash name an earlier version created here.
    const candidates = cfg.cdc.slot ? [cfg.cdc.slot] : [cdcNames(cfg, ctx.connection, db).slot, legacySlotName(ctx.connection)];
    const found = await client.query<{ slot_name: string }>(
      `SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY($1) AND database = $2 ORDER BY array_position($1, slot_name::text) LIMIT 1`,
      [candidates, db],
    );
    const slot = found.rows[0]?.slot_name ?? candidates[0];
    const s = await client.query<{ wal_status: string | null }>('SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (s.rows[0]?.wal_status === 'lost')
      warnings.push(
        `CDC: replication slot ${slot} is invalidated (WAL removed); the next CDC sync fails unless cdc.on_invalid_slot is resnapshot`,
      );
    else if (s.rows[0]) {
      const { slotLag } = await import('./cdc.ts');
      const lag = await slotLag(client, slot);
      if (lag) warnings.push(`CDC: slot ${slot} retains ${lag.retained} bytes of WAL`);
    }
    return { ok: true, message: `connected to ${where} (PostgreSQL ${version}); ${rels.length} streams`, warnings };
  } catch (err) {
    return { ok: false, message: err instanceof SluiceError ? err.message : `${where}: ${describeUnknown(err)}`, warnings };
  } finally {
    await client.end().catch(() => {});
  }
}

function read(
  config: PostgresSourceConfig,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
): AsyncIterable<AirbyteMessage> {
  // Offers its arrays to the engine (one step per network chunk, not per row).
  return batchedMessages(readBatches(config, catalog, state, ctx));
}

/** Sessions whose close a run's shelf waits for (a key per session: parking under a key closes what was there). */
let endingSessions = 0;

/** read(), with full-refresh and incremental messages in arrays (CDC messages come singly). */
async function* readBatches(
  config: PostgresSourceConfig,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
): AsyncGenerator<AirbyteMessage | AirbyteMessage[]> {
  const cfg = parseConfig(config);
  const parked = takeSession(ctx, config);
  const client = parked?.client ?? (await connect(cfg, ctx));
  let relations: Relation[];
  const cdcRels: Relation[] = [];
  // Asked once per read, when a stream would read with digests first.
  let digestsOk: Promise<boolean> | undefined;
  const canDigest = () =>
    (digestsOk ??= (parked?.digestsWork ?? digestsWork(client)).then((r) => {
      if (!r.ok) ctx.logger.warn(`source digests are off: the server cannot compute them (${r.reason}); every row is read in full`);
      return r.ok;
    }));
  try {
    relations = parked?.relations ?? (await loadRelations(client, cfg));
    for (const cs of catalog.streams) {
      const rel = resolveStream(relations, cs.stream.name, cs.stream.namespace);
      if (cs.cdc) {
        cdcRels.push(rel);
        continue;
      }
      if (ctx.signal.aborted) return;
      const st = state?.streams?.[cs.stream.name];
      // A worker of a sharded run reads only its key range of a split full refresh.
      const range = cs.sync_mode === 'full_refresh' ? (ctx.shard?.partitions[cs.stream.name] as KeyRange | undefined) : undefined;
      const digests =
        cs.sync_mode === 'full_refresh' && rel.primaryKey.length && cfg.source_digests && ctx.storedDigests && (await canDigest())
          ? digestsFor(ctx.storedDigests, cs, rel)
          : undefined;
      const opts = {
        batchSize: cfg.batch_size,
        digestPageSize: cfg.digest_page_size,
        signal: ctx.signal,
        lookback: cfg.lookback,
        range,
        digests,
      };
      try {
        const batches =
          cs.sync_mode === 'incremental' ? incremental(client, rel, cs.cursor_field?.[0], st, opts) : fullRefresh(client, rel, st, opts);
        for await (const batch of batches) yield batch;
      } catch (err) {
        throw err instanceof SluiceError && err.where
          ? err
          : new SluiceError(describeUnknown(err), { kind: 'source', where: `stream ${rel.stream}`, cause: err });
      }
    }
  } finally {
    const ended = client.end().catch(() => {});
    // The server takes its time to close a session (35–100 ms measured on 2 busy cores), and the
    // run finishes (writer, summary) only after the read has ended: in a sync the run's shelf waits
    // for the close at the run's end, alongside its other closing work, instead of the read.
    if (ctx.shelf) ctx.shelf.park(`source-postgres ending ${++endingSessions}`, ended, () => ended);
    else await ended;
  }
  if (cdcRels.length && !ctx.signal.aborted) {
    const { readCdc } = await import('./cdc.ts');
    yield* readCdc({ cfg, rels: cdcRels, state, ctx });
    if (!ctx.signal.aborted) for (const r of cdcRels) yield message.streamStatus(r.stream, 'COMPLETE');
  }
}

/**
 * The stream's digest check (pending: it resolves once the destination's listing of the stream is
 * complete, and the read may start meanwhile), with the key fields the engine identifies its documents by.
 */
function digestsFor(stored: StoredDigests, cs: ConfiguredStream, rel: Relation): StreamDigests {
  const check = stored.forStream(cs.stream.name);
  // The configured primary_key may name other columns than the table's (a nested path: its column).
  const configured = (cs.primary_key ?? []).map((path) => path[0]).filter((c) => rel.columns.some((x) => x.name === c));
  return { check, keyColumns: [...new Set([...rel.primaryKey, ...configured])] };
}

const source: Source<PostgresSourceConfig> = {
  kind: 'source',
  spec: {
    name: 'postgres',
    title: 'PostgreSQL',
    description:
      'Tables, views and SQL queries of a PostgreSQL database: full refresh, cursor incremental, or CDC over logical replication',
    documentationUrl: 'docs/postgres.md',
    config: PostgresSourceConfigSchema as never,
  },
  capabilities: { syncModes: ['full_refresh', 'incremental', 'cdc'], sourceDigests: true },
  check,
  async discover(config, ctx) {
    const cfg = parseConfig(config);
    if (!ctx.shelf) return toCatalog(await withClient(cfg, ctx, (c) => loadRelations(c, cfg)));
    // In a sync, read() follows: it takes this session and these relations instead of connecting
    // and discovering again (a new session also starts with cold catalog caches on the server).
    const client = await connect(cfg, ctx);
    let relations: Relation[];
    try {
      relations = await loadRelations(client, cfg);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    // The read's first question when it may skip by digest, asked now while the session would
    // otherwise wait for the engine: the read's pass 1 then starts one round trip sooner. Only
    // when digests are on and a table has a key (the read would ask then; a server that cannot
    // answer logs one failed SELECT, and the read warns as before).
    const digestsAsked = cfg.source_digests && relations.some((r) => r.primaryKey.length) ? digestsWork(client) : undefined;
    parkSession(ctx.shelf, config, client, relations, digestsAsked);
    return toCatalog(relations);
  },
  read,
  /** Sharded full refresh: tables with a primary key split into key ranges, one per worker. */
  async planPartitions(config, catalog, count, ctx) {
    const cfg = parseConfig(config);
    return withClient(cfg, ctx, async (client) => {
      const relations = await loadRelations(client, cfg);
      const plan: Record<string, unknown[]> = {};
      for (const cs of catalog.streams) {
        if (cs.sync_mode !== 'full_refresh' || cs.cdc) continue;
        const ranges = await planRanges(client, resolveStream(relations, cs.stream.name, cs.stream.namespace), count);
        if (ranges) plan[cs.stream.name] = ranges;
      }
      return plan;
    });
  },
  onStateCommitted(config: PostgresSourceConfig, state: StateMessage, connection: SourceState, ctx: ConnectorContext) {
    if (state.type !== 'GLOBAL') return;
    const cfg = parseConfig(config);
    // The slot the run reads from is the one its state names (see readCdc).
    const slot = (state.global?.shared_state?.slot as string | undefined) ?? savedSlot(connection);
    if (!slot) return;
    const fromConn =
      connection.shared?.slot === slot && typeof connection.shared?.lsn === 'string' ? lsnFromText(connection.shared.lsn) : undefined;
    const lsn = lsnOfState(state as never) ?? fromConn;
    if (lsn !== undefined) return import('./cdc.ts').then(({ acknowledgeCommitted }) => acknowledgeCommitted(slot, lsn, { cfg, ctx }));
  },
};

export default source;
