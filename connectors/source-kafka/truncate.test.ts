// What the Kafka source does with a Debezium truncate event (docs/kafka.md, "Truncate"): it is not
// applied. The run goes on with a warning naming the topic, partition and offset; the rows from
// before it are still upserts (nothing is deleted), later events apply, and the saved offsets pass it.
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { testContext } from '../../src/testing/context.ts';
import { catalogFor, drive, kafkaConfig, produce, testProducer, uniqueName } from './testing.ts';

const brokers = inject('kafkaBrokers');
let producer: Producer;
beforeAll(async () => {
  producer = await testProducer(brokers);
});
afterAll(async () => {
  await producer?.disconnect();
});

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
  const r = await drive(config, catalogFor(config, [topic]), undefined, testContext({ connection: uniqueName('truncate') }));
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
