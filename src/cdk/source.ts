// defineSource: the short way to write a Source. Declare streams (schema, primary key, cursor) and
// an async generator per stream that yields plain records; the kit builds discover(), wraps records
// in RECORD messages, tracks the cursor tie-safely, emits STATE and stream status.
import { z } from 'zod';
import type {
  CheckOptions,
  CheckResult,
  ConnectorContext,
  ConnectorSpec,
  Source,
  SourceCapabilities,
  SourceState,
} from '../protocol/connector.ts';
import { SluiceError, describeUnknown, withContext } from '../protocol/errors.ts';
import type {
  AirbyteCatalog,
  AirbyteMessage,
  AirbyteStream,
  ConfiguredCatalog,
  ConfiguredStream,
  RecordErrorDetails,
  StateMessage,
} from '../protocol/messages.ts';
import { message } from '../protocol/messages.ts';
import { documentId, getPath } from '../protocol/identity.ts';
import { CursorTracker, type CursorOrdering, type CursorState } from './cursor.ts';
import { HttpClient, describeRetries, type HttpClientOptions } from './http.ts';

const DELETED = Symbol.for('sluice.cdk.deleted');

/**
 * A deletion of the record with these primary-key fields, yielded from a stream's read. Include the
 * cursor field too (e.g. a soft-delete's updated_at) so the incremental position covers it.
 */
export interface Deletion {
  [DELETED]: true;
  key: Record<string, unknown>;
}
export function deleted(key: Record<string, unknown>): Deletion {
  return { [DELETED]: true, key };
}
function isDeletion(v: unknown): v is Deletion {
  return !!v && typeof v === 'object' && (v as Record<symbol, unknown>)[DELETED] === true;
}

const BAD = Symbol.for('sluice.cdk.bad-record');

/**
 * An input record the stream could not parse, yielded from a stream's read instead of throwing:
 * the engine fails the run naming `position`, or stores a dead letter (`errors.tolerance: all`)
 * and goes on. See `message.recordError` for sources that build messages themselves.
 */
export interface BadRecord {
  [BAD]: true;
  error: RecordErrorDetails;
}
export function badRecord(position: string, error: string, raw?: string, hint?: string): BadRecord {
  return { [BAD]: true, error: { position, message: error, ...(raw !== undefined ? { raw } : {}), ...(hint ? { hint } : {}) } };
}
export function isBadRecord(v: unknown): v is BadRecord {
  return !!v && typeof v === 'object' && (v as Record<symbol, unknown>)[BAD] === true;
}

export interface StreamReadContext<C> {
  config: C;
  ctx: ConnectorContext;
  stream: string;
  syncMode: 'full_refresh' | 'incremental';
  /**
   * Incremental only: fetch records whose cursor is >= this value (inclusive — the kit drops the
   * ones the saved state already covers). Undefined on a first read or in full refresh.
   */
  since: unknown;
  /** The full saved position, for sources that can seek by (cursor, key) themselves. */
  after: CursorState | undefined;
  signal: AbortSignal;
  /** HTTP client of this read (base URL, auth, rate limit from defineSource's `http`), shared by all streams. */
  http: HttpClient;
  /** Child streams: the parent record this read is for (undefined in other streams). */
  parent: any;
}

/** Validate records against the stream's zod schema during the read: log and pass on, or stop. */
export type RecordValidation = 'off' | 'warn' | 'fail';

