// The Pinecone writer. Messages are buffered into a bounded batch; a flush sends them with
// several requests in flight and only then are the STATEs before it acknowledged.
//
// Per document: vectors `<document_id>#<chunk_index>` are upserted; in append_dedup/overwrite the
// document's ids with a chunk index >= its new chunk count are listed by prefix `<document_id>#`
// and deleted (they are disjoint from the upserted ids, so both run at once). DELETE lists the
// prefix and deletes everything. Overwrite writes into a fresh namespace generation and switches the
// generation pointer at STREAM_COMPLETE (see store.ts / docs/pinecone.md).
//
// Fingerprints (docs/fingerprints.md): chunk 0 carries the document's fingerprint next to its
// chunk_count. A metadata-only document updates its vectors' metadata by id (no values sent); when a
// field was removed or the metadata may no longer fit 40 KB, its stored values are fetched and the
// vectors upserted again (never re-embedded). In overwrite, KEEPs copy the document's vectors from the
// live generation; a generation that would be nothing but KEEPs of every live document is never
// started: nothing is written, the pointer is not switched.
import pLimit from 'p-limit';
import type { PineconeRecord } from '@pinecone-database/pinecone';
import type {
  Chunk,
  ConnectorContext,
  DocumentFingerprint,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  OpenOptions,
} from '../../src/protocol/connector.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { chunkId } from '../../src/protocol/identity.ts';
import type { PineconeConfig } from './config.ts';
import {
  FP_CONTENT,
  FP_EMBEDDER,
  FP_FIELDS,
  FP_METADATA,
  MAX_METADATA_BYTES,
  buildMetadata,
  compactValues,
  metadataBytes,
  storedFingerprint,
  truncateContent,
  withoutContent,
  type PineconeMetadata,
} from './metadata.ts';
import {
  MAX_ID_BYTES,
  MAX_IDS_PER_DELETE,
  MAX_VECTORS_PER_UPSERT,
  fetchGroups,
  identityTag,
  type GenerationPointer,
  type PineconeStore,
} from './store.ts';
import { RefusedDocument, prepareOrRefuse } from './rejections.ts';

/** Logical namespace of a stream: the configured template with `{stream}` filled in. */
export function logicalNamespace(template: string, stream: string): string {
  return template.replaceAll('{stream}', stream);
}

/** Physical namespace of generation N of a logical namespace (generation 0 is the logical name itself). */
export function generationNamespace(logical: string, generation: number): string {
  return generation === 0 ? logical : `${logical}__sluice_gen${generation}`;
}

/** The namespace readers should query for a logical namespace. */
export function currentNamespace(logical: string, pointer: GenerationPointer | undefined): string {
  return pointer?.current ?? logical;
}

interface StreamTarget {
  name: string;
  mode: DestinationSyncMode;
  logical: string;
  /** Where this session writes. */
  namespace: string;
  /** The namespace readers see at open (fingerprint look-ups, KEEP copies). */
  live: string;
  /**
   * Overwrite and reindex: the pointer to publish at the switch, what it replaces, and the replaced
   * generations whose removal failed (removed before loading).
   */
  pending?: { pointer: GenerationPointer; replaces: string; stale: string[] };
  /** Reindex only: the pointer as read at open (what the switch replaces). */
  before?: GenerationPointer;
  /** Reindex only: the stream's input completed. */
  complete?: boolean;
  switched?: boolean;
  /** Overwrite only: the fresh generation was started (cleared for loading); until then only KEEPs came. */
  started?: boolean;
  /** Overwrite only, before the generation is started: the documents kept so far. */
  keptBeforeStart?: Set<string>;
  /**
   * Overwrite only: documents written so far into the fresh generation. A document not seen
   * before has nothing stale there, so its prefix listing is skipped. Bounded: past the cap
   * every document is listed again.
   */
  seen?: Set<string>;
}

type Op =
  | {
      kind: 'doc';
      stream: string;
      documentId: string;
      message: DestinationMessage & { type: 'DOCUMENT' };
      /** Append mode, after a DELETE of the document in the same batch: replace, do not upsert over the old chunks. */
      replace?: boolean;
    }
  | { kind: 'delete'; stream: string; documentId: string }
  /** Metadata-only document outside overwrite: its stored vectors get the new metadata. */
  | { kind: 'meta'; stream: string; documentId: string; message: DestinationMessage & { type: 'DOCUMENT' } }
  /** Overwrite: copy the document from the live generation (with new metadata when `message` is set). */
  | { kind: 'keep'; stream: string; documentId: string; message?: DestinationMessage & { type: 'DOCUMENT' } };

interface PreparedVector {
  stream: string;
  namespace: string;
  record: PineconeRecord;
  bytes: number;
  /** Chunk 0 only: the count its first write (phase C) records, covering the old tail too: max(old, new). */
  coverCount?: number;
}

interface Counts {
  records: number;
  chunksWritten: number;
  chunksDeleted: number;
}

const SEEN_CAP = 200_000;
/** Overwrite: KEEPs remembered before the generation is started; past this it is started (bounded memory). */
const KEEPS_BEFORE_START_CAP = 100_000;
const KNOWN_COUNTS_CAP = 50_000;
/** Documents whose chunk 0 is fetched per request (responses carry values and up to 40 KB metadata each). */
const FETCH_IDS = 50;

const docKey = (namespace: string, documentId: string) => JSON.stringify([namespace, documentId]);

class Deletes {
  readonly byNamespace = new Map<string, { stream: string; ids: Set<string> }>();
  add(namespace: string, stream: string, id: string) {
    let d = this.byNamespace.get(namespace);
    if (!d) this.byNamespace.set(namespace, (d = { stream, ids: new Set() }));
    d.ids.add(id);
  }
}
/** JSON around the vectors of an upsert body: {"vectors":[…],"namespace":"…"}. */
const UPSERT_ENVELOPE_BYTES = 64;

export interface OversizeStats {
  truncated: number;
  skipped: number;
}

