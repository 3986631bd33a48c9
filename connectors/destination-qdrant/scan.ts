// `Destination.scanChunks` for Qdrant (`sluice verify`): scrolls the points of one stream in the
// collection readers see (the alias), 256 at a time, with their vectors' sizes, read-only.
import type { ConnectorContext, ScanOptions, ScannedChunk } from '../../src/protocol/connector.ts';
import { connectQdrant } from './client.ts';
import type { QdrantConfig } from './config.ts';
import { readLayout } from './collection.ts';
import { fingerprintOf } from './fingerprints.ts'; // where the writer keeps the fingerprint

const PAGE = 256;

export async function* scanChunks(
  config: QdrantConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ScanOptions = {},
): AsyncGenerator<ScannedChunk> {
  const q = connectQdrant(config, ctx.logger);
  const layout = await readLayout(q, config.collection);
  if (!layout.current) return;
  const collection = layout.current.physical;
  const must: object[] = [{ key: 'stream', match: { value: stream } }];
  if (options.documentIds) must.push({ key: 'document_id', match: { any: options.documentIds } });
  let left = options.limit ?? Infinity;
  let offset: string | number | undefined;
  do {
    const limit = Math.min(PAGE, left);
    if (limit <= 0) return;
    const page = await q.call(`scroll of ${collection}`, () =>
      q.client.scroll(collection, { filter: { must } as never, limit, offset: offset ?? undefined, with_payload: true, with_vector: true }),
    );
    for (const p of page.points) {
      const payload = (p.payload ?? {}) as Record<string, unknown>;
      const vector = p.vector;
      const fingerprint = fingerprintOf(payload);
      yield {
        id: String(p.id),
        documentId: String(payload.document_id ?? ''),
        chunkIndex: Number(payload.chunk_index),
        ...(typeof payload.content === 'string' ? { content: payload.content } : {}),
        ...(Array.isArray(vector) ? { dimensions: vector.length } : {}),
        ...(fingerprint ? { fingerprint } : {}),
      };
    }
    left -= page.points.length;
    offset = (page.next_page_offset ?? undefined) as string | number | undefined;
  } while (offset !== undefined && offset !== null);
}
