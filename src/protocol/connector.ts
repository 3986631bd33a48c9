// The public connector contract (invariant 8): built-in and custom connectors implement exactly
// these interfaces; the engine knows nothing else about them.
//
//   Source:       spec · check · discover · read(config, catalog, state) → AsyncIterable<AirbyteMessage>
//   Destination:  spec · check · open(config, streams) → Writer
//                 Writer.write(AsyncIterable<DestinationMessage>) → AsyncIterable<DestinationEvent>
//
// The Airbyte checkpoint rule lives in the destination contract: a writer yields
// `STATE_COMMITTED` for a STATE only after everything it received before that STATE is durable.
// The engine persists state only when it sees that event.
import type { z } from 'zod';
import type { AirbyteCatalog, AirbyteMessage, ConfiguredCatalog, DestinationSyncMode, StateMessage, SyncMode } from './messages.ts';

export interface Logger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export interface ConnectorContext {
  logger: Logger;
  /** Directory of the pipeline file; relative paths in connector config resolve against it. */
  baseDir: string;
  /** Aborted on SIGINT/SIGTERM: stop producing, let what was produced be flushed. */
  signal: AbortSignal;
  /** Name of the connection being run (for slot names, consumer groups, log context). */
  connection: string;
  /** `sluice sync --follow`: keep streaming (CDC, Kafka) until the signal aborts. */
  follow: boolean;
  /** A directory this connector may keep private files in (exists; per connection). */
  workDir: string;
  /**
   * Set when this process is one worker of a sharded run (`sluice sync --shard I/N`). read() gets
   * only the streams this worker owns; for a stream listed in `partitions` it reads only that
   * partition (the element `index` of what planPartitions returned) and reads other streams whole.
   */
  shard?: ShardContext;
  /**
   * Set during a sync or dry run: a connector may hand an open resource (a database session) from
   * one of its calls to a later one of the same run (discover → read, readState → open) instead of
   * opening it twice. What is parked and never taken is closed when the run ends. Absent elsewhere
   * (and when a call may not park): the connector closes what it opens, as always.
   */
  shelf?: ResourceShelf;
  /**
   * Set during a sync that will list stored documents (Destination.documents, the end-of-read
   * sweep) after the writer opened: a destination may get ready for that meanwhile (connect ahead
   * and park the session on the shelf). Only a hint; documents() must work without it.
   */
  listsDocuments?: boolean;
  /**
   * Set during a sync for sources with `capabilities.sourceDigests`, when the destination keeps
   * them too: lets a full refresh skip reading unchanged rows in full (docs/fingerprints.md,
   * "Source digests"). Absent otherwise: read as usual.
   */
  storedDigests?: StoredDigests;
}

/**
 * Source digests (docs/fingerprints.md): a source that can have a row's digest computed where the
 * data lives (PostgreSQL: a hash of the row's columns) reads the digests of a full-refresh stream first, and
 * reads in full only the rows whose stored document has another digest.
 */
export interface StoredDigests {
  /**
   * How to read `stream`; resolves once the destination's listing of the stream is complete.
   * undefined: read it as usual, without digests. Otherwise every RECORD of the stream carries its
   * row's digest (`message.record(…, digest)`), and when `check.skipping`, rows that
   * `check.unchanged` accepts are left out.
   */
  forStream(stream: string): Promise<DigestCheck | undefined>;
}

export interface DigestCheck {
  /**
   * False when the destination holds too few digests of the stream to skip by (the first run with
   * digests): read every row in full, each RECORD with its digest, so the next run can skip.
   */
  readonly skipping: boolean;
  /**
   * Whether the row with this key (a record of only its primary-key fields, valued exactly as in its
   * RECORD) is stored with this digest. True: the row is counted as read and unchanged and kept
   * from the end-of-read deletion; the source emits no RECORD for it. False: the source must emit
   * the row's RECORD, with its digest, before the stream's COMPLETE (a row gone meanwhile is
   * simply not emitted). Ask at most once per row.
   */
  unchanged(key: Record<string, unknown>, digest: string): boolean;
}