export class PineconeWriter implements DestinationWriter {
  private readonly targets = new Map<string, StreamTarget>();
  private ops = new Map<string, Op>();
  private bufferedChunks = 0;
  private counts = new Map<string, Counts>();
  /** Metadata over 40 KB, per stream, over the whole session. */
  readonly oversize = new Map<string, OversizeStats>();
  /**
   * Chunk counts this session stored, newest last (bounded). Pinecone's reads are eventually
   * consistent, so a document written again shortly after must not rely on a fetch.
   */
  private readonly knownCounts = new Map<string, number>();
  private readonly flushChunks: number;
  private readonly limit: ReturnType<typeof pLimit>;
  /** `sluice reindex` (./reindex.ts): every stream loads a new generation; all switch at the end of the input. */
  private reindex?: { keepPrevious: boolean };
  private embedderName?: string;
  /** Reindex: the last STATE, committed only with the switch. */
  private reindexState?: DestinationMessage & { type: 'STATE' };

  private constructor(
    private readonly store: PineconeStore,
    private readonly config: PineconeConfig,
    private readonly ctx: ConnectorContext,
  ) {
    this.flushChunks = config.batch_size * config.concurrency;
    this.limit = pLimit(config.concurrency);
  }

  static async open(store: PineconeStore, config: PineconeConfig, ctx: ConnectorContext, options: OpenOptions): Promise<PineconeWriter> {
    const dim = store.index.dimension;
    const where = `Pinecone index ${store.index.name ?? config.index}`;
    if (options.dimensions !== undefined && options.dimensions !== dim && options.reindex) {
      // Every namespace of an index has the index's dimension: a new generation cannot hold another size.
      throw new SluiceError(
        `a reindex cannot change the vector size in Pinecone index ${store.index.name ? `"${store.index.name}"` : config.index}: it has dimension ${dim} (fixed when an index is created), but ${options.embedderName ?? 'the embedder'} produces ${options.dimensions}-dimensional vectors; nothing was written`,
        {
          kind: 'config',
          where,
          hint: `create a Pinecone index with dimension ${options.dimensions}, set destination.config.index to it and run sluice reindex again (the old index keeps serving until you switch your application to the new one); or keep a model of ${dim} dimensions`,
        },
      );
    }
    if (options.dimensions !== undefined && options.dimensions !== dim) {
      throw new SluiceError(
        `Pinecone index ${store.index.name ? `"${store.index.name}"` : config.index} has dimension ${dim}, but ${options.embedderName ?? 'the embedder'} produces ${options.dimensions}-dimensional vectors`,
        {
          kind: 'config',
          where,
          hint: `use an index created with dimension ${options.dimensions}, or an embedding model/dimensions that give ${dim}`,
        },
      );
    }
    if (config.metric && store.index.metric && config.metric !== store.index.metric) {
      throw new SluiceError(`Pinecone index uses metric ${store.index.metric}, but the pipeline expects ${config.metric}`, {
        kind: 'config',
        where,
        hint: 'remove `metric` from the destination config or use an index with that metric',
      });
    }
    const writer = new PineconeWriter(store, config, ctx);
    writer.reindex = options.reindex;
    writer.embedderName = options.embedderName;
    const byLogical = new Map<string, string>();
    for (const s of options.streams) {
      const logical = logicalNamespace(config.namespace, s.name);
      const other = byLogical.get(logical);
      if (other !== undefined) {
        throw new SluiceError(`streams "${other}" and "${s.name}" would share Pinecone namespace "${logical}"`, {
          kind: 'config',
          where: 'destination.config.namespace',
          hint: 'put `{stream}` in `namespace` (the default) so each stream gets its own namespace; vector ids are only unique within a stream',
        });
      }
      byLogical.set(logical, s.name);
    }
    const pointers = await store.readPointers([...byLogical.keys()]);
    for (const s of options.streams) {
      const logical = logicalNamespace(config.namespace, s.name);
      const pointer = pointers.get(logical);
      const current = currentNamespace(logical, pointer);
      const target: StreamTarget = { name: s.name, mode: s.destinationSyncMode, logical, namespace: current, live: current };
      if (s.destinationSyncMode === 'overwrite' || options.reindex) {
        const generation = (pointer?.generation ?? 0) + 1;
        const fresh = generationNamespace(logical, generation);
        target.namespace = fresh;
        // What an overwrite switches to: the new generation, everything else of the pointer kept
        // (a generation kept for rollback stays; the identity is the same, a sync refuses another).
        const { previous: _removed, ...rest } = pointer ?? {};
        target.pending = {
          pointer: { ...rest, current: fresh, generation, previous: [current] },
          replaces: current,
          stale: (pointer?.previous ?? []).filter((ns) => ns !== current && ns !== pointer?.kept && ns !== fresh),
        };
        if (options.reindex) target.before = pointer ?? { current, generation: 0 };
        target.seen = new Set();
        target.started = false;
      }
      writer.targets.set(s.name, target);
    }
    return writer;
  }

  /** Chunk counts of live documents seen by fingerprints() (overwrite streams), for the all-KEEP check. Bounded. */
  private readonly liveCounts = new Map<string, number>();

  /** Fingerprints stored on chunk 0 of these documents in the namespace readers see: one fetch (split only past Pinecone's limits). */
  async fingerprints(stream: string, documentIds: string[]): Promise<Map<string, DocumentFingerprint>> {
    const t = this.target(stream);
    const out = new Map<string, DocumentFingerprint>();
    const heads = documentIds.map((d) => chunkId(d, 0));
    const found = new Map<string, Record<string, unknown>>();
    await settleAll(
      fetchGroups(heads).map((ids) =>
        this.limit(async () => {
          for (const [id, md] of await this.store.fetchMetadata(t.live, ids)) found.set(id, md);
        }),
      ),
    );
    for (const documentId of documentIds) {
      const md = found.get(chunkId(documentId, 0));
      const key = docKey(t.live, documentId);
      const count = md ? (typeof md.chunk_count === 'number' ? md.chunk_count : undefined) : 0;
      // What the look-up learnt saves the flush its own: the stored chunk count of each document.
      if (count !== undefined) {
        const counts = t.pending ? this.liveCounts : this.knownCounts;
        counts.delete(key);
        counts.set(key, count);
        if (counts.size > KNOWN_COUNTS_CAP) counts.delete(counts.keys().next().value!);
      }
      const fingerprint = md && storedFingerprint(md);
      if (fingerprint) out.set(documentId, fingerprint);
    }
    return out;
  }

