import { describe, expect, it } from 'vitest';
import { KafkaConfigSchema, kafkaClientOptions, keyPaths, topicMatcher } from './config.ts';
import { decodeMessage, parseKey } from './decode.ts';
import { writeFileSync } from 'node:fs';
import { scratchDir } from '../../src/testing/context.ts';
import { join } from 'node:path';

const b = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const byKey = { format: 'auto' as const, primaryKey: [['_kafka_key']] };
const byId = { format: 'auto' as const, primaryKey: [['id']] };

describe('Kafka message decoding', () => {
  it('JSON value: record = value, primary key from the message key', () => {
    expect(decodeMessage(b('k1'), b({ title: 'a' }), byKey)).toEqual({ op: 'upsert', data: { title: 'a', _kafka_key: 'k1' } });
    // JSON keys: a one-field object identifies by its value, composite ones by canonical JSON.
    expect(decodeMessage(b({ id: 7 }), b({ t: 1 }), byKey)).toEqual({ op: 'upsert', data: { t: 1, _kafka_key: '7' } });
    expect(decodeMessage(b({ b: 2, a: 1 }), b({ t: 1 }), byKey)).toEqual({ op: 'upsert', data: { t: 1, _kafka_key: '{"a":1,"b":2}' } });
    expect(parseKey(b({ schema: { type: 'struct' }, payload: { id: 3 } }))?.text).toBe('3');
    // Binary keys stay distinct (hex), instead of collapsing into replacement characters.
    const k1 = parseKey(Buffer.from([0xff, 0x01]))?.text;
    const k2 = parseKey(Buffer.from([0xfe, 0x01]))?.text;
    expect([k1, k2]).toEqual(['ff01', 'fe01']);
  });

  it('key_field: from the value, else from the key', () => {
    expect(decodeMessage(null, b({ id: 5, t: 'x' }), byId)).toEqual({ op: 'upsert', data: { id: 5, t: 'x' } });
    expect(decodeMessage(b({ id: 6 }), b({ t: 'x' }), byId)).toEqual({ op: 'upsert', data: { t: 'x', id: 6 } });
    expect(decodeMessage(b('9'), b({ t: 'x' }), byId)).toEqual({ op: 'upsert', data: { t: 'x', id: 9 } });
    const nested = decodeMessage(null, b({ doc: { ref: 'r1' }, t: 1 }), { format: 'json', primaryKey: [['doc', 'ref']] });
    expect(nested).toEqual({ op: 'upsert', data: { doc: { ref: 'r1' }, t: 1 } });
  });

  it('Debezium envelopes with and without the schema wrapper', () => {
    const env = (op: string, before: unknown, after: unknown) => ({ op, before, after, source: { table: 't' }, ts_ms: 1 });
    for (const wrap of [(v: unknown) => v, (v: unknown) => ({ schema: { type: 'struct' }, payload: v })]) {
      expect(decodeMessage(b(wrap({ id: 1 })), b(wrap(env('c', null, { id: 1, n: 'a' }))), byId)).toEqual({
        op: 'upsert',
        data: { id: 1, n: 'a' },
      });
      expect(decodeMessage(b(wrap({ id: 1 })), b(wrap(env('r', null, { id: 1, n: 'a' }))), byId)).toEqual({
        op: 'upsert',
        data: { id: 1, n: 'a' },
      });
      expect(decodeMessage(b(wrap({ id: 1 })), b(wrap(env('u', { id: 1, n: 'a' }, { id: 1, n: 'b' }))), byId)).toEqual({
        op: 'upsert',
        data: { id: 1, n: 'b' },
      });
      expect(decodeMessage(b(wrap({ id: 1 })), b(wrap(env('d', { id: 1, n: 'b' }, null))), byId)).toEqual({ op: 'delete', key: { id: 1 } });
      // Delete with only the key in `before` (REPLICA IDENTITY DEFAULT) and no key field there: from the message key.
      expect(decodeMessage(b(wrap({ id: 2 })), b(wrap(env('d', null, null))), byId)).toEqual({ op: 'delete', key: { id: 2 } });
      expect(decodeMessage(b(wrap({ id: 2 })), b(wrap(env('d', null, null))), byKey)).toEqual({ op: 'delete', key: { _kafka_key: '2' } });
    }
    expect(decodeMessage(b({ id: 1 }), b({ op: 't', before: null, after: null }), byId).op).toBe('skip');
    expect(decodeMessage(b({ id: 1 }), b({ op: 'u', before: null, after: null }), byId)).toMatchObject({ op: 'malformed' });
    // format json never interprets envelopes; format debezium requires one.
    expect(decodeMessage(b({ id: 1 }), b(env('c', null, { id: 1 })), { format: 'json', primaryKey: [['id']] })).toMatchObject({
      op: 'upsert',
      data: { op: 'c' },
    });
    expect(decodeMessage(b({ id: 1 }), b({ id: 1 }), { format: 'debezium', primaryKey: [['id']] })).toMatchObject({ op: 'malformed' });
    // ExtractNewRecordState output marks deletions with __deleted.
    expect(decodeMessage(null, b({ id: 4, __deleted: 'true' }), byId)).toEqual({ op: 'delete', key: { id: 4 } });
  });

  it('tombstones are deletions of the key', () => {
    expect(decodeMessage(b({ id: 3 }), null, byId)).toEqual({ op: 'delete', key: { id: 3 } });
    expect(decodeMessage(b('k9'), null, byKey)).toEqual({ op: 'delete', key: { _kafka_key: 'k9' } });
    expect(decodeMessage(null, null, byKey)).toMatchObject({ op: 'malformed', reason: expect.stringContaining('no key') });
  });

  it('malformed: not JSON, not an object, missing key', () => {
    expect(decodeMessage(b('k'), b('{not json'), byKey)).toMatchObject({ op: 'malformed', reason: expect.stringContaining('not JSON') });
    expect(decodeMessage(b('k'), b('[1,2]'), byKey)).toMatchObject({ op: 'malformed', reason: expect.stringContaining('array') });
    expect(decodeMessage(b('k'), Buffer.alloc(0), byKey)).toMatchObject({ op: 'malformed' });
    expect(decodeMessage(null, b({ t: 1 }), byKey)).toMatchObject({ op: 'malformed', reason: expect.stringContaining('no key') });
    expect(decodeMessage(null, b({ t: 1 }), byId)).toMatchObject({ op: 'malformed', reason: expect.stringContaining('"id"') });
  });
});

