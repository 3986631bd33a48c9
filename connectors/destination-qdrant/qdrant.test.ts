// The Qdrant destination against the in-memory Qdrant fixture (which validates every request and
// response against Qdrant's OpenAPI document), through the real @qdrant/js-client-rest.
import { QdrantClient } from '@qdrant/js-client-rest';
import { afterEach, describe, expect, it } from 'vitest';
import { startQdrantFixture, type QdrantFixture } from '../../test/fixtures/qdrant-server.ts';
import { chunkUuid, documentId } from '../../src/protocol/identity.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { DestinationEvent } from '../../src/protocol/connector.ts';
import destination from './index.ts';
import {
  committedPositions,
  complete,
  del,
  DIMS,
  doc,
  drain,
  embed,
  feed,
  qdrantConfig,
  state,
  streams,
  testContext,
} from './test-helpers.ts';
import { useFixture } from '../../test/helpers/use-fixture.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let fx: QdrantFixture;
// The fixture's own responses must match Qdrant's OpenAPI document (useFixture); the connector must
// only send valid requests, always waiting for acknowledgement.
useFixture(startQdrantFixture, (f) => (fx = f));
afterEach(() => {
  const writes = fx.log.filter(
    (l) => /points|\/index/.test(l.operation) && /^(PUT|POST)/.test(l.operation) && !/scroll|query|count/.test(l.operation),
  );
  expect(writes.filter((l) => l.query.wait !== 'true')).toEqual([]);
  expect(fx.log.filter((l) => l.status === 400 || l.status === 422)).toEqual([]);
  fx.setFaults(undefined);
  fx.log.length = 0;
});

/** The chunks stored under a collection name, as "stream|document|index|content", sorted. */
function stored(collection: string): string[] {
  return fx
    .pointsOf(collection)
    .map((p) => `${p.payload.stream}|${p.payload.document_id}|${p.payload.chunk_index}|${p.payload.content}`)
    .sort();
}

