// destination-jsonl keeps fingerprints in its file: what the conformance kit cannot see from outside
// — a commit that changes nothing leaves the file itself alone (same inode and mtime), a
// metadata-only update keeps the stored vectors, and fingerprints survive a reopen.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Chunk, DestinationMessage, DestinationStream, DocumentFingerprint } from '../../src/protocol/connector.ts';
import { chunkId, sha256 } from '../../src/protocol/identity.ts';
import { scratchDir, testContext } from '../../src/testing/context.ts';
import { readJsonl } from '../../test/helpers/jsonl.ts';
import jsonl, { DOCUMENTS_BATCH } from './index.ts';

const fp = (content: string, metadata = 'm'): DocumentFingerprint => ({ content: sha256(content), metadata: sha256(metadata) });
const chunks = (id: string, texts: string[], meta: Record<string, unknown> = {}, vectors = true): Chunk[] =>
  texts.map((content, i) => ({
    id: chunkId(id, i),
    documentId: id,
    chunkIndex: i,
    content,
    contentHash: sha256(content),
    metadata: meta,
    ...(vectors ? { embedding: new Float32Array([i + 1, 0.5, 0.25]) } : {}),
  }));
const doc = (stream: string, id: string, texts: string[], meta: Record<string, unknown> = {}): DestinationMessage => ({
  type: 'DOCUMENT',
  stream,
  documentId: id,
  chunks: chunks(id, texts, meta),
  record: { id },
  fingerprint: fp(texts.join('|')),
});
const state = (n: number): DestinationMessage => ({
  type: 'STATE',
  state: { type: 'STREAM', stream: { stream_descriptor: { name: 's' }, stream_state: { n } } },
  connection: { streams: { s: { n } } },
});

async function write(file: string, streams: DestinationStream[], input: DestinationMessage[]) {
  const ctx = testContext();
  const writer = await jsonl.open(jsonl.spec.config.parse({ path: file }), ctx, { streams, dimensions: 3 });
  const events = [];
  for await (const e of writer.write(
    (async function* () {
      yield* input;
    })(),
  ))
    events.push(e);
  await writer.close();
  return events;
}
async function lookUp(file: string, streams: DestinationStream[], stream: string, ids: string[]) {
  const writer = await jsonl.open(jsonl.spec.config.parse({ path: file }), testContext(), { streams });
  try {
    return await writer.fingerprints!(stream, ids);
  } finally {
    await writer.close();
  }
}
const identity = (file: string) => {
  const s = statSync(file, { bigint: true });
  return { ino: s.ino, mtimeNs: s.mtimeNs, size: s.size };
};

