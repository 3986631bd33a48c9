// Deletion detection for full refresh + append_dedup (mark and sweep, docs/fingerprints.md): every
// document id the read produces is marked; when the source reports the stream complete, the stored
// documents that were not marked are deleted, before the stream's completion (and the STATE after
// it), so they are committed with it. An interrupted or failed read deletes nothing, and a swept
// stream is always read from its beginning (withoutSweptProgress).
import { randomBytes, createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Database, RootDatabase } from 'lmdb';
import { open } from './lmdb-lazy.ts';
import type { LoadedConnection } from '../config/load.ts';
import type { ConnectorContext, DestinationMessage, DocumentFingerprint, Logger, SourceState } from '../protocol/connector.ts';
import { SluiceError, describeUnknown, withContext } from '../protocol/errors.ts';
import { withListedFingerprint } from './unchanged.ts';
import type { ConfiguredCatalog } from '../protocol/messages.ts';

export interface SweepOptions {
  conn: Pick<LoadedConnection, 'config' | 'destination' | 'destinationConfig' | 'index'>;
  ctx: ConnectorContext;
  catalog: ConfiguredCatalog;
  /** Per stream: records_deleted is counted, records_failed read (a stream with failed records is not swept). */
  stats: Record<string, { records_deleted: number; records_failed?: number }>;
  signal: AbortSignal;
  logger: Logger;
  /** A worker of a sharded run reads only part of a stream: it never sweeps. */
  sharded: boolean;
  /**
   * List the stored documents while the streams are read, from the stage's start (a sync: its
   * writer is open, so an embedded database is joined). Otherwise (the dry run, which lists them itself for its plan) at the end.
   */
  listWhileReading?: boolean;
  /** Keys a set keeps in memory before it moves to disk (default IN_MEMORY_KEYS; tests set it low). */
  inMemoryKeys?: number;
  /**
   * The unchanged stage follows (./unchanged.ts): once a stream's listing is complete, the first
   * occurrence of each document in the read carries its listed fingerprint (withListedFingerprint),
   * so the one listing serves both the sweep and the skip decisions, without a look-up per batch.
   */
  annotate?: boolean;
}

/** Streams that get deletion detection in this run (empty when the destination cannot list documents). */
export function sweptStreams(opts: Pick<SweepOptions, 'conn' | 'catalog' | 'sharded'>): string[] {
  if (opts.sharded || !opts.conn.destination.documents) return [];
  return opts.catalog.streams
    .filter((s) => s.sync_mode === 'full_refresh' && s.destination_sync_mode === 'append_dedup')
    .map((s) => s.stream.name);
}

/**
 * A swept stream is always read from its beginning: saved progress of an interrupted full refresh
 * (a resume position) is not used, because the ids the interrupted read produced are not known to
 * this run, and a sweep after a resumed read would delete them. With a destination that keeps
 * fingerprints, re-reading what did not change costs no embedding and no writes.
 */
export function withoutSweptProgress(state: SourceState | undefined, swept: string[]): SourceState | undefined {
  if (!state || !swept.some((s) => state.streams[s] !== undefined)) return state;
  return { ...state, streams: Object.fromEntries(Object.entries(state.streams).filter(([k]) => !swept.includes(k))) };
}

/** Keys a set holds in memory before it moves to the scratch LMDB database (a few MB at most). */
const IN_MEMORY_KEYS = 50_000;
/** The sweep's DELETEs are handed on in arrays of at most this many (memory stays bounded). */
const DELETES_PER_BATCH = 1_000;
/** On disk, keys are written in one synchronous LMDB transaction per this many. */
const KEYS_PER_COMMIT = 2_000;
/** Document ids up to this many UTF-16 units are keys as they are; longer ones are hashed (LMDB's key limit). */
const MAX_RAW_ID = 400;

const SURROGATE = /[\uD800-\uDFFF]/;

/** An LMDB key for a document id: ":<id>", or "#<sha256>" for an id too long for a key or with surrogates (a lone one would be stored as U+FFFD and could meet another id). */
const diskKey = (id: string) =>
  id.length <= MAX_RAW_ID && !SURROGATE.test(id) ? `:${id}` : `#${createHash('sha256').update(id, 'utf16le').digest('base64')}`; // utf16le: a lone surrogate hashes as itself

