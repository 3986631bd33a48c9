// Source `file`: a directory (or one file) of .md/.txt documents and .json/.jsonl/.csv data.
// Text files are one document each (id = relative path); data files give one record per
// line/row/element (id from the stream's primary_key). Incremental by modification time with
// ties broken by path; files that disappeared since the last run are reported as deletions.
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, extname, join, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { parse as parseCsv } from 'csv-parse';
import { glob } from 'tinyglobby';
import { z } from 'zod';
import type { ConnectorContext, Source, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { message, type AirbyteMessage, type ConfiguredCatalog } from '../../src/protocol/messages.ts';

const TEXT_EXT = new Set(['.md', '.markdown', '.mdx', '.txt', '.rst']);
const DATA_EXT = new Set(['.json', '.jsonl', '.ndjson', '.csv']);
const READ_AHEAD_FILES = 16;
const READ_AHEAD_BYTES = 8 * 1024 * 1024;

export const FileSourceConfig = z.strictObject({
  path: z.string().min(1).describe('A directory or a single file; relative to the pipeline file'),
  include: z.array(z.string().min(1)).min(1).optional().describe('Globs relative to `path` (default: every supported file)'),
  exclude: z.array(z.string().min(1)).optional().describe('Globs to leave out'),
  stream: z.string().min(1).optional().describe('Stream name (default: the directory name)'),
  encoding: z.enum(['utf8', 'latin1']).default('utf8'),
  checkpoint_every: z.number().int().positive().default(1000).describe('Records between checkpoints'),
});
export type FileSourceConfig = z.infer<typeof FileSourceConfig>;

interface FileEntry {
  rel: string;
  abs: string;
  mtimeMs: number;
  size: number;
}

/** Per-stream state: the (mtime, path) cursor and every file seen, with its mtime, for deletions. */
interface FileState {
  cursor?: { mtime_ms: number; path: string };
  files?: Record<string, number>;
}

const streamName = (config: FileSourceConfig, ctx: ConnectorContext) =>
  config.stream ?? (basename(resolve(ctx.baseDir, config.path)).replace(/\.[^.]+$/, '') || 'files');

async function listFiles(config: FileSourceConfig, ctx: ConnectorContext): Promise<FileEntry[]> {
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
  if (st.isFile()) return [{ rel: basename(root), abs: root, mtimeMs: Math.floor(st.mtimeMs), size: st.size }];
  const patterns = config.include ?? ['**/*'];
  const names = await glob(patterns, { cwd: root, ignore: config.exclude ?? [], onlyFiles: true, dot: false, followSymbolicLinks: false });
  const entries: FileEntry[] = [];
  const wanted = names.filter((name) => TEXT_EXT.has(extname(name).toLowerCase()) || DATA_EXT.has(extname(name).toLowerCase()));
  // stat in parallel batches: one at a time, a large tree spends its listing waiting on round trips.
  for (let i = 0; i < wanted.length; i += 64) {
    const batch = wanted.slice(i, i + 64);
    const stats = await Promise.all(batch.map((name) => stat(join(root, name)).catch(() => undefined)));
    batch.forEach((name, k) => {
      const s = stats[k];
      if (s?.isFile())
        entries.push({ rel: name.split(sep).join('/'), abs: join(root, name), mtimeMs: Math.floor(s.mtimeMs), size: s.size });
    });
  }
  return entries.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

const after = (f: FileEntry, c: FileState['cursor']) => !c || f.mtimeMs > c.mtime_ms || (f.mtimeMs === c.mtime_ms && f.rel > c.path);

async function* recordsOf(f: FileEntry, encoding: BufferEncoding, prefetched?: Promise<string>): AsyncGenerator<Record<string, unknown>> {
  const ext = extname(f.rel).toLowerCase();
  const where = (n: number) => `file ${f.rel}${n ? `, line ${n}` : ''}`;
  if (TEXT_EXT.has(ext)) {
    const content = await (prefetched ?? readFile(f.abs, encoding));
    yield { path: f.rel, content, modified_at: new Date(f.mtimeMs).toISOString(), size: f.size };
  } else if (ext === '.jsonl' || ext === '.ndjson') {
    let n = 0;
    for await (const line of createInterface({ input: createReadStream(f.abs, { encoding }), crlfDelay: Infinity })) {
      n++;
      if (!line.trim()) continue;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (err) {
        throw new SluiceError(`invalid JSON: ${(err as Error).message}`, {
          kind: 'source',
          where: where(n),
          hint: 'fix the line or exclude the file',
        });
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        throw new SluiceError('expected a JSON object per line', { kind: 'source', where: where(n) });
      yield v as Record<string, unknown>;
    }
  } else if (ext === '.csv') {
    const parser = createReadStream(f.abs, { encoding }).pipe(
      parseCsv({ columns: true, skip_empty_lines: true, bom: true, relax_column_count: false }),
    );
    try {
      for await (const row of parser) yield row as Record<string, unknown>;
    } catch (err) {
      throw new SluiceError(`invalid CSV: ${(err as Error).message}`, { kind: 'source', where: where(0) });
    }
  } else if (ext === '.json') {
    let v: unknown;
    try {
      v = JSON.parse(await readFile(f.abs, encoding));
    } catch (err) {
      throw new SluiceError(`invalid JSON: ${(err as Error).message}`, { kind: 'source', where: where(0) });
    }
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item === null || typeof item !== 'object' || Array.isArray(item))
        throw new SluiceError('expected JSON objects', { kind: 'source', where: where(0) });
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
  capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true },

  async check(config, ctx) {
    try {
      const files = await listFiles(config, ctx);
      return { ok: true, message: `${files.length} file(s) found` };
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  },

  async discover(config, ctx) {
    const files = await listFiles(config, ctx).catch(() => [] as FileEntry[]);
    const textOnly = files.every((f) => TEXT_EXT.has(extname(f.rel).toLowerCase()));
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
    const known = previous.files ?? {};
    const incremental = configured.sync_mode === 'incremental';
    const files = await listFiles(config, ctx);
    yield message.streamStatus(name, 'STARTED');
    yield message.estimate(
      name,
      files.length,
      files.reduce((n, f) => n + f.size, 0),
    );

    // Deletions first: a file that disappeared must not linger downstream, in any mode.
    const present = new Set(files.map((f) => f.rel));
    for (const rel of Object.keys(known)) {
      if (!present.has(rel) && TEXT_EXT.has(extname(rel).toLowerCase())) yield message.deletion(name, { path: rel });
    }
    const seen: Record<string, number> = Object.fromEntries(Object.entries(known).filter(([rel]) => present.has(rel)));
    let cursor = incremental ? previous.cursor : undefined;
    // A snapshot per checkpoint: `seen` keeps growing after a state is emitted, and a state must
    // claim exactly what was read before it (resume without loss or repeats).
    const checkpoint = () => message.streamState(name, { ...(cursor ? { cursor } : {}), files: { ...seen } });
    let sinceCheckpoint = 0;
    // Incremental: newer than the cursor, or a file we never saw (copied in with an old mtime), or changed.
    const todo = files.filter((f) => !incremental || after(f, previous.cursor) || known[f.rel] !== f.mtimeMs);
    // Small text files are read a few ahead (bounded by count and bytes): one at a time, the
    // pipeline mostly waits on open/read/close round trips.
    const ahead = new Map<number, Promise<string>>();
    let aheadBytes = 0;
    const readAhead = (from: number) => {
      for (let j = from; j < Math.min(todo.length, from + READ_AHEAD_FILES) && aheadBytes < READ_AHEAD_BYTES; j++) {
        const f = todo[j];
        if (ahead.has(j) || !TEXT_EXT.has(extname(f.rel).toLowerCase())) continue;
        const p = readFile(f.abs, config.encoding);
        p.catch(() => undefined); // surfaced when the file's turn comes
        ahead.set(j, p);
        aheadBytes += f.size;
      }
    };
    for (const [i, f] of todo.entries()) {
      if (ctx.signal.aborted) return;
      readAhead(i);
      const prefetched = ahead.get(i);
      if (prefetched) {
        ahead.delete(i);
        aheadBytes -= f.size;
      }
      for await (const data of recordsOf(f, config.encoding, prefetched)) {
        yield message.record(name, data);
        sinceCheckpoint++;
      }
      seen[f.rel] = f.mtimeMs;
      if (!cursor || after(f, cursor)) cursor = { mtime_ms: f.mtimeMs, path: f.rel };
      if (sinceCheckpoint >= config.checkpoint_every) {
        sinceCheckpoint = 0;
        yield checkpoint();
      }
    }
    yield checkpoint();
    yield message.streamStatus(name, 'COMPLETE');
  },
};

export default source;
