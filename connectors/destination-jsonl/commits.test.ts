// A commit that only adds new documents copies the file's bytes and keeps the document index up to
// date: no line is read back, neither by the commit nor by the next fingerprint lookup (reading the
// whole file at every commit made a long sync quadratic). The file and the fingerprints must be
// exactly what the rewriting commit and a fresh index give.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { Chunk, DestinationMessage, DestinationStream, DocumentFingerprint } from '../../src/protocol/connector.ts';
import { chunkId, sha256 } from '../../src/protocol/identity.ts';
import { scratchDir, testContext } from '../../src/testing/context.ts';
import jsonl from './index.ts';

vi.mock('node:readline', async (importOriginal) => {
  const original = await importOriginal<typeof import('node:readline')>();
  return { ...original, createInterface: vi.fn(original.createInterface) };
});
const linesRead = () => vi.mocked(createInterface).mock.calls.length;

const streams: DestinationStream[] = [
  { name: 'notes', destinationSyncMode: 'append_dedup', primaryKey: [['id']] },
  { name: 'other', destinationSyncMode: 'append_dedup', primaryKey: [['id']] },
];
const chunks = (id: string, texts: string[]): Chunk[] =>
  texts.map((content, i) => ({
    id: chunkId(id, i),
    documentId: id,
    chunkIndex: i,
    content,
    contentHash: sha256(content),
    metadata: { n: i, title: `"${id}" é😀` },
    embedding: new Float32Array([i + 1, 0.5]),
  }));
const fingerprintOf = (id: string, k: number): DocumentFingerprint | undefined =>
  k % 4 === 3
    ? undefined
    : {
        content: sha256(id),
        metadata: sha256(`m${id}`),
        ...(k % 2 ? { embedder: 'hash//2' } : {}),
        ...(k % 3 ? { source: `v1:${k}` } : {}),
      };
const doc = (stream: string, id: string, k: number, texts = ['one', 'two'].slice(0, 1 + (k % 2))): DestinationMessage => {
  const fingerprint = fingerprintOf(id, k);
  return { type: 'DOCUMENT', stream, documentId: id, chunks: chunks(id, texts), record: { id }, ...(fingerprint ? { fingerprint } : {}) };
};
const state = (n: number): DestinationMessage => ({
  type: 'STATE',
  state: { type: 'STREAM', stream: { stream_descriptor: { name: 'notes' }, stream_state: { n } } },
  connection: { streams: { notes: { n } } },
});

// Batch 1 makes the file; batch 2 adds new documents (one without text, one in another stream);
// batch 3 replaces one and deletes one, which needs the rewrite.
const batches: DestinationMessage[][] = [
  [doc('notes', 'a', 0), doc('notes', 'b', 1), doc('notes', 'c', 3), state(1)],
  [doc('notes', 'd', 2), doc('notes', 'e', 5, []), doc('other', 'a', 1), doc('notes', 'f', 4), state(2)],
  [doc('notes', 'a', 7, ['new']), { type: 'DELETE', stream: 'notes', documentId: 'b' }, state(3)],
];
const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'missing'];

async function openWriter(file: string) {
  return jsonl.open(jsonl.spec.config.parse({ path: file }), testContext(), { streams, dimensions: 2 });
}
async function drain(writer: Awaited<ReturnType<typeof openWriter>>, input: AsyncIterable<DestinationMessage>) {
  const events = [];
  for await (const e of writer.write(input)) events.push(e);
  return events;
}

describe('destination-jsonl commits of new documents', () => {
  it('copy the file without reading a line and keep the index current; file, fingerprints and counts as with the rewrite', async () => {
    const dir = scratchDir('sluice-jsonl-commits-');
    const copied = join(dir, 'copied.jsonl');
    const rewritten = join(dir, 'rewritten.jsonl');

    // One writer, looking up fingerprints between batches as the engine does.
    const writer = await openWriter(copied);
    const looked: Map<string, DocumentFingerprint>[] = [];
    const readsBefore = linesRead();
    const events = await drain(
      writer,
      (async function* () {
        for (const [i, batch] of batches.entries()) {
          if (i === 2) expect(linesRead() - readsBefore).toBe(0); // batches 1 and 2 only added
          looked.push(await writer.fingerprints!('notes', ids));
          yield* batch;
        }
      })(),
    );
    expect(linesRead() - readsBefore).toBeGreaterThan(0); // batch 3 rewrote the file
    looked.push(await writer.fingerprints!('notes', ids));
    await writer.close();

    // The same batches, each through a writer of its own: every commit on an existing file rewrites it.
    const expected: Map<string, DocumentFingerprint>[] = [];
    const expectedEvents = [];
    for (const batch of batches) {
      const w = await openWriter(rewritten);
      expected.push(await w.fingerprints!('notes', ids));
      expectedEvents.push(
        ...(await drain(
          w,
          (async function* () {
            yield* batch;
          })(),
        )),
      );
      await w.close();
    }
    const fresh = await openWriter(rewritten);
    expected.push(await fresh.fingerprints!('notes', ids));
    await fresh.close();

    expect(readFileSync(copied, 'utf8')).toBe(readFileSync(rewritten, 'utf8'));
    expect(looked).toEqual(expected);
    expect(looked[2]!.get('d')).toEqual(fingerprintOf('d', 2));
    expect(looked[2]!.has('e')).toBe(false); // no text, no lines
    expect(events).toEqual(expectedEvents);
  });
});