export interface StreamDefinition<C, R extends Record<string, unknown> = Record<string, unknown>> {
  name: string;
  description?: string;
  /** Record schema: a zod object (typed records) or a JSON Schema object. */
  schema: z.ZodType<R> | Record<string, unknown>;
  /** Field name(s) identifying a record: 'id', ['org', 'id'] or [['org'], ['id']] for nested paths. */
  primaryKey: string | string[] | string[][];
  /** Enables incremental sync. Records must be yielded sorted by it (see `ordering`). */
  cursorField?: string | string[];
  /** How records are sorted; see cursor.ts. Default 'cursor_then_key'. */
  ordering?: CursorOrdering;
  /** Emit STATE after this many records (default 1000), and always at the end. */
  stateEvery?: number;
  /** Override cursor value ordering (default: numbers, dates, then text). */
  compareCursor?: (a: unknown, b: unknown) => number;
  /**
   * A child stream: `read` runs once per record of this parent stream (by name, or the definition;
   * the parent is read in full and its records
   * not emitted), with `parent` set. An incremental child keeps one position per parent
   * (Airbyte's SubstreamPartitionRouter), so a resumed read neither loses nor repeats records.
   */
  parent?: string | StreamDefinition<C, any>;
  /** Check records against a zod `schema` while reading (default: the source's `validate`, else off). */
  validate?: RecordValidation;
  read(input: StreamReadContext<C>): AsyncIterable<R | Deletion | BadRecord>;
}

export interface SourceDefinition<S extends z.ZodType> {
  spec: Omit<ConnectorSpec<z.output<S>>, 'config'> & { config: S };
  /** Streams, fixed or depending on the config (e.g. one per table). */
  streams?:
    | StreamDefinition<z.output<S>, any>[]
    | ((
        config: z.output<S>,
        ctx: ConnectorContext,
      ) => Promise<StreamDefinition<z.output<S>, any>[]> | StreamDefinition<z.output<S>, any>[]);
  /** Connectivity check. Default: ok. Throwing a SluiceError counts as a clean failure. */
  check?(
    config: z.output<S>,
    ctx: ConnectorContext,
    http: HttpClient,
    options?: CheckOptions,
  ): Promise<CheckResult | void> | CheckResult | void;
  /** Base URL, authenticator and rate limit of the HttpClient each read (and check) gets. */
  http?: (config: z.output<S>) => HttpClientOptions;
  /** Default record validation for every stream (see StreamDefinition.validate). */
  validate?: RecordValidation;
  capabilities?: Partial<SourceCapabilities>;
  /** Full control: replaces the stream-based discover()/read(). */
  discover?(config: z.output<S>, ctx: ConnectorContext): Promise<AirbyteCatalog>;
  read?(
    config: z.output<S>,
    catalog: ConfiguredCatalog,
    state: SourceState | undefined,
    ctx: ConnectorContext,
  ): AsyncIterable<AirbyteMessage>;
  onStateCommitted?: Source<z.output<S>>['onStateCommitted'];
  /** Config checks that need the pipeline's directory; see Source.validateConfig. */
  validateConfig?: Source<z.output<S>>['validateConfig'];
}

/** Normalises 'id' / ['a','b'] / [['a'],['b']] to a list of field paths. */
export function normalizeKey(key: string | string[] | string[][] | undefined): string[][] {
  if (key === undefined) return [];
  if (typeof key === 'string') return [[key]];
  if (key.length === 0) return [];
  if (Array.isArray(key[0])) return key as string[][];
  return (key as string[]).map((k) => [k]);
}

function normalizeField(field: string | string[] | undefined): string[] | undefined {
  if (field === undefined) return undefined;
  return typeof field === 'string' ? [field] : field;
}

/** JSON Schema of a stream's records, from zod (output shape) or as given. */
export function streamJsonSchema(schema: z.ZodType | Record<string, unknown>): Record<string, unknown> {
  // Duck-typed: a user's project may hold its own copy of zod v4.
  if (schema && typeof schema === 'object' && '_zod' in schema) {
    const js = z.toJSONSchema(schema as z.ZodType, { io: 'output', unrepresentable: 'any' }) as Record<string, unknown>;
    // Airbyte stream schemas are draft-07; the 2020-12 tag would mislead older validators.
    delete js.$schema;
    return js;
  }
  return schema;
}

export function streamToAirbyte(def: StreamDefinition<any, any>): AirbyteStream {
  const cursor = normalizeField(def.cursorField);
  const pk = normalizeKey(def.primaryKey);
  return {
    name: def.name,
    ...(def.description ? { description: def.description } : {}),
    json_schema: streamJsonSchema(def.schema),
    supported_sync_modes: cursor ? ['full_refresh', 'incremental'] : ['full_refresh'],
    ...(cursor ? { source_defined_cursor: true, default_cursor_field: cursor } : {}),
    ...(pk.length ? { source_defined_primary_key: pk } : {}),
  };
}

