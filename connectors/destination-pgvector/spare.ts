// A session connected ahead for the run's listing (Destination.documents). A new PostgreSQL session
// costs a connect, an authentication and a round trip (20–40 ms on a local server, more over a
// network); the end-of-read sweep of a full_refresh + append_dedup sync lists on its own session,
// after the writer opened. When the engine says a listing will come (ConnectorContext.listsDocuments),
// readState — the run's first call — starts that connect too, so it overlaps discovery and the open
// instead of following them. The listing takes it from the run's shelf; if none does (the run failed
// first), the shelf closes it at the end of the run.
import type { ConnectorContext } from '../../src/protocol/connector.ts';
import type { PgvectorConfig } from './config.ts';
import { openSession, type Session } from './session.ts';

type Spare = { session: Promise<Session | undefined>; broken: boolean };

const spareKey = (config: PgvectorConfig) =>
  `destination-pgvector listing ${JSON.stringify([config.url, config.embedded, config.sslmode, config.sslrootcert, config.sslcert, config.sslkey])}`;

/**
 * Starts connecting the listing's session when the run will list and nothing is parked for it yet.
 * Never fails: a connect that fails leaves nothing, and the listing connects (and reports) as always.
 * Not for an embedded database (one session serves every connection there).
 */
export function prepareListingSession(config: PgvectorConfig, ctx: Pick<ConnectorContext, 'shelf' | 'baseDir' | 'listsDocuments'>): void {
  const shelf = ctx.shelf;
  if (!shelf || !ctx.listsDocuments || config.embedded || !config.url) return;
  const key = spareKey(config);
  const already = shelf.take<Spare>(key);
  if (already) return shelf.park(key, already, () => closeSpare(already));
  const spare: Spare = { session: Promise.resolve(undefined), broken: false };
  spare.session = openSession(config, ctx, { joinOpen: true }).then(
    (s) => {
      const broke = () => {
        spare.broken = true;
      };
      s.client.once('error', broke);
      s.client.once('end', broke);
      return s;
    },
    () => undefined,
  );
  shelf.park(key, spare, () => closeSpare(spare));
}

/** The session prepareListingSession connected for this configuration, when it is usable. */
export async function takeListingSession(config: PgvectorConfig, ctx: Pick<ConnectorContext, 'shelf'>): Promise<Session | undefined> {
  const spare = ctx.shelf?.take<Spare>(spareKey(config));
  if (!spare) return undefined;
  const session = await spare.session;
  if (session && spare.broken) {
    await session.close();
    return undefined;
  }
  return session;
}

async function closeSpare(spare: Spare): Promise<void> {
  await (await spare.session)?.close();
}

// The columns of a table the run's writer opened, for the listing of the same run: the writer has
// just read them (and added any fingerprint column it could), so the listing does not ask again on
// its own, cold session (a catalog query there took 10–40 ms of the sync's set-up, measured).
const columnsKey = (config: PgvectorConfig, table: string) => `${spareKey(config)} columns ${JSON.stringify([config.schema, table])}`;

/** Leaves the columns the writer found in `schema.table` for this run's listing of it. */
export function rememberTableColumns(
  config: PgvectorConfig,
  ctx: Pick<ConnectorContext, 'shelf'>,
  table: string,
  columns: readonly string[],
): void {
  ctx.shelf?.park(columnsKey(config, table), [...columns], () => Promise.resolve());
}

/** The columns rememberTableColumns left for `schema.table` in this run (taken once), if any. */
export function takeTableColumns(config: PgvectorConfig, ctx: Pick<ConnectorContext, 'shelf'>, table: string): string[] | undefined {
  return ctx.shelf?.take<string[]>(columnsKey(config, table));
}
