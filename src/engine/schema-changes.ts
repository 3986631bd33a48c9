// Schema changes, for every source: the columns of each stream are kept beside the connection's
// state (`<state dir>/schema/<connection>.json`) and compared on the next run — once after
// discover (sources that describe their columns) and per record for columns no schema announced
// (schemaless sources such as JSON files, S3 objects or Kafka topics, and columns added while a
// CDC stream runs). `schema_changes` on the connection decides:
//   unset (default): added columns are propagated; a dropped or retyped column that the text,
//     metadata, primary key or cursor uses stops the run (any other is propagated);
//   propagate: every change is accepted;   ignore: new columns are stripped from records;
//   fail: any change stops the run before anything of it is written.
// Each change is logged with its columns and what was done.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoadedConnection } from '../config/load.ts';
import type { Logger } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import type { ConfiguredCatalog, ConfiguredStream } from '../protocol/messages.ts';
import { atomicWrite } from '../state/index.ts';

const MID_RUN = 'nothing from that record on was written';

export type SchemaChangePolicy = 'propagate' | 'ignore' | 'fail';

interface Column {
  /** JSON types without "null", sorted; `format` appended (`string:date-time`). */
  type: string;
  nullable: boolean;
  /** Learnt from records (schemaless stream) rather than announced by discover. */
  observed?: boolean;
}
type StreamColumns = Record<string, Column>;
interface Snapshot {
  version: 1;
  streams: Record<string, StreamColumns>;
  /** Each stream's configured primary key: document ids come from it (absent in older files). */
  primary_keys?: Record<string, string[][]>;
}

const keyText = (pk: string[][]) => `[${pk.map((p) => p.join('.')).join(', ')}]`;

export interface SchemaChange {
  stream: string;
  column: string;
  change: 'added' | 'dropped' | 'retyped';
  from?: string;
  to?: string;
  /** Where the pipeline uses the column: text, metadata, primary key, cursor. */
  used: string[];
  action: 'propagated' | 'ignored' | 'stopped';
}

const safeName = (connection: string) => encodeURIComponent(connection);

function columnOf(schema: unknown): Column {
  const s = (schema ?? {}) as { type?: string | string[]; format?: string };
  const types = (Array.isArray(s.type) ? s.type : s.type ? [s.type] : []).filter((t) => t !== 'null').sort();
  const nullable = !s.type || (Array.isArray(s.type) && s.type.includes('null'));
  return { type: (types.join('|') || 'any') + (s.format ? `:${s.format}` : ''), nullable };
}

/** Columns a discovered stream announces; undefined when it announces none of its own (schemaless). */
function discoveredColumns(stream: ConfiguredStream): { columns: StreamColumns; open: boolean } {
  const js = stream.stream.json_schema as { properties?: Record<string, unknown>; additionalProperties?: unknown };
  const columns: StreamColumns = {};
  for (const [k, v] of Object.entries(js?.properties ?? {})) columns[k] = columnOf(v);
  // Records may carry more columns than announced: those are learnt from the records.
  const open = js?.additionalProperties === true || js?.additionalProperties === undefined || !js?.properties;
  return { columns, open };
}

function valueType(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return 'number';
  if (typeof v === 'bigint') return 'number';
  if (v instanceof Date) return 'string';
  return typeof v;
}

/** Top-level columns the connection's processing, keys and cursors use, per role. */
function usageOf(conn: LoadedConnection, stream: ConfiguredStream): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const add = (path: string | undefined, role: string) => {
    const col = path?.split('.')[0];
    if (!col || col === '*') return;
    const roles = used.get(col) ?? [];
    if (!roles.includes(role)) roles.push(role);
    used.set(col, roles);
  };
  const p = conn.config.processing;
  for (const f of p?.text_fields ?? []) add(f, 'text');
  for (const m of p?.text_template?.matchAll(/\{\{\s*([^}\s]+)\s*\}\}/g) ?? []) add(m[1], 'text');
  if (!p?.text_fields && !p?.text_template) add('content', 'text');
  for (const f of p?.metadata_fields ?? []) add(typeof f === 'string' ? f : f.field, 'metadata');
  for (const k of stream.primary_key ?? []) add(k[0], 'primary key');
  if (stream.cursor_field?.length) add(stream.cursor_field[0], 'cursor');
  return used;
}

