// Kafka source against librdkafka's mock cluster (a real Kafka wire-protocol broker, see
// test/servers/kafka.global.ts). Messages are produced with kafkajs and read through read().
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SluiceError } from '../../src/protocol/errors.ts';
import { testContext } from '../../src/testing/context.ts';
import source from './index.ts';
import { MemoryStore, catalogFor, drive, kafkaConfig, produce, testKafka, testProducer, uniqueName, type TestMessage } from './testing.ts';

const brokers = inject('kafkaBrokers');
let producer: Producer;

beforeAll(async () => {
  producer = await testProducer(brokers);
});
afterAll(async () => {
  await producer?.disconnect();
});

const ctxFor = (connection: string, extra: Partial<Parameters<typeof testContext>[0]> = {}) => testContext({ connection, ...extra });

async function endOffsets(topic: string): Promise<Record<string, string>> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return Object.fromEntries((await admin.fetchTopicOffsets(topic)).map((p) => [String(p.partition), p.high]));
  } finally {
    await admin.disconnect();
  }
}

describe('Kafka source', () => {
  it('JSON values and Debezium envelopes (with and without schema wrapper) become upserts and deletions; tombstones delete', async () => {
    const topic = uniqueName('mixed');
    const wrap = (v: unknown) => ({ schema: { type: 'struct', optional: false }, payload: v });
    const env = (op: string, before: unknown, after: unknown) => ({
      op,
      before,
      after,
      source: { connector: 'postgresql', table: 'docs' },
      ts_ms: 1,
    });
    // Same key → same partition, so per-key order is Kafka order.
    const messages: TestMessage[] = [
      { key: JSON.stringify({ id: 1 }), value: { id: 1, title: 'plain json' } },
      { key: JSON.stringify({ id: 2 }), value: env('r', null, { id: 2, title: 'snapshot' }) },
      { key: JSON.stringify(wrap({ id: 3 })), value: wrap(env('c', null, { id: 3, title: 'created' })) },
      { key: JSON.stringify({ id: 2 }), value: env('u', { id: 2, title: 'snapshot' }, { id: 2, title: 'updated' }) },
      { key: JSON.stringify(wrap({ id: 3 })), value: wrap(env('d', { id: 3, title: 'created' }, null)) },
      { key: JSON.stringify(wrap({ id: 3 })), value: null },
      { key: JSON.stringify({ id: 1 }), value: null },
      { key: JSON.stringify({ id: 4 }), value: wrap({ id: 4, title: 'schema-wrapped json' }) },
    ];
    await produce(producer, topic, messages);
    const config = kafkaConfig(brokers, [topic], { key_field: 'id' });
    const catalog = (await source.discover(config, ctxFor('mixed'))).streams;
    expect(catalog.map((s) => s.name)).toEqual([topic]);
    expect(catalog[0].source_defined_primary_key).toEqual([['id']]);

    const r = await drive(config, catalogFor(config, [topic]), undefined, ctxFor(uniqueName('mixed')));
    expect(r.error).toBeUndefined();
    const ups = r.upserts.map((d) => [d.id, d.title]).sort();
    expect(ups).toEqual([
      [1, 'plain json'],
      [2, 'snapshot'],
      [2, 'updated'],
      [3, 'created'],
      [4, 'schema-wrapped json'],
    ]);
    const dels = r.deletions.map((d) => d.id).sort();
    expect(dels).toEqual([1, 3, 3]);
    // Per key, the order is the topic's: id 2 ends updated, id 3 ends deleted.
    const last = new Map<unknown, string>();
    for (const d of r.records) last.set(d.id, d._ab_cdc_deleted_at ? 'deleted' : String(d.title));
    expect(Object.fromEntries(last)).toEqual({ 1: 'deleted', 2: 'updated', 3: 'deleted', 4: 'schema-wrapped json' });
    expect(r.completed).toEqual([topic]);
    // The final states cover every message: offsets equal the end of each partition.
    const final: Record<string, string> = {};
    for (const s of r.states) Object.assign(final, s.offsets);
    expect(final).toEqual(await endOffsets(topic));
  });

  it('reads 10k messages across partitions exactly once, then resumes from a state mid-topic', async () => {
    const topic = uniqueName('bulk');
    const n = 10_000;
    await produce(
      producer,
      topic,
      Array.from({ length: n }, (_, i) => ({ key: `doc-${i}`, value: { n: i, body: `text ${i}` } })),
    );
    const ends = await endOffsets(topic);
    expect(Object.keys(ends).length).toBe(4);
    expect(Object.values(ends).filter((o) => Number(o) > 0).length).toBeGreaterThan(1);

    const config = kafkaConfig(brokers, [topic], { checkpoint_every: 500 });
    const store = new MemoryStore();
    const r = await drive(config, catalogFor(config, [topic]), undefined, ctxFor(uniqueName('bulk')), store);
    expect(r.error).toBeUndefined();
    const keys = r.records.map((d) => d._kafka_key as string);
    expect(keys.length).toBe(n);
    expect(new Set(keys).size).toBe(n);
    expect(r.states.length).toBeGreaterThan(n / 500 / 2);
    expect((store.state.streams[topic] as { offsets: Record<string, string> }).offsets).toEqual(ends);

    // Resume: a state half-way through each partition → exactly the second halves, nothing else.
    const half = Object.fromEntries(Object.entries(ends).map(([p, o]) => [p, String(Math.floor(Number(o) / 2))]));
    const expected = Object.entries(ends).reduce((s, [p, o]) => s + Number(o) - Number(half[p]), 0);
    const again = await drive(
      config,
      catalogFor(config, [topic]),
      { streams: { [topic]: { offsets: half } } },
      ctxFor(uniqueName('bulk-resume')),
    );
    expect(again.error).toBeUndefined();
    expect(again.records.length).toBe(expected);
    const firstRun = new Map(r.records.map((d, i) => [d._kafka_key, i]));
    // What the resumed run read is exactly the tail the first run saw after the half-way offsets.
    expect(new Set(again.records.map((d) => d._kafka_key)).size).toBe(expected);
    for (const d of again.records) expect(firstRun.has(d._kafka_key)).toBe(true);

    // Full refresh ignores saved offsets and reads everything again.
    const full = await drive(
      config,
      catalogFor(config, [topic], 'full_refresh'),
      { streams: { [topic]: { offsets: ends } } },
      ctxFor(uniqueName('bulk-full')),
    );
    expect(full.records.length).toBe(n);
  });

  it('malformed messages are logged with topic/partition/offset and counted; over max_errors the sync fails', async () => {
    const topic = uniqueName('bad');
    await produce(producer, topic, [
      { key: 'a', value: { ok: 1 }, partition: 0 },
      { key: 'b', value: '{oops', partition: 0 },
      { key: null, value: { no: 'key' }, partition: 0 },
      { key: 'c', value: { ok: 2 }, partition: 0 },
    ]);
    const tolerant = kafkaConfig(brokers, [topic], { max_errors: 2 });
    const ok = await drive(tolerant, catalogFor(tolerant, [topic]), undefined, ctxFor(uniqueName('bad')));
    expect(ok.error).toBeUndefined();
    expect(ok.upserts.map((d) => d._kafka_key)).toEqual(['a', 'c']);
    expect(ok.warnings).toEqual([
      expect.stringMatching(new RegExp(`topic ${topic}, partition 0, offset 1\\).*not JSON`)),
      expect.stringMatching(new RegExp(`topic ${topic}, partition 0, offset 2\\).*no key`)),
    ]);
    // Skipped messages are behind the checkpoint: the next run does not count them again.
    const final: Record<string, string> = {};
    for (const s of ok.states) Object.assign(final, s.offsets);
    expect(final['0']).toBe('4');

    const strict = kafkaConfig(brokers, [topic], { max_errors: 1 });
    const bad = await drive(strict, catalogFor(strict, [topic]), undefined, ctxFor(uniqueName('bad-strict')));
    expect(bad.error).toBeInstanceOf(SluiceError);
    const e = bad.error as SluiceError;
    expect(e.message).toMatch(/^malformed Kafka message: .*no key.* \(2 malformed, more than max_errors 1\)/);
    expect(e.where).toBe(`topic ${topic}, partition 0, offset 2`);
    expect(e.hint).toMatch(/max_errors/);
    // Nothing after the failing message was delivered, and no state claims it.
    expect(bad.upserts.map((d) => d._kafka_key)).toEqual(['a']);
    for (const s of bad.states) expect(Number(s.offsets['0'] ?? 0)).toBeLessThanOrEqual(2);
  });

  it('two workers with one group id split the partitions and together deliver everything once', async () => {
    const topic = uniqueName('split');
    const n = 4000;
    await produce(
      producer,
      topic,
      Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: { i } })),
    );
    const ends = await endOffsets(topic);
    const group = uniqueName('group');
    const config = kafkaConfig(brokers, [topic], { group_id: group, checkpoint_every: 200 });
    const store = new MemoryStore();
    // Both join within the group's initial rebalance delay, so each gets partitions from the start.
    const [a, b] = await Promise.all([
      drive(config, catalogFor(config, [topic]), undefined, ctxFor('worker'), store),
      drive(config, catalogFor(config, [topic]), undefined, ctxFor('worker'), store),
    ]);
    expect(a.error).toBeUndefined();
    expect(b.error).toBeUndefined();
    const partitionsOf = (r: typeof a) => new Set(r.states.flatMap((s) => Object.keys(s.offsets)));
    const pa = partitionsOf(a);
    const pb = partitionsOf(b);
    expect(a.records.length).toBeGreaterThan(0);
    expect(b.records.length).toBeGreaterThan(0);
    expect([...pa].filter((p) => pb.has(p))).toEqual([]);
    const all = [...a.records, ...b.records].map((d) => d._kafka_key);
    expect(all.length).toBe(n);
    expect(new Set(all).size).toBe(n);
    // Each checkpointed only its own partitions; merged, the store has every partition at its end.
    expect((store.state.streams[topic] as { offsets: Record<string, string> }).offsets).toEqual(ends);

    // The group got the offsets after they were persisted (monitoring / hand-over)…
    const admin = testKafka(brokers).admin();
    await admin.connect();
    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    await admin.disconnect();
    expect(Object.fromEntries(committed[0].partitions.map((p) => [String(p.partition), p.offset]))).toEqual(ends);

    // …and a later run from the merged store reads nothing again.
    const c = await drive(config, catalogFor(config, [topic]), store.state, ctxFor('worker'), store);
    expect(c.error).toBeUndefined();
    expect(c.records.length).toBe(0);
  });

  it('a partition handed over by a rebalance resumes from its previous owner’s committed state', async () => {
    const topic = uniqueName('handover');
    await produce(
      producer,
      topic,
      Array.from({ length: 2000 }, (_, i) => ({ key: `k${i}`, value: { i } })),
    );
    const group = uniqueName('group');
    const config = kafkaConfig(brokers, [topic], { group_id: group, checkpoint_every: 100 });
    const store = new MemoryStore();
    // Worker A follows (like `sluice sync --follow`); worker B runs a bounded sync and leaves.
    const ctxA = ctxFor('worker', { follow: true });
    const seenA: string[] = [];
    const aRun = drive(config, catalogFor(config, [topic]), undefined, ctxA, store, (m) => {
      if (m.type === 'RECORD') seenA.push(m.record.data._kafka_key as string);
    });
    const b = await drive(config, catalogFor(config, [topic]), undefined, ctxFor('worker'), store);
    expect(b.error).toBeUndefined();
    expect(b.records.length).toBeGreaterThan(0);
    // After B left, A owns every partition; new messages reach A, B's old ones are not replayed.
    await produce(
      producer,
      topic,
      Array.from({ length: 100 }, (_, i) => ({ key: `late${i}`, value: { i } })),
    );
    const deadline = Date.now() + 30_000;
    while (seenA.filter((k) => k.startsWith('late')).length < 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    ctxA.abort();
    const a = await aRun;
    expect(a.error).toBeUndefined();
    const all = [...seenA, ...b.records.map((d) => d._kafka_key as string)];
    expect(all.filter((k) => k.startsWith('late')).length).toBe(100);
    expect(all.length).toBe(2100);
    expect(new Set(all).size).toBe(2100);
  });

  it('start_from latest skips history; a saved offset past the end (topic recreated) is reported and re-read', async () => {
    const topic = uniqueName('latest');
    await produce(
      producer,
      topic,
      Array.from({ length: 20 }, (_, i) => ({ key: `old${i}`, value: { i } })),
    );
    const ends = await endOffsets(topic);
    const config = kafkaConfig(brokers, [topic], { start_from: 'latest' });
    const store = new MemoryStore();
    const first = await drive(config, catalogFor(config, [topic]), undefined, ctxFor(uniqueName('latest')), store);
    expect(first.error).toBeUndefined();
    expect(first.records.length).toBe(0);
    // The starting points are checkpointed, so what arrives next is read by the next sync.
    expect((store.state.streams[topic] as { offsets: Record<string, string> }).offsets).toEqual(ends);
    await produce(
      producer,
      topic,
      Array.from({ length: 5 }, (_, i) => ({ key: `new${i}`, value: { i } })),
    );
    const second = await drive(config, catalogFor(config, [topic]), store.state, ctxFor(uniqueName('latest')), store);
    expect(second.records.map((d) => d._kafka_key).sort()).toEqual(['new0', 'new1', 'new2', 'new3', 'new4']);

    const ctx = ctxFor(uniqueName('recreated'));
    const beyond = Object.fromEntries(Object.keys(ends).map((p) => [p, '1000000']));
    const earliest = kafkaConfig(brokers, [topic]);
    const again = await drive(earliest, catalogFor(earliest, [topic]), { streams: { [topic]: { offsets: beyond } } }, ctx);
    expect(again.records.length).toBe(25);
    expect(ctx.logs.some((l) => l.level === 'warn' && /past the end of the partition.*recreated/.test(l.msg))).toBe(true);
  });

  it('discover, check and errors for people', async () => {
    const topic = uniqueName('disc');
    await produce(producer, topic, [{ key: 'x', value: { a: 1 } }]);
    const byPattern = kafkaConfig(brokers, { pattern: `${topic.split('-').slice(0, 2).join('-')}-.*` });
    const streams = (await source.discover(byPattern, ctxFor('d'))).streams;
    expect(streams.map((s) => s.name)).toEqual([topic]);
    expect(streams[0].source_defined_primary_key).toEqual([['_kafka_key']]);
    expect((await source.check(kafkaConfig(brokers, [topic]), ctxFor('d'))).ok).toBe(true);

    const missing = source.discover(kafkaConfig(brokers, ['no-such-topic']), ctxFor('d'));
    await expect(missing).rejects.toMatchObject({ kind: 'config', message: expect.stringContaining('"no-such-topic" not found') });

    const down = kafkaConfig('127.0.0.1:1', [topic], { connection_timeout_ms: 300 });
    const res = await source.check(down, ctxFor('d'));
    expect(res.ok).toBe(false);
    expect(res.message).toMatch(/cannot reach Kafka at 127\.0\.0\.1:1/);

    // The mock cluster has no SASL: the error says so instead of a protocol dump.
    const sasl = kafkaConfig(brokers, [topic], { sasl: { mechanism: 'plain', username: 'u', password: 'hunter2-secret' } });
    const s = await source.check(sasl, ctxFor('d'));
    expect(s.ok).toBe(false);
    expect(s.message).toMatch(/does not accept SASL/);
    expect(s.message).not.toContain('hunter2-secret');
  });
});

