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
import type {
  ConnectorContext,
  DestinationMessage,
  DigestCheck,
  DocumentFingerprint,
  Logger,
  SourceState,
  StoredDigests,
  StoredDocument,
} from '../protocol/connector.ts';
import { documentId } from '../protocol/identity.ts';
import type { Fingerprinter } from './fingerprint.ts';
import { SluiceError, describeUnknown, withContext } from '../protocol/errors.ts';
import { withListedFingerprint } from './unchanged.ts';
import type { ConfiguredCatalog, ConfiguredStream } from '../protocol/messages.ts';

type DocumentMessage = Extract<DestinationMessage, { type: 'DOCUMENT' }>;

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
  /**
   * With annotate: how long a stream's first document waits for the stream's listing to complete
   * (default LISTING_WAIT_MS; 0: not at all). See sweepStage.
   */
  listingWaitMs?: number;
  /**
   * With annotate: offered each annotated document (its first occurrence in the read) with its
   * listed fingerprint; true when it is unchanged and was counted as such
   * (UnchangedStage.dropListedUnchanged): it is then not passed on at all. Most documents of an
   * unchanged re-sync end here rather than going through the unchanged stage's grouping and
   * decisions only to be dropped there.
   */
  dropUnchanged?: (doc: DocumentMessage, listed: DocumentFingerprint | null) => boolean;
  /** Source digests of this run (a sync whose source and destination keep them): answered from this stage's listings. */
  digests?: SweptDigests;
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

/**
 * Keys a set holds in memory before it moves to the scratch LMDB database: ~250 bytes a key with
 * short ids, so tens of MB at most. Not lower: once on disk, every listed and every read id is an
 * LMDB write or read, and the mapped pages count in RSS too (an unchanged re-sync of 100 000
 * documents with 50 000 here took 2.4 s and 167 MB, with them all in memory 1.6 s and 125 MB).
 */
const IN_MEMORY_KEYS = 250_000;
/** The sweep's DELETEs are handed on in arrays of at most this many (memory stays bounded). */
const DELETES_PER_BATCH = 1_000;
/**
 * With annotate, the read waits this long at most, once per stream, for the stream's listing: the
 * documents read before the listing completes are looked up by the unchanged stage, which asks the
 * destination again for what the listing is fetching anyway.
 */
