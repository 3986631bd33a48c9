// `sluice verify`: reconciles a connection's source with its destination, read-only unless asked to
// repair. The source is read in full (no saved state, like a full refresh; no state is ever saved)
// and each record is processed exactly as a sync processes it (toDocument); the destination's
// chunks come from `Destination.scanChunks`. Both sides are spilled into a scratch LMDB in the
// connection's work dir, keyed by (stream, hash of the document id), so comparing them is one
// ordered walk whatever order either side yields in: the heap stays flat however large they are
// (the scratch file's mapped pages still count in RSS: docs/operations.md, "Verify memory").
//
// Every stored chunk carries its document's fingerprint with the tag of the embedder that made its
// vectors (where the store keeps one): a document of another embedder is `wrong_model`. When the
// configuration itself changed (the recorded index identity differs), verify refuses instead.
//
// `--repair` rewrites exactly the documents found wrong through the connector's normal writer
// (re-embedded through the embedding cache) and deletes those the source no longer has; it sends
// no STATE, so the saved progress of the connection does not move.
import { randomInt } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Database, RootDatabase } from 'lmdb';
import { open } from './lmdb-lazy.ts';
import type { LoadedConnection, LoadedPipeline } from '../config/load.ts';
import type { Embedder, EmbeddingCache } from '../embedding/types.ts';
import type { ConnectorContext, DestinationMessage, DocumentFingerprint, Logger, ScannedChunk } from '../protocol/connector.ts';
import { SluiceError, withContext } from '../protocol/errors.ts';
import { sha256 } from '../protocol/identity.ts';
import type { ConfiguredCatalog, ConfiguredStream } from '../protocol/messages.ts';
import { openCacheFor, openStateStore, type StateStore } from '../state/index.ts';
import { createTextProcessor, type TextProcessor } from '../text/index.ts';
import { configureCatalog } from './catalog.ts';
import { lockConnection } from './connection-lock.ts';
import { connectorContext, embedChunks, embedderFor, embedderShape, newStats, toDocument, type RunParts } from './sync.ts';
import { Fingerprinter } from './fingerprint.ts';
import { currentIdentity, identityChanges, IndexChangedError, recordedIdentity } from './index-identity.ts';
import { ensureChunks } from './unchanged.ts';

/** The kinds of drift verify finds, in the order it reports them. */
export const DRIFT_KINDS = [
  'missing_documents',
  'deleted_documents',
  'stale_chunks',
  'stale_fingerprints',
  'missing_chunks',
  'duplicate_chunks',
  'orphaned_chunks',
  'wrong_dimensions',
  'wrong_model',
] as const;
export type DriftKind = (typeof DRIFT_KINDS)[number];

export const DRIFT_DESCRIPTIONS: Record<DriftKind, string> = {
  missing_documents: 'documents the source has and the destination does not',
  deleted_documents: 'documents stored that the source no longer has (should have been deleted)',
  stale_chunks: 'chunks whose stored text differs from what the source gives now',
  stale_fingerprints: 'documents whose stored fingerprint differs from what the source gives now',
  missing_chunks: 'chunks missing from a stored document (gaps in its chunk indexes)',
  duplicate_chunks: 'extra stored copies of a (document, chunk index)',
  orphaned_chunks: "chunks with an index beyond the document's chunk count",
  wrong_dimensions: 'vectors whose size is not the embedding model’s',
  wrong_model: 'documents whose vectors were made by another embedder than the configured one',
};

/** How many example document ids are kept per kind and stream. */
const EXAMPLES = 5;

export interface StreamDrift {
  documents_checked: number;
  chunks_checked: number;
  counts: Record<DriftKind, number>;
  /** A few document ids per kind found (never contents). */
  examples: Partial<Record<DriftKind, string[]>>;
}

export interface RepairResult {
  documents_rewritten: number;
  documents_deleted: number;
  chunks_written: number;
  chunks_deleted: number;
}

