// Type mapping: values read back exactly (numeric precision, bigint, microsecond timestamps,
// jsonb, arrays, bytea, uuid), the discovered JSON Schema, and identifier quoting.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import source from '../index.ts';
import { catalog, config, context, createDatabase, drive, records, sql, stream } from './helpers.ts';

let url: string;

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_types');
  await sql(
    url,
    `CREATE TABLE typed (
       id bigint PRIMARY KEY,
       n numeric(40,20), f8 float8, i4 int, b bool, t text, d date,
       ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
       ia int[], ta text[], na numeric[], tsa timestamptz[], by bytea, iv interval
     );
     INSERT INTO typed VALUES
       (9223372036854775807, 12345678901234567890.12345678901234567890, 0.1, -7, true, 'héllo "quoted"\nline\ttab\\end ✓', '2024-02-29',
        '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{"a": [1, 2.5, "x"]}', '{"nested": {"k": null, "n": 12345678901234567890}}',
        '{1,2,NULL}', '{"a b","c,d",NULL}', '{1.10,2.000000000000000000001}', '{"2020-01-01 00:00:00+00"}', '\\xdeadbeef00', '1 day 02:03:04'),
       (1, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
     CREATE TABLE "Weird ""Name""" ("select" int PRIMARY KEY, "Mixed Case" text);
     INSERT INTO "Weird ""Name""" VALUES (1, 'ok');
     CREATE VIEW typed_view AS SELECT id, t FROM typed;
     CREATE SCHEMA other; CREATE TABLE other.things (id int PRIMARY KEY);
     CREATE SCHEMA keys; CREATE TABLE keys.composite (b int, a int, c text, note text, PRIMARY KEY (c, a));`,
  );
});

