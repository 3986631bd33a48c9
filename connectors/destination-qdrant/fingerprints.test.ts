// Document fingerprints in the Qdrant destination (docs/fingerprints.md), writer level, against the
// Qdrant fixture (every request and response validated against Qdrant's OpenAPI document).
import { afterEach, describe, expect, it } from 'vitest';
import { startQdrantFixture, type QdrantFixture } from '../../test/fixtures/qdrant-server.ts';
import { chunkUuid } from '../../src/protocol/identity.ts';
import type { DestinationMessage, DocumentFingerprint, StoredDocument } from '../../src/protocol/connector.ts';
import destination from './index.ts';
import { committedPositions, complete, DIMS, doc, drain, qdrantConfig, state, streams, testContext } from './test-helpers.ts';
import { useFixture } from '../../test/helpers/use-fixture.ts';

let fx: QdrantFixture;
useFixture(startQdrantFixture, (f) => (fx = f));
afterEach(() => {
  expect(fx.log.filter((l) => l.status >= 400)).toEqual([]);
  fx.log.length = 0;
});

const fp = (content: string, metadata = 'm1'): DocumentFingerprint => ({ content: `c-${content}`, metadata: `m-${metadata}` });

/** A DOCUMENT carrying its fingerprint, as the engine sends it to a writer with fingerprints(). */
function fdoc(stream: string, id: string, texts: string[], metadata: Record<string, unknown> = {}, mfp = 'm1'): DestinationMessage {
  return { ...(doc(stream, id, texts, metadata) as DestinationMessage & { type: 'DOCUMENT' }), fingerprint: fp(texts.join('|'), mfp) };
}

/** A metadata-only DOCUMENT: same chunk ids and count, no embeddings. */
function metaOnly(stream: string, id: string, texts: string[], metadata: Record<string, unknown>, mfp: string): DestinationMessage {
  const d = doc(stream, id, texts, metadata) as DestinationMessage & { type: 'DOCUMENT' };
  return {
    ...d,
    chunks: d.chunks.map(({ embedding: _e, ...c }) => c),
    fingerprint: fp(texts.join('|'), mfp),
    metadataOnly: true,
  };
}

const keep = (stream: string, documentId: string): DestinationMessage => ({ type: 'KEEP', stream, documentId });