describe('destination-jsonl fingerprints', () => {
  const overwrite: DestinationStream[] = [{ name: 'docs', destinationSyncMode: 'overwrite', primaryKey: [['id']] }];
  const dedup: DestinationStream[] = [{ name: 'notes', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }];

  it('an overwrite of KEEPs only rewrites nothing: same inode, mtime and bytes', async () => {
    const file = join(scratchDir('sluice-jsonl-fp-'), 'out.jsonl');
    await write(file, overwrite, [
      doc('docs', 'a', ['alpha', 'alpha 2']),
      doc('docs', 'b', ['beta']),
      { type: 'STREAM_COMPLETE', stream: 'docs' },
      state(1),
    ]);
    const before = identity(file);
    const bytes = readJsonl(file);
    await new Promise((r) => setTimeout(r, 20)); // a rewrite would show in mtime
    const events = await write(file, overwrite, [
      { type: 'KEEP', stream: 'docs', documentId: 'a' },
      { type: 'KEEP', stream: 'docs', documentId: 'b' },
      { type: 'STREAM_COMPLETE', stream: 'docs' },
      state(2),
    ]);
    expect(identity(file)).toEqual(before);
    expect(readJsonl(file)).toEqual(bytes);
    expect(events.filter((e) => e.type === 'WRITTEN').reduce((n, e) => n + (e.type === 'WRITTEN' ? e.chunksWritten : 0), 0)).toBe(0);
    // No staging file is left behind.
    expect(() => statSync(`${file}.docs.next`)).toThrow();

    // KEEP of one document only: the other is dropped, the kept lines are carried over as they were.
    await write(file, overwrite, [
      { type: 'KEEP', stream: 'docs', documentId: 'a' },
      { type: 'STREAM_COMPLETE', stream: 'docs' },
      state(3),
    ]);
    expect(readJsonl(file)).toEqual(bytes.filter((l) => l.document_id === 'a'));
    expect(identity(file).ino).not.toBe(before.ino);
  });

  it('a DELETE of a document that is not there, and a document with no chunks, leave the file alone', async () => {
    const file = join(scratchDir('sluice-jsonl-fp-'), 'out.jsonl');
    await write(file, dedup, [doc('notes', 'n1', ['one']), state(1)]);
    const before = identity(file);
    await new Promise((r) => setTimeout(r, 20));
    await write(file, dedup, [{ type: 'DELETE', stream: 'notes', documentId: 'missing' }, doc('notes', 'empty', []), state(2)]);
    expect(identity(file)).toEqual(before);
    await write(file, dedup, [{ type: 'DELETE', stream: 'notes', documentId: 'n1' }, state(3)]);
    expect(readJsonl(file)).toEqual([]);
  });

  it('stores the fingerprint on every line; a metadata-only update keeps text and vectors; a reopen sees it all', async () => {
    const file = join(scratchDir('sluice-jsonl-fp-'), 'out.jsonl');
    await write(file, dedup, [doc('notes', 'd', ['first text', 'second text'], { title: 'old' }), state(1)]);
    const stored = readJsonl(file);
    expect(stored.map((l) => l.fingerprint)).toEqual([fp('first text|second text'), fp('first text|second text')]);
    expect(await lookUp(file, dedup, 'notes', ['d', 'other'])).toEqual(new Map([['d', fp('first text|second text')]]));

    // The engine sends the chunks with their text, without vectors, and the new metadata.
    const update: DestinationMessage = {
      type: 'DOCUMENT',
      stream: 'notes',
      documentId: 'd',
      chunks: chunks('d', ['first text', 'second text'], { title: 'new' }, false),
      record: { id: 'd' },
      fingerprint: fp('first text|second text', 'new'),
      metadataOnly: true,
    };
    await write(file, dedup, [update, state(2)]);
    const after = readJsonl(file);
    expect(after.map((l) => [l.content, l.embedding, l.metadata])).toEqual([
      ['first text', [1, 0.5, 0.25], { title: 'new' }],
      ['second text', [2, 0.5, 0.25], { title: 'new' }],
    ]);
    expect(await lookUp(file, dedup, 'notes', ['d'])).toEqual(new Map([['d', fp('first text|second text', 'new')]]));
    const listed = [];
    for await (const d of jsonl.documents!(jsonl.spec.config.parse({ path: file }), testContext(), 'notes')) listed.push(d);
    expect(listed).toEqual([{ documentId: 'd', chunks: 2, fingerprint: fp('first text|second text', 'new') }]);

    // Rewritten without a fingerprint: the old one must not linger.
    await write(file, dedup, [{ ...doc('notes', 'd', ['third text']), fingerprint: undefined } as DestinationMessage, state(3)]);
    expect(await lookUp(file, dedup, 'notes', ['d'])).toEqual(new Map());
  });

  it('documentBatches() hands out the documents() listing in arrays of at most DOCUMENTS_BATCH', async () => {
    const file = join(scratchDir('sluice-jsonl-fp-'), 'out.jsonl');
    const n = DOCUMENTS_BATCH * 2 + 7;
    const input: DestinationMessage[] = [];
    for (let i = 0; i < n; i++) input.push(doc('notes', `d${i}`, i % 3 ? ['one'] : ['one', 'two']));
    input.push(doc('other', 'x', ['elsewhere']), state(1));
    await write(file, [...dedup, { name: 'other', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }], input);
    const config = jsonl.spec.config.parse({ path: file });
    const sizes: number[] = [];
    const batched = [];
    for await (const batch of jsonl.documentBatches!(config, testContext(), 'notes')) {
      sizes.push(batch.length);
      batched.push(...batch);
    }
    expect(sizes).toEqual([DOCUMENTS_BATCH, DOCUMENTS_BATCH, 7]);
    const listed = [];
    for await (const d of jsonl.documents!(config, testContext(), 'notes')) listed.push(d);
    expect(batched).toEqual(listed);
    expect(batched[0]).toEqual({ documentId: 'd0', chunks: 2, fingerprint: fp('one|two') });
    expect(batched[1]).toEqual({ documentId: 'd1', chunks: 1, fingerprint: fp('one') });
    // A missing file lists nothing.
    const none = [];
    for await (const b of jsonl.documentBatches!(jsonl.spec.config.parse({ path: `${file}.missing` }), testContext(), 'notes'))
      none.push(b);
    expect(none).toEqual([]);
  });
});