/** Open resources parked between a connector's calls within one run (see ConnectorContext.shelf). */
export interface ResourceShelf {
  /** Parks `value` under `key`; `close` ends it if no later call takes it (a value parked under the same key before is closed). */
  park(key: string, value: unknown, close: () => Promise<void>): void;
  /** The value parked under `key`, now the caller's to use and close; undefined when there is none. */
  take<T>(key: string): T | undefined;
}

export interface ShardContext {
  /** 0-based worker index. */
  index: number;
  count: number;
  /** Stream name → this worker's partition, as planned by the source's planPartitions. */
  partitions: Record<string, unknown>;
}

export interface ConnectorSpec<C> {
  /** Registry name, e.g. `file`, `postgres`, `pgvector`. */
  name: string;
  title?: string;
  description?: string;
  documentationUrl?: string;
  /**
   * The config schema. Mark secrets with `.meta({ secret: true })`: their values never appear in
   * output, and the exported JSON Schema carries `airbyte_secret: true`.
   */
  config: z.ZodType<C>;
}

export interface CheckResult {
  ok: boolean;
  message?: string;
  /** Non-fatal findings (e.g. "replica identity is DEFAULT on table x"). */
  warnings?: string[];
}

/** Static facts the engine can validate a pipeline against without connecting anywhere. */
export interface SourceCapabilities {
  syncModes: SyncMode[];
  /** The source tracks its own cursor (files by mtime, Kafka offsets): no `cursor_field` needed. */
  sourceDefinedCursor?: boolean;
  /**
   * discover() reads only local files and connects to no server, so `sluice validate` may run it
   * to check field names (text_fields, metadata_fields…) against the streams' schemas.
   */
  offlineDiscover?: boolean;
  /**
   * How a new stream state combines with the stored one. `replace` (default) stores it as is;
   * `deep` merges objects key by key, so workers sharing a connection (Kafka partitions) each
   * checkpoint only what they own.
   */
  stateMerge?: 'replace' | 'deep';
  /**
   * read() honours `ctx.storedDigests` (full refresh of streams with a primary key): it attaches a
   * digest to each RECORD, a string of at most 128 characters that changes whenever the RECORD it
   * would emit for the row changes (data or the source's own read settings), and skips unchanged
   * rows when asked.
   */
  sourceDigests?: boolean;
}

export interface SourceState {
  /** Per-stream state blobs, by stream name. */
  streams: Record<string, Record<string, unknown>>;
  /** GLOBAL state shared by all streams (e.g. a CDC LSN). */
  shared?: Record<string, unknown>;
  /**
   * Engine-owned: what built the index this state describes (src/engine/index-identity.ts). Stored
   * with the rest of the state (destinations that keep state store it as they get it); removed
   * before a source sees the state.
   */
  index?: IndexIdentity;
}

/** Which embedder and processing settings produced a connection's index (`sluice reindex` changes it). */
export interface IndexIdentity {
  provider: string | null;
  model: string | null;
  dimensions: number | null;
  /** sha256 of the normalized processing settings. */
  processing_hash: string;
  /** Those settings, so a refusal can say what changed. */
  processing?: Record<string, unknown>;
  /** Set by `sluice reindex --keep-previous`: the generation kept for `--rollback`, and its state. */
  previous?: { index?: IndexIdentity; state: SourceState };
}

/** Result of a connector's own config checks (see `Source.validateConfig`). */
export interface ConfigValidation {
  /** Paths are relative to the connector's `config:` block. */
  problems: { path: (string | number)[]; message: string }[];
  /** Values to treat as secrets (never printed), e.g. fields a referenced file marks secret. */
  secrets?: unknown[];
}

/** What `sluice check` knows of the pipeline beyond the source's own config. */
export interface CheckOptions {
  /**
   * The streams the pipeline configures, with their modes (absent when discovery failed): a source
   * verifies the privileges exactly these need (SELECT on each, replication for cdc streams…).
   */
  catalog?: ConfiguredCatalog;
}

