// `sluice reindex` on pgvector: every stream's new generation is loaded into <table>__sluice_new
// (as an overwrite does), and all of them replace the live tables in ONE transaction together
// with the connection state — readers see the old index or the new one, never a mix. With
// --keep-previous the replaced tables stay as <table>__sluice_prev; rollback swaps them back.
import type pg from 'pg';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { PgvectorConfig } from './config.ts';
import { STATE_TABLE, documentIndexName, ensureStateTable, primaryKeyName, vectorIndexName } from './schema.ts';
import { openSession, pgError } from './session.ts';
import { derivedName, ident, qualified, tableNameFor } from './sql.ts';

export const previousGenerationName = (table: string) => derivedName(table, '__sluice_prev');
const swapName = (table: string) => derivedName(table, '__sluice_swap');

async function tableExists(client: pg.Client, schema: string, table: string): Promise<boolean> {
  const { rows } = await client.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [qualified(schema, table)]);
  return !!rows[0].t;
}

/** Renames a sluice chunk table and the indexes named after it (so the next generation can take the old names). */
export async function renameGeneration(client: pg.Client, schema: string, from: string, to: string): Promise<void> {
  await client.query(`ALTER TABLE ${qualified(schema, from)} RENAME TO ${ident(to)}`);
  for (const name of [documentIndexName, vectorIndexName, primaryKeyName])
    await client.query(`ALTER INDEX IF EXISTS ${qualified(schema, name(from))} RENAME TO ${ident(name(to))}`);
}

export async function storeState(client: pg.Client, schema: string, connection: string, state: SourceState): Promise<void> {
  await client.query(
    `INSERT INTO ${qualified(schema, STATE_TABLE)} (connection, state, updated_at) VALUES ($1, $2::jsonb, now())
     ON CONFLICT (connection) DO UPDATE SET state = EXCLUDED.state, updated_at = now()`,
    [connection, JSON.stringify(state)],
  );
}

/**
 * Inside the caller's transaction: each `loaded` table replaces its live table; the live one is
 * kept as the previous generation (keepPrevious) or dropped, and an older kept one is dropped.
 */
export async function switchGenerations(
  client: pg.Client,
  schema: string,
  tables: Array<{ live: string; loaded: string }>,
  keepPrevious: boolean,
): Promise<void> {
  for (const { live, loaded } of tables) {
    const previous = previousGenerationName(live);
    await client.query(`DROP TABLE IF EXISTS ${qualified(schema, previous)}`);
    if (await tableExists(client, schema, live)) {
      if (keepPrevious) await renameGeneration(client, schema, live, previous);
      else await client.query(`DROP TABLE ${qualified(schema, live)}`);
    }
    await renameGeneration(client, schema, loaded, live);
  }
}

export async function hasPrevious(config: PgvectorConfig, ctx: ConnectorContext, streams: string[]): Promise<boolean> {
  const session = await openSession(config, ctx);
  try {
    for (const stream of streams)
      if (!(await tableExists(session.client, config.schema, previousGenerationName(tableNameFor(stream, config.table))))) return false;
    return true;
  } finally {
    await session.close();
  }
}

/** Swaps every stream's live table with its kept previous generation and stores `state`, in one transaction. */
export async function rollback(
  config: PgvectorConfig,
  ctx: ConnectorContext,
  options: { streams: string[]; state: SourceState },
): Promise<void> {
  const session = await openSession(config, ctx);
  const { client } = session;
  const { schema } = config;
  try {
    await client.query('BEGIN');
    for (const stream of options.streams) {
      const live = tableNameFor(stream, config.table);
      const previous = previousGenerationName(live);
      if (!(await tableExists(client, schema, previous)))
        throw new SluiceError(`stream ${stream}: no previous generation ${schema}.${previous} to roll back to; nothing was changed`, {
          kind: 'config',
          where: `connection ${ctx.connection}, destination ${session.label}`,
          hint: 'a previous generation is kept only by sluice reindex --keep-previous',
        });
      const hasLive = await tableExists(client, schema, live);
      if (hasLive) await renameGeneration(client, schema, live, swapName(live));
      await renameGeneration(client, schema, previous, live);
      if (hasLive) await renameGeneration(client, schema, swapName(live), previous);
    }
    await ensureStateTable(client, schema);
    await storeState(client, schema, ctx.connection, options.state);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw pgError(err, `connection ${ctx.connection}, destination ${session.label}`, 'cannot roll back to the previous generation');
  } finally {
    await session.close();
  }
}
