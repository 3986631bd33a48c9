// Destination `jsonl`: the materialised chunks of every stream in one JSON-lines file. A debugging
// destination and the engine's real test double: it honours overwrite, append, append_dedup and
// deletes, and each commit replaces the file atomically (temp file, fsync, rename).
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { z } from 'zod';
import type { Chunk, Destination, DestinationEvent, DestinationMessage, DestinationStream } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { hasPreviousFile, rollbackFile, switchFile } from './generations.ts';

export const JsonlDestinationConfig = z.strictObject({
  path: z.string().min(1).describe('Output file; relative to the pipeline file'),
  include_embeddings: z.boolean().default(true).describe('Write vectors (large) into each line'),
  batch_records: z.number().int().positive().default(5000).describe('Documents buffered before an intermediate commit'),
});
export type JsonlDestinationConfig = z.infer<typeof JsonlDestinationConfig>;

/** One line of the output file. */
export interface JsonlChunkLine {
  stream: string;
  id: string;
  document_id: string;
  chunk_index: number;
  content: string;
  content_hash: string;
  metadata: Record<string, unknown>;
  embedding?: number[];
}

type Pending = Map<string, Chunk[] | null>; // document id → new chunks (null = delete)

class JsonlWriter {
  private pending = new Map<string, Pending>(); // stream → documents
  private appendOnly = new Map<string, Chunk[]>(); // stream → chunks upserted by id (append)
  private overwriteStaging = new Map<string, string>(); // stream → staging file of the new generation
  private pendingDocs = 0;
  private readonly modes: Map<string, DestinationStream['destinationSyncMode']>;
  /** Reindex: what each stream's new generation holds, its completion, and the state to commit with the switch. */
  private readonly reindexed = new Map<string, { records: number; written: number; complete: boolean }>();
  private reindexState: Extract<DestinationMessage, { type: 'STATE' }> | undefined;

  constructor(
    private readonly file: string,
    private readonly config: JsonlDestinationConfig,
    streams: DestinationStream[],
    private readonly reindex?: { keepPrevious: boolean },
  ) {
    for (const s of streams) if (reindex) this.reindexed.set(s.name, { records: 0, written: 0, complete: false });
    this.modes = new Map(streams.map((s) => [s.name, s.destinationSyncMode]));
  }