export interface Source<C = any> {
  kind: 'source';
  spec: ConnectorSpec<C>;
  capabilities: SourceCapabilities;
  /**
   * Optional checks beyond the zod schema that need the pipeline's directory (e.g. a file the
   * config names). Run whenever a pipeline is loaded (`sluice validate` too); must not connect
   * anywhere or change anything.
   */
  validateConfig?(config: C, ctx: { baseDir: string }): ConfigValidation | Promise<ConfigValidation>;
  check(config: C, ctx: ConnectorContext, options?: CheckOptions): Promise<CheckResult>;
  discover(config: C, ctx: ConnectorContext): Promise<AirbyteCatalog>;
  /**
   * Yields RECORD, STATE, LOG and TRACE messages. A deletion is a RECORD whose data has the
   * primary key fields plus `_ab_cdc_deleted_at` (see `message.deletion`). A STATE covers every
   * RECORD yielded before it. Emit TRACE STREAM_STATUS COMPLETE when a stream is fully read
   * (overwrite destinations switch generations on it).
   */
  read(config: C, catalog: ConfiguredCatalog, state: SourceState | undefined, ctx: ConnectorContext): AsyncIterable<AirbyteMessage>;
  /**
   * Called after a state this source emitted is durably committed by the destination and
   * persisted (e.g. acknowledge a replication LSN, commit Kafka offsets for monitoring). Called
   * in order, while read() is still running, from the engine's task.
   */
  onStateCommitted?(config: C, state: StateMessage, connection: SourceState, ctx: ConnectorContext): Promise<void> | void;
  /**
   * Sharded runs: splits streams of `catalog` it can split into `count` disjoint partitions that
   * together cover each stream (e.g. primary-key ranges). Returns stream name → `count` JSON
   * values (only for the streams it splits). The engine stores the first plan with the state and
   * gives every worker, and every restart, the same plan, so a plan must stay correct (cover
   * everything) however the data changes later; it need only be balanced when made.
   */
  planPartitions?(config: C, catalog: ConfiguredCatalog, count: number, ctx: ConnectorContext): Promise<Record<string, unknown[]>>;
}

// ---- destination side ------------------------------------------------------------------------

export interface Chunk {
  /** `<document_id>#<chunk_index>`; destinations needing UUIDs use `chunkUuid(stream, documentId, chunkIndex)`. */
  id: string;
  documentId: string;
  chunkIndex: number;
  content: string;
  /** sha256 of the embedded text (content plus any context the embedder saw). */
  contentHash: string;
  metadata: Record<string, unknown>;
  /** Absent when the connection has no `embedding` block. */
  embedding?: Float32Array;
}

/**
 * What produced a document's stored chunks (docs/fingerprints.md). Destinations that keep it (their
 * writer has `fingerprints()`) let the engine skip documents that did not change: they are neither
 * chunked, embedded nor written again.
 */
export interface DocumentFingerprint {
  /**
   * sha256 (hex) of the document's text input, the processing settings and the embedder identity:
   * equal means the same chunks and the same vectors.
   */
  content: string;
  /** sha256 (hex) of the metadata its chunks carry: content equal, metadata not ⇒ update metadata only. */
  metadata: string;
  /**
   * Which embedder made the vectors, `provider/model/dimensions` (e.g. `openai/text-embedding-3-small/1536`;
   * `none` without an embedder). Not compared by the skip (`content` already covers it): kept so
   * `sluice verify` can name vectors of another model. Absent on documents stored before it was kept,
   * and in destinations that do not store it.
   */
  embedder?: string;
  /**
   * The digest of the source row the document was made from (StoredDigests), prefixed with a tag
   * of everything else that shapes the document (settings, embedder, stream schema): equal means
   * the row need not be read in full. Absent when the source gave none. Kept by destinations with
   * `capabilities.sourceDigests`.
   */
  source?: string;
}

