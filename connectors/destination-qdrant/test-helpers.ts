// Shared by the Qdrant destination's tests: hand-built DestinationMessages and a quiet context.
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  DestinationWriter,
} from '../../src/protocol/connector.ts';
import { chunkId, sha256 } from '../../src/protocol/identity.ts';
import type { StateMessage } from '../../src/protocol/messages.ts';
import { QdrantConfigSchema, type QdrantConfig } from './config.ts';
import { scratchDir } from '../../src/testing/context.ts';

export const DIMS = 8;

export function testContext(logs: string[] = []): ConnectorContext {
  const log = (level: string) => (obj: object | string, msg?: string) =>
    logs.push(`${level} ${typeof obj === 'string' ? obj : `${msg ?? ''} ${JSON.stringify(obj)}`}`);
  return {
    logger: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') },
    baseDir: process.cwd(),
    signal: new AbortController().signal,
    connection: 'qdrant-test',
    follow: false,
    workDir: scratchDir('sluice-qdrant-'),
  };
}

export function qdrantConfig(url: string, collection: string, extra: Record<string, unknown> = {}): QdrantConfig {
  return QdrantConfigSchema.parse({ url, collection, max_retries: 8, ...extra });
}

/** A deterministic vector for a text (so search results can be predicted). */
export function embed(text: string, dims = DIMS): Float32Array {
  const h = Buffer.from(sha256(text), 'hex');
  const v = new Float32Array(dims);
  for (let i = 0; i < dims; i++) v[i] = (h[i % h.length] - 127.5) / 128;
  return v;
}

export function doc(
  stream: string,
  documentId: string,
  texts: string[],
  metadata: Record<string, unknown> = {},
  dims = DIMS,
): DestinationMessage {
  const chunks: Chunk[] = texts.map((content, chunkIndex) => ({
    id: chunkId(documentId, chunkIndex),
    documentId,
    chunkIndex,
    content,
    contentHash: sha256(content),
    metadata,
    embedding: embed(content, dims),
  }));
  return { type: 'DOCUMENT', stream, documentId, chunks, record: { id: documentId } };
}

export const del = (stream: string, documentId: string): DestinationMessage => ({ type: 'DELETE', stream, documentId });

export function state(stream: string, position: number): DestinationMessage {
  const s: StateMessage = { type: 'STREAM', stream: { stream_descriptor: { name: stream }, stream_state: { position } } };
  return { type: 'STATE', state: s, connection: { streams: { [stream]: { position } } } };
}

export const complete = (stream: string): DestinationMessage => ({ type: 'STREAM_COMPLETE', stream });

export function streams(mode: DestinationStream['destinationSyncMode'], ...names: string[]): DestinationStream[] {
  return names.map((name) => ({ name, destinationSyncMode: mode, primaryKey: [['id']] }));
}

export async function* feed(
  messages: DestinationMessage[],
  onEach?: (m: DestinationMessage) => Promise<void> | void,
): AsyncIterable<DestinationMessage> {
  for (const m of messages) {
    await onEach?.(m);
    yield m;
  }
}

export async function drain(
  writer: DestinationWriter,
  input: AsyncIterable<DestinationMessage> | DestinationMessage[],
  onEvent?: (e: DestinationEvent) => void,
): Promise<DestinationEvent[]> {
  const events: DestinationEvent[] = [];
  try {
    for await (const e of writer.write(Array.isArray(input) ? feed(input) : input)) {
      onEvent?.(e);
      events.push(e);
    }
  } finally {
    await writer.close();
  }
  return events;
}

export const committedPositions = (events: DestinationEvent[]) =>
  events.filter((e) => e.type === 'STATE_COMMITTED').map((e) => (e as { state: StateMessage }).state.stream?.stream_state?.position);