export class SchemaTracker {
  private known: Record<string, StreamColumns> = {};
  private readonly open = new Set<string>();
  private readonly usage = new Map<string, Map<string, string[]>>();
  /** Streams with no kept schema: their columns are learnt silently this run. */
  private readonly firstRun = new Set<string>();
  /** What the file held when this run started (undefined: no file yet). */
  private kept: Snapshot | undefined;
  /** First-run streams: the columns discover announced at the start of this run. */
  private readonly startColumns: Record<string, StreamColumns> = {};
  /** `stream\0column` (added) and `stream\0column\0type` (retyped) changes ignored this run. */
  private readonly ignored = new Set<string>();
  readonly changes: SchemaChange[] = [];
  private dirty = false;
  private keys: Record<string, string[][]> = {};
  /** Keys kept before an overwrite run re-keys their stream: restored unless that run completes. */
  private rekeyed: Record<string, string[][]> = {};
  /**
   * CDC streams: every record carries the whole row, so a column that
   * appears, disappears or changes its value type between two records changed while streaming
   * (after discover vetted the schema). Column → last non-null value type of the previous row.
   */
  private readonly fullRows = new Set<string>();
  private readonly lastRow = new Map<string, Map<string, string | undefined>>();

  private constructor(
    private readonly file: string,
    private readonly connection: string,
    private readonly policy: SchemaChangePolicy | undefined,
    private readonly logger: Logger,
  ) {}

  /**
   * Loads the kept schema and compares it with what discover found; throws (before anything is
   * written) when the policy says a change must stop the run.
   */
  static async start(stateDir: string, conn: LoadedConnection, catalog: ConfiguredCatalog, logger: Logger): Promise<SchemaTracker> {
    const connection = conn.config.name;
    const file = join(stateDir, 'schema', `${safeName(connection)}.json`);
    const t = new SchemaTracker(file, connection, conn.config.schema_changes, logger);
    let kept: Snapshot | undefined;
    try {
      kept = JSON.parse(await readFile(file, 'utf8')) as Snapshot;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new SluiceError(`the kept schema ${file} is unreadable: ${(err as Error).message}`, {
          kind: 'config',
          where: `connection ${connection}`,
          hint: 'delete the file: the next run keeps the schema it finds, without comparing',
        });
    }
    t.kept = kept;
    t.keys = { ...kept?.primary_keys };
    t.checkPrimaryKeys(catalog);
    for (const cs of catalog.streams) {
      const name = cs.stream.name;
      t.usage.set(name, usageOf(conn, cs));
      const { columns, open } = discoveredColumns(cs);
      if (open) t.open.add(name);
      if (cs.cdc) t.fullRows.add(name);
      const before = kept?.streams?.[name];
      if (!before) {
        t.known[name] = columns;
        t.startColumns[name] = structuredClone(columns);
        t.firstRun.add(name);
        t.dirty = true;
        continue;
      }
      const next: StreamColumns = {};
      // Columns learnt from records stay known while discover still leaves room for them.
      for (const [col, c] of Object.entries(before)) if (c.observed && open && !(col in columns)) next[col] = c;
      for (const [col, c] of Object.entries(columns)) {
        const old = before[col];
        if (!old) {
          if (t.decide({ stream: name, column: col, change: 'added', to: c.type }, c.nullable) === 'ignored') {
            t.ignored.add(`${name}\u0000${col}`); // stripped from its records
            continue;
          }
        } else if (old.type !== c.type && old.type !== 'any' && c.type !== 'any') {
          t.decide({ stream: name, column: col, change: 'retyped', from: old.type, to: c.type });
        }
        next[col] = c;
      }
      for (const [col, c] of Object.entries(before)) {
        if (c.observed) continue;
        if (!(col in columns)) {
          const action = t.decide({ stream: name, column: col, change: 'dropped', from: c.type });
          if (action === 'ignored') next[col] = c; // still expected: an ignored drop is not learnt
        }
      }
      if (JSON.stringify(next) !== JSON.stringify(before)) t.dirty = true;
      t.known[name] = next;
    }
    t.throwIfStopped();
    return t;
  }

  /**
   * Document ids come from the primary key, so a changed key would leave every old document's
   * chunks behind, in any destination. Refused (before any write) unless the stream runs in
   * overwrite mode, which rebuilds its generation under the new key. Wording as pgvector's.
   */
  private checkPrimaryKeys(catalog: ConfiguredCatalog): void {
    for (const cs of catalog.streams) {
      const name = cs.stream.name;
      const next = cs.primary_key ?? [];
      const before = this.keys[name];
      if (before && JSON.stringify(before) === JSON.stringify(next)) continue;
      if (before && cs.destination_sync_mode !== 'overwrite') {
        throw new SluiceError(
          `connection ${this.connection}, stream ${name}: primary_key changed from ${keyText(before)} to ${keyText(next)}, but the destination holds documents keyed by the old one; syncing would leave their chunks behind`,
          {
            kind: 'config',
            where: `connection ${this.connection}, stream ${name}`,
            hint: `re-key the table with one overwrite run (it replaces the table atomically): set destination_sync_mode: overwrite on stream ${name}, run sluice sync <pipeline> --full-refresh, then set it back; or keep primary_key ${keyText(before)}`,
          },
        );
      }
      if (before) this.rekeyed[name] = before;
      this.keys[name] = next;
      this.dirty = true;
    }
  }