export type DestinationMessage =
  /**
   * Replace the document's chunks as a unit (append_dedup/overwrite); in append mode, upsert by chunk id.
   * `fingerprint` is set when the writer keeps fingerprints: store it with the document.
   * `metadataOnly`: the stored chunks' text and vectors are right (same content fingerprint); only
   * their metadata (and the stored fingerprint) change. The chunks come without embeddings, with the
   * same ids and count as those stored. Sent only to writers that have `fingerprints()`.
   */
  | {
      type: 'DOCUMENT';
      stream: string;
      documentId: string;
      chunks: Chunk[];
      record: Record<string, unknown>;
      fingerprint?: DocumentFingerprint;
      metadataOnly?: boolean;
    }
  /** Remove every chunk of the document. */
  | { type: 'DELETE'; stream: string; documentId: string }
  /**
   * Overwrite streams only, and only to writers that have `fingerprints()`: the document is unchanged,
   * carry its live chunks over into the new generation as they are. When a whole generation is KEEPs of
   * every live document, the writer writes nothing and skips the switch.
   */
  | { type: 'KEEP'; stream: string; documentId: string }
  /**
   * A checkpoint. `connection` is the whole connection state after applying it: destinations that
   * store state themselves (exactly-once) write it in the same transaction as the data before it.
   */
  | { type: 'STATE'; state: StateMessage; connection: SourceState }
  /** The source finished this stream: an overwrite may now switch to the new generation. */
  | { type: 'STREAM_COMPLETE'; stream: string };

export type DestinationEvent =
  | { type: 'STATE_COMMITTED'; state: StateMessage; connection: SourceState }
  | { type: 'WRITTEN'; stream: string; records: number; chunksWritten: number; chunksDeleted: number }
  /**
   * Optional: the destination refused this one document (e.g. Pinecone's 40 KB metadata limit per
   * vector) and wrote the rest of its batch; what it stored for the document before is unchanged.
   * Yield it before the STATE_COMMITTED that covers the document: the engine fails the run, or
   * stores a dead letter first (errors.tolerance: all). `record`: the DOCUMENT's record.
   */
  | { type: 'REJECTED'; stream: string; documentId: string; error: string; record?: Record<string, unknown> };

export interface DestinationStream {
  name: string;
  destinationSyncMode: DestinationSyncMode;
  primaryKey: string[][];
}

export interface OpenOptions {
  streams: DestinationStream[];
  /**
   * `sluice reindex` (only to destinations with `reindex`): every stream is in overwrite mode; load
   * each new generation, but switch none at its STREAM_COMPLETE. At the end of the input, when every
   * stream completed, switch all of them and store the last STATE's connection state in one atomic
   * step (then report STATE_COMMITTED); otherwise drop the new generations and commit no state. With
   * `keepPrevious`, the replaced generations are kept for `reindex.rollback` (older kept ones go).
   */
  reindex?: { keepPrevious: boolean };
  /** Vector size of the connection's embedder, if any. Check it before any write. */
  dimensions?: number;
  /** Human name of the embedder for error messages, e.g. "openai text-embedding-3-small". */
  embedderName?: string;
  /** The embedder's tag as fingerprints carry it (`DocumentFingerprint.embedder`: `provider/model/dimensions`). */
  embedderTag?: string;
}

export interface SearchHit {
  score: number;
  stream: string;
  documentId: string;
  chunkIndex: number;
  content: string;
  metadata: Record<string, unknown>;
}

