// Document fingerprints in the Pinecone destination (docs/fingerprints.md), writer level, through the
// real client against the fixture (requests and responses validated against Pinecone's OpenAPI
// documents, the service's limits enforced).
import { afterEach, describe, expect, it } from 'vitest';
import { startPineconeFixture, type PineconeFixture } from '../../test/fixtures/pinecone-server.ts';
import type { DestinationMessage, DestinationStream, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import destination from './index.ts';
import { PineconeConfigSchema, type PineconeConfig } from './config.ts';
import { MAX_FETCH_QUERY_BYTES, fetchGroups } from './store.ts';
import { captureContext, documentMessage, drain, stateMessage, vectorFor, written } from './test-helpers.ts';
import { useFixture } from '../../test/helpers/use-fixture.ts';

const DIM = 8;
let fx: PineconeFixture;
let indexCounter = 0;

useFixture(startPineconeFixture, (f) => (fx = f));
afterEach(() => {
  // (clearing a namespace that does not exist answers 404, which the writer expects)
  expect(fx.requests.filter((r) => r.status >= 400 && !(r.status === 404 && r.path === '/vectors/delete'))).toEqual([]);
  fx.requests.length = 0;
});

async function freshIndex(): Promise<string> {
  const name = `fp-${++indexCounter}`;
  await fx.createIndex(name, DIM);
  return name;
}
const cfg = (index: string): PineconeConfig =>
  PineconeConfigSchema.parse({ api_key: fx.apiKey, index, controller_host: fx.controllerUrl, retry_initial_delay_ms: 5 });
const streams = (mode: DestinationSyncMode): DestinationStream[] => [{ name: 'docs', destinationSyncMode: mode, primaryKey: [['id']] }];
const open = (index: string, mode: DestinationSyncMode, ctx = captureContext()) =>
  destination.open(cfg(index), ctx, { streams: streams(mode), dimensions: DIM });

const fp = (content: string, metadata = 'm1'): DocumentFingerprint => ({ content: `c-${content}`, metadata: `m-${metadata}` });
function fdoc(id: string, texts: string[], metadata: Record<string, unknown> = {}, mfp = 'm1'): DestinationMessage {
  return {
    ...(documentMessage('docs', id, texts, DIM, metadata) as DestinationMessage & { type: 'DOCUMENT' }),
    fingerprint: fp(texts.join('|'), mfp),
  };
}
function metaOnly(id: string, texts: string[], metadata: Record<string, unknown>, mfp: string): DestinationMessage {
  const d = documentMessage('docs', id, texts, DIM, metadata) as DestinationMessage & { type: 'DOCUMENT' };
  return { ...d, chunks: d.chunks.map(({ embedding: _e, ...c }) => c), fingerprint: fp(texts.join('|'), mfp), metadataOnly: true };
}
const keep = (documentId: string): DestinationMessage => ({ type: 'KEEP', stream: 'docs', documentId });
const complete: DestinationMessage = { type: 'STREAM_COMPLETE', stream: 'docs' };

/** Data-plane requests since `from`, as "METHOD /path". */
const requestsSince = (index: string, from: number) =>
  fx.requests
    .slice(from)
    .filter((r) => r.index === index)
    .map((r) => `${r.method} ${r.path}`);
const WRITES = /upsert|delete|update/;

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('pinecone fingerprints', () => {
  it('fetch splitting: at most 1,000 ids and 16 KiB of query string per request, in order', () => {
    const short = Array.from({ length: 2500 }, (_, i) => `${i}#0`);
    expect(fetchGroups(short).map((g) => g.length)).toEqual([1000, 1000, 500]);
    const long = Array.from({ length: 100 }, (_, i) => `${'x'.repeat(500)}${i}#0`);
    const groups = fetchGroups(long);
    expect(groups.flat()).toEqual(long);
    for (const g of groups)
      expect(g.reduce((n, id) => n + 5 + encodeURIComponent(id).length, 0)).toBeLessThanOrEqual(MAX_FETCH_QUERY_BYTES);
    expect(groups.length).toBe(Math.ceil(100 / Math.floor(MAX_FETCH_QUERY_BYTES / (5 + encodeURIComponent(long[99]).length))));
  });

  it('chunk 0 carries the fingerprint; fingerprints() of 1,000 documents is one fetch', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'append_dedup'), [
      fdoc('a', ['a0', 'a1'], { title: 'A' }),
      fdoc('b', ['b0']),
      documentMessage('docs', 'legacy', ['l'], DIM),
      stateMessage('docs', 1),
    ]);
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).toMatchObject({
      chunk_count: 2,
      _sluice_fp_content: 'c-a0|a1',
      _sluice_fp_metadata: 'm-m1',
      title: 'A',
    });
    expect(fx.vector(index, 'docs', 'a#1')!.metadata).not.toHaveProperty('_sluice_fp_content');
    // Search hits show the record's metadata, not sluice's bookkeeping.
    const hits = await destination.search!(cfg(index), captureContext(), { vector: vectorFor('a0', DIM), topK: 10, streams: ['docs'] });
    expect(hits.find((h) => h.documentId === 'a' && h.chunkIndex === 0)!.metadata).not.toHaveProperty('_sluice_fp_content');

    const writer = await open(index, 'append_dedup');
    const from = fx.requests.length;
    const ids = ['a', 'b', 'legacy', ...Array.from({ length: 997 }, (_, i) => String(10_000 + i))];
    const found = await writer.fingerprints!('docs', ids);
    expect(Object.fromEntries(found)).toEqual({ a: fp('a0|a1'), b: fp('b0') });
    expect(requestsSince(index, from)).toEqual(['GET /vectors/fetch']);
    // Long ids: split by the request-head budget, so the server never answers 431.
    const long = Array.from({ length: 1000 }, (_, i) => `${'long-id-'.repeat(4)}${i}`);
    const start = fx.requests.length;
    expect((await writer.fingerprints!('docs', long)).size).toBe(0);
    expect(requestsSince(index, start)).toEqual(fetchGroups(long.map((d) => `${d}#0`)).map(() => 'GET /vectors/fetch'));
    expect(fetchGroups(long.map((d) => `${d}#0`)).length).toBe(3);
    // What the look-up learnt (chunk counts) saves the write its own look-up.
    const before = fx.requests.length;
    await drain(writer, [fdoc('a', ['a0 changed']), stateMessage('docs', 2)]);
    // Chunk 0 goes first without the fingerprint (so the tail delete after it never leaves the old
    // one on a shortened document); the second upsert adds the fingerprint, last.
    expect(requestsSince(index, before)).toEqual(['POST /vectors/upsert', 'POST /vectors/delete', 'POST /vectors/upsert']);
    expect(fx.ids(index, 'docs')).toEqual(['a#0', 'b#0', 'legacy#0']);
  });

  it('metadata only: updates by id, no upsert, no values sent; a removed field falls back to stored values, never the embedder', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'append_dedup'), [
      fdoc('a', ['a0', 'a1', 'a2'], { title: 'old', tag: 'x' }),
      fdoc('b', ['b0'], { title: 'b', tag: 'y' }),
      stateMessage('docs', 1),
    ]);
    const values = (id: string) => Array.from(fx.vector(index, 'docs', id)!.values);
    const before = new Map(['a#0', 'a#1', 'a#2', 'b#0'].map((id) => [id, values(id)]));
    let from = fx.requests.length;
    const events = await drain(await open(index, 'append_dedup'), [
      metaOnly('a', ['a0', 'a1', 'a2'], { title: 'new', tag: 'x' }, 'm2'),
      stateMessage('docs', 2),
    ]);
    const sent = requestsSince(index, from).filter((r) => WRITES.test(r));
    expect(sent).toEqual(['POST /vectors/update', 'POST /vectors/update', 'POST /vectors/update']);
    expect(written(events)).toMatchObject({ records: 1, chunksWritten: 3, chunksDeleted: 0 });
    for (const [id, v] of before) expect(values(id)).toEqual(v);
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).toMatchObject({
      title: 'new',
      tag: 'x',
      content: 'a0',
      chunk_count: 3,
      _sluice_fp_metadata: 'm-m2',
    });
    expect(fx.vector(index, 'docs', 'a#2')!.metadata).toMatchObject({ title: 'new', content: 'a2', chunk_index: 2 });

    // `tag` removed: Pinecone's update cannot drop a field, so the vectors are written again with their stored values.
    from = fx.requests.length;
    await drain(await open(index, 'append_dedup'), [metaOnly('b', ['b0'], { title: 'b2' }, 'm3'), stateMessage('docs', 3)]);
    expect(requestsSince(index, from).filter((r) => WRITES.test(r))).toEqual(['POST /vectors/upsert', 'POST /vectors/upsert']);
    expect(fx.vector(index, 'docs', 'b#0')!.metadata).toEqual({
      title: 'b2',
      stream: 'docs',
      document_id: 'b',
      chunk_index: 0,
      content: 'b0',
      chunk_count: 1,
      _sluice_fp_content: 'c-b0',
      _sluice_fp_metadata: 'm-m3',
    });
    expect(values('b#0')).toEqual(before.get('b#0'));
  });

  it('overwrite where every live document is kept: nothing written, no switch, states acknowledged', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'overwrite'), [fdoc('a', ['a0', 'a1']), fdoc('b', ['b0']), complete, stateMessage('docs', 1)]);
    const live = fx.namespaceNames(index).find((n) => n.startsWith('docs'))!;
    const from = fx.requests.length;
    const ctx = captureContext();
    const writer = await open(index, 'overwrite', ctx);
    expect(await writer.fingerprints!('docs', ['a', 'b'])).toEqual(
      new Map([
        ['a', fp('a0|a1')],
        ['b', fp('b0')],
      ]),
    );
    const events = await drain(writer, [keep('a'), stateMessage('docs', 2), keep('b'), complete, stateMessage('docs', 3)]);
    expect(events.filter((e) => e.type === 'STATE_COMMITTED')).toHaveLength(2);
    expect(requestsSince(index, from).filter((r) => WRITES.test(r))).toEqual([]);
    // The generation pointer, the fingerprints (which also give the chunk counts), the namespace's vector count.
    expect(requestsSince(index, from)).toEqual(['GET /vectors/fetch', 'GET /vectors/fetch', 'POST /describe_index_stats']);
    expect(fx.namespaceNames(index).filter((n) => n.startsWith('docs'))).toEqual([live]);
    expect(ctx.lines.some((l) => l.msg.includes('nothing written'))).toBe(true);
  });

  it('overwrite with kept, changed, metadata-only and vanished documents: kept vectors copied, then the switch', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'overwrite'), [
      fdoc('keep1', ['k0', 'k1', 'k2']),
      fdoc('keep2', ['k']),
      fdoc('meta', ['m0', 'm1'], { title: 'old' }),
      fdoc('change', ['old text']),
      fdoc('gone', ['g']),
      complete,
    ]);
    const first = fx.namespaceNames(index).find((n) => n.startsWith('docs'))!;
    const old = new Map(fx.ids(index, first).map((id) => [id, fx.vector(index, first, id)!]));
    const events = await drain(await open(index, 'overwrite'), [
      keep('keep1'),
      fdoc('change', ['new text']),
      metaOnly('meta', ['m0', 'm1'], { title: 'new' }, 'm2'),
      keep('keep2'),
      complete,
      stateMessage('docs', 1),
    ]);
    expect(events.filter((e) => e.type === 'STATE_COMMITTED')).toHaveLength(1);
    const now = fx.namespaceNames(index).filter((n) => n.startsWith('docs'));
    expect(now).toHaveLength(1);
    expect(now[0]).not.toBe(first);
    expect(fx.ids(index, now[0])).toEqual(['change#0', 'keep1#0', 'keep1#1', 'keep1#2', 'keep2#0', 'meta#0', 'meta#1']);
    for (const id of ['keep1#0', 'keep1#1', 'keep1#2', 'keep2#0', 'meta#0', 'meta#1']) {
      const v = fx.vector(index, now[0], id)!;
      expect(Array.from(v.values)).toEqual(Array.from(old.get(id)!.values));
      if (!id.startsWith('meta')) expect(v.metadata).toEqual(old.get(id)!.metadata);
    }
    expect(fx.vector(index, now[0], 'meta#0')!.metadata).toMatchObject({ title: 'new', _sluice_fp_metadata: 'm-m2', chunk_count: 2 });
    expect(fx.vector(index, now[0], 'meta#1')!.metadata).toMatchObject({ title: 'new', content: 'm1' });
  });

  it('overwrite whose KEEPs miss a live document switches to a generation without it', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'overwrite'), [fdoc('a', ['a']), fdoc('b', ['b']), complete]);
    const writer = await open(index, 'overwrite');
    await writer.fingerprints!('docs', ['a', 'b']);
    await drain(writer, [keep('a'), complete]);
    const now = fx.namespaceNames(index).filter((n) => n.startsWith('docs'));
    expect(now).toHaveLength(1);
    expect(fx.ids(index, now[0])).toEqual(['a#0']);
  });

  it('documents() lists every document of the current generation with fingerprint and chunk count, read-only', async () => {
    const index = await freshIndex();
    const many = Array.from({ length: 230 }, (_, i) => fdoc(`d${String(i).padStart(3, '0')}`, [`x${i}`, `y${i}`]));
    await drain(await open(index, 'overwrite'), [
      ...many,
      fdoc('a#1', ['tricky id']),
      documentMessage('docs', 'legacy', ['l0', 'l1', 'l2'], DIM),
      complete,
    ]);
    const from = fx.requests.length;
    const listed = await all(destination.documents!(cfg(index), captureContext(), 'docs'));
    expect(requestsSince(index, from).filter((r) => WRITES.test(r))).toEqual([]);
    const want: StoredDocument[] = [
      ...many.map((m) => ({
        documentId: (m as { documentId: string }).documentId,
        chunks: 2,
        fingerprint: (m as { fingerprint: DocumentFingerprint }).fingerprint,
      })),
      { documentId: 'a#1', chunks: 1, fingerprint: fp('tricky id') },
      { documentId: 'legacy', chunks: 3 },
    ];
    const byId = (x: StoredDocument, y: StoredDocument) => (x.documentId < y.documentId ? -1 : 1);
    expect(listed.sort(byId)).toEqual(want.sort(byId));
    expect(await all(destination.documents!(cfg(index), captureContext(), 'nothing'))).toEqual([]);
  });

  it('the embedder tag is stored beside the fingerprint and returned by fingerprints(), documents() and scanChunks(), not by search', async () => {
    const index = await freshIndex();
    const tagged = (id: string, texts: string[], embedder: string): DestinationMessage => {
      const d = fdoc(id, texts) as DestinationMessage & { type: 'DOCUMENT' };
      return { ...d, fingerprint: { ...d.fingerprint!, embedder } };
    };
    await drain(await open(index, 'append_dedup'), [
      tagged('a', ['a0', 'a1'], 'openai/text-embedding-3-small/8'),
      tagged('b', ['b0'], 'hash/sluice-hash-v1/8'),
      fdoc('old', ['o0']), // stored before the tag was kept
      stateMessage('docs', 1),
    ]);
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).toMatchObject({ _sluice_fp_embedder: 'openai/text-embedding-3-small/8' });
    expect(fx.vector(index, 'docs', 'a#1')!.metadata).not.toHaveProperty('_sluice_fp_embedder'); // chunk 0 only
    const writer = await open(index, 'append_dedup');
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'b', 'old']))).toEqual({
      a: { ...fp('a0|a1'), embedder: 'openai/text-embedding-3-small/8' },
      b: { ...fp('b0'), embedder: 'hash/sluice-hash-v1/8' },
      old: fp('o0'),
    });
    await writer.close();
    const docs = await all(destination.documents!(cfg(index), captureContext(), 'docs'));
    expect(Object.fromEntries(docs.map((d) => [d.documentId, d.fingerprint?.embedder]))).toEqual({
      a: 'openai/text-embedding-3-small/8',
      b: 'hash/sluice-hash-v1/8',
      old: undefined,
    });
    const scanned = await all(destination.scanChunks!(cfg(index), captureContext(), 'docs'));
    expect(scanned.find((c) => c.id === 'b#0')!.fingerprint).toEqual({ ...fp('b0'), embedder: 'hash/sluice-hash-v1/8' });
    const hits = await destination.search!(cfg(index), captureContext(), { vector: vectorFor('a0', DIM), topK: 5, streams: ['docs'] });
    expect(hits.length).toBeGreaterThan(0);
    for (const h of hits) expect(Object.keys(h.metadata).filter((k) => k.startsWith('_sluice_fp'))).toEqual([]);
  });

  it('a crash right after the stale tail is deleted leaves no previous fingerprint: a source gone back to the stored version is rewritten, not skipped', async () => {
    const index = await freshIndex();
    const original = [fdoc('a', ['a0', 'a1', 'a2']), fdoc('d', ['d0', 'd1']), stateMessage('docs', 1)];
    await drain(await open(index, 'append_dedup'), original);
    // The run "dies" once the tail deletes of the flush were acknowledged: every request after them fails.
    let tailGone = false;
    fx.setFaults({
      failWhen: (operation, body) => {
        if (tailGone) return true;
        const ids = (body as { ids?: string[] } | undefined)?.ids ?? [];
        if (operation === 'POST /vectors/delete' && ids.includes('a#1')) tailGone = true;
        return false;
      },
    });
    const from = fx.requests.length;
    const failed = drain(await open(index, 'append_dedup'), [
      fdoc('a', ['a0 short']), // shortened: a#1, a#2 are the stale tail
      { type: 'DELETE', stream: 'docs', documentId: 'd' },
      stateMessage('docs', 2),
    ]);
    await expect(failed).rejects.toThrow(/refused/);
    fx.setFaults({});
    expect(tailGone).toBe(true);
    fx.requests.splice(from);
    expect(fx.ids(index, 'docs')).toEqual(['a#0', 'd#0']); // both tails gone, chunk 0 of each still there
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).toMatchObject({ chunk_count: 3 }); // still covers the old tail
    // Neither carries its previous fingerprint any more: the source going back to exactly the stored
    // version (a0|a1|a2, d0|d1) is not taken for unchanged.
    let writer = await open(index, 'append_dedup');
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'd']))).toEqual({});
    await writer.close();
    await drain(await open(index, 'append_dedup'), original);
    expect(fx.ids(index, 'docs')).toEqual(['a#0', 'a#1', 'a#2', 'd#0', 'd#1']);
    writer = await open(index, 'append_dedup');
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'd']))).toEqual({ a: fp('a0|a1|a2'), d: fp('d0|d1') });
    await writer.close();
  });

  it('the fingerprint is written last: a flush whose last phase fails leaves documents unfingerprinted, and the next run rewrites them exactly', async () => {
    const index = await freshIndex();
    await drain(await open(index, 'append_dedup'), [
      fdoc('a', ['a0', 'a1', 'a2'], { title: 'A' }),
      fdoc('b', ['b0', 'b1'], { title: 'B' }),
      stateMessage('docs', 1),
    ]);
    // Only what carries a fingerprint is refused: the final upsert of chunk 0 and chunk 0's metadata update.
    const carriesFingerprint = (operation: string, body: unknown) => {
      const b = body as { vectors?: Array<{ metadata?: object }>; setMetadata?: object };
      if (operation === 'POST /vectors/upsert') return (b.vectors ?? []).some((v) => !!v.metadata && '_sluice_fp_content' in v.metadata);
      return operation === 'POST /vectors/update' && !!b.setMetadata && '_sluice_fp_content' in b.setMetadata;
    };
    fx.setFaults({ failWhen: carriesFingerprint });
    const from = fx.requests.length;
    const failed = drain(await open(index, 'append_dedup'), [
      fdoc('a', ['a0 new', 'a1 new', 'a2 new', 'a3 new'], { title: 'A' }), // changed and grown: chunk 3 goes in phase D
      metaOnly('b', ['b0', 'b1'], { title: 'B2' }, 'm2'),
      stateMessage('docs', 2),
    ]);
    await expect(failed).rejects.toThrow(/refused/);
    fx.setFaults({});
    const refused = fx.requests.slice(from).filter((r) => r.injected);
    expect(refused.map((r) => r.path).sort()).toEqual(['/vectors/update', '/vectors/upsert']);
    fx.requests.splice(from); // the refusals were the point; afterEach checks the rest

    // Everything else landed (all chunks of a, b's other chunk), but no fingerprint says so: the
    // look-up finds none, so neither document would be skipped as unchanged.
    const content = (id: string) => fx.vector(index, 'docs', id)?.metadata?.content;
    expect(['a#0', 'a#1', 'a#2', 'a#3'].map(content)).toEqual(['a0 new', 'a1 new', 'a2 new', 'a3 new']);
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).toMatchObject({ chunk_count: 4 });
    expect(fx.vector(index, 'docs', 'a#0')!.metadata).not.toHaveProperty('_sluice_fp_content');
    expect(fx.vector(index, 'docs', 'b#1')!.metadata).toMatchObject({ title: 'B2' });
    let writer = await open(index, 'append_dedup');
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'b']))).toEqual({ b: fp('b0|b1') }); // b: the OLD fingerprint, so b is updated again
    await writer.close();

    // The next run ends exact, with the fingerprints.
    writer = await open(index, 'append_dedup');
    await drain(writer, [
      fdoc('a', ['a0 new', 'a1 new', 'a2 new', 'a3 new'], { title: 'A' }),
      metaOnly('b', ['b0', 'b1'], { title: 'B2' }, 'm2'),
      stateMessage('docs', 2),
    ]);
    expect(fx.ids(index, 'docs')).toEqual(['a#0', 'a#1', 'a#2', 'a#3', 'b#0', 'b#1']);
    expect(fx.vector(index, 'docs', 'b#0')!.metadata).toMatchObject({ title: 'B2', _sluice_fp_metadata: 'm-m2' });
    writer = await open(index, 'append_dedup');
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'b']))).toEqual({
      a: fp('a0 new|a1 new|a2 new|a3 new'),
      b: fp('b0|b1', 'm2'),
    });
    await writer.close();
  });
});