/** Requests that change data (anything but reads). */
const writes = () =>
  fx.log
    .filter((l) => !l.operation.startsWith('GET'))
    .filter((l) => !/points\/(scroll|count|query|search)$|\/points$/.test(l.operation) || l.operation.startsWith('PUT'))
    .map((l) => l.operation);

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('qdrant fingerprints', () => {
  it('stores the fingerprint and chunk count with every point; fingerprints() reads a batch in one request', async () => {
    const config = qdrantConfig(fx.url, 'fp_store');
    const opts = { streams: streams('append_dedup', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a0', 'a1'], { title: 'A' }),
      fdoc('docs', 'b', ['b0']),
      doc('docs', 'legacy', ['written before fingerprints']),
      state('docs', 1),
    ]);
    const a1 = fx.pointsOf('fp_store').find((p) => p.id === chunkUuid('docs', 'a', 1))!;
    expect(a1.payload).toMatchObject({ title: 'A', _sluice_fp_content: 'c-a0|a1', _sluice_fp_metadata: 'm-m1', _sluice_chunk_count: 2 });

    const writer = await destination.open(config, testContext(), opts);
    fx.log.length = 0;
    const found = await writer.fingerprints!('docs', ['a', 'b', 'legacy', 'missing']);
    await writer.close();
    expect(Object.fromEntries(found)).toEqual({ a: fp('a0|a1'), b: fp('b0') });
    expect(fx.log.map((l) => l.operation)).toEqual(['POST /collections/{collection_name}/points']); // one retrieve, by chunk-0 point id
    expect(fx.log[0].bytes).toBeLessThan(400); // ids only: no vectors asked for
  });

  it('metadata only: one batch payload update, no vector upsert; keys removed from the metadata go', async () => {
    const config = qdrantConfig(fx.url, 'fp_meta');
    const opts = { streams: streams('append_dedup', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a0', 'a1', 'a2'], { title: 'old', tag: 'x' }),
      fdoc('docs', 'b', ['b0'], { title: 'b' }),
      state('docs', 1),
    ]);
    const before = new Map(fx.pointsOf('fp_meta').map((p) => [String(p.id), p.vector]));
    fx.log.length = 0;
    const events = await drain(await destination.open(config, testContext(), opts), [
      metaOnly('docs', 'a', ['a0', 'a1', 'a2'], { title: 'new' }, 'm2'),
      state('docs', 2),
    ]);
    expect(committedPositions(events)).toEqual([2]);
    // The stored fingerprint cleared, then payloads (chunk 0's without the fingerprint), then the fingerprint of chunk 0.
    expect(writes()).toEqual([
      'POST /collections/{collection_name}/points/batch',
      'POST /collections/{collection_name}/points/batch',
      'POST /collections/{collection_name}/points/batch',
    ]);
    const points = fx.pointsOf('fp_meta');
    expect(points).toHaveLength(4);
    for (const p of points) expect(p.vector).toEqual(before.get(String(p.id))); // vectors untouched
    const a = points
      .filter((p) => p.payload.document_id === 'a')
      .sort((x, y) => Number(x.payload.chunk_index) - Number(y.payload.chunk_index));
    expect(a.map((p) => p.payload)).toEqual(
      ['a0', 'a1', 'a2'].map((content, i) => ({
        title: 'new',
        document_id: 'a',
        chunk_index: i,
        stream: 'docs',
        content,
        _sluice_fp_content: 'c-a0|a1|a2',
        _sluice_fp_metadata: 'm-m2',
        _sluice_chunk_count: 3,
      })),
    );
    expect(points.find((p) => p.payload.document_id === 'b')!.payload.title).toBe('b');
  });

  it('overwrite where every live document is kept: nothing created, written or switched; states acknowledged', async () => {
    const config = qdrantConfig(fx.url, 'fp_ow');
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a0', 'a1']),
      fdoc('docs', 'b', ['b0']),
      complete('docs'),
      state('docs', 1),
    ]);
    expect(fx.aliases.get('fp_ow')).toBe('fp_ow_1');
    fx.log.length = 0;
    const logs: string[] = [];
    const events = await drain(await destination.open(config, testContext(logs), opts), [
      keep('docs', 'a'),
      state('docs', 2),
      keep('docs', 'b'),
      complete('docs'),
      state('docs', 3),
    ]);
    expect(committedPositions(events)).toEqual([2, 3]);
    expect(writes()).toEqual([]);
    expect(fx.log.map((l) => l.operation)).toEqual([
      'GET /collections',
      'GET /aliases',
      'GET /collections/{collection_name}',
      'POST /collections/{collection_name}/points/count',
    ]);
    expect([...fx.collections.keys()].filter((n) => n.startsWith('fp_ow'))).toEqual(['fp_ow_1']);
    expect(fx.aliases.get('fp_ow')).toBe('fp_ow_1');
    expect(logs.some((l) => l.includes('nothing written'))).toBe(true);
  });

  it('overwrite with kept, changed, metadata-only and vanished documents: kept ones are copied with their vectors, then the switch', async () => {
    const config = qdrantConfig(fx.url, 'fp_ow2', { batch_points: 2 });
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'keep1', ['k0', 'k1', 'k2']),
      fdoc('docs', 'keep2', ['k']),
      fdoc('docs', 'meta', ['m0', 'm1'], { title: 'old' }),
      fdoc('docs', 'change', ['old text']),
      fdoc('docs', 'gone', ['g']),
      complete('docs'),
    ]);
    const old = new Map(fx.pointsOf('fp_ow2').map((p) => [String(p.id), p]));
    const events = await drain(await destination.open(config, testContext(), opts), [
      keep('docs', 'keep1'),
      fdoc('docs', 'change', ['new text']),
      metaOnly('docs', 'meta', ['m0', 'm1'], { title: 'new' }, 'm2'),
      keep('docs', 'keep2'),
      complete('docs'),
      state('docs', 1),
    ]);
    expect(committedPositions(events)).toEqual([1]);
    expect(fx.aliases.get('fp_ow2')).toBe('fp_ow2_2');
    expect(fx.collections.has('fp_ow2_1')).toBe(false);
    const now = fx.pointsOf('fp_ow2');
    expect(now.map((p) => `${p.payload.document_id}|${p.payload.chunk_index}|${p.payload.content}`).sort()).toEqual([
      'change|0|new text',
      'keep1|0|k0',
      'keep1|1|k1',
      'keep1|2|k2',
      'keep2|0|k',
      'meta|0|m0',
      'meta|1|m1',
    ]);
    for (const p of now.filter((p) => p.payload.document_id !== 'change')) {
      // The same vector (Qdrant re-normalises cosine vectors on upsert: equal up to float rounding).
      const was = old.get(String(p.id))!.vector;
      expect(Math.max(...p.vector.map((x, i) => Math.abs(x - was[i])))).toBeLessThan(1e-12);
      if (p.payload.document_id !== 'meta') expect(p.payload).toEqual(old.get(String(p.id))!.payload);
    }
    expect(now.filter((p) => p.payload.document_id === 'meta').map((p) => [p.payload.title, p.payload._sluice_fp_metadata])).toEqual([
      ['new', 'm-m2'],
      ['new', 'm-m2'],
    ]);
    const written = events.filter((e) => e.type === 'WRITTEN').reduce((n, e) => n + (e as { chunksWritten: number }).chunksWritten, 0);
    expect(written).toBe(7);
  });

  it('overwrite whose KEEPs miss a live document switches to a generation without it', async () => {
    const config = qdrantConfig(fx.url, 'fp_ow3');
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a']),
      fdoc('docs', 'b', ['b']),
      complete('docs'),
    ]);
    await drain(await destination.open(config, testContext(), opts), [keep('docs', 'a'), keep('docs', 'a'), complete('docs')]);
    expect(fx.aliases.get('fp_ow3')).toBe('fp_ow3_2');
    expect(fx.pointsOf('fp_ow3').map((p) => p.payload.document_id)).toEqual(['a']);
  });

  it('a KEEP of a document the live generation lacks stops the sync before the switch', async () => {
    const config = qdrantConfig(fx.url, 'fp_ow5');
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [fdoc('docs', 'a', ['a']), complete('docs')]);
    const err = await drain(await destination.open(config, testContext(), opts), [
      keep('docs', 'a'),
      keep('docs', 'ghost'),
      fdoc('docs', 'b', ['b']),
      complete('docs'),
    ]).catch((e: unknown) => e);
    expect(String((err as Error).message)).toContain(
      'document "ghost" of stream docs was kept as unchanged but is not in Qdrant collection fp_ow5_1',
    );
    expect(fx.aliases.get('fp_ow5')).toBe('fp_ow5_1');
    expect(fx.pointsOf('fp_ow5').map((p) => p.payload.document_id)).toEqual(['a']);
  });

  it('an overwrite of kept documents that never completes writes nothing and acknowledges nothing', async () => {
    const config = qdrantConfig(fx.url, 'fp_ow4');
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [fdoc('docs', 'a', ['a']), complete('docs')]);
    fx.log.length = 0;
    const events = await drain(await destination.open(config, testContext(), opts), [keep('docs', 'a'), state('docs', 1)]);
    expect(committedPositions(events)).toEqual([]);
    expect(writes()).toEqual([]);
    expect([...fx.collections.keys()].filter((n) => n.startsWith('fp_ow4'))).toEqual(['fp_ow4_1']);
  });

  it('documents() lists every stored document of a stream with fingerprint and chunk count, read-only', async () => {
    const config = qdrantConfig(fx.url, 'fp_list');
    await drain(await destination.open(config, testContext(), { streams: streams('append_dedup', 'docs', 'other'), dimensions: DIMS }), [
      fdoc('docs', 'a', ['a0', 'a1', 'a2']),
      fdoc('docs', 'b', ['b0']),
      doc('docs', 'legacy', ['l0', 'l1']),
      fdoc('other', 'a', ['not this stream']),
      fdoc('docs', 'shrunk', ['s0', 's1', 's2']),
      state('docs', 1),
    ]);
    await drain(await destination.open(config, testContext(), { streams: streams('append_dedup', 'docs'), dimensions: DIMS }), [
      fdoc('docs', 'shrunk', ['s0']),
      state('docs', 2),
    ]);
    fx.log.length = 0;
    const listed = (await all(destination.documents!(config, testContext(), 'docs'))).sort((x, y) =>
      x.documentId.localeCompare(y.documentId),
    );
    const want: StoredDocument[] = [
      { documentId: 'a', chunks: 3, fingerprint: fp('a0|a1|a2') },
      { documentId: 'b', chunks: 1, fingerprint: fp('b0') },
      { documentId: 'legacy', chunks: 2 },
      { documentId: 'shrunk', chunks: 1, fingerprint: fp('s0') },
    ];
    expect(listed).toEqual(want);
    expect(writes()).toEqual([]);
    expect(await all(destination.documents!(qdrantConfig(fx.url, 'fp_nothing_here'), testContext(), 'docs'))).toEqual([]);
  });

  it('the fingerprint is written last: a flush whose fingerprint step fails leaves documents unfingerprinted, and the next run rewrites them exactly', async () => {
    const config = qdrantConfig(fx.url, 'fp_last');
    const opts = { streams: streams('append_dedup', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a0', 'a1', 'a2'], { title: 'A' }),
      fdoc('docs', 'b', ['b0', 'b1'], { title: 'B' }),
      state('docs', 1),
    ]);
    // The flush's last request, and only it, is refused: the set_payload batch carrying the fingerprints.
    const fingerprintStep = (operation: string, body: unknown) =>
      operation === 'POST /collections/{collection_name}/points/batch' &&
      ((body as { operations?: object[] }).operations ?? []).some((o) => 'set_payload' in o);
    fx.setFaults({ failWhen: fingerprintStep });
    const changed = [
      fdoc('docs', 'a', ['a0 new', 'a1 new'], { title: 'A' }), // changed and shrunk: chunk 2 is stale
      metaOnly('docs', 'b', ['b0', 'b1'], { title: 'B2' }, 'm2'),
    ];
    const failed = drain(await destination.open(config, testContext(), opts), [...changed, state('docs', 2)]);
    await expect(failed).rejects.toThrow(/refused/);
    fx.setFaults(undefined);
    expect(fx.log.filter((l) => l.status >= 400).map((l) => l.operation)).toEqual(['POST /collections/{collection_name}/points/batch']);

    // Everything else of the flush landed (new chunks, stale chunk deleted, payloads) — but no
    // fingerprint says so: the look-up finds none, so the engine would not skip either document.
    const contents = () =>
      fx
        .pointsOf('fp_last')
        .map((p) => `${p.payload.document_id}#${p.payload.chunk_index}:${p.payload.content}:${p.payload.title}`)
        .sort();
    expect(contents()).toEqual(['a#0:a0 new:A', 'a#1:a1 new:A', 'b#0:b0:B2', 'b#1:b1:B2']);
    let writer = await destination.open(config, testContext(), opts);
    expect((await writer.fingerprints!('docs', ['a', 'b'])).size).toBe(0);
    await writer.close();
    const head = fx.pointsOf('fp_last').find((p) => p.id === chunkUuid('docs', 'a', 0))!;
    expect(head.payload).not.toHaveProperty('_sluice_fp_content');
    expect(head.payload).toMatchObject({ _sluice_chunk_count: 2 }); // the count is written with the chunks

    // The next run (no fingerprint stored: full documents) ends exact, fingerprints last.
    fx.log.length = 0;
    writer = await destination.open(config, testContext(), opts);
    const events = await drain(writer, [
      fdoc('docs', 'a', ['a0 new', 'a1 new'], { title: 'A' }),
      fdoc('docs', 'b', ['b0', 'b1'], { title: 'B2' }, 'm2'),
      state('docs', 2),
    ]);
    expect(committedPositions(events)).toEqual([2]);
    expect(writes().at(-1)).toBe('POST /collections/{collection_name}/points/batch');
    expect(contents()).toEqual(['a#0:a0 new:A', 'a#1:a1 new:A', 'b#0:b0:B2', 'b#1:b1:B2']);
    writer = await destination.open(config, testContext(), opts);
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'b']))).toEqual({ a: fp('a0 new|a1 new'), b: fp('b0|b1', 'm2') });
    await writer.close();
  });

  it('the previous fingerprint is cleared first: a crash after part of a rewrite leaves no fingerprint, so a source back at the stored version is not skipped', async () => {
    // One point per upsert request, so a rewrite can land in part.
    const config = qdrantConfig(fx.url, 'fp_first', { batch_points: 1 });
    const opts = { streams: streams('append_dedup', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [fdoc('docs', 'a', ['a0', 'a1', 'a2']), state('docs', 1)]);
    let writer = await destination.open(config, testContext(), opts);
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a']))).toEqual({ a: fp('a0|a1|a2') });
    await writer.close();

    // The rewrite's upsert of chunk 0 is refused (the crash): chunks 1 and 2 of the new version landed.
    const head = chunkUuid('docs', 'a', 0);
    fx.setFaults({
      failWhen: (operation, body) =>
        operation === 'PUT /collections/{collection_name}/points' &&
        ((body as { points?: { id: string }[] }).points ?? []).some((p) => p.id === head),
    });
    fx.log.length = 0;
    const failed = drain(await destination.open(config, testContext(), opts), [fdoc('docs', 'a', ['x0', 'x1', 'x2']), state('docs', 2)]);
    await expect(failed).rejects.toThrow(/refused/);
    fx.setFaults(undefined);
    const ops = fx.log.map((l) => l.operation);
    // The clearing request came before any point was written.
    expect(ops.indexOf('POST /collections/{collection_name}/points/batch')).toBeLessThan(
      ops.indexOf('PUT /collections/{collection_name}/points'),
    );
    fx.log.length = 0;
    const contents = fx
      .pointsOf('fp_first')
      .map((p) => `${p.payload.chunk_index}:${p.payload.content}`)
      .sort();
    expect(contents).toEqual(['0:a0', '1:x1', '2:x2']); // half rewritten
    // No fingerprint: a source back at 'a0|a1|a2' is not skipped as unchanged — the document is written whole.
    writer = await destination.open(config, testContext(), opts);
    expect((await writer.fingerprints!('docs', ['a'])).size).toBe(0);
    await writer.close();
  });

  it('the embedder tag is stored beside the fingerprint and returned by fingerprints(), documents() and scanChunks()', async () => {
    const config = qdrantConfig(fx.url, 'fp_embedder');
    const opts = { streams: streams('append_dedup', 'docs'), dimensions: DIMS };
    const tagged: DocumentFingerprint = { ...fp('t0|t1'), embedder: 'hash/hash-v1/8' };
    const d = { ...(fdoc('docs', 't', ['t0', 't1']) as DestinationMessage & { type: 'DOCUMENT' }), fingerprint: tagged };
    await drain(await destination.open(config, testContext(), opts), [d, fdoc('docs', 'old', ['o0']), state('docs', 1)]);
    const writer = await destination.open(config, testContext(), opts);
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['t', 'old']))).toEqual({ t: tagged, old: fp('o0') });
    await writer.close();
    expect(await all(destination.documents!(config, testContext(), 'docs'))).toEqual(
      expect.arrayContaining([
        { documentId: 't', chunks: 2, fingerprint: tagged },
        { documentId: 'old', chunks: 1, fingerprint: fp('o0') },
      ]),
    );
    const scanned = await all(destination.scanChunks!(config, testContext(), 'docs', { documentIds: ['t'] }));
    expect(scanned.find((c) => c.chunkIndex === 0)?.fingerprint).toEqual(tagged);
    expect(fx.pointsOf('fp_embedder').find((p) => p.id === chunkUuid('docs', 't', 0))?.payload._sluice_fp_embedder).toBe('hash/hash-v1/8');
  });

  it('overwrite: kept documents copied into the new generation get their fingerprint last too', async () => {
    const config = qdrantConfig(fx.url, 'fp_last_ow');
    const opts = { streams: streams('overwrite', 'docs'), dimensions: DIMS };
    await drain(await destination.open(config, testContext(), opts), [
      fdoc('docs', 'a', ['a0', 'a1']),
      fdoc('docs', 'b', ['b0']),
      state('docs', 1),
      complete('docs'),
    ]);
    fx.log.length = 0;
    const events = await drain(await destination.open(config, testContext(), opts), [
      keep('docs', 'a'),
      fdoc('docs', 'b', ['b0 new']),
      state('docs', 2),
      complete('docs'),
    ]);
    expect(committedPositions(events)).toEqual([2]);
    // The fingerprints of the copied and the written document go in one set_payload batch, the flush's last write.
    const batches = fx.log.filter((l) => l.operation === 'POST /collections/{collection_name}/points/batch');
    expect(batches).toHaveLength(1);
    const upserts = fx.log.map((l, i) => [l.operation, i] as const).filter(([op]) => op === 'PUT /collections/{collection_name}/points');
    expect(fx.log.indexOf(batches[0])).toBeGreaterThan(Math.max(...upserts.map(([, i]) => i)));
    const writer = await destination.open(config, testContext(), opts);
    expect(Object.fromEntries(await writer.fingerprints!('docs', ['a', 'b']))).toEqual({ a: fp('a0|a1'), b: fp('b0 new') });
    await writer.close();
  });
});
