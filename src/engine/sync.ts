// The sync engine: per connection, source.read → documents and chunks → embeddings (cached,
// batched, concurrent, in order) → destination.write, persisting a state only when the
// destination has committed everything before it (the Airbyte checkpoint rule).
import { mkdir } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { join } from 'node:path';
import { ConfigError, type LoadedConnection, type LoadedPipeline } from '../config/load.ts';
import { OPENAI_LIMITS, createEmbedder, embeddingCacheKey, estimateCostUsd } from '../embedding/index.ts';
import type { Embedder, EmbeddingCache } from '../embedding/types.ts';
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  Logger,
  SourceState,
} from '../protocol/connector.ts';
import { SluiceError, describeUnknown, withContext } from '../protocol/errors.ts';
import { canonicalJson, chunkId, documentId, sha256 } from '../protocol/identity.ts';
import {
  CDC_DELETED_AT,
  type AirbyteMessage,
  type ConfiguredCatalog,
  type ConfiguredStream,
  type StateMessage,
} from '../protocol/messages.ts';
import { applyStateMessage, mergeConnectionState, openCacheFor, openStateStore, type StateStore } from '../state/index.ts';
import { createTextProcessor, type ProcessedChunk, type TextProcessor } from '../text/index.ts';
import { hasText } from '../text/extract.ts';
import { configureCatalog } from './catalog.ts';
import { checkLayout, shardCatalog, ShardStateView, type ShardSpec } from './shard.ts';
import { BackgroundSaver, eachOf, groupItems, mapOrdered, type GroupTally } from './flow.ts';
import { messageBatches } from '../cdk/batches.ts';
import { guardEmptyText, processingFieldProblems } from './preflight.ts';
import { SchemaTracker, type SchemaChange } from './schema-changes.ts';
import { ErrorBudget, openDeadLetterStore, type DeadLetterStage, type DeadLetterStore } from './dead-letters.ts';
import { lockConnection } from './connection-lock.ts';
import { RunShelf } from './shelf.ts';
import { listsDocuments } from './listing-hint.ts';
import { countFailed, destinationRejection, sourceRecordError } from './rejections.ts';
import { httpStatus } from '../net/retry.ts';
import { CostGuard, CostLimitError, pacedSeconds, type CostTurn } from './cost-guard.ts';
import { Fingerprinter, embedderTag } from './fingerprint.ts';
import { UnchangedStage, deferredDocument, ensureChunks, hasNoText, type DocumentChunker } from './unchanged.ts';
import { SweptDigests, sweepStage, sweptStreams, withoutSweptProgress } from './sweep.ts';
import { StoredFingerprints } from './plan-fingerprints.ts';
import { IndexChangedError, adoptIdentity, indexForRun, reindexCatalog, withoutIndex } from './index-identity.ts';
import type { IndexIdentity } from '../protocol/connector.ts';

export interface SyncOptions {
  /** Only this connection (default: all, in file order). */
  connection?: string;
  fullRefresh?: boolean;
  dryRun?: boolean;
  follow?: boolean;
  signal: AbortSignal;
  logger: Logger;
  /** This process is one worker of a sharded run (`--shard I/N`); see ./shard.ts. */
  shard?: ShardSpec;
  /** Receives the live per-stream counters of each connection as it starts (for progress output). */
  onConnectionStart?: (connection: string, streams: Record<string, StreamStats>) => void;
  /** Live hooks for metrics and health checks (src/metrics); they only observe. */
  observer?: SyncObserver;
  /** `--max-cost`: replaces each connection's `embedding.max_cost_usd` for this run (USD). */
  maxCostUsd?: number;
  /** `sluice reindex` (src/engine/reindex.ts): rebuild every stream from a fresh read and switch all at the end. */
  reindex?: { keepPrevious: boolean };
}

/** What src/metrics needs beyond the live counters; every call is cheap and synchronous. */
export interface SyncObserver {
  /** The connection is discovered and about to stream; `streams` and `summary` are updated live. */
  connectionStarted?(summary: ConnectionSummary, embedder: Embedder | undefined): void;
  /** One embedding batch finished (or failed). */
  embeddingBatch?(connection: string, stream: string, seconds: number, ok: boolean): void;
  /**
   * A STATE was committed by the destination. `commitSeconds`: from handing it to the destination
   * to its commit; `lagSeconds`: from the source emitting the newest record it covers to now (0
   * when it covers no new record: the destination is caught up).
   */
  stateCommitted?(connection: string, commitSeconds: number, lagSeconds: number): void;
  connectionFinished?(summary: ConnectionSummary, error: SluiceError | undefined): void;
}

export interface StreamStats {
  status: 'running' | 'succeeded' | 'failed' | 'interrupted';
  records_read: number;
  records_written: number;
  records_deleted: number;
  records_skipped: number;
  /** With a destination that keeps fingerprints: documents skipped (or kept) because they did not change. */
  records_unchanged?: number;
  /** With a destination that keeps fingerprints: documents whose metadata only changed (updated without embedding). */
  records_metadata_updated?: number;
  chunks_written: number;
  chunks_deleted: number;
  embedding_requests: number;
  embedding_tokens: number;
  embedding_cache_hits: number;
  /** The source's estimate of the records this run reads (Airbyte TRACE ESTIMATE), when it sent one. */
  records_estimated?: number;
  /** Dry run only: the chunks the run would write (counted as the run counts chunks_written). */
  chunks_to_write?: number;
  /** Records stored as dead letters (errors.tolerance: all); absent when none. */
  records_failed?: number;
  /** The same, by the stage that failed them (source, key, text, embed, destination); absent when none. */
  failed_by_stage?: Partial<Record<DeadLetterStage, number>>;
  /** Dry run only: documents the run would write (upsert) and delete. */
  documents_to_write?: number;
  /** Dry run only, with a destination that lists its documents with fingerprints: documents that did not change (not written, not embedded). */
  documents_unchanged?: number;
  documents_to_delete?: number;
  /** Dry run only: documents with at least one chunk to embed (new or changed text), and those whose every chunk is cached. */
  documents_to_embed?: number;
  documents_cached?: number;
  /** Dry run only. */
  chunks_to_embed?: number;
  tokens_to_embed?: number;
  estimated_cost_usd?: number | null;
  duration_ms: number;
}

export interface ConnectionSummary {
  name: string;
  status: 'succeeded' | 'failed' | 'interrupted';
  /** `transient`: a network blip or an unavailable server; running again may well succeed. */
  error?: { message: string; hint?: string; where?: string; transient?: true; refused?: 'index_changed' };
  /** `I/N` when this run was one worker of a sharded run. */
  shard?: string;
  duration_ms: number;
  states_committed: number;
  streams: Record<string, StreamStats>;
  /** Source schema changes seen by this run and what was done (docs/reliability.md). */
  schema_changes?: SchemaChange[];
  /** Records of this run stored as dead letters (errors.tolerance: all). */
  dead_letters?: number;
  /** With a cost limit (embedding.max_cost_usd / --max-cost): what this run paid and the limit, in USD. */
  cost?: { spent_usd: number; limit_usd: number; stopped: boolean };
  /** Dry run only: the plan for the whole connection (see docs/embeddings.md). */
  plan?: DryRunPlan;
}