export interface VerifyReport {
  connection: string;
  /** Set for `--sample N`: only N random source documents (and a bounded scan of stored chunks) were checked. */
  sample?: { documents: number; scanned_chunks_per_stream: number };
  clean: boolean;
  streams: Record<string, StreamDrift>;
  totals: Record<DriftKind, number>;
  repair?: Record<string, RepairResult>;
}

export interface VerifyOptions {
  sample?: number;
  repair?: boolean;
  signal: AbortSignal;
  logger: Logger;
}

/** What the source gives for one document, as kept in the scratch store. */
interface SourceEntry {
  id: string;
  /** Only the id is known (sample mode, not sampled): checked for existence only. */
  idOnly?: boolean;
  /** sha256 of each chunk's text, by index. */
  text?: string[];
  /** Chunk.contentHash of each chunk, by index. */
  hashes?: string[];
  fingerprint?: DocumentFingerprint;
  /** The record, for --repair (processed again then). */
  record?: Record<string, unknown>;
}

/** One stored chunk, as kept in the scratch store. */
interface StoredEntry {
  id: string;
  documentId: string;
  chunkIndex: number;
  text?: string;
  hash?: string;
  dims?: number;
  model?: string;
  fp?: DocumentFingerprint;
}

type RepairAction = 'rewrite' | 'purge' | 'delete';
interface RepairEntry {
  documentId: string;
  actions: RepairAction[];
}

const noNul = (s: string) => (s.includes('\u0000') ? s.replace(/\u0000/g, '') : s);
/** Stores may drop NUL characters (PostgreSQL text does), so texts are compared without them. */
const textHash = (s: string) => sha256(noNul(s));

/**
 * Verifies one connection and, with `repair`, fixes what it found. Throws SluiceError for
 * usage/config problems (a destination that cannot be scanned, a bad --sample).
 */
