// The Qdrant writer: buffers DestinationMessages into flushes (bounded by points and bytes), sends
// each flush as upserts + filtered deletes, several requests in flight, all with `wait: true`, and
// acknowledges a STATE only once every request before it was acknowledged (invariant 1).
//
// Ordering: within one flush every request commutes (a document's new chunks are upserted below
// its new chunk count, its deletes are at or above it), so they run concurrently. Flushes run one
// after another, so a document written twice in a sync is never reordered.
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
export const RESERVED_PAYLOAD_KEYS = new Set(['document_id', 'chunk_index', 'stream', 'content']);

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
  bytes = 0;
  stats = new Map<string, { records: number; chunksWritten: number; chunksDeleted: number }>();

  statsFor(stream: string) {
    let s = this.stats.get(stream);
    if (!s) this.stats.set(stream, (s = { records: 0, chunksWritten: 0, chunksDeleted: 0 }));
    return s;
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
    return this.points.size === 0 && this.deletes.size === 0;
  }
}

export interface WriterPlan {
  /** Physical collection this sync writes to. */
  target: string;
  /** Overwrite: switch the alias to `target` once these streams are complete, then drop `previous`. */
  overwrite?: { streams: Set<string>; previous?: { physical: string; viaAlias: boolean } };
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
  let currentIndexed = new Set<string>();
  if (layout.current) {
    const described = await describeCollection(q, layout.current.physical);
    assertShape(layout.current.physical, config.collection, described.shape, want, options.embedderName);
    currentIndexed = described.indexed;
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
  for (const g of layout.generations) {
    if (g.name === layout.current?.physical) continue;
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
  await createGeneration(q, config, physical, dims, ctx.logger);
  await ensureIndexes(q, physical, new Set());
  if (layout.current) await copyOtherStreams(q, config, layout.current.physical, physical, overwriteStreams, ctx);
  return { target: physical, overwrite: { streams: overwriteStreams, previous: layout.current } };
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
  let switched = !plan.overwrite;
  let closed = false;

  const docKey = (stream: string, documentId: string) => JSON.stringify([stream, documentId]);

  function toPoint(stream: string, documentId: string, chunk: Chunk): Point {
    const where = `stream ${stream}, document ${JSON.stringify(documentId)}, chunk ${chunk.chunkIndex}`;
    if (!chunk.embedding) {
      throw new SluiceError(`chunk without an embedding reached the Qdrant destination (${where})`, { kind: 'internal', where });
    }
    if (chunk.embedding.length !== dims) {
      throw new SluiceError(`embedding of size ${chunk.embedding.length} does not match the collection's ${dims} (${where})`, {
        kind: 'embedding',
        where,
      });
    }
    const payload: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(chunk.metadata ?? {})) if (!RESERVED_PAYLOAD_KEYS.has(k) && v !== undefined) payload[k] = v;
    payload.document_id = documentId;
    payload.chunk_index = chunk.chunkIndex;
    payload.stream = stream;
    payload.content = chunk.content;
    const vector = Array.from(chunk.embedding);
    // JSON size estimate: ~20 characters per float, plus the payload.
    const bytes = 64 + dims * 20 + JSON.stringify(payload).length;
    return { id: chunkUuid(stream, documentId, chunk.chunkIndex), vector, payload, bytes };
  }

  async function sendBatch(batch: Batch): Promise<void> {
    if (batch.empty) return;
    const target = plan.target;
    const requests: Promise<unknown>[] = [];
    let group: Point[] = [];
    let groupBytes = 0;
    const sendPoints = (points: Point[]) =>
      requests.push(
        limit(() =>
          q.call(`upsert of ${points.length} points into ${target}`, () =>
            q.client.upsert(target, { wait: true, points: points.map(({ id, vector, payload }) => ({ id, vector, payload })) }),
          ),
        ),
      );
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
    const results = await Promise.allSettled(requests);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
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

  return {
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

      for await (const msg of input) {
        if (closed) throw new SluiceError('the Qdrant writer was closed while input was still arriving', { kind: 'internal' });
        switch (msg.type) {
          case 'DOCUMENT': {
            const mode = modes.get(msg.stream)?.destinationSyncMode ?? 'append_dedup';
            const key = docKey(msg.stream, msg.documentId);
            const points = msg.chunks.map((c) => toPoint(msg.stream, msg.documentId, c));
            const pending = batch.deletes.get(key);
            if (mode === 'append') {
              // Append upserts by chunk id only; a pending delete of this document must land first.
              if (pending) {
                yield* flushAll();
              }
            } else {
              batch.dropDocPoints(key);
              batch.deletes.set(key, { stream: msg.stream, documentId: msg.documentId, from: points.length });
            }
            for (const p of points) batch.addPoint(key, p);
            const s = batch.statsFor(msg.stream);
            s.records++;
            s.chunksWritten += points.length;
            break;
          }
          case 'DELETE': {
            const key = docKey(msg.stream, msg.documentId);
            batch.dropDocPoints(key);
            batch.deletes.set(key, { stream: msg.stream, documentId: msg.documentId, from: 0 });
            batch.statsFor(msg.stream).records++;
            break;
          }
          case 'STATE': {
            yield* flushAll();
            if (!switched) heldStates.push({ state: msg.state, connection: msg.connection });
            else yield { type: 'STATE_COMMITTED', state: msg.state, connection: msg.connection };
            break;
          }
          case 'STREAM_COMPLETE': {
            if (pendingOverwrite?.delete(msg.stream) && pendingOverwrite.size === 0 && !switched) {
              yield* flushAll();
              await switchGeneration();
              for (const h of heldStates.splice(0)) yield { type: 'STATE_COMMITTED', ...h };
            }
            break;
          }
        }
        if (batch.points.size >= config.buffer_points || batch.bytes >= config.batch_bytes * config.concurrency) {
          // Backpressure: at most one flush in flight while the next one fills.
          yield* settle();
          startFlush();
        }
      }
      yield* flushAll();
      if (!switched) {
        // The input ended before every overwritten stream completed: the new generation is partial,
        // so readers keep the old one and nothing after the overwrite began is acknowledged.
        ctx.logger.warn(
          { collection: plan.target, incomplete: [...(pendingOverwrite ?? [])] },
          'overwrite not finished; keeping the previous Qdrant collection and dropping the partial one',
        );
        await dropCollection(q, plan.target);
      }
    },
    async close() {
      closed = true;
    },
  };
}