export interface DryRunPlan {
  documents_to_write: number;
  /** Present when the destination lists its documents with fingerprints (see documents_unchanged of a stream). */
  documents_unchanged?: number;
  documents_to_delete: number;
  chunks_to_write: number;
  chunks_to_embed: number;
  tokens_to_embed: number;
  /** Estimated HTTP requests (0 for a local embedder). */
  requests_to_embed: number;
  estimated_cost_usd: number | null;
  /** Under the configured requests_per_minute / tokens_per_minute; null without rate limits. */
  estimated_seconds: number | null;
  max_cost_usd?: number;
  /** False when a real run would stop at the cost limit. */
  within_max_cost?: boolean;
}

export interface SyncSummary {
  status: 'succeeded' | 'failed' | 'interrupted';
  dry_run: boolean;
  duration_ms: number;
  connections: ConnectionSummary[];
}

export const newStats = (): StreamStats => ({
  status: 'running',
  records_read: 0,
  records_written: 0,
  records_deleted: 0,
  records_skipped: 0,
  chunks_written: 0,
  chunks_deleted: 0,
  embedding_requests: 0,
  embedding_tokens: 0,
  embedding_cache_hits: 0,
  duration_ms: 0,
});

export async function runSync(pipeline: LoadedPipeline, opts: SyncOptions): Promise<SyncSummary> {
  const started = Date.now();
  const targets = opts.connection ? pipeline.connections.filter((c) => c.config.name === opts.connection) : pipeline.connections;
  if (!targets.length) {
    throw new SluiceError(`no connection named "${opts.connection}" in ${pipeline.file}`, {
      kind: 'config',
      hint: `connections: ${pipeline.connections.map((c) => c.config.name).join(', ')}`,
    });
  }
  const connections: ConnectionSummary[] = [];
  for (const conn of targets) {
    if (opts.signal.aborted) break;
    connections.push(await runConnection(pipeline, conn, opts));
  }
  const status = connections.some((c) => c.status === 'failed')
    ? 'failed'
    : connections.some((c) => c.status === 'interrupted') || opts.signal.aborted
      ? 'interrupted'
      : 'succeeded';
  return { status, dry_run: !!opts.dryRun, duration_ms: Date.now() - started, connections };
}

export async function connectorContext(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
  opts: { signal: AbortSignal; logger: Logger; follow?: boolean },
): Promise<ConnectorContext> {
  const workDir = join(pipeline.stateDir, 'work', encodeURIComponent(conn.config.name));
  await mkdir(workDir, { recursive: true });
  return {
    logger: opts.logger,
    baseDir: pipeline.baseDir,
    signal: opts.signal,
    connection: conn.config.name,
    follow: !!opts.follow,
    workDir,
  };
}

/** What a vector destination is told of the connection's embedder (open() and check()). */
export function embedderShape(embedder: Embedder | undefined): { dimensions?: number; embedderName?: string; embedderTag?: string } {
  return embedder
    ? { dimensions: embedder.dimensions, embedderName: `${embedder.provider} ${embedder.model}`, embedderTag: embedderTag(embedder) }
    : {};
}

export function embedderFor(conn: LoadedConnection, logger: Logger): Embedder | undefined {
  return conn.config.embedding ? createEmbedder(conn.config.embedding, { logger }) : undefined;
}

/** The outcome of a promise that is awaited later: it never rejects, so no unhandled rejection meanwhile. */
type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settled<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function unsettle<T>(result: Settled<T>): T {
  if (!result.ok) throw result.error;
  return result.value;
}