describe('postgres source types', () => {
  it('reads every common type exactly', async () => {
    const cfg = config(url);
    const { msgs } = await drive(cfg, catalog(stream('typed', 'full_refresh')), undefined, 'types');
    const rows = records(msgs).map((r) => r.data);
    const big = rows.find((r) => r.id === '9223372036854775807')!;
    expect(big).toBeDefined();
    expect(big.n).toBe('12345678901234567890.12345678901234567890');
    expect(big.f8).toBe(0.1);
    expect(big.i4).toBe(-7);
    expect(big.b).toBe(true);
    expect(big.t).toBe('héllo "quoted"\nline\ttab\\end ✓');
    expect(big.d).toBe('2024-02-29');
    expect(big.ts).toBe('2024-01-02T03:04:05.123456');
    expect(big.tstz).toBe('2024-01-02T01:04:05.123456Z');
    expect(big.u).toBe('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
    expect(big.j).toEqual({ a: [1, 2.5, 'x'] });
    expect(big.jb).toEqual({ nested: { k: null, n: 12345678901234567890 } });
    expect(big.ia).toEqual([1, 2, null]);
    expect(big.ta).toEqual(['a b', 'c,d', null]);
    expect(big.na).toEqual(['1.10', '2.000000000000000000001']);
    expect(big.tsa).toEqual(['2020-01-01T00:00:00Z']);
    expect(big.by).toBe(Buffer.from('deadbeef00', 'hex').toString('base64'));
    expect(big.iv).toBe('1 day 02:03:04');
    const nulls = rows.find((r) => r.id === '1')!;
    expect(nulls.f8).toBe('NaN');
    expect(nulls.n).toBeNull();
    expect(nulls.jb).toBeNull();
    // JSON round trip keeps exact values (what the engine serialises)
    expect(JSON.parse(JSON.stringify(big)).n).toBe('12345678901234567890.12345678901234567890');
  });

  it('discovers tables and views with JSON Schema types, keys and cursor candidates', async () => {
    const cat = await source.discover(config(url, { schemas: ['public', 'other'] }), context('types'));
    const names = cat.streams.map((s) => s.name).sort();
    expect(names).toEqual(['Weird "Name"', 'other.things', 'typed', 'typed_view']);
    const typed = cat.streams.find((s) => s.name === 'typed')!;
    const p = (typed.json_schema as { properties: Record<string, Record<string, unknown>> }).properties;
    expect(p.id.type).toBe('string'); // bigint stays exact
    expect(p.id.type).not.toContain('null');
    expect(p.n.type).toEqual(['string', 'null']);
    expect(p.n.format).toBe('decimal');
    expect(p.i4.type).toEqual(['integer', 'null']);
    expect(p.f8.type).toEqual(['number', 'null']);
    expect(p.b.type).toEqual(['boolean', 'null']);
    expect(p.tstz).toMatchObject({ format: 'date-time', airbyte_type: 'timestamp_with_timezone' });
    expect(p.ts).toMatchObject({ format: 'date-time', airbyte_type: 'timestamp_without_timezone' });
    expect(p.d).toMatchObject({ format: 'date' });
    expect(p.u).toMatchObject({ format: 'uuid' });
    expect(p.ia).toMatchObject({ type: ['array', 'null'], items: { type: 'integer' } });
    expect(p.by).toMatchObject({ contentEncoding: 'base64' });
    expect(p.jb.type).toContain('object');
    expect(typed.source_defined_primary_key).toEqual([['id']]);
    expect((typed as Record<string, unknown>).cursor_candidates).toEqual(expect.arrayContaining(['id', 'n', 'ts', 'tstz', 'd']));
    const view = cat.streams.find((s) => s.name === 'typed_view')!;
    expect(view.source_defined_primary_key).toBeUndefined();
    expect(cat.streams.find((s) => s.name === 'other.things')!.source_defined_primary_key).toEqual([['id']]);
    // A composite key in its declared order, not the columns' order.
    const keyed = await source.discover(config(url, { schemas: ['keys'] }), context('types'));
    expect(keyed.streams.map((s) => [s.name, s.source_defined_primary_key])).toEqual([['keys.composite', [['c'], ['a']]]]);
    const only = await source.discover(config(url, { include: ['typ*'], exclude: ['*_view'] }), context('types'));
    expect(only.streams.map((s) => s.name)).toEqual(['typed']);
  });

  it('quotes every identifier and reads views and custom SQL streams', async () => {
    const cfg = config(url, { streams: [{ name: 'big_ids', query: 'SELECT id, t FROM typed WHERE i4 IS NOT NULL', primary_key: ['id'] }] });
    const { msgs } = await drive(
      cfg,
      catalog(stream('Weird "Name"', 'full_refresh'), stream('typed_view', 'full_refresh'), stream('big_ids', 'full_refresh')),
      undefined,
      'types',
    );
    const recs = records(msgs);
    expect(recs.filter((r) => r.stream === 'Weird "Name"').map((r) => r.data)).toEqual([{ select: 1, 'Mixed Case': 'ok' }]);
    expect(recs.filter((r) => r.stream === 'typed_view')).toHaveLength(2);
    expect(recs.filter((r) => r.stream === 'big_ids').map((r) => r.data.id)).toEqual(['9223372036854775807']);
    const done = msgs.filter((m) => m.type === 'TRACE').length;
    expect(done).toBe(3);
  });

  it('sslmode: prefer falls back to plain TCP when the server has no TLS; require fails clearly', async () => {
    const prefer = await source.check(config(url, { sslmode: 'prefer' }), context('types'));
    expect(prefer.ok).toBe(true);
    const required = await source.check(config(url, { sslmode: 'require' }), context('types'));
    expect(required.ok).toBe(false);
    expect(required.message).toMatch(/cannot connect to postgres 127\.0\.0\.1:\d+\/srcpg_types: .*SSL/);
    await expect(source.discover(config(url, { sslmode: 'verify-full', ssl_ca: 'missing-ca.pem' }), context('types'))).rejects.toThrow(
      /cannot read the ssl_ca file/,
    );
  });

  it('check reports connectivity and CDC readiness; bad credentials fail with a clear message', async () => {
    const res = await source.check(config(url), context('types'));
    expect(res.ok).toBe(true);
    expect(res.warnings?.some((w) => w.includes('REPLICA IDENTITY DEFAULT') && w.includes('typed'))).toBe(true);
    const bad = new URL(url);
    bad.password = 'wrong';
    const res2 = await source.check(config(bad.toString()), context('types'));
    expect(res2.ok).toBe(false);
    expect(res2.message).toMatch(/password/);
    expect(res2.message).not.toContain('wrong');
  });
});