// A Debezium truncate (docs/kafka.md, "Truncate") is not applied: the run goes on with a warning
// naming the topic, partition and offset; rows from before it stay, later events apply, and the
// saved offsets pass it.
it('a Debezium truncate is skipped with a warning at its offset; nothing is deleted; the state passes it', async () => {
  const topic = uniqueName('truncate');
  const env = (op: string, after: unknown) => ({ op, before: null, after, source: { connector: 'postgresql', table: 'docs' }, ts_ms: 1 });
  await produce(producer, topic, [
    { key: JSON.stringify({ id: 1 }), value: env('r', { id: 1, title: 'one' }), partition: 0 },
    { key: JSON.stringify({ id: 2 }), value: env('r', { id: 2, title: 'two' }), partition: 0 },
    { key: null, value: env('t', null), partition: 0 }, // offset 2
    { key: JSON.stringify({ id: 3 }), value: env('c', { id: 3, title: 'after the truncate' }), partition: 0 },
  ]);
  const config = kafkaConfig(brokers, [topic], { key_field: 'id' });
  const r = await drive(config, catalogFor(config, [topic]), undefined, ctxFor(uniqueName('truncate')));
  expect(r.error).toBeUndefined();
  expect(r.deletions).toEqual([]);
  expect(r.upserts.map((d) => d.id)).toEqual([1, 2, 3]);
  expect(r.warnings).toEqual([
    expect.stringMatching(new RegExp(`^${topic}\\[0\\] offset 2: Debezium truncate event not applied: .*fresh snapshot`)),
  ]);
  const final: Record<string, string> = {};
  for (const s of r.states) Object.assign(final, s.offsets);
  expect(final['0']).toBe('4');
});