async function runConnection(pipeline: LoadedPipeline, conn: LoadedConnection, opts: SyncOptions): Promise<ConnectionSummary> {
  const started = Date.now();
  const name = conn.config.name;
  const logger = opts.logger;
  const streams: Record<string, StreamStats> = {};
  const summary: ConnectionSummary = {
    name,
    status: 'succeeded',
    ...(opts.shard ? { shard: `${opts.shard.index}/${opts.shard.count}` } : {}),
    duration_ms: 0,
    states_committed: 0,
    streams,
  };
  let embedder: Embedder | undefined;
  let cache: EmbeddingCache | undefined;
  let store: StateStore | undefined;
  let failure: SluiceError | undefined;
  let deadLetters: DeadLetterStore | undefined;
  let unlock: (() => Promise<void>) | undefined;
  let shelf: RunShelf | undefined;
  try {
    // A dry run writes nothing, and workers that share a connection on purpose (deep state merge) run side by side.
    // The workers of a sharded run own disjoint parts of the state, so each shard has its own lock.
    const lockName = opts.shard ? `${name}.shard-${opts.shard.index}-of-${opts.shard.count}` : name;
    if (!opts.dryRun && conn.source.capabilities.stateMerge !== 'deep') unlock = await lockConnection(pipeline.stateDir, lockName);
    const ctx = await connectorContext(pipeline, conn, opts);
    ctx.shelf = shelf = new RunShelf();
    ctx.listsDocuments = listsDocuments(conn, opts);
    embedder = embedderFor(conn, logger);
    // The recorded index identity is read (read-only: the destination's state and the state store)
    // while the source discovers: independent round trips, overlapped. Its verdict is taken only
    // after the schema and field checks, so which error a run reports is unchanged.
    const indexRead = settled(indexForRun(pipeline, conn, ctx, embedder, opts));
    let catalog: ConfiguredCatalog;
    let schema: SchemaTracker;
    try {
      const discovered = await conn.source.discover(conn.sourceConfig, ctx).catch((err) => {
        throw withContext(err, `connection ${name}, source ${conn.config.source.type} (discover)`);
      });
      catalog = configureCatalog(conn, discovered, { fullRefresh: opts.fullRefresh });
      if (opts.reindex) catalog = reindexCatalog(catalog);
      // Before anything is opened or written: a schema change the policy refuses stops here (and is
      // named as such, before the field check below would report a dropped column as a typo).
      schema = await SchemaTracker.start(pipeline.stateDir, conn, catalog, logger);
      // Field names are checked against the discovered schemas before anything is opened or written.
      const acceptedDrops = new Set(schema.changes.filter((c) => c.change === 'dropped' && c.action === 'propagated').map((c) => c.column));
      const fieldProblems = processingFieldProblems(conn, catalog, acceptedDrops);
      if (fieldProblems.length)
        throw new ConfigError(
          pipeline.file,
          fieldProblems.map((p) => ({ ...p, line: pipeline.lineOf?.(p.path) })),
        );
    } catch (err) {
      await indexRead; // its connections are closed before the run reports
      throw err;
    }
    // Before anything is read or written (after the field check, which names a typo more precisely):
    // a changed embedder or processing setting is refused (a reindex builds the new identity
    // instead); see ./index-identity.ts.
    const index = unsettle(await indexRead);
    store = openStateStore(pipeline);
    let connectionStore: StateStore = store;
    if (opts.shard) {
      // This worker's streams and partitions; its state is its own slot of the shared entry.
      const part = await shardCatalog(conn, catalog, store, opts.shard, ctx, { dryRun: opts.dryRun });
      catalog = part.catalog;
      ctx.shard = { ...opts.shard, partitions: part.partitions };
      connectionStore = new ShardStateView(store, opts.shard);
    } else checkLayout(name, await store.load(name), undefined);
    for (const s of catalog.streams) streams[s.stream.name] = newStats();
    opts.onConnectionStart?.(name, streams);

    // A limit that cannot be kept (no known price) is refused before anything is opened.
    const limitUsd = opts.maxCostUsd ?? conn.config.embedding?.max_cost_usd;
    const costGuard = CostGuard.for(
      name,
      embedder,
      limitUsd === undefined
        ? undefined
        : { usd: limitUsd, source: opts.maxCostUsd !== undefined ? '--max-cost' : 'embedding.max_cost_usd' },
    );
    const processor = createTextProcessor(conn.config.processing, { maxInputTokens: embedder?.maxInputTokens, model: embedder?.model });
    if (embedder && !embedder.local) cache = await openCacheFor(pipeline, store);
    opts.observer?.connectionStarted?.(summary, embedder);
    const errorsCfg = conn.config.errors;
    deadLetters =
      errorsCfg?.tolerance === 'all' && !opts.dryRun ? openDeadLetterStore(errorsCfg, pipeline.stateDir, pipeline.baseDir) : undefined;
    const budget = new ErrorBudget(name, errorsCfg, deadLetters);
    let completed = false; // a re-keying overwrite keeps its new primary key only when the run completes
    try {
      if (opts.dryRun) {
        // What the real run would refuse before writing (an existing table of another vector size).
        await conn.destination.preflight?.(conn.destinationConfig, ctx, {
          streams: catalog.streams.map((s) => ({
            name: s.stream.name,
            destinationSyncMode: s.destination_sync_mode,
            primaryKey: s.primary_key ?? [],
          })),
          ...embedderShape(embedder),
        });
        const state = withoutIndex(await connectionStore.load(name));
        summary.plan = await dryRun({
          conn,
          catalog,
          state,
          ctx,
          processor,
          embedder,
          cache,
          streams,
          signal: opts.signal,
          schema,
          sharded: !!opts.shard,
        });
        if (limitUsd !== undefined && summary.plan.estimated_cost_usd !== null) {
          summary.plan.max_cost_usd = limitUsd;
          summary.plan.within_max_cost = summary.plan.estimated_cost_usd <= limitUsd;
        }
      } else {
        const superseded = deadLetters ? await supersededLetters(deadLetters, name) : undefined;
        await syncConnection({
          conn,
          catalog,
          ctx,
          processor,
          embedder,
          cache,
          store: connectionStore,
          sharded: !!opts.shard,
          streams,
          summary,
          signal: opts.signal,
          logger,
          observer: opts.observer,
          schema,
          budget,
          superseded,
          costGuard,
          index,
          reindex: opts.reindex,
        });
        if (superseded?.ids.length) {
          await deadLetters!.remove(name, superseded.ids);
          logger.info(
            { connection: name, count: superseded.ids.length },
            'dead letters superseded by newer versions of their records were removed',
          );
        }
        budget.check(totalRead(streams), true);
        completed = !opts.signal.aborted;
        // Connections from before identities were kept, and sources that emit no state, record it now.
        if (completed) await adoptIdentity(store, name, index, logger);
      }
    } finally {
      if (costGuard && !opts.dryRun)
        summary.cost = { spent_usd: Number(costGuard.spentUsd.toFixed(10)), limit_usd: costGuard.limitUsd, stopped: !!costGuard.stopped };
      if (budget.failed) summary.dead_letters = budget.failed;
      if (schema.changes.length) summary.schema_changes = schema.changes;
      if (!opts.dryRun)
        await schema.save({ completed }).catch((e) => logger.warn({ err: describeUnknown(e) }, 'keeping the source schema failed'));
    }
    if (opts.signal.aborted) summary.status = 'interrupted';
  } catch (err) {
    const e = err instanceof SluiceError ? err : withContext(err, `connection ${name}`);
    const abortError = (err as Error)?.name === 'AbortError' || ((err as Error)?.cause as Error | undefined)?.name === 'AbortError';
    summary.status = opts.signal.aborted && abortError ? 'interrupted' : 'failed';
    summary.error = {
      message: e.message,
      ...(e.hint ? { hint: e.hint } : {}),
      ...(e.where ? { where: e.where } : {}),
      ...(e.transient ? { transient: true as const } : {}),
      ...(err instanceof IndexChangedError ? { refused: 'index_changed' as const } : {}),
    };
    if (summary.status === 'failed') {
      failure = e;
      logger.error({ connection: name, where: e.where, hint: e.hint, err: e.message }, `connection ${name} failed: ${e.message}`);
    }
  } finally {
    await shelf?.close();
    await cache?.close().catch(() => undefined);
    await store?.close?.().catch(() => undefined);
    await embedder?.close?.().catch(() => undefined);
    await deadLetters?.close().catch(() => undefined);
    await unlock?.().catch(() => undefined);
  }
  const elapsed = Date.now() - started;
  summary.duration_ms = elapsed;
  for (const s of Object.values(streams)) {
    if (s.status === 'running') s.status = summary.status;
    if (!s.duration_ms) s.duration_ms = elapsed;
  }
  opts.observer?.connectionFinished?.(summary, failure);
  return summary;
}

export interface RunParts {
  conn: LoadedConnection;
  catalog: ConfiguredCatalog;
  ctx: ConnectorContext;
  processor: TextProcessor;
  embedder?: Embedder;
  cache?: EmbeddingCache;
  streams: Record<string, StreamStats>;
  signal: AbortSignal;
  observer?: SyncObserver;
  schema?: SchemaTracker;
  budget?: ErrorBudget;
  /** Dead letters of this connection by stream and key: a newer version read by this run supersedes them. */
  superseded?: { byKey: Map<string, string[]>; ids: string[] };
  /** The run's cost limit, when one is set. */
  costGuard?: CostGuard;
  /** Set when the destination keeps fingerprints: documents carry one, and their chunking waits for the unchanged stage. */
  fingerprinter?: Fingerprinter;
  /** Recorded with every connection state this run hands to the destination (./index-identity.ts). */
  index?: IndexIdentity;
}

const totalRead = (streams: Record<string, StreamStats>) => Object.values(streams).reduce((n, s) => n + s.records_read, 0);

async function supersededLetters(store: DeadLetterStore, connection: string) {
  const byKey = new Map<string, string[]>();
  for (const l of await store.list(connection)) {
    if (l.key === undefined) continue;
    const k = `${l.stream}\u0000${l.key}`;
    byKey.set(k, [...(byKey.get(k) ?? []), l.id]);
  }
  return { byKey, ids: [] as string[] };
}

/** An input the embedding API refused (4xx, not a rate limit or an auth problem): the record, not the service, is at fault. */
function isRefusedInput(err: unknown): boolean {
  if (!(err instanceof SluiceError) || err.kind !== 'embedding' || err.transient) return false;
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    const status = httpStatus(e);
    if (status !== undefined) return status === 400 || status === 413 || status === 422;
  }
  return false;
}

/** When each STATE went to the destination, and the newest record emitted before it (for metrics). */
const handedOver = new WeakMap<StateMessage, { at: number; recordEmittedAt?: number }>();

