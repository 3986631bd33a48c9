// Destination `jsonl`: the materialised chunks of every stream in one JSON-lines file. A debugging
// destination and the engine's real test double: it honours overwrite, append, append_dedup and
// deletes, and each commit replaces the file atomically (temp file, fsync, rename).
//
// Fingerprints (docs/fingerprints.md): every chunk line carries its document's fingerprint, so the
// file stays the single source of truth and a commit changes data and fingerprints together. A
// commit that would change nothing (a generation of KEEPs only, the deletion of documents that are
// not there) leaves the file untouched: same inode, same mtime.
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { z } from 'zod';
import type {
  Chunk,
  ConnectorContext,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  DocumentFingerprint,
  StoredDocument,
} from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { scanChunks } from './scan.ts';
import { hasPreviousFile, rollbackFile, switchFile } from './generations.ts';
import { lineHead, lineWithoutEmbedding } from './lines.ts';

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
  /**
   * The document's fingerprint, on each of its lines (absent when the engine sent none), with the
   * tag of the embedder that made its vectors (`embedder`; absent on lines written before it was kept)
   * and the source digest of its row (`source`, when the source gave one).
   */
  fingerprint?: DocumentFingerprint;
  embedding?: number[];
}

/** A DOCUMENT waiting for the next commit. */
interface PendingDoc {
  chunks: Chunk[];
  fingerprint?: DocumentFingerprint;
  /** Only metadata changed: the stored lines keep their text and vectors. */
  metadataOnly: boolean;
}
type Pending = Map<string, PendingDoc | null>; // document id → new version (null = delete)

/**
 * The new generation of an overwrite stream while it loads: new documents go to a staging file,
 * unchanged (KEEP) and metadata-only documents are carried over from the live lines at the switch.
 * Only their ids (and new metadata) are held here.
 */
interface Generation {
  staging: string;
  stagedLines: number;
  /** DOCUMENTs of the generation, reported as records written at the switch (KEEPs are not writes). */
  records: number;
  carried: Map<string, 'keep' | 'staged' | PendingDoc>;
}

