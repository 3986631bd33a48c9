// S3 source: objects in a bucket (or any S3-compatible store) as rows or documents.
//
// Incremental by (LastModified, key). Every run also diffs the full listing against the previous
// run's (kept on disk, see snapshot.ts), which finds deleted objects (→ deletions downstream, in
// full refresh too) and objects whose LastModified is older than the cursor but which are new to
// us (multipart uploads carry their *start* time). See docs/s3.md.
import type { S3Client } from '@aws-sdk/client-s3';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectorContext, Source, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError, withContext } from '../../src/protocol/errors.ts';
import { getPath, keyPart } from '../../src/protocol/identity.ts';
import { message, type AirbyteMessage, type AirbyteStream, type ConfiguredStream, type StateMessage } from '../../src/protocol/messages.ts';
import { isBadRecord } from '../../src/cdk/source.ts';
import { createClient, headBucket, listObjects, openObject, rangeBuffer, s3Error, type ListedObject } from './client.ts';
import {
  ROW_KEY,
  S3ConfigSchema,
  TEXT_KEY,
  familyOf,
  formatOf,
  resolveStreams,
  type Family,
  type ResolvedStream,
  type S3Config,
} from './config.ts';
import { parseRows, readText, type ObjectSource } from './formats.ts';
import {
  StreamDir,
  diffListings,
  exists,
  readRowCount,
  readRowIds,
  RowsWriter,
  writeListing,
  type Graveyard,
  type PreviousListing,
} from './snapshot.ts';

interface Cursor {
  last_modified: string;
  key: string;
}
interface StreamState {
  cursor?: Cursor | null;
  /** Generation of the last complete listing (snapshot-<gen>.jsonl in the workDir). */
  snapshot_gen?: number;
  /** The cursor when that listing was complete. */
  snapshot_cursor?: Cursor | null;
  /** Listings of runs interrupted since then (informative: every listing newer than the base counts). */
  partial_gens?: number[];
  /** text or structured, for `format: auto` streams. */
  family?: Family;
}

const STATE_EVERY_MS = 1000;
const STATE_EVERY_RECORDS = 1000;
const STATE_EVERY_OBJECTS = 200;

function compareCursor(a: Cursor, b: Cursor): number {
  if (a.last_modified !== b.last_modified) return a.last_modified < b.last_modified ? -1 : 1;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}
const cursorOf = (o: ListedObject): Cursor => ({ last_modified: o.lastModified, key: o.key });

/** Keys that are "folders" in consoles, not content. */
const isFolderMarker = (o: ListedObject) => o.key.endsWith('/') && o.size === 0;

/** The stream's objects; `unreadable` counts those `format: auto` does not know (PDFs, images…). */
async function* matching(
  client: S3Client,
  config: S3Config,
  rs: ResolvedStream,
  signal?: AbortSignal,
  unreadable?: { count: number; example?: string },
): AsyncGenerator<ListedObject> {
  for await (const o of listObjects(client, config.bucket, rs.prefix, config.page_size, signal)) {
    if (isFolderMarker(o) || !rs.matches(o.key)) continue;
    if (!formatOf(o.key, rs.format)) {
      if (unreadable) {
        unreadable.count++;
        unreadable.example ??= o.key;
      }
      continue;
    }
    yield o;
  }
}

/**
 * A stream is either text documents or structured rows; `auto` decides by the first object found
 * and remembers it, so the stream keeps its primary key when its objects are all deleted.
 */
async function familyOfStream(
  client: S3Client,
  config: S3Config,
  rs: ResolvedStream,
  ctx: ConnectorContext,
  remembered?: unknown,
): Promise<Family> {
  if (rs.format !== 'auto') return familyOf(rs.format);
  if (remembered === 'text' || remembered === 'structured') return remembered;
  const dir = new StreamDir(ctx.workDir, rs.name);
  const known = await dir.family();
  if (known) return known;
  for await (const o of matching(client, config, rs, ctx.signal)) {
    const format = formatOf(o.key, 'auto');
    if (!format) continue;
    const family = familyOf(format);
    await dir.setFamily(family);
    return family;
  }
  return 'text';
}

