// Source `file`: a directory (or one file) of .md/.txt documents and .json/.jsonl/.csv data.
// Text files are one document each (id = relative path); data files give one record per
// line/row/element (id from the stream's primary_key). Incremental by modification time with
// ties broken by path; files that disappeared since the last run are reported as deletions.
import { closeSync, createReadStream, existsSync, openSync, readdirSync, readSync, statSync, type Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, extname, join, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { parse as parseCsv } from 'csv-parse';
import { glob } from 'tinyglobby';
import { z } from 'zod';
import type { ConnectorContext, Source, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { message, type AirbyteMessage, type ConfiguredCatalog } from '../../src/protocol/messages.ts';
import { badRecord, isBadRecord, type BadRecord } from '../../src/cdk/source.ts';
import { ReadAhead } from './read-ahead.ts';
import { ListingDir, byPath, diffListing, type ListedFile, type ListingEntry } from './listing.ts';

const TEXT_EXT = new Set(['.md', '.markdown', '.mdx', '.txt', '.rst']);
const DATA_EXT = new Set(['.json', '.jsonl', '.ndjson', '.csv']);
const READ_AHEAD_FILES = 16;
const READ_AHEAD_BYTES = 8 * 1024 * 1024;
/** Files up to this size may be read synchronously (see LocalIo). */
const SYNC_READ_MAX_BYTES = 1024 * 1024;
/** Runs with fewer files to read than this read them on the main thread (a worker costs ~20 ms to start). */
const WORKER_READ_MIN_FILES = 500;

export const FileSourceConfig = z.strictObject({
  path: z.string().min(1).describe('A directory or a single file; relative to the pipeline file'),
  include: z.array(z.string().min(1)).min(1).optional().describe('Globs relative to `path` (default: every supported file)'),
  exclude: z.array(z.string().min(1)).optional().describe('Globs to leave out'),
  stream: z.string().min(1).optional().describe('Stream name (default: the directory name)'),
  encoding: z.enum(['utf8', 'latin1']).default('utf8'),
  checkpoint_every: z.number().int().positive().default(1000).describe('Records between checkpoints'),
});
export type FileSourceConfig = z.infer<typeof FileSourceConfig>;

interface FileEntry extends ListingEntry {
  size: number;
}

type Cursor = { mtime_ms: number; path: string };

/**
 * Per-stream state: the (mtime, path) cursor, and the listing of the last complete run (a file in
 * the workDir, see listing.ts) with the cursor it ended at. Mid-run checkpoints add `progress`.
 */
interface FileState {
  cursor?: Cursor;
  progress?: Cursor;
  listing_gen?: number;
  listing_cursor?: Cursor;
  /** Every file seen with its mtime: how sluice ≤ 0.1 kept the listing. Read once, then replaced. */
  files?: Record<string, number>;
}

/**
 * Synchronous stat and read are several times cheaper than their thread-pool versions for small
 * files on a local disk. On a slow file system (a network mount) they would stall the whole
 * pipeline, so once calls are often slow the source switches to parallel asynchronous I/O. (A busy
 * machine makes the odd call slow too; that alone must not switch.)
 */
export class LocalIo {
  /** A synchronous call slower than this counts as slow (tests set it below 0 to force async I/O). */
  static slowCallMs = 2;
  private calls = 0;
  private slowCalls = 0;
  get sync() {
    return this.slowCalls < 8 || this.slowCalls * 10 < this.calls;
  }
  timed<T>(call: () => T): T {
    const started = performance.now();
    try {
      return call();
    } finally {
      this.calls++;
      if (performance.now() - started > LocalIo.slowCallMs) this.slowCalls++;
    }
  }
}

const streamName = (config: FileSourceConfig, ctx: ConnectorContext) => {
  if (config.stream !== undefined) return config.stream;
  const derived = basename(resolve(ctx.baseDir, config.path)).replace(/\.[^.]+$/, '') || 'files';
  // A name that is not valid UTF-8 (latin1 "caf\xe9") decodes with U+FFFD, which would end up in
  // table and collection names: refuse and ask for an explicit name instead.
  if (derived.includes('\uFFFD'))
    throw new SluiceError(`cannot derive a stream name from "${derived}": the name is not valid UTF-8`, {
      kind: 'config',
      where: 'source.config.path',
      hint: 'set source.config.stream to a name (e.g. stream: docs), or rename it to UTF-8 (convmv -f latin1 -t utf8)',
    });
  return derived;
};

/** Names that are not valid UTF-8 cannot be opened by their decoded name (U+FFFD): never skip them silently. */
function refuseUndecodableNames(root: string, names: string[]): void {
  const bad = names.filter((n) => n.includes('\uFFFD') && !existsSync(join(root, n)));
  if (!bad.length) return;
  throw new SluiceError(
    `${bad.length} file name${bad.length === 1 ? ' is' : 's are'} not valid UTF-8 and cannot be read: ${bad.slice(0, 3).join(', ')}${bad.length > 3 ? ', …' : ''}`,
    {
      kind: 'config',
      where: 'source.config.path',
      hint: 'rename them to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest -r <dir>), or leave them out with exclude:',
    },
  );
}

interface Listing {
  files: FileEntry[];
  /** Where a listed file is on disk. */
  pathOf(f: FileEntry): string;
}

/** The supported files under `path` (or `path` itself), by name only: what discover and check need. */
type Names = { root: string; single?: Stats; names: string[] };

/**
 * A sync discovers, then reads right away: the read reuses discover's directory walk (a snapshot
 * either way) instead of walking a large tree twice. Keyed by the config object, briefly.
 */
const recentWalks = new WeakMap<FileSourceConfig, { at: number; walk: Promise<Names> }>();
const WALK_REUSE_MS = 10_000;

function walkOnce(config: FileSourceConfig, ctx: ConnectorContext, reuse: boolean): Promise<Names> {
  const recent = recentWalks.get(config);
  if (reuse && recent && Date.now() - recent.at < WALK_REUSE_MS) {
    recentWalks.delete(config);
    return recent.walk;
  }
  const walk = listNames(config, ctx);
  recentWalks.set(config, { at: Date.now(), walk });
  return walk;
}

/**
 * Every file under `root` as glob('**' + '/*') finds it (regular files; no dot files or dot
 * directories; symbolic links not followed), without compiling and testing a pattern per file.
 */
export function walkAll(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, prefix: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // unreadable (or just removed): skipped, as glob does
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      if (e.isDirectory()) walk(join(dir, e.name), `${prefix}${e.name}/`);
      else if (e.isFile()) out.push(prefix + e.name);
    }
  };
  walk(root, '');
  return out;
}