export function defineSource<S extends z.ZodType>(def: SourceDefinition<S>): Source<z.output<S>> {
  type C = z.output<S>;
  if (!def.streams && !(def.discover && def.read)) {
    throw new SluiceError(`source "${def.spec.name}" declares neither streams nor discover()+read()`, {
      kind: 'internal',
      hint: 'pass `streams: [...]` to defineSource, or both discover() and read()',
    });
  }
  const streamsFor = async (config: C, ctx: ConnectorContext) => {
    const s = typeof def.streams === 'function' ? await def.streams(config, ctx) : (def.streams ?? []);
    const names = new Set<string>();
    for (const st of s) {
      if (names.has(st.name)) throw new SluiceError(`source "${def.spec.name}" declares stream "${st.name}" twice`, { kind: 'internal' });
      names.add(st.name);
    }
    return s;
  };
  const staticStreams = Array.isArray(def.streams) ? def.streams : undefined;
  const syncModes: SourceCapabilities['syncModes'] = staticStreams
    ? staticStreams.some((s) => s.cursorField)
      ? ['full_refresh', 'incremental']
      : ['full_refresh']
    : ['full_refresh', 'incremental'];
  const capabilities: SourceCapabilities = {
    syncModes,
    sourceDefinedCursor: def.streams ? true : undefined,
    ...def.capabilities,
  };

  const source: Source<C> = {
    kind: 'source',
    spec: def.spec as ConnectorSpec<C>,
    capabilities,
    async check(config, ctx, options) {
      if (!def.check) return { ok: true };
      try {
        const r = await def.check(
          config,
          ctx,
          new HttpClient(def.http?.(config) ?? {}, { logger: ctx.logger, signal: ctx.signal }),
          options,
        );
        return r ?? { ok: true };
      } catch (err) {
        if (err instanceof SluiceError) return { ok: false, message: err.hint ? `${err.message} (${err.hint})` : err.message };
        return { ok: false, message: describeUnknown(err) };
      }
    },
    async discover(config, ctx) {
      if (def.discover) return def.discover(config, ctx);
      return { streams: (await streamsFor(config, ctx)).map(streamToAirbyte) };
    },
    read(config, catalog, state, ctx) {
      if (def.read) return def.read(config, catalog, state, ctx);
      return readStreams(def, config, catalog, state, ctx, streamsFor);
    },
    ...(def.onStateCommitted ? { onStateCommitted: def.onStateCommitted } : {}),
    ...(def.validateConfig ? { validateConfig: def.validateConfig } : {}),
  };
  return source;
}

async function* readStreams<C>(
  def: Pick<SourceDefinition<any>, 'spec' | 'http' | 'validate'>,
  config: C,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
  streamsFor: (config: C, ctx: ConnectorContext) => Promise<StreamDefinition<C, any>[]>,
): AsyncGenerator<AirbyteMessage> {
  const sourceName = def.spec.name;
  const declared = new Map((await streamsFor(config, ctx)).map((s) => [s.name, s]));
  // One client per read: every stream shares its rate limiter and retry count.
  const http = new HttpClient(def.http?.(config) ?? {}, { logger: ctx.logger, signal: ctx.signal });
  try {
    for (const configured of catalog.streams) {
      const stream = declared.get(configured.stream.name);
      if (!stream) {
        throw new SluiceError(`source "${sourceName}" has no stream "${configured.stream.name}"`, {
          kind: 'config',
          where: `stream ${configured.stream.name}`,
          hint: `available streams: ${[...declared.keys()].join(', ') || '(none)'}`,
        });
      }
      if (ctx.signal.aborted) return;
      const options = { config, ctx, http, validate: stream.validate ?? def.validate ?? 'off' };
      if (stream.parent) {
        const parent = typeof stream.parent === 'string' ? declared.get(stream.parent) : stream.parent;
        if (!parent)
          throw new SluiceError(
            `stream "${stream.name}" names parent stream "${String(stream.parent)}", which the source does not declare`,
            {
              kind: 'internal',
              where: `stream ${stream.name}`,
              hint: `declared streams: ${[...declared.keys()].join(', ')}`,
            },
          );
        yield* readChildStream(stream, parent, configured, state?.streams?.[stream.name], options);
      } else yield* readOneStream(stream, configured, state?.streams?.[stream.name], options);
    }
  } finally {
    // Retries are routine: one line with their count instead of one per retry.
    const retried = describeRetries(http.stats);
    if (retried) ctx.logger.info({ source: sourceName, retries: http.stats.retries, by_reason: http.stats.byReason }, retried);
  }
}