function defaultKey(rs: ResolvedStream, family: Family): string[][] {
  return rs.primaryKey ?? (family === 'text' ? TEXT_KEY : ROW_KEY);
}

const samePath = (a: string[][], b: string[][]) => JSON.stringify(a) === JSON.stringify(b);

function jsonSchema(family: Family, pk: string[][]): Record<string, unknown> {
  return family === 'text'
    ? {
        type: 'object',
        properties: {
          key: { type: 'string' },
          content: { type: 'string' },
          last_modified: { type: 'string', format: 'date-time' },
          size: { type: 'integer' },
          etag: { type: 'string' },
        },
      }
    : {
        type: 'object',
        additionalProperties: true,
        properties: { ...keyProperties(pk), _s3_key: { type: 'string' }, _s3_row: { type: 'integer' } },
      };
}

/** The primary-key fields as (nested) schema properties of any type: rows are schemaless. */
function keyProperties(pk: string[][]): Record<string, unknown> {
  const props: Record<string, Record<string, unknown>> = {};
  for (const path of pk) {
    let node = props;
    path.forEach((part, i) => {
      if (i === path.length - 1) node[part] ??= {};
      else {
        const child = (node[part] ??= { type: 'object', properties: {} });
        node = child.properties as Record<string, Record<string, unknown>>;
      }
    });
  }
  return props;
}

/** Builds `{a: {b: v}}` from a path and value, so a deletion carries nested key fields too. */
function keyObject(paths: string[][], values: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  paths.forEach((path, i) => {
    let node = out;
    path.slice(0, -1).forEach((p) => {
      node = (node[p] ??= {}) as Record<string, unknown>;
    });
    node[path[path.length - 1]] = values[i];
  });
  return out;
}

