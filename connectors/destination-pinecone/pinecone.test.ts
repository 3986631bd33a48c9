// The Pinecone destination through the real @pinecone-database/pinecone client against the
// in-memory fixture (test/fixtures/pinecone-server.ts), which validates every request and response
// against Pinecone's OpenAPI documents and enforces the service's limits.
import { Pinecone } from '@pinecone-database/pinecone';
import { afterEach, describe, expect, it } from 'vitest';
import { startPineconeFixture, type Metric, type PineconeFixture } from '../../test/fixtures/pinecone-server.ts';
import type { DestinationMessage, DestinationStream } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { DestinationSyncMode } from '../../src/protocol/messages.ts';
import destination, { searchPinecone } from './index.ts';
import { PineconeConfigSchema, type PineconeConfig } from './config.ts';
import { compactValues, toMetadataValue } from './metadata.ts';
import { PineconeStore, POINTER_NAMESPACE } from './store.ts';
import { captureContext, documentMessage, drain, stateMessage, vectorFor, written } from './test-helpers.ts';
import { useFixture } from '../../test/helpers/use-fixture.ts';

const DIM = 8;
let fx: PineconeFixture;
let indexCounter = 0;

useFixture(startPineconeFixture, (f) => (fx = f));
afterEach(() => {
  fx.setFaults({});
});

async function freshIndex(dimension = DIM, metric: Metric = 'cosine'): Promise<string> {
  const name = `idx-${++indexCounter}`;
  await fx.createIndex(name, dimension, metric);
  return name;
}

function cfg(index: string, extra: Partial<Record<keyof PineconeConfig, unknown>> = {}): PineconeConfig {
  return PineconeConfigSchema.parse({ api_key: fx.apiKey, index, controller_host: fx.controllerUrl, retry_initial_delay_ms: 5, ...extra });
}

const streams = (mode: DestinationSyncMode, ...names: string[]): DestinationStream[] =>
  (names.length ? names : ['docs']).map((name) => ({ name, destinationSyncMode: mode, primaryKey: [['id']] }));

async function writeAll(
  config: PineconeConfig,
  mode: DestinationSyncMode,
  messages: DestinationMessage[],
  dimensions = DIM,
  ctx = captureContext(),
) {
  const writer = await destination.open(config, ctx, { streams: streams(mode), dimensions });
  const events = await drain(writer, messages);
  return { events, ctx };
}

const texts = (id: string, n: number, version = 1) => Array.from({ length: n }, (_, i) => `${id} chunk ${i} version ${version}`);
const doc = (id: string, n: number, version = 1, stream = 'docs') =>
  documentMessage(stream, id, texts(id, n, version), DIM, { source: 'test', version });