async function listNames(config: FileSourceConfig, ctx: ConnectorContext): Promise<Names> {
  const root = resolve(ctx.baseDir, config.path);
  let st;
  try {
    st = await stat(root);
  } catch {
    throw new SluiceError(`path not found: ${root}`, {
      kind: 'config',
      where: 'source.config.path',
      hint: 'paths are relative to the pipeline file',
    });
  }
  if (st.isFile()) return { root, single: st, names: [basename(root)] };
  const names =
    config.include === undefined && !config.exclude?.length
      ? walkAll(root)
      : await glob(config.include ?? ['**/*'], {
          cwd: root,
          ignore: config.exclude ?? [],
          onlyFiles: true,
          dot: false,
          followSymbolicLinks: false,
        });
  const supported = names.filter((name) => {
    const ext = extname(name).toLowerCase();
    return TEXT_EXT.has(ext) || DATA_EXT.has(ext);
  });
  refuseUndecodableNames(root, supported);
  return { root, names: supported };
}

async function listFiles(config: FileSourceConfig, ctx: ConnectorContext, io = new LocalIo()): Promise<Listing> {
  const { root, single, names: wanted } = await walkOnce(config, ctx, true);
  if (single)
    return { files: [{ rel: wanted[0], mtimeMs: Math.floor(single.mtimeMs), size: single.size, changed: true }], pathOf: () => root };
  // Listed names are already normal relative paths (no '.', '..' or doubled separators): a plain
  // concatenation is what join() would return, without normalising every path again.
  const prefix = root.endsWith(sep) ? root : root + sep;
  const entries: FileEntry[] = [];
  const add = (name: string, s: Stats | undefined) => {
    // All fields set up front: objects of one shape, no per-object property store (large trees).
    if (s?.isFile())
      entries.push({ rel: sep === '/' ? name : name.split(sep).join('/'), mtimeMs: Math.floor(s.mtimeMs), size: s.size, changed: true });
  };
  let i = 0;
  while (i < wanted.length && io.sync) {
    const name = wanted[i++];
    add(
      name,
      io.timed(() => statSync(prefix + name, { throwIfNoEntry: false })),
    );
  }
  // Asynchronous stat goes in parallel batches: one at a time, a slow file system spends the
  // listing waiting on round trips.
  for (; i < wanted.length; i += 64) {
    const batch = wanted.slice(i, i + 64);
    const stats = await Promise.all(batch.map((name) => stat(prefix + name).catch(() => undefined)));
    batch.forEach((name, k) => add(name, stats[k]));
  }
  entries.sort((a, b) => a.mtimeMs - b.mtimeMs || byPath(a.rel, b.rel));
  return { files: entries, pathOf: (f) => prefix + f.rel };
}

