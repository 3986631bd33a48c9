// One database session for the destination: a `pg` client to a real PostgreSQL (url) or to an
// embedded PGlite that sluice starts in-process and serves on a private unix socket, so both
// modes run the same SQL through the same driver.
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown, isTransientNetworkError } from '../../src/protocol/errors.ts';
import type { PgvectorConfig } from './config.ts';
import { keepQueriesTogether } from './pglite-queue.ts';

export interface Session {
  client: pg.Client;
  /** PGlite serves one session behind every connection and cannot take COPY FROM STDIN. */
  isPglite: boolean;
  /** Where the database is, for messages (never the password). */
  label: string;
  close(): Promise<void>;
}

type ConnectConfig = Pick<PgvectorConfig, 'url' | 'embedded' | 'sslmode' | 'sslrootcert' | 'sslcert' | 'sslkey'>;

/**
 * `joinOpen`: a read-only caller (Destination.documents, listing a stream during this process's own
 * sync) may use an embedded database this process already has open, through another connection to
 * its socket; writers never share one (the lock refuses a second opener).
 */
export async function openSession(
  config: ConnectConfig,
  ctx: Pick<ConnectorContext, 'baseDir'>,
  opts: { joinOpen?: boolean } = {},
): Promise<Session> {
  if (config.embedded) return openEmbedded(resolve(ctx.baseDir, config.embedded), !!opts.joinOpen);
  if (!config.url)
    throw new SluiceError('pgvector destination needs url or embedded', {
      kind: 'config',
      hint: 'set destination.url or destination.embedded',
    });
  const label = describeUrl(config.url);
  const client = new pg.Client({ ...clientConfig(config, ctx.baseDir), application_name: 'sluice', connectionTimeoutMillis: 20_000 });
  client.on('error', () => {}); // surfaced by the failing query instead of crashing the process
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw pgError(err, `PostgreSQL at ${label}`);
  }
  const isPglite = await detectPglite(client, label);
  return { client, isPglite, label, close: () => client.end().catch(() => {}) };
}

const shelfKey = (config: ConnectConfig) =>
  `destination-pgvector ${JSON.stringify([config.url, config.embedded, config.sslmode, config.sslrootcert, config.sslcert, config.sslkey])}`;

/** What readState read on a parked session: the writer the same run opens next starts from it. */
export interface StateRead {
  state: SourceState | undefined;
  /** The state table was there (so was its schema): the writer need not create either. */
  tableExisted: boolean;
  /** The schema the vector extension is installed in, when it is. */
  vectorSchema?: string;
}

/**
 * Leaves an open session on the run's shelf (ConnectorContext.shelf) for the writer the same run
 * opens next, instead of closing it, with the state read on it (`stateRead`). Without a shelf the
 * session is closed, as always.
 */
export async function parkSession(
  config: ConnectConfig,
  ctx: Pick<ConnectorContext, 'shelf'>,
  session: Session,
  stateRead?: StateRead,
): Promise<void> {
  if (!ctx.shelf) return session.close();
  const parked = { session, stateRead, broken: false };
  const broke = () => {
    parked.broken = true;
  };
  session.client.once('error', broke);
  session.client.once('end', broke);
  ctx.shelf.park(shelfKey(config), parked, () => session.close());
}

/** The session parkSession left for this configuration (and the state read on it), when it is still usable. */
export async function takeSession(
  config: ConnectConfig,
  ctx: Pick<ConnectorContext, 'shelf'>,
): Promise<{ session: Session; stateRead?: StateRead } | undefined> {
  const parked = ctx.shelf?.take<{ session: Session; stateRead?: StateRead; broken: boolean }>(shelfKey(config));
  if (!parked) return undefined;
  if (!parked.broken) return { session: parked.session, stateRead: parked.stateRead };
  await parked.session.close();
  return undefined;
}

async function detectPglite(client: pg.Client, label: string): Promise<boolean> {
  try {
    const { rows } = await client.query<{ v: string }>('SELECT version() AS v');
    return /pglite/i.test(rows[0]?.v ?? '');
  } catch (err) {
    throw pgError(err, `PostgreSQL at ${label}`);
  }
}

