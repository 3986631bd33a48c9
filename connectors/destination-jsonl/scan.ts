// `Destination.scanChunks` for jsonl (`sluice verify`): streams the file line by line, read-only.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { ConnectorContext, DocumentFingerprint, ScanOptions, ScannedChunk } from '../../src/protocol/connector.ts';
import type { JsonlChunkLine, JsonlDestinationConfig } from './index.ts';

export async function* scanChunks(
  config: JsonlDestinationConfig,
  ctx: ConnectorContext,
  stream: string,
  options: ScanOptions = {},
): AsyncGenerator<ScannedChunk> {
  const file = resolve(ctx.baseDir, config.path);
  if (!(await stat(file).catch(() => undefined))) return;
  const only = options.documentIds ? new Set(options.documentIds) : undefined;
  let n = 0;
  for await (const raw of createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })) {
    if (!raw) continue;
    // Lines carry their document's fingerprint where the writer keeps them.
    const l = JSON.parse(raw) as JsonlChunkLine & { fingerprint?: DocumentFingerprint };
    if (l.stream !== stream || (only && !only.has(l.document_id))) continue;
    if (options.limit !== undefined && n >= options.limit) return;
    n++;
    yield {
      documentId: l.document_id,
      chunkIndex: l.chunk_index,
      id: l.id,
      content: l.content,
      contentHash: l.content_hash,
      ...(l.embedding ? { dimensions: l.embedding.length } : {}),
      ...(l.fingerprint ? { fingerprint: l.fingerprint } : {}),
    };
  }
}