  private decide(c: Omit<SchemaChange, 'used' | 'action'>, nullable = true): SchemaChange['action'] {
    const used = this.usage.get(c.stream)?.get(c.column) ?? [];
    let action: SchemaChange['action'];
    if (this.policy === 'fail') action = 'stopped';
    else if (this.policy === 'ignore') action = 'ignored';
    else if (this.policy === 'propagate') action = 'propagated';
    else action = c.change !== 'added' && used.length ? 'stopped' : 'propagated';
    const change: SchemaChange = { ...c, used, action };
    this.changes.push(change);
    const what =
      c.change === 'added'
        ? `added column ${c.column} (${c.to}${nullable ? ', nullable' : ', not null'})`
        : c.change === 'dropped'
          ? `dropped column ${c.column} (was ${c.from})`
          : `column ${c.column} changed type ${c.from} → ${c.to}`;
    const usedText = used.length ? ` used in ${used.join(', ')}` : '';
    const msg = `connection ${this.connection}, stream ${c.stream}: schema change: ${what}${usedText}; ${action === 'stopped' ? 'stopping before any write' : action}`;
    if (action === 'stopped') this.logger.error({ connection: this.connection, stream: c.stream, schemaChange: change }, msg);
    else this.logger.warn({ connection: this.connection, stream: c.stream, schemaChange: change }, msg);
    return action;
  }

  private throwIfStopped(written = 'nothing was written'): void {
    const stopped = this.changes.filter((c) => c.action === 'stopped');
    if (!stopped.length) return;
    const first = stopped[0];
    const list = stopped
      .map((c) => `${c.stream}.${c.column} ${c.change}${c.used.length ? ` (used in ${c.used.join(', ')})` : ''}`)
      .join(', ');
    throw new SluiceError(`schema changed: ${list}; ${written}`, {
      kind: 'config',
      where: `connection ${this.connection}, stream ${first.stream}`,
      hint:
        this.policy === 'fail'
          ? 'schema_changes: fail stops on every change; set schema_changes: propagate (or ignore) to accept it'
          : 'update processing / primary_key / cursor_field to the new columns, or set schema_changes: propagate to accept the change',
    });
  }

  /**
   * A record of `stream`: columns no schema announced are learnt (or stripped, or stop the run
   * before this record is written). Returns the record to use.
   */
  record(stream: string, data: Record<string, unknown>): Record<string, unknown> {
    const known = (this.known[stream] ??= {});
    if (this.fullRows.has(stream) && data._ab_cdc_deleted_at == null) this.rowShape(stream, data, known);
    const open = this.open.has(stream);
    // A closed schema (additionalProperties: false) with no column ignored: nothing to learn or strip.
    if (!open && !this.ignored.size) return data;
    let stripped: Record<string, unknown> | undefined;
    // for…in rather than Object.entries: no array of pairs per record.
    for (const col in data) {
      if (!Object.hasOwn(data, col) || col.startsWith('_ab_')) continue;
      if (this.ignored.size && this.ignored.has(`${stream}\u0000${col}`)) {
        stripped ??= { ...data };
        delete stripped[col];
        continue;
      }
      if (!open) continue;
      const k = known[col];
      // A column discover announced (not learnt from records): nothing to learn from its value.
      if (k && !k.observed) continue;
      const type = valueType(data[col]);
      if (!k) {
        // A first run of a stream has nothing to compare with: its columns are simply learnt.
        const first = this.firstRun.has(stream);
        const action = first ? 'propagated' : this.decide({ stream, column: col, change: 'added', to: type ?? 'any' });
        if (action === 'stopped') this.throwIfStopped(MID_RUN);
        if (action === 'ignored') {
          this.ignored.add(`${stream}\u0000${col}`);
          stripped ??= { ...data };
          delete stripped[col];
          continue;
        }
        known[col] = { type: type ?? 'any', nullable: true, observed: true };
        this.dirty = true;
      } else if (
        type &&
        k.type !== type && // the usual case, decided without splitting the type list
        !k.type.split('|').includes(type) &&
        !this.ignored.has(`${stream}\u0000${col}\u0000${type}`)
      ) {
        if (k.type === 'any' || this.firstRun.has(stream)) {
          // Learning: a first run widens the type (mixed data is not a change).
          known[col] = { ...k, type: k.type === 'any' ? type : [...k.type.split('|'), type].sort().join('|') };
          this.dirty = true;
          continue;
        }
        const action = this.decide({ stream, column: col, change: 'retyped', from: k.type, to: type });
        if (action === 'stopped') this.throwIfStopped(MID_RUN);
        if (action === 'propagated') {
          known[col] = { ...k, type };
          this.dirty = true;
        } else this.ignored.add(`${stream}\u0000${col}\u0000${type}`);
      }
    }
    return stripped ?? data;
  }