interface ReadOptions<C> {
  config: C;
  ctx: ConnectorContext;
  http: HttpClient;
  validate: RecordValidation;
}

/** Checks each record against the stream's zod schema (validate: warn | fail). */
function recordValidator(def: StreamDefinition<any, any>, mode: RecordValidation, ctx: ConnectorContext, primaryKey: string[][]) {
  const schema = def.schema as z.ZodType;
  if (mode === 'off' || !schema || typeof schema !== 'object' || !('_zod' in schema)) return undefined;
  let warned = 0;
  return (item: Record<string, unknown>, position: number): void => {
    const r = schema.safeParse(item);
    if (r.success) return;
    let key = '';
    try {
      key = primaryKey.length ? ` (${primaryKey.map((p) => p.join('.')).join(',')}=${documentId(item, primaryKey)})` : '';
    } catch {
      /* no key to show */
    }
    const issues = r.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.map(String).join('.') || '(record)'}: ${i.message}`)
      .join('; ');
    const text = `stream "${def.name}", record ${position}${key} does not match the stream's schema: ${issues}`;
    if (mode === 'fail')
      throw new SluiceError(text, {
        kind: 'source',
        where: `stream ${def.name}`,
        hint: 'fix the schema or the data, or set validate: warn to pass such records on',
      });
    if (++warned <= 5) ctx.logger.warn({ stream: def.name, record: position }, text);
    else if (warned === 6)
      ctx.logger.warn({ stream: def.name }, `stream "${def.name}": more records do not match the schema; not logging each`);
  };
}

