// The Qdrant writer: buffers DestinationMessages into flushes (bounded by points and bytes), sends
// each flush as upserts + filtered deletes, several requests in flight, all with `wait: true`, and
// acknowledges a STATE only once every request before it was acknowledged (invariant 1).
//
// Ordering: within one flush every request commutes (a document's new chunks are upserted below
// its new chunk count, its deletes are at or above it), so they run concurrently. Flushes run one
// after another, so a document written twice in a sync is never reordered.
//
// Fingerprints (docs/fingerprints.md): points carry the document's fingerprint and chunk count in
// their payload; a metadata-only document rewrites the payloads of its points in one batch update
// (no vectors sent); an overwrite creates its new generation only once something must be written,
// KEEPs copy the document's points over from the live generation, and a generation that would be
// nothing but KEEPs of every live document is never created: nothing is written, nothing switched.
import pLimit from 'p-limit';
import { chunkUuid } from '../../src/protocol/identity.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  DestinationWriter,
  OpenOptions,
  SourceState,
} from '../../src/protocol/connector.ts';
import type { StateMessage } from '../../src/protocol/messages.ts';
import type { Qdrant } from './client.ts';
import {
  CHUNK_COUNT,
  FINGERPRINT_FIELDS,
  FINGERPRINT_PAYLOAD_KEYS,
  FP_CONTENT,
  FP_EMBEDDER,
  FP_METADATA,
  countDocuments,
  readFingerprints,
} from './fingerprints.ts';
import { embedderTagOf, previousAlias, switchReindexed } from './generations.ts';
import { QDRANT_DISTANCE, type QdrantConfig } from './config.ts';
import {
  INDEXED_FIELDS,
  assertShape,
  createGeneration,
  describeCollection,
  dropCollection,
  ensureIndexes,
  readLayout,
  switchAlias,
} from './collection.ts';

/** Documents per stale-chunk count/delete request: one `should` clause each, resolved by Qdrant's keyword index. */
const DOCS_PER_DELETE = 256;

/** Payload keys sluice owns; metadata fields with these names are not copied over them. */
export const RESERVED_PAYLOAD_KEYS = new Set<string>(['document_id', 'chunk_index', 'stream', 'content', ...FINGERPRINT_PAYLOAD_KEYS]);

/** Documents per copy (scroll) request of kept documents. */
const DOCS_PER_COPY = 256;
/** Overwrite: KEEPs remembered while the new generation is not created yet; past this it is created (bounded memory). */
const KEEPS_BEFORE_CREATE_CAP = 100_000;

type PayloadOp =
  | { overwrite_payload: { payload: Record<string, unknown>; points: string[] } }
  | { set_payload: { payload: Record<string, unknown>; points: string[] } };
type FingerprintOp = Extract<PayloadOp, { set_payload: unknown }>;
type ClearOp = { delete_payload: { keys: string[]; filter: object } };