  async *write(input: AsyncIterable<DestinationMessage>): AsyncIterable<DestinationEvent> {
    for await (const msg of input) {
      switch (msg.type) {
        case 'DOCUMENT': {
          const t = this.target(msg.stream);
          await this.startGeneration(t);
          const op: Op = !msg.metadataOnly
            ? { kind: 'doc', stream: msg.stream, documentId: msg.documentId, message: msg }
            : t.pending
              ? { kind: 'keep', stream: msg.stream, documentId: msg.documentId, message: msg }
              : { kind: 'meta', stream: msg.stream, documentId: msg.documentId, message: msg };
          this.enqueue(op, msg.chunks.length);
          if (this.bufferedChunks >= this.flushChunks || this.ops.size >= this.flushChunks) yield* this.flush();
          break;
        }
        case 'DELETE': {
          await this.startGeneration(this.target(msg.stream));
          this.enqueue({ kind: 'delete', stream: msg.stream, documentId: msg.documentId }, 0);
          if (this.ops.size >= this.flushChunks) yield* this.flush();
          break;
        }
        case 'KEEP': {
          const t = this.target(msg.stream);
          if (!t.pending) break; // outside overwrite the document simply stays
          if (!t.started) {
            (t.keptBeforeStart ??= new Set()).add(msg.documentId);
            if (t.keptBeforeStart.size > KEEPS_BEFORE_START_CAP) {
              this.ctx.logger.info(
                { stream: t.name, kept: t.keptBeforeStart.size },
                `stream ${t.name}: many unchanged documents in this overwrite; starting the new generation now and copying them into it`,
              );
              await this.startGeneration(t);
            }
          } else this.enqueue({ kind: 'keep', stream: msg.stream, documentId: msg.documentId }, 1);
          if (this.bufferedChunks >= this.flushChunks || this.ops.size >= this.flushChunks) yield* this.flush();
          break;
        }
        case 'STATE': {
          yield* this.flush();
          if (this.reindex)
            this.reindexState = msg; // committed with the switch, or not at all
          else yield { type: 'STATE_COMMITTED', state: msg.state, connection: msg.connection };
          break;
        }
        case 'STREAM_COMPLETE': {
          const target = this.target(msg.stream);
          if (this.reindex) {
            await this.startGeneration(target); // an empty stream's new generation is empty
            target.complete = true;
            break;
          }
          if (target.pending && !target.switched) {
            if (!target.started && (await this.unchangedGeneration(target))) {
              target.switched = true; // the live generation already is the new one
              target.keptBeforeStart = undefined;
              this.ctx.logger.info(
                { stream: target.name, namespace: target.live },
                `stream ${target.name}: overwrite found every document unchanged; nothing written, readers stay on namespace "${target.live}"`,
              );
              break;
            }
            await this.startGeneration(target);
            yield* this.flush();
            await this.switchGeneration(target);
          }
          break;
        }
      }
    }
    yield* this.flush();
    if (this.reindex) {
      yield* this.finishReindex();
      this.reportOversize();
      return;
    }
    for (const t of this.targets.values()) {
      if (t.pending && !t.switched) {
        this.ctx.logger.warn(
          { stream: t.name, namespace: t.namespace },
          `stream ${t.name}: input ended before the stream completed; readers stay on namespace "${t.pending.replaces}" and the partial load is discarded on the next run`,
        );
      }
    }
    this.reportOversize();
  }

  async close(): Promise<void> {}

  private target(stream: string): StreamTarget {
    const t = this.targets.get(stream);
    if (!t) throw new SluiceError(`stream "${stream}" was not declared when the Pinecone destination was opened`, { kind: 'internal' });
    return t;
  }

  /**
   * Overwrite: clears the fresh generation for loading (leftovers of an interrupted overwrite, a
   * previous generation whose removal failed) once something must be written into it; the KEEPs so
   * far become copies.
   */
  private async startGeneration(t: StreamTarget): Promise<void> {
    if (!t.pending || t.started) return;
    await this.store.deleteNamespaceContents(t.namespace);
    for (const ns of t.pending.stale) await this.store.deleteNamespaceContents(ns);
    t.started = true;
    for (const documentId of t.keptBeforeStart ?? []) this.enqueue({ kind: 'keep', stream: t.name, documentId }, 1);
    t.keptBeforeStart = undefined;
  }

  /** True when the KEEPs of an overwrite stream cover every vector of its live generation. */
  private async unchangedGeneration(t: StreamTarget): Promise<boolean> {
    const kept = [...(t.keptBeforeStart ?? [])];
    let total = 0;
    const unknown: string[] = [];
    for (const d of kept) {
      const n = this.liveCounts.get(docKey(t.live, d));
      if (n === undefined) unknown.push(d);
      else total += n;
    }
    const counts = await this.previousCounts(new Map([[t.live, new Set(unknown)]]));
    for (const d of unknown) {
      const n = counts.get(docKey(t.live, d));
      if (n === undefined) return false;
      total += n;
    }
    return (await this.store.recordCount(t.live)) === total;
  }

  private enqueue(op: Op, chunks: number) {
    const key = JSON.stringify([op.stream, op.documentId]);
    const prev = this.ops.get(key);
    // The latest message for a document wins: a DOCUMENT replaces it entirely, a DELETE removes it.
    // In append mode a DOCUMENT upserts chunk by chunk, so the earlier one's chunks beyond the new
    // count stay, and after a DELETE it replaces what is stored.
    if (op.kind === 'doc' && this.target(op.stream).mode === 'append' && prev) {
      if (prev.kind === 'delete') op = { ...op, replace: true };
      else if (prev.kind === 'doc') {
        const n = op.message.chunks.length;
        const kept = prev.message.chunks.filter((c) => c.chunkIndex >= n);
        op = { ...op, replace: prev.replace, message: { ...op.message, chunks: [...op.message.chunks, ...kept] } };
        chunks += kept.length;
      }
    }
    if (prev?.kind === 'doc' || prev?.kind === 'meta') this.bufferedChunks -= prev.message.chunks.length;
    else if (prev?.kind === 'keep') this.bufferedChunks -= prev.message?.chunks.length ?? 1;
    this.ops.delete(key);
    this.ops.set(key, op);
    this.bufferedChunks += chunks;
    if (op.kind !== 'keep' || op.message) this.countsOf(op.stream).records++;
  }