export interface DestinationWriter {
  /**
   * The connection state this destination stored with its data, if it keeps state itself.
   * When present it wins over the state store (exactly-once destinations).
   */
  readState?(): Promise<SourceState | undefined>;
  /**
   * Streams (not in overwrite mode) that have no data at the destination: storage created by this
   * open() or found empty (a table dropped by hand, a changed table name, a new destination, a run
   * that died before its first commit). Saved progress of such a stream describes data that is
   * gone, so the engine re-reads it from scratch (a legitimately empty stream is re-read cheaply).
   */
  streamsWithoutData?(): string[];
  /**
   * Stored fingerprints of these documents of `stream` (the live generation for overwrite): one round
   * trip per call, at most 1,000 ids. Documents absent from the map are not stored (or have no
   * fingerprint). A writer with this method must also store `DOCUMENT.fingerprint` and handle
   * `metadataOnly` documents and KEEP messages (docs/fingerprints.md).
   */
  fingerprints?(stream: string, documentIds: string[]): Promise<Map<string, DocumentFingerprint>>;
  write(input: AsyncIterable<DestinationMessage>): AsyncIterable<DestinationEvent>;
  close(): Promise<void>;
}

export interface Destination<C = any> {
  kind: 'destination';
  spec: ConnectorSpec<C>;
  /**
   * `sourceDigests`: the destination stores `DocumentFingerprint.source` with each document and gives
   * it back from `documents()`/`documentBatches()` and the writer's `fingerprints()`.
   */
  capabilities: { destinationSyncModes: DestinationSyncMode[]; vectors?: boolean; sourceDigests?: boolean };
  /** `options` carries what the pipeline knows (the embedder's vector size) so check can compare it. */
  check(config: C, ctx: ConnectorContext, options?: Pick<OpenOptions, 'dimensions' | 'embedderName'>): Promise<CheckResult>;
  open(config: C, ctx: ConnectorContext, options: OpenOptions): Promise<DestinationWriter>;
  /**
   * Throws what `open` would refuse (e.g. an existing table of another vector size) without changing
   * anything; `sluice sync --dry-run` calls it so a dry run fails where the real run would.
   */
  preflight?(config: C, ctx: ConnectorContext, options: OpenOptions): Promise<void>;
  /** Nearest chunks to a query vector (`sluice search`). */
  search?(config: C, ctx: ConnectorContext, query: { vector: Float32Array; topK: number; streams: string[] }): Promise<SearchHit[]>;
  /**
   * Destinations that keep the connection state with their data (a writer with readState) expose
   * it here too, without opening a writer or creating anything: `sluice state show` reads it and
   * `sluice state reset` forgets it (all streams, or some; the shared part stays with some).
   * Undefined when nothing is stored for `ctx.connection`.
   */
  readState?(config: C, ctx: ConnectorContext): Promise<SourceState | undefined>;
  /** Forget the connection state stored with the data (`sluice state reset`); only for destinations with readState. */
  resetState?(config: C, ctx: ConnectorContext, streams?: string[]): Promise<void>;
  /** Where readState/resetState keep it, for messages (e.g. "table public._sluice_state on host:5432/db"). */
  describeState?(config: C, ctx: ConnectorContext): string;
  /**
   * For the conformance kit (invariant 9): a config that writes where none of the user's data is
   * (a scratch schema, collection, namespace or file named after `id`), and `remove()`, which
   * deletes everything written there, connection state included. Without it the kit writes
   * uniquely named test streams and deletes their documents afterwards.
   */
  sandbox?(config: C, ctx: ConnectorContext, id: string): Promise<DestinationSandbox<C>>;
  /**
   * Lists every chunk a stream holds, as a reader would see it (the conformance kit reads back
   * through it; `search()` is used when this is absent).
   */
  readBack?(config: C, ctx: ConnectorContext, stream: string): Promise<StoredChunk[]>;
  /**
   * Every document `stream` holds (committed, live generation), each exactly once, in any order,
   * streamed in pages, read-only: end-of-read deletion detection (mark and sweep) and `sluice verify`
   * use it.
   */
  documents?(config: C, ctx: ConnectorContext, stream: string): AsyncIterable<StoredDocument>;
  /**
   * Optional, next to `documents()`: the same documents in arrays (e.g. one per page the destination
   * reads), under the same contract (each exactly once, committed, live generation, read-only; a
   * caller that stops early ends the listing). The end-of-read sweep uses it when present: one async
   * step per array instead of one per document. Everything else (`sluice verify`, the dry run's plan,
   * the conformance kit) uses `documents()`.
   */
  documentBatches?(config: C, ctx: ConnectorContext, stream: string): AsyncIterable<StoredDocument[]>;
  /**
   * Optional, with `capabilities.sourceDigests` and `documents()`: a light listing, for a full-refresh
   * stream whose source reads with digests (docs/fingerprints.md, "Source digests"). The same
   * documents as `documents()` under the same contract (each exactly once, committed, live
   * generation, read-only, any order; a caller that stops early ends it), in arrays, each with only
   * the source digest its fingerprint carries: `source` is set exactly when `documents()` would give
   * this document a fingerprint with that `source`. A row skipped by its digest needs nothing more;
   * the engine looks up the whole fingerprint (the writer's `fingerprints()`) of a document read in
   * full, and lists the stream with `documentBatches()`/`documents()` instead when many are.
   */
  documentSources?(config: C, ctx: ConnectorContext, stream: string): AsyncIterable<StoredSource[]>;
  /**
   * Every stored chunk of `stream` (committed, live generation), streamed in pages, read-only:
   * `sluice verify` compares them with what the source gives now. Yields each stored row as it is,
   * duplicates included, in any order. With `documentIds`, only chunks of those documents; with
   * `limit`, at most that many chunks.
   */
  scanChunks?(config: C, ctx: ConnectorContext, stream: string, options?: ScanOptions): AsyncIterable<ScannedChunk>;
  /**
   * `sluice reindex` support: the writer honours `OpenOptions.reindex`, and `rollback` switches every
   * stream back to the generation kept by `reindex --keep-previous` (keeping the current one in its
   * place) and stores `state` as the connection state, in one atomic step. Destinations without it
   * cannot be reindexed (the engine says so before anything is written).
   */
  reindex?: {
    /** Whether every one of these streams has a kept previous generation. */
    hasPrevious(config: C, ctx: ConnectorContext, streams: string[]): Promise<boolean>;
    rollback(config: C, ctx: ConnectorContext, options: { streams: string[]; state: SourceState }): Promise<void>;
  };
  /** Maintenance (`sluice destination maintain`): reindex, sizes. */
  maintain?(config: C, ctx: ConnectorContext, action: { reindex: boolean; streams: string[] }): Promise<Record<string, unknown>>;
}

