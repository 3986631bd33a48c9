// The "unchanged" stage (docs/fingerprints.md): between reading and embedding, documents whose
// fingerprint equals the one the destination stores are dropped (append, append_dedup) or turned
// into KEEP (overwrite); a change in metadata only becomes a metadata-only DOCUMENT, which the embed
// stage passes on without embedding. Used only with writers that have `fingerprints()`.
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { RootDatabase } from 'lmdb';
import { open } from './lmdb-lazy.ts';
import type { Chunk, DestinationMessage, DestinationWriter, DocumentFingerprint } from '../protocol/connector.ts';
import { withContext } from '../protocol/errors.ts';
import type { DestinationSyncMode, StateMessage } from '../protocol/messages.ts';
import { asBatches, groupBatches, mapOrdered } from './flow.ts';
import { sameFingerprint } from './fingerprint.ts';

type DocumentMessage = Extract<DestinationMessage, { type: 'DOCUMENT' }>;

/**
 * Chunking of a fingerprinted document waits until it is known to be needed (a skipped one is never
 * chunked). Properties of the message rather than a WeakMap entry with a closure: every
 * fingerprinted document has them, and 50 000 ephemeron entries per re-sync were work for every
 * garbage collection.
 */
const DEFERRED = Symbol('deferredChunking');
const EMPTY_TEXT = Symbol('emptyText');
/** Chunks a document (from its record); one function per stream, not a closure per document. */
export type DocumentChunker = (doc: DocumentMessage) => Chunk[];
type Deferred = { [DEFERRED]?: DocumentChunker; [EMPTY_TEXT]?: boolean };

/**
 * The stored fingerprint of a document as the sweep's listing has it (./sweep.ts, SweepOptions.annotate):
 * null when the document is not stored or is stored without one. A document that carries it needs no
 * look-up. A property of the message rather than a WeakMap entry: set on most documents of a re-sync
 * (made with it, undefined until then, by deferredDocument).
 */
const LISTED = Symbol('listedFingerprint');
type Listed = { [LISTED]?: DocumentFingerprint | null };

export function deferChunking(doc: DocumentMessage, chunk: DocumentChunker, empty: boolean): void {
  (doc as Deferred)[DEFERRED] = chunk;
  (doc as Deferred)[EMPTY_TEXT] = empty;
}

/**
 * A fingerprinted DOCUMENT whose chunking waits (deferChunking), made with all its properties at
 * once: one object per document, no properties added (and storage grown) afterwards.
 */
export function deferredDocument(
  stream: string,
  documentId: string,
  record: Record<string, unknown>,
  fingerprint: DocumentFingerprint,
  chunk: DocumentChunker,
  empty: boolean,
): DocumentMessage {
  const doc: DocumentMessage & Deferred & Listed = {
    type: 'DOCUMENT',
    stream,
    documentId,
    chunks: [],
    record,
    fingerprint,
    [DEFERRED]: chunk,
    [EMPTY_TEXT]: empty,
    // Undefined (not looked up yet) until the sweep sets it: present from the start, setting it
    // later adds no property (no new hidden class, no property storage allocated per document).
    [LISTED]: undefined,
  };
  return doc;
}

/** Counts an unchanged document and drops it (undefined: nothing is passed on). A function, not a closure per document. */
function countUnchanged(m: DocumentMessage, stats: UnchangedCounters): undefined {
  stats.records_unchanged = (stats.records_unchanged ?? 0) + 1;
  dropDeferred(m); // never chunked: what it holds goes now
  return undefined;
}

/** Forgets a deferred chunking that will not be needed (an unchanged document). */
function dropDeferred(doc: DocumentMessage): void {
  if ((doc as Deferred)[DEFERRED]) (doc as Deferred)[DEFERRED] = undefined;
}

/** Fills in the chunks of a document whose chunking was deferred (a no-op otherwise). */
export function ensureChunks<M extends DestinationMessage>(m: M): M {
  if (m.type !== 'DOCUMENT') return m;
  const chunk = (m as Deferred)[DEFERRED];
  if (chunk) {
    (m as Deferred)[DEFERRED] = undefined;
    m.chunks = chunk(m);
  }
  return m;
}