  private countsOf(stream: string): Counts {
    let c = this.counts.get(stream);
    if (!c) this.counts.set(stream, (c = { records: 0, chunksWritten: 0, chunksDeleted: 0 }));
    return c;
  }

  /**
   * Sends everything buffered; returns when Pinecone acknowledged all of it. Phases (each one
   * batched across documents, requests concurrent within a phase):
   *   A. read `chunk_count` from each document's chunk 0 (one fetch per FETCH_IDS documents);
   *   C. upsert chunk 0 of each rewritten document WITHOUT a fingerprint (an upsert replaces all
   *      metadata, so the previous fingerprint goes), its `chunk_count` max(old, new) so it still
   *      covers the old tail; and, for each deleted (or now empty) document, clear the fingerprint
   *      of its stored chunk 0 (an update by id: there is no vector to upsert);
   *   B. delete ids [max(n, 1), old count) — the stale tail — and skipped chunks;
   *   D. upsert the other chunks (chunk 0 covers them all);
   *   E. delete chunk 0 of deleted (or now empty) documents;
   *   F. upsert chunk 0 again, now with its own `chunk_count` and WITH the fingerprint, and only then
   *      the metadata updates of chunk 0 (which carry the new fingerprint) — once everything else of
   *      the flush is acknowledged.
   * Invariant: every stored chunk index of a document is below the `chunk_count` on its chunk 0,
   * whatever instant a crash hits, so the next write or DELETE always finds the whole tail.
   * Invariant: from the first change to a document's stored chunks (B) until all of them are
   * acknowledged, its chunk 0 carries no fingerprint (C comes first): a crash in between leaves a
   * document that reads as unfingerprinted and is written again — also when the source goes back to
   * exactly the stored version — never one skipped as unchanged with chunks missing.
   * Cost: the chunk-0 vectors are sent twice, in C and F batched like any upsert (one request per
   * MAX_VECTORS_PER_UPSERT/batch_size vectors of a namespace — usually one per flush), and one
   * update per deleted document that had chunks.
   */
  private async *flush(): AsyncIterable<DestinationEvent> {
    if (!this.ops.size) return;
    const pending = [...this.ops.values()];
    this.ops = new Map();
    this.bufferedChunks = 0;
    // Metadata-only documents and KEEPs first: metadata updates, copies, or documents rebuilt from stored values.
    const { ops, updates, copies } = await this.resolveStoredOps(pending);

    // A. previous chunk counts
    const lookups = new Map<string, Set<string>>(); // namespace → document ids
    for (const op of ops) {
      const t = this.target(op.stream);
      if (t.seen && !t.seen.has(op.documentId) && t.seen.size < SEEN_CAP) continue; // fresh generation: nothing stored yet
      if (this.knownCounts.has(docKey(t.namespace, op.documentId))) continue;
      let set = lookups.get(t.namespace);
      if (!set) lookups.set(t.namespace, (set = new Set()));
      set.add(op.documentId);
    }
    const previous = await this.previousCounts(lookups);
    // A deleted document's chunks are also listed by id prefix: a chunk beyond the count its chunk 0
    // records (written by hand or by another tool, see `sluice verify`) goes too. One list request
    // per deleted document (deletes are rarer than writes; a write trims by the recorded count).
    const listedChunks = new Map<string, number[]>();
    await settleAll(
      ops
        .filter((op) => op.kind === 'delete')
        .filter((op) => {
          const t = this.target(op.stream);
          return !(t.seen && !t.seen.has(op.documentId) && t.seen.size < SEEN_CAP); // nothing stored yet
        })
        .map((op) =>
          this.limit(async () => {
            const ns = this.target(op.stream).namespace;
            listedChunks.set(docKey(ns, op.documentId), await this.listChunkIndexes(ns, op.documentId));
          }),
        ),
    );
    for (const op of ops) {
      const key = docKey(this.target(op.stream).namespace, op.documentId);
      const known = this.knownCounts.get(key);
      if (known !== undefined) previous.set(key, known);
    }
    const stored: Array<[string, number]> = [];

    const first: PreparedVector[] = [];
    const rest: PreparedVector[] = [];
    const tailDeletes = new Deletes();
    const headDeletes = new Deletes();
    const refused: Array<Extract<DestinationEvent, { type: 'REJECTED' }>> = [];
    /** Chunk 0 of documents whose chunks go (deleted, now empty): its fingerprint is cleared first. */
    const clears: Array<{ namespace: string; id: string }> = [];
    for (const op of ops) {
      const t = this.target(op.stream);
      const key = docKey(t.namespace, op.documentId);
      const old = previous.get(key) ?? 0;
      if (t.seen) {
        if (t.seen.size >= SEEN_CAP)
          t.seen = undefined; // too many to remember: look every document up from now on
        else t.seen.add(op.documentId);
      }
      if (op.kind === 'delete') {
        stored.push([key, 0]);
        const listed = listedChunks.get(key) ?? [];
        const hasHead = old > 0 || listed.includes(0);
        if (hasHead) clears.push({ namespace: t.namespace, id: chunkId(op.documentId, 0) });
        for (let k = 1; k < old; k++) tailDeletes.add(t.namespace, op.stream, chunkId(op.documentId, k));
        for (const k of listed) if (k > 0) tailDeletes.add(t.namespace, op.stream, chunkId(op.documentId, k));
        if (hasHead) headDeletes.add(t.namespace, op.stream, chunkId(op.documentId, 0));
        continue;
      }
      const n = op.message.chunks.length;
      // append keeps chunks beyond the new count, so the count it records must still cover them.
      const upsert = t.mode === 'append' && !op.replace;
      const count = upsert ? Math.max(old, n) : n;
      // A document Pinecone would refuse is left out whole (./rejections.ts): its stored version stays.
      let skipped: string[] = [];
      const mine = { first: [] as PreparedVector[], rest: [] as PreparedVector[] };
      if (!prepareOrRefuse(op.message, refused, () => (skipped = this.prepareDocument(t, op.message, count, old, mine.first, mine.rest)))) {
        this.countsOf(op.stream).records--;
        continue;
      }
      first.push(...mine.first);
      rest.push(...mine.rest);
      stored.push([key, n === 0 && !upsert ? 0 : count]);
      for (const id of skipped) tailDeletes.add(t.namespace, op.stream, id);
      if (upsert) continue;
      for (let k = Math.max(n, 1); k < old; k++) tailDeletes.add(t.namespace, op.stream, chunkId(op.documentId, k));
      if (n === 0 && old > 0) {
        headDeletes.add(t.namespace, op.stream, chunkId(op.documentId, 0));
        clears.push({ namespace: t.namespace, id: chunkId(op.documentId, 0) });
      }
    }

    for (const c of copies) {
      const t = this.target(c.stream);
      stored.push([docKey(t.namespace, c.documentId), c.count]);
      if (t.seen && t.seen.size < SEEN_CAP) t.seen.add(c.documentId);
      for (const v of c.vectors) (v.record.id === chunkId(c.documentId, 0) ? first : rest).push(v);
    }

    // Chunk 0 goes out in C without its fingerprint and with a count covering the old tail; F
    // writes it with both its own (see above).
    const fingerprinted: PreparedVector[] = [];
    for (const [i, v] of first.entries()) {
      const md = v.record.metadata as PineconeMetadata | undefined;
      const cover = v.coverCount !== undefined && md && md.chunk_count !== v.coverCount;
      if (!md || (!FP_FIELDS.some((f) => f in md) && !cover)) continue;
      fingerprinted.push(v);
      const { [FP_CONTENT]: _c, [FP_METADATA]: _m, [FP_EMBEDDER]: _e, ...bare } = md;
      if (cover) bare.chunk_count = v.coverCount!;
      const record: PineconeRecord = { ...v.record, metadata: bare as PineconeMetadata };
      first[i] = { ...v, record, bytes: Buffer.byteLength(JSON.stringify(record), 'utf8') + 1 };
    }
    // Metadata-only: update can only set fields, so chunk 0's update (it carries the fingerprint)
    // simply goes after the document's other updates.
    const isHead = (u: { id: string; metadata: PineconeMetadata }) => FP_FIELDS.some((f) => f in u.metadata);
    const update = (u: (typeof updates)[number]) =>
      this.limit(async () => {
        await this.store.updateMetadata(u.namespace, u.id, u.metadata);
        this.countsOf(u.stream).chunksWritten++;
      });

    await settleAll([
      this.upsertAll(first), // C
      ...clears.map((c) => this.limit(() => this.store.clearFingerprint(c.namespace, c.id))),
    ]);
    await this.deleteAll(tailDeletes); // B
    await this.upsertAll(rest); // D
    await this.deleteAll(headDeletes); // E
    await settleAll(updates.filter((u) => !isHead(u)).map(update));
    await settleAll([this.upsertAll(fingerprinted, false), ...updates.filter(isHead).map(update)]); // F
    for (const [key, count] of stored) {
      this.knownCounts.delete(key);
      this.knownCounts.set(key, count);
    }
    for (const key of this.knownCounts.keys()) {
      if (this.knownCounts.size <= KNOWN_COUNTS_CAP) break;
      this.knownCounts.delete(key);
    }

    const counts = this.counts;
    this.counts = new Map();
    for (const [stream, c] of counts) yield { type: 'WRITTEN', stream, ...c };
    yield* refused;
  }

