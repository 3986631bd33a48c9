// What `sluice check` verifies for the streams a pipeline configures: every privilege their sync
// modes need, so a check that says ok means the sync will not fail for lack of a GRANT. Each
// problem says what to run (GRANT, ALTER ROLE, CREATE PUBLICATION…) to fix it.
import type pg from 'pg';
import type { ConnectorContext } from '../../src/protocol/connector.ts';
import type { ConfiguredCatalog } from '../../src/protocol/messages.ts';
import { cdcNames } from './cdc-names.ts';
import type { PostgresSourceConfig } from './config.ts';
import { fromClause, qi, resolveStream, type Relation } from './db.ts';

export interface PrivilegeFindings {
  /** The sync would fail: each names what to grant or change. */
  problems: string[];
  warnings: string[];
}

const tableName = (r: Relation) => `${qi(r.schema!)}.${qi(r.table!)}`;
const TOASTABLE = ['text', 'varchar', 'bytea', 'json', 'jsonb'];

export async function checkConfiguredStreams(
  client: pg.Client,
  cfg: PostgresSourceConfig,
  relations: Relation[],
  catalog: ConfiguredCatalog,
  ctx: Pick<ConnectorContext, 'connection'>,
): Promise<PrivilegeFindings> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const who = (await client.query<{ u: string; db: string }>('SELECT current_user AS u, current_database() AS db')).rows[0];
  const user = qi(who.u);

  const configured: Array<{ rel: Relation; cdc: boolean }> = [];
  for (const cs of catalog.streams) {
    try {
      configured.push({ rel: resolveStream(relations, cs.stream.name, cs.stream.namespace), cdc: !!cs.cdc });
    } catch (err) {
      problems.push((err as Error).message);
    }
  }

  // SELECT on every table or view read; a custom query is planned (EXPLAIN checks its privileges).
  for (const { rel } of configured) {
    if (rel.kind === 'query') {
      try {
        await client.query(`EXPLAIN SELECT * FROM ${fromClause(rel)}`);
      } catch (err) {
        problems.push(
          `stream ${rel.stream}: the query cannot run as ${who.u}: ${(err as Error).message}` +
            ((err as { code?: string }).code === '42501' ? ` (GRANT SELECT ON <each table of the query> TO ${user};)` : ''),
        );
      }
      continue;
    }
    const { rows } = await client.query<{ ok: boolean; usage: boolean }>(
      `SELECT has_table_privilege($1::oid, 'SELECT') AS ok, has_schema_privilege($2, 'USAGE') AS usage`,
      [rel.oid, rel.schema],
    );
    if (!rows[0].usage)
      problems.push(`stream ${rel.stream}: no USAGE on schema ${rel.schema} (GRANT USAGE ON SCHEMA ${qi(rel.schema!)} TO ${user};)`);
    if (!rows[0].ok)
      problems.push(`stream ${rel.stream}: no SELECT on ${rel.schema}.${rel.table} (GRANT SELECT ON ${tableName(rel)} TO ${user};)`);
  }

  const cdc = configured.filter((c) => c.cdc).map((c) => c.rel);
  if (!cdc.length) return { problems, warnings };

  // ---- CDC: logical replication, role attribute, publication, slot, replica identity ----
  const facts = (
    await client.query<{
      wal_level: string;
      repl: boolean;
      superuser: boolean;
      emit: boolean;
      dbcreate: boolean;
      max_slots: number;
      slots: number;
    }>(
      `SELECT current_setting('wal_level') AS wal_level,
              r.rolreplication AS repl, r.rolsuper AS superuser,
              has_function_privilege('pg_logical_emit_message(boolean,text,text)', 'EXECUTE') AS emit,
              has_database_privilege(current_database(), 'CREATE') AS dbcreate,
              current_setting('max_replication_slots')::int AS max_slots,
              (SELECT count(*)::int FROM pg_replication_slots) AS slots
         FROM pg_roles r WHERE r.rolname = current_user`,
    )
  ).rows[0];
  if (facts.wal_level !== 'logical')
    problems.push(
      `CDC: wal_level is ${facts.wal_level}; CDC needs logical (ALTER SYSTEM SET wal_level = logical; then restart the server)`,
    );
  if (!facts.repl && !facts.superuser) problems.push(`CDC: ${who.u} lacks the REPLICATION attribute (ALTER ROLE ${user} REPLICATION;)`);

  const tables = cdc.filter((r) => r.kind === 'table');
  for (const r of cdc) {
    if (r.kind !== 'table') {
      problems.push(`stream ${r.stream}: CDC reads tables only, not a ${r.kind}; use sync_mode incremental or full_refresh`);
      continue;
    }
    if (!r.primaryKey.length)
      problems.push(
        `stream ${r.stream}: ${r.schema}.${r.table} has no primary key, which CDC needs (ALTER TABLE ${tableName(r)} ADD PRIMARY KEY (…);)`,
      );
    else if (r.replicaIdentity === 'n')
      problems.push(
        `stream ${r.stream}: ${r.schema}.${r.table} has REPLICA IDENTITY NOTHING, so CDC cannot see deletes (ALTER TABLE ${tableName(r)} REPLICA IDENTITY DEFAULT;)`,
      );
    else if (r.replicaIdentity === 'i')
      warnings.push(`${r.schema}.${r.table}: REPLICA IDENTITY USING INDEX; CDC deletes need the primary key columns in that index`);
    else if (r.replicaIdentity === 'd' && r.columns.some((c) => TOASTABLE.includes(c.type.typname) || c.type.isArray))
      warnings.push(
        `${r.schema}.${r.table}: REPLICA IDENTITY DEFAULT; an UPDATE that leaves a large (TOASTed) value unchanged does not carry it, so CDC reads it back from the table by primary key. ALTER TABLE ${tableName(r)} REPLICA IDENTITY FULL avoids that read`,
      );
  }

  const { slot, publication } = cdcNames(cfg, ctx.connection, who.db);
  const owned = tables.length
    ? (
        await client.query<{ oid: number; owner: boolean }>(
          `SELECT oid::int AS oid, pg_has_role(relowner, 'USAGE') AS owner FROM pg_class WHERE oid = ANY($1::oid[])`,
          [tables.map((t) => t.oid)],
        )
      ).rows
    : [];
  const notOwned = tables.filter((t) => owned.some((o) => o.oid === t.oid && !o.owner));
  const pub = (
    await client.query<{ all: boolean; owner: boolean }>(
      `SELECT puballtables AS all, pg_has_role(pubowner, 'USAGE') AS owner FROM pg_publication WHERE pubname = $1`,
      [publication],
    )
  ).rows[0];
  const list = (rs: Relation[]) => rs.map(tableName).join(', ');
  if (!pub) {
    const create = `CREATE PUBLICATION ${qi(publication)} FOR TABLE ${list(tables)} WITH (publish_via_partition_root = true);`;
    if (!cfg.cdc.create_publication)
      problems.push(`CDC: publication ${publication} does not exist and cdc.create_publication is false (${create})`);
    else {
      if (!facts.dbcreate && !facts.superuser)
        problems.push(
          `CDC: creating publication ${publication} needs CREATE on database ${who.db} (GRANT CREATE ON DATABASE ${qi(who.db)} TO ${user};)`,
        );
      if (notOwned.length && !facts.superuser)
        problems.push(
          `CDC: creating publication ${publication} needs ownership of ${notOwned.map((t) => `${t.schema}.${t.table}`).join(', ')}; have their owner or an administrator run: ${create}`,
        );
    }
  } else if (!pub.all) {
    const published = (
      await client.query<{ schemaname: string; tablename: string }>(
        'SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1',
        [publication],
      )
    ).rows;
    const missing = tables.filter((t) => !published.some((p) => p.schemaname === t.schema && p.tablename === t.table));
    if (missing.length && !facts.superuser && (!pub.owner || missing.some((m) => notOwned.includes(m))))
      problems.push(
        `CDC: publication ${publication} lacks ${missing.map((t) => `${t.schema}.${t.table}`).join(', ')} and ${who.u} cannot add them (it needs ownership of the publication and the tables); have an administrator run: ALTER PUBLICATION ${qi(publication)} ADD TABLE ${list(missing)};`,
      );
  }

  const s = (
    await client.query<{ plugin: string; wal_status: string | null }>(
      'SELECT plugin, wal_status FROM pg_replication_slots WHERE slot_name = $1',
      [slot],
    )
  ).rows[0];
  if (!s) {
    if (facts.slots >= facts.max_slots)
      problems.push(
        `CDC: replication slot ${slot} does not exist and all ${facts.max_slots} slots are in use (raise max_replication_slots, or drop an unused slot with SELECT pg_drop_replication_slot('<name>');)`,
      );
  } else if (s.plugin !== 'pgoutput')
    problems.push(`CDC: replication slot ${slot} uses plugin ${s.plugin}, not pgoutput (set cdc.slot to another name)`);
  else if (s.wal_status === 'lost' && cfg.cdc.on_invalid_slot === 'fail')
    problems.push(
      `CDC: replication slot ${slot} is invalidated (WAL removed); set cdc.on_invalid_slot: resnapshot, or drop the slot to start over`,
    );
  if (!facts.emit)
    warnings.push(
      'CDC: the user cannot execute pg_logical_emit_message, so idle heartbeats are off and the slot only advances with changes to the watched tables',
    );
  return { problems, warnings };
}
