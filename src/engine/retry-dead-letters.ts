// `sluice dead-letters retry`: the stored records of a connection go through the pipeline again
// (document, chunks, embeddings, destination). A letter is removed only after the destination has
// taken every retried record (end of input: committed); writes are idempotent upserts by chunk id,
// so a crash between the write and the removal re-processes the same versions, never different
// ones — each letter lands exactly once. Letters that fail again stay, with the new error.
import { join } from 'node:path';
import type { LoadedConnection, LoadedPipeline } from '../config/load.ts';
import { createEmbedder, openEmbeddingCache } from '../embedding/index.ts';
import type { EmbeddingCache } from '../embedding/types.ts';
import type { DestinationMessage, Logger } from '../protocol/connector.ts';
import { describeUnknown, withContext } from '../protocol/errors.ts';
import { redact } from '../config/secrets.ts';
import { configureCatalog } from './catalog.ts';
import { openDeadLetterStore, type DeadLetter } from './dead-letters.ts';
import { connectorContext, embedChunks, embedderShape, newStats, toDocument, type StreamStats } from './sync.ts';
import { createTextProcessor } from '../text/index.ts';
import { Fingerprinter } from './fingerprint.ts';
import { ensureChunks } from './unchanged.ts';

export interface RetryResult {
  connection: string;
  retried: number;
  succeeded: number;
  failed: Array<{ id: string; stream: string; key?: string; error: string }>;
}

export async function retryDeadLetters(
  pipeline: LoadedPipeline,
  conn: LoadedConnection,
  opts: { logger: Logger; signal: AbortSignal },
): Promise<RetryResult> {
  const name = conn.config.name;
  const store = openDeadLetterStore(conn.config.errors, pipeline.stateDir, pipeline.baseDir);
  let cache: EmbeddingCache | undefined;
  const embedder = conn.config.embedding ? createEmbedder(conn.config.embedding, { logger: opts.logger }) : undefined;
  try {
    const letters = await store.list(name);
    const result: RetryResult = { connection: name, retried: letters.length, succeeded: 0, failed: [] };
    if (!letters.length) return result;
    const ctx = await connectorContext(pipeline, conn, opts);
    const discovered = await conn.source.discover(conn.sourceConfig, ctx).catch((err) => {
      throw withContext(err, `connection ${name}, source ${conn.config.source.type} (discover)`);
    });
    const catalog = configureCatalog(conn, discovered, {});
    const byName = new Map(catalog.streams.map((s) => [s.stream.name, s]));
    const processor = createTextProcessor(conn.config.processing, { maxInputTokens: embedder?.maxInputTokens, model: embedder?.model });
    if (embedder && !embedder.local) cache = await openEmbeddingCache(join(pipeline.stateDir, 'embeddings'));
    const streams: Record<string, StreamStats> = {};
    for (const s of catalog.streams) streams[s.stream.name] = newStats();
    const parts = { conn, catalog, ctx, processor, embedder, cache, streams, signal: opts.signal };
    // Each retried document carries its fingerprint; dropped below for a writer that keeps none.
    const fingerprinter = new Fingerprinter(processor, embedder);

    const ready: DestinationMessage[] = [];
    const done: DeadLetter[] = [];
    const again: DeadLetter[] = [];
    for (const l of letters) {
      try {
        const cs = byName.get(l.stream);
        if (!cs) throw new Error(`stream ${l.stream} is no longer in the pipeline`);
        const doc = ensureChunks(
          toDocument(cs, l.payload, processor, streams[l.stream], `stream ${l.stream}, dead letter ${l.id}`, fingerprinter),
        );
        if (doc.type === 'DOCUMENT' && !doc.chunks.length) throw new Error('no text: the fields that make the text are empty');
        ready.push(...(embedder ? await embedChunks([doc], parts, embedder) : [doc]));
        done.push(l);
      } catch (err) {
        again.push({ ...l, attempts: l.attempts + 1, error: redact(describeUnknown(err)) });
      }
    }
    if (ready.length) {
      const writer = await conn.destination.open(conn.destinationConfig, ctx, {
        streams: catalog.streams.map((s) => ({
          name: s.stream.name,
          destinationSyncMode: s.destination_sync_mode,
          primaryKey: s.primary_key ?? [],
        })),
        ...embedderShape(embedder),
      });
      if (!writer.fingerprints) for (const m of ready) if (m.type === 'DOCUMENT') delete m.fingerprint;
      try {
        for await (const _ of writer.write(
          (async function* () {
            yield* ready;
          })(),
        ));
      } finally {
        await writer.close();
      }
    }
    if (done.length)
      await store.remove(
        name,
        done.map((l) => l.id),
      );
    if (again.length) await store.update(name, again);
    result.succeeded = done.length;
    result.failed = again.map((l) => ({ id: l.id, stream: l.stream, key: l.key, error: l.error }));
    return result;
  } finally {
    await cache?.close().catch(() => undefined);
    await embedder?.close?.().catch(() => undefined);
    await store.close();
  }
}