describe('Kafka config', () => {
  it('defaults, topic patterns and key paths', () => {
    const c = KafkaConfigSchema.parse({ brokers: 'a:1, b:2', topics: { pattern: 'orders\\..*' }, key_field: 'doc.id' });
    expect(c.format).toBe('auto');
    expect(c.max_errors).toBe(0);
    expect(kafkaClientOptions(c, '/').brokers).toEqual(['a:1', 'b:2']);
    expect(keyPaths(c)).toEqual([['doc', 'id']]);
    const m = topicMatcher(c);
    expect([m('orders.eu'), m('xorders.eu'), m('orders')]).toEqual([true, false, false]);
    expect(() => topicMatcher(KafkaConfigSchema.parse({ brokers: ['a:1'], topics: { pattern: '(' } }))).toThrow(
      /not a valid regular expression/,
    );
    expect(KafkaConfigSchema.safeParse({ brokers: ['a:1'], topics: ['t'], unknown: 1 }).success).toBe(false);
  });

  it('SASL and TLS options (PEM files relative to the pipeline file)', () => {
    const dir = scratchDir('kafka-ssl-');
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n');
    const c = KafkaConfigSchema.parse({
      brokers: ['a:1'],
      topics: ['t'],
      sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' },
      ssl: { ca: 'ca.pem', reject_unauthorized: false },
    });
    const o = kafkaClientOptions(c, dir);
    expect(o.sasl).toEqual({ mechanism: 'scram-sha-512', username: 'u', password: 'p' });
    expect(o.ssl).toMatchObject({ rejectUnauthorized: false, ca: [expect.stringContaining('BEGIN CERTIFICATE')] });
    const missing = KafkaConfigSchema.parse({ brokers: ['a:1'], topics: ['t'], ssl: { ca: 'nope.pem' } });
    expect(() => kafkaClientOptions(missing, dir)).toThrow(/cannot read ssl.ca file/);
    expect(kafkaClientOptions(KafkaConfigSchema.parse({ brokers: ['a:1'], topics: ['t'], ssl: true }), dir).ssl).toBe(true);
  });
});