  async *write(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationEvent> {
    if (this.reindex) return yield* this.writeReindex(input);
    for await (const m of input) {
      if (m.type === 'DOCUMENT' || m.type === 'DELETE') {
        const mode = this.modes.get(m.stream);
        if (mode === 'overwrite') {
          if (m.type === 'DOCUMENT') await this.stage(m.stream, m.chunks);
          this.pendingDocs++;
        } else if (mode === 'append' && m.type === 'DOCUMENT') {
          const list = this.appendOnly.get(m.stream) ?? [];
          list.push(...m.chunks);
          this.appendOnly.set(m.stream, list);
          this.pendingDocs++;
        } else {
          // A DELETE also drops what this batch appended for the document before it.
          const appended = m.type === 'DELETE' ? this.appendOnly.get(m.stream) : undefined;
          if (appended)
            this.appendOnly.set(
              m.stream,
              appended.filter((c) => c.documentId !== m.documentId),
            );
          const docs = this.pending.get(m.stream) ?? new Map();
          docs.set(m.documentId, m.type === 'DOCUMENT' ? m.chunks : null);
          this.pending.set(m.stream, docs);
          this.pendingDocs++;
        }
        if (this.pendingDocs >= this.config.batch_records) yield* this.flush();
      } else if (m.type === 'STATE') {
        yield* this.flush();
        yield { type: 'STATE_COMMITTED', state: m.state, connection: m.connection };
      } else if (m.type === 'STREAM_COMPLETE') {
        if (this.modes.get(m.stream) === 'overwrite') {
          await this.stage(m.stream, []); // an empty generation still replaces the old one
          yield* this.flush(m.stream);
        }
      }
    }
    yield* this.flush();
  }

  /** Every stream to a staged generation; all switch in one rename at the end when every one completed. */
  private async *writeReindex(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationEvent> {
    try {
      for await (const m of input) {
        const r = 'stream' in m ? this.reindexed.get(m.stream) : undefined;
        if (m.type === 'DOCUMENT' && r) {
          await this.stage(m.stream, m.chunks);
          r.records++;
          r.written += m.chunks.length;
        } else if (m.type === 'STREAM_COMPLETE' && r) {
          await this.stage(m.stream, []);
          r.complete = true;
        } else if (m.type === 'STATE') this.reindexState = m; // committed with the switch only
      }
      if (![...this.reindexed.values()].every((r) => r.complete)) return; // interrupted: the old file stays
      await switchFile(this.file, this.overwriteStaging, this.reindex!.keepPrevious);
      this.overwriteStaging.clear();
      for (const [stream, r] of this.reindexed)
        yield { type: 'WRITTEN', stream, records: r.records, chunksWritten: r.written, chunksDeleted: 0 };
      if (this.reindexState) yield { type: 'STATE_COMMITTED', state: this.reindexState.state, connection: this.reindexState.connection };
    } finally {
      for (const staged of this.overwriteStaging.values()) await rm(staged, { force: true });
    }
  }

  private line(stream: string, c: Chunk): string {
    const l: JsonlChunkLine = {
      stream,
      id: c.id,
      document_id: c.documentId,
      chunk_index: c.chunkIndex,
      content: c.content,
      content_hash: c.contentHash,
      metadata: c.metadata,
      ...(this.config.include_embeddings && c.embedding ? { embedding: Array.from(c.embedding) } : {}),
    };
    return JSON.stringify(l) + '\n';
  }

  /** The new generation of an overwrite stream goes to a side file until the stream completes. */
  private async stage(stream: string, chunks: Chunk[]) {
    let staging = this.overwriteStaging.get(stream);
    if (!staging) {
      staging = `${this.file}.${encodeURIComponent(stream)}.next`;
      await rm(staging, { force: true });
      this.overwriteStaging.set(stream, staging);
    }
    if (!chunks.length) return;
    const h = await open(staging, 'a');
    try {
      await h.writeFile(chunks.map((c) => this.line(stream, c)).join(''));
    } finally {
      await h.close();
    }
  }

  /**
   * Rewrites the file: old lines minus replaced/deleted documents, plus new chunks; with
   * `switchStream`, that stream's lines are replaced by its staged generation.
   */
  private async *flush(switchStream?: string): AsyncGenerator<DestinationEvent> {
    const staged = switchStream ? this.overwriteStaging.get(switchStream) : undefined;
    if (!this.pending.size && !this.appendOnly.size && !staged) return;
    const counts = new Map<string, { records: number; written: number; deleted: number }>();
    const count = (s: string) => counts.get(s) ?? (counts.set(s, { records: 0, written: 0, deleted: 0 }), counts.get(s)!);
    const newIds = new Map<string, Set<string>>();
    for (const [s, docs] of this.pending) {
      const ids = new Set<string>();
      for (const chunks of docs.values()) {
        count(s).records++;
        for (const c of chunks ?? []) ids.add(c.id);
      }
      newIds.set(s, ids);
    }
    const appendIds = new Map<string, Set<string>>();
    for (const [s, chunks] of this.appendOnly) {
      const ids = newIds.get(s) ?? new Set<string>();
      const own = new Set<string>();
      for (const c of chunks) {
        ids.add(c.id);
        own.add(c.id);
      }
      newIds.set(s, ids);
      appendIds.set(s, own);
    }

    await mkdir(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    const out = createWriteStream(tmp);
    const put = async (text: string) => {
      if (!out.write(text)) await once(out, 'drain');
    };
    if (await exists(this.file)) {
      for await (const raw of createInterface({ input: createReadStream(this.file, 'utf8'), crlfDelay: Infinity })) {
        if (!raw) continue;
        const l = JSON.parse(raw) as JsonlChunkLine;
        if (switchStream && l.stream === switchStream) continue;
        const docs = this.pending.get(l.stream);
        const replaced = docs?.has(l.document_id) || appendIds.get(l.stream)?.has(l.id);
        if (replaced) {
          if (!newIds.get(l.stream)?.has(l.id)) count(l.stream).deleted++;
          continue;
        }
        await put(raw + '\n');
      }
    }
    for (const [s, docs] of this.pending) {
      for (const chunks of docs.values())
        for (const c of chunks ?? []) {
          await put(this.line(s, c));
          count(s).written++;
        }
    }
    for (const [s, chunks] of this.appendOnly) {
      const byId = new Map(chunks.map((c) => [c.id, c]));
      for (const c of byId.values()) await put(this.line(s, c));
      count(s).records += chunks.length ? new Set(chunks.map((c) => c.documentId)).size : 0;
      count(s).written += byId.size;
    }
    if (staged && switchStream && (await exists(staged))) {
      for await (const raw of createInterface({ input: createReadStream(staged, 'utf8'), crlfDelay: Infinity })) {
        if (!raw) continue;
        await put(raw + '\n');
        count(switchStream).written++;
      }
    }
    out.end();
    await once(out, 'finish');
    const h = await open(tmp, 'r+');
    await h.sync();
    await h.close();
    await rename(tmp, this.file);
    if (staged) {
      await rm(staged, { force: true });
      this.overwriteStaging.delete(switchStream!);
    }
    this.pending.clear();
    this.appendOnly.clear();
    this.pendingDocs = 0;
    for (const [stream, c] of counts)
      yield { type: 'WRITTEN', stream, records: c.records, chunksWritten: c.written, chunksDeleted: c.deleted };
  }
}

async function exists(file: string) {
  return stat(file).then(
    () => true,
    () => false,
  );
}

const destination: Destination<JsonlDestinationConfig> = {
  kind: 'destination',
  spec: {
    name: 'jsonl',
    title: 'JSON lines file',
    description: 'Chunks (and vectors) as JSON lines, for debugging and tests',
    config: JsonlDestinationConfig,
  },
  capabilities: { destinationSyncModes: ['overwrite', 'append', 'append_dedup'], vectors: false },

  async check(config, ctx) {
    const file = resolve(ctx.baseDir, config.path);
    try {
      await mkdir(dirname(file), { recursive: true });
      return { ok: true, message: `writing to ${file}` };
    } catch (err) {
      return { ok: false, message: `cannot create ${dirname(file)}: ${(err as Error).message}` };
    }
  },

  async open(config, ctx, options) {
    const file = resolve(ctx.baseDir, config.path);
    try {
      await mkdir(dirname(file), { recursive: true });
    } catch (err) {
      throw new SluiceError(`cannot create the output directory ${dirname(file)}: ${(err as Error).message}`, { kind: 'destination' });
    }
    const writer = new JsonlWriter(file, config, options.streams, options.reindex);
    return { write: (input) => writer.write(input), close: async () => undefined };
  },

  // `sluice reindex`: one rename switches every stream; --keep-previous keeps the old file as <path>.previous.
  reindex: {
    hasPrevious: (config, ctx) => hasPreviousFile(resolve(ctx.baseDir, config.path)),
    rollback: (config, ctx) => rollbackFile(resolve(ctx.baseDir, config.path)),
  },

  /** The conformance kit writes to a file of its own beside the configured one, removed afterwards. */
  async sandbox(config, ctx, id) {
    const path = join(dirname(config.path), `.sluice-conformance-${id}.jsonl`);
    const file = resolve(ctx.baseDir, path);
    return {
      config: { ...config, path },
      async remove() {
        const dir = dirname(file);
        const mine = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.startsWith(basename(file)));
        for (const f of mine) await rm(join(dir, f), { force: true });
      },
    };
  },

  async readBack(config, ctx, stream) {
    const file = resolve(ctx.baseDir, config.path);
    if (!(await exists(file))) return [];
    const out: { documentId: string; chunkIndex: number; content: string }[] = [];
    for await (const raw of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) {
      if (!raw) continue;
      const l = JSON.parse(raw) as JsonlChunkLine;
      if (l.stream === stream) out.push({ documentId: l.document_id, chunkIndex: l.chunk_index, content: l.content });
    }
    return out;
  },
};

export default destination;