/**
 * The id as an LMDB value that gives it back exactly: LMDB stores strings as UTF-8, where a lone
 * surrogate would become U+FFFD; such ids are kept in their JSON form (which escapes it).
 */
const diskValue = (id: string) => (SURROGATE.test(id) ? `j${JSON.stringify(id)}` : `r${id}`);
const idOf = (value: string): string => (value[0] === 'j' ? (JSON.parse(value.slice(1)) as string) : value.slice(1));

/**
 * A set of document ids for the sweep: in memory while small (most streams: no per-document
 * database work, and the id itself is the key) and in a scratch LMDB database once it grows past
 * IN_MEMORY_KEYS (keyed by diskKey, the id as the value), so memory stays bounded however large
 * the stream (invariant 6).
 */
export class SpillingSet {
  private memory: Set<string> | undefined = new Set();
  private pending: string[] = [];
  /** The pending ids as a set, so has() needs no commit per call. */
  private pendingIds = new Set<string>();
  private db: Database<string, string> | undefined;

  constructor(
    private readonly disk: () => { root: RootDatabase; db: Database<string, string> },
    private readonly inMemoryKeys = IN_MEMORY_KEYS,
  ) {}

  /** Whether the ids are on disk (for tests). */
  get spilled(): boolean {
    return !this.memory;
  }

  add(id: string): void {
    this.addNew(id);
  }

  /** Adds the id; whether it was not in the set before. */
  addNew(id: string): boolean {
    if (this.memory) {
      const size = this.memory.size;
      this.memory.add(id);
      if (this.memory.size === size) return false;
      if (this.memory.size > this.inMemoryKeys) {
        this.pending = [...this.memory];
        this.pendingIds = new Set(this.pending);
        this.memory = undefined;
        this.flush();
      }
      return true;
    }
    if (this.has(id)) return false;
    this.pending.push(id);
    this.pendingIds.add(id);
    if (this.pending.length >= KEYS_PER_COMMIT) this.flush();
    return true;
  }

  private flush(): void {
    if (!this.pending.length) return;
    const { root, db } = this.disk();
    this.db = db;
    const batch = this.pending;
    this.pending = [];
    this.pendingIds.clear();
    root.transactionSync(() => {
      for (const id of batch) db.putSync(diskKey(id), diskValue(id));
    });
  }

  has(id: string): boolean {
    if (this.memory) return this.memory.has(id);
    return this.pendingIds.has(id) || (!!this.db && this.db.doesExist(diskKey(id)));
  }

  *ids(): Generator<string> {
    if (this.memory) return yield* this.memory;
    this.flush();
    for (const { value } of this.db!.getRange()) yield idOf(value);
  }
}

/**
 * The stored documents of a swept stream with their listed fingerprints (null: listed without one),
 * bounded like SpillingSet: in memory while small, in the scratch LMDB database (keyed by diskKey,
 * `[id, fingerprint]` as JSON, which keeps any id exact) once past the limit.
 */
export class SpillingMap {
  private memory: Map<string, DocumentFingerprint | null> | undefined = new Map();
  private pending = new Map<string, DocumentFingerprint | null>();
  private db: Database<string, string> | undefined;
  // Listed fingerprints mostly share their metadata hash and embedder tag: one string each in memory.
  private lastMetadata = '';
  private lastEmbedder: string | undefined;

  constructor(
    private readonly disk: () => { root: RootDatabase; db: Database<string, string> },
    private readonly inMemoryKeys = IN_MEMORY_KEYS,
  ) {}

  set(id: string, fingerprint: DocumentFingerprint | null): void {
    if (fingerprint) fingerprint = this.shared(fingerprint);
    if (this.memory) {
      this.memory.set(id, fingerprint);
      if (this.memory.size > this.inMemoryKeys) {
        this.pending = this.memory;
        this.memory = undefined;
        this.flush();
      }
      return;
    }
    this.pending.set(id, fingerprint);
    if (this.pending.size >= KEYS_PER_COMMIT) this.flush();
  }

  /** The listed fingerprint (null: listed without one); undefined when the id was not listed. */
  get(id: string): DocumentFingerprint | null | undefined {
    if (this.memory) return this.memory.get(id);
    const p = this.pending.get(id);
    if (p !== undefined) return p;
    const value = this.db?.get(diskKey(id));
    return value === undefined ? undefined : (JSON.parse(value) as [string, DocumentFingerprint | null])[1];
  }