/** Whether a document has no text (true also before its deferred chunking). */
export function hasNoText(m: DocumentMessage): boolean {
  return (m as Deferred)[DEFERRED] ? (m as Deferred)[EMPTY_TEXT] === true : !m.chunks.length;
}

export function withListedFingerprint(doc: DocumentMessage, fingerprint: DocumentFingerprint | null): void {
  (doc as Listed)[LISTED] = fingerprint;
}

/** What withListedFingerprint set (undefined: nothing; the document is looked up). */
export const listedFingerprint = (m: DocumentMessage): DocumentFingerprint | null | undefined => (m as Listed)[LISTED];

/** A document the sweep listed no fingerprint for: its stored one is looked up. */
const needsLookUp = (m: DestinationMessage) => m.type === 'DOCUMENT' && listedFingerprint(m) === undefined;

/** Documents per group when none of them needs a look-up. */
const LISTED_BATCH = 64;

/** Counters the stage keeps (fields of StreamStats). */
export interface UnchangedCounters {
  records_unchanged?: number;
  records_metadata_updated?: number;
}

export interface UnchangedOptions {
  writer: Required<Pick<DestinationWriter, 'fingerprints'>>;
  modes: ReadonlyMap<string, DestinationSyncMode>;
  stats: Record<string, UnchangedCounters>;
  /** For error messages: "connection x, destination y". */
  where: string;
  /** Documents per look-up batch (one `fingerprints()` call per stream per batch). */
  batchSize?: number;
  /** A partial batch waits this long for more input (slow streams such as CDC). */
  lingerMs?: number;
  /** Look-ups in flight ahead of the decisions. */
  concurrency?: number;
  /**
   * Where overwrite streams remember what this run sent (a scratch LMDB database, removed at the
   * end; memory does not grow with the stream). Without it, in memory (tests).
   */
  workDir?: string;
}

/** What an overwrite stream's new generation already got from this run, per document. */
interface GenerationMemory {
  get(stream: string, id: string): string | undefined;
  set(stream: string, id: string, value: string): void;
  /** Runs the decisions of one batch (one LMDB transaction: its own writes are visible to it). */
  batch<T>(fn: () => T): T;
  close(): void;
}

function memoryInProcess(): GenerationMemory {
  const map = new Map<string, string>();
  return {
    get: (stream, id) => map.get(`${stream}\u0000${id}`),
    set: (stream, id, value) => void map.set(`${stream}\u0000${id}`, value),
    batch: (fn) => fn(),
    close: () => map.clear(),
  };
}