class JsonlWriter {
  private pending = new Map<string, Pending>(); // stream → documents
  private appendOnly = new Map<string, { chunk: Chunk; doc: PendingDoc }[]>(); // stream → chunks upserted by id (append)
  private generations = new Map<string, Generation>(); // overwrite stream → its new generation
  private index?: { key: string; docs: Map<string, Map<string, DocumentFingerprint | null>> };
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
      if (m.type === 'DOCUMENT' || m.type === 'DELETE' || m.type === 'KEEP') {
        const mode = this.modes.get(m.stream);
        const doc: PendingDoc | undefined =
          m.type === 'DOCUMENT' ? { chunks: m.chunks, fingerprint: m.fingerprint, metadataOnly: m.metadataOnly === true } : undefined;
        if (mode === 'overwrite') {
          const gen = await this.generation(m.stream);
          if (m.type === 'DELETE') {
            if (gen.carried.get(m.documentId) !== 'staged') gen.carried.delete(m.documentId);
          } else if (m.type === 'KEEP') {
            if (gen.carried.get(m.documentId) !== 'staged') gen.carried.set(m.documentId, 'keep');
          } else if (doc!.metadataOnly) {
            gen.carried.set(m.documentId, doc!);
            gen.records++;
          } else {
            await this.stage(m.stream, gen, doc!);
            gen.carried.set(m.documentId, 'staged');
            gen.records++;
          }
          this.pendingDocs++;
        } else if (m.type === 'KEEP') {
          // KEEP is for overwrite streams; elsewhere the stored document already is what it says.
        } else if (mode === 'append' && m.type === 'DOCUMENT') {
          const list = this.appendOnly.get(m.stream) ?? [];
          for (const chunk of m.chunks) list.push({ chunk, doc: doc! });
          this.appendOnly.set(m.stream, list);
          this.pendingDocs++;
        } else {
          // A DELETE also drops what this batch appended for the document before it.
          const appended = m.type === 'DELETE' ? this.appendOnly.get(m.stream) : undefined;
          if (appended)
            this.appendOnly.set(
              m.stream,
              appended.filter((c) => c.chunk.documentId !== m.documentId),
            );
          const docs: Pending = this.pending.get(m.stream) ?? new Map();
          // A metadata-only update after a full one in the same batch keeps the full one's vectors.
          const before = docs.get(m.documentId);
          if (doc?.metadataOnly && before && !before.metadataOnly) {
            const byId = new Map(doc.chunks.map((c) => [c.id, c]));
            docs.set(m.documentId, {
              chunks: before.chunks.map((c: Chunk) => ({ ...c, metadata: byId.get(c.id)?.metadata ?? c.metadata })),
              fingerprint: doc.fingerprint,
              metadataOnly: false,
            });
          } else docs.set(m.documentId, doc ?? null);
          this.pending.set(m.stream, docs);
          this.pendingDocs++;
        }
        if (this.pendingDocs >= this.config.batch_records) yield* this.flush();
      } else if (m.type === 'STATE') {
        yield* this.flush();
        yield { type: 'STATE_COMMITTED', state: m.state, connection: m.connection };
      } else if (m.type === 'STREAM_COMPLETE') {
        if (this.modes.get(m.stream) === 'overwrite') {
          await this.generation(m.stream); // an empty generation still replaces the old one
          yield* this.flush(m.stream);
        }
      }
    }
    yield* this.flush();
  }

  /**
   * Stored fingerprints of these documents (the committed file). The file is indexed once per
   * version (inode, size, mtime): a sync asks for every document, 1,000 at a time.
   */
  async fingerprints(stream: string, documentIds: string[]): Promise<Map<string, DocumentFingerprint>> {
    const found = new Map<string, DocumentFingerprint>();
    const key = await versionOf(this.file);
    if (key === undefined) return found;
    if (this.index?.key !== key) {
      const docs = new Map<string, Map<string, DocumentFingerprint | null>>();
      for await (const l of readLinesWithoutEmbedding(this.file)) {
        const byDoc = docs.get(l.stream) ?? (docs.set(l.stream, new Map()), docs.get(l.stream)!);
        byDoc.set(l.document_id, agreed(byDoc.get(l.document_id), l));
      }
      this.index = { key, docs };
    }
    const byDoc = this.index.docs.get(stream);
    for (const id of documentIds) {
      const fp = byDoc?.get(id);
      if (fp) found.set(id, fp);
    }
    return found;
  }

  /** Every stream to a staged generation; all switch in one rename at the end when every one completed. */
  private async *writeReindex(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationEvent> {
    const staged = new Map<string, string>(); // stream → staging file of its new generation
    try {
      for await (const m of input) {
        const r = 'stream' in m ? this.reindexed.get(m.stream) : undefined;
        if (m.type === 'DOCUMENT' && r) {
          const gen = await this.generation(m.stream);
          staged.set(m.stream, gen.staging);
          await this.stage(m.stream, gen, { chunks: m.chunks, fingerprint: m.fingerprint, metadataOnly: false });
          r.records++;
          r.written += m.chunks.length;
        } else if (m.type === 'STREAM_COMPLETE' && r) {
          staged.set(m.stream, (await this.generation(m.stream)).staging);
          r.complete = true;
        } else if (m.type === 'STATE') this.reindexState = m; // committed with the switch only
      }
      if (![...this.reindexed.values()].every((r) => r.complete)) return; // interrupted: the old file stays
      await switchFile(this.file, staged, this.reindex!.keepPrevious);
      staged.clear();
      for (const [stream, r] of this.reindexed)
        yield { type: 'WRITTEN', stream, records: r.records, chunksWritten: r.written, chunksDeleted: 0 };
      if (this.reindexState) yield { type: 'STATE_COMMITTED', state: this.reindexState.state, connection: this.reindexState.connection };
    } finally {
      for (const path of staged.values()) await rm(path, { force: true });
    }
  }

  /** A chunk line; `stored`: the live line of a metadata-only update, whose text and vector stay. */
  private line(stream: string, c: Chunk, fingerprint: DocumentFingerprint | undefined, stored?: JsonlChunkLine): string {
    const embedding = stored ? stored.embedding : this.config.include_embeddings && c.embedding ? Array.from(c.embedding) : undefined;
    const l: JsonlChunkLine = {
      stream,
      id: c.id,
      document_id: c.documentId,
      chunk_index: c.chunkIndex,
      content: stored ? stored.content : c.content,
      content_hash: stored ? stored.content_hash : c.contentHash,
      metadata: c.metadata,
      ...(fingerprint
        ? {
            fingerprint: {
              content: fingerprint.content,
              metadata: fingerprint.metadata,
              ...(fingerprint.embedder !== undefined ? { embedder: fingerprint.embedder } : {}),
              ...(fingerprint.source !== undefined ? { source: fingerprint.source } : {}),
            },
          }
        : {}),
      ...(embedding ? { embedding } : {}),
    };
    return JSON.stringify(l) + '\n';
  }

  private async generation(stream: string): Promise<Generation> {
    let gen = this.generations.get(stream);
    if (!gen) {
      gen = { staging: `${this.file}.${encodeURIComponent(stream)}.next`, stagedLines: 0, records: 0, carried: new Map() };
      await rm(gen.staging, { force: true });
      this.generations.set(stream, gen);
    }
    return gen;
  }

  /** The new documents of an overwrite stream go to a side file until the stream completes. */
  private async stage(stream: string, gen: Generation, doc: PendingDoc) {
    if (!doc.chunks.length) return;
    const h = await open(gen.staging, 'a');
    try {
      await h.writeFile(doc.chunks.map((c) => this.line(stream, c, doc.fingerprint)).join(''));
    } finally {
      await h.close();
    }
    gen.stagedLines += doc.chunks.length;
  }

  /**
   * Whether the pending commit only adds documents the file does not hold (a first load, new rows),
   * known without reading the file: it is new, or the document index is of its current version.
   */
  private async onlyAdds(switchStream: string | undefined, gen: Generation | undefined): Promise<boolean> {
    if (switchStream || gen || this.appendOnly.size || !this.pending.size) return false;
    let chunks = 0;
    for (const docs of this.pending.values()) for (const d of docs.values()) chunks += d?.chunks.length ?? 0;
    const version = await versionOf(this.file);
    if (version === undefined) return true;
    if (!chunks || this.index?.key !== version || !(await endsWithNewline(this.file))) return false;
    for (const [stream, docs] of this.pending) {
      const stored = this.index.docs.get(stream);
      if (stored) for (const [id, d] of docs) if (!d || stored.has(id)) return false;
    }
    return true;
  }

  /**
   * onlyAdds() commits: the file's bytes are copied as they are (no line read or parsed) with the new
   * lines after them, then switched like any commit; the document index is brought up to date
   * instead of re-read. The file is the same as the rewrite's (which would copy every line).
   */
  private async commitAdds(count: (s: string) => { records: number; written: number; deleted: number }) {
    await mkdir(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    const existed = (await versionOf(this.file)) !== undefined;
    if (existed) await copyFile(this.file, tmp);
    const h = await open(tmp, existed ? 'a' : 'w');
    const added = new Map<string, Map<string, DocumentFingerprint | null>>();
    try {
      for (const [s, docs] of this.pending) {
        const byDoc = new Map<string, DocumentFingerprint | null>();
        let text = '';
        for (const [id, d] of docs) {
          if (!d?.chunks.length) continue; // a deletion (only in a new file) or a document without text: no lines
          for (const c of d.chunks) text += this.line(s, c, d.fingerprint);
          count(s).written += d.chunks.length;
          // What the index reads back from these lines: every line has the document's fingerprint.
          byDoc.set(id, d.fingerprint ? storedFingerprint(d.fingerprint) : null);
          // Written about a megabyte at a time: a batch's lines at once would be tens of megabytes.
          if (text.length >= 1 << 20) {
            await h.writeFile(text);
            text = '';
          }
        }
        await h.writeFile(text);
        added.set(s, byDoc);
      }
      await h.sync();
    } finally {
      await h.close();
    }
    // onlyAdds() saw the index of the file as it is (or no file); without one it is read again.
    const docsBefore = existed ? this.index?.docs : new Map<string, Map<string, DocumentFingerprint | null>>();
    await rename(tmp, this.file);
    const version = await versionOf(this.file);
    if (!docsBefore || version === undefined) {
      this.index = undefined;
      return;
    }
    for (const [s, byDoc] of added) {
      const docs = docsBefore.get(s) ?? (docsBefore.set(s, new Map()), docsBefore.get(s)!);
      for (const [id, fp] of byDoc) docs.set(id, fp);
    }
    this.index = { key: version, docs: docsBefore };
  }

  /** Whether committing what is pending would change the file at all (read-only). */
  private async changesAnything(switchStream: string | undefined, gen: Generation | undefined): Promise<boolean> {
    for (const docs of this.pending.values()) for (const d of docs.values()) if (d?.chunks.length) return true;
    for (const list of this.appendOnly.values()) if (list.length) return true;
    if (gen && (gen.stagedLines || [...gen.carried.values()].some((c) => typeof c === 'object'))) return true;
    if (!(await exists(this.file))) return true; // the first commit creates the file, even an empty one
    // Nothing to add: only removals are left (deleted documents, live documents a generation dropped).
    for await (const raw of rawLines(this.file)) {
      const l = lineHead(raw);
      if (switchStream && l.stream === switchStream && gen?.carried.get(l.document_id) !== 'keep') return true;
      if (this.pending.get(l.stream)?.has(l.document_id)) return true;
    }
    return false;
  }

  /**
   * Rewrites the file: old lines minus replaced/deleted documents, plus new chunks; with
   * `switchStream`, that stream's lines are replaced by its new generation (kept documents' lines
   * carried over). When nothing would change, the file is left as it is.
   */
  private async *flush(switchStream?: string): AsyncGenerator<DestinationEvent> {
    const gen = switchStream ? this.generations.get(switchStream) : undefined;
    if (!this.pending.size && !this.appendOnly.size && !gen) return;
    const counts = new Map<string, { records: number; written: number; deleted: number }>();
    const count = (s: string) => counts.get(s) ?? (counts.set(s, { records: 0, written: 0, deleted: 0 }), counts.get(s)!);
    const newIds = new Map<string, Set<string>>();
    for (const [s, docs] of this.pending) {
      const ids = new Set<string>();
      for (const d of docs.values()) {
        count(s).records++;
        for (const c of d?.chunks ?? []) ids.add(c.id);
      }
      newIds.set(s, ids);
    }
    const appendIds = new Map<string, Map<string, { chunk: Chunk; doc: PendingDoc }>>(); // last version of each chunk id
    for (const [s, chunks] of this.appendOnly) {
      const ids = newIds.get(s) ?? new Set<string>();
      const own = new Map<string, { chunk: Chunk; doc: PendingDoc }>();
      for (const c of chunks) {
        ids.add(c.chunk.id);
        own.set(c.chunk.id, c);
      }
      newIds.set(s, ids);
      appendIds.set(s, own);
    }

    if (await this.onlyAdds(switchStream, gen)) await this.commitAdds(count);
    else if (await this.changesAnything(switchStream, gen)) {
      await mkdir(dirname(this.file), { recursive: true });
      const tmp = `${this.file}.${process.pid}.tmp`;
      const out = createWriteStream(tmp);
      const put = async (text: string) => {
        if (!out.write(text)) await once(out, 'drain');
      };
      // Live lines of metadata-only documents: their text and vector go into the new line.
      const stored = new Map<string, JsonlChunkLine>();
      const carriedOver = new Set<string>(); // chunk ids of the new generation taken from live lines
      if (await exists(this.file)) {
        for await (const raw of rawLines(this.file)) {
          // Most lines are copied as they are: only their head is parsed.
          const l = lineHead(raw);
          if (switchStream && l.stream === switchStream) {
            const carried = gen?.carried.get(l.document_id);
            if (carried === 'keep') await put(raw + '\n');
            else if (typeof carried === 'object') {
              const c = carried.chunks.find((x) => x.id === l.id);
              if (c) {
                await put(this.line(l.stream, c, carried.fingerprint, JSON.parse(raw) as JsonlChunkLine));
                carriedOver.add(l.id);
                count(l.stream).written++;
              }
            }
            continue;
          }
          const docs = this.pending.get(l.stream);
          const appended = appendIds.get(l.stream)?.get(l.id);
          if (docs?.has(l.document_id) || appended) {
            if (docs?.get(l.document_id)?.metadataOnly || appended?.doc.metadataOnly) stored.set(l.id, JSON.parse(raw) as JsonlChunkLine);
            if (!newIds.get(l.stream)?.has(l.id)) count(l.stream).deleted++;
            continue;
          }
          await put(raw + '\n');
        }
      }
      for (const [s, docs] of this.pending) {
        for (const d of docs.values())
          for (const c of d?.chunks ?? []) {
            await put(this.line(s, c, d!.fingerprint, d!.metadataOnly ? stored.get(c.id) : undefined));
            count(s).written++;
          }
      }
      for (const [s, chunks] of this.appendOnly) {
        for (const { chunk, doc } of appendIds.get(s)!.values())
          await put(this.line(s, chunk, doc.fingerprint, doc.metadataOnly ? stored.get(chunk.id) : undefined));
        count(s).records += chunks.length ? new Set(chunks.map((c) => c.chunk.documentId)).size : 0;
        count(s).written += appendIds.get(s)!.size;
      }
      if (gen && switchStream) {
        // Metadata-only documents the live generation did not hold come as they were sent.
        for (const carried of gen.carried.values())
          if (typeof carried === 'object')
            for (const c of carried.chunks)
              if (!carriedOver.has(c.id)) {
                await put(this.line(switchStream, c, carried.fingerprint));
                count(switchStream).written++;
              }
        if (await exists(gen.staging)) {
          for await (const raw of createInterface({ input: createReadStream(gen.staging, 'utf8'), crlfDelay: Infinity })) {
            if (!raw) continue;
            await put(raw + '\n');
            count(switchStream).written++;
          }
        }
      }
      out.end();
      await once(out, 'finish');
      const h = await open(tmp, 'r+');
      await h.sync();
      await h.close();
      await rename(tmp, this.file);
      this.index = undefined;
    }
    if (gen) {
      if (gen.records) count(switchStream!).records += gen.records;
      await rm(gen.staging, { force: true });
      this.generations.delete(switchStream!);
    }
    this.pending.clear();
    this.appendOnly.clear();
    this.pendingDocs = 0;
    for (const [stream, c] of counts)
      yield { type: 'WRITTEN', stream, records: c.records, chunksWritten: c.written, chunksDeleted: c.deleted };
  }
}

/**
 * Agreement of a document's lines on its fingerprint: null when they disagree or one has none. The
 * embedder tag and the source digest are kept only while every line has the same one.
 */
function agreed(sofar: DocumentFingerprint | null | undefined, l: Pick<JsonlChunkLine, 'fingerprint'>): DocumentFingerprint | null {
  const fp = l.fingerprint;
  if (!fp || sofar === null) return null;
  if (sofar === undefined) return fp;
  if (sofar.content !== fp.content || sofar.metadata !== fp.metadata) return null;
  if (sofar.embedder === fp.embedder && sofar.source === fp.source) return sofar;
  const common: DocumentFingerprint = { content: sofar.content, metadata: sofar.metadata };
  if (sofar.embedder !== undefined && sofar.embedder === fp.embedder) common.embedder = sofar.embedder;
  if (sofar.source !== undefined && sofar.source === fp.source) common.source = sofar.source;
  return common;
}

/** A version of the file (its identity, size and times) that any rewrite changes; undefined if there is none. */
async function versionOf(file: string): Promise<string | undefined> {
  const info = await stat(file, { bigint: true }).catch(() => undefined);
  return info && `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
}

/** Whether the file's last line is complete (the writer ends every line); an empty file counts. */
async function endsWithNewline(file: string): Promise<boolean> {
  const h = await open(file, 'r');
  try {
    const { size } = await h.stat();
    if (!size) return true;
    const { buffer } = await h.read(Buffer.alloc(1), 0, 1, size - 1);
    return buffer[0] === 0x0a;
  } finally {
    await h.close();
  }
}

/** A fingerprint as a line stores it (line()) and the index reads it back. */
function storedFingerprint(fp: DocumentFingerprint): DocumentFingerprint {
  return {
    content: fp.content,
    metadata: fp.metadata,
    ...(fp.embedder !== undefined ? { embedder: fp.embedder } : {}),
    ...(fp.source !== undefined ? { source: fp.source } : {}),
  };
}

async function* rawLines(file: string): AsyncGenerator<string> {
  for await (const raw of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) if (raw) yield raw;
}

async function* readLines(file: string): AsyncGenerator<JsonlChunkLine> {
  for await (const raw of rawLines(file)) yield JSON.parse(raw) as JsonlChunkLine;
}

/** Lines for the document index (fingerprints, listings): their vectors are not needed. */
async function* readLinesWithoutEmbedding(file: string): AsyncGenerator<Omit<JsonlChunkLine, 'embedding'>> {
  for await (const raw of rawLines(file)) yield lineWithoutEmbedding(raw);
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
  // sourceDigests: a line's fingerprint keeps `source` like the rest of it.
  capabilities: { destinationSyncModes: ['overwrite', 'append', 'append_dedup'], vectors: false, sourceDigests: true },

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
    return {
      fingerprints: (stream, ids) => writer.fingerprints(stream, ids),
      write: (input) => writer.write(input),
      close: async () => undefined,
    };
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
    const out: { documentId: string; chunkIndex: number; content: string; metadata: Record<string, unknown> }[] = [];
    for await (const l of readLines(file))
      if (l.stream === stream) out.push({ documentId: l.document_id, chunkIndex: l.chunk_index, content: l.content, metadata: l.metadata });
    return out;
  },

  async *documents(config, ctx, stream) {
    for await (const batch of listDocumentBatches(config, ctx, stream)) yield* batch;
  },

  /** documents() in arrays: the deletion sweep takes a batch per async step, not a document. */
  documentBatches: listDocumentBatches,
  scanChunks,
};

/** Documents per array of documentBatches(): the file is indexed whole first, so this only sizes the hand-out. */
export const DOCUMENTS_BATCH = 1000;

/**
 * Every document of a stream with its chunk count and agreed fingerprint, in arrays of up to
 * DOCUMENTS_BATCH. The file has no order by document, so it is read whole into a map first (as
 * fingerprints() does); the arrays are cut from that map.
 */
async function* listDocumentBatches(
  config: JsonlDestinationConfig,
  ctx: ConnectorContext,
  stream: string,
): AsyncGenerator<StoredDocument[]> {
  const file = resolve(ctx.baseDir, config.path);
  if (!(await exists(file))) return;
  const docs = new Map<string, { chunks: number; fingerprint: DocumentFingerprint | null | undefined }>();
  for await (const l of readLinesWithoutEmbedding(file)) {
    if (l.stream !== stream) continue;
    const d = docs.get(l.document_id) ?? { chunks: 0, fingerprint: undefined };
    d.chunks++;
    d.fingerprint = agreed(d.fingerprint, l);
    docs.set(l.document_id, d);
  }
  let batch: StoredDocument[] = [];
  for (const [documentId, d] of docs) {
    batch.push(d.fingerprint ? { documentId, chunks: d.chunks, fingerprint: d.fingerprint } : { documentId, chunks: d.chunks });
    if (batch.length === DOCUMENTS_BATCH) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

export default destination;