export async function verifyConnection(pipeline: LoadedPipeline, conn: LoadedConnection, opts: VerifyOptions): Promise<VerifyReport> {
  const name = conn.config.name;
  const dest = conn.destination;
  if (!dest.scanChunks) {
    throw new SluiceError(`destination "${conn.config.destination.type}" cannot list its stored chunks, so it cannot be verified`, {
      kind: 'config',
      where: `connection ${name}`,
      hint: 'sluice verify works with destinations that implement scanChunks (pgvector, qdrant, pinecone, jsonl)',
    });
  }
  if (opts.sample !== undefined && (!Number.isInteger(opts.sample) || opts.sample < 1))
    throw new SluiceError(`--sample must be a positive whole number, got "${opts.sample}"`, { kind: 'config' });

  // A repair writes: it must not run beside a sync of the same connection.
  const unlock = opts.repair ? await lockConnection(pipeline.stateDir, name) : undefined;
  const ctx = await connectorContext(pipeline, conn, { signal: opts.signal, logger: opts.logger });
  const scratch = join(ctx.workDir, `verify-${process.pid}-${Date.now()}`);
  let root: RootDatabase | undefined;
  let embedder: Embedder | undefined;
  let cache: EmbeddingCache | undefined;
  let store: StateStore | undefined;
  try {
    const discovered = await conn.source.discover(conn.sourceConfig, ctx).catch((err) => {
      throw withContext(err, `connection ${name}, source ${conn.config.source.type} (discover)`);
    });
    const catalog = configureCatalog(conn, discovered, { fullRefresh: true });
    embedder = embedderFor(conn, opts.logger);
    await refuseOtherIndex(pipeline, conn, ctx, embedder);
    const processor = createTextProcessor(conn.config.processing, { maxInputTokens: embedder?.maxInputTokens, model: embedder?.model });
    // Records are kept as they came (msgpack), bigints of any size included.
    // remapChunks maps the file in chunks and lets go of those not in use, and noReadAhead keeps
    // the kernel from mapping neighbouring pages: without them every page of the scratch file the
    // walk touched stays in this process's RSS, which then grows with the index (test/bench/verify.bench.ts).
    const lmdbOptions = {
      path: scratch,
      maxDbs: 4,
      compression: false,
      useBigIntExtension: true, // (msgpackr option, untyped)
      remapChunks: true,
      noReadAhead: true,
    };
    root = open(lmdbOptions);
    const docs: Database<SourceEntry | StoredEntry, (string | number)[]> = root.openDB({ name: 'docs' });
    const repairs: Database<RepairEntry, string[]> = root.openDB({ name: 'repairs' });

    // Fingerprints are computed as a sync computes them; compared only where the destination stores them.
    const fingerprinter = new Fingerprinter(processor, embedder);
    const sampled = await readSource(conn, catalog, ctx, processor, fingerprinter, docs, opts);
    const scanLimit = opts.sample !== undefined ? Math.max(1000, opts.sample * 10) : undefined;
    for (const cs of catalog.streams) {
      await scanDestination(
        conn,
        ctx,
        cs.stream.name,
        docs,
        scanLimit === undefined ? undefined : { ids: sampled.get(cs.stream.name) ?? [], limit: scanLimit },
      );
    }
    const report: VerifyReport = {
      connection: name,
      ...(opts.sample !== undefined ? { sample: { documents: opts.sample, scanned_chunks_per_stream: scanLimit! } } : {}),
      clean: true,
      streams: Object.fromEntries(catalog.streams.map((s) => [s.stream.name, emptyDrift()])),
      totals: zeroCounts(),
    };
    await compare(docs, repairs, report, embedder, fingerprinter.embedder);
    for (const s of Object.values(report.streams)) for (const k of DRIFT_KINDS) report.totals[k] += s.counts[k];
    report.clean = DRIFT_KINDS.every((k) => report.totals[k] === 0);

    if (opts.repair && !report.clean) {
      if (embedder && !embedder.local) {
        store = openStateStore(pipeline);
        cache = await openCacheFor(pipeline, store);
      }
      report.repair = await repair({ conn, catalog, ctx, processor, embedder, cache, docs, repairs, signal: opts.signal });
    }
    return report;
  } finally {
    await root?.close().catch(() => undefined);
    await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
    await cache?.close().catch(() => undefined);
    await store?.close?.().catch(() => undefined);
    await embedder?.close?.().catch(() => undefined);
    await unlock?.().catch(() => undefined);
  }
}

/**
 * The whole index was built with other settings (the configured model or chunking changed without
 * `sluice reindex`): every document would show as drift, and a repair would put vectors of two
 * models in one index. Refused before anything is read (exit 2), saying what changed.
 */
async function refuseOtherIndex(pipeline: LoadedPipeline, conn: LoadedConnection, ctx: ConnectorContext, embedder: Embedder | undefined) {
  const store = openStateStore(pipeline);
  let changes: string[];
  try {
    const { identity } = await recordedIdentity(conn, ctx, store);
    changes = identity ? identityChanges(identity, currentIdentity(conn, embedder)) : [];
  } finally {
    await store.close?.();
  }
  if (!changes.length) return;
  const name = conn.config.name;
  throw new IndexChangedError(
    `the index was built with other settings than the configuration now names (${changes.join('; ')}): every document would show as drift, so nothing was verified`,
    {
      kind: 'config',
      where: `connection ${name}`,
      hint: `to move the index to the new settings, rebuild it while the old one keeps serving: sluice reindex ${pipeline.file} --connection ${name}; to verify the index as it is, revert the setting`,
    },
  );
}

const zeroCounts = () => Object.fromEntries(DRIFT_KINDS.map((k) => [k, 0])) as Record<DriftKind, number>;
const emptyDrift = (): StreamDrift => ({ documents_checked: 0, chunks_checked: 0, counts: zeroCounts(), examples: {} });
const docKey = (stream: string, documentId: string): (string | number)[] => [stream, sha256(documentId).slice(0, 32)];