  *ids(): Generator<string> {
    if (this.memory) return yield* this.memory.keys();
    this.flush();
    for (const { value } of this.db!.getRange()) yield (JSON.parse(value) as [string])[0];
  }

  private shared(f: DocumentFingerprint): DocumentFingerprint {
    const metadata = f.metadata === this.lastMetadata ? this.lastMetadata : (this.lastMetadata = f.metadata);
    const embedder = f.embedder === this.lastEmbedder ? this.lastEmbedder : (this.lastEmbedder = f.embedder);
    return embedder === undefined ? { content: f.content, metadata } : { content: f.content, metadata, embedder };
  }

  private flush(): void {
    if (!this.pending.size) return;
    const { root, db } = this.disk();
    this.db = db;
    const batch = this.pending;
    this.pending = new Map();
    root.transactionSync(() => {
      for (const [id, f] of batch) db.putSync(diskKey(id), JSON.stringify([id, f]));
    });
  }
}

/** The stored documents of one swept stream, listed in the background while the stream is read. */
interface Listing {
  /** Resolves when the listing is complete (count of stored documents); rejects with its error. */
  done: Promise<number>;
  /** Set when every stored document is listed (not when the listing stopped early or failed). */
  complete: boolean;
}

/**
 * Passes messages through, marking the document ids of swept streams (in memory, then in a
 * temporary LMDB database in the connection's work directory once there are many, so memory does
 * not grow with the stream), and inserts a DELETE for every stored document the read did not
 * produce before the stream's STREAM_COMPLETE. Messages come and go in arrays (as documents() hands
 * them on; the sweep's DELETEs in arrays of up to DELETES_PER_BATCH), in the same order.
 *
 * In a sync, the stored documents are listed while the streams are read (from the start of the stage,
 * one stream after the other, kept the same way as the marks), not after it: the listing's round
 * trips overlap the read instead of adding to its end, and with SweepOptions.annotate the listing
 * also answers the unchanged stage. That is the same answer: a document stored before this run and not touched
 * by it is listed whenever the listing runs; one this run wrote or deleted is marked (so it is
 * never deleted, listed or not); nothing else writes to the connection's destination meanwhile
 * (the connection lock). The share checked against max_delete_share is of the documents listed.
 */
