// Qdrant destination (`type: qdrant`): chunks become points with UUIDv5 ids of (stream, document id,
// chunk index); readers query the alias `<collection>`, which an overwrite switches atomically.
import type { CheckResult, ConnectorContext, Destination, OpenOptions, SearchHit } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import { connectQdrant } from './client.ts';
import { QDRANT_DISTANCE, QdrantConfigSchema, type QdrantConfig } from './config.ts';
import { INDEXED_FIELDS, assertShape, describeCollection, dropCollection, ensureIndexes, readLayout } from './collection.ts';
import { RESERVED_PAYLOAD_KEYS, createWriter, prepare } from './writer.ts';
import { listDocuments } from './fingerprints.ts';
import { scanChunks } from './scan.ts';
import { hasPrevious, rollback } from './generations.ts';

const destination: Destination<QdrantConfig> = {
  kind: 'destination',
  spec: {
    name: 'qdrant',
    title: 'Qdrant',
    description: 'Writes chunks and their vectors as Qdrant points; overwrite syncs switch an alias atomically.',
    documentationUrl: 'https://qdrant.tech/documentation/',
    config: QdrantConfigSchema,
  },
  capabilities: { destinationSyncModes: ['append', 'append_dedup', 'overwrite'], vectors: true },

  async check(
    config: QdrantConfig,
    ctx: ConnectorContext,
    options: Pick<OpenOptions, 'dimensions' | 'embedderName'> = {},
  ): Promise<CheckResult> {
    // A check answers quickly: one retry at most, so a wrong url fails in seconds, not a minute.
    const q = connectQdrant({ ...config, max_retries: Math.min(config.max_retries, 1) }, ctx.logger);
    try {
      const layout = await readLayout(q, config.collection);
      if (!layout.current) {
        return {
          ok: true,
          message: `${q.where} is reachable; collection "${config.collection}" does not exist yet and will be created on the first sync`,
        };
      }
      const { shape, points } = await describeCollection(q, layout.current.physical);
      const described = `${q.where}: collection "${config.collection}" (${layout.current.physical}) holds ${points ?? '?'} points of size ${shape.size}, distance ${shape.distance}`;
      if (options.dimensions !== undefined && shape.size !== options.dimensions) {
        return {
          ok: false,
          message: `${described}, but the embedding model${options.embedderName ? ` (${options.embedderName})` : ''} gives ${options.dimensions} dimensions: use another collection name, or an embedder of size ${shape.size}`,
        };
      }
      if (shape.distance !== QDRANT_DISTANCE[config.distance]) {
        return {
          ok: false,
          message: `${described}, but the config says distance ${config.distance}: set distance to match, or use another collection name`,
        };
      }
      const warnings = layout.current.viaAlias
        ? []
        : [`"${config.collection}" is a plain collection, not an alias: the first overwrite sync replaces it with a short gap for readers`];
      return { ok: true, message: described, warnings };
    } catch (err) {
      const e = err instanceof SluiceError ? err : new SluiceError(String(err));
      return { ok: false, message: e.hint ? `${e.message} (${e.hint})` : e.message };
    }
  },

  /** Read-only (for `sync --dry-run`): the existing collection's vector size and distance, as open() checks them. */
  async preflight(config: QdrantConfig, ctx: ConnectorContext, options: OpenOptions) {
    if (!options.dimensions) return;
    const q = connectQdrant(config, ctx.logger);
    const layout = await readLayout(q, config.collection);
    if (!layout.current) return;
    const described = await describeCollection(q, layout.current.physical);
    const want = { size: options.dimensions, distance: QDRANT_DISTANCE[config.distance] };
    assertShape(layout.current.physical, config.collection, described.shape, want, options.embedderName);
  },

  async open(config: QdrantConfig, ctx: ConnectorContext, options: OpenOptions) {
    const q = connectQdrant(config, ctx.logger);
    const plan = await prepare(q, config, ctx, options);
    return createWriter(q, config, ctx, options, plan);
  },

  /** Every document of a stream with its fingerprint and chunk count (read-only; chunk-0 payloads, no vectors). */
  async *documents(config: QdrantConfig, ctx: ConnectorContext, stream: string) {
    const q = connectQdrant(config, ctx.logger);
    const layout = await readLayout(q, config.collection);
    if (!layout.current) return;
    yield* listDocuments(q, layout.current.physical, stream, Math.max(config.batch_points, 1000));
  },

  /** The conformance kit writes into a collection of its own (alias and generations), dropped afterwards. */
  async sandbox(config: QdrantConfig, ctx: ConnectorContext, id: string) {
    const collection = `sluice_conformance_${id}`;
    return {
      config: { ...config, collection },
      async remove() {
        const q = connectQdrant(config, ctx.logger);
        const layout = await readLayout(q, collection);
        if (layout.current?.viaAlias)
          await q.call(`drop alias ${collection}`, () =>
            q.client.updateCollectionAliases({ actions: [{ delete_alias: { alias_name: collection } }] }),
          );
        const names = new Set([...layout.generations.map((g) => g.name), ...(layout.current ? [layout.current.physical] : [])]);
        for (const name of names) await dropCollection(q, name);
      },
    };
  },

  /** Sizes per stream; with `reindex`, creates sluice's payload indexes where missing (Qdrant rebuilds HNSW on its own). */
  async maintain(
    config: QdrantConfig,
    ctx: ConnectorContext,
    action: { reindex: boolean; streams: string[] },
  ): Promise<Record<string, unknown>> {
    const q = connectQdrant(config, ctx.logger);
    const layout = await readLayout(q, config.collection);
    if (!layout.current) return { collection: config.collection, exists: false };
    const physical = layout.current.physical;
    let described = await describeCollection(q, physical);
    const created: string[] = [];
    if (action.reindex) {
      const missing = INDEXED_FIELDS.filter((f) => !described.indexed.has(f.field)).map((f) => f.field);
      await ensureIndexes(q, physical, described.indexed);
      created.push(...missing);
      described = await describeCollection(q, physical);
    }
    const streams: Record<string, number> = {};
    for (const stream of action.streams) {
      const { count } = await q.call(`count of stream ${stream} in ${physical}`, () =>
        q.client.count(physical, { filter: { must: [{ key: 'stream', match: { value: stream } }] }, exact: true }),
      );
      streams[stream] = count;
    }
    return {
      collection: config.collection,
      physical,
      via_alias: layout.current.viaAlias,
      points: described.points,
      vector_size: described.shape.size,
      distance: described.shape.distance,
      payload_indexes: [...described.indexed].sort(),
      ...(action.reindex ? { payload_indexes_created: created } : {}),
      points_per_stream: streams,
    };
  },

  scanChunks,

  // `sluice reindex`: a new generation behind the alias, switched in one alias request (generations.ts).
  reindex: { hasPrevious: (config, ctx) => hasPrevious(config, ctx), rollback },

  async search(
    config: QdrantConfig,
    ctx: ConnectorContext,
    query: { vector: Float32Array; topK: number; streams: string[] },
  ): Promise<SearchHit[]> {
    const q = connectQdrant(config, ctx.logger);
    const filter = query.streams.length ? { must: [{ key: 'stream', match: { any: query.streams } }] } : undefined;
    const res = await q.call(`query of collection ${config.collection}`, () =>
      q.client.query(config.collection, { query: Array.from(query.vector), limit: query.topK, filter, with_payload: true }),
    );
    return res.points.map((p) => {
      const payload = (p.payload ?? {}) as Record<string, unknown>;
      const metadata: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(payload)) if (!RESERVED_PAYLOAD_KEYS.has(k)) metadata[k] = v;
      return {
        score: p.score,
        stream: String(payload.stream ?? ''),
        documentId: String(payload.document_id ?? ''),
        chunkIndex: Number(payload.chunk_index ?? 0),
        content: String(payload.content ?? ''),
        metadata,
      };
    });
  },
};

export default destination;