/** pg client options from the URL plus libpq-style TLS settings (file paths relative to the pipeline). */
export function clientConfig(config: ConnectConfig, baseDir: string): pg.ClientConfig {
  const url = new URL(config.url!);
  const fromUrl = (k: string) => url.searchParams.get(k) ?? undefined;
  const mode = config.sslmode ?? fromUrl('sslmode');
  const rootcert = config.sslrootcert ?? fromUrl('sslrootcert');
  const cert = config.sslcert ?? fromUrl('sslcert');
  const key = config.sslkey ?? fromUrl('sslkey');
  // pg lets TLS parameters in the URL override `ssl`, so they are moved out of the URL.
  for (const k of ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'ssl']) url.searchParams.delete(k);
  const read = (p: string, what: string) => {
    try {
      return readFileSync(resolve(baseDir, p), 'utf8');
    } catch (err) {
      throw new SluiceError(`cannot read ${what} ${p}: ${describeUnknown(err)}`, { kind: 'config', where: 'destination' });
    }
  };
  let ssl: pg.ClientConfig['ssl'] = undefined;
  const effective = mode ?? (rootcert ? 'verify-full' : undefined);
  if (effective && effective !== 'disable') {
    const tls: Record<string, unknown> = {};
    if (rootcert) tls.ca = read(rootcert, 'sslrootcert');
    if (cert) tls.cert = read(cert, 'sslcert');
    if (key) tls.key = read(key, 'sslkey');
    if (effective === 'require' || effective === 'prefer') tls.rejectUnauthorized = false;
    else {
      tls.rejectUnauthorized = true;
      if (effective === 'verify-ca') tls.checkServerIdentity = () => undefined;
    }
    ssl = tls as pg.ClientConfig['ssl'];
  } else if (effective === 'disable') ssl = false;
  return { connectionString: url.toString(), ssl };
}

export function describeUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    throw new SluiceError('destination url is not a valid URL', {
      kind: 'config',
      where: 'destination.url',
      hint: 'use postgres://user:password@host:5432/database',
    });
  }
}

// ---- embedded PGlite ---------------------------------------------------------------------------

type OpenEmbedded = { socketDir: string; sessions: number; shutdown: () => Promise<void> };

/** Embedded databases this process has open: their socket, and how many sessions use them. */
const openEmbeddedDatabases = new Map<string, OpenEmbedded>();

async function embeddedClient(socketDir: string): Promise<pg.Client> {
  const client = new pg.Client({ host: socketDir, port: 5432, user: 'postgres', database: 'postgres', application_name: 'sluice' });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Readers that joined keep the database open until the last of them closes. */
async function leaveEmbedded(open: OpenEmbedded): Promise<void> {
  if (--open.sessions === 0) await open.shutdown();
}

function embeddedSession(client: pg.Client, label: string, open: OpenEmbedded): Session {
  return {
    client,
    isPglite: true,
    label,
    close: async () => {
      await client.end().catch(() => {});
      await leaveEmbedded(open);
    },
  };
}

async function openEmbedded(dir: string, joinOpen: boolean): Promise<Session> {
  const label = `embedded PGlite in ${dir}`;
  const open = openEmbeddedDatabases.get(dir);
  if (open && joinOpen) {
    open.sessions++;
    try {
      return embeddedSession(await embeddedClient(open.socketDir), label, open);
    } catch (err) {
      await leaveEmbedded(open);
      throw new SluiceError(`cannot connect to ${label}: ${describeUnknown(err)}`, { kind: 'destination', cause: err });
    }
  }
  mkdirSync(dir, { recursive: true });
  const release = acquireLock(join(dir, 'sluice.lock'), dir);
  let db: import('@electric-sql/pglite').PGlite | undefined;
  let server: import('@electric-sql/pglite-socket').PGLiteSocketServer | undefined;
  let socketDir: string | undefined;
  const shutdown = async () => {
    openEmbeddedDatabases.delete(dir);
    await server?.stop().catch(() => {});
    await db?.close().catch(() => {});
    if (socketDir) rmSync(socketDir, { recursive: true, force: true });
    release();
  };
  try {
    // Loaded lazily: a url-only user never pays for the wasm build.
    const [{ PGlite }, { vector }, { PGLiteSocketServer }] = await Promise.all([
      import('@electric-sql/pglite'),
      import('@electric-sql/pglite-pgvector'),
      import('@electric-sql/pglite-socket'),
    ]);
    db = await PGlite.create(join(dir, 'pgdata'), { extensions: { vector } });
    socketDir = mkdtempSync(join(tmpdir(), 'sluice-pg-'));
    server = new PGLiteSocketServer({ db, path: join(socketDir, '.s.PGSQL.5432'), maxConnections: 4 });
    keepQueriesTogether(server); // the writer, the listing and a lookup may query at once
    await server.start();
    const client = await embeddedClient(socketDir);
    const shared = { socketDir, sessions: 1, shutdown };
    openEmbeddedDatabases.set(dir, shared);
    return embeddedSession(client, label, shared);
  } catch (err) {
    await shutdown();
    if (err instanceof SluiceError) throw err;
    throw new SluiceError(`cannot open ${label}: ${describeUnknown(err)}`, {
      kind: 'destination',
      cause: err,
      hint: 'the directory must hold a database written by sluice (PGlite); move it away to start afresh',
    });
  }
}

/** One process at a time may open an embedded database; a lock left by a dead process is taken over. */
function acquireLock(path: string, dir: string): () => void {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, JSON.stringify({ pid: process.pid, started: processStartTime(process.pid) }));
      closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(path);
        } catch {
          /* already gone */
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new SluiceError(`cannot lock ${dir}: ${describeUnknown(err)}`, { kind: 'destination' });
      const { pid, started } = parseLock(readFileSafe(path));
      // A recycled pid is not the holder: the start time must match too (where the OS tells it).
      if (pid && processAlive(pid) && (started === undefined || started === processStartTime(pid))) {
        throw new SluiceError(`embedded database ${dir} is in use by process ${pid}`, {
          kind: 'destination',
          hint: 'wait for that sluice command to finish (PGlite allows one process at a time), or use a PostgreSQL url',
        });
      }
      try {
        unlinkSync(path);
      } catch {
        /* raced with another taker */
      }
    }
  }
  throw new SluiceError(`cannot lock embedded database ${dir}`, {
    kind: 'destination',
    hint: 'retry; another sluice process is starting on it',
  });
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function parseLock(text: string): { pid?: number; started?: string } {
  try {
    const v = JSON.parse(text) as { pid?: unknown; started?: unknown };
    return { pid: typeof v.pid === 'number' ? v.pid : undefined, started: typeof v.started === 'string' ? v.started : undefined };
  } catch {
    return {};
  }
}