/** Keeps a write queue from growing without bound: waits for LMDB now and then. */
class Spiller {
  private n = 0;
  constructor(private readonly db: Database<any, any>) {}
  async put(key: (string | number)[], value: unknown) {
    const done = this.db.put(key, value);
    if (++this.n % 2000 === 0) await done;
  }
  flushed() {
    return this.db.flushed;
  }
}

/**
 * Reads every stream from scratch and keeps what each document should be. With `sample`, keeps
 * only ids, and N documents picked uniformly at random (reservoir sampling) in full.
 * Returns the sampled document ids by stream (sample mode).
 */
async function readSource(
  conn: LoadedConnection,
  catalog: ConfiguredCatalog,
  ctx: ConnectorContext,
  processor: TextProcessor,
  fingerprinter: Fingerprinter,
  docs: Database<any, any>,
  opts: VerifyOptions,
): Promise<Map<string, string[]>> {
  const byName = new Map(catalog.streams.map((s) => [s.stream.name, s]));
  const stats = newStats(); // toDocument counts into it; verify reports its own counts
  const spill = new Spiller(docs);
  const reservoir: { cs: ConfiguredStream; data: Record<string, unknown>; id: string }[] = [];
  let seen = 0;
  let position = 0;
  const entryOf = (m: Extract<DestinationMessage, { type: 'DOCUMENT' }>, data: Record<string, unknown>): SourceEntry => ({
    id: m.documentId,
    text: m.chunks.map((c) => textHash(c.content)),
    hashes: m.chunks.map((c) => c.contentHash),
    ...(m.fingerprint ? { fingerprint: m.fingerprint } : {}),
    record: data,
  });
  for await (const m of conn.source.read(conn.sourceConfig, catalog, undefined, ctx)) {
    if (opts.signal.aborted) throw new SluiceError('verify was interrupted', { kind: 'interrupted' });
    if (m.type === 'TRACE' && m.trace.type === 'ERROR' && m.trace.error) {
      throw new SluiceError(m.trace.error.message, { kind: 'source', where: `connection ${conn.config.name}` });
    }
    if (m.type !== 'RECORD') continue;
    const cs = byName.get(m.record.stream);
    if (!cs) continue;
    position++;
    const data = m.record.data;
    const doc = toDocument(cs, data, processor, stats, `stream ${cs.stream.name}, record ${position}`, fingerprinter);
    // A deletion in a full read (a CDC snapshot does not send any) means: should not be stored.
    if (doc.type === 'DELETE') {
      await docs.remove(docKey(doc.stream, doc.documentId).concat([0]));
      continue;
    }
    if (doc.type !== 'DOCUMENT') continue;
    const key = [...docKey(doc.stream, doc.documentId), 0];
    if (opts.sample === undefined) {
      await spill.put(key, entryOf(ensureChunks(doc), data));
      continue;
    }
    // Every id is kept (a stored document the source lacks is found in the bounded scan), and the
    // record, on disk, so a repair can rewrite any document the scan finds wrong.
    await spill.put(key, { id: doc.documentId, idOnly: true, record: data } satisfies SourceEntry);
    // Reservoir sampling: every document has the same chance to end up among the N.
    seen++;
    if (reservoir.length < opts.sample) reservoir.push({ cs, data, id: doc.documentId });
    else {
      const j = randomInt(seen);
      if (j < opts.sample) reservoir[j] = { cs, data, id: doc.documentId };
    }
  }
  const sampled = new Map<string, string[]>();
  for (const r of reservoir) {
    const doc = toDocument(r.cs, r.data, processor, stats, `stream ${r.cs.stream.name}`, fingerprinter);
    if (doc.type !== 'DOCUMENT') continue;
    await spill.put([...docKey(doc.stream, doc.documentId), 0], entryOf(ensureChunks(doc), r.data));
    sampled.set(doc.stream, [...(sampled.get(doc.stream) ?? []), doc.documentId]);
  }
  await spill.flushed();
  return sampled;
}

