// Shared by the Pinecone connector tests and the bench: contexts, deterministic vectors, messages.
import { createHash } from 'node:crypto';
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  Logger,
} from '../../src/protocol/connector.ts';
import { chunkId, sha256 } from '../../src/protocol/identity.ts';
import type { StateMessage } from '../../src/protocol/messages.ts';
import { scratchDir } from '../../src/testing/context.ts';

export interface LoggedLine {
  level: string;
  msg: string;
  fields?: object;
}

export function captureContext(): ConnectorContext & { lines: LoggedLine[] } {
  const lines: LoggedLine[] = [];
  const at =
    (level: string) =>
    (obj: object | string, msg?: string): void => {
      lines.push(typeof obj === 'string' ? { level, msg: obj } : { level, msg: msg ?? '', fields: obj });
    };
  const logger: Logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return {
    logger,
    lines,
    baseDir: process.cwd(),
    signal: new AbortController().signal,
    connection: 'pinecone-test',
    follow: false,
    workDir: scratchDir('sluice-pinecone-'),
  };
}

/** A deterministic, non-zero vector for a text. */
export function vectorFor(text: string, dim: number): Float32Array {
  const out = new Float32Array(dim);
  let block = Buffer.alloc(0);
  for (let i = 0; i < dim; i++) {
    if (i % 8 === 0) block = createHash('sha256').update(`${text}:${i}`).digest();
    out[i] = (block.readUInt32BE((i % 8) * 4) / 0xffffffff) * 2 - 1;
  }
  return out;
}

export function documentMessage(
  stream: string,
  documentId: string,
  contents: string[],
  dim: number,
  metadata: Record<string, unknown> = {},
): DestinationMessage {
  const chunks: Chunk[] = contents.map((content, chunkIndex) => ({
    id: chunkId(documentId, chunkIndex),
    documentId,
    chunkIndex,
    content,
    contentHash: sha256(content),
    metadata,
    embedding: vectorFor(content, dim),
  }));
  return { type: 'DOCUMENT', stream, documentId, chunks, record: { id: documentId } };
}

export function stateMessage(stream: string, position: number): DestinationMessage {
  const state: StateMessage = { type: 'STREAM', stream: { stream_descriptor: { name: stream }, stream_state: { position } } };
  return { type: 'STATE', state, connection: { streams: { [stream]: { position } } } };
}

export async function* fromArray<T>(items: Iterable<T>): AsyncIterable<T> {
  for (const item of items) yield item;
}

/** Runs a writer over messages; `onEvent` sees each event as it is yielded. */
export async function drain(
  writer: DestinationWriter,
  messages: AsyncIterable<DestinationMessage> | Iterable<DestinationMessage>,
  onEvent?: (e: DestinationEvent) => void | Promise<void>,
): Promise<DestinationEvent[]> {
  const input =
    Symbol.asyncIterator in (messages as object)
      ? (messages as AsyncIterable<DestinationMessage>)
      : fromArray(messages as Iterable<DestinationMessage>);
  const events: DestinationEvent[] = [];
  for await (const e of writer.write(input)) {
    events.push(e);
    await onEvent?.(e);
  }
  await writer.close();
  return events;
}

export function written(events: DestinationEvent[]) {
  let chunksWritten = 0;
  let chunksDeleted = 0;
  let records = 0;
  for (const e of events) {
    if (e.type !== 'WRITTEN') continue;
    chunksWritten += e.chunksWritten;
    chunksDeleted += e.chunksDeleted;
    records += e.records;
  }
  return { records, chunksWritten, chunksDeleted };
}