describe("fixture rules (the real service's limits)", () => {
  it("rejects oversized upserts, wrong dimensions, big metadata and long deletes with Pinecone's 400", async () => {
    const name = await freshIndex();
    const pc = new Pinecone({ apiKey: fx.apiKey, controllerHostUrl: fx.controllerUrl, maxRetries: 0 });
    const host = `http://${(await pc.describeIndex(name)).host}`;
    const ns = pc.index({ host }).namespace('rules');
    const v = (i: number) => ({ id: `v${i}`, values: Array.from(vectorFor(`v${i}`, DIM)) });

    await expect(ns.upsert({ records: Array.from({ length: 1001 }, (_, i) => v(i)) })).rejects.toThrow(/1001 vectors; the maximum is 1000/);
    const big = 'x'.repeat(30_000);
    await expect(ns.upsert({ records: Array.from({ length: 80 }, (_, i) => ({ ...v(i), metadata: { big } })) })).rejects.toThrow(
      /exceeds the maximum supported size/,
    );
    await expect(ns.upsert({ records: [{ id: 'short', values: [1, 2, 3] }] })).rejects.toThrow(
      'Vector dimension 3 does not match the dimension of the index 8',
    );
    await expect(ns.upsert({ records: [{ ...v(1), metadata: { content: 'y'.repeat(45 * 1024) } }] })).rejects.toThrow(
      /Metadata size is \d+ bytes, which exceeds the limit of 40960/,
    );
    await expect(ns.deleteMany({ ids: Array.from({ length: 1001 }, (_, i) => `v${i}`) })).rejects.toThrow(/1001 ids; the maximum is 1000/);
    expect(fx.ids(name, 'rules')).toEqual([]);

    const last400 = fx.requests.filter((r) => r.index === name && r.status === 400);
    expect(last400.length).toBe(5);
    await ns.upsert({ records: [v(1), v(2)] });
    expect(fx.ids(name, 'rules')).toEqual(['v1', 'v2']);
  });

  it('validates request bodies against the OpenAPI document (a malformed query is a 400 and a recorded violation)', async () => {
    const name = await freshIndex();
    const res = await fetch(`http://${fx.indexes.get(name)!.host}/query`, {
      method: 'POST',
      headers: { 'Api-Key': fx.apiKey, 'X-Pinecone-Api-Version': '2025-10', 'content-type': 'application/json' },
      body: JSON.stringify({ topK: 'ten', vector: [1, 2, 3, 4, 5, 6, 7, 8] }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 3, message: expect.stringContaining('/topK must be integer') });
    expect(fx.violations).toEqual(['request POST /query: /topK must be integer']);
    fx.violations.length = 0;
  });

  it('answers exact cosine, dotproduct and euclidean queries', async () => {
    for (const metric of ['cosine', 'dotproduct', 'euclidean'] as const) {
      const name = await freshIndex(2, metric);
      const pc = new Pinecone({ apiKey: fx.apiKey, controllerHostUrl: fx.controllerUrl, maxRetries: 0 });
      const ns = pc.index({ host: `http://${fx.indexes.get(name)!.host}` }).namespace('m');
      await ns.upsert({
        records: [
          { id: 'a', values: [1, 0] },
          { id: 'b', values: [3, 3] },
          { id: 'c', values: [0, 1] },
        ],
      });
      const res = await ns.query({ vector: [2, 0.5], topK: 3 });
      const got = res.matches.map((m) => [m.id, Number(m.score!.toFixed(4))]);
      if (metric === 'cosine')
        expect(got).toEqual([
          ['a', 0.9701],
          ['b', 0.8575],
          ['c', 0.2425],
        ]);
      if (metric === 'dotproduct')
        expect(got).toEqual([
          ['b', 7.5],
          ['a', 2],
          ['c', 0.5],
        ]);
      if (metric === 'euclidean')
        expect(got).toEqual([
          ['a', 1.25],
          ['c', 4.25],
          ['b', 7.25],
        ]);
    }
  });
});

describe('append_dedup', () => {
  it('writes, shrinks and grows documents, deletes them, and acks states only after Pinecone did', async () => {
    const name = await freshIndex();
    const config = cfg(name);
    const ctx = captureContext();
    const writer = await destination.open(config, ctx, { streams: streams('append_dedup'), dimensions: DIM });
    const seenAtCommit: string[][] = [];
    const events = await drain(
      writer,
      [
        doc('a', 3),
        doc('b', 2),
        doc('a#1', 1),
        stateMessage('docs', 1),
        doc('a', 1, 2),
        doc('b', 4, 2),
        stateMessage('docs', 2),
        { type: 'DELETE', stream: 'docs', documentId: 'a' },
        stateMessage('docs', 3),
      ],
      (e) => {
        if (e.type === 'STATE_COMMITTED') seenAtCommit.push(fx.ids(name, 'docs'));
      },
    );
    // What was acknowledged at each checkpoint was already stored.
    expect(seenAtCommit).toEqual([
      ['a#0', 'a#1', 'a#1#0', 'a#2', 'b#0', 'b#1'],
      ['a#0', 'a#1#0', 'b#0', 'b#1', 'b#2', 'b#3'],
      ['a#1#0', 'b#0', 'b#1', 'b#2', 'b#3'], // deleting "a" leaves document "a#1" alone
    ]);
    expect(
      events
        .filter((e) => e.type === 'STATE_COMMITTED')
        .map((e) => (e as { state: { stream?: { stream_state?: unknown } } }).state.stream?.stream_state),
    ).toEqual([{ position: 1 }, { position: 2 }, { position: 3 }]);
    expect(written(events)).toEqual({ records: 6, chunksWritten: 11, chunksDeleted: 2 + 1 }); // a#1, a#2 on shrink; a#0 on delete
    const b3 = fx.vector(name, 'docs', 'b#3')!;
    expect(b3.metadata).toEqual({
      source: 'test',
      version: 2,
      stream: 'docs',
      document_id: 'b',
      chunk_index: 3,
      content: 'b chunk 3 version 2',
    });
    // Values are the float32 embedding (sent with 9 significant digits, which round-trips float32).
    expect(Float32Array.from(b3.values)).toEqual(vectorFor('b chunk 3 version 2', DIM));
  });

  it('replays after a crash without duplicates: the same ids are overwritten', async () => {
    const name = await freshIndex();
    const batch = [doc('x', 2), doc('y', 3), stateMessage('docs', 1)];
    await writeAll(cfg(name), 'append_dedup', batch);
    await writeAll(cfg(name), 'append_dedup', batch);
    expect(fx.ids(name, 'docs')).toEqual(['x#0', 'x#1', 'y#0', 'y#1', 'y#2']);
  });

  it('vectors written by something else (chunk 0 without chunk_count) are found by listing their prefix', async () => {
    const name = await freshIndex();
    const pc = new Pinecone({ apiKey: fx.apiKey, controllerHostUrl: fx.controllerUrl, maxRetries: 0 });
    const ns = pc.index({ host: `http://${fx.indexes.get(name)!.host}` }).namespace('docs');
    await ns.upsert({ records: ['L#0', 'L#1', 'L#12', 'L#1#0'].map((id) => ({ id, values: Array.from(vectorFor(id, DIM)) })) });
    await writeAll(cfg(name), 'append_dedup', [doc('L', 1)]);
    expect(fx.ids(name, 'docs')).toEqual(['L#0', 'L#1#0']);
    expect(fx.vector(name, 'docs', 'L#0')!.metadata!.chunk_count).toBe(1);
  });

  it('keeps the latest message when a document appears twice in one batch', async () => {
    const name = await freshIndex();
    await writeAll(cfg(name), 'append_dedup', [doc('d', 4)]);
    await writeAll(cfg(name), 'append_dedup', [doc('d', 1, 2), doc('d', 2, 3), { type: 'DELETE', stream: 'docs', documentId: 'e' }]);
    expect(fx.ids(name, 'docs')).toEqual(['d#0', 'd#1']);
    expect(fx.vector(name, 'docs', 'd#1')!.metadata!.content).toBe('d chunk 1 version 3');
  });
});

describe('append', () => {
  it('upserts by chunk id (no duplicates on replay), keeps other chunks, and still honours DELETE', async () => {
    const name = await freshIndex();
    await writeAll(cfg(name), 'append', [doc('a', 3), doc('b', 1)]);
    const { events } = await writeAll(cfg(name), 'append', [
      doc('a', 1, 2),
      doc('a', 1, 2),
      { type: 'DELETE', stream: 'docs', documentId: 'b' },
    ]);
    expect(fx.ids(name, 'docs')).toEqual(['a#0', 'a#1', 'a#2']);
    expect(fx.vector(name, 'docs', 'a#0')!.metadata!.content).toBe('a chunk 0 version 2');
    expect(written(events).chunksDeleted).toBe(1);
    // chunk 0 records each document's chunk count: a DOCUMENT needs no listing by prefix; the DELETE
    // lists its document's prefix once (it removes everything, also chunks beyond the recorded count)
    expect(fx.requests.filter((r) => r.index === name && r.path === '/vectors/list')).toHaveLength(1);
    expect(fx.vector(name, 'docs', 'a#0')!.metadata!.chunk_count).toBe(3); // append keeps a#1, a#2, so the count still covers them
  });
});

describe('overwrite', () => {
  it('loads a new namespace generation, switches the pointer at STREAM_COMPLETE, then drops the old one', async () => {
    const name = await freshIndex();
    await writeAll(cfg(name), 'append_dedup', [doc('old1', 2), doc('old2', 1)]);
    expect(fx.namespaceNames(name)).toEqual(['docs']);

    const ctx = captureContext();
    const config = cfg(name);
    const writer = await destination.open(config, ctx, { streams: streams('overwrite'), dimensions: DIM });
    const store = await PineconeStore.connect(config, ctx);
    const search = () => searchPinecone(store, config, { vector: vectorFor('q', DIM), topK: 10, streams: ['docs'] });
    const before: string[][] = [];
    await drain(
      writer,
      (async function* () {
        yield doc('new1', 2);
        yield doc('new1', 1, 2); // a document repeated inside the generation still replaces as a unit
        yield stateMessage('docs', 1); // (the engine holds states during overwrite; harmless if sent)
        yield doc('new2', 3);
        yield stateMessage('docs', 2);
        before.push((await search()).map((h) => h.documentId).sort());
        yield { type: 'STREAM_COMPLETE', stream: 'docs' };
      })(),
    );
    expect(before).toEqual([['old1', 'old1', 'old2']]);
    const after = await search();
    expect(after.map((h) => `${h.documentId}#${h.chunkIndex}`).sort()).toEqual(['new1#0', 'new2#0', 'new2#1', 'new2#2']);
    expect(fx.namespaceNames(name)).toEqual([POINTER_NAMESPACE, 'docs__sluice_gen1']);
    expect(fx.vector(name, POINTER_NAMESPACE, 'ns:docs')!.metadata).toMatchObject({
      current: 'docs__sluice_gen1',
      generation: 1,
      previous: 'docs',
    });

    // An append_dedup run afterwards writes into the current generation.
    await writeAll(cfg(name), 'append_dedup', [doc('new2', 1, 3)]);
    expect(fx.ids(name, 'docs__sluice_gen1')).toEqual(['new1#0', 'new2#0']);
  });

  it('an interrupted overwrite leaves readers on the old generation; the next one discards the partial load', async () => {
    const name = await freshIndex();
    await writeAll(cfg(name), 'overwrite', [doc('g1', 1), { type: 'STREAM_COMPLETE', stream: 'docs' }]);
    expect(fx.namespaceNames(name)).toEqual([POINTER_NAMESPACE, 'docs__sluice_gen1']);
    const { ctx } = await writeAll(cfg(name), 'overwrite', [doc('partial', 2)]); // no STREAM_COMPLETE: crashed/aborted
    expect(ctx.lines.some((l) => l.level === 'warn' && l.msg.includes('input ended before the stream completed'))).toBe(true);
    const config = cfg(name);
    const store = await PineconeStore.connect(config, ctx);
    const hits = await searchPinecone(store, config, { vector: vectorFor('q', DIM), topK: 5, streams: ['docs'] });
    expect(hits.map((h) => h.documentId)).toEqual(['g1']);

    await writeAll(cfg(name), 'overwrite', [doc('g2', 1), { type: 'STREAM_COMPLETE', stream: 'docs' }]);
    expect(fx.namespaceNames(name)).toEqual([POINTER_NAMESPACE, 'docs__sluice_gen2']);
    expect(fx.ids(name, 'docs__sluice_gen2')).toEqual(['g2#0']); // nothing of the partial load
  });

  it('a reader querying during the overwrite never gets 0 hits', async () => {
    const name = await freshIndex();
    const initial = Array.from({ length: 30 }, (_, i) => doc(`d${i}`, 2));
    await writeAll(cfg(name), 'overwrite', [...initial, { type: 'STREAM_COMPLETE', stream: 'docs' }]);
    fx.setFaults({ latencyMs: 2 });
    const config = cfg(name, { batch_size: 10, concurrency: 2 });
    const ctx = captureContext();
    const store = await PineconeStore.connect(config, ctx);
    let stop = false;
    const counts: number[] = [];
    const reader = (async () => {
      while (!stop) {
        const hits = await searchPinecone(store, config, { vector: vectorFor('probe', DIM), topK: 5, streams: ['docs'] });
        counts.push(hits.length);
      }
    })();
    for (let round = 2; round <= 4; round++) {
      const next = Array.from({ length: 30 }, (_, i) => doc(`r${round}-${i}`, 2));
      await writeAll(config, 'overwrite', [...next, { type: 'STREAM_COMPLETE', stream: 'docs' }], DIM, ctx);
    }
    stop = true;
    await reader;
    expect(counts.length).toBeGreaterThan(10);
    expect(counts.filter((c) => c === 0)).toEqual([]);
    expect(fx.namespaceNames(name)).toEqual([POINTER_NAMESPACE, 'docs__sluice_gen4']);
    expect(fx.ids(name, 'docs__sluice_gen4')[0]).toBe('r4-0#0');
  });
});

describe('limits enforced before sending', () => {
  it('splits > 1,000 vectors and > 2 MB into several upserts, and > 1,000 ids into several deletes', async () => {
    const name = await freshIndex();
    const config = cfg(name, { batch_size: 1000, concurrency: 3 });
    const big = documentMessage(
      'docs',
      'big',
      Array.from({ length: 1500 }, (_, i) => `big ${i}`),
      DIM,
    );
    const heavy = Array.from({ length: 80 }, (_, i) => documentMessage('docs', `heavy${i}`, [`${'h'.repeat(30_000)} ${i}`], DIM));
    const { events } = await writeAll(config, 'append_dedup', [big, ...heavy, stateMessage('docs', 1)]);
    const upserts = fx.requests.filter((r) => r.index === name && r.path === '/vectors/upsert');
    expect(upserts.every((r) => r.status === 200 && r.items! <= 1000 && r.bytes <= 2 * 1024 * 1024)).toBe(true);
    expect(upserts.reduce((n, r) => n + r.items!, 0)).toBe(1580);
    expect(upserts.length).toBeGreaterThanOrEqual(3); // 1,500 vectors need 2; 80 × 30 KB (2.4 MB) needs 2 more unless packed with them
    expect(upserts.some((r) => r.bytes > 1_500_000)).toBe(true);
    expect(fx.ids(name, 'docs').length).toBe(1580);
    expect(written(events).chunksWritten).toBe(1580);

    const del = await writeAll(config, 'append_dedup', [{ type: 'DELETE', stream: 'docs', documentId: 'big' }]);
    const deletes = fx.requests.filter((r) => r.index === name && r.path === '/vectors/delete');
    // chunks 1..1499 in ≤ 1,000-id requests, then chunk 0 (which holds the count) last
    expect(deletes.map((r) => r.items)).toEqual([1000, 499, 1]);
    expect(deletes.every((r) => r.status === 200)).toBe(true);
    expect(fx.ids(name, 'docs').length).toBe(80);
    expect(written(del.events).chunksDeleted).toBe(1500);
  });

  describe('45 KB of metadata', () => {
    const hugeDoc = (version = 1) =>
      documentMessage('docs', 'huge', ['small chunk', `${'é'.repeat(20_000)} ${'x'.repeat(5_000)} v${version}`], DIM, {
        title: 'Big one',
        tags: ['a', 'b'],
      });

    it('truncate_content (default): shortens content to fit 40 KB, marks it, counts and reports it', async () => {
      const name = await freshIndex();
      const { events, ctx } = await writeAll(cfg(name), 'append_dedup', [hugeDoc(), stateMessage('docs', 1)]);
      const v = fx.vector(name, 'docs', 'huge#1')!;
      expect(Buffer.byteLength(JSON.stringify(v.metadata))).toBeLessThanOrEqual(40 * 1024);
      expect(v.metadata!.content_truncated).toBe(true);
      expect(String(v.metadata!.content).startsWith('éééé')).toBe(true);
      expect(String(v.metadata!.content).length).toBeLessThan(25_000);
      expect(v.metadata!.title).toBe('Big one');
      expect(fx.vector(name, 'docs', 'huge#0')!.metadata!.content_truncated).toBeUndefined();
      expect(written(events).chunksWritten).toBe(2);
      const summary = ctx.lines.find(
        (l) => l.level === 'warn' && 'truncated' in (l.fields ?? {}) && (l.fields as { truncated: number }).truncated === 1,
      );
      expect(summary?.msg).toMatch(/1 chunk\(s\) had their content truncated/);
    });

    it('skip: leaves the chunk out (and removes an older version of it), counts and reports it', async () => {
      const name = await freshIndex();
      await writeAll(cfg(name), 'append_dedup', [documentMessage('docs', 'huge', ['small chunk', 'old second chunk'], DIM)]);
      const { events, ctx } = await writeAll(cfg(name, { on_oversized_metadata: 'skip' }), 'append_dedup', [
        hugeDoc(),
        stateMessage('docs', 1),
      ]);
      expect(fx.ids(name, 'docs')).toEqual(['huge#0']);
      expect(written(events)).toMatchObject({ chunksWritten: 1, chunksDeleted: 1 });
      expect(ctx.lines.some((l) => l.level === 'warn' && (l.fields as { skipped?: number } | undefined)?.skipped === 1)).toBe(true);
    });

    it('skip on chunk 0: keeps the vector (it records the chunk count) without its content', async () => {
      const name = await freshIndex();
      const first = documentMessage('docs', 'head', [`${'z'.repeat(45 * 1024)}`, 'tail chunk'], DIM);
      const { ctx } = await writeAll(cfg(name, { on_oversized_metadata: 'skip' }), 'append_dedup', [first]);
      expect(fx.ids(name, 'docs')).toEqual(['head#0', 'head#1']);
      expect(fx.vector(name, 'docs', 'head#0')!.metadata).toMatchObject({ content: '', content_skipped: true, chunk_count: 2 });
      expect(ctx.lines.some((l) => l.level === 'warn' && /1 chunk\(s\) were skipped/.test(l.msg))).toBe(true);
    });

    it('fail: refuses the document naming the chunk, before sending any of it; the rest of the batch is written', async () => {
      const name = await freshIndex();
      await writeAll(cfg(name), 'append_dedup', [documentMessage('docs', 'huge', ['old small chunk'], DIM)]);
      const { events } = await writeAll(cfg(name, { on_oversized_metadata: 'fail' }), 'append_dedup', [
        documentMessage('docs', 'a', ['first'], DIM),
        hugeDoc(),
        documentMessage('docs', 'b', ['second'], DIM),
        stateMessage('docs', 1),
      ]);
      const refused = events.filter((e) => e.type === 'REJECTED');
      expect(refused).toEqual([
        {
          type: 'REJECTED',
          stream: 'docs',
          documentId: 'huge',
          error: expect.stringMatching(
            /document "huge", chunk 1 has \d+ bytes of metadata; Pinecone allows 40960.*truncate_content or skip/,
          ),
          record: { id: 'huge' },
        },
      ]);
      // Reported before the STATE that covers it is acknowledged; the others are written once.
      expect(events.map((e) => e.type)).toEqual(['WRITTEN', 'REJECTED', 'STATE_COMMITTED']);
      expect(written(events)).toMatchObject({ records: 2, chunksWritten: 2 });
      expect(fx.ids(name, 'docs').sort()).toEqual(['a#0', 'b#0', 'huge#0']);
      // The stored version of the refused document is untouched.
      expect(fx.vector(name, 'docs', 'huge#0')!.metadata!.content).toBe('old small chunk');
    });

    it('truncate_content cannot fit metadata fields that are too big on their own: the document is refused, not sent', async () => {
      const name = await freshIndex();
      const { events } = await writeAll(cfg(name), 'append_dedup', [
        documentMessage('docs', 'fat', ['text'], DIM, { notes: 'n'.repeat(41 * 1024) }),
        documentMessage('docs', 'thin', ['text'], DIM),
      ]);
      expect(events.filter((e) => e.type === 'REJECTED').map((e) => (e as { documentId: string }).documentId)).toEqual(['fat']);
      expect(fx.ids(name, 'docs')).toEqual(['thin#0']);
      // Nothing over the limit was ever sent (the fixture answers 400 to that, like Pinecone).
      expect(fx.requests.filter((r) => r.index === name && r.status === 400)).toEqual([]);
    });
  });

  it('converts metadata values to the types Pinecone accepts', () => {
    expect(toMetadataValue({ b: 1, a: [1, 2] })).toBe('{"a":[1,2],"b":1}');
    expect(toMetadataValue([1, 'x', null, { k: true }])).toEqual(['1', 'x', '{"k":true}']);
    expect(toMetadataValue(null)).toBeUndefined();
    expect(toMetadataValue(new Date('2024-01-02T03:04:05Z'))).toBe('2024-01-02T03:04:05.000Z');
    expect(toMetadataValue(12345678901234567890n)).toBe('12345678901234567890');
    expect(toMetadataValue(Number.NaN)).toBe('NaN');
  });

  it('sends float32 values as short decimals that round-trip exactly', () => {
    const values = new Float32Array(4000);
    for (let i = 0; i < values.length; i++) values[i] = (Math.random() - 0.5) * 10 ** ((i % 40) - 30);
    values[0] = 0;
    values[1] = 1;
    values[2] = -0.1;
    const compact = compactValues(values);
    expect(Float32Array.from(compact)).toEqual(values);
    expect(compact.every((x) => String(x).replace('-', '').replace('0.', '').length <= 16)).toBe(true);
  });
});

describe('faults', () => {
  it('completes correctly through injected 429/503 responses', async () => {
    const name = await freshIndex();
    const N = 100;
    await writeAll(
      cfg(name),
      'append_dedup',
      Array.from({ length: N }, (_, i) => doc(`f${i}`, 3)),
    );
    fx.setFaults({ rate: 0.3, statuses: [429, 503] });
    const config = cfg(name, { batch_size: 10, concurrency: 4, max_retries: 10 });
    const messages: DestinationMessage[] = [];
    for (let i = 0; i < N; i++) messages.push(doc(`f${i}`, i % 2 ? 1 : 5, 2));
    messages.push({ type: 'DELETE', stream: 'docs', documentId: 'f0' }, stateMessage('docs', 1));
    const { events } = await writeAll(config, 'append_dedup', messages);
    fx.setFaults({});
    const injected = fx.requests.filter((r) => r.index === name && r.injected);
    expect(injected.length).toBeGreaterThanOrEqual(2);
    expect(new Set(injected.map((r) => r.status))).toEqual(new Set([429, 503]));
    const expected: string[] = [];
    for (let i = 1; i < N; i++) for (let c = 0; c < (i % 2 ? 1 : 5); c++) expected.push(`f${i}#${c}`);
    expect(fx.ids(name, 'docs')).toEqual(expected.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(fx.vector(name, 'docs', 'f2#4')!.metadata!.content).toBe('f2 chunk 4 version 2');
    expect(events.at(-1)?.type).toBe('STATE_COMMITTED');
  });

  it('writes interrupted at any phase are repaired by the replay: no stale or duplicate chunks', async () => {
    const name = await freshIndex();
    const reference = await freshIndex();
    // Each round: documents shrink, grow, vanish or appear; writes fail at random points (no
    // retries), and the failed round is replayed until it succeeds, as the engine does after a crash.
    const round = (r: number): DestinationMessage[] => {
      const out: DestinationMessage[] = [];
      for (let i = 0; i < 12; i++) {
        const n = (i * 7 + r * 5) % 6; // 0..5 chunks, changing every round
        if ((i + r) % 5 === 0) out.push({ type: 'DELETE', stream: 'docs', documentId: `p${i}` });
        else out.push(doc(`p${i}`, n, r));
      }
      return [...out, stateMessage('docs', r)];
    };
    let failures = 0;
    for (let r = 1; r <= 6; r++) {
      for (let attempt = 0; ; attempt++) {
        fx.setFaults(attempt < 3 ? { rate: 0.25, only: ['POST /vectors/upsert', 'POST /vectors/delete'] } : {});
        const result = await writeAll(cfg(name, { max_retries: 0, batch_size: 3, concurrency: 2 }), 'append_dedup', round(r)).catch(
          (e: unknown) => e,
        );
        fx.setFaults({});
        if (!(result instanceof Error)) break;
        failures++;
      }
      await writeAll(cfg(reference), 'append_dedup', round(r));
    }
    expect(failures).toBeGreaterThan(0);
    const view = (index: string) => fx.ids(index, 'docs').map((id) => `${id} ${JSON.stringify(fx.vector(index, 'docs', id)!.metadata)}`);
    expect(view(name)).toEqual(view(reference));
  });

  it('gives up with a clear, transient error when Pinecone keeps failing', async () => {
    const name = await freshIndex();
    const writer = await destination.open(cfg(name, { max_retries: 2 }), captureContext(), { streams: streams('append'), dimensions: DIM });
    const fetches = () => fx.requests.filter((r) => r.index === name && r.path === '/vectors/fetch').length;
    const fetchesBefore = fetches();
    fx.setFaults({ rate: 1, statuses: [503] });
    const committed: unknown[] = [];
    const err = await drain(writer, [doc('z', 1), stateMessage('docs', 1)], (e) => {
      if (e.type === 'STATE_COMMITTED') committed.push(e);
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).transient).toBe(true);
    expect((err as SluiceError).message).toMatch(/^Pinecone fetch of 1 vectors from namespace "docs" failed after 3 attempts: HTTP 503/);
    expect(fetches() - fetchesBefore).toBe(3);
    expect(committed).toEqual([]); // the state is not acknowledged
  });
});

describe('check, open and search', () => {
  it('check reports dimension and metric, a bad key and a missing index', async () => {
    const name = await freshIndex(DIM, 'dotproduct');
    const ok = await destination.check(cfg(name), captureContext());
    expect(ok).toMatchObject({ ok: true, message: `Pinecone index ${name}: dimension ${DIM}, metric dotproduct` });
    const badKey = await destination.check(cfg(name, { api_key: 'wrong-key' }), captureContext());
    expect(badKey.ok).toBe(false);
    expect(badKey.message).toMatch(/rejected the API key/);
    expect(badKey.message).not.toContain('wrong-key');
    const missing = await destination.check(cfg('no-such-index'), captureContext());
    expect(missing).toMatchObject({ ok: false });
    expect(missing.message).toMatch(/"no-such-index" was not found/);
    const wrongMetric = await destination.check(cfg(name, { metric: 'cosine' }), captureContext());
    expect(wrongMetric.ok).toBe(false);
    // With the pipeline's embedder size, check compares it before any sync.
    expect((await destination.check(cfg(name), captureContext(), { dimensions: DIM })).ok).toBe(true);
    const otherSize = await destination.check(cfg(name), captureContext(), { dimensions: DIM + 1, embedderName: 'hash' });
    expect(otherSize).toMatchObject({
      ok: false,
      message: `index ${name} has ${DIM} dimensions, but the embedding model (hash) gives ${DIM + 1}`,
    });
  });

  it('open refuses a dimension mismatch before any write; works with the index host instead of its name', async () => {
    const name = await freshIndex();
    const err = await destination
      .open(cfg(name), captureContext(), { streams: streams('append_dedup'), dimensions: 384, embedderName: 'hash-384' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toBe(`Pinecone index "${name}" has dimension 8, but hash-384 produces 384-dimensional vectors`);
    expect(fx.requests.filter((r) => r.index === name && r.method === 'POST' && r.path !== '/describe_index_stats').length).toBe(0);

    const byHost = cfg(`http://${fx.indexes.get(name)!.host}`);
    await writeAll(byHost, 'append_dedup', [doc('h', 2)]);
    expect(fx.ids(name, 'docs')).toEqual(['h#0', 'h#1']);
  });

  it('refuses two streams sharing one namespace', async () => {
    const name = await freshIndex();
    const err = await destination
      .open(cfg(name, { namespace: 'shared' }), captureContext(), { streams: streams('append', 'a', 'b'), dimensions: DIM })
      .catch((e: unknown) => e);
    expect((err as SluiceError).message).toMatch(/streams "a" and "b" would share Pinecone namespace "shared"/);
  });

  it('search returns hits from several streams ranked by the index metric', async () => {
    const name = await freshIndex(DIM, 'euclidean');
    const config = cfg(name);
    const ctx = captureContext();
    const writer = await destination.open(config, ctx, { streams: streams('append_dedup', 'faq', 'manual'), dimensions: DIM });
    await drain(writer, [
      documentMessage('faq', 'q1', ['alpha', 'beta'], DIM, { lang: 'en' }),
      documentMessage('manual', 'm1', ['gamma'], DIM),
    ]);
    const hits = await destination.search!(config, ctx, { vector: vectorFor('gamma', DIM), topK: 2, streams: ['faq', 'manual'] });
    expect(hits[0]).toMatchObject({ stream: 'manual', documentId: 'm1', chunkIndex: 0, content: 'gamma', score: 0 });
    expect(hits).toHaveLength(2);
    expect(hits[1].score).toBeGreaterThan(0);
    const faq = await destination.search!(config, ctx, { vector: vectorFor('beta', DIM), topK: 1, streams: ['faq'] });
    expect(faq).toEqual([{ score: 0, stream: 'faq', documentId: 'q1', chunkIndex: 1, content: 'beta', metadata: { lang: 'en' } }]);
  });
});