  /**
   * Turns metadata-only documents and KEEPs into work: metadata updates by id where Pinecone's
   * update (which only sets fields) gives the exact result; otherwise documents rebuilt from their
   * stored values (no embedding) that go through the normal write; KEEPs without new metadata
   * become copies of the stored vectors into the fresh generation.
   */
  private async resolveStoredOps(pending: Op[]): Promise<{
    ops: Array<Extract<Op, { kind: 'doc' } | { kind: 'delete' }>>;
    updates: { stream: string; namespace: string; id: string; metadata: PineconeMetadata }[];
    copies: { stream: string; documentId: string; count: number; vectors: PreparedVector[] }[];
  }> {
    const ops: Array<Extract<Op, { kind: 'doc' } | { kind: 'delete' }>> = [];
    const metas: Array<Extract<Op, { kind: 'meta' }>> = [];
    const keeps: Array<Extract<Op, { kind: 'keep' }>> = [];
    for (const op of pending) {
      if (op.kind === 'meta') metas.push(op);
      else if (op.kind === 'keep') keeps.push(op);
      else ops.push(op);
    }
    const updates: { stream: string; namespace: string; id: string; metadata: PineconeMetadata }[] = [];
    const copies: { stream: string; documentId: string; count: number; vectors: PreparedVector[] }[] = [];
    if (!metas.length && !keeps.length) return { ops, updates, copies };

    // Chunk 0 of every such document, where it is read from: its chunk_count and metadata.
    const sourceOf = (op: Op) => {
      const t = this.target(op.stream);
      return op.kind === 'keep' ? t.live : t.namespace;
    };
    const heads = await this.fetchAll([...metas, ...keeps].map((op) => [sourceOf(op), chunkId(op.documentId, 0)] as const));
    const rebuild: Array<{ op: Extract<Op, { kind: 'meta' } | { kind: 'keep' }>; message: DestinationMessage & { type: 'DOCUMENT' } }> = [];
    for (const op of metas) {
      const t = this.target(op.stream);
      const msg = op.message;
      const head = heads.get(JSON.stringify([t.namespace, chunkId(op.documentId, 0)]));
      if (!head) throw notStored(op.stream, op.documentId, t.namespace);
      const wanted = msg.chunks.map((c) => this.chunkMetadata(msg, c));
      const removed = Object.keys(head.metadata).some((k) => !(k in wanted[0]) && k !== 'content_truncated' && k !== 'content_skipped');
      const oversize = wanted.some((md) => metadataBytes(md) > MAX_METADATA_BYTES);
      if (removed || oversize || head.metadata.chunk_count !== msg.chunks.length) {
        rebuild.push({ op, message: msg }); // update can only set fields: write the vectors again from their stored values
        continue;
      }
      for (const [i, md] of wanted.entries()) {
        const { content: _content, ...fields } = md; // the stored content (maybe truncated) stays
        updates.push({ stream: op.stream, namespace: t.namespace, id: chunkId(op.documentId, msg.chunks[i].chunkIndex), metadata: fields });
      }
    }
    // KEEPs: every chunk below chunk 0's chunk_count, from the live generation.
    const tails: Array<readonly [string, string]> = [];
    for (const op of keeps) {
      const t = this.target(op.stream);
      const head = heads.get(JSON.stringify([t.live, chunkId(op.documentId, 0)]));
      if (!head) throw notStored(op.stream, op.documentId, t.live);
      if (op.message) rebuild.push({ op, message: op.message });
      const count = typeof head.metadata.chunk_count === 'number' ? head.metadata.chunk_count : 1;
      for (let k = 1; k < count; k++) tails.push([t.live, chunkId(op.documentId, k)]);
    }
    for (const { op, message } of rebuild)
      if (op.kind === 'meta') for (const c of message.chunks.slice(1)) tails.push([sourceOf(op), chunkId(op.documentId, c.chunkIndex)]);
    const rest = await this.fetchAll(tails);
    const stored = (ns: string, id: string) => heads.get(JSON.stringify([ns, id])) ?? rest.get(JSON.stringify([ns, id]));

    for (const op of keeps) {
      if (op.message) continue;
      const t = this.target(op.stream);
      const head = stored(t.live, chunkId(op.documentId, 0))!;
      const count = typeof head.metadata.chunk_count === 'number' ? head.metadata.chunk_count : 1;
      const vectors: PreparedVector[] = [];
      for (let k = 0; k < count; k++) {
        const rec = stored(t.live, chunkId(op.documentId, k));
        if (!rec) continue;
        const record: PineconeRecord = { id: chunkId(op.documentId, k), values: rec.values, metadata: rec.metadata as PineconeMetadata };
        vectors.push({ stream: op.stream, namespace: t.namespace, record, bytes: Buffer.byteLength(JSON.stringify(record), 'utf8') + 1 });
      }
      copies.push({ stream: op.stream, documentId: op.documentId, count, vectors });
    }
    for (const { op, message } of rebuild) {
      const from = sourceOf(op);
      const chunks: Chunk[] = message.chunks.map((c) => {
        const rec = stored(from, chunkId(op.documentId, c.chunkIndex));
        if (!rec) throw notStored(op.stream, op.documentId, from, c.chunkIndex);
        return { ...c, embedding: Float32Array.from(rec.values) };
      });
      ops.push({ kind: 'doc', stream: op.stream, documentId: op.documentId, message: { ...message, chunks, metadataOnly: false } });
    }
    return { ops, updates, copies };
  }