async function* readOneStream<C>(
  def: StreamDefinition<C, any>,
  configured: ConfiguredStream,
  saved: Record<string, unknown> | undefined,
  { config, ctx, http, validate }: ReadOptions<C>,
): AsyncGenerator<AirbyteMessage> {
  const name = def.name;
  const declaredCursor = normalizeField(def.cursorField);
  const incremental = configured.sync_mode === 'incremental';
  if (incremental && !declaredCursor) {
    throw new SluiceError(`stream "${name}" does not support incremental sync (it declares no cursor field)`, {
      kind: 'config',
      where: `stream ${name}`,
      hint: 'use sync_mode: full_refresh for this stream',
    });
  }
  const cursorField = declaredCursor;
  if (incremental && configured.cursor_field?.length && configured.cursor_field.join('.') !== cursorField!.join('.')) {
    throw new SluiceError(
      `stream "${name}" uses the source-defined cursor "${cursorField!.join('.')}", not "${configured.cursor_field.join('.')}"`,
      { kind: 'config', where: `stream ${name}`, hint: 'remove cursor_field from the stream, or set it to the source-defined one' },
    );
  }
  const primaryKey = configured.primary_key?.length ? configured.primary_key : normalizeKey(def.primaryKey);
  const tracker = incremental
    ? new CursorTracker({
        stream: name,
        cursorField: cursorField!,
        primaryKey,
        ordering: def.ordering,
        start: saved && Object.keys(saved).length ? (saved as unknown as CursorState) : undefined,
        compare: def.compareCursor,
      })
    : undefined;
  const every = Math.max(1, def.stateEvery ?? 1000);
  let sinceState = 0;
  let emittedRecords = 0;

  const stateMessage = (s: CursorState): AirbyteMessage => {
    const m = message.streamState(name, s as unknown as Record<string, unknown>);
    (m as { state: StateMessage }).state.sourceStats = { recordCount: sinceState };
    sinceState = 0;
    return m;
  };

  yield message.streamStatus(name, 'STARTED');
  const input: StreamReadContext<C> = {
    config,
    ctx,
    stream: name,
    syncMode: incremental ? 'incremental' : 'full_refresh',
    since: tracker?.since,
    after: tracker?.startState,
    signal: ctx.signal,
    http,
    parent: undefined,
  };
  const check = recordValidator(def, validate, ctx, primaryKey);
  try {
    for await (const item of def.read(input)) {
      if (isDeletion(item)) {
        // A deletion that carries the cursor value moves the position like a record does.
        if (tracker && getPath(item.key, cursorField!) !== undefined && !tracker.observe(item.key)) continue;
        emittedRecords++;
        sinceState++;
        yield message.deletion(name, item.key);
        continue;
      }
      if (isBadRecord(item)) {
        yield message.recordError(name, item.error);
        continue;
      }
      if (!item || typeof item !== 'object' || Array.isArray(item)) {
        throw new SluiceError(
          `stream "${name}" yielded ${Array.isArray(item) ? 'an array' : typeof item} at record ${emittedRecords + 1}; expected a plain object`,
          {
            kind: 'source',
            where: `stream ${name}`,
          },
        );
      }
      if (tracker && !tracker.observe(item)) continue;
      check?.(item, emittedRecords + 1);
      // Ordering 'cursor': a state is possible only where the cursor moves on, and it covers the
      // records before this one, so it goes out before it.
      if (tracker?.ordering === 'cursor' && sinceState >= every) {
        const s = tracker.checkpoint();
        if (s) yield stateMessage(s);
      }
      emittedRecords++;
      sinceState++;
      yield message.record(name, item);
      // After the record: a state covers only what was yielded before it.
      if (tracker?.ordering === 'cursor_then_key' && sinceState >= every) {
        const s = tracker.checkpoint();
        if (s) yield stateMessage(s);
      }
      if (ctx.signal.aborted) break;
    }
  } catch (err) {
    throw withContext(err, `stream ${name}`);
  }
  if (ctx.signal.aborted) {
    // Stopped early: the records so far are covered; the stream is not complete.
    const s = tracker?.checkpoint();
    if (s) yield stateMessage(s);
    yield message.streamStatus(name, 'INCOMPLETE');
    return;
  }
  if (tracker) {
    const s = tracker.finish();
    if (s) yield stateMessage(s);
  }
  yield message.streamStatus(name, 'COMPLETE');
}

/**
 * A child stream: the parent stream is read in full (its records are not emitted) and the child's
 * read runs once per parent record. Incremental children keep one cursor position per parent,
 * `{ partitions: { <parent key>: { cursor, key } } }`, in one STATE that covers every record
 * yielded before it, so a read stopped at any point resumes each parent where it was.
 */
