// Builders shared by this connector's tests and bench: contexts, hand-built destination messages
// with deterministic embeddings, and a runner that collects a writer's events.
import type {
  Chunk,
  ConnectorContext,
  DestinationEvent,
  DestinationMessage,
  DestinationWriter,
  DocumentFingerprint,
  SourceState,
} from '../../src/protocol/connector.ts';
import { chunkId, sha256 } from '../../src/protocol/identity.ts';
import { scratchDir } from '../../src/testing/context.ts';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

export function testContext(connection = 'test', baseDir = scratchDir('sluice-pgv-')): ConnectorContext {
  return { logger: quiet, baseDir, signal: new AbortController().signal, connection, follow: false, workDir: baseDir };
}

/** A unit-length vector that depends only on (text, dims). */
export function vectorFor(text: string, dims: number): Float32Array {
  const v = new Float32Array(dims);
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  let norm = 0;
  for (let i = 0; i < dims; i++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) ^ i;
    v[i] = ((h >>> 0) % 2000) / 1000 - 1;
    norm += v[i] * v[i];
  }
  const n = Math.sqrt(norm) || 1;
  for (let i = 0; i < dims; i++) v[i] /= n;
  return v;
}

export function chunkContent(documentId: string, index: number, version = 1): string {
  return `${documentId} chunk ${index} v${version}`;
}

export function documentMessage(stream: string, documentId: string, chunkCount: number, dims: number, version = 1): DestinationMessage {
  const chunks: Chunk[] = [];
  for (let i = 0; i < chunkCount; i++) {
    const content = chunkContent(documentId, i, version);
    chunks.push({
      id: chunkId(documentId, i),
      documentId,
      chunkIndex: i,
      content,
      contentHash: sha256(content),
      metadata: { version, path: `${documentId}.md` },
      embedding: vectorFor(content, dims),
    });
  }
  return { type: 'DOCUMENT', stream, documentId, chunks, record: { id: documentId } };
}

export function deleteMessage(stream: string, documentId: string): DestinationMessage {
  return { type: 'DELETE', stream, documentId };
}

export function stateMessage(stream: string, cursor: number): DestinationMessage {
  const connection: SourceState = { streams: { [stream]: { cursor } } };
  return {
    type: 'STATE',
    state: { type: 'STREAM', stream: { stream_descriptor: { name: stream }, stream_state: { cursor } } },
    connection,
  };
}

export async function* fromArray<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const i of items) yield i;
}

export async function drain(
  writer: DestinationWriter,
  messages: Iterable<DestinationMessage> | AsyncIterable<DestinationMessage>,
): Promise<DestinationEvent[]> {
  const events: DestinationEvent[] = [];
  const input =
    Symbol.asyncIterator in messages
      ? (messages as AsyncIterable<DestinationMessage>)
      : fromArray(messages as Iterable<DestinationMessage>);
  for await (const e of writer.write(input)) events.push(e);
  return events;
}

/** The vector size and embedder tag of the fingerprinted-document builders below. */
export const FINGERPRINT_TEST_DIMS = 4;
export const FINGERPRINT_TEST_EMBEDDER = 'test/model/4';

type DocumentMessage = Extract<DestinationMessage, { type: 'DOCUMENT' }>;

/** The fingerprint the engine would send: content by version, metadata by meta, source when given. */
export const fingerprintOf = (id: string, version: number, meta: number, source?: string): DocumentFingerprint => ({
  content: sha256(`content ${id} v${version}`),
  metadata: sha256(`metadata ${id} m${meta}`),
  embedder: FINGERPRINT_TEST_EMBEDDER,
  ...(source === undefined ? {} : { source }),
});

/** A source digest as the engine stores it: `<tag>:<digest>`. */
export const sourceDigest = (id: string, round: number) => `0123456789abcdef:${sha256(`row ${id} r${round}`).slice(0, 32)}`;

/** A DOCUMENT with FINGERPRINT_TEST_DIMS vectors, its chunks' metadata and its fingerprint made from `meta` and `version`. */
export function fingerprintedDoc(
  stream: string,
  id: string,
  chunks: number,
  opts: { version?: number; meta?: number; source?: string } = {},
): DocumentMessage {
  const { version = 1, meta = 1, source } = opts;
  const m = documentMessage(stream, id, chunks, FINGERPRINT_TEST_DIMS, version) as DocumentMessage;
  for (const c of m.chunks) c.metadata = { ...c.metadata, tag: `m${meta}` };
  return { ...m, fingerprint: fingerprintOf(id, version, meta, source) };
}

/** The metadata-only form: same chunk ids and texts, no vectors, new metadata and fingerprint. */
export function metadataOnlyDoc(stream: string, id: string, chunks: number, opts: { meta: number; source?: string }): DestinationMessage {
  const m = fingerprintedDoc(stream, id, chunks, opts);
  return { ...m, metadataOnly: true, chunks: m.chunks.map(({ embedding: _drop, ...c }) => c) };
}

export const keepMessage = (stream: string, id: string): DestinationMessage => ({ type: 'KEEP', stream, documentId: id });
export const completeMessage = (stream: string): DestinationMessage => ({ type: 'STREAM_COMPLETE', stream });
