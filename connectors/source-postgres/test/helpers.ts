// Shared helpers for the PostgreSQL source tests: a database per test file on the test server,
// a connector context, and a consumer that plays the engine's part (collect, commit states).
import pg from 'pg';
import type { ConnectorContext, SourceState } from '../../../src/protocol/connector.ts';
import type { AirbyteMessage, ConfiguredCatalog, ConfiguredStream, StateMessage } from '../../../src/protocol/messages.ts';
import { scratchDir } from '../../../src/testing/context.ts';
import source from '../index.ts';
import { PostgresSourceConfigSchema, type PostgresSourceConfig } from '../config.ts';

export async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = new pg.Client(adminUrl);
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(adminUrl);
  u.pathname = '/' + name;
  return u.toString();
}

export async function sql(url: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client(url);
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

export function config(url: string, extra: Record<string, unknown> = {}): PostgresSourceConfig {
  return PostgresSourceConfigSchema.parse({ url, ...extra });
}

export function context(connection: string, opts: { follow?: boolean; signal?: AbortSignal } = {}): ConnectorContext {
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  return {
    logger: quiet,
    baseDir: process.cwd(),
    signal: opts.signal ?? new AbortController().signal,
    connection,
    follow: opts.follow ?? false,
    workDir: scratchDir('sluice-pgsrc-'),
  };
}

export function stream(
  name: string,
  mode: 'full_refresh' | 'incremental' | 'cdc',
  extra: Partial<ConfiguredStream> = {},
): ConfiguredStream {
  return {
    stream: { name, json_schema: {}, supported_sync_modes: ['full_refresh', 'incremental'] },
    sync_mode: mode === 'full_refresh' ? 'full_refresh' : 'incremental',
    destination_sync_mode: mode === 'full_refresh' ? 'overwrite' : 'append_dedup',
    ...(mode === 'cdc' ? { cdc: true } : {}),
    ...extra,
  };
}

export const catalog = (...streams: ConfiguredStream[]): ConfiguredCatalog => ({ streams });

export const records = (msgs: AirbyteMessage[]) =>
  msgs.filter((m) => m.type === 'RECORD').map((m) => (m as { record: { stream: string; data: Record<string, unknown> } }).record);
export const states = (msgs: AirbyteMessage[]) => msgs.filter((m) => m.type === 'STATE').map((m) => (m as { state: StateMessage }).state);

/** The connection state the engine would store after `state` (same merge rules as the engine: last wins). */
export function applyState(conn: SourceState | undefined, state: StateMessage): SourceState {
  const next: SourceState = { streams: { ...(conn?.streams ?? {}) }, shared: conn?.shared };
  if (state.type === 'GLOBAL' && state.global) {
    next.shared = state.global.shared_state;
    for (const s of state.global.stream_states) next.streams[s.stream_descriptor.name] = s.stream_state ?? {};
  } else if (state.stream) {
    next.streams[state.stream.stream_descriptor.name] = state.stream.stream_state ?? {};
  }
  return next;
}

/**
 * Runs read() like the engine: collects messages; each STATE is "committed" at once (applied to
 * the connection state and passed to onStateCommitted) unless `commit` is false. Stops when read()
 * ends, or aborts when `until` says so.
 */
export async function drive(
  cfg: PostgresSourceConfig,
  cat: ConfiguredCatalog,
  start: SourceState | undefined,
  connection: string,
  opts: {
    follow?: boolean;
    until?: (msgs: AirbyteMessage[]) => boolean;
    commit?: boolean;
    timeoutMs?: number;
    stopAfterStates?: number;
  } = {},
): Promise<{ msgs: AirbyteMessage[]; state: SourceState | undefined }> {
  const ac = new AbortController();
  const ctx = context(connection, { follow: opts.follow, signal: ac.signal });
  const msgs: AirbyteMessage[] = [];
  let conn = start;
  let nStates = 0;
  const timer = setTimeout(() => ac.abort(), opts.timeoutMs ?? 30_000);
  try {
    for await (const m of source.read(cfg, cat, start, ctx)) {
      msgs.push(m);
      if (m.type === 'STATE') {
        const st = (m as { state: StateMessage }).state;
        if (opts.commit !== false) {
          conn = applyState(conn, st);
          await source.onStateCommitted?.(cfg, st, conn, ctx);
        }
        nStates++;
        if (opts.stopAfterStates && nStates >= opts.stopAfterStates) break;
      }
      if (opts.until?.(msgs)) ac.abort();
    }
  } finally {
    clearTimeout(timer);
  }
  return { msgs, state: conn };
}

const COPY_ESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
/**
 * COPY text unescaping as the reader first did it, with a regular expression: the reference the
 * hand-written reader (copy-escapes.ts) is compared with.
 */
export function unescapeCopyWithRegex(s: string): string {
  return s.replace(/\\(?:([bfnrtv\\])|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))/g, (_, e, oct, hex, other) => {
    if (e) return COPY_ESCAPES[e];
    if (oct) return String.fromCharCode(parseInt(oct, 8));
    if (hex) return String.fromCharCode(parseInt(hex, 16));
    return other;
  });
}