export const LISTING_WAIT_MS = 2_000;
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

  /** Whether no id was added (cheaper than has()). */
  get empty(): boolean {
    return !!this.memory && this.memory.size === 0;
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

/** StreamMarks.mark's answer (and SpillingMap's value) for an id the light listing listed: its fingerprint is looked up. */
export const UNFETCHED = Symbol('unfetched');
/** What SpillingMap keeps of an id on disk: its fingerprint, or the light listing's source. */
type Stored = DocumentFingerprint | null | { unfetched: string | null };
const storedSource = (v: Stored | undefined): string | undefined => (v && 'unfetched' in v ? (v.unfetched ?? undefined) : v?.source);

/**
 * The stored documents of a swept stream with their listed fingerprints (null: listed without one),
 * bounded like SpillingSet: in memory while small, in the scratch LMDB database (keyed by diskKey,
 * `[id, fingerprint]` as JSON, which keeps any id exact) once past the limit.
 *
 * In memory, each listed id maps to a slot number; the slot holds its fingerprint and its mark
 * (StreamMarks: a listed id the read produced is marked here, not added to the seen set, so an
 * unchanged read costs one hash-table insert per document, not two). A fingerprint whose metadata
 * hash and embedder tag are the stream's common ones (those of the first listed; in a stream whose
 * metadata do not vary, all) is kept as its content hash alone: no object per document (fewer
 * allocations, less for the GC to trace); get() builds the fingerprint again. Its source digest, when
 * it has one with the stream's common tag (that of the first listed source), is kept beside it in
 * `sources` as the listed string itself (no copy); a source with another tag makes it an object.
 *
 * A document the light listing listed (Destination.documentSources, setSourceNew) has only its
 * source: its value is UNFETCHED, its source (any tag) in `sources`. A later whole listing of the
 * stream replaces it (setNew on the same id).
 */
export class SpillingMap {
  private slots: Map<string, number> | undefined = new Map();
  private values: (string | DocumentFingerprint | null | typeof UNFETCHED)[] = [];
  /**
   * Per slot whose value is a content hash: its source (undefined: none); it starts with sourcePrefix.
   * Per UNFETCHED slot: its listed source, with any tag.
   */
  private sources: (string | undefined)[] = [];
  /** `<tag>:` of the first listed source ('' when it had no tag: then no source is kept compact). */
  private sourcePrefix: string | undefined;
  private marks = new Uint8Array(1024);
  private pending = new Map<string, Stored>();
  private db: Database<string, string> | undefined;
  private distinct = 0;
  /** The common metadata hash and embedder tag (set by the first listed fingerprint). */
  private common: { metadata: string; embedder: string | undefined } | undefined;

  /** `onSpill` gets each id marked in memory when the map moves to disk (from then on, marks are kept elsewhere). */
  constructor(
    private readonly disk: () => { root: RootDatabase; db: Database<string, string> },
    private readonly inMemoryKeys = IN_MEMORY_KEYS,
    private readonly onSpill: (markedId: string) => void = () => undefined,
  ) {}

  /** How many distinct ids were set. */
  get size(): number {
    return this.distinct;
  }

  /** Whether the ids are on disk (then slotOf finds none). */
  get spilled(): boolean {
    return !this.slots;
  }

  /** Sets the id's fingerprint (in memory, marked when `marked`); whether the id was not set before. */
  setNew(id: string, fingerprint: DocumentFingerprint | null, marked = false): boolean {
    if (this.slots) {
      const value = fingerprint ? this.compact(fingerprint) : null;
      return this.put(id, value, typeof value === 'string' ? fingerprint!.source : undefined, marked);
    }
    return this.putOnDisk(id, fingerprint);
  }

  /** setNew for a document the light listing listed: its source only (undefined: none), the rest UNFETCHED. */
  setSourceNew(id: string, source: string | undefined, marked = false): boolean {
    if (this.slots) return this.put(id, UNFETCHED, source, marked);
    return this.putOnDisk(id, { unfetched: source ?? null });
  }

  private put(
    id: string,
    value: string | DocumentFingerprint | null | typeof UNFETCHED,
    source: string | undefined,
    marked: boolean,
  ): boolean {
    const slots = this.slots!;
    const slot = slots.get(id);
    if (slot !== undefined) {
      this.values[slot] = value;
      this.sources[slot] = source;
      if (marked) this.marks[slot] = 1;
      return false;
    }
    const next = this.values.length;
    this.values.push(value);
    this.sources.push(source);
    if (next === this.marks.length) {
      const grown = new Uint8Array(2 * next);
      grown.set(this.marks);
      this.marks = grown;
    }
    if (marked) this.marks[next] = 1;
    slots.set(id, next);
    this.distinct++;
    if (slots.size > this.inMemoryKeys) this.spill();
    return true;
  }

  private putOnDisk(id: string, value: Stored): boolean {
    const fresh = !this.has(id);
    this.pending.set(id, value);
    if (fresh) this.distinct++;
    if (this.pending.size >= KEYS_PER_COMMIT) this.flush();
    return fresh;
  }

  /** In memory: the id's slot (undefined: not listed, or on disk). */
  slotOf(id: string): number | undefined {
    return this.slots?.get(id);
  }

  isMarked(slot: number): boolean {
    return this.marks[slot] === 1;
  }

  mark(slot: number): void {
    this.marks[slot] = 1;
  }

  /**
   * The slot's listed fingerprint, but `own` itself when they are equal (content, metadata and
   * embedder): an unchanged document, the usual case of a re-sync, gets no fingerprint object built.
   */
  fingerprintAtOr(slot: number, own: DocumentFingerprint | undefined): DocumentFingerprint | null | typeof UNFETCHED {
    const v = this.values[slot];
    if (own !== undefined && typeof v === 'string' && v === own.content) {
      const { metadata, embedder } = this.common!;
      if (own.metadata === metadata && own.embedder === embedder && own.source === this.sources[slot]) return own;
    }
    return this.expand(slot);
  }

  /** Whether `prefix` (`<tag>:`) is the common one of the compact sources (SourceDigestCheck asks once per stream). */
  isSourcePrefix(prefix: string): boolean {
    return this.sourcePrefix === prefix;
  }

  /**
   * Whether the slot's listed source is `prefix + digest`, without building that string (this runs
   * for every row of an unchanged re-sync). `commonPrefix`: isSourcePrefix(prefix).
   */
  hasSource(slot: number, prefix: string, digest: string, commonPrefix: boolean): boolean {
    const v = this.values[slot];
    const length = prefix.length + digest.length;
    if (typeof v === 'string') {
      // Compact: its source starts with the common prefix, so with that one only its length and end need checking.
      const source = this.sources[slot];
      return source !== undefined && source.length === length && (commonPrefix || source.startsWith(prefix)) && source.endsWith(digest);
    }
    const source = v === UNFETCHED ? this.sources[slot] : v?.source;
    return source !== undefined && source.length === length && source.startsWith(prefix) && source.endsWith(digest);
  }

  /** How many listed documents have a source with this prefix (`<tag>:`). */
  countSources(prefix: string): number {
    let n = 0;
    if (this.slots) {
      const common = this.sourcePrefix === prefix;
      for (let slot = 0; slot < this.values.length; slot++) {
        const v = this.values[slot];
        const compact = typeof v === 'string';
        const source = compact || v === UNFETCHED ? this.sources[slot] : v?.source;
        if (source !== undefined && ((compact && common) || source.startsWith(prefix))) n++;
      }
      return n;
    }
    this.flush();
    for (const { value } of this.db!.getRange()) if (storedSource((JSON.parse(value) as [string, Stored])[1])?.startsWith(prefix)) n++;
    return n;
  }

  /** Whether the id was listed. */
  has(id: string): boolean {
    if (this.slots) return this.slots.has(id);
    return this.pending.has(id) || (!!this.db && this.db.doesExist(diskKey(id)));
  }

  /**
   * The listed fingerprint (null: listed without one; UNFETCHED: listed by the light listing);
   * undefined when the id was not listed.
   */
  get(id: string): DocumentFingerprint | null | typeof UNFETCHED | undefined {
    if (this.slots) {
      const slot = this.slots.get(id);
      return slot === undefined ? undefined : this.expand(slot);
    }
    const v = this.onDisk(id);
    return v && 'unfetched' in v ? UNFETCHED : v;
  }

  /** The listed source of an id (undefined: not listed, or listed without one). */
  sourceOf(id: string): string | undefined {
    if (this.slots) {
      const slot = this.slots.get(id);
      if (slot === undefined) return undefined;
      const v = this.values[slot];
      return typeof v === 'string' || v === UNFETCHED ? this.sources[slot] : v?.source;
    }
    return storedSource(this.onDisk(id));
  }

  /** What the map holds for an id once on disk (undefined: not listed). */
  private onDisk(id: string): Stored | undefined {
    const p = this.pending.get(id);
    if (p !== undefined) return p;
    const value = this.db?.get(diskKey(id));
    return value === undefined ? undefined : (JSON.parse(value) as [string, Stored])[1];
  }

  *ids(): Generator<string> {
    if (this.slots) return yield* this.slots.keys();
    this.flush();
    for (const { value } of this.db!.getRange()) yield (JSON.parse(value) as [string])[0];
  }

  /** The listed ids not marked: in memory by their slot's mark, on disk those `seen` does not have. */
  *unmarked(seen: SpillingSet): Generator<string> {
    if (this.slots) {
      for (const [id, slot] of this.slots) if (this.marks[slot] !== 1) yield id;
      return;
    }
    for (const id of this.ids()) if (!seen.has(id)) yield id;
  }

  private spill(): void {
    const slots = this.slots!;
    this.slots = undefined;
    for (const [id, slot] of slots) {
      const v = this.expand(slot);
      this.pending.set(id, v === UNFETCHED ? { unfetched: this.sources[slot] ?? null } : v);
      if (this.marks[slot] === 1) this.onSpill(id);
    }
    this.values = [];
    this.sources = [];
    this.marks = new Uint8Array(0);
    this.flush();
  }

  private compact(f: DocumentFingerprint): string | DocumentFingerprint {
    this.common ??= { metadata: f.metadata, embedder: f.embedder };
    const source = f.source;
    if (source !== undefined) this.sourcePrefix ??= source.slice(0, source.indexOf(':') + 1);
    if (
      f.metadata === this.common.metadata &&
      f.embedder === this.common.embedder &&
      (source === undefined || (this.sourcePrefix !== '' && source.startsWith(this.sourcePrefix!)))
    )
      return f.content;
    const copy: DocumentFingerprint = { content: f.content, metadata: f.metadata };
    if (f.embedder !== undefined) copy.embedder = f.embedder;
    if (source !== undefined) copy.source = source;
    return copy;
  }

  private expand(slot: number): DocumentFingerprint | null | typeof UNFETCHED {
    const v = this.values[slot];
    if (typeof v !== 'string') return v;
    const { metadata, embedder } = this.common!;
    const f: DocumentFingerprint = embedder === undefined ? { content: v, metadata } : { content: v, metadata, embedder };
    const source = this.sources[slot];
    if (source !== undefined) f.source = source;
    return f;
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

/** StreamMarks.mark's answer for an id the read produced before. */
export const REPEATED = Symbol('repeated');
/** StreamMarks.mark's answer for a listed id when its fingerprint was not asked for. */
export const LISTED = Symbol('listed');

/**
 * One swept stream's marks and listing. A listed id (in memory) is marked in its slot of `stored`;
 * other ids the read produced (not listed yet, or once `stored` is on disk) go to `seen`; the
 * listing marks an id `seen` has. listedAndSeen counts the ids both listed and marked, each once
 * (whichever of the two comes second counts it): when it equals the listed ids, no stored document
 * is unmarked, and the sweep walks nothing.
 */
export class StreamMarks {
  readonly seen: SpillingSet;
  readonly stored: SpillingMap;
  listedAndSeen = 0;

  constructor(disk: () => () => { root: RootDatabase; db: Database<string, string> }, inMemoryKeys = IN_MEMORY_KEYS) {
    this.seen = new SpillingSet(disk(), inMemoryKeys);
    // Moving to disk, the map's marks move to `seen`, where marks are kept from then on.
    this.stored = new SpillingMap(disk(), inMemoryKeys, (id) => this.seen.add(id));
  }

  /**
   * Marks an id the read produced: REPEATED when it was marked before; otherwise, with
   * `fingerprint`, its listed fingerprint (null: listed without one; undefined: not listed (yet)),
   * without, LISTED or undefined. `own` (the document's fingerprint) is what is returned when the
   * listed one equals it, rather than a copy.
   */
  mark(
    id: string,
    fingerprint: boolean,
    own?: DocumentFingerprint,
  ): DocumentFingerprint | null | undefined | typeof REPEATED | typeof LISTED | typeof UNFETCHED {
    const { stored } = this;
    const slot = stored.slotOf(id);
    if (slot !== undefined) {
      if (stored.isMarked(slot)) return REPEATED;
      stored.mark(slot);
      this.listedAndSeen++;
      return fingerprint ? stored.fingerprintAtOr(slot, own) : LISTED;
    }
    if (!this.seen.addNew(id)) return REPEATED;
    if (!stored.spilled) return undefined; // in memory and not listed (yet): the listing marks it
    if (fingerprint) {
      const listed = stored.get(id);
      if (listed !== undefined) this.listedAndSeen++;
      return listed;
    }
    if (!stored.has(id)) return undefined;
    this.listedAndSeen++;
    return LISTED;
  }

  /**
   * Marks a listed id not marked before whose listed source is `prefix + digest` (DigestCheck.unchanged);
   * whether it did. `commonPrefix`: stored.isSourcePrefix(prefix).
   */
  markIfSource(id: string, prefix: string, digest: string, commonPrefix: boolean): boolean {
    const { stored } = this;
    const slot = stored.slotOf(id);
    if (slot !== undefined) {
      if (stored.isMarked(slot) || !stored.hasSource(slot, prefix, digest, commonPrefix)) return false;
      stored.mark(slot);
      this.listedAndSeen++;
      return true;
    }
    if (!stored.spilled) return false; // not listed
    const source = stored.sourceOf(id);
    if (source === undefined || source !== prefix + digest) return false;
    if (!this.seen.addNew(id)) return false; // marked before
    this.listedAndSeen++;
    return true;
  }

  /** A listed document. */
  list(id: string, fingerprint: DocumentFingerprint | null): void {
    const seen = !this.seen.empty && this.seen.has(id);
    if (this.stored.setNew(id, fingerprint, seen) && seen) this.listedAndSeen++;
  }

  /** A document the light listing listed (its source only). */
  listSource(id: string, source: string | undefined): void {
    const seen = !this.seen.empty && this.seen.has(id);
    if (this.stored.setSourceNew(id, source, seen) && seen) this.listedAndSeen++;
  }

  /** Whether every listed id was marked. */
  get allMarked(): boolean {
    return this.listedAndSeen === this.stored.size;
  }

  /** The listed ids the read did not produce. */
  unmarked(): Generator<string> {
    return this.stored.unmarked(this.seen);
  }
}

/** What SweptDigests needs of the running sweep stage. */
interface SweepAccess {
  /** The stream's listing (started now if it was not yet). */
  listing(stream: string): Listing;
  marks(stream: string): StreamMarks;
  /** Lists a lightly listed stream again, whole (the light listing's sources stay until replaced). */
  listWhole(stream: string): Listing;
}

/** Counters SweptDigests keeps (fields of StreamStats). */
interface DigestCounters {
  records_read: number;
  records_unchanged?: number;
}

/**
 * ctx.storedDigests of a sync (docs/fingerprints.md, "Source digests"): answered from the sweep's
 * listing of each swept stream (listed ahead, SweepOptions.listWhileReading). A row the check
 * accepts is marked like a document the read produced, so the sweep keeps it.
 */
export class SweptDigests implements StoredDigests {
  private readonly swept: Set<string>;
  private readonly byName: Map<string, ConfiguredStream>;
  /** Streams the source asked about (forStream), and the rows each check did not skip. */
  private readonly asked = new Map<string, { rejected: number }>();
  private access: SweepAccess | undefined;
  private attached: Promise<SweepAccess>;
  private onAttach: (a: SweepAccess) => void = () => undefined;

  constructor(
    private readonly opts: Pick<SweepOptions, 'conn' | 'catalog' | 'sharded'> & {
      fingerprinter: Fingerprinter;
      stats: Record<string, DigestCounters>;
    },
  ) {
    this.swept = new Set(sweptStreams(opts));
    this.byName = new Map(opts.catalog.streams.map((s) => [s.stream.name, s]));
    this.attached = new Promise((resolve) => (this.onAttach = resolve));
  }

  /** Called by sweepStage once it runs (before it reads anything, so before the source is asked to read). */
  attach(access: SweepAccess): void {
    this.access = access;
    this.onAttach(access);
  }

  /**
   * Whether a stream's rows can be checked by digest (swept, with a primary key): then the sweep
   * lists it lightly where the destination can (Destination.documentSources).
   */
  checksByKey(stream: string): boolean {
    // Without a primary key a document's id is its content's hash: no row can be checked by key.
    return this.swept.has(stream) && !!this.byName.get(stream)?.primary_key?.length;
  }

  /** Whether the source asked forStream(stream) (so far). */
  wasAsked(stream: string): boolean {
    return this.asked.has(stream);
  }

  /** Rows of the stream its check did not skip (so far): each is read in full. */
  rejected(stream: string): number {
    return this.asked.get(stream)?.rejected ?? 0;
  }

  async forStream(stream: string): Promise<DigestCheck | undefined> {
    const counts = { rejected: 0 };
    this.asked.set(stream, counts);
    const cs = this.byName.get(stream);
    const pk = cs?.primary_key ?? [];
    if (!cs || !this.checksByKey(stream)) return undefined;
    const access = this.access ?? (await this.attached);
    const listing = access.listing(stream);
    try {
      await listing.done;
    } catch {
      return undefined; // the sweep reports the listing's error at the stream's completion
    }
    if (!listing.complete) return undefined;
    const marks = access.marks(stream);
    const prefix = `${this.opts.fingerprinter.sourceTag(cs)}:`;
    const listed = marks.stored.size;
    const skipping = listed > 0 && 2 * marks.stored.countSources(prefix) >= listed;
    // Every row will be read in full, each needing its whole fingerprint: one listing of them all
    // costs less than looking them up.
    if (!skipping && listing.light && listed > 0) access.listWhole(stream);
    const stats = this.opts.stats[stream];
    return new StreamDigestCheck(skipping, pk, prefix, marks, marks.stored.isSourcePrefix(prefix), stats, counts);
  }
}

/** One swept stream's DigestCheck. */
class StreamDigestCheck implements DigestCheck {
  constructor(
    readonly skipping: boolean,
    private readonly pk: readonly (readonly string[])[],
    private readonly prefix: string,
    private readonly marks: StreamMarks,
    private readonly commonPrefix: boolean,
    private readonly stats: DigestCounters | undefined,
    private readonly counts: { rejected: number },
  ) {}

  unchanged(key: Record<string, unknown>, digest: string): boolean {
    let id: string;
    try {
      id = documentId(key, this.pk, ''); // as toDocument makes it
    } catch {
      this.counts.rejected++;
      return false; // no usable key: the full read reports it
    }
    if (!this.marks.markIfSource(id, this.prefix, digest, this.commonPrefix)) {
      this.counts.rejected++;
      return false;
    }
    const stats = this.stats;
    if (stats) {
      stats.records_read++;
      stats.records_unchanged = (stats.records_unchanged ?? 0) + 1;
    }
    return true;
  }
}

/** The stored documents of one swept stream, listed in the background while the stream is read. */
interface Listing {
  /** Resolves when the listing is complete (count of stored documents); rejects with its error. */
  done: Promise<number>;
  /** Set when every stored document is listed (not when the listing stopped early or failed). */
  complete: boolean;
  /** Listed by Destination.documentSources: ids and sources only (StreamMarks.listSource). */
  light: boolean;
}

/**
 * A lightly listed stream is listed again, whole, once more than this share of its listed documents
 * were not skipped by digest: past it, one whole listing costs less than looking up each of them.
 */
const LIGHT_LOOKUP_SHARE = 0.25;

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
 *
 * With annotate, a stream's first document waits for the stream's listing (at most listingWaitMs,
 * once; the read is held back meanwhile, nothing is buffered): documents read before the listing
 * completes each need a look-up, a second query for what the listing fetches anyway, and on an
 * unchanged re-sync of pgvector those queries and the listing competed for the same CPU (measured:
 * 10-18 % of a 50 000-document re-sync was looked up; waiting made it 13-21 % faster).
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
  const sets = new Map<string, StreamMarks>();
  const setsOf = (stream: string) => {
    let d = sets.get(stream);
    if (!d) sets.set(stream, (d = new StreamMarks(onDisk, opts.inMemoryKeys)));
    return d;
  };

  const listingWait = opts.annotate === true ? (opts.listingWaitMs ?? LISTING_WAIT_MS) : 0;
  /** Streams whose first document waited for (or found) their listing complete. */
  const waited = new Set<string>();
  /** The swept stream of the previous document (usually this one's too): its listing and marks, not looked up again. */
  let current: { stream: string; listing: Listing | undefined; marks: StreamMarks; waited: boolean } | undefined;
  const listings = new Map<string, Listing>();
  /** Set when the stage ends: a listing still running stops. */
  let closed = false;
  const where = (stream: string) => `connection ${name}, destination ${opts.conn.config.destination.type}, stream ${stream}`;
  const { destination, destinationConfig } = opts.conn;
  /**
   * A stream whose rows the source checks by digest is listed lightly where the destination can: a
   * row skipped by its digest needs its listed source only; the unchanged stage looks up the whole
   * fingerprint of a document read in full (listWhole when many are).
   */
  const listsLightly = (stream: string) => !!destination.documentSources && opts.annotate === true && !!opts.digests?.checksByKey(stream);
  /** `after`: a listing this one follows (the light one a whole listing replaces). */
  const startListing = (stream: string, light = listsLightly(stream), after?: Listing): Listing => {
    const listing = { complete: false, light } as Listing;
    listing.done = (async () => {
      if (after) await after.done.catch(() => undefined);
      const marks = setsOf(stream);
      const take = (d: StoredDocument) => marks.list(d.documentId, d.fingerprint ?? null);
      let count = 0;
      try {
        if (light) {
          for await (const page of destination.documentSources!(destinationConfig, opts.ctx, stream)) {
            if (opts.signal.aborted || closed) return count;
            count += page.length;
            for (const d of page) marks.listSource(d.documentId, d.source);
          }
        } else if (destination.documentBatches) {
          // In arrays where the destination can: one async step per page, not per document.
          for await (const page of destination.documentBatches(destinationConfig, opts.ctx, stream)) {
            if (opts.signal.aborted || closed) return count;
            count += page.length;
            for (const d of page) take(d);
          }
        } else {
          for await (const d of destination.documents!(destinationConfig, opts.ctx, stream)) {
            if (opts.signal.aborted || closed) return count;
            count++;
            take(d);
          }
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
  /** Replaces a light listing by a whole one (started once its light one is done). */
  const listWhole = (stream: string): Listing => {
    const light = listings.get(stream);
    if (light && !light.light) return light;
    const whole = startListing(stream, false, light);
    if (current?.stream === stream) [current.listing, current.waited] = [whole, false];
    waited.delete(stream);
    return whole;
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
    const marks = setsOf(stream);
    // Every listed document was marked (the usual unchanged or updated read): nothing to walk.
    if (marks.allMarked) return;
    let count = 0;
    for (const _ of marks.unmarked()) count++;
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
    for (const id of marks.unmarked()) {
      if (stats) stats.records_deleted++;
      yield { type: 'DELETE', stream, documentId: id };
    }
  };

  opts.digests?.attach({ listing: (stream) => listings.get(stream) ?? startListing(stream), marks: setsOf, listWhole });

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
      // The array goes on as it is (documents() hands it over), less the documents dropped as
      // unchanged (compacted in place: `kept` of it stay), but for a swept stream's completion: its
      // DELETEs go before it.
      let from = 0;
      let kept = 0;
      for (let i = 0; i < batch.length; i++) {
        const m = batch[i];
        if ((m.type === 'DOCUMENT' || m.type === 'DELETE') && (current?.stream === m.stream || swept.has(m.stream))) {
          let at = current;
          if (at?.stream !== m.stream) {
            const listing = listings.get(m.stream) ?? (opts.listWhileReading ? startListing(m.stream) : undefined);
            at = current = { stream: m.stream, listing, marks: setsOf(m.stream), waited: waited.has(m.stream) };
          }
          let listing = at.listing;
          // A lightly listed stream whose documents need their whole fingerprints: those of a source
          // that did not ask for the stream's digests, or many read in full (see LIGHT_LOOKUP_SHARE).
          if (
            listing?.light &&
            m.type === 'DOCUMENT' &&
            (!opts.digests!.wasAsked(m.stream) ||
              (listing.complete && opts.digests!.rejected(m.stream) > LIGHT_LOOKUP_SHARE * at.marks.stored.size))
          )
            listing = listWhole(m.stream);
          if (listingWait > 0 && listing && m.type === 'DOCUMENT' && !at.waited) {
            waited.add(m.stream);
            at.waited = true;
            if (!listing.complete) await settledWithin(listing.done, listingWait);
          }
          // A DELETE's id is marked too: the source deleted it already, the sweep must not again.
          // The listing holds what was committed before this run touched the document only for its
          // first occurrence in the read (a later one may follow this run's own write of it, which the
          // listing may or may not show): only that one carries it; the unchanged stage looks up the rest.
          const annotate = opts.annotate === true && listing?.complete === true && m.type === 'DOCUMENT';
          const listed = at.marks.mark(m.documentId, annotate, annotate && m.type === 'DOCUMENT' ? m.fingerprint : undefined);
          // UNFETCHED: listed lightly; the unchanged stage looks up its whole fingerprint.
          if (annotate && listed !== REPEATED && listed !== LISTED && listed !== UNFETCHED) {
            // The first occurrence of the id in the read: nothing of this run is in flight for it,
            // so its listed fingerprint alone decides whether it is unchanged.
            if (opts.dropUnchanged?.(m, listed ?? null)) continue;
            withListedFingerprint(m, listed ?? null);
          }
        } else if (m.type === 'STREAM_COMPLETE' && swept.has(m.stream)) {
          swept.delete(m.stream);
          if (current?.stream === m.stream) current = undefined;
          if (kept > from) yield batch.slice(from, kept);
          from = kept;
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
        batch[kept++] = m;
      }
      batch.length = kept;
      // Nothing left of it (every document dropped): no empty array goes on.
      if (kept > from) yield from === 0 ? batch : batch.slice(from);
    }
  } finally {
    closed = true;
    // A listing still running (the read failed or was interrupted) stops at its next document.
    await Promise.all([...listings.values()].map((l) => l.done.catch(() => undefined)));
    if (root) await root.close().catch((e) => opts.logger.warn({ err: describeUnknown(e) }, 'closing the sweep database failed'));
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Waits for `promise` to settle, or `ms` at most (whichever is first); never rejects. */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}