async function scanDestination(
  conn: LoadedConnection,
  ctx: ConnectorContext,
  stream: string,
  docs: Database<any, any>,
  sample?: { ids: string[]; limit: number },
): Promise<void> {
  const spill = new Spiller(docs);
  let seq = 0;
  const keep = async (c: ScannedChunk) => {
    // In full mode every yielded row is kept (a duplicate row is a finding); in sample mode the same
    // row may come from both scans, so rows are keyed by their own id.
    const tail = sample ? c.id : ++seq;
    const entry: StoredEntry = {
      id: c.id,
      documentId: c.documentId,
      chunkIndex: c.chunkIndex,
      ...(c.content !== undefined ? { text: textHash(c.content) } : {}),
      ...(c.contentHash !== undefined ? { hash: c.contentHash } : {}),
      ...(c.dimensions !== undefined ? { dims: c.dimensions } : {}),
      ...(c.model !== undefined ? { model: c.model } : {}),
      ...(c.fingerprint ? { fp: c.fingerprint } : {}),
    };
    // A missing or broken index still keys (as -1, an orphan) rather than failing the scan.
    const index = Number.isInteger(c.chunkIndex) ? c.chunkIndex : -1;
    await spill.put([...docKey(stream, c.documentId), 1, index, tail], entry);
  };
  const scan = (options?: { documentIds?: string[]; limit?: number }) =>
    conn.destination.scanChunks!(conn.destinationConfig, ctx, stream, options);
  try {
    if (!sample) for await (const c of scan()) await keep(c);
    else {
      for (let i = 0; i < sample.ids.length; i += 500)
        for await (const c of scan({ documentIds: sample.ids.slice(i, i + 500) })) await keep(c);
      for await (const c of scan({ limit: sample.limit })) await keep(c);
    }
  } catch (err) {
    throw withContext(err, `connection ${conn.config.name}, stream ${stream}, destination ${conn.config.destination.type} (scan)`);
  }
  await spill.flushed();
}

/** One ordered walk over both sides, document by document. */
async function compare(
  docs: Database<any, (string | number)[]>,
  repairs: Database<RepairEntry, string[]>,
  report: VerifyReport,
  embedder: Embedder | undefined,
  embedderTag: string,
): Promise<void> {
  let current: { stream: string; hash: string; source?: SourceEntry; stored: StoredEntry[] } | undefined;
  const spill = new Spiller(repairs);
  const finish = async () => {
    if (!current) return;
    const drift = report.streams[current.stream];
    if (!drift) return;
    const actions = judge(current.source, current.stored, drift, embedder, embedderTag);
    const documentId = current.source?.id ?? current.stored[0]?.documentId;
    if (actions.length && documentId !== undefined) await spill.put([current.stream, current.hash], { documentId, actions });
  };
  for (const { key, value } of docs.getRange({})) {
    const [stream, hash] = key as [string, string];
    if (!current || current.stream !== stream || current.hash !== hash) {
      await finish();
      current = { stream, hash, stored: [] };
    }
    if (key[2] === 0) current.source = value as SourceEntry;
    else current.stored.push(value as StoredEntry);
  }
  await finish();
  await spill.flushed();
}

/**
 * Counts what is wrong with one document and decides what a repair does about it. `embedderTag`:
 * the configured embedder's `provider/model/dimensions`, compared with the tag stored beside each
 * chunk's fingerprint (absent on chunks written before it was kept: those are not judged by it).
 */