function memoryOnDisk(workDir: string): GenerationMemory {
  const dir = join(workDir, `generation-${process.pid}-${randomBytes(4).toString('hex')}`);
  let db: RootDatabase<string, string> | undefined;
  // Hashed: any document id fits LMDB's key size limit.
  const key = (stream: string, id: string) => createHash('sha256').update(stream).update('\u0000').update(id).digest('base64');
  return {
    get: (stream, id) => db?.get(key(stream, id)),
    set: (stream, id, value) => {
      // A scratch database: no durability needed (removed at the end, ignored after a crash).
      db ??= open<string, string>({ path: dir, noSync: true });
      db.putSync(key(stream, id), value);
    },
    batch: (fn) => (db ? db.transactionSync(fn) : fn()),
    close: () => {
      void db?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const fingerprintText = (f: DocumentFingerprint) => `${f.content}:${f.metadata}`;

/**
 * A document read with a source digest is the same as the stored one only when that digest is stored
 * too; one read without a digest is compared as before it existed (content and metadata).
 */
const sameSource = (stored: DocumentFingerprint, own: DocumentFingerprint) => own.source === undefined || stored.source === own.source;
const sameDocument = (stored: DocumentFingerprint, own: DocumentFingerprint) => sameFingerprint(stored, own) && sameSource(stored, own);

type InFlight = { fingerprint: DocumentFingerprint | 'deleted'; seq: number };

/**
 * The stage and its memory of this run's uncommitted writes.
 *
 * The destination knows committed data only. A document this run wrote and the destination has not
 * committed yet (A→B→A, a delete then a re-add) must not be compared with its stale stored
 * fingerprint, so every DOCUMENT/KEEP/DELETE passed on is remembered with its position (`seq`) until
 * a STATE after it is committed. A look-up started after that commit sees the write, so an entry is
 * forgotten only when a look-up started after the commit covering it is decided: decisions consult
 * the entry first, the stored value otherwise. While an entry exists, only an identical fingerprint
 * is skipped; anything else is written in full (never metadata-only or KEEP against a baseline the
 * destination has not got yet).
 *
 * Overwrite streams are compared with the live generation, which does not change during the read.
 * KEEP and metadata-only are relative to it, so they are sent only as the first message of a
 * document in the new generation: what this run already sent for a document of an overwrite stream
 * is remembered (on disk, see UnchangedOptions.workDir) and a later version of it is compared with
 * that — identical is skipped, anything else is a full DOCUMENT.
 */
export class UnchangedStage {
  private readonly inFlight = new Map<string, InFlight>();
  private readonly stateSeq = new WeakMap<StateMessage, number>();
  private seq = 0;
  private committedSeq = 0;
  private prunedAt = 0;

  private readonly generation: GenerationMemory;

  constructor(private readonly opts: UnchangedOptions) {
    this.generation = opts.workDir ? memoryOnDisk(opts.workDir) : memoryInProcess();
  }

  /** The writer committed this STATE (STATE_COMMITTED): every message before it is durable. */
  committed(state: StateMessage): void {
    const s = this.stateSeq.get(state);
    if (s !== undefined && s > this.committedSeq) this.committedSeq = s;
  }

  /** Documents of this run not yet known to be committed (for tests and diagnostics). */
  get pending(): number {
    return this.inFlight.size;
  }

  /**
   * For the sweep (SweepOptions.dropUnchanged), which calls it for a document's first occurrence in
   * the read, with its listed fingerprint: whether it is unchanged, decided as decide() would (nothing
   * of this run can be in flight for it before its first occurrence), and then counted here; the
   * document goes no further. Not for overwrite streams (their KEEP must go on).
   */
  dropListedUnchanged(m: DocumentMessage, listed: DocumentFingerprint | null): boolean {
    const fp = m.fingerprint;
    if (!fp || !listed || (listed !== fp && !sameDocument(listed, fp))) return false;
    if (this.opts.modes.get(m.stream) === 'overwrite') return false;
    countUnchanged(m, this.opts.stats[m.stream] ?? {});
    return true;
  }

  run(input: AsyncIterable<DestinationMessage>): AsyncIterable<DestinationMessage> {
    return this.runBatches(asBatches(input));
  }

  /** run() for input in arrays (the sweep's output): one step per array, not per message. */
  runBatches(input: AsyncIterable<DestinationMessage[]>): AsyncIterable<DestinationMessage> {
    const batchSize = this.opts.batchSize ?? 500;
    const listedBatch = Math.min(batchSize, LISTED_BATCH);
    const groups = groupBatches(input, {
      // Whether the group has a document without a listed fingerprint, i.e. one to look up.
      tally: { start: () => false, add: (toLookUp, m) => toLookUp || needsLookUp(m) },
      // A group that needs no look-up (every document listed) is decided sooner: its documents,
      // most of them dropped as unchanged, are not held while a look-up-sized batch fills.
      isFull: (g, _next, toLookUp) => g.length >= batchSize || (g.length >= listedBatch && !toLookUp),
      closesGroup: (m) => m.type === 'STATE' || m.type === 'STREAM_COMPLETE',
      lingerMs: this.opts.lingerMs ?? 25,
    });
    const looked = mapOrdered(
      groups,
      async (group) => {
        // Taken before the look-up: every write before this position is in what it reads.
        const watermark = this.committedSeq;
        return { group, watermark, stored: await this.lookUp(group) };
      },
      this.opts.concurrency ?? 2,
    );
    const self = this;
    return (async function* () {
      try {
        for await (const { group, watermark, stored } of looked) {
          self.prune(watermark);
          // Decided together (cheap); chunked one by one as the next stage pulls.
          const decided = self.generation.batch(() => group.map((m) => self.decide(m, stored)));
          for (const out of decided) if (out) yield ensureChunks(out);
        }
      } finally {
        self.generation.close();
      }
    })();
  }

  private async lookUp(group: DestinationMessage[]): Promise<Map<string, Map<string, DocumentFingerprint>>> {
    const ids = new Map<string, Set<string>>();
    for (const m of group) {
      if (m.type !== 'DOCUMENT' || listedFingerprint(m) !== undefined) continue;
      let set = ids.get(m.stream);
      if (!set) ids.set(m.stream, (set = new Set()));
      set.add(m.documentId);
    }
    const result = new Map<string, Map<string, DocumentFingerprint>>();
    await Promise.all(
      [...ids].map(async ([stream, set]) => {
        const found = await this.opts.writer.fingerprints(stream, [...set]).catch((err) => {
          throw withContext(err, `${this.opts.where}, stream ${stream} (looking up stored fingerprints)`);
        });
        result.set(stream, found);
      }),
    );
    return result;
  }

  private prune(watermark: number) {
    if (watermark <= this.prunedAt) return;
    this.prunedAt = watermark;
    // Entries are in emission order (see remember), so the covered ones are a prefix.
    for (const [key, e] of this.inFlight) {
      if (e.seq >= watermark) break;
      this.inFlight.delete(key);
    }
  }

  private remember(key: string, fingerprint: InFlight['fingerprint']) {
    this.inFlight.delete(key); // re-inserted last: the map stays in emission order
    this.inFlight.set(key, { fingerprint, seq: this.seq });
  }

  private decide(m: DestinationMessage, stored: Map<string, Map<string, DocumentFingerprint>>): DestinationMessage | undefined {
    this.seq++;
    if (m.type === 'STATE') {
      this.stateSeq.set(m.state, this.seq);
      return m;
    }
    const overwrite = this.opts.modes.get((m as { stream?: string }).stream ?? '') === 'overwrite';
    if (m.type === 'DELETE') {
      if (overwrite) this.generation.set(m.stream, m.documentId, 'deleted');
      else this.remember(`${m.stream}\u0000${m.documentId}`, 'deleted');
      return m;
    }
    if (m.type !== 'DOCUMENT' || !m.fingerprint) return m;
    const fp = m.fingerprint;
    const stats = this.opts.stats[m.stream] ?? {};
    if (overwrite) {
      // Already in the new generation from this run: identical is done, anything else replaces it in full.
      const sent = this.generation.get(m.stream, m.documentId);
      this.generation.set(m.stream, m.documentId, fingerprintText(fp));
      if (sent !== undefined) return sent === fingerprintText(fp) ? countUnchanged(m, stats) : m;
    }
    // Built only when there is something in flight: most documents of a re-sync are not.
    const key = overwrite || !this.inFlight.size ? '' : `${m.stream}\u0000${m.documentId}`;
    const flight = key ? this.inFlight.get(key) : undefined;
    if (flight) {
      if (flight.fingerprint !== 'deleted' && sameDocument(flight.fingerprint, fp)) return countUnchanged(m, stats);
      this.remember(key, fp);
      return m;
    }
    const listed = listedFingerprint(m);
    const known = listed === undefined ? stored.get(m.stream)?.get(m.documentId) : (listed ?? undefined);
    // An empty document has no chunks to carry a new source digest: unchanged all the same.
    if (known && sameFingerprint(known, fp) && (sameSource(known, fp) || hasNoText(m))) {
      countUnchanged(m, stats);
      return overwrite ? { type: 'KEEP', stream: m.stream, documentId: m.documentId } : undefined;
    }
    if (!overwrite) this.remember(key || `${m.stream}\u0000${m.documentId}`, fp);
    // Same text, settings and model, other metadata (or only another source digest, which is then
    // stored so the next run can skip the row): the stored vectors are right. An empty document
    // has no chunks to carry metadata: it goes as it is.
    if (known && known.content === fp.content && !hasNoText(m)) {
      stats.records_metadata_updated = (stats.records_metadata_updated ?? 0) + 1;
      m.metadataOnly = true;
    }
    return m;
  }
}