describe('qdrant destination', () => {
  it('append_dedup: writes, shrinks, grows and deletes documents as units; acks state after the writes', async () => {
    const ctx = testContext();
    const config = qdrantConfig(fx.url, 'dedup');
    const writer = await destination.open(config, ctx, { streams: streams('append_dedup', 'docs'), dimensions: DIMS });
    const events = await drain(writer, [
      doc('docs', 'a', ['a0', 'a1', 'a2'], { title: 'A', tags: ['x'] }),
      doc('docs', 'b', ['b0', 'b1']),
      state('docs', 1),
      doc('docs', 'a', ['a0*'], { title: 'A2' }),
      doc('docs', 'b', ['b0', 'b1', 'b2', 'b3']),
      state('docs', 2),
      doc('docs', 'c', ['c0']),
      del('docs', 'c'),
      doc('docs', 'd', ['d0', 'd1']),
      state('docs', 3),
      del('docs', 'b'),
      state('docs', 4),
    ]);
    expect(committedPositions(events)).toEqual([1, 2, 3, 4]);
    expect(stored('dedup')).toEqual(['docs|a|0|a0*', 'docs|d|0|d0', 'docs|d|1|d1']);
    // Physical generation behind the alias; ids are UUIDv5 of (stream, document, index).
    expect(fx.aliases.get('dedup')).toBe('dedup_1');
    const a0 = fx.pointsOf('dedup').find((p) => p.payload.document_id === 'a')!;
    expect(a0.id).toBe(chunkUuid('docs', 'a', 0));
    expect(a0.payload).toEqual({ document_id: 'a', chunk_index: 0, stream: 'docs', content: 'a0*', title: 'A2' });
    expect([...fx.collections.get('dedup_1')!.payloadIndexes.keys()].sort()).toEqual(['chunk_index', 'document_id', 'stream']);
    const written = events.filter((e) => e.type === 'WRITTEN').reduce((n, e) => n + (e as { chunksWritten: number }).chunksWritten, 0);
    expect(written).toBe(3 + 2 + 1 + 4 + 1 + 2);
    // a shrank 3 → 1 (2 gone), b was deleted with 4 chunks; c never reached Qdrant.
    const deleted = events.filter((e) => e.type === 'WRITTEN').reduce((n, e) => n + (e as { chunksDeleted: number }).chunksDeleted, 0);
    expect(deleted).toBe(6);
  });

  it('a state is acknowledged only after the points before it are stored (wait: true)', async () => {
    fx.setFaults({ latencyMs: 30, only: ['PUT /collections/{collection_name}/points'] });
    fx.resetMaxInFlight();
    const writer = await destination.open(qdrantConfig(fx.url, 'acks', { batch_points: 2 }), testContext(), {
      streams: streams('append_dedup', 's'),
      dimensions: DIMS,
    });
    const seenAtAck: number[] = [];
    const events = await drain(
      writer,
      [doc('s', '1', ['x', 'y', 'z']), doc('s', '2', ['w']), state('s', 1), doc('s', '3', ['v']), state('s', 2)],
      (e) => {
        if (e.type === 'STATE_COMMITTED') seenAtAck.push(fx.pointsOf('acks').length);
      },
    );
    expect(committedPositions(events)).toEqual([1, 2]);
    expect(seenAtAck).toEqual([4, 5]);
    // The first flush's two upserts (2 points each) were in flight together.
    expect(fx.maxInFlight).toBeGreaterThanOrEqual(2);
  });

  it('splits upserts by bytes as well as by points', async () => {
    const big = await startQdrantFixture({ maxBodyBytes: 256 * 1024 });
    try {
      const dims = 384;
      const config = qdrantConfig(big.url, 'bytes', { batch_bytes: 128 * 1024, batch_points: 1000 });
      const writer = await destination.open(config, testContext(), { streams: streams('append', 's'), dimensions: dims });
      const text = 'x'.repeat(2000);
      await drain(
        writer,
        Array.from({ length: 60 }, (_, i) => doc('s', `d${i}`, [`${i} ${text}`], {}, dims)),
      );
      expect(big.pointsOf('bytes')).toHaveLength(60);
      const upserts = big.log.filter((l) => l.operation === 'PUT /collections/{collection_name}/points');
      expect(upserts.every((l) => l.status === 200 && l.bytes <= 128 * 1024)).toBe(true);
      expect(upserts.length).toBeGreaterThanOrEqual(5);
      expect(big.violations).toEqual([]);
    } finally {
      await big.close();
    }
  });

  it('append: replays upsert by chunk id instead of duplicating', async () => {
    const writer = await destination.open(qdrantConfig(fx.url, 'appendonly'), testContext(), {
      streams: streams('append', 'log'),
      dimensions: DIMS,
    });
    await drain(writer, [
      doc('log', 'e1', ['one', 'two']),
      state('log', 1),
      doc('log', 'e1', ['one', 'two']),
      doc('log', 'e2', ['three']),
      del('log', 'e2'),
      doc('log', 'e2', ['three again']),
    ]);
    expect(stored('appendonly')).toEqual(['log|e1|0|one', 'log|e1|1|two', 'log|e2|0|three again']);
  });

  it('string, integer and composite primary keys become valid, deterministic UUID points', async () => {
    const keys = [
      { pk: [['slug']], data: { slug: 'hello-world/ü' } },
      { pk: [['id']], data: { id: 42 } },
      { pk: [['tenant'], ['order', 'no']], data: { tenant: 'acme', order: { no: 7 } } },
    ];
    const ids = keys.map((k) => documentId(k.data, k.pk));
    const writer = await destination.open(qdrantConfig(fx.url, 'keys'), testContext(), {
      streams: streams('append_dedup', 'k'),
      dimensions: DIMS,
    });
    await drain(writer, [...ids.map((id) => doc('k', id, [`text of ${id}`, 'second'])), state('k', 1)]);
    const points = fx.pointsOf('keys');
    expect(points).toHaveLength(6);
    for (const p of points) expect(String(p.id)).toMatch(UUID);
    expect(points.map((p) => p.payload.document_id).sort()).toEqual([...ids, ...ids].sort());
    expect(ids).toContain('["acme","7"]');
    expect(new Set(points.map((p) => p.id)).size).toBe(6);
    // Same keys again: same ids, nothing added.
    const again = await destination.open(qdrantConfig(fx.url, 'keys'), testContext(), {
      streams: streams('append_dedup', 'k'),
      dimensions: DIMS,
    });
    await drain(
      again,
      ids.map((id) => doc('k', id, [`text of ${id}`, 'second'])),
    );
    expect(
      fx
        .pointsOf('keys')
        .map((p) => p.id)
        .sort(),
    ).toEqual(points.map((p) => p.id).sort());
  });

  it('the fixture rejects non-UUID, non-unsigned point ids with the 400 Qdrant gives', async () => {
    const client = new QdrantClient({ url: fx.url, checkCompatibility: false });
    await client.createCollection('raw_ids', { vectors: { size: 2, distance: 'Dot' } });
    const attempt = async (id: unknown) => {
      try {
        await client.upsert('raw_ids', { wait: true, points: [{ id: id as string, vector: [1, 0] }] });
        return undefined;
      } catch (err) {
        return err as { status: number; data: { status: { error: string } } };
      }
    };
    const text = await attempt('doc-1#0');
    expect(text?.status).toBe(400);
    expect(text?.data.status.error).toMatch(
      /^Format error in JSON body: value doc-1#0 is not a valid point ID, valid values are either an unsigned integer or a UUID at line 1 column \d+$/,
    );
    expect((await attempt(-5))?.data.status.error).toContain('value -5 is not a valid point ID');
    expect((await attempt(1.5))?.status).toBe(400);
    expect(await attempt(7)).toBeUndefined();
    expect(await attempt('550e8400-e29b-41d4-a716-446655440000')).toBeUndefined();
    expect(fx.collections.get('raw_ids')!.points.size).toBe(2);
    fx.log.length = 0; // the 400s above were the point of this test
  });

  it('rejects a collection of another size or distance before any write', async () => {
    const writer = await destination.open(qdrantConfig(fx.url, 'shape'), testContext(), {
      streams: streams('append_dedup', 's'),
      dimensions: DIMS,
    });
    await drain(writer, [doc('s', '1', ['x'])]);
    fx.log.length = 0;
    const err = await destination
      .open(qdrantConfig(fx.url, 'shape'), testContext(), { streams: streams('overwrite', 's'), dimensions: 16, embedderName: 'hash 16' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).kind).toBe('config');
    expect((err as SluiceError).message).toContain('vectors of size 8, but the embedder (hash 16) makes 16');
    const err2 = await destination
      .open(qdrantConfig(fx.url, 'shape', { distance: 'dot' }), testContext(), { streams: streams('append_dedup', 's'), dimensions: DIMS })
      .catch((e: unknown) => e);
    expect((err2 as SluiceError).message).toContain('distance Cosine, but the config says Dot');
    // Nothing was created, written or deleted.
    expect(fx.log.filter((l) => !l.operation.startsWith('GET'))).toEqual([]);
    expect(stored('shape')).toEqual(['s|1|0|x']);
  });

  it('overwrite: a reader querying the alias during the load never gets 0 hits; the old generation is dropped after the switch', async () => {
    const ctx = testContext();
    const config = qdrantConfig(fx.url, 'ow', { batch_points: 5, buffer_points: 10 });
    const first = await destination.open(config, ctx, { streams: streams('overwrite', 'docs'), dimensions: DIMS });
    await drain(first, [doc('docs', 'old1', ['old text 1']), doc('docs', 'old2', ['old text 2']), complete('docs')]);
    expect(fx.aliases.get('ow')).toBe('ow_1');

    fx.setFaults({ latencyMs: 5 });
    const reader = { stop: false, queries: 0, empty: 0, errors: [] as unknown[] };
    const readLoop = (async () => {
      while (!reader.stop) {
        try {
          const hits = await destination.search!(config, ctx, { vector: embed('anything'), topK: 3, streams: [] });
          reader.queries++;
          if (hits.length === 0) reader.empty++;
        } catch (err) {
          reader.errors.push(err);
        }
      }
    })();
    const second = await destination.open(config, ctx, { streams: streams('overwrite', 'docs'), dimensions: DIMS });
    const msgs = Array.from({ length: 40 }, (_, i) => doc('docs', `new${i}`, [`new text ${i}`, `more ${i}`]));
    const events: DestinationEvent[] = [];
    for await (const e of second.write(feed([...msgs, state('docs', 1), complete('docs')], () => new Promise((r) => setTimeout(r, 1))))) {
      events.push(e);
      if (e.type === 'STATE_COMMITTED') {
        // Acknowledged only once readers see the new generation.
        expect(fx.aliases.get('ow')).toBe('ow_2');
      }
    }
    await second.close();
    reader.stop = true;
    await readLoop;
    expect(reader.errors).toEqual([]);
    expect(reader.queries).toBeGreaterThan(5);
    expect(reader.empty).toBe(0);
    expect(committedPositions(events)).toEqual([1]);
    expect(fx.aliases.get('ow')).toBe('ow_2');
    expect(fx.collections.has('ow_1')).toBe(false);
    expect(stored('ow')).toHaveLength(80);
    expect(stored('ow').some((s) => s.includes('old'))).toBe(false);
    const hits = await destination.search!(config, ctx, { vector: embed('new text 7'), topK: 1, streams: ['docs'] });
    expect(hits[0]).toMatchObject({ stream: 'docs', documentId: 'new7', chunkIndex: 0, content: 'new text 7' });
    expect(hits[0].score).toBeCloseTo(1, 5);
  });

  it('overwrite that never completes keeps the old generation and acknowledges nothing', async () => {
    const config = qdrantConfig(fx.url, 'owfail');
    await drain(await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS }), [
      doc('docs', 'keep', ['kept']),
      complete('docs'),
    ]);
    const events = await drain(await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS }), [
      doc('docs', 'partial', ['half']),
      state('docs', 9),
    ]);
    expect(committedPositions(events)).toEqual([]);
    expect(fx.aliases.get('owfail')).toBe('owfail_1');
    expect(stored('owfail')).toEqual(['docs|keep|0|kept']);
    expect([...fx.collections.keys()].filter((n) => n.startsWith('owfail'))).toEqual(['owfail_1']);
  });

  it('overwrite after a crashed overwrite drops the orphaned generation and switches to a fresh one', async () => {
    const config = qdrantConfig(fx.url, 'owcrash');
    await drain(await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS }), [
      doc('docs', 'v1', ['first']),
      complete('docs'),
    ]);
    // A crashed run: opened (created owcrash_2), wrote, never completed, never ended its input.
    const crashed = await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS });
    const it = crashed.write(feed([doc('docs', 'half', ['half written']), state('docs', 1)]))[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ type: 'WRITTEN', chunksWritten: 1 }); // suspended after its first flush: then the process dies
    expect(fx.collections.has('owcrash_2')).toBe(true);
    expect(fx.aliases.get('owcrash')).toBe('owcrash_1');
    const events = await drain(await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS }), [
      doc('docs', 'v2', ['second']),
      complete('docs'),
      state('docs', 2),
    ]);
    expect(committedPositions(events)).toEqual([2]);
    expect([...fx.collections.keys()].filter((n) => n.startsWith('owcrash'))).toEqual(['owcrash_3']);
    expect(fx.aliases.get('owcrash')).toBe('owcrash_3');
    expect(stored('owcrash')).toEqual(['docs|v2|0|second']);
  });

  it('leaves alone a collection that only looks like a generation', async () => {
    const client = new QdrantClient({ url: fx.url, checkCompatibility: false });
    await client.createCollection('notmine_2024', { vectors: { size: DIMS, distance: 'Cosine' } });
    await client.upsert('notmine_2024', {
      wait: true,
      points: [{ id: 1, vector: Array.from(embed('theirs')), payload: { owner: 'someone else' } }],
    });
    const config = qdrantConfig(fx.url, 'notmine');
    await drain(await destination.open(config, testContext(), { streams: streams('overwrite', 'docs'), dimensions: DIMS }), [
      doc('docs', '1', ['mine']),
      complete('docs'),
    ]);
    expect(fx.aliases.get('notmine')).toBe('notmine_2025');
    expect(fx.collections.get('notmine_2024')!.points.size).toBe(1);
    expect(stored('notmine')).toEqual(['docs|1|0|mine']);
  });

  it('overwrite of one stream keeps the other streams of the collection', async () => {
    const config = qdrantConfig(fx.url, 'mixed');
    await drain(await destination.open(config, testContext(), { streams: streams('append_dedup', 'a', 'b'), dimensions: DIMS }), [
      doc('a', '1', ['a one']),
      doc('b', '1', ['b one', 'b two']),
      state('a', 1),
    ]);
    const ow = await destination.open(config, testContext(), {
      streams: [...streams('overwrite', 'b'), ...streams('append_dedup', 'a')],
      dimensions: DIMS,
    });
    await drain(ow, [doc('b', '2', ['b new']), doc('a', '2', ['a two']), complete('b'), state('a', 2)]);
    expect(stored('mixed')).toEqual(['a|1|0|a one', 'a|2|0|a two', 'b|2|0|b new']);
    expect(fx.aliases.get('mixed')).toBe('mixed_2');
  });

  it('completes correctly through injected 429s (with and without Retry-After) and 503s', async () => {
    const config = qdrantConfig(fx.url, 'faulty', { batch_points: 4, concurrency: 3, max_retries: 10 });
    const writer = await destination.open(config, testContext(), { streams: streams('append_dedup', 's'), dimensions: DIMS });
    const msgs = [];
    for (let i = 0; i < 30; i++) msgs.push(doc('s', `d${i}`, [`t${i}a`, `t${i}b`, `t${i}c`]));
    for (let i = 0; i < 30; i += 3) msgs.push(doc('s', `d${i}`, [`t${i}a`]));
    for (let i = 1; i < 30; i += 3) msgs.push(del('s', `d${i}`));
    fx.setFaults({ rate429: 0.2, rate503: 0.2, retryAfterSeconds: 0 });
    const events = await drain(
      writer,
      feed([...msgs.slice(0, 40), state('s', 1), ...msgs.slice(40), state('s', 2)], (m) => {
        if (m.type === 'STATE') fx.setFaults({ rate429: 0.25, rate503: 0.15 });
      }),
    );
    fx.setFaults(undefined);
    expect(committedPositions(events)).toEqual([1, 2]);
    const expected: string[] = [];
    for (let i = 0; i < 30; i++) {
      if (i % 3 === 1) continue;
      const texts = i % 3 === 0 ? [`t${i}a`] : [`t${i}a`, `t${i}b`, `t${i}c`];
      texts.forEach((t, j) => expected.push(`s|d${i}|${j}|${t}`));
    }
    expect(stored('faulty')).toEqual(expected.sort());
    expect(fx.log.filter((l) => l.status === 429).length).toBeGreaterThan(0);
    expect(fx.log.filter((l) => l.status === 503).length).toBeGreaterThan(0);
  });

  it('waits as long as a 429 Retry-After asks', async () => {
    const writer = await destination.open(qdrantConfig(fx.url, 'retryafter'), testContext(), {
      streams: streams('append_dedup', 's'),
      dimensions: DIMS,
    });
    fx.setFaults({ next429: 1, retryAfterSeconds: 1, only: ['PUT /collections/{collection_name}/points'] });
    const started = Date.now();
    await drain(writer, [doc('s', '1', ['x']), state('s', 1)]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(fx.log.filter((l) => l.status === 429)).toHaveLength(1);
    expect(stored('retryafter')).toEqual(['s|1|0|x']);
  });

  it('retries requests that time out (the write landed, the answer was late): same result, no duplicates', async () => {
    // Create the collection first, with the normal timeout (this test is about writes).
    await drain(
      await destination.open(qdrantConfig(fx.url, 'slow'), testContext(), { streams: streams('append_dedup', 's'), dimensions: DIMS }),
      [],
    );
    fx.log.length = 0;
    const config = qdrantConfig(fx.url, 'slow', { timeout_seconds: 0.15, batch_points: 3 });
    const writer = await destination.open(config, testContext(), { streams: streams('append_dedup', 's'), dimensions: DIMS });
    fx.setFaults({
      rateStall: 0.3,
      stallMs: 400,
      only: ['PUT /collections/{collection_name}/points', 'POST /collections/{collection_name}/points/delete'],
    });
    const msgs = Array.from({ length: 12 }, (_, i) => doc('s', `d${i}`, ['x', 'y']));
    const events = await drain(writer, [...msgs, state('s', 1), doc('s', 'd0', ['only']), state('s', 2)]);
    expect(committedPositions(events)).toEqual([1, 2]);
    expect(fx.pointsOf('slow')).toHaveLength(23);
    expect(stored('slow').filter((s) => s.startsWith('s|d0|'))).toEqual(['s|d0|0|only']);
    // Without retries: 8 upserts of 3 points + 1 count (nothing stale), then 1 upsert + 1 count + 1 delete.
    const retried = fx.log.filter((l) => l.operation.includes('/points')).length - 12;
    expect(retried).toBeGreaterThan(0);
  });

  it('a collection create whose answer timed out is not an error on retry', async () => {
    fx.setFaults({ rateStall: 1, stallMs: 400, only: ['PUT /collections/{collection_name}'] });
    const config = qdrantConfig(fx.url, 'slowcreate', { timeout_seconds: 0.15 });
    await drain(await destination.open(config, testContext(), { streams: streams('append_dedup', 's'), dimensions: DIMS }), [
      doc('s', '1', ['x']),
    ]);
    expect(stored('slowcreate')).toEqual(['s|1|0|x']);
    const creates = fx.log.filter((l) => l.operation === 'PUT /collections/{collection_name}');
    expect(creates.map((c) => c.status)).toEqual([200, 400]);
    expect(creates[1].error).toContain('already exists');
    fx.log.length = 0; // the 400 above is the retried create, expected
  });

  it('maintain reports sizes per stream and recreates missing payload indexes', async () => {
    const config = qdrantConfig(fx.url, 'maint');
    await drain(await destination.open(config, testContext(), { streams: streams('append_dedup', 'a', 'b'), dimensions: DIMS }), [
      doc('a', '1', ['x', 'y']),
      doc('b', '1', ['z']),
    ]);
    fx.collections.get('maint_1')!.payloadIndexes.delete('stream'); // as if dropped by hand
    const report = await destination.maintain!(config, testContext(), { reindex: true, streams: ['a', 'b'] });
    expect(report).toMatchObject({
      collection: 'maint',
      physical: 'maint_1',
      points: 3,
      vector_size: DIMS,
      distance: 'Cosine',
      payload_indexes: ['chunk_index', 'document_id', 'stream'],
      payload_indexes_created: ['stream'],
      points_per_stream: { a: 2, b: 1 },
    });
  });

  it('check reports the collection, and a wrong api key without printing it', async () => {
    const secured = await startQdrantFixture({ apiKey: 'right-key' });
    try {
      const ok = await destination.check(qdrantConfig(secured.url, 'chk', { api_key: 'right-key' }), testContext());
      expect(ok.ok).toBe(true);
      expect(ok.message).toContain('does not exist yet');
      await drain(
        await destination.open(qdrantConfig(secured.url, 'chk', { api_key: 'right-key' }), testContext(), {
          streams: streams('append', 's'),
          dimensions: DIMS,
        }),
        [doc('s', '1', ['x'])],
      );
      const described = await destination.check(qdrantConfig(secured.url, 'chk', { api_key: 'right-key' }), testContext());
      expect(described).toMatchObject({ ok: true });
      expect(described.message).toContain('1 points of size 8, distance Cosine');
      const wrongDistance = await destination.check(
        qdrantConfig(secured.url, 'chk', { api_key: 'right-key', distance: 'euclid' }),
        testContext(),
      );
      expect(wrongDistance.ok).toBe(false);
      expect(wrongDistance.message).toContain('config says distance euclid');
      // With the pipeline's embedder size, check compares it before any sync.
      const sameSize = await destination.check(qdrantConfig(secured.url, 'chk', { api_key: 'right-key' }), testContext(), {
        dimensions: DIMS,
      });
      expect(sameSize.ok).toBe(true);
      const otherSize = await destination.check(qdrantConfig(secured.url, 'chk', { api_key: 'right-key' }), testContext(), {
        dimensions: 768,
        embedderName: 'openai-compatible nomic',
      });
      expect(otherSize.ok).toBe(false);
      expect(otherSize.message).toContain('(openai-compatible nomic) gives 768 dimensions');
      const bad = await destination.check(qdrantConfig(secured.url, 'chk', { api_key: 'wrong-secret-key' }), testContext());
      expect(bad.ok).toBe(false);
      expect(bad.message).toContain('not authenticated');
      expect(bad.message).toContain('api_key');
      expect(bad.message).not.toContain('wrong-secret-key');
      const down = await destination.check(qdrantConfig('http://127.0.0.1:1', 'chk', { max_retries: 0 }), testContext());
      expect(down.ok).toBe(false);
      expect(down.message).toContain('cannot reach Qdrant at http://127.0.0.1:1');
      expect(secured.violations).toEqual([]);
    } finally {
      await secured.close();
    }
  });
});