async function syncConnection(
  p: RunParts & { store: StateStore; sharded: boolean; summary: ConnectionSummary; logger: Logger; reindex?: { keepPrevious: boolean } },
) {
  const { conn, catalog, ctx, embedder, store, streams, summary } = p;
  const name = conn.config.name;
  const writer = await conn.destination
    .open(conn.destinationConfig, ctx, {
      streams: catalog.streams.map((s) => ({
        name: s.stream.name,
        destinationSyncMode: s.destination_sync_mode,
        primaryKey: s.primary_key ?? [],
      })),
      ...embedderShape(embedder),
      ...(p.reindex ? { reindex: p.reindex } : {}),
    })
    .catch((err) => {
      const e = withContext(err, `connection ${name}, destination ${conn.config.destination.type}`);
      // A destination that cannot open this reindex for a reason of configuration (Pinecone: the
      // index's fixed vector size) refuses it before any write, like a refused identity (exit 2).
      if (p.reindex && e.kind === 'config')
        throw new IndexChangedError(e.message, { kind: 'config', where: e.where, hint: e.hint, cause: err });
      throw e;
    });
  const closeWriter = () => writer.close().catch((err) => p.logger.warn({ err: describeUnknown(err) }, 'closing the destination failed'));
  let closing: Promise<void> | undefined;
  try {
    // Exactly-once destinations keep state with their data; theirs wins over the file store. Not
    // for a shard worker: the destination keeps one state per connection, which every worker
    // writes; the worker's own slot in the store is its checkpoint (its replays are upserts).
    const saved = (p.sharded ? undefined : await writer.readState?.()) ?? (await store.load(name));
    // A reindex reads everything afresh: its state is only what this read produces.
    const state = p.reindex ? undefined : withoutIndex(withoutVanishedStreams(saved, writer.streamsWithoutData?.() ?? [], name, p.logger));
    const mergeMode = conn.source.capabilities.stateMerge ?? 'replace';
    const touched = mergeMode === 'deep' ? new TouchedStreams() : undefined;
    // Writers that keep fingerprints get only what changed (./unchanged.ts, docs/fingerprints.md).
    const unchanged = writer.fingerprints && !p.reindex ? unchangedStage(p, writer.fingerprints.bind(writer)) : undefined;
    // A reindex skips nothing but still stores fingerprints, so the next sync can skip.
    const fingerprinter = writer.fingerprints
      ? new Fingerprinter(p.processor, embedder, {
          sourceType: conn.config.source.type,
          processing: conn.config.processing,
          schemaChanges: conn.config.schema_changes,
        })
      : undefined;
    // Source digests (docs/fingerprints.md): unchanged rows of swept streams are not read in full.
    const digests =
      conn.source.capabilities.sourceDigests && conn.destination.capabilities.sourceDigests && unchanged && fingerprinter && !p.sharded
        ? new SweptDigests({ conn, catalog, sharded: p.sharded, fingerprinter, stats: streams })
        : undefined;
    const sweep = {
      ...sweepOptions(p),
      sharded: p.sharded,
      listWhileReading: true,
      annotate: !!unchanged,
      dropUnchanged: unchanged?.dropListedUnchanged.bind(unchanged),
      digests,
    };
    const readCtx = digests ? { ...ctx, storedDigests: digests } : ctx;
    const read = sweepStage(
      documents({ ...p, ctx: readCtx, touched, fingerprinter }, withoutSweptProgress(state, sweptStreams(sweep))),
      sweep,
    );
    const messages = guardEmptyText(unchanged ? unchanged.runBatches(read) : fingerprinter ? chunkedNow(eachOf(read)) : eachOf(read), {
      maxEmptyShare: conn.config.processing?.max_empty_share ?? 0.5,
      conn,
      ctx,
    });
    const embedded = embedder ? embedStage(messages, p, embedder) : messages;
    // Committed states are saved in the background (an fsync each) so the pipeline keeps flowing;
    // states that pile up meanwhile are merged into one write, in order. Not for sources that act
    // on commits (onStateCommitted): they are told in step, as the protocol promises.
    const saver = new BackgroundSaver<Extract<DestinationEvent, { type: 'STATE_COMMITTED' }> & { mine: SourceState }>(async (batch) => {
      await store.update(name, (stored) =>
        batch.reduce<SourceState | undefined>((acc, e) => mergeConnectionState(acc, e.mine, mergeMode), stored)!,
      );
      summary.states_committed += batch.length;
      for (const e of batch) await conn.source.onStateCommitted?.(conn.sourceConfig, e.state, e.connection, ctx);
    });
    try {
      for await (const ev of writer.write(embedded)) {
        if (ev.type === 'WRITTEN') {
          const s = streams[ev.stream];
          if (s) {
            s.records_written += ev.records;
            s.chunks_written += ev.chunksWritten;
            s.chunks_deleted += ev.chunksDeleted;
          }
        } else if (ev.type === 'REJECTED') {
          // Stored (durably) before the STATE that covers it is seen, so it is never skipped silently.
          await destinationRejection(
            ev,
            `connection ${name}, destination ${conn.config.destination.type}`,
            p.budget,
            streams[ev.stream],
            totalRead(streams),
          );
        } else {
          // Deep merge (workers sharing a connection) writes only what this worker changed, so a stale
          // start-up view of another worker's streams never rolls its progress back.
          saver.push({ ...ev, mine: touched ? touched.pick(ev.connection) : ev.connection });
          unchanged?.committed(ev.state);
          const sent = handedOver.get(ev.state);
          if (sent && p.observer?.stateCommitted) {
            const now = Date.now();
            p.observer.stateCommitted(
              name,
              (now - sent.at) / 1000,
              sent.recordEmittedAt ? Math.max(0, now - sent.recordEmittedAt) / 1000 : 0,
            );
          }
          // A source told of commits (CDC acknowledging its slot) hears of each while it still runs.
          if (conn.source.onStateCommitted) await saver.flush();
        }
      }
    } catch (err) {
      // Whatever the destination confirmed is saved, even when the run fails afterwards.
      await saver.flush().catch((e) => p.logger.warn({ err: describeUnknown(e) }, 'saving the state failed'));
      throw err;
    }
    // The destination confirmed everything it will: it closes (its connections) while the last
    // states are saved, instead of after.
    closing = closeWriter();
    await saver.flush();
    // Stopped at the cost limit: what came before is committed (above); the run still fails.
    if (p.costGuard?.stopped) throw p.costGuard.stopped;
  } finally {
    await (closing ?? closeWriter());
  }
}

/** The unchanged stage for a writer that keeps fingerprints; its counters start at 0 so the summary shows them. */
function unchangedStage(p: RunParts, fingerprints: NonNullable<DestinationWriter['fingerprints']>): UnchangedStage {
  for (const s of Object.values(p.streams)) {
    s.records_unchanged = 0;
    s.records_metadata_updated = 0;
  }
  return new UnchangedStage({
    writer: { fingerprints },
    modes: new Map(p.catalog.streams.map((s) => [s.stream.name, s.destination_sync_mode])),
    stats: p.streams,
    where: `connection ${p.conn.config.name}, destination ${p.conn.config.destination.type}`,
    workDir: p.ctx.workDir,
  });
}

const sweepOptions = (p: RunParts) => ({
  conn: p.conn,
  ctx: p.ctx,
  catalog: p.catalog,
  stats: p.streams,
  signal: p.signal,
  logger: p.ctx.logger,
});