  /** A CDC row compared with the previous row of its stream (see `fullRows`). */
  private rowShape(stream: string, data: Record<string, unknown>, known: StreamColumns): void {
    const prev = this.lastRow.get(stream);
    const row = new Map<string, string | undefined>();
    for (const [col, v] of Object.entries(data)) if (!col.startsWith('_ab_')) row.set(col, valueType(v) ?? prev?.get(col));
    this.lastRow.set(stream, row);
    if (!prev) return;
    // The same change met again (a replayed stretch of WAL, or one vetted after discover) is not asked twice.
    const decided = (column: string, change: SchemaChange['change']) =>
      this.changes.find((c) => c.stream === stream && c.column === column && c.change === change)?.action;
    const apply = (action: SchemaChange['action'], fn: () => void) => {
      if (action === 'stopped') this.throwIfStopped(MID_RUN);
      if (action === 'propagated') {
        fn();
        this.dirty = true;
      }
    };
    for (const col of prev.keys()) {
      if (row.has(col) || !(col in known)) continue;
      apply(
        decided(col, 'dropped') ?? this.decide({ stream, column: col, change: 'dropped', from: known[col].type }),
        () => delete known[col],
      );
    }
    for (const [col, type] of row) {
      if (this.ignored.has(`${stream}\u0000${col}`)) continue;
      if (!prev.has(col)) {
        if (col in known) continue;
        const action = decided(col, 'added') ?? this.decide({ stream, column: col, change: 'added', to: type ?? 'any' });
        if (action === 'ignored') this.ignored.add(`${stream}\u0000${col}`);
        apply(action, () => (known[col] = { type: type ?? 'any', nullable: true }));
        continue;
      }
      const was = prev.get(col);
      const k = known[col];
      // JSON types of the values; a discovered `integer` column holds JSON numbers.
      const accepts = (t: string) => !k || k.type === 'any' || k.type.split(':')[0].replace('integer', 'number').split('|').includes(t);
      if (!type || type === was || accepts(type)) continue;
      if (this.ignored.has(`${stream}\u0000${col}\u0000${type}`)) continue;
      const action = decided(col, 'retyped') ?? this.decide({ stream, column: col, change: 'retyped', from: k.type, to: type });
      if (action === 'ignored') this.ignored.add(`${stream}\u0000${col}\u0000${type}`);
      apply(action, () => (known[col] = { ...k, type }));
    }
  }

  /**
   * Keeps what this run accepted (not on a dry run; when the run was stopped by a change, only the
   * schema its first-run streams started with).
   * A re-keying overwrite that did not complete left the old generation in place: its old key stays.
   */
  async save(opts: { completed?: boolean } = {}): Promise<void> {
    if (!this.dirty) return;
    let snapshot: Snapshot;
    if (this.changes.some((c) => c.action === 'stopped')) {
      // A stopped run accepts nothing. But a stream met for the first time keeps the columns seen
      // at its start: without them the next run would have nothing to compare with, learn the
      // changed schema silently and report a missing field instead of the schema change.
      const fresh = Object.keys(this.startColumns);
      if (!fresh.length) return;
      snapshot = {
        version: 1,
        streams: { ...this.kept?.streams, ...this.startColumns },
        primary_keys: { ...this.kept?.primary_keys, ...Object.fromEntries(fresh.map((n) => [n, this.keys[n] ?? []])) },
      };
    } else {
      const keys = opts.completed ? this.keys : { ...this.keys, ...this.rekeyed };
      snapshot = { version: 1, streams: this.known, primary_keys: keys };
    }
    await mkdir(join(this.file, '..'), { recursive: true });
    await atomicWrite(this.file, JSON.stringify(snapshot, null, 2));
    this.dirty = false;
  }
}