const after = (f: FileEntry, c: FileState['cursor']) => !c || f.mtimeMs > c.mtime_ms || (f.mtimeMs === c.mtime_ms && f.rel > c.path);

const textRecord = (f: FileEntry, content: string) => ({
  path: f.rel,
  content,
  modified_at: new Date(f.mtimeMs).toISOString(),
  size: f.size,
});

/** One reusable buffer for synchronous reads of small files. */
let readBuffer = Buffer.allocUnsafe(64 * 1024);

/**
 * readFileSync(path, encoding) for a small file, into a reused buffer: no per-file buffer, no
 * options parsing, no fstat (the listing knows the size; a file that grew is still read to its end).
 */
export function readTextSync(path: string, encoding: BufferEncoding, sizeHint: number): string {
  const fd = openSync(path, 'r');
  try {
    if (readBuffer.length < sizeHint + 1) readBuffer = Buffer.allocUnsafe(Math.max(sizeHint + 1, readBuffer.length * 2));
    let n = 0;
    for (;;) {
      const k = readSync(fd, readBuffer, n, readBuffer.length - n, null);
      if (k === 0) break;
      n += k;
      if (n === readBuffer.length) {
        const bigger = Buffer.allocUnsafe(readBuffer.length * 2);
        readBuffer.copy(bigger, 0, 0, n);
        readBuffer = bigger;
      }
    }
    const text = readBuffer.toString(encoding, 0, n);
    // A one-off big file does not keep a big buffer alive.
    if (readBuffer.length > SYNC_READ_MAX_BYTES * 2) readBuffer = Buffer.allocUnsafe(64 * 1024);
    return text;
  } finally {
    closeSync(fd);
  }
}

/**
 * A file's records. Small text files on a fast disk are read by the caller instead (see read()).
 * A line or row that cannot be parsed is yielded as a BadRecord (the engine fails the run naming
 * it, or keeps it as a dead letter: errors.tolerance), and reading goes on with the next one.
 */
async function* recordsOf(
  f: FileEntry,
  abs: string,
  encoding: BufferEncoding,
  prefetched?: Promise<string>,
): AsyncGenerator<Record<string, unknown> | BadRecord> {
  const rel = f.rel;
  const ext = extname(rel).toLowerCase();
  const where = (n: number) => `file ${rel}${n ? `, line ${n}` : ''}`;
  if (TEXT_EXT.has(ext)) {
    yield textRecord(f, await (prefetched ?? readFile(abs, encoding)));
  } else if (ext === '.jsonl' || ext === '.ndjson') {
    let n = 0;
    for await (const line of createInterface({ input: createReadStream(abs, { encoding }), crlfDelay: Infinity })) {
      n++;
      if (!line.trim()) continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (err) {
        yield badRecord(where(n), `invalid JSON: ${(err as Error).message}`, line, 'fix the line or exclude the file');
        continue;
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        yield badRecord(where(n), 'expected a JSON object per line', line, 'fix the line or exclude the file');
        continue;
      }
      yield v as Record<string, unknown>;
    }
  } else if (ext === '.csv') {
    // A row with the wrong column count (or an unclosed quote) is skipped by the parser and handed
    // on in its place: rows and skipped rows come out in line order.
    const skipped: BadRecord[] = [];
    const skippedLine: number[] = [];
    const parser = createReadStream(abs, { encoding }).pipe(
      parseCsv({
        columns: true,
        skip_empty_lines: true,
        bom: true,
        relax_column_count: false,
        info: true,
        raw: true,
        skip_records_with_error: true,
        on_skip: (err, raw) => {
          skipped.push(
            badRecord(
              where(Number(err?.lines ?? 0)),
              `invalid CSV: ${err?.message ?? 'unreadable row'}`,
              raw,
              'fix the row or exclude the file',
            ),
          );
          skippedLine.push(Number(err?.lines ?? 0));
          return undefined;
        },
      }),
    );
    try {
      for await (const row of parser as AsyncIterable<{ record: Record<string, unknown>; info: { lines: number } }>) {
        while (skippedLine.length && skippedLine[0] < row.info.lines) {
          skippedLine.shift();
          yield skipped.shift()!;
        }
        yield row.record;
      }
    } catch (err) {
      throw new SluiceError(`invalid CSV: ${(err as Error).message}`, { kind: 'source', where: where(0) });
    }
    yield* skipped.splice(0);
  } else if (ext === '.json') {
    const text = await readFile(abs, encoding);
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (err) {
      // The whole file is one unreadable record.
      yield badRecord(where(0), `invalid JSON: ${(err as Error).message}`, text, 'fix the file or exclude it');
      return;
    }
    let i = 0;
    for (const item of Array.isArray(v) ? v : [v]) {
      i++;
      if (item === null || typeof item !== 'object' || Array.isArray(item)) {
        yield badRecord(`${where(0)}, element ${i}`, 'expected JSON objects', JSON.stringify(item) ?? String(item));
        continue;
      }
      yield item as Record<string, unknown>;
    }
  }
}