async function* readChildStream<C>(
  def: StreamDefinition<C, any>,
  parent: StreamDefinition<C, any>,
  configured: ConfiguredStream,
  saved: Record<string, unknown> | undefined,
  { config, ctx, http, validate }: ReadOptions<C>,
): AsyncGenerator<AirbyteMessage> {
  const name = def.name;
  const cursorField = normalizeField(def.cursorField);
  const incremental = configured.sync_mode === 'incremental';
  if (incremental && !cursorField) {
    throw new SluiceError(`stream "${name}" does not support incremental sync (it declares no cursor field)`, {
      kind: 'config',
      where: `stream ${name}`,
      hint: 'use sync_mode: full_refresh for this stream',
    });
  }
  const savedPartitions = saved?.partitions;
  if (saved && Object.keys(saved).length && (!savedPartitions || typeof savedPartitions !== 'object' || Array.isArray(savedPartitions))) {
    throw new SluiceError(`saved state of child stream "${name}" has no per-parent positions: ${JSON.stringify(saved).slice(0, 200)}`, {
      kind: 'source',
      where: `stream ${name}`,
      hint: 'reset the state of this stream (`sluice state reset`) so it is read from the start',
    });
  }
  const partitions: Record<string, CursorState> = { ...((savedPartitions as Record<string, CursorState> | undefined) ?? {}) };
  const primaryKey = configured.primary_key?.length ? configured.primary_key : normalizeKey(def.primaryKey);
  const parentKey = normalizeKey(parent.primaryKey);
  const every = Math.max(1, def.stateEvery ?? 1000);
  const check = recordValidator(def, validate, ctx, primaryKey);
  let sinceState = 0;
  let emittedRecords = 0;
  let dirty = false;
  const stateMessage = (): AirbyteMessage => {
    const m = message.streamState(name, { partitions: { ...partitions } });
    (m as { state: StateMessage }).state.sourceStats = { recordCount: sinceState };
    sinceState = 0;
    dirty = false;
    return m;
  };
  const base = { config, ctx, signal: ctx.signal, http };

  yield message.streamStatus(name, 'STARTED');
  try {
    const parents = parent.read({
      ...base,
      stream: parent.name,
      syncMode: 'full_refresh',
      since: undefined,
      after: undefined,
      parent: undefined,
    });
    for await (const p of parents) {
      if (ctx.signal.aborted) break;
      if (isDeletion(p)) continue; // a deleted parent has no children to read
      const partition = documentId(p, parentKey);
      const tracker = incremental
        ? new CursorTracker({
            stream: `${name} (parent ${partition})`,
            cursorField: cursorField!,
            primaryKey,
            ordering: def.ordering,
            start: partitions[partition],
            compare: def.compareCursor,
          })
        : undefined;
      const advance = (s: CursorState | undefined) => {
        if (s) {
          partitions[partition] = s;
          dirty = true;
        }
      };
      const input: StreamReadContext<C> = {
        ...base,
        stream: name,
        syncMode: incremental ? 'incremental' : 'full_refresh',
        since: tracker?.since,
        after: tracker?.startState,
        parent: p,
      };
      for await (const item of def.read(input)) {
        if (isDeletion(item)) {
          if (tracker && getPath(item.key, cursorField!) !== undefined && !tracker.observe(item.key)) continue;
          emittedRecords++;
          sinceState++;
          yield message.deletion(name, item.key);
          continue;
        }
        if (isBadRecord(item)) {
          yield message.recordError(name, item.error);
          continue;
        }
        if (!item || typeof item !== 'object' || Array.isArray(item)) {
          throw new SluiceError(
            `stream "${name}" yielded ${Array.isArray(item) ? 'an array' : typeof item} for parent ${partition}; expected a plain object`,
            {
              kind: 'source',
              where: `stream ${name}`,
            },
          );
        }
        if (tracker && !tracker.observe(item)) continue;
        check?.(item, emittedRecords + 1);
        if (tracker?.ordering === 'cursor' && sinceState >= every) {
          advance(tracker.checkpoint());
          if (dirty) yield stateMessage();
        }
        emittedRecords++;
        sinceState++;
        yield message.record(name, item);
        if (tracker?.ordering === 'cursor_then_key' && sinceState >= every) {
          advance(tracker.checkpoint());
          if (dirty) yield stateMessage();
        }
        if (ctx.signal.aborted) break;
      }
      advance(ctx.signal.aborted ? tracker?.checkpoint() : tracker?.finish());
      // A state after each parent that moved: a crash later re-reads at most one parent's tail.
      if (dirty) yield stateMessage();
      if (ctx.signal.aborted) break;
    }
  } catch (err) {
    throw withContext(err, `stream ${name}`);
  }
  if (ctx.signal.aborted) {
    yield message.streamStatus(name, 'INCOMPLETE');
    return;
  }
  yield message.streamStatus(name, 'COMPLETE');
}