export async function* sweepStage(input: AsyncIterable<DestinationMessage[]>, opts: SweepOptions): AsyncGenerator<DestinationMessage[]> {
  const swept = new Set(sweptStreams(opts));
  if (!swept.size) return yield* input;
  const streamCount = swept.size;
  const name = opts.conn.config.name;
  const maxShare = opts.conn.config.processing?.max_delete_share ?? 0.5;
  const dir = join(opts.ctx.workDir, `sweep-${process.pid}-${randomBytes(4).toString('hex')}`);
  // Per swept stream: the ids the read produced, and the ids of the stored documents.
  let root: RootDatabase | undefined;
  let dbCount = 0;
  const onDisk = () => {
    let d: Database<string, string> | undefined;
    return () => {
      // A scratch database: no durability needed (removed at the end, and ignored after a crash).
      root ??= open({ path: dir, noSync: true, maxDbs: 2 * streamCount });
      return { root, db: (d ??= root.openDB<string, string>({ name: `keys-${dbCount++}` })) };
    };
  };
  const sets = new Map<string, { seen: SpillingSet; stored: SpillingMap }>();
  const setsOf = (stream: string) => {
    let d = sets.get(stream);
    if (!d)
      sets.set(stream, (d = { seen: new SpillingSet(onDisk(), opts.inMemoryKeys), stored: new SpillingMap(onDisk(), opts.inMemoryKeys) }));
    return d;
  };

  const listings = new Map<string, Listing>();
  /** Set when the stage ends: a listing still running stops. */
  let closed = false;
  const where = (stream: string) => `connection ${name}, destination ${opts.conn.config.destination.type}, stream ${stream}`;
  const startListing = (stream: string): Listing => {
    const listing = { complete: false } as Listing;
    listing.done = (async () => {
      const { stored } = setsOf(stream);
      let count = 0;
      try {
        for await (const d of opts.conn.destination.documents!(opts.conn.destinationConfig, opts.ctx, stream)) {
          if (opts.signal.aborted || closed) return count;
          count++;
          stored.set(d.documentId, d.fingerprint ?? null);
        }
        listing.complete = true;
        return count;
      } catch (err) {
        throw withContext(err, `${where(stream)} (listing stored documents to find those the source no longer has)`);
      }
    })();
    listing.done.catch(() => undefined); // observed at the stream's completion (or not at all when the read fails)
    listings.set(stream, listing);
    return listing;
  };

  const sweep = async function* (stream: string): AsyncGenerator<DestinationMessage> {
    const stats = opts.stats[stream];
    if (opts.signal.aborted) return;
    if (stats?.records_failed) {
      opts.logger.warn(
        { connection: name, stream },
        `connection ${name}, stream ${stream}: ${stats.records_failed} records failed in this run, so their ids are not all known; documents the source no longer has are not deleted this time`,
      );
      return;
    }
    const storedCount = await (listings.get(stream) ?? startListing(stream)).done;
    if (opts.signal.aborted) return;
    const { seen, stored } = setsOf(stream);
    let count = 0;
    for (const id of stored.ids()) if (!seen.has(id)) count++;
    if (!count) return;
    if (count / storedCount > maxShare) {
      throw new SluiceError(
        `stream ${stream}: the complete read no longer has ${count} of the ${storedCount} stored documents (${Math.round((100 * count) / storedCount)}%); deleting them is more than processing.max_delete_share (${maxShare}) allows, so nothing was deleted`,
        {
          kind: 'config',
          where: `connections[${opts.conn.index}].processing.max_delete_share`,
          hint: `check that the source reads the right table/path and filters; if the source really lost that many documents, raise processing.max_delete_share (1 turns the check off) and sync again`,
        },
      );
    }
    opts.logger.info({ connection: name, stream, count }, `stream ${stream}: deleting ${count} documents the source no longer has`);
    for (const id of stored.ids()) {
      if (seen.has(id)) continue;
      if (stats) stats.records_deleted++;
      yield { type: 'DELETE', stream, documentId: id };
    }
  };

  // A sync lists ahead: from the start, one swept stream after the other in catalog order (the
  // order sources read them), so a listing is usually complete before its stream's documents
  // arrive; a stream whose documents come first is listed at once.
  if (opts.listWhileReading)
    void (async () => {
      for (const s of opts.catalog.streams) {
        if (closed || opts.signal.aborted) return;
        const stream = s.stream.name;
        if (swept.has(stream)) await (listings.get(stream) ?? startListing(stream)).done.catch(() => undefined);
      }
    })();

  try {
    for await (const batch of input) {
      // The array goes on as it is, but for a swept stream's completion: its DELETEs go before it.
      let from = 0;
      for (let i = 0; i < batch.length; i++) {
        const m = batch[i];
        if ((m.type === 'DOCUMENT' || m.type === 'DELETE') && swept.has(m.stream)) {
          const listing = listings.get(m.stream) ?? (opts.listWhileReading ? startListing(m.stream) : undefined);
          const { seen, stored } = setsOf(m.stream);
          // A DELETE's id is marked too: the source deleted it already, the sweep must not again.
          const first = seen.addNew(m.documentId);
          // The listing holds what was committed before this run touched the document only for its
          // first occurrence in the read (a later one may follow this run's own write of it, which the
          // listing may or may not show): only that one carries it; the unchanged stage looks up the rest.
          if (first && opts.annotate && listing?.complete && m.type === 'DOCUMENT')
            withListedFingerprint(m, stored.get(m.documentId) ?? null);
        } else if (m.type === 'STREAM_COMPLETE' && swept.has(m.stream)) {
          swept.delete(m.stream);
          if (i > from) yield batch.slice(from, i);
          from = i;
          let deletes: DestinationMessage[] = [];
          for await (const d of sweep(m.stream)) {
            deletes.push(d);
            if (deletes.length >= DELETES_PER_BATCH) {
              yield deletes;
              deletes = [];
            }
          }
          if (deletes.length) yield deletes;
        }
      }
      if (from === 0) yield batch;
      else yield batch.slice(from);
    }
  } finally {
    closed = true;
    // A listing still running (the read failed or was interrupted) stops at its next document.
    await Promise.all([...listings.values()].map((l) => l.done.catch(() => undefined)));
    if (root) await root.close().catch((e) => opts.logger.warn({ err: describeUnknown(e) }, 'closing the sweep database failed'));
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