function judge(
  source: SourceEntry | undefined,
  stored: StoredEntry[],
  drift: StreamDrift,
  embedder: Embedder | undefined,
  embedderTag: string,
): RepairAction[] {
  const documentId = source?.id ?? stored[0]?.documentId;
  const found = new Set<DriftKind>();
  const add = (kind: DriftKind, n = 1) => {
    if (n <= 0) return;
    drift.counts[kind] += n;
    found.add(kind);
  };
  drift.chunks_checked += stored.length;
  if (source && !source.idOnly) drift.documents_checked++;

  if (!source) {
    // Stored, but the source has no such document (in sample mode every source id is known).
    if (stored.length) add('deleted_documents');
  } else {
    // By index: every stored row, to spot duplicates and gaps.
    const byIndex = new Map<number, StoredEntry[]>();
    for (const c of stored) byIndex.set(c.chunkIndex, [...(byIndex.get(c.chunkIndex) ?? []), c]);
    for (const rows of byIndex.values()) add('duplicate_chunks', rows.length - 1);
    if (embedder) add('wrong_dimensions', stored.filter((c) => c.dims !== undefined && c.dims !== embedder.dimensions).length);
    // One finding per document: its vectors (some or all) come from another embedder.
    const otherModel = stored.some(
      (c) => (c.fp?.embedder !== undefined && c.fp.embedder !== embedderTag) || (c.model !== undefined && c.model !== embedder?.model),
    );
    if (otherModel) add('wrong_model');
    if (!source.idOnly) {
      const count = source.text!.length;
      if (count > 0 && !stored.length) add('missing_documents');
      else {
        let missing = 0;
        let stale = 0;
        let orphaned = 0;
        for (const [index, rows] of byIndex) if (index < 0 || index >= count || !Number.isInteger(index)) orphaned += rows.length;
        for (let i = 0; i < count; i++) {
          const rows = byIndex.get(i);
          if (!rows) {
            missing++;
            continue;
          }
          const want = { text: source.text![i], hash: source.hashes![i] };
          if (rows.some((r) => (r.text !== undefined ? r.text !== want.text : r.hash !== undefined && r.hash !== want.hash))) stale++;
        }
        add('missing_chunks', missing);
        add('stale_chunks', stale);
        add('orphaned_chunks', orphaned);
        // A document of another model necessarily has another content fingerprint (it covers the
        // embedder): it is reported as wrong_model only, not also as stale.
        if (
          !otherModel &&
          source.fingerprint &&
          stored.some((c) => c.fp && (c.fp.content !== source.fingerprint!.content || c.fp.metadata !== source.fingerprint!.metadata))
        )
          add('stale_fingerprints');
      }
    }
  }
  for (const kind of found) {
    const list = (drift.examples[kind] ??= []);
    if (list.length < EXAMPLES && documentId !== undefined) list.push(documentId);
  }
  if (!found.size) return [];
  if (found.has('deleted_documents')) return ['delete'];
  // A document rewrite replaces chunks by id and trims indexes past the new count; extra rows under
  // other ids (duplicates) survive that, and a store that trims by the count it recorded (Pinecone)
  // cannot see chunks beyond it (orphans), so such documents are removed first.
  return found.has('duplicate_chunks') || found.has('orphaned_chunks') ? ['purge', 'rewrite'] : ['rewrite'];
}

interface RepairParts extends Pick<RunParts, 'conn' | 'catalog' | 'ctx' | 'processor' | 'embedder' | 'cache'> {
  docs: Database<any, (string | number)[]>;
  repairs: Database<RepairEntry, string[]>;
  signal: AbortSignal;
}

/**
 * Applies the repairs through the destination's own writer, every stream opened for document
 * replacement (append_dedup) so only the named documents change, even in an overwrite stream.
 * No STATE is sent: the connection's saved progress stays as it was.
 */