const source: Source<S3Config> = {
  kind: 'source',
  spec: {
    name: 's3',
    title: 'Amazon S3 (and S3-compatible stores)',
    description:
      'Objects in a bucket as rows (jsonl, csv, json, parquet) or documents (text, markdown), incremental by LastModified, with deletions.',
    documentationUrl: 'docs/s3.md',
    config: S3ConfigSchema,
  },
  capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true },

  async check(config) {
    let client: S3Client | undefined;
    try {
      resolveStreams(config);
      client = createClient(config);
      await headBucket(client, config.bucket);
      // Listing is a separate permission (s3:ListBucket) from reaching the bucket.
      const first = await listObjects(client, config.bucket, resolveStreams(config)[0].prefix, 1).next();
      return {
        ok: true,
        message: `bucket ${config.bucket} is reachable and listable${first.done ? ' (no objects under the prefix yet)' : ''}`,
      };
    } catch (err) {
      const e = err instanceof SluiceError ? err : s3Error(err, `bucket ${config.bucket}`);
      return { ok: false, message: e.hint ? `${e.message} — ${e.hint}` : e.message };
    } finally {
      client?.destroy();
    }
  },

  async discover(config, ctx) {
    const client = createClient(config);
    try {
      const streams: AirbyteStream[] = [];
      for (const rs of resolveStreams(config)) {
        const family = await familyOfStream(client, config, rs, ctx);
        // No object told the format yet (an empty prefix): the schema is not known, so it is left
        // open rather than claimed to be the text one (field names cannot be checked against it).
        const guessed = rs.format === 'auto' && !(await new StreamDir(ctx.workDir, rs.name).family());
        streams.push({
          name: rs.name,
          json_schema: guessed
            ? { type: 'object', additionalProperties: true, properties: keyProperties(defaultKey(rs, family)) }
            : jsonSchema(family, defaultKey(rs, family)),
          supported_sync_modes: ['full_refresh', 'incremental'],
          source_defined_cursor: true,
          default_cursor_field: family === 'text' ? ['last_modified'] : [],
          source_defined_primary_key: defaultKey(rs, family),
          is_resumable: true,
        });
      }
      return { streams };
    } finally {
      client.destroy();
    }
  },

  async *read(config, catalog, state, ctx) {
    const streams = new Map(resolveStreams(config).map((s) => [s.name, s]));
    for (const cs of catalog.streams) {
      if (!streams.has(cs.stream.name)) {
        throw new SluiceError(`the S3 source has no stream "${cs.stream.name}"`, {
          kind: 'config',
          hint: `streams configured: ${[...streams.keys()].join(', ')}`,
        });
      }
    }
    const client = createClient(config);
    // `--follow`: incremental streams are listed again every poll_interval_seconds until the
    // signal aborts; they never report COMPLETE (more records may always come).
    const current: SourceState = { streams: { ...(state?.streams ?? {}) }, ...(state?.shared ? { shared: state.shared } : {}) };
    try {
      for (let cycle = 0; ; cycle++) {
        for (const cs of catalog.streams) {
          const polling = ctx.follow && cs.sync_mode === 'incremental';
          if (cycle > 0 && !polling) continue;
          if (ctx.signal.aborted) return;
          const rs = streams.get(cs.stream.name)!;
          try {
            for await (const m of readStream(client, config, rs, cs, current, ctx, !polling)) {
              if (m.type === 'STATE' && m.state.stream) current.streams[rs.name] = m.state.stream.stream_state ?? {};
              yield m;
            }
          } catch (err) {
            if (ctx.signal.aborted) return; // interrupted on purpose: what was produced stands
            throw withContext(err, `stream ${rs.name}`);
          }
        }
        if (!ctx.follow || !catalog.streams.some((cs) => cs.sync_mode === 'incremental')) return;
        try {
          await sleep(config.poll_interval_seconds * 1000, undefined, { signal: ctx.signal });
        } catch {
          return; // aborted: stop producing
        }
      }
    } finally {
      client.destroy();
    }
  },

  async onStateCommitted(_config, state: StateMessage, _connection: SourceState, ctx: ConnectorContext) {
    // Remember the committed listing even if the state store is later reset or replaced.
    const s = state.stream;
    const gen = (s?.stream_state as StreamState | undefined)?.snapshot_gen;
    if (s && typeof gen === 'number') await new StreamDir(ctx.workDir, s.stream_descriptor.name).setCommitted(gen);
  },
};
export default source;

interface Pending extends ListedObject {
  /** Etags of earlier versions whose rows may be downstream. */
  older: string[];
  late: boolean;
}

const genOf = (path: string) => Number(/snapshot-(\d+)\.jsonl$/.exec(path)![1]);