/** Start time of a process in clock ticks since boot (Linux); undefined elsewhere. */
function processStartTime(pid: number): string | undefined {
  const stat = readFileSafe(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  // Fields after the command name (which may contain spaces) start at ")"; starttime is field 22.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---- errors for people -------------------------------------------------------------------------

const HINTS: Record<string, string> = {
  '28P01': 'check the user and password in the url',
  '28000': 'check the user and pg_hba.conf on the server',
  '3D000': 'create the database first, or fix its name in the url',
  '42501': 'grant the user CREATE on the database/schema and ownership of the tables, or create them as an admin',
  '53100': 'the server is out of disk space',
  '57P03': 'the server is starting up; retry shortly',
};
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '57P01', '57P03', '08000', '08003', '08006', '53300']);

/** Turns a driver error into a SluiceError naming where it happened (never the URL's password). */
export function pgError(err: unknown, where: string, message?: string): SluiceError {
  if (err instanceof SluiceError) return err;
  const e = err as (Error & { code?: string; detail?: string; hint?: string }) | undefined;
  const code = e?.code;
  const network =
    isTransientNetworkError(e as NodeJS.ErrnoException) ||
    /Connection terminated|connection timeout|timeout expired/i.test(e?.message ?? '');
  if (network) {
    // A write on a socket the server has closed (it restarted or ended the session) says only
    // "write EPIPE" / "read ECONNRESET": name what happened.
    const lost = e?.code === 'EPIPE' || e?.code === 'ECONNRESET' ? 'the database server closed the connection' : undefined;
    const cause = lost ? `${lost} (${describeUnknown(err)})` : describeUnknown(err);
    return new SluiceError(`${message ?? 'cannot reach the database'}: ${cause}`, {
      kind: 'connection',
      where,
      transient: true,
      cause: err,
      hint: 'check that the server is running and the url host/port are right',
    });
  }
  const text = `${message ? `${message}: ` : ''}${e?.message ?? String(err)}${e?.detail ? ` (${e.detail})` : ''}`;
  return new SluiceError(text, {
    kind: code?.startsWith('28') || code === '3D000' ? 'connection' : 'destination',
    where,
    cause: err,
    transient: !!code && TRANSIENT_SQLSTATES.has(code),
    hint: (code && HINTS[code]) ?? e?.hint,
  });
}