/** Waits for every request (so none is left running), then throws the first failure. */
async function settleAll(requests: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(requests);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

interface Point {
  id: string;
  vector: number[];
  payload: Record<string, unknown>;
  bytes: number;
}

/** One flush worth of work, already normalised so its requests commute. */
class Batch {
  points = new Map<string, Point>();
  /** Per document: delete its chunks with chunk_index >= from (0 = the whole document). */
  deletes = new Map<string, { stream: string; documentId: string; from: number }>();
  pointsByDoc = new Map<string, Set<string>>();
  /** Metadata-only documents: their points' new payloads (replacing the stored ones, vectors untouched). */
  payloads = new Map<string, { stream: string; points: { id: string; payload: Record<string, unknown> }[]; bytes: number }>();
  /** Overwrite: documents whose points are copied from the live generation (with new payloads when metadata changed). */
  keeps = new Map<string, { stream: string; documentId: string; payloads?: Map<string, Record<string, unknown>> }>();
  bytes = 0;
  stats = new Map<string, { records: number; chunksWritten: number; chunksDeleted: number }>();

  statsFor(stream: string) {
    let s = this.stats.get(stream);
    if (!s) this.stats.set(stream, (s = { records: 0, chunksWritten: 0, chunksDeleted: 0 }));
    return s;
  }

  /** Forgets everything this batch would do to a document (a later message for it wins). */
  dropDoc(docKey: string): void {
    this.dropDocPoints(docKey);
    this.deletes.delete(docKey);
    const p = this.payloads.get(docKey);
    if (p) this.bytes -= p.bytes;
    this.payloads.delete(docKey);
    this.keeps.delete(docKey);
  }

  /** Points, payload updates and kept documents: what the flush threshold counts. */
  get size(): number {
    let n = this.points.size + this.keeps.size;
    for (const p of this.payloads.values()) n += p.points.length;
    return n;
  }

  dropDocPoints(docKey: string): void {
    for (const id of this.pointsByDoc.get(docKey) ?? []) {
      const p = this.points.get(id);
      if (p) this.bytes -= p.bytes;
      this.points.delete(id);
    }
    this.pointsByDoc.delete(docKey);
  }

  addPoint(docKey: string, p: Point): void {
    const old = this.points.get(p.id);
    if (old) this.bytes -= old.bytes;
    this.points.set(p.id, p);
    this.bytes += p.bytes;
    let ids = this.pointsByDoc.get(docKey);
    if (!ids) this.pointsByDoc.set(docKey, (ids = new Set()));
    ids.add(p.id);
  }

  get empty(): boolean {
    return this.points.size === 0 && this.deletes.size === 0 && this.payloads.size === 0 && this.keeps.size === 0;
  }
}

export interface WriterPlan {
  /** Physical collection this sync writes to. */
  target: string;
  /** Overwrite: switch the alias to `target` once these streams are complete, then drop `previous`. */
  overwrite?: { streams: Set<string>; previous?: { physical: string; viaAlias: boolean } };
  /** Overwrite: creates `target` (and copies the streams not overwritten into it); called once something must be written. */
  createTarget?: () => Promise<void>;
  /** `sluice reindex`: switch only at the end of a complete input, with the kept alias (generations.ts). */
  reindex?: { keepPrevious: boolean };
}

/** Resolves (and creates) the collection this sync writes to; validates size and distance first. */
export async function prepare(q: Qdrant, config: QdrantConfig, ctx: ConnectorContext, options: OpenOptions): Promise<WriterPlan> {
  const dims = options.dimensions;
  if (!dims) {
    throw new SluiceError('the Qdrant destination needs vectors, but this connection has no embedder', {
      kind: 'config',
      where: `connection ${ctx.connection}`,
      hint: 'add an `embedding:` block to the connection',
    });
  }
  const want = { size: dims, distance: QDRANT_DISTANCE[config.distance] };
  const layout = await readLayout(q, config.collection);
  const reindex = options.reindex;
  let currentIndexed = new Set<string>();
  if (reindex && layout.current && !layout.current.viaAlias && reindex.keepPrevious) {
    // Qdrant cannot rename a collection, and the alias needs its name: the plain one cannot be kept.
    throw new SluiceError(
      `Qdrant collection "${config.collection}" is a plain collection, not an alias, so it cannot be kept for --rollback; nothing was written`,
      {
        kind: 'config',
        where: `collection ${config.collection}`,
        hint: 'run sluice reindex once without --keep-previous (sluice then serves the name through an alias), or snapshot the collection in Qdrant first',
      },
    );
  }
  // A reindex builds a generation of the new vector size: the live one's shape does not bind it.
  if (layout.current && !reindex) {
    const described = await describeCollection(q, layout.current.physical);
    assertShape(layout.current.physical, config.collection, described.shape, want, options.embedderName);
    currentIndexed = described.indexed;
    await assertSameEmbedder(q, config.collection, layout.current.physical, options);
  }
  const overwriteStreams = new Set(options.streams.filter((s) => s.destinationSyncMode === 'overwrite').map((s) => s.name));
  const nextGeneration = () => `${config.collection}_${Math.max(0, ...layout.generations.map((g) => g.n)) + 1}`;

  if (!overwriteStreams.size) {
    if (layout.current) {
      await ensureIndexes(q, layout.current.physical, currentIndexed);
      return { target: layout.current.physical };
    }
    const physical = nextGeneration();
    await createGeneration(q, config, physical, dims, ctx.logger);
    await ensureIndexes(q, physical, new Set());
    await switchAlias(q, config.collection, physical, false);
    return { target: physical };
  }

  // Generations the alias does not point to are leftovers of an interrupted overwrite: nobody reads
  // them. A collection that merely looks like one (`docs_2024` made by someone else) is left alone:
  // sluice's generations carry its payload indexes, or are still empty.
  const kept = layout.aliases.get(previousAlias(config.collection));
  for (const g of layout.generations) {
    if (g.name === layout.current?.physical || g.name === kept) continue;
    const { indexed, points } = await describeCollection(q, g.name).catch(() => ({ indexed: new Set<string>(), points: undefined }));
    if (INDEXED_FIELDS.every((f) => indexed.has(f.field)) || points === 0) {
      ctx.logger.info({ collection: g.name }, 'dropping an unfinished Qdrant generation from an interrupted overwrite');
      await dropCollection(q, g.name);
    } else {
      ctx.logger.warn(
        { collection: g.name },
        'collection looks like a sluice generation but has none of its payload indexes; leaving it alone',
      );
    }
  }
  const physical = nextGeneration();
  const createTarget = async () => {
    await createGeneration(q, config, physical, dims, ctx.logger);
    await ensureIndexes(q, physical, new Set());
    // A reindex copies nothing: points of streams it does not rebuild hold the old model's vectors.
    if (layout.current && !reindex) await copyOtherStreams(q, config, layout.current.physical, physical, overwriteStreams, ctx);
  };
  return {
    target: physical,
    overwrite: { streams: overwriteStreams, previous: layout.current },
    createTarget,
    ...(reindex ? { reindex } : {}),
  };
}

/**
 * One index never holds vectors of two models: a crash between an alias switch (reindex, rollback)
 * and the engine's state commit leaves the alias and the recorded identity apart, and a sync whose
 * configuration matches the record would then write one model's vectors into the other's
 * generation (same vector size: nothing else would notice). The embedder tag of one chunk-0 point
 * (all of a generation's points share it) is compared first; one scroll of one payload field.
 */
async function assertSameEmbedder(q: Qdrant, alias: string, physical: string, options: OpenOptions): Promise<void> {
  const want = options.embedderTag;
  if (!want) return;
  const have = await embedderTagOf(q, physical);
  if (have === undefined || have === want) return;
  throw new SluiceError(
    `Qdrant collection "${alias}" (${physical}) holds vectors of ${have}, but this connection embeds with ${want}; nothing was written`,
    {
      kind: 'config',
      where: `collection ${alias}`,
      hint: 'an interrupted sluice reindex or --rollback left the alias and the recorded state apart: run sluice reindex to rebuild with the configured model',
    },
  );
}

/** Points of streams not being overwritten live on in the new generation. */
async function copyOtherStreams(
  q: Qdrant,
  config: QdrantConfig,
  from: string,
  to: string,
  overwritten: Set<string>,
  ctx: ConnectorContext,
): Promise<void> {
  let offset: string | number | undefined | null = undefined;
  let copied = 0;
  const filter = { must_not: [{ key: 'stream', match: { any: [...overwritten] } }] };
  do {
    const page = await q.call(`read points of ${from}`, () =>
      q.client.scroll(from, { filter, limit: config.batch_points, offset: offset ?? undefined, with_payload: true, with_vector: true }),
    );
    const points = page.points.map((p) => ({ id: p.id, vector: p.vector as number[], payload: p.payload ?? {} }));
    if (points.length) await q.call(`copy points into ${to}`, () => q.client.upsert(to, { wait: true, points }));
    copied += points.length;
    offset = page.next_page_offset as string | number | null | undefined;
  } while (offset !== undefined && offset !== null);
  if (copied)
    ctx.logger.info({ from, to, points: copied }, 'copied points of streams not being overwritten into the new Qdrant generation');
}

export function createWriter(
  q: Qdrant,
  config: QdrantConfig,
  ctx: ConnectorContext,
  options: OpenOptions,
  plan: WriterPlan,
): DestinationWriter {
  const dims = options.dimensions!;
  const modes = new Map<string, DestinationStream>(options.streams.map((s) => [s.name, s]));
  const limit = pLimit(config.concurrency);
  const pendingOverwrite = plan.overwrite ? new Set(plan.overwrite.streams) : undefined;
  const live = plan.overwrite?.previous?.physical;
  let switched = !plan.overwrite;
  let created = !plan.createTarget;
  /** Overwrite, before the new generation exists: the KEEPs so far, per stream. */
  const keptBeforeCreate = new Map<string, Set<string>>();
  let keptBeforeCreateCount = 0;
  let closed = false;

  const docKey = (stream: string, documentId: string) => JSON.stringify([stream, documentId]);
  const isOverwrite = (stream: string) => !!plan.overwrite?.streams.has(stream);

  function where(stream: string, documentId: string, chunkIndex: number): string {
    return `stream ${stream}, document ${JSON.stringify(documentId)}, chunk ${chunkIndex}`;
  }

  function payloadOf(msg: DestinationMessage & { type: 'DOCUMENT' }, chunk: Chunk): Record<string, unknown> {
    const payload: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(chunk.metadata ?? {})) if (!RESERVED_PAYLOAD_KEYS.has(k) && v !== undefined) payload[k] = v;
    payload.document_id = msg.documentId;
    payload.chunk_index = chunk.chunkIndex;
    payload.stream = msg.stream;
    payload.content = chunk.content;
    if (msg.fingerprint) {
      payload[FP_CONTENT] = msg.fingerprint.content;
      payload[FP_METADATA] = msg.fingerprint.metadata;
      if (msg.fingerprint.embedder !== undefined) payload[FP_EMBEDDER] = msg.fingerprint.embedder;
      payload[CHUNK_COUNT] = msg.chunks.length;
    }
    return payload;
  }

  function toPoint(msg: DestinationMessage & { type: 'DOCUMENT' }, chunk: Chunk): Point {
    const at = where(msg.stream, msg.documentId, chunk.chunkIndex);
    if (!chunk.embedding) {
      throw new SluiceError(`chunk without an embedding reached the Qdrant destination (${at})`, { kind: 'internal', where: at });
    }
    if (chunk.embedding.length !== dims) {
      throw new SluiceError(`embedding of size ${chunk.embedding.length} does not match the collection's ${dims} (${at})`, {
        kind: 'embedding',
        where: at,
      });
    }
    const payload = payloadOf(msg, chunk);
    const vector = Array.from(chunk.embedding);
    // JSON size estimate: ~20 characters per float, plus the payload.
    const bytes = 64 + dims * 20 + JSON.stringify(payload).length;
    return { id: chunkUuid(msg.stream, msg.documentId, chunk.chunkIndex), vector, payload, bytes };
  }

  /** The collection holding what readers see of a stream now (fingerprint look-ups, KEEP copies). */
  function liveCollectionOf(stream: string): string | undefined {
    if (!plan.overwrite) return plan.target;
    if (isOverwrite(stream) || !created) return live;
    return plan.target; // streams not overwritten were copied into the new generation and are written there
  }

  /**
   * Fingerprint last (docs/fingerprints.md): look-ups read the fingerprint on a document's chunk-0
   * point, so that point must not carry one before every other write of the document in the flush
   * (its other points, its stale-chunk delete, the copies of a KEEP) is acknowledged. Chunk 0 is
   * therefore upserted (or its payload overwritten, or copied) WITHOUT the fingerprint fields —
   * which also removes an older fingerprint, as upsert and overwrite_payload replace the whole
   * payload — and once everything else of the flush has settled, one batch update of set_payload
   * operations adds them. A crash in between leaves a document without a fingerprint: the next run
   * writes it again instead of skipping it as unchanged with chunks missing or stale.
   * Cheapest correct scheme: the final request carries only two hashes per document (no vectors, as
   * re-upserting chunk 0 would), one request per flush (split only past batch_points / batch_bytes).
   * Other points keep their copy of the fingerprint: nothing reads it there.
   */
  function deferFingerprint(id: string, payload: Record<string, unknown>, final: FingerprintOp[]): Record<string, unknown> {
    if (payload.chunk_index !== 0 || !FINGERPRINT_FIELDS.some((f) => f in payload)) return payload;
    const rest = { ...payload };
    const fields: Record<string, unknown> = {};
    for (const f of FINGERPRINT_FIELDS)
      if (f in rest) {
        fields[f] = rest[f];
        delete rest[f];
      }
    final.push({ set_payload: { payload: fields, points: [id] } });
    return rest;
  }

  /** Sends payload operations in batch-update requests of at most batch_points operations and batch_bytes. */
  function payloadRequests(target: string, operations: (PayloadOp | ClearOp)[]): Promise<unknown>[] {
    const requests: Promise<unknown>[] = [];
    let ops: (PayloadOp | ClearOp)[] = [];
    let opsBytes = 0;
    const sendOps = (operations: (PayloadOp | ClearOp)[]) =>
      requests.push(
        limit(() =>
          q.call(`payload update of ${operations.length} points in ${target}`, () =>
            q.client.batchUpdate(target, { wait: true, operations }),
          ),
        ),
      );
    for (const op of operations) {
      const bytes = 64 + JSON.stringify(op).length;
      if (ops.length && (ops.length >= config.batch_points || opsBytes + bytes > config.batch_bytes)) {
        sendOps(ops);
        ops = [];
        opsBytes = 0;
      }
      ops.push(op);
      opsBytes += bytes;
    }
    if (ops.length) sendOps(ops);
    return requests;
  }

  /**
   * Fingerprint cleared first (docs/fingerprints.md): a document about to be rewritten loses the
   * fingerprint on its chunk 0 before any other write of the flush starts. Without this, a crash
   * after some of its new points landed but before chunk 0 was rewritten left the previous
   * fingerprint in place, and a source back at exactly that previous version made the next run skip
   * a half-rewritten document. One filtered delete_payload per stream, all in one request per flush
   * (a filter, not point ids: a document new to the collection has no chunk 0 yet). Not needed when
   * the flush goes to an overwrite's or reindex's new generation: a crash there drops it whole.
   */
  async function clearFingerprints(target: string, batch: Batch): Promise<void> {
    if (plan.overwrite) return;
    const byStream = new Map<string, string[]>();
    for (const key of new Set([...batch.pointsByDoc.keys(), ...batch.payloads.keys()])) {
      const [stream, documentId] = JSON.parse(key) as [string, string];
      let list = byStream.get(stream);
      if (!list) byStream.set(stream, (list = []));
      list.push(documentId);
    }
    const ops: ClearOp[] = [];
    for (const [stream, ids] of byStream)
      for (let i = 0; i < ids.length; i += DOCS_PER_DELETE)
        ops.push({
          delete_payload: {
            keys: [...FINGERPRINT_FIELDS],
            filter: {
              must: [
                { key: 'stream', match: { value: stream } },
                { key: 'chunk_index', match: { value: 0 } },
                { key: 'document_id', match: { any: ids.slice(i, i + DOCS_PER_DELETE) } },
              ],
            },
          },
        });
    await settleAll(payloadRequests(target, ops));
  }

  async function sendBatch(batch: Batch): Promise<void> {
    if (batch.empty) return;
    const target = plan.target;
    await clearFingerprints(target, batch);
    const requests: Promise<unknown>[] = [];
    /** Fingerprints of chunk-0 points, written after everything else (deferFingerprint). */
    const fingerprintOps: FingerprintOp[] = [];
    let group: Point[] = [];
    let groupBytes = 0;
    const sendPoints = (group: Point[]) => {
      const points = group.map(({ id, vector, payload }) => ({ id, vector, payload: deferFingerprint(id, payload, fingerprintOps) }));
      requests.push(
        limit(() => q.call(`upsert of ${points.length} points into ${target}`, () => q.client.upsert(target, { wait: true, points }))),
      );
    };
    for (const p of batch.points.values()) {
      if (group.length && (group.length >= config.batch_points || groupBytes + p.bytes > config.batch_bytes)) {
        sendPoints(group);
        group = [];
        groupBytes = 0;
      }
      group.push(p);
      groupBytes += p.bytes;
    }
    if (group.length) sendPoints(group);

    // Metadata-only documents: each point's payload replaced (keys gone from the metadata go too),
    // many points per batch-update request; vectors are not sent.
    const overwrites: PayloadOp[] = [];
    for (const doc of batch.payloads.values())
      for (const p of doc.points)
        overwrites.push({ overwrite_payload: { payload: deferFingerprint(p.id, p.payload, fingerprintOps), points: [p.id] } });
    requests.push(...payloadRequests(target, overwrites));

    // KEEP (overwrite): the documents' points are copied from the live generation into the new one.
    const keepsByStream = new Map<string, { documentId: string; payloads?: Map<string, Record<string, unknown>> }[]>();
    for (const k of batch.keeps.values()) {
      let list = keepsByStream.get(k.stream);
      if (!list) keepsByStream.set(k.stream, (list = []));
      list.push(k);
    }
    for (const [stream, docs] of keepsByStream) {
      const from = live;
      if (!from) {
        throw new SluiceError(`KEEP of a document of stream ${stream}, but the Qdrant collection has no live generation to keep it from`, {
          kind: 'internal',
        });
      }
      for (let i = 0; i < docs.length; i += DOCS_PER_COPY) {
        const slice = docs.slice(i, i + DOCS_PER_COPY);
        const payloads = new Map<string, Record<string, unknown>>();
        for (const d of slice) for (const [id, p] of d.payloads ?? []) payloads.set(id, p);
        requests.push(
          limit(() =>
            copyDocuments(
              from,
              target,
              stream,
              slice.map((d) => d.documentId),
              payloads,
              batch,
              fingerprintOps,
            ),
          ),
        );
      }
    }

    // Deletes by filter, many documents of one stream per request: (document_id, stream, chunk_index >= from).
    const byStream = new Map<string, { documentId: string; from: number }[]>();
    for (const d of batch.deletes.values()) {
      let list = byStream.get(d.stream);
      if (!list) byStream.set(d.stream, (list = []));
      list.push(d);
    }
    for (const [stream, docs] of byStream) {
      for (let i = 0; i < docs.length; i += DOCS_PER_DELETE) {
        const should = docs.slice(i, i + DOCS_PER_DELETE).map((d) => ({
          must: [
            { key: 'document_id', match: { value: d.documentId } },
            ...(d.from > 0 ? [{ key: 'chunk_index', range: { gte: d.from } }] : []),
          ],
        }));
        const filter = { must: [{ key: 'stream', match: { value: stream } }], should };
        requests.push(
          limit(async () => {
            // Qdrant does not say how many points a filtered delete removed: count them first
            // (exact: nothing else in this flush touches these chunks) so WRITTEN reports real numbers.
            const { count } = await q.call(`count of stale chunks in ${target}`, () => q.client.count(target, { filter, exact: true }));
            if (count === 0) return;
            await q.call(`delete of stale chunks in ${target}`, () => q.client.delete(target, { wait: true, filter }));
            batch.statsFor(stream).chunksDeleted += count;
          }),
        );
      }
    }
    // Every request must settle before the flush counts as done, even when one fails.
    await settleAll(requests);
    // Last: the fingerprints, once everything else of these documents is acknowledged.
    await settleAll(payloadRequests(target, fingerprintOps));
  }

  /** Copies every point of these documents (vectors included) from one generation to the next, page by page. */
  async function copyDocuments(
    from: string,
    to: string,
    stream: string,
    documentIds: string[],
    payloads: Map<string, Record<string, unknown>>,
    batch: Batch,
    fingerprintOps: FingerprintOp[],
  ): Promise<void> {
    const filter = {
      must: [
        { key: 'stream', match: { value: stream } },
        { key: 'document_id', match: { any: documentIds } },
      ],
    };
    const missing = new Set(documentIds);
    let offset: string | number | null | undefined = undefined;
    do {
      const page = await q.call(`read of kept documents in ${from}`, () =>
        q.client.scroll(from, { filter, limit: config.batch_points, offset: offset ?? undefined, with_payload: true, with_vector: true }),
      );
      for (const p of page.points) missing.delete(String(p.payload?.document_id));
      const points = page.points.map((p) => ({
        id: p.id,
        vector: p.vector as number[],
        payload: deferFingerprint(String(p.id), payloads.get(String(p.id).toLowerCase()) ?? p.payload ?? {}, fingerprintOps),
      }));
      if (points.length) await q.call(`copy of kept documents into ${to}`, () => q.client.upsert(to, { wait: true, points }));
      batch.statsFor(stream).chunksWritten += points.length;
      offset = page.next_page_offset as string | number | null | undefined;
    } while (offset !== undefined && offset !== null);
    if (missing.size) {
      // Kept, yet not in the live generation: the new one would silently lack it, so the sync stops.
      const first = [...missing][0];
      throw new SluiceError(
        `document ${JSON.stringify(first)} of stream ${stream} was kept as unchanged but is not in Qdrant collection ${from}${missing.size > 1 ? ` (nor ${missing.size - 1} more)` : ''}`,
        {
          kind: 'destination',
          where: `stream ${stream}`,
          transient: true,
          hint: 'something changed the collection during the sync; run the sync again',
        },
      );
    }
  }

  async function switchGeneration(): Promise<void> {
    const ow = plan.overwrite!;
    const previous = ow.previous;
    if (previous && !previous.viaAlias) {
      // A plain collection (made outside sluice) holds the name: it must go before the alias can
      // take it, so readers briefly see no collection. Later overwrites switch atomically.
      ctx.logger.warn({ collection: config.collection }, 'replacing a plain Qdrant collection by an alias: readers see a short gap once');
      await dropCollection(q, previous.physical);
    }
    await switchAlias(q, config.collection, plan.target, !!previous?.viaAlias);
    ctx.logger.info({ alias: config.collection, collection: plan.target }, 'switched Qdrant alias to the new generation');
    if (previous?.viaAlias) await dropCollection(q, previous.physical);
    switched = true;
  }

  /** True when every overwritten stream was nothing but KEEPs of all its live documents (then nothing changes). */
  async function unchangedGeneration(): Promise<boolean> {
    if (!live || !plan.overwrite) return false;
    for (const stream of plan.overwrite.streams) {
      const kept = keptBeforeCreate.get(stream)?.size ?? 0;
      if ((await countDocuments(q, live, stream)) !== kept) return false;
    }
    return true;
  }

  return {
    async fingerprints(stream: string, documentIds: string[]) {
      const collection = liveCollectionOf(stream);
      if (!collection) return new Map();
      return readFingerprints(q, collection, stream, documentIds);
    },

    async *write(input: AsyncIterable<DestinationMessage>): AsyncIterable<DestinationEvent> {
      let batch = new Batch();
      let inFlight: { promise: Promise<void>; batch: Batch } | undefined;
      const heldStates: { state: StateMessage; connection: SourceState }[] = [];

      // Waits for the flush in flight (so flushes stay ordered) and reports what it wrote.
      async function* settle(): AsyncGenerator<DestinationEvent> {
        if (!inFlight) return;
        const done = inFlight;
        inFlight = undefined;
        await done.promise;
        for (const [stream, s] of done.batch.stats) yield { type: 'WRITTEN', stream, ...s };
      }
      function startFlush(): void {
        const b = batch;
        batch = new Batch();
        const promise = sendBatch(b);
        promise.catch(() => undefined); // surfaced when settled; avoid an unhandled rejection meanwhile
        inFlight = { promise, batch: b };
      }
      async function* flushAll(): AsyncGenerator<DestinationEvent> {
        yield* settle();
        startFlush();
        yield* settle();
      }
      /** Overwrite: the new generation is needed after all; the KEEPs so far are copied into it. */
      async function createTarget(): Promise<void> {
        if (created) return;
        await plan.createTarget!();
        created = true;
        for (const [stream, ids] of keptBeforeCreate)
          for (const documentId of ids) batch.keeps.set(docKey(stream, documentId), { stream, documentId });
        keptBeforeCreate.clear();
        keptBeforeCreateCount = 0;
      }

      for await (const msg of input) {
        if (closed) throw new SluiceError('the Qdrant writer was closed while input was still arriving', { kind: 'internal' });
        switch (msg.type) {
          case 'DOCUMENT': {
            await createTarget();
            const mode = modes.get(msg.stream)?.destinationSyncMode ?? 'append_dedup';
            const key = docKey(msg.stream, msg.documentId);
            if (msg.metadataOnly) {
              const points = msg.chunks.map((c) => ({
                id: chunkUuid(msg.stream, msg.documentId, c.chunkIndex),
                payload: payloadOf(msg, c),
              }));
              if (isOverwrite(msg.stream)) {
                // The new generation gets the live points with their new payloads.
                batch.dropDoc(key);
                batch.keeps.set(key, {
                  stream: msg.stream,
                  documentId: msg.documentId,
                  payloads: new Map(points.map((p) => [p.id, p.payload])),
                });
              } else {
                // A write of this document still in this batch must land before its payload changes.
                if (batch.pointsByDoc.has(key) || batch.deletes.has(key)) yield* flushAll();
                batch.dropDoc(key);
                const bytes = points.reduce((n, p) => n + 64 + JSON.stringify(p.payload).length, 0);
                batch.payloads.set(key, { stream: msg.stream, points, bytes });
                batch.bytes += bytes;
                batch.statsFor(msg.stream).chunksWritten += points.length;
              }
              batch.statsFor(msg.stream).records++;
              break;
            }
            const points = msg.chunks.map((c) => toPoint(msg, c));
            const pending = batch.deletes.get(key);
            if (mode === 'append') {
              // Append upserts by chunk id only; a pending delete of this document must land first.
              if (pending) {
                yield* flushAll();
              }
              const p = batch.payloads.get(key);
              if (p) batch.bytes -= p.bytes;
              batch.payloads.delete(key);
              batch.keeps.delete(key);
            } else {
              batch.dropDoc(key);
              batch.deletes.set(key, { stream: msg.stream, documentId: msg.documentId, from: points.length });
            }
            for (const p of points) batch.addPoint(key, p);
            const stats = batch.statsFor(msg.stream);
            stats.records++;
            stats.chunksWritten += points.length;
            break;
          }
          case 'DELETE': {
            await createTarget();
            const key = docKey(msg.stream, msg.documentId);
            batch.dropDoc(key);
            batch.deletes.set(key, { stream: msg.stream, documentId: msg.documentId, from: 0 });
            batch.statsFor(msg.stream).records++;
            break;
          }
          case 'KEEP': {
            if (!isOverwrite(msg.stream)) break; // the document stays where it is
            if (!created) {
              let ids = keptBeforeCreate.get(msg.stream);
              if (!ids) keptBeforeCreate.set(msg.stream, (ids = new Set()));
              if (!ids.has(msg.documentId)) {
                ids.add(msg.documentId);
                keptBeforeCreateCount++;
              }
              if (keptBeforeCreateCount > KEEPS_BEFORE_CREATE_CAP) {
                ctx.logger.info(
                  { kept: keptBeforeCreateCount },
                  'many unchanged documents in this overwrite: creating the new Qdrant generation now and copying them into it',
                );
                await createTarget();
              }
              break;
            }
            const key = docKey(msg.stream, msg.documentId);
            batch.dropDoc(key);
            batch.keeps.set(key, { stream: msg.stream, documentId: msg.documentId });
            break;
          }
          case 'STATE': {
            yield* flushAll();
            if (!switched) heldStates.push({ state: msg.state, connection: msg.connection });
            else yield { type: 'STATE_COMMITTED', state: msg.state, connection: msg.connection };
            break;
          }
          case 'STREAM_COMPLETE': {
            if (plan.reindex) {
              pendingOverwrite?.delete(msg.stream); // switched with every other stream at the end of the input
              break;
            }
            if (pendingOverwrite?.delete(msg.stream) && pendingOverwrite.size === 0 && !switched) {
              if (!created && (await unchangedGeneration())) {
                // Every live document was kept as it is: the live generation already is the new one.
                ctx.logger.info(
                  { alias: config.collection, collection: live },
                  'overwrite found every document unchanged: nothing written, the Qdrant alias stays on the live generation',
                );
                keptBeforeCreate.clear();
                switched = true;
              } else {
                await createTarget();
                yield* flushAll();
                await switchGeneration();
              }
              for (const h of heldStates.splice(0)) yield { type: 'STATE_COMMITTED', ...h };
            }
            break;
          }
        }
        if (batch.size >= config.buffer_points || batch.bytes >= config.batch_bytes * config.concurrency) {
          // Backpressure: at most one flush in flight while the next one fills.
          yield* settle();
          startFlush();
        }
      }
      yield* flushAll();
      if (plan.reindex && !switched && pendingOverwrite?.size === 0) {
        // Every stream is complete: one alias request switches them all (generations.ts), then the
        // states are reported, so the engine records the new state and identity after the switch.
        await createTarget(); // a source with no documents still gets its (empty) new generation
        yield* flushAll();
        await switchReindexed(q, config.collection, plan.target, plan.reindex.keepPrevious, ctx);
        switched = true;
        for (const h of heldStates.splice(0)) yield { type: 'STATE_COMMITTED', ...h };
      }
      if (!switched) {
        // The input ended before every overwritten stream completed: the new generation is partial,
        // so readers keep the old one and nothing after the overwrite began is acknowledged.
        ctx.logger.warn(
          { collection: plan.target, incomplete: [...(pendingOverwrite ?? [])] },
          'overwrite not finished; keeping the previous Qdrant collection and dropping the partial one',
        );
        if (created) await dropCollection(q, plan.target);
      }
    },
    async close() {
      closed = true;
    },
  };
}
