// Configuration of the PostgreSQL source and how it becomes `pg` client options.
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { ClientConfig } from 'pg';
import { z } from 'zod';
import { SluiceError } from '../../src/protocol/errors.ts';
import { connectionUrlProblem } from '../../src/cdk/url.ts';

const secret = () => z.string().meta({ secret: true });
const checkConnectionUrl = (url: string, ctx: z.RefinementCtx) => {
  const problem = connectionUrlProblem(url);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

// A non-negative interval the server will accept: "<number> <unit>" pairs ("1 hour 30 minutes",
// "5 min"), a time "HH:MM[:SS]", or ISO 8601 ("PT5M"). Checked at validate time, so a typo fails
// there rather than on the first incremental run that uses it.
const UNIT =
  '(?:microseconds?|milliseconds?|us|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w|months?|mons?|years?|yrs?|y)';
const INTERVAL = new RegExp(
  `^\\s*(?:(?:\\d+(?:\\.\\d+)?\\s*${UNIT}\\b\\s*)+|\\d{1,2}:\\d{2}(?::\\d{2}(?:\\.\\d+)?)?|P(?!$)(?:\\d+[YMWD])*(?:T(?:\\d+(?:\\.\\d+)?[HMS])+)?)\\s*$`,
  'i',
);

const CustomStreamSchema = z.strictObject({
  name: z.string().min(1).describe('Stream name for the rows of this query'),
  query: z.string().min(1).describe('A SELECT; it is wrapped as a subquery, so no trailing semicolon or ORDER BY is needed'),
  primary_key: z.array(z.string()).optional().describe('Columns identifying a row (document id); enables resumable full refresh'),
  cursor_field: z.string().optional().describe('Default cursor column for incremental reads'),
});

export const PostgresSourceConfigSchema = z
  .strictObject({
    url: z
      .string()
      .superRefine(checkConnectionUrl)
      .meta({ secret: true })
      .optional()
      .describe('Connection URL postgres://user:password@host:port/db (alternative to host/port/…)'),
    host: z.string().optional().describe('Server host'),
    port: z.number().int().positive().optional().describe('Server port (default 5432)'),
    database: z.string().optional().describe('Database name'),
    user: z.string().optional().describe('User name'),
    password: secret().optional().describe('Password'),
    sslmode: z
      .enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full'])
      .optional()
      .describe('TLS mode, as in libpq (default: prefer the URL setting, else disable)'),
    ssl_ca: z.string().optional().describe('Path to the CA certificate (PEM) for verify-ca / verify-full'),
    ssl_cert: z.string().optional().describe('Path to the client certificate (PEM)'),
    ssl_key: z.string().optional().describe('Path to the client private key (PEM)'),
    schemas: z.array(z.string()).default(['public']).describe('Schemas to discover'),
    include: z.array(z.string()).optional().describe('Table patterns to include ("schema.table" or "table", * and ? wildcards)'),
    exclude: z.array(z.string()).optional().describe('Table patterns to exclude'),
    streams: z.array(CustomStreamSchema).optional().describe('Custom SQL streams'),
    batch_size: z.number().int().positive().default(10_000).describe('Rows per page; a state checkpoint follows every page'),
    source_digests: z
      .boolean()
      .default(true)
      .describe(
        'Read full-refresh streams with source digests when the destination keeps them (docs/postgres.md): unchanged rows are not read in full. false: every row is read in full and no digest is stored',
      ),
    digest_page_size: z
      .number()
      .int()
      .positive()
      .default(100_000)
      .describe(
        "Rows per page of a read with source digests (pass 1: keys and digests); only the keys of a page's changed rows are held in memory. A checkpoint follows every page",
      ),
    lookback: z
      .union([z.string(), z.number()])
      .refine((v) => (typeof v === 'number' ? Number.isFinite(v) && v >= 0 : INTERVAL.test(v)), {
        error: (issue) =>
          typeof issue.input === 'number'
            ? `${issue.input} is not a valid lookback; expected 0 or more (in cursor units, for a numeric cursor)`
            : `"${String(issue.input)}" is not a valid lookback; expected an interval such as "5 minutes", "1 hour 30 minutes", "2 days" or "00:05:00" (not negative)`,
      })
      .optional()
      .describe(
        'Incremental: re-read rows whose cursor is within this window of the saved cursor (an interval like "5 minutes", or a number for numeric cursors) to catch rows committed late',
      ),
    cdc: z
      .strictObject({
        slot: z
          .string()
          .optional()
          .describe('Replication slot name (default sluice_<connection>_<8 hex of the database name hash>; slots are server-wide)'),
        publication: z.string().optional().describe('Publication name (default sluice_<connection>)'),
        create_publication: z.boolean().default(true).describe('Create the publication for the CDC tables when it is missing'),
        on_invalid_slot: z
          .enum(['fail', 'resnapshot'])
          .default('fail')
          .describe('When the slot is missing or invalidated: fail, or take a new snapshot'),
        schema_change: z
          .enum(['propagate', 'fail'])
          .default('propagate')
          .describe('When a watched table gains or loses columns: emit rows with the new columns, or stop'),
        heartbeat_seconds: z.number().positive().default(10).describe('Emit a WAL heartbeat when idle, so the slot keeps advancing'),
        lag_report_seconds: z.number().positive().default(60).describe('How often to log the WAL retained by the slot'),
      })
      .default({
        create_publication: true,
        on_invalid_slot: 'fail',
        schema_change: 'propagate',
        heartbeat_seconds: 10,
        lag_report_seconds: 60,
      })
      .describe('Change data capture over logical replication (pgoutput)'),
  })
  .describe('PostgreSQL source');

export type PostgresSourceConfig = z.infer<typeof PostgresSourceConfigSchema>;
export type CustomStreamConfig = z.infer<typeof CustomStreamSchema>;
export type CdcConfig = PostgresSourceConfig['cdc'];

function readPem(path: string, baseDir: string, what: string): string {
  const full = isAbsolute(path) ? path : resolve(baseDir, path);
  try {
    return readFileSync(full, 'utf8');
  } catch {
    throw new SluiceError(`cannot read the ${what} file ${full}`, {
      kind: 'config',
      where: `postgres source ${what}`,
      hint: 'check the path (relative paths resolve against the pipeline file)',
    });
  }
}

/** `pg` client options. Never contains anything we log. */
export function clientConfig(cfg: PostgresSourceConfig, baseDir: string): ClientConfig {
  if (!cfg.url && !cfg.host) {
    throw new SluiceError('the postgres source needs `url` or `host`', {
      kind: 'config',
      where: 'source config',
      hint: 'set url: postgres://user:password@host:5432/db',
    });
  }
  const out: ClientConfig = {};
  let mode = cfg.sslmode;
  if (cfg.url) {
    let u: URL;
    try {
      u = new URL(cfg.url);
    } catch {
      throw new SluiceError('the postgres `url` is not a valid URL', {
        kind: 'config',
        where: 'source config url',
        hint: 'use postgres://user:password@host:5432/db',
      });
    }
    out.host = decodeURIComponent(u.hostname) || undefined;
    if (u.port) out.port = Number(u.port);
    if (u.username) out.user = decodeURIComponent(u.username);
    if (u.password) out.password = decodeURIComponent(u.password);
    const db = decodeURIComponent(u.pathname.replace(/^\//, ''));
    if (db) out.database = db;
    const host = u.searchParams.get('host');
    if (host) out.host = host; // unix socket dir
    mode ??= (u.searchParams.get('sslmode') as PostgresSourceConfig['sslmode']) ?? undefined;
  }
  if (cfg.host) out.host = cfg.host;
  if (cfg.port) out.port = cfg.port;
  if (cfg.database) out.database = cfg.database;
  if (cfg.user) out.user = cfg.user;
  if (cfg.password) out.password = cfg.password;
  if (mode && mode !== 'disable') {
    const ssl: Record<string, unknown> = { rejectUnauthorized: mode === 'verify-ca' || mode === 'verify-full' };
    if (cfg.ssl_ca) ssl.ca = readPem(cfg.ssl_ca, baseDir, 'ssl_ca');
    if (cfg.ssl_cert) ssl.cert = readPem(cfg.ssl_cert, baseDir, 'ssl_cert');
    if (cfg.ssl_key) ssl.key = readPem(cfg.ssl_key, baseDir, 'ssl_key');
    if (mode === 'verify-ca') ssl.checkServerIdentity = () => undefined;
    out.ssl = ssl;
  }
  out.application_name = 'sluice';
  out.connectionTimeoutMillis = 15_000;
  return out;
}

/** Where messages say which server: host:port/db, never the password. */
export function describeServer(cfg: PostgresSourceConfig, baseDir: string): string {
  try {
    const c = clientConfig(cfg, baseDir);
    return `postgres ${c.host ?? 'localhost'}:${c.port ?? 5432}/${c.database ?? c.user ?? ''}`;
  } catch {
    return 'postgres source';
  }
}