async function* readStream(
  client: S3Client,
  config: S3Config,
  rs: ResolvedStream,
  cs: ConfiguredStream,
  state: SourceState | undefined,
  ctx: ConnectorContext,
  reportComplete = true,
): AsyncGenerator<AirbyteMessage> {
  const { signal, logger } = ctx;
  const name = rs.name;
  const prior = (state?.streams[name] ?? {}) as StreamState;
  const family = await familyOfStream(client, config, rs, ctx, prior.family);
  // An empty `auto` stream defaults to text without committing to it: data files may come later.
  const settledFamily =
    rs.format !== 'auto' || prior.family === family || (await new StreamDir(ctx.workDir, name).family()) === family ? family : undefined;
  const pk = cs.primary_key?.length ? cs.primary_key : (cs.stream.source_defined_primary_key ?? defaultKey(rs, family));
  const countRows = family === 'structured' && samePath(pk, ROW_KEY);
  const incremental = cs.sync_mode === 'incremental';

  const dir = new StreamDir(ctx.workDir, name);
  const base = prior.snapshot_gen ?? (await dir.committedGen());
  const found = await dir.prepare(base);
  const previous: PreviousListing[] = [];
  if (base !== undefined) {
    const path = dir.snapshotPath(base);
    if (await exists(path)) previous.push({ path, base: true });
    else
      logger.warn(
        { stream: name, dir: dir.dir },
        'the previous S3 listing is missing from the work directory: objects deleted since the last run cannot be detected this time (they will be from the next run on)',
      );
  }
  for (const g of found.partials) previous.push({ path: dir.snapshotPath(g), base: false });
  const haveBase = previous.some((p) => p.base);
  // Each listing pass gets its own generation; until the run completes, it counts as partial.
  let nextGen = found.maxGen + 1;
  const runGens: number[] = [];
  const graveyard = dir.graveyard(nextGen);
  const run: StreamRun = { family, pk, countRows, dir, graveyard, stream: name, logger };
  // Objects at or before the cursor of the last complete listing that the diff shows as new or
  // changed arrived late (multipart uploads are dated when they start): they are read too.
  const snapshotCursor = haveBase && incremental ? (prior.snapshot_cursor ?? null) : null;
  let cursor: Cursor | null = incremental ? (prior.cursor ?? null) : null;
  let lateUpTo: Cursor | null = null;

  const stateNow = (final: boolean): AirbyteMessage => {
    const s: StreamState = final
      ? { cursor, family: settledFamily, snapshot_gen: runGens[runGens.length - 1], snapshot_cursor: cursor }
      : {
          cursor,
          family: settledFamily,
          ...(haveBase ? { snapshot_gen: base, snapshot_cursor: prior.snapshot_cursor ?? null } : {}),
          // For the record: the work directory's listings newer than the base are what counts.
          partial_gens: [...previous.filter((p) => !p.base).map((p) => genOf(p.path)), ...runGens],
        };
    return message.streamState(name, s as Record<string, unknown>);
  };

  const limit = config.max_pending_objects;
  let records = 0;
  let deletions = 0;
  let objects = 0;
  try {
    for (let pass = 1; ; pass++) {
      if (signal.aborted) return;
      const gen = nextGen++;
      const listingPath = dir.snapshotPath(gen);
      const unreadable = { count: 0, example: undefined as string | undefined };
      const listed = await writeListing(matching(client, config, rs, signal, unreadable), listingPath);
      runGens.push(gen);
      if (listed.resorted && pass === 1)
        logger.warn({ stream: name }, 'the S3 endpoint did not list keys in byte order; the listing was sorted in memory');
      if (unreadable.count && pass === 1) {
        logger.warn(
          { stream: name, objects: unreadable.count, example: unreadable.example },
          'objects of a kind format: auto does not read were skipped (e.g. PDF, images); narrow `globs`, or set `format` to read them anyway',
        );
      }

      let pending: Pending[] = [];
      let overflow = false;
      const trim = () => {
        pending.sort(comparePending);
        if (pending.length > limit) {
          pending = pending.slice(0, limit);
          overflow = true;
        }
      };
      // Earlier passes of this run count as earlier listings: what they emitted may be gone now.
      const earlier = [...previous, ...runGens.slice(0, -1).map((g) => ({ path: dir.snapshotPath(g), base: false }))];
      for await (const d of diffListings(earlier, listingPath)) {
        if (d.kind === 'deleted') {
          for await (const m of deletionsFor(d.key, d.etags, run)) {
            deletions++;
            yield m;
          }
          continue;
        }
        const c = cursorOf(d.cur);
        const isNew = !cursor || compareCursor(c, cursor) > 0;
        const unknownToBase = !d.base || d.base.etag !== d.cur.etag;
        const late =
          !isNew &&
          unknownToBase &&
          !!snapshotCursor &&
          compareCursor(c, snapshotCursor) <= 0 &&
          (!lateUpTo || compareCursor(c, lateUpTo) > 0);
        if (isNew || late) {
          pending.push({ ...d.cur, older: d.older, late });
          if (pending.length >= 2 * limit) trim();
        }
      }
      trim();
      if (pass === 1 && deletions) logger.info({ stream: name, deletions }, 'objects deleted since the last run');

      let sinceState = { records: 0, objects: 0, at: Date.now() };
      // Small documents are fetched a few at a time ahead of the one being emitted: a bucket of
      // many small files is bound by round trips, not bandwidth. Order is unchanged.
      const ahead = new Map<number, Promise<Fetched>>();
      for (let i = 0; i < pending.length; i++) {
        const o = pending[i];
        if (signal.aborted) return;
        if (family === 'text') {
          for (let j = i; j < Math.min(pending.length, i + PREFETCH_OBJECTS); j++) {
            const p = pending[j];
            if (!ahead.has(j) && p.size <= PREFETCH_MAX_BYTES) ahead.set(j, fetchText(client, config, p, signal));
          }
        }
        const prefetched = ahead.get(i);
        ahead.delete(i);
        const where = `object s3://${config.bucket}/${o.key}`;
        try {
          for await (const m of readObject(client, config, rs, o, run, signal, prefetched)) {
            if (m.type === 'RECORD') {
              records++;
              sinceState.records++;
            }
            yield m;
          }
        } catch (err) {
          throw withContext(err, where);
        }
        objects++;
        sinceState.objects++;
        if (o.late) lateUpTo = cursorOf(o);
        else cursor = cursorOf(o);
        if (
          sinceState.records >= STATE_EVERY_RECORDS ||
          sinceState.objects >= STATE_EVERY_OBJECTS ||
          Date.now() - sinceState.at >= STATE_EVERY_MS
        ) {
          yield stateNow(false);
          sinceState = { records: 0, objects: 0, at: Date.now() };
        }
      }
      if (!overflow) break;
      logger.info({ stream: name, objects }, `more than ${limit} changed objects: listing again for the next batch`);
    }
    await graveyard.close();
    yield stateNow(true);
    logger.info({ stream: name, objects, records, deletions }, 'S3 stream read');
    if (reportComplete) yield message.streamStatus(name, 'COMPLETE');
  } finally {
    await graveyard.close();
  }
}

