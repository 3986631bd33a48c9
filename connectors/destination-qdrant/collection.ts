// Collection layout: readers use the name `<collection>`, an alias to a physical collection
// `<collection>_<generation>`. Appends write to the current generation; an overwrite loads a new
// generation and switches the alias in one atomic request, then drops the old one (invariant 5).
import { SluiceError } from '../../src/protocol/errors.ts';
import type { Logger } from '../../src/protocol/connector.ts';
import type { Qdrant } from './client.ts';
import { QDRANT_DISTANCE, type QdrantConfig, type QdrantDistance } from './config.ts';

/** Payload fields sluice filters on: indexed so deletes stay fast (and allowed under strict mode). */
export const INDEXED_FIELDS = [
  { field: 'document_id', schema: 'keyword' },
  { field: 'stream', schema: 'keyword' },
  { field: 'chunk_index', schema: 'integer' },
] as const;

export interface Layout {
  /** What `<collection>` names today: an alias target, a plain collection (made outside sluice), or nothing. */
  current?: { physical: string; viaAlias: boolean };
  /** Existing `<collection>_<n>` collections. */
  generations: { name: string; n: number }[];
  /** Every alias of the server (alias → collection) and every collection name, as read. */
  aliases: Map<string, string>;
  collections: Set<string>;
}

export async function readLayout(q: Qdrant, name: string): Promise<Layout> {
  const [{ collections }, { aliases }] = await Promise.all([
    q.call('list collections', () => q.client.getCollections()),
    q.call('list aliases', () => q.client.getAliases()),
  ]);
  const target = aliases.find((a) => a.alias_name === name)?.collection_name;
  const pattern = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}_(\\d+)$`);
  const generations = collections
    .map((c) => ({ name: c.name, m: pattern.exec(c.name) }))
    .filter((g): g is { name: string; m: RegExpExecArray } => !!g.m)
    .map((g) => ({ name: g.name, n: Number(g.m[1]) }));
  const plain = collections.some((c) => c.name === name);
  return {
    current: target ? { physical: target, viaAlias: true } : plain ? { physical: name, viaAlias: false } : undefined,
    generations,
    aliases: new Map(aliases.map((a) => [a.alias_name, a.collection_name])),
    collections: new Set(collections.map((c) => c.name)),
  };
}

export interface VectorShape {
  size: number;
  distance: QdrantDistance;
}

/** The single unnamed vector of a collection, or an error saying why it cannot be used. */
export async function describeCollection(
  q: Qdrant,
  physical: string,
): Promise<{ shape: VectorShape; indexed: Set<string>; points?: number }> {
  const info = await q.call(`describe collection ${physical}`, () => q.client.getCollection(physical));
  const vectors = info.config.params.vectors as { size?: unknown; distance?: unknown } | Record<string, unknown> | undefined;
  if (!vectors || typeof (vectors as { size?: unknown }).size !== 'number') {
    throw new SluiceError(
      `Qdrant collection ${physical} has named vectors (${Object.keys(vectors ?? {}).join(', ') || 'none'}); sluice writes one unnamed vector per point`,
      {
        kind: 'config',
        hint: 'use another `collection` name; sluice will create it',
      },
    );
  }
  return {
    shape: { size: (vectors as { size: number }).size, distance: (vectors as { distance: QdrantDistance }).distance },
    indexed: new Set(Object.keys(info.payload_schema ?? {})),
    points: info.points_count ?? undefined,
  };
}

/** Fails before any write when the existing collection cannot hold this connection's vectors. */
export function assertShape(physical: string, alias: string, have: VectorShape, want: VectorShape, embedderName?: string): void {
  if (have.size === want.size && have.distance === want.distance) return;
  const parts: string[] = [];
  if (have.size !== want.size)
    parts.push(`vectors of size ${have.size}, but the embedder${embedderName ? ` (${embedderName})` : ''} makes ${want.size}`);
  if (have.distance !== want.distance) parts.push(`distance ${have.distance}, but the config says ${want.distance}`);
  throw new SluiceError(`Qdrant collection "${alias}" (${physical}) has ${parts.join('; and ')}`, {
    kind: 'config',
    where: `collection ${alias}`,
    hint: 'point `collection` at a new name, or delete the collection in Qdrant so sluice recreates it (then run a full sync)',
  });
}

export async function createGeneration(q: Qdrant, config: QdrantConfig, physical: string, size: number, logger: Logger): Promise<void> {
  await q.call(`create collection ${physical}`, async (attempt) => {
    try {
      await q.client.createCollection(physical, {
        vectors: { size, distance: QDRANT_DISTANCE[config.distance] },
        hnsw_config: config.hnsw,
        optimizers_config: config.optimizers,
        on_disk_payload: config.on_disk_payload,
        shard_number: config.shard_number,
        replication_factor: config.replication_factor,
      });
    } catch (err) {
      // A retried create whose first attempt landed (timeout after success) is fine.
      if (attempt > 0 && /already exists/i.test(String((err as { data?: { status?: { error?: string } } }).data?.status?.error))) return;
      throw err;
    }
  });
  logger.info({ collection: physical, size, distance: config.distance }, 'created Qdrant collection');
}

export async function ensureIndexes(q: Qdrant, physical: string, indexed: Set<string>): Promise<void> {
  for (const { field, schema } of INDEXED_FIELDS) {
    if (indexed.has(field)) continue;
    await q.call(`create payload index ${field} on ${physical}`, () =>
      q.client.createPayloadIndex(physical, { field_name: field, field_schema: schema, wait: true }),
    );
  }
}

/** Points `alias` at `physical` in one request, so readers switch from one full generation to the other. */
export async function switchAlias(q: Qdrant, alias: string, physical: string, hadAlias: boolean): Promise<void> {
  const actions = [
    ...(hadAlias ? [{ delete_alias: { alias_name: alias } }] : []),
    { create_alias: { collection_name: physical, alias_name: alias } },
  ];
  await q.call(`switch alias ${alias} to ${physical}`, () => q.client.updateCollectionAliases({ actions }));
}

export async function dropCollection(q: Qdrant, physical: string): Promise<void> {
  await q.call(`drop collection ${physical}`, () => q.client.deleteCollection(physical));
}