const source: Source<FileSourceConfig> = {
  kind: 'source',
  spec: {
    name: 'file',
    title: 'Local files',
    description: 'Markdown/text documents and JSON, JSONL or CSV data from a directory',
    config: FileSourceConfig,
  },
  capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true, offlineDiscover: true },

  async check(config, ctx) {
    try {
      const { names } = await listNames(config, ctx);
      return { ok: true, message: `${names.length} file(s) found` };
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  },

  async discover(config, ctx) {
    const names = await walkOnce(config, ctx, false).then(
      (l) => l.names,
      () => [] as string[],
    );
    const textOnly = names.every((name) => TEXT_EXT.has(extname(name).toLowerCase()));
    return {
      streams: [
        {
          name: streamName(config, ctx),
          json_schema: textOnly
            ? {
                type: 'object',
                properties: {
                  path: { type: 'string' },
                  content: { type: 'string' },
                  modified_at: { type: 'string', format: 'date-time' },
                  size: { type: 'integer' },
                },
                required: ['path', 'content'],
                // No file yet: data files may still come, so the fields are not known to be only these.
                ...(names.length ? {} : { additionalProperties: true }),
              }
            : { type: 'object', additionalProperties: true },
          supported_sync_modes: ['full_refresh', 'incremental'],
          source_defined_cursor: true,
          default_cursor_field: ['modified_at'],
          ...(textOnly ? { source_defined_primary_key: [['path']] } : {}),
        },
      ],
    };
  },

  async *read(config, catalog: ConfiguredCatalog, state: SourceState | undefined, ctx): AsyncGenerator<AirbyteMessage> {
    const name = streamName(config, ctx);
    const configured = catalog.streams.find((s) => s.stream.name === name);
    if (!configured) return;
    const previous = (state?.streams[name] ?? {}) as FileState;
    const incremental = configured.sync_mode === 'incremental';
    const io = new LocalIo();
    const { files, pathOf } = await listFiles(config, ctx, io);
    yield message.streamStatus(name, 'STARTED');
    yield message.estimate(
      name,
      files.length,
      files.reduce((n, f) => n + f.size, 0),
    );

    // The listing this run starts from, diffed against the last complete run's (deletions, and
    // files changed or copied in with an old mtime). Written now, named in the state at the end.
    const listings = new ListingDir(ctx.workDir, name);
    const baseGen = previous.files ? undefined : previous.listing_gen;
    const gen = await listings.prepare(baseGen);
    let byRel: FileEntry[] | undefined = [...files].sort((a, b) => byPath(a.rel, b.rel));
    let base: Iterable<readonly ListedFile[]> | AsyncIterable<readonly ListedFile[]> | undefined = [];
    if (previous.files)
      base = [Object.entries(previous.files).sort(([a], [b]) => byPath(a, b))]; // state of sluice ≤ 0.1
    else if (baseGen !== undefined) {
      if (await listings.exists(baseGen)) base = listings.read(baseGen);
      else {
        // Without it only the cursor says what is new: nothing counts as changed, nothing as gone.
        base = undefined;
        for (const f of byRel) f.changed = false;
        ctx.logger.warn(
          { stream: name, dir: listings.dir },
          'the previous file listing is missing from the work directory: files deleted since the last run cannot be detected this time (they will be from the next run on)',
        );
      }
    }
    // Deletions first: a file that disappeared must not linger downstream, in any mode.
    let gone = 0;
    if (base) {
      for await (const rel of diffListing(base, byRel)) {
        gone++;
        if (TEXT_EXT.has(extname(rel).toLowerCase())) yield message.deletion(name, { path: rel });
      }
    }
    // An unchanged directory keeps its listing (when it has one): nothing to write.
    const listingGen =
      baseGen !== undefined && base !== undefined && !previous.files && !gone && !byRel.some((f) => f.changed) ? baseGen : gen;
    if (listingGen === gen) await listings.write(gen, byRel);
    byRel = undefined; // no longer needed: memory goes to the pipeline

    // Incremental: after the cursor of the last complete run, or changed since its listing; and
    // after `progress`, the last file a crashed run of this listing got through. Files come in
    // (mtime, path) order, so late files (old mtime) all come before the new ones and `progress`
    // alone says which of both were done.
    const baseCursor = previous.files ? previous.cursor : previous.listing_cursor;
    const progress = incremental && !previous.files ? previous.progress : undefined;
    const todo = incremental ? files.filter((f) => (f.changed || after(f, baseCursor)) && after(f, progress)) : files;
    let cursor = incremental ? previous.cursor : undefined;
    let done = progress;
    // Mid-run checkpoints name the base listing; only the last one names this run's.
    const checkpoint = (final: boolean) => {
      const s: FileState = final
        ? { ...(cursor ? { cursor } : {}), listing_gen: listingGen, ...(cursor ? { listing_cursor: cursor } : {}) }
        : {
            ...(cursor ? { cursor } : {}),
            ...(incremental && done ? { progress: done } : {}),
            ...(baseGen !== undefined ? { listing_gen: baseGen } : {}),
            ...(baseCursor ? { listing_cursor: baseCursor } : {}),
          };
      return message.streamState(name, s as Record<string, unknown>);
    };
    let sinceCheckpoint = 0;
    // With asynchronous I/O, text files are prefetched a few ahead (bounded by count and bytes):
    // one at a time, the pipeline mostly waits on open/read/close round trips.
    const ahead = new Map<number, Promise<string>>();
    let aheadBytes = 0;
    const prefetch = (from: number) => {
      for (let j = from; j < Math.min(todo.length, from + READ_AHEAD_FILES) && aheadBytes < READ_AHEAD_BYTES; j++) {
        const f = todo[j];
        if (ahead.has(j) || !TEXT_EXT.has(extname(f.rel).toLowerCase())) continue;
        const p = readFile(pathOf(f), config.encoding);
        p.catch(() => undefined); // surfaced when the file's turn comes
        ahead.set(j, p);
        aheadBytes += f.size;
      }
    };
    // On a fast local disk, many small text files are read ahead on a worker thread.
    const small = (f: FileEntry) => f.size <= SYNC_READ_MAX_BYTES && TEXT_EXT.has(extname(f.rel).toLowerCase());
    const worker =
      io.sync && todo.length >= WORKER_READ_MIN_FILES
        ? new ReadAhead(todo.length, (i) => ({ path: pathOf(todo[i]), size: todo[i].size, eligible: small(todo[i]) }), config.encoding)
        : undefined;
    try {
      for (const [i, f] of todo.entries()) {
        if (ctx.signal.aborted) return;
        // (Reader threads, once started, keep reading ahead even if the disk turns slow.)
        if (!io.sync && !worker) prefetch(i);
        const prefetched = ahead.get(i);
        if (prefetched) {
          ahead.delete(i);
          aheadBytes -= f.size;
        }
        const content = worker ? await worker.take(i) : undefined;
        if (content !== undefined) {
          yield message.record(name, textRecord(f, content));
          sinceCheckpoint++;
        } else if (!prefetched && io.sync && small(f)) {
          // The common case, without a generator per file.
          const abs = pathOf(f);
          yield message.record(
            name,
            textRecord(
              f,
              io.timed(() => readTextSync(abs, config.encoding, f.size)),
            ),
          );
          sinceCheckpoint++;
        } else {
          for await (const data of recordsOf(f, pathOf(f), config.encoding, prefetched)) {
            yield isBadRecord(data) ? message.recordError(name, data.error) : message.record(name, data);
            sinceCheckpoint++;
          }
        }
        done = { mtime_ms: f.mtimeMs, path: f.rel };
        if (!cursor || after(f, cursor)) cursor = done;
        if (sinceCheckpoint >= config.checkpoint_every) {
          sinceCheckpoint = 0;
          yield checkpoint(false);
        }
      }
    } finally {
      await worker?.close();
    }
    yield checkpoint(true);
    yield message.streamStatus(name, 'COMPLETE');
  },
};

export default source;