const PREFETCH_OBJECTS = 8;
const PREFETCH_MAX_BYTES = 1024 * 1024;

type Fetched = { ok: true; content: string | undefined } | { ok: false; error: unknown };

function objectSource(client: S3Client, config: S3Config, o: ListedObject, signal: AbortSignal): ObjectSource {
  return {
    key: o.key,
    size: o.size,
    open: () => openObject(client, config.bucket, o.key, signal),
    ranged: () => rangeBuffer(client, config.bucket, o.key, o.size, signal),
  };
}

/** Never rejects, so a prefetch that is never awaited (abort, earlier error) is not an unhandled rejection. */
function fetchText(client: S3Client, config: S3Config, o: ListedObject, signal: AbortSignal): Promise<Fetched> {
  return readText(objectSource(client, config, o, signal), config.max_document_bytes).then(
    (content) => ({ ok: true as const, content }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function comparePending(a: Pending, b: Pending): number {
  return compareCursor(cursorOf(a), cursorOf(b));
}

/** What one stream's read shares with the per-object helpers. */
interface StreamRun {
  family: Family;
  pk: string[][];
  /** Rows are keyed by (object, row number): deleting an object deletes that many rows. */
  countRows: boolean;
  dir: StreamDir;
  graveyard: Graveyard;
  stream: string;
  logger: ConnectorContext['logger'];
}

async function* deletionsFor(key: string, etags: string[], run: StreamRun): AsyncGenerator<AirbyteMessage> {
  const { family, pk, countRows, dir, graveyard, stream, logger } = run;
  if (family === 'text') {
    yield message.deletion(
      stream,
      keyObject(
        pk,
        pk.map((p) => getPath({ key }, p)),
      ),
    );
    return;
  }
  yield* olderRowDeletions(key, etags, 0, pk, countRows, dir, graveyard, stream, logger);
}

/**
 * Deletes the rows an earlier version of an object produced (from row `from` on, for counted
 * rows). Returns false when there is no record of that version's rows.
 */
async function* rowDeletions(
  prev: { key: string; etag: string },
  from: number,
  pk: string[][],
  countRows: boolean,
  dir: StreamDir,
  graveyard: Graveyard,
  stream: string,
): AsyncGenerator<AirbyteMessage, boolean> {
  const file = dir.rowsPath(prev.key, prev.etag);
  if (!(await exists(file))) return false;
  if (countRows) {
    const count = (await readRowCount(file)) ?? 0;
    for (let i = from; i < count; i++) yield message.deletion(stream, { _s3_key: prev.key, _s3_row: i });
  } else {
    for await (const id of readRowIds(file)) yield message.deletion(stream, keyObject(pk, id as unknown[]));
  }
  await graveyard.add(file);
  return true;
}

/** Row deletions for every earlier version of an object; warns when none left a record. */
async function* olderRowDeletions(
  key: string,
  etags: string[],
  from: number,
  pk: string[][],
  countRows: boolean,
  dir: StreamDir,
  graveyard: Graveyard,
  stream: string,
  logger: ConnectorContext['logger'],
): AsyncGenerator<AirbyteMessage> {
  let found = false;
  for (const etag of etags) found = (yield* rowDeletions({ key, etag }, from, pk, countRows, dir, graveyard, stream)) || found;
  if (etags.length && !found) {
    logger.warn(
      { stream, key },
      'no record of the rows an earlier version of this object produced (work directory lost, or it was never read): rows it no longer has cannot be deleted downstream; a full refresh with overwrite fixes that',
    );
  }
}

async function* readObject(
  client: S3Client,
  config: S3Config,
  rs: ResolvedStream,
  o: Pending,
  run: StreamRun,
  signal: AbortSignal,
  prefetched?: Promise<Fetched>,
): AsyncGenerator<AirbyteMessage> {
  const { family, pk, countRows, dir, graveyard, stream, logger } = run;
  const format = formatOf(o.key, rs.format)!; // the listing kept only readable objects
  if (familyOf(format) !== family) {
    logger.warn(
      { stream, key: o.key, format },
      `skipped: this stream holds ${family === 'text' ? 'text documents' : 'structured rows'}; give ${format} objects their own stream (streams: [...] with globs)`,
    );
    return;
  }
  const src = objectSource(client, config, o, signal);
  if (family === 'text') {
    const fetched = await (prefetched ?? fetchText(client, config, o, signal));
    if (!fetched.ok) throw fetched.error;
    const content = fetched.content;
    if (content === undefined) {
      logger.warn(
        { stream, key: o.key, size: o.size },
        `skipped: larger than max_document_bytes (${config.max_document_bytes}); a document is held whole in memory`,
      );
      return;
    }
    yield message.record(stream, { key: o.key, content, last_modified: o.lastModified, size: o.size, etag: o.etag });
    return;
  }

  // With a user key, rows that vanished from a rewritten object are unknown until it is read
  // again, so its previous rows are deleted first; the rewrite follows before the next STATE, so
  // a transactional destination applies both at once.
  if (!countRows) yield* olderRowDeletions(o.key, o.older, 0, pk, false, dir, graveyard, stream, logger);

  const rows = new RowsWriter(dir.rowsPath(o.key, o.etag));
  let n = 0;
  try {
    for await (const row of parseRows(format, src, config)) {
      if (isBadRecord(row)) {
        // Counted as a row: the rows after it keep their numbers (default keys) when it is fixed.
        n++;
        yield message.recordError(stream, row.error);
        continue;
      }
      const data = { ...row, _s3_key: o.key, _s3_row: n };
      if (!countRows) {
        const id = pk.map((p) => getPath(data, p));
        if (id.some((v) => v === null || v === undefined)) {
          throw new SluiceError(`row ${n + 1} has no value for primary key ${pk.map((p) => p.join('.')).join(', ')}`, {
            kind: 'source',
            hint: 'check primary_key, or the data',
          });
        }
        await rows.add(id.map((v) => (typeof v === 'object' ? keyPart(v) : v)));
      }
      n++;
      yield message.record(stream, data);
    }
    await rows.finish(n, !countRows);
  } catch (err) {
    await rows.abort();
    throw err;
  }
  // Default keys are (object, row number): rows past the new end are the ones that vanished.
  if (countRows) yield* olderRowDeletions(o.key, o.older, n, pk, true, dir, graveyard, stream, logger);
}