  /** Records (values and metadata) of [namespace, id] pairs, by JSON [namespace, id]; split by fetchGroups. */
  private async fetchAll(
    wanted: ReadonlyArray<readonly [string, string]>,
  ): Promise<Map<string, { values: number[]; metadata: Record<string, unknown> }>> {
    const byNs = new Map<string, string[]>();
    for (const [ns, id] of wanted) {
      let ids = byNs.get(ns);
      if (!ids) byNs.set(ns, (ids = []));
      ids.push(id);
    }
    const out = new Map<string, { values: number[]; metadata: Record<string, unknown> }>();
    const tasks: Array<Promise<unknown>> = [];
    for (const [ns, ids] of byNs)
      for (const group of fetchGroups([...new Set(ids)]))
        tasks.push(
          this.limit(async () => {
            for (const [id, rec] of await this.store.fetchRecords(ns, group)) out.set(JSON.stringify([ns, id]), rec);
          }),
        );
    await settleAll(tasks);
    return out;
  }

  /** The full metadata a chunk gets (chunk 0 also carries the count and the fingerprint). */
  private chunkMetadata(doc: DestinationMessage & { type: 'DOCUMENT' }, chunk: Chunk): PineconeMetadata {
    const md = buildMetadata(doc.stream, doc.documentId, chunk.chunkIndex, chunk.content, chunk.metadata);
    if (chunk.chunkIndex === 0) {
      md.chunk_count = doc.chunks.length;
      if (doc.fingerprint) {
        md[FP_CONTENT] = doc.fingerprint.content;
        md[FP_METADATA] = doc.fingerprint.metadata;
        if (doc.fingerprint.embedder !== undefined) md[FP_EMBEDDER] = doc.fingerprint.embedder;
      }
    }
    return md;
  }