async function repair(p: RepairParts): Promise<Record<string, RepairResult>> {
  const { conn, catalog } = p;
  const result: Record<string, RepairResult> = Object.fromEntries(
    catalog.streams.map((s) => [s.stream.name, { documents_rewritten: 0, documents_deleted: 0, chunks_written: 0, chunks_deleted: 0 }]),
  );
  const purges: Array<{ stream: string; documentId: string }> = [];
  for (const { key, value } of p.repairs.getRange({})) {
    if (value.actions.includes('purge')) purges.push({ stream: key[0], documentId: value.documentId });
  }
  // First pass (only when duplicates were found): remove every row of those documents.
  if (purges.length) {
    await writeAll(p, result, async function* () {
      for (const d of purges) yield { type: 'DELETE', stream: d.stream, documentId: d.documentId } as DestinationMessage;
    });
  }
  await writeAll(p, result, (keepsFingerprints) => repairMessages(p, result, keepsFingerprints));
  return result;
}

async function writeAll(
  p: RepairParts,
  result: Record<string, RepairResult>,
  messages: (keepsFingerprints: boolean) => AsyncIterable<DestinationMessage>,
) {
  const { conn, catalog, ctx } = p;
  const writer = await conn.destination
    .open(conn.destinationConfig, ctx, {
      streams: catalog.streams.map((s) => ({ name: s.stream.name, destinationSyncMode: 'append_dedup', primaryKey: s.primary_key ?? [] })),
      ...embedderShape(p.embedder),
    })
    .catch((err) => {
      throw withContext(err, `connection ${conn.config.name}, destination ${conn.config.destination.type}`);
    });
  try {
    for await (const ev of writer.write(messages(!!writer.fingerprints))) {
      if (ev.type !== 'WRITTEN' || !result[ev.stream]) continue;
      result[ev.stream].chunks_written += ev.chunksWritten;
      result[ev.stream].chunks_deleted += ev.chunksDeleted;
    }
  } finally {
    await writer.close();
  }
}

/** DELETEs and re-processed (and re-embedded, through the cache) DOCUMENTs, in embedding batches. */
async function* repairMessages(
  p: RepairParts,
  result: Record<string, RepairResult>,
  keepsFingerprints: boolean,
): AsyncGenerator<DestinationMessage> {
  // A writer that keeps fingerprints stores the one each rewritten document carries (as a sync does).
  const fingerprinter = keepsFingerprints ? new Fingerprinter(p.processor, p.embedder) : undefined;
  const stats = Object.fromEntries(p.catalog.streams.map((s) => [s.stream.name, newStats()]));
  const byName = new Map(p.catalog.streams.map((s) => [s.stream.name, s]));
  const parts: RunParts = {
    conn: p.conn,
    catalog: p.catalog,
    ctx: p.ctx,
    processor: p.processor,
    embedder: p.embedder,
    cache: p.cache,
    streams: stats,
    signal: p.signal,
  };
  let group: DestinationMessage[] = [];
  let groupStream: string | undefined;
  let chunks = 0;
  const flush = async function* () {
    if (!group.length) return;
    const out = p.embedder ? await embedChunks(group, parts, p.embedder) : group;
    group = [];
    chunks = 0;
    yield* out;
  };
  for (const { key, value } of p.repairs.getRange({})) {
    const [stream, hash] = key;
    const cs = byName.get(stream);
    if (!cs) continue;
    if (value.actions.includes('delete')) {
      result[stream].documents_deleted++;
      yield* flush(); // keeps the order in which documents were judged; the writer applies them in order
      yield { type: 'DELETE', stream, documentId: value.documentId };
      continue;
    }
    const entry = p.docs.get([stream, hash, 0]) as SourceEntry | undefined;
    if (!entry?.record) continue;
    const doc = toDocument(cs, entry.record, p.processor, stats[stream], `stream ${stream}, document ${entry.id}`, fingerprinter);
    if (doc.type !== 'DOCUMENT') continue;
    ensureChunks(doc);
    result[stream].documents_rewritten++;
    if (p.embedder && group.length && (chunks + doc.chunks.length > p.embedder.batchSize || groupStream !== stream)) yield* flush();
    groupStream = stream;
    group.push(doc);
    chunks += doc.chunks.length;
  }
  yield* flush();
}