/** Documents whose chunking was deferred for the unchanged stage, chunked here when there is none. */
async function* chunkedNow(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationMessage> {
  for await (const m of input) yield ensureChunks(m);
}

/**
 * Saved progress of streams whose data is gone at the destination (its table was dropped or
 * renamed, or the destination is new) is never trusted: those streams are re-read from scratch.
 * A CDC source re-snapshots such a stream and keeps streaming the others from the saved position.
 */
function withoutVanishedStreams(state: SourceState | undefined, empty: string[], connection: string, logger: Logger) {
  const stale = empty.filter((s) => state?.streams[s] !== undefined);
  if (!state || !stale.length) return state;
  for (const s of stale)
    logger.warn(
      { connection, stream: s },
      `connection ${connection}, stream ${s}: the destination has no data for this stream (its storage was just created) but the saved state has progress; re-reading the stream from scratch`,
    );
  return { ...state, streams: Object.fromEntries(Object.entries(state.streams).filter(([k]) => !stale.includes(k))) };
}

/** Which streams (and whether the shared state) each emitted connection state changed since the last commit. */
class TouchedStreams {
  private pending: Array<{ state: SourceState; streams: Set<string>; shared: boolean }> = [];
  private current = { streams: new Set<string>(), shared: false };

  note(msg: StateMessage) {
    // What the message sets, applied to nothing: exactly the streams (and shared state) it touches.
    const set = applyStateMessage(undefined, msg);
    for (const name of Object.keys(set.streams)) this.current.streams.add(name);
    if (set.shared) this.current.shared = true;
  }

  emitted(state: SourceState) {
    this.pending.push({ state, ...this.current });
    this.current = { streams: new Set(), shared: false };
  }

  /** The parts of `state` changed by it and every earlier uncommitted state. */
  pick(state: SourceState): SourceState {
    const i = this.pending.findIndex((e) => e.state === state);
    const upTo = i < 0 ? this.pending.length : i + 1;
    const done = this.pending.splice(0, upTo);
    const streams = new Set(done.flatMap((e) => [...e.streams]));
    const shared = done.some((e) => e.shared);
    return {
      streams: Object.fromEntries(Object.entries(state.streams).filter(([k]) => streams.has(k))),
      ...(shared && state.shared ? { shared: state.shared } : {}),
    };
  }
}

/**
 * Source messages → destination messages (chunks without vectors yet), in arrays: one per array the
 * source hands over (src/cdk/batches.ts; one per message otherwise). While an overwrite stream is
 * loading, its own STATEs are held back until it completes, so no destination acknowledges progress
 * of an unswitched generation; the STATEs of the other streams flow on (their connection state
 * carries the overwrite stream's state as it was before). A GLOBAL state touching a loading
 * overwrite stream is held as a whole, and everything after it with it (releasing it later must
 * not roll newer stream states back).
 */
async function* documents(
  p: RunParts & { touched?: TouchedStreams },
  state: SourceState | undefined,
): AsyncGenerator<DestinationMessage[]> {
  const { conn, catalog, ctx, processor, streams, signal } = p;
  const byName = new Map(catalog.streams.map((s) => [s.stream.name, s]));
  const openOverwrites = new Set(catalog.streams.filter((s) => s.destination_sync_mode === 'overwrite').map((s) => s.stream.name));
  const completed = new Set<string>();
  const streamStart = new Map<string, number>();
  // The connection state as far as it may be acknowledged (held STATEs not applied).
  let acknowledgeable: SourceState = { ...(state ?? { streams: {} }), ...(p.index ? { index: p.index } : {}) };
  const heldByStream = new Map<string, StateMessage>(); // overwrite stream → its latest STATE
  const heldInOrder: StateMessage[] = []; // behind a held GLOBAL state: everything, in order
  let lastStream: string | undefined;
  let newestEmittedAt: number | undefined;
  const handOver = (msg: DestinationMessage): DestinationMessage => {
    if (msg.type === 'STATE') {
      handedOver.set(msg.state, { at: Date.now(), recordEmittedAt: newestEmittedAt });
      newestEmittedAt = undefined; // a later STATE with no new records behind it is caught up
    }
    return msg;
  };

  const release = (msgs: StateMessage[]): DestinationMessage | undefined => {
    if (!msgs.length) return undefined;
    for (const m of msgs) {
      acknowledgeable = applyStateMessage(acknowledgeable, m);
      p.touched?.note(m);
    }
    p.touched?.emitted(acknowledgeable);
    return handOver({ type: 'STATE', state: msgs.at(-1)!, connection: acknowledgeable });
  };

  const complete = function* (stream: string): Generator<DestinationMessage> {
    if (completed.has(stream)) return;
    completed.add(stream);
    const s = streams[stream];
    if (s) s.duration_ms = Date.now() - (streamStart.get(stream) ?? Date.now());
    yield { type: 'STREAM_COMPLETE', stream };
    openOverwrites.delete(stream);
    const own = heldByStream.get(stream);
    heldByStream.delete(stream);
    const mine = own ? release([own]) : undefined;
    if (mine) yield mine;
    if (!openOverwrites.size && heldInOrder.length) yield release(heldInOrder.splice(0))!;
  };

  /** A STATE from the source: passed on now, or held (see the function comment). */
  const onState = (m: StateMessage): DestinationMessage | undefined => {
    if (heldInOrder.length) {
      heldInOrder.push(m);
      return undefined;
    }
    const touches = Object.keys(applyStateMessage(undefined, m).streams);
    const loading = touches.filter((t) => openOverwrites.has(t));
    // A state that names no stream (LEGACY) may concern any of them: held like a GLOBAL one.
    if (!loading.length && (touches.length || !openOverwrites.size)) return release([m]);
    if (m.type !== 'GLOBAL' && touches.length === 1) {
      heldByStream.set(touches[0], m);
      return undefined;
    }
    heldInOrder.push(m);
    return undefined;
  };

  /** Where the record being made a document is, for its errors: one function, called only on an error. */
  const recordWhere = () => `stream ${lastStream}, record ${lastStream ? streams[lastStream].records_read : 0}`;

  /**
   * One source message: what it becomes goes to `out`. Synchronous but for the rare steps that wait
   * (a dead letter, a record error): then it returns their promise.
   */
  /** The stream of the previous record (usually this record's too): its configuration and counters, not looked up again. */
  let current: { name: string; cs: ConfiguredStream; stats: StreamStats } | undefined;
  const documentsOf = (m: AirbyteMessage): Promise<void> | undefined => {
    if (m.type === 'RECORD') {
      const stream = m.record.stream;
      let at = current;
      if (at?.name !== stream) {
        const cs = byName.get(stream);
        if (!cs) return;
        if (!streamStart.has(stream)) streamStart.set(stream, Date.now());
        at = current = { name: stream, cs, stats: streams[stream] };
      }
      lastStream = stream;
      at.stats.records_read++;
      newestEmittedAt = m.record.emitted_at;
      const data = p.schema ? p.schema.record(stream, m.record.data) : m.record.data;
      let doc: DestinationMessage;
      try {
        doc = toDocument(at.cs, data, processor, at.stats, recordWhere, p.fingerprinter, m.record.digest);
      } catch (err) {
        if (!(err instanceof SluiceError) || err.kind === 'internal' || !p.budget) throw err;
        const stage = /primary key/i.test(err.message) ? 'key' : 'text';
        return p.budget
          .deadLetter(err, { stream, stage, payload: data }, totalRead(streams))
          .then(() => countFailed(streams[stream], stage));
      }
      if (doc.type === 'DOCUMENT' && hasNoText(doc) && p.budget?.tolerant) {
        // Still passed on (its old chunks go), and kept as a letter so the empty record is seen.
        return p.budget
          .deadLetter(
            new Error('no text: the fields that make the text are empty'),
            { stream, key: doc.documentId, stage: 'text', payload: data },
            totalRead(streams),
          )
          .then(() => {
            countFailed(streams[stream], 'text');
            out.push(doc);
          });
      } else if (p.superseded && (doc.type === 'DOCUMENT' || doc.type === 'DELETE')) {
        const ids = p.superseded.byKey.get(`${stream}\u0000${doc.documentId}`);
        if (ids) p.superseded.ids.push(...ids);
      }
      out.push(doc);
    } else if (m.type === 'STATE') {
      const msg = onState(m.state);
      if (msg) out.push(msg);
    } else if (m.type === 'TRACE') {
      if (m.trace.type === 'STREAM_STATUS' && m.trace.stream_status?.status === 'COMPLETE') {
        const stream = m.trace.stream_status.stream_descriptor.name;
        if (byName.has(stream)) out.push(...complete(stream));
      } else if (m.trace.type === 'ESTIMATE' && m.trace.estimate?.row_estimate != null) {
        const s = streams[m.trace.estimate.name];
        if (s) s.records_estimated = m.trace.estimate.row_estimate;
      } else if (m.trace.type === 'SLUICE_RECORD_ERROR' && m.trace.record_error) {
        // A record the source could not parse: fails the run, or becomes a dead letter (./rejections.ts).
        const e = m.trace.record_error;
        const s = streams[e.stream];
        if (!s) return;
        lastStream = e.stream;
        s.records_read++;
        return sourceRecordError(
          e,
          `connection ${conn.config.name}, source ${conn.config.source.type}, stream ${e.stream}`,
          p.budget,
          s,
          totalRead(streams),
        );
      } else if (m.trace.type === 'ERROR' && m.trace.error) {
        const stream = m.trace.error.stream_descriptor?.name ?? lastStream;
        throw new SluiceError(m.trace.error.message, {
          kind: m.trace.error.failure_type === 'config_error' ? 'config' : 'source',
          where: `connection ${conn.config.name}${stream ? `, stream ${stream}` : ''}`,
          transient: m.trace.error.failure_type === 'transient_error',
        });
      }
    } else if (m.type === 'LOG') {
      const level =
        m.log.level === 'FATAL' || m.log.level === 'ERROR'
          ? 'error'
          : m.log.level === 'WARN'
            ? 'warn'
            : m.log.level === 'INFO'
              ? 'info'
              : 'debug';
      ctx.logger[level]({ connection: conn.config.name, source: conn.config.source.type }, m.log.message);
    }
  };

  // An array of source messages per step when the source offers them (src/cdk/batches.ts), else one.
  const source = messageBatches(conn.source.read(conn.sourceConfig, catalog, withoutIndex(state), ctx));
  let busySince = performance.now();
  // What the current source array produced: handed on as one array.
  let out: DestinationMessage[] = [];
  const take = () => {
    const taken = out;
    out = [];
    return taken;
  };
  try {
    for (;;) {
      if (signal.aborted) return;
      // A source that never waits (files read synchronously) keeps the pipeline in promise
      // callbacks; every few ms, let I/O through so commits and acknowledgements are not delayed.
      if (performance.now() - busySince > 5) {
        await setImmediate();
        busySince = performance.now();
      }
      let r: IteratorResult<AirbyteMessage[]>;
      try {
        r = await source.next();
      } catch (err) {
        throw withContext(
          err,
          `connection ${conn.config.name}, source ${conn.config.source.type}${lastStream ? `, stream ${lastStream}` : ''}`,
        );
      }
      if (r.done) break;
      try {
        for (const m of r.value) {
          if (signal.aborted) break;
          const waiting = documentsOf(m);
          if (waiting) await waiting;
        }
      } catch (err) {
        // What came before the failure still goes on first (a STATE among it gets committed), as
        // when messages were handed on one by one.
        if (out.length) yield take();
        throw err;
      }
      if (out.length) yield take();
    }
    // A source that ended without saying so has still finished every stream.
    if (!signal.aborted) for (const s of catalog.streams) out.push(...complete(s.stream.name));
    if (out.length) yield take();
  } finally {
    await source.return?.();
  }
}

export function toDocument(
  cs: ConfiguredStream,
  data: Record<string, unknown>,
  processor: TextProcessor,
  stats: StreamStats,
  /** For error messages; a function when it is worth building only on an error (once per record). */
  where: string | (() => string),
  /** Given: the document carries its fingerprint and is chunked only when needed (ensureChunks). */
  fingerprinter?: Fingerprinter,
  /** The row's source digest (RECORD's `digest`): stored in the fingerprint with the stream's tag. */
  digest?: string,
): DestinationMessage {
  const stream = cs.stream.name;
  const pk = cs.primary_key ?? [];
  const deleted = data[CDC_DELETED_AT] != null;
  const docId = pk.length ? keyOf(data, pk, where) : sha256(canonicalJson(data));
  if (deleted) {
    stats.records_deleted++;
    return { type: 'DELETE', stream, documentId: docId };
  }
  const record = withoutBookkeeping(data);
  if (fingerprinter) {
    const extracted = processor.extract(record);
    // Extracted again if the document is chunked at all: most of a re-sync is unchanged documents,
    // and holding each one's text until its look-up is decided only kept it alive for the GC to copy.
    // Parts are only texts that have text (ExtractedText.parts): none means empty, no scan needed.
    const empty = extracted.parts ? !extracted.parts.length : !hasText(extracted.text);
    const source = digest === undefined ? undefined : `${fingerprinter.sourceTag(cs)}:${digest}`;
    return deferredDocument(stream, docId, record, fingerprinter.of(extracted, source), chunkerOf(processor, stats), empty);
  }
  return { type: 'DOCUMENT', stream, documentId: docId, chunks: chunksOf(docId, processor.process(record), stats), record };
}

/** documentId, with `where` built only when the key is missing. */
function keyOf(data: Record<string, unknown>, pk: readonly (readonly string[])[], where: string | (() => string)): string {
  if (typeof where === 'string') return documentId(data, pk, where);
  try {
    return documentId(data, pk, '');
  } catch {
    return documentId(data, pk, where()); // fails again, now naming the record
  }
}

/** One chunker per stream's stats (they belong to one run and its processor). */
const chunkers = new WeakMap<StreamStats, { processor: TextProcessor; chunk: DocumentChunker }>();

function chunkerOf(processor: TextProcessor, stats: StreamStats): DocumentChunker {
  let c = chunkers.get(stats);
  if (c?.processor !== processor) {
    c = { processor, chunk: (doc) => chunksOf(doc.documentId, processor.chunk(processor.extract(doc.record)), stats) };
    chunkers.set(stats, c);
  }
  return c.chunk;
}

/** The record without Airbyte bookkeeping columns (`_ab_…`); the record itself when it has none (the usual case). */
function withoutBookkeeping(data: Record<string, unknown>): Record<string, unknown> {
  for (const k in data)
    if (k.startsWith('_ab_')) return Object.fromEntries(Object.entries(data).filter(([key]) => !key.startsWith('_ab_')));
  return data;
}

function chunksOf(docId: string, pieces: ProcessedChunk[], stats: StreamStats): Chunk[] {
  if (!pieces.length) stats.records_skipped++;
  // An empty document still replaces its old chunks (with none), so stale text does not linger.
  return pieces.map((piece, i) => ({
    id: chunkId(docId, i),
    documentId: docId,
    chunkIndex: i,
    content: piece.content,
    contentHash: sha256(piece.content),
    metadata: piece.metadata,
  }));
}

/** At most this many messages in one embedding group, whatever their chunks (metadata-only documents have none). */
const MAX_EMBED_GROUP_ITEMS = 2000;
const firstStream = (g: DestinationMessage[]) => g.find((m) => m.type === 'DOCUMENT')?.stream;

/** An embedding group so far: its chunks to embed and the stream of its first document. */
type EmbedGroupTally = { chunks: number; stream: string | undefined };

/** Chunks to embed: a metadata-only document keeps its stored vectors (no embedding, no cache look-up). */
const chunksToEmbed = (m: Extract<DestinationMessage, { type: 'DOCUMENT' }>) => (m.metadataOnly ? 0 : m.chunks.length);

/**
 * How the embed stage cuts its groups (groupItems' isFull and tally): a group is full before `next`
 * when its chunks would pass `batchSize`, `next` is of another stream, or it holds
 * MAX_EMBED_GROUP_ITEMS. Chunks and stream are tallied as items join: recounting the group for each
 * item was quadratic in a run of metadata-only documents (no chunks, so no batch ever filled).
 */
export function embedGroupLimits(batchSize: number): {
  tally: GroupTally<DestinationMessage, EmbedGroupTally>;
  isFull: (group: DestinationMessage[], next: DestinationMessage, tally: EmbedGroupTally) => boolean;
} {
  return {
    tally: {
      start: () => ({ chunks: 0, stream: undefined }),
      add: (tally, m) => {
        if (m.type === 'DOCUMENT') {
          tally.chunks += chunksToEmbed(m);
          tally.stream ??= m.stream;
        }
        return tally;
      },
    },
    isFull: (group, next, tally) => {
      if (next.type !== 'DOCUMENT') return false;
      // Documents without chunks to embed count too: a group's documents wait until it is decided.
      if (group.length >= MAX_EMBED_GROUP_ITEMS) return true;
      return tally.chunks + chunksToEmbed(next) > batchSize || (tally.stream !== undefined && tally.stream !== next.stream);
    },
  };
}

/** Groups documents into embedding batches; batches run concurrently and come out in order. */
function embedStage(input: AsyncIterable<DestinationMessage>, p: RunParts, embedder: Embedder): AsyncIterable<DestinationMessage> {
  const groups = groupItems(input, {
    ...embedGroupLimits(embedder.batchSize),
    closesGroup: (m) => m.type === 'STATE' || m.type === 'STREAM_COMPLETE',
    lingerMs: 25,
  });
  // At least a few batches in flight even for a CPU-bound paid model: each batch also waits on
  // cache reads and a durable cache commit, which then overlap with the next batch's work.
  // mapOrdered starts batches in order, so cost-limit turns are taken in batch order.
  // Once the run is failing, requests not yet sent are not sent: their answers would be paid for and
  // then lost (the run ends before they are written) and paid again by the re-run.
  const stop = new AbortController();
  let stoppedBy: unknown;
  const pending = new Set<Promise<unknown>>();
  const done = mapOrdered(
    groups,
    (g) => {
      const batch = embedGroup(g, p, embedder, p.costGuard?.turn(), stop.signal);
      pending.add(batch);
      void batch.then(
        () => pending.delete(batch),
        (err: unknown) => {
          pending.delete(batch);
          // The cost limit is an orderly end: the batches before it still run.
          if (err instanceof CostLimitError || stop.signal.aborted) return;
          stoppedBy = err;
          stop.abort();
        },
      );
      return batch;
    },
    Math.max(4, embedder.concurrency),
  );
  return (async function* () {
    try {
      for await (const g of done) yield* g;
    } catch (err) {
      // The cost limit ends the input like an interrupt: the batches before it are written and
      // their states committed; syncConnection then fails the run with the limit's message.
      if (err instanceof CostLimitError) return;
      // An earlier batch the stop cut short (a retry not made) fails as the batch that caused it.
      const cutShort = stoppedBy !== undefined && err instanceof SluiceError && err.kind === 'interrupted';
      throw cutShort ? stoppedBy : err;
    } finally {
      // Ended early (a batch or the writer failed): the batches behind send nothing more, and those
      // already sent are awaited, so their vectors reach the cache and a re-run does not pay again.
      stop.abort();
      await Promise.allSettled(pending);
    }
  })();
}

async function embedGroup(
  group: DestinationMessage[],
  p: RunParts,
  embedder: Embedder,
  turn?: CostTurn,
  stop?: AbortSignal,
): Promise<DestinationMessage[]> {
  try {
    return await embedChunks(group, p, embedder, turn, stop);
  } catch (err) {
    if (!p.budget?.tolerant || !isRefusedInput(err)) throw err;
    // The API refused the batch for its content: one document at a time finds the records at fault.
    const out: DestinationMessage[] = [];
    for (const m of group) {
      if (m.type !== 'DOCUMENT') {
        out.push(m);
        continue;
      }
      try {
        out.push(...(await embedChunks([m], p, embedder, p.costGuard?.turn(), stop)));
      } catch (e) {
        if (!isRefusedInput(e)) throw e;
        await p.budget.deadLetter(
          e,
          { stream: m.stream, key: m.documentId, stage: 'embed', payload: m.record ?? {} },
          totalRead(p.streams),
        );
        countFailed(p.streams[m.stream], 'embed');
      }
    }
    return out;
  }
}

export async function embedChunks(
  group: DestinationMessage[],
  p: RunParts,
  embedder: Embedder,
  turn?: CostTurn,
  stop?: AbortSignal,
): Promise<DestinationMessage[]> {
  try {
    return await embedChunksInTurn(group, p, embedder, turn, stop);
  } finally {
    turn?.release(); // a batch with nothing to embed, or one that failed, must not hold up the next
  }
}

async function embedChunksInTurn(
  group: DestinationMessage[],
  p: RunParts,
  embedder: Embedder,
  turn?: CostTurn,
  stop?: AbortSignal,
): Promise<DestinationMessage[]> {
  const chunks = group.flatMap((m) => (m.type === 'DOCUMENT' && !m.metadataOnly ? m.chunks : []));
  if (!chunks.length) return group;
  const stream = firstStream(group)!;
  const stats = p.streams[stream];
  // Cache keys only when there is a cache (none for local embedders).
  const keys = p.cache ? chunks.map((c) => embeddingCacheKey(embedder, c.contentHash)) : undefined;
  const cached = p.cache && keys ? await p.cache.getMany(keys) : [];
  // By content: a text that occurs twice in the batch is embedded once.
  const missing = new Map<string, { content: string; key?: string }>();
  chunks.forEach((c, i) => {
    if (cached[i]) stats.embedding_cache_hits++;
    else missing.set(c.contentHash, { content: c.content, key: keys?.[i] });
  });
  const fresh = new Map<string, Float32Array>();
  if (missing.size) {
    const texts = [...missing.values()].map((m) => m.content);
    // Priced before it is sent: the request that would go over the cost limit is never made.
    const reservation = turn ? await turn.reserve(texts.reduce((n, t) => n + embedder.countTokens(t), 0)) : undefined;
    // No abort signal here: on SIGINT, what was already read is still embedded and committed.
    const began = performance.now();
    const seconds = () => (performance.now() - began) / 1000;
    const result = await embedder.embed(texts, undefined, stop).catch((err) => {
      reservation?.cancel();
      p.observer?.embeddingBatch?.(p.conn.config.name, stream, seconds(), false);
      throw withContext(err, `connection ${p.conn.config.name}, stream ${stream}, embedding ${texts.length} chunks`);
    });
    reservation?.paid(result.tokens);
    p.observer?.embeddingBatch?.(p.conn.config.name, stream, seconds(), true);
    stats.embedding_requests += result.requests;
    stats.embedding_tokens += result.tokens;
    const hashes = [...missing.keys()];
    result.vectors.forEach((v, i) => {
      if (v.length !== embedder.dimensions) {
        throw new SluiceError(`embedding model ${embedder.model} returned ${v.length} dimensions, expected ${embedder.dimensions}`, {
          kind: 'embedding',
          hint: 'set embedding.dimensions to what the model produces',
        });
      }
      fresh.set(hashes[i], v);
    });
    await p.cache?.putMany([...fresh.entries()].map(([hash, v]) => [missing.get(hash)!.key!, v]));
  }
  chunks.forEach((c, i) => {
    c.embedding = cached[i] ?? fresh.get(c.contentHash);
  });
  return group;
}

/**
 * Reads, chunks and consults the cache; counts what a real sync would write, delete, embed and
 * cost, and how long the embedding takes under the configured rate limits. Writes nothing.
 */
async function dryRun(p: RunParts & { state: SourceState | undefined; sharded: boolean }): Promise<DryRunPlan> {
  const { embedder } = p;
  // A destination that lists its documents with fingerprints: unchanged documents are neither written nor embedded.
  const stored = StoredFingerprints.for(p.conn, p.ctx, new Map(p.catalog.streams.map((s) => [s.stream.name, s.destination_sync_mode])));
  try {
    return await planRun({ ...p, fingerprinter: stored ? new Fingerprinter(p.processor, embedder) : undefined }, stored);
  } finally {
    await stored?.close();
  }
}

async function planRun(
  p: RunParts & { state: SourceState | undefined; sharded: boolean },
  stored: StoredFingerprints | undefined,
): Promise<DryRunPlan> {
  const { embedder, cache, streams } = p;
  for (const s of Object.values(streams)) {
    if (stored) s.documents_unchanged = 0;
    s.documents_to_write = 0;
    s.documents_to_delete = 0;
    s.documents_to_embed = 0;
    s.documents_cached = 0;
    s.chunks_to_write = 0;
    s.chunks_to_embed = 0;
    s.tokens_to_embed = 0;
    s.estimated_cost_usd = embedder ? 0 : null;
  }
  const seen = new Set<string>();
  const sweep = { ...sweepOptions(p), sharded: p.sharded };
  for await (const m of eachOf(sweepStage(documents(p, withoutSweptProgress(p.state, sweptStreams(sweep))), sweep))) {
    if (m.type === 'DELETE') {
      streams[m.stream].documents_to_delete!++;
      await stored?.deleted(m);
    }
    if (m.type !== 'DOCUMENT') continue;
    const s = streams[m.stream];
    const change = stored && m.fingerprint ? await stored.plan(m, m.fingerprint) : 'changed';
    if (change === 'unchanged') {
      s.documents_unchanged!++;
      continue;
    }
    ensureChunks(m);
    s.documents_to_write!++;
    s.chunks_to_write! += m.chunks.length;
    if (!embedder || (change === 'metadata' && m.chunks.length)) continue; // metadata only: the stored vectors stay
    const keys = m.chunks.map((c) => embeddingCacheKey(embedder, c.contentHash));
    const cached = cache ? await cache.getMany(keys) : [];
    let toEmbed = 0;
    m.chunks.forEach((c, i) => {
      // Like the run: only a cache (paid embedders) gives hits; a text repeated within the run is
      // paid for once there (the run caches as it goes), a local embedder recomputes it.
      if (cached[i]) {
        s.embedding_cache_hits++;
        return;
      }
      toEmbed++;
      if (cache && seen.has(keys[i])) return;
      seen.add(keys[i]);
      s.chunks_to_embed!++;
      s.tokens_to_embed! += embedder.countTokens(c.content);
    });
    if (toEmbed) s.documents_to_embed!++;
    else if (m.chunks.length) s.documents_cached!++;
  }
  const plan: DryRunPlan = {
    documents_to_write: 0,
    documents_to_delete: 0,
    chunks_to_write: 0,
    chunks_to_embed: 0,
    tokens_to_embed: 0,
    requests_to_embed: 0,
    estimated_cost_usd: embedder ? 0 : null,
    estimated_seconds: null,
  };
  // One request per batch of up to batch_size inputs (and 300,000 tokens), as the run sends them.
  const inputsPerRequest = embedder ? Math.min(embedder.batchSize, OPENAI_LIMITS.maxInputsPerRequest) : 1;
  for (const s of Object.values(streams)) {
    if (embedder) {
      const cost = estimateCostUsd(s.tokens_to_embed ?? 0, embedder);
      s.estimated_cost_usd = cost === undefined ? null : Number(cost.toFixed(6));
      if (!embedder.local)
        plan.requests_to_embed += Math.max(
          Math.ceil(s.chunks_to_embed! / inputsPerRequest),
          Math.ceil(s.tokens_to_embed! / OPENAI_LIMITS.maxTokensPerRequest),
        );
    }
    plan.documents_to_write += s.documents_to_write!;
    if (stored) plan.documents_unchanged = (plan.documents_unchanged ?? 0) + s.documents_unchanged!;
    plan.documents_to_delete += s.documents_to_delete!;
    plan.chunks_to_write += s.chunks_to_write!;
    plan.chunks_to_embed += s.chunks_to_embed!;
    plan.tokens_to_embed += s.tokens_to_embed!;
    s.status = 'succeeded';
  }
  if (embedder) {
    const cost = estimateCostUsd(plan.tokens_to_embed, embedder);
    plan.estimated_cost_usd = cost === undefined ? null : Number(cost.toFixed(6));
    const seconds = embedder.local ? undefined : pacedSeconds(plan.requests_to_embed, plan.tokens_to_embed, p.conn.config.embedding ?? {});
    plan.estimated_seconds = seconds === undefined ? null : Math.ceil(seconds);
  }
  return plan;
}