  /** Chunk counts recorded on chunk 0 of documents, by docKey; absent = nothing stored. */
  private async previousCounts(lookups: Map<string, Set<string>>): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const tasks: Array<Promise<unknown>> = [];
    for (const [ns, docs] of lookups) {
      const all = [...docs];
      for (let i = 0; i < all.length; i += FETCH_IDS) {
        const slice = all.slice(i, i + FETCH_IDS);
        tasks.push(
          this.limit(async () => {
            const found = await this.store.fetchMetadata(
              ns,
              slice.map((d) => chunkId(d, 0)),
            );
            for (const documentId of slice) {
              const md = found.get(chunkId(documentId, 0));
              if (!md) continue;
              if (typeof md.chunk_count === 'number') out.set(docKey(ns, documentId), md.chunk_count);
              else out.set(docKey(ns, documentId), await this.countByListing(ns, documentId)); // written without a count (not by sluice): list its ids
            }
          }),
        );
      }
    }
    await settleAll(tasks);
    return out;
  }

  /** One more than the highest chunk index stored for a document, found by listing its id prefix. */
  private async countByListing(namespace: string, documentId: string): Promise<number> {
    return Math.max(0, ...(await this.listChunkIndexes(namespace, documentId)).map((k) => k + 1));
  }

  /** Chunk indexes stored for a document, by listing its id prefix. */
  private async listChunkIndexes(namespace: string, documentId: string): Promise<number[]> {
    const prefix = `${documentId}#`;
    const out: number[] = [];
    for await (const page of this.store.listIds(namespace, prefix)) {
      for (const id of page) {
        const suffix = id.slice(prefix.length);
        // `a#1#0` (document "a#1") also starts with "a#": only a bare chunk index counts.
        if (/^\d+$/.test(suffix)) out.push(Number(suffix));
      }
    }
    return out;
  }

  /** `count`: false for phase F, whose vectors were already counted in phase C. */
  private async upsertAll(vectors: PreparedVector[], count = true): Promise<void> {
    const tasks: Array<Promise<unknown>> = [];
    for (const batch of this.upsertBatches(vectors)) {
      tasks.push(
        this.limit(async () => {
          await this.store.upsert(
            batch[0].namespace,
            batch.map((v) => v.record),
          );
          if (count) this.countsOf(batch[0].stream).chunksWritten += batch.length;
        }),
      );
    }
    await settleAll(tasks);
  }

  private async deleteAll(deletes: Deletes): Promise<void> {
    const tasks: Array<Promise<unknown>> = [];
    for (const [ns, d] of deletes.byNamespace) {
      const ids = [...d.ids];
      for (let i = 0; i < ids.length; i += MAX_IDS_PER_DELETE) {
        const slice = ids.slice(i, i + MAX_IDS_PER_DELETE);
        tasks.push(
          this.limit(async () => {
            await this.store.deleteIds(ns, slice);
            this.countsOf(d.stream).chunksDeleted += slice.length;
          }),
        );
      }
    }
    await settleAll(tasks);
  }

  /** Vectors of one document, metadata fitted to Pinecone's 40 KB; returns ids of skipped chunks. */
  /** `oldCount`: the stored count; chunk 0's first write (phase C) covers it (see flush). */
  private prepareDocument(
    t: StreamTarget,
    doc: DestinationMessage & { type: 'DOCUMENT' },
    chunkCount: number,
    oldCount: number,
    first: PreparedVector[],
    rest: PreparedVector[],
  ): string[] {
    const skipped: string[] = [];
    const dim = this.store.index.dimension;
    for (const [position, chunk] of doc.chunks.entries()) {
      const id = chunkId(doc.documentId, chunk.chunkIndex);
      const push = (list: PreparedVector[], md: PineconeMetadata) => {
        const record: PineconeRecord = { id, values: compactValues(chunk.embedding!), metadata: md };
        list.push({
          stream: doc.stream,
          namespace: t.namespace,
          record,
          bytes: Buffer.byteLength(JSON.stringify(record), 'utf8') + 1,
          ...(chunk.chunkIndex === 0 ? { coverCount: Math.max(oldCount, chunkCount) } : {}),
        });
      };
      if (chunk.chunkIndex !== position) {
        // Chunk 0 records the count, and counts assume indexes 0..n-1.
        throw new SluiceError(
          `document ${JSON.stringify(doc.documentId)} of stream ${doc.stream}: chunk at position ${position} has index ${chunk.chunkIndex}`,
          { kind: 'internal' },
        );
      }
      const where = `stream ${doc.stream}, document ${JSON.stringify(doc.documentId)}, chunk ${chunk.chunkIndex}`;
      if (Buffer.byteLength(id, 'utf8') > MAX_ID_BYTES) {
        throw new RefusedDocument(`vector id of ${where} is ${Buffer.byteLength(id, 'utf8')} bytes; Pinecone allows ${MAX_ID_BYTES}`, {
          where,
          hint: 'use a shorter primary key for this stream',
        });
      }
      if (!chunk.embedding) {
        throw new SluiceError(`${where} has no embedding; Pinecone stores vectors`, {
          kind: 'config',
          where,
          hint: 'add an `embedding` block to the connection',
        });
      }
      if (chunk.embedding.length !== dim) {
        throw new SluiceError(`${where} has a ${chunk.embedding.length}-dimensional embedding; the Pinecone index has dimension ${dim}`, {
          kind: 'config',
          where,
          hint: `use an embedder that produces ${dim}-dimensional vectors`,
        });
      }
      let metadata = this.chunkMetadata(doc, chunk);
      if (chunk.chunkIndex === 0) metadata.chunk_count = chunkCount;
      const size = metadataBytes(metadata);
      if (size > MAX_METADATA_BYTES) {
        const stats = this.oversize.get(doc.stream) ?? { truncated: 0, skipped: 0 };
        this.oversize.set(doc.stream, stats);
        const policy = this.config.on_oversized_metadata;
        // Chunk 0 carries the document's chunk count, so `skip` keeps it without its content.
        const keepHead = policy === 'skip' && chunk.chunkIndex === 0;
        const fitted = policy === 'truncate_content' ? truncateContent(metadata) : keepHead ? withoutContent(metadata) : undefined;
        if (policy === 'fail' || ((policy === 'truncate_content' || keepHead) && !fitted)) {
          throw new RefusedDocument(`${where} has ${size} bytes of metadata; Pinecone allows ${MAX_METADATA_BYTES} per vector`, {
            where,
            hint:
              policy === 'fail'
                ? 'set on_oversized_metadata: truncate_content or skip, or use smaller chunks'
                : 'the metadata fields other than content are too large on their own: select fewer metadata fields, or set on_oversized_metadata: skip',
          });
        }
        if (policy === 'skip' && !keepHead) {
          stats.skipped++;
          skipped.push(id);
          this.ctx.logger.warn(
            { stream: doc.stream, id, bytes: size },
            `skipped chunk ${id} of stream ${doc.stream}: ${size} bytes of metadata exceed Pinecone's ${MAX_METADATA_BYTES}`,
          );
          continue;
        }
        metadata = fitted!;
        if (keepHead) {
          stats.skipped++;
          this.ctx.logger.warn(
            { stream: doc.stream, id, bytes: size },
            `stored chunk ${id} of stream ${doc.stream} without its content (content_skipped): ${size} bytes of metadata exceed Pinecone's ${MAX_METADATA_BYTES}`,
          );
          push(first, metadata);
          continue;
        }
        stats.truncated++;
        this.ctx.logger.warn(
          { stream: doc.stream, id, bytes: size, keptChars: String(metadata.content).length, originalChars: chunk.content.length },
          `truncated the content of chunk ${id} of stream ${doc.stream} to fit Pinecone's ${MAX_METADATA_BYTES}-byte metadata limit`,
        );
      }
      push(chunk.chunkIndex === 0 ? first : rest, metadata);
    }
    return skipped;
  }

  /** Groups vectors into requests of ≤ batch_size (≤ 1,000) vectors and ≤ max_request_bytes, per namespace. */
  private *upsertBatches(vectors: PreparedVector[]): Iterable<PreparedVector[]> {
    const maxCount = Math.min(this.config.batch_size, MAX_VECTORS_PER_UPSERT);
    const byNamespace = new Map<string, PreparedVector[]>();
    for (const v of vectors) {
      let list = byNamespace.get(v.namespace);
      if (!list) byNamespace.set(v.namespace, (list = []));
      list.push(v);
    }
    for (const [ns, list] of byNamespace) {
      const envelope = UPSERT_ENVELOPE_BYTES + Buffer.byteLength(JSON.stringify(ns), 'utf8');
      let batch: PreparedVector[] = [];
      let bytes = envelope;
      for (const v of list) {
        if (batch.length && (batch.length >= maxCount || bytes + v.bytes > this.config.max_request_bytes)) {
          yield batch;
          batch = [];
          bytes = envelope;
        }
        if (envelope + v.bytes > this.config.max_request_bytes) {
          throw new SluiceError(
            `vector ${v.record.id} alone is ${v.bytes} bytes, over max_request_bytes (${this.config.max_request_bytes})`,
            {
              kind: 'config',
              hint: 'raise max_request_bytes (Pinecone allows up to 2 MB)',
            },
          );
        }
        batch.push(v);
        bytes += v.bytes;
      }
      if (batch.length) yield batch;
    }
  }

  private async switchGeneration(t: StreamTarget) {
    const { pointer, replaces } = t.pending!;
    await this.store.writePointer(t.logical, pointer);
    t.switched = true;
    this.ctx.logger.info(
      { stream: t.name, namespace: pointer.current, generation: pointer.generation },
      `stream ${t.name}: readers switched to namespace "${pointer.current}"`,
    );
    // Readers that resolved the pointer just before the switch re-resolve when they see no hits
    // (search() does); the old generation goes only now, after the switch.
    await this.store.deleteNamespaceContents(replaces);
    t.seen = undefined;
  }

  /**
   * Reindex: when every stream's input completed, switch all of them in ONE pointer upsert, remove
   * the replaced generations (all but the one kept for rollback), then commit the last STATE. An
   * input that ended early switches nothing and commits nothing: readers stay on the old
   * generations, and the next run clears the partial ones before loading (startGeneration).
   *
   * Crash points (docs/pinecone.md "Reindex"): before the upsert, nothing changed for readers or
   * the state; after it and before the removals, the pointer still lists the replaced generations
   * in `previous` and the next overwrite or reindex removes them; after it and before the engine
   * saved the STATE, readers are on the new generations while the state still records the old
   * index identity: `sync` is then refused (exit 2, "the index was built with other settings") and
   * a re-run of `sluice reindex` builds and switches again (embeddings come from the cache), and
   * `--rollback` is refused because the kept generation's identity is not the one the state would
   * restore (see reindexRollback).
   */
  private async *finishReindex(): AsyncIterable<DestinationEvent> {
    const targets = [...this.targets.values()];
    const unfinished = targets.filter((t) => !t.complete).map((t) => t.name);
    if (unfinished.length) {
      this.ctx.logger.warn(
        { streams: unfinished },
        `reindex: input ended before stream(s) ${unfinished.join(', ')} completed; readers stay on the old namespaces, nothing is committed, and the partial load is discarded on the next run`,
      );
      return;
    }
    const recorded = this.reindexState?.connection.index;
    const identity = recorded ? identityTag(recorded) : undefined;
    const keep = this.reindex!.keepPrevious;
    const switched: Array<[string, GenerationPointer]> = [];
    const removals: string[] = [];
    for (const t of targets) {
      const before = t.before!;
      const old = before.current;
      // Without --keep-previous every replaced generation goes, also one kept by an earlier reindex.
      const remove = [
        ...t.pending!.stale,
        ...(keep ? [] : [old]),
        ...(before.kept !== undefined && before.kept !== old ? [before.kept] : []),
      ];
      switched.push([
        t.logical,
        {
          current: t.namespace,
          generation: t.pending!.pointer.generation,
          ...(remove.length ? { previous: remove } : {}),
          ...(keep
            ? {
                kept: old,
                ...(before.identity !== undefined ? { keptIdentity: before.identity } : {}),
                ...(before.embedder !== undefined ? { keptEmbedder: before.embedder } : {}),
              }
            : {}),
          ...(identity !== undefined ? { identity } : {}),
          ...(this.embedderName !== undefined ? { embedder: this.embedderName } : {}),
        },
      ]);
      removals.push(...remove);
    }
    await this.store.writePointers(switched);
    for (const t of targets) t.switched = true;
    this.ctx.logger.info(
      { namespaces: switched.map(([, p]) => p.current) },
      `reindex: readers switched to namespace(s) ${switched.map(([, p]) => `"${p.current}"`).join(', ')}${keep ? ' (the previous ones are kept for --rollback)' : ''}`,
    );
    for (const ns of new Set(removals)) await this.store.deleteNamespaceContents(ns);
    if (this.reindexState) yield { type: 'STATE_COMMITTED', state: this.reindexState.state, connection: this.reindexState.connection };
  }

  private reportOversize() {
    for (const [stream, s] of this.oversize) {
      if (!s.truncated && !s.skipped) continue;
      this.ctx.logger.warn(
        { stream, truncated: s.truncated, skipped: s.skipped },
        `stream ${stream}: ${s.truncated} chunk(s) had their content truncated and ${s.skipped} chunk(s) were skipped to respect Pinecone's 40 KB metadata limit (on_oversized_metadata: ${this.config.on_oversized_metadata})`,
      );
    }
  }
}

function notStored(stream: string, documentId: string, namespace: string, chunkIndex = 0): SluiceError {
  return new SluiceError(
    `document ${JSON.stringify(documentId)} of stream ${stream}: chunk ${chunkIndex} is not stored in Pinecone namespace "${namespace}", so it cannot be kept or have only its metadata updated`,
    {
      kind: 'destination',
      where: `stream ${stream}`,
      transient: true,
      hint: 'something changed the namespace during the sync, or a fresh write is not yet visible; run the sync again',
    },
  );
}

/** Waits for every task (so none is left running), then throws the first failure. */
async function settleAll(tasks: Array<Promise<unknown>>): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
