// Kafka consumer lag reaches the Prometheus metrics: the source reports it at every checkpoint (a
// structured log line), SyncMetrics turns it into sluice_kafka_consumer_lag_messages. Against the
// librdkafka mock cluster; the expected lag is the partition's real end offset minus what was read.
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ConnectionSummary } from '../../src/engine/sync.ts';
import { SyncMetrics } from '../../src/metrics/index.ts';
import { testContext } from '../../src/testing/context.ts';
import source from './index.ts';
import { catalogFor, kafkaConfig, produce, testKafka, testProducer, uniqueName } from './testing.ts';

const brokers = inject('kafkaBrokers');
let producer: Producer;

beforeAll(async () => {
  producer = await testProducer(brokers);
});
afterAll(async () => {
  await producer?.disconnect();
});

async function endOffsets(topic: string): Promise<Map<number, number>> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)]));
  } finally {
    await admin.disconnect();
  }
}

async function lagGauge(m: SyncMetrics): Promise<Map<number, number>> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === 'sluice_kafka_consumer_lag_messages');
  return new Map((metric?.values ?? []).map((v) => [Number(v.labels.partition), v.value]));
}

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const summary = (name: string): ConnectionSummary => ({ name, status: 'succeeded', duration_ms: 0, states_committed: 0, streams: {} });

describe('Kafka consumer lag metric', () => {
  it('equals the messages left to read in each partition at every checkpoint, without extra requests', async () => {
    const topic = uniqueName('lag');
    const msgs = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ value: { id: from + i }, partition: 0 }));
    await produce(producer, topic, msgs(0, 50));
    // Partition 1 gets 3 messages too, so the test sees two partitions with different lags.
    await produce(
      producer,
      topic,
      [1, 2, 3].map((i) => ({ value: { id: 1000 + i }, partition: 1 })),
    );

    const metrics = new SyncMetrics('/etc/sluice/kafka.yaml');
    const connection = uniqueName('lagconn');
    metrics.observer.connectionStarted!(summary(connection), undefined);
    const ctx = testContext({ connection, follow: true, logger: metrics.tap(quiet) });
    const config = kafkaConfig(brokers, [topic], { key_field: 'id', checkpoint_every: 10 });

    const read = new Map<number, number>(); // records read per partition
    const checks: Array<{ lag: Map<number, number>; expected: Map<number, number>; end: number; producedMore: boolean }> = [];
    let producedMore = false;
    for await (const m of source.read(config, catalogFor(config, [topic]), undefined, ctx)) {
      if (m.type === 'RECORD') {
        const id = m.record.data.id as number;
        const p = id >= 1000 ? 1 : 0;
        read.set(p, (read.get(p) ?? 0) + 1);
      } else if (m.type === 'STATE') {
        const ends = await endOffsets(topic);
        const expected = new Map([...ends].map(([p, end]) => [p, end - (read.get(p) ?? 0)]));
        const lag = await lagGauge(metrics);
        checks.push({ lag, expected, end: ends.get(0)!, producedMore });
        await source.onStateCommitted!(config, m.state, { streams: {} }, ctx);
        if (!producedMore && (read.get(0) ?? 0) >= 20) {
          // Mid-read, more arrives: the next fetch's high watermark carries it into the lag.
          producedMore = true;
          await produce(producer, topic, msgs(50, 15));
        }
        if ((read.get(0) ?? 0) === 65 && (read.get(1) ?? 0) === 3 && lag.get(0) === 0) ctx.abort();
      }
    }
    // One worker owns all four partitions: each is reported, and at the first checkpoint (the
    // starting points) the gauge is exactly each partition's end minus what was read.
    expect(checks[0].lag).toEqual(checks[0].expected);
    expect(checks[0].lag.get(0)).toBe(50);
    expect(checks[0].lag.get(1)).toBe(3);
    // Until more was produced, every checkpoint's gauge equals the real remaining count.
    const before = checks.filter((c) => !c.producedMore);
    expect(before.length).toBeGreaterThanOrEqual(3);
    for (const c of before) expect(c.lag).toEqual(c.expected);
    // A checkpoint's gauge is as of the last fetch: messages produced since are not in it yet, so
    // it is never more than what is really left.
    for (const c of checks) for (const [p, v] of c.lag) expect(v).toBeLessThanOrEqual(c.expected.get(p)!);
    // The 15 produced mid-read arrived in a later fetch whose high watermark the gauge picked up:
    // some checkpoint then showed the exact remainder of partition 0 counted against its new end.
    expect(checks.some((c) => c.end === 65 && c.lag.get(0)! > 0 && c.lag.get(0) === c.expected.get(0))).toBe(true);
    const last = checks.at(-1)!;
    expect(last.lag).toEqual(last.expected);
    expect([...last.lag.values()]).toEqual([0, 0, 0, 0]);
  });
});