export interface DestinationSandbox<C> {
  config: C;
  /** Deletes everything written with `config` (the kit passes the streams it wrote). */
  remove(streams: string[]): Promise<void>;
}

/** One stored document as `Destination.documentSources()` lists it. */
export interface StoredSource {
  documentId: string;
  /** `fingerprint.source` of the document as `documents()` lists it; absent when it has none. */
  source?: string;
}

/** One stored document as `Destination.documents()` lists it. */
export interface StoredDocument {
  documentId: string;
  /** Absent for documents written before fingerprints were kept. */
  fingerprint?: DocumentFingerprint;
  /** How many chunks it has. */
  chunks: number;
}

export interface ScanOptions {
  documentIds?: string[];
  limit?: number;
}

/** One stored chunk as `Destination.scanChunks` yields it (what the store keeps, nothing more). */
export interface ScannedChunk {
  documentId: string;
  chunkIndex: number;
  /** The stored row's or point's own id. */
  id: string;
  /** The chunk text, where the store keeps it. */
  content?: string;
  /** The stored content hash (Chunk.contentHash), where the store keeps one. */
  contentHash?: string;
  /** The stored vector's length; absent when no vector is stored. */
  dimensions?: number;
  /** The embedding model recorded with the chunk, where the store records one. */
  model?: string;
  /** The document fingerprint stored with the chunk or its document, where there is one. */
  fingerprint?: DocumentFingerprint;
}

/** One stored chunk as the conformance kit sees it. */
export interface StoredChunk {
  documentId: string;
  chunkIndex: number;
  content?: string;
  /** When the destination can show it: the conformance kit checks metadata-only updates with it. */
  metadata?: Record<string, unknown>;
}

export type Connector = Source | Destination;
