// `sluice dead-letters retry`: the stored records of a connection go through the pipeline again
// (document, chunks, embeddings, destination). A letter is removed only after the destination has
// taken every retried record (end of input: committed); writes are idempotent upserts by chunk id,
// so a crash between the write and the removal re-processes the same versions, never different
// ones — each letter lands exactly once. Letters that fail again stay, with the new error (a
// destination that refuses a retried document again keeps its letter, the others are removed).
// Letters of stage `source` hold text the source could not parse, which only the source can read:
// they are not retried but listed as skipped — fix the data where the source reads it (the next
// sync reads a changed file or object again), then purge them.
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
  /** Letters not retried (stage `source`: only the source can parse them), with why. */
  skipped: Array<{ id: string; stream: string; position?: string; reason: string }>;
}

const SOURCE_NOT_RETRIED =
  'the source could not parse this record, and only the source can read it: fix it where the source reads it (a changed file or object is read again by the next sync), then purge this letter';

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
    const skipped = letters.filter((l) => l.stage === 'source');
    const retried = letters.filter((l) => l.stage !== 'source');
    const result: RetryResult = {
      connection: name,
      retried: retried.length,
      succeeded: 0,
      failed: [],
      skipped: skipped.map((l) => ({ id: l.id, stream: l.stream, position: l.position, reason: SOURCE_NOT_RETRIED })),
    };
    if (!retried.length) return result;
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
    /** Letters by the document they became, to find those the destination refuses again. */
    const byDocument = new Map<string, DeadLetter[]>();
    for (const l of retried) {
      try {
        const cs = byName.get(l.stream);
        if (!cs) throw new Error(`stream ${l.stream} is no longer in the pipeline`);
        const doc = ensureChunks(
          toDocument(cs, l.payload, processor, streams[l.stream], `stream ${l.stream}, dead letter ${l.id}`, fingerprinter),
        );
        if (doc.type === 'DOCUMENT' && !doc.chunks.length) throw new Error('no text: the fields that make the text are empty');
        ready.push(...(embedder ? await embedChunks([doc], parts, embedder) : [doc]));
        done.push(l);
        if (doc.type === 'DOCUMENT' || doc.type === 'DELETE') {
          const k = `${doc.stream}\u0000${doc.documentId}`;
          byDocument.set(k, [...(byDocument.get(k) ?? []), l]);
        }
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
        for await (const ev of writer.write(
          (async function* () {
            yield* ready;
          })(),
        )) {
          if (ev.type !== 'REJECTED') continue;
          for (const l of byDocument.get(`${ev.stream}\u0000${ev.documentId}`) ?? []) {
            done.splice(done.indexOf(l), 1);
            again.push({ ...l, attempts: l.attempts + 1, error: redact(`the destination refused document ${ev.documentId}: ${ev.error}`) });
          }
        }
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
