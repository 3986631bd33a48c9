// Source digests (ctx.storedDigests): with skipping off every RECORD of a keyed full refresh carries
// its row's digest and is otherwise the plain read's; with skipping on, pass 1 offers each row's key
// and digest to the check and only the rows it rejects are read and emitted, exactly as a plain
// read emits them. Checked against a fake StoredDigests on the real server of the test run.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { DigestCheck, SourceState, StoredDigests } from '../../../src/protocol/connector.ts';
import type { AirbyteMessage, ConfiguredCatalog, StateMessage } from '../../../src/protocol/messages.ts';
import { canonicalJson } from '../../../src/protocol/identity.ts';
import { mulberry32 } from '../../../test/helpers/random.ts';
import { runSourceConformance } from '../../../src/testing/source.ts';
import source from '../index.ts';
import type { PostgresSourceConfig } from '../config.ts';
import { applyState, catalog, config, context, createDatabase, records, sql, states, stream } from './helpers.ts';

let url: string;

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_digests');
  await sql(
    url,
    `CREATE TABLE items (id int PRIMARY KEY, body text, n int, flag bool, doc jsonb, at timestamptz);
     INSERT INTO items SELECT g, 'row ' || g || E'\\twith tab, "quotes" and \\\\ backslash', g * 10, g % 2 = 0,
                              jsonb_build_object('k', g), '2024-05-01 12:00:00+00'::timestamptz + g * interval '1 second'
       FROM generate_series(1, 95) g;
     INSERT INTO items VALUES (96, NULL, NULL, NULL, NULL, NULL), (97, '', 0, false, '{}', '2024-01-01'), (98, 'NULL', NULL, NULL, 'null', NULL);
     CREATE TABLE pairs (a int, b text, n int, PRIMARY KEY (a, b));
     INSERT INTO pairs SELECT g % 7, 'k' || g, g FROM generate_series(1, 60) g;
     CREATE TABLE texts (k text PRIMARY KEY, v text);
     INSERT INTO texts VALUES ('plain', '1'), ('it''s', '2'), ('back\\slash', '3'), ('"dq"', '4'), ('tab	in', '5'),
       (E'new\\nline', '6'), ('ünïcødé', '7'), ('emoji 🎉', '8'), ('日本語', '9'), ('(a,b)', '10'), ('', '11'), ('\\N', '12');
     CREATE TABLE uuids (id uuid PRIMARY KEY, v int);
     INSERT INTO uuids SELECT md5(g::text)::uuid, g FROM generate_series(1, 30) g;
     CREATE TABLE stamps (at timestamptz PRIMARY KEY, v int);
     INSERT INTO stamps SELECT '2024-05-01 00:00:00.123456+00'::timestamptz + g * interval '1 hour 1 microsecond', g FROM generate_series(1, 30) g;
     CREATE TABLE amounts (amount numeric(30,10) PRIMARY KEY, v int);
     INSERT INTO amounts SELECT (g * 1234567.891 / 7)::numeric(30,10), g FROM generate_series(1, 30) g;
     CREATE TABLE floats (x float8 PRIMARY KEY, v int);
     INSERT INTO floats SELECT g / 3.0, g FROM generate_series(1, 10) g;`,
  );
});

interface Offer {
  key: Record<string, unknown>;
  digest: string;
}

/**
 * A StoredDigests answering for `stream` only; `accept` decides `unchanged` and every offer is kept.
 * `delayMs`: forStream resolves that late (the engine's waits for the destination's listing).
 */
function fakeStored(stream: string, skipping: boolean, accept: (key: Record<string, unknown>) => boolean = () => false, delayMs = 0) {
  const offers: Offer[] = [];
  const asked: string[] = [];
  const check: DigestCheck = {
    skipping,
    unchanged(key, digest) {
      offers.push({ key: { ...key }, digest });
      return accept(key);
    },
  };
  const stored: StoredDigests = {
    async forStream(name) {
      asked.push(name);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      return name === stream ? check : undefined;
    },
  };
  return { stored, offers, asked };
}

async function run(
  cfg: PostgresSourceConfig,
  cat: ConfiguredCatalog,
  stored?: StoredDigests,
  opts: { state?: SourceState; stopAfterStates?: number; warnings?: string[] } = {},
): Promise<{ msgs: AirbyteMessage[]; state: SourceState | undefined }> {
  const ctx = { ...context('digests'), ...(stored ? { storedDigests: stored } : {}) };
  if (opts.warnings) ctx.logger = { ...ctx.logger, warn: (m: string) => opts.warnings!.push(m) };
  const msgs: AirbyteMessage[] = [];
  let state = opts.state;
  let n = 0;
  for await (const m of source.read(cfg, cat, opts.state, ctx)) {
    msgs.push(m);
    if (m.type === 'STATE') {
      state = applyState(state, (m as { state: StateMessage }).state);
      if (opts.stopAfterStates && ++n >= opts.stopAfterStates) break;
    }
  }
  return { msgs, state };
}

type Rec = { stream: string; data: Record<string, unknown>; digest?: string };
/** The RECORDs without emitted_at (it differs per read). */
const recs = (msgs: AirbyteMessage[]): Rec[] =>
  (records(msgs) as Rec[]).map((r) => ({ stream: r.stream, data: r.data, ...(r.digest !== undefined ? { digest: r.digest } : {}) }));
const DIGEST = /^[0-9a-f]{12}:-?[0-9]{1,19}$/;
/** STATE blobs without the completion time (it differs per read). */
const stateBlobs = (msgs: AirbyteMessage[]) =>
  states(msgs).map((s) => {
    const { completed_at, ...rest } = s.stream!.stream_state as Record<string, unknown>;
    return completed_at ? { ...rest, completed: true } : rest;
  });
const complete = (msgs: AirbyteMessage[], name: string) =>
  msgs.some(
    (m) => m.type === 'TRACE' && m.trace.stream_status?.status === 'COMPLETE' && m.trace.stream_status.stream_descriptor.name === name,
  );

/** Plain read, then a read with skipping off: the digests by key, and the plain records. */
async function baseline(name: string, key: (d: Record<string, unknown>) => string, extra: Record<string, unknown> = {}) {
  const cfg = config(url, extra);
  const plain = await run(cfg, catalog(stream(name, 'full_refresh')));
  const withDigests = await run(cfg, catalog(stream(name, 'full_refresh')), fakeStored(name, false).stored);
  const digestOf = new Map(recs(withDigests.msgs).map((r) => [key(r.data), r.digest!]));
  return { cfg, plain: recs(plain.msgs), digestOf };
}

describe('postgres source digests, skipping off', () => {
  it('emits the plain read’s records, states and order, each with a digest', async () => {
    const cfg = config(url, { batch_size: 10, digest_page_size: 10 });
    const plain = await run(cfg, catalog(stream('items', 'full_refresh')));
    const fake = fakeStored('items', false);
    const digested = await run(cfg, catalog(stream('items', 'full_refresh')), fake.stored);
    expect(fake.asked).toEqual(['items']);
    expect(fake.offers).toEqual([]);
    const withDigests = recs(digested.msgs);
    expect(recs(plain.msgs).every((r) => r.digest === undefined)).toBe(true);
    for (const r of withDigests) expect(r.digest).toMatch(DIGEST);
    expect(withDigests.map(({ digest: _d, ...r }) => r)).toEqual(recs(plain.msgs).map(({ digest: _d, ...r }) => r));
    expect(new Set(withDigests.map((r) => r.digest)).size).toBe(98);
    expect(stateBlobs(digested.msgs)).toEqual(stateBlobs(plain.msgs));
    expect(complete(digested.msgs, 'items')).toBe(true);
  });

  it('is today’s read, the engine not even asked, with source_digests: false', async () => {
    const fake = fakeStored('items', true, () => true);
    const off = await run(config(url, { source_digests: false }), catalog(stream('items', 'full_refresh')), fake.stored);
    expect(fake.asked).toEqual([]);
    expect(recs(off.msgs)).toHaveLength(98);
    expect(recs(off.msgs).every((r) => r.digest === undefined)).toBe(true);
  });

  it('is today’s read when there is no ctx.storedDigests or the stream gets no check', async () => {
    const cfg = config(url);
    const none = await run(cfg, catalog(stream('items', 'full_refresh')), fakeStored('other', true).stored);
    expect(recs(none.msgs)).toHaveLength(98);
    expect(recs(none.msgs).every((r) => r.digest === undefined)).toBe(true);
  });

  it('distinguishes NULL from empty and from the text NULL, and changes with any column', async () => {
    const { digestOf } = await baseline('items', (d) => String(d.id));
    expect(new Set([digestOf.get('96'), digestOf.get('97'), digestOf.get('98')]).size).toBe(3);
    const updates = [
      `UPDATE items SET n = n + 1 WHERE id = 1`,
      `UPDATE items SET flag = NOT flag WHERE id = 2`,
      `UPDATE items SET doc = '{"k": 3, "x": 1}' WHERE id = 3`,
      `UPDATE items SET at = at + interval '1 microsecond' WHERE id = 4`,
      `UPDATE items SET body = NULL WHERE id = 5`,
      `UPDATE items SET n = 0 WHERE id = 96`,
    ];
    await sql(url, updates.join(';'));
    try {
      const after = await baseline('items', (d) => String(d.id));
      const changed = [...after.digestOf].filter(([k, v]) => digestOf.get(k) !== v).map(([k]) => k);
      expect(changed.sort()).toEqual(['1', '2', '3', '4', '5', '96']);
    } finally {
      await sql(
        url,
        `UPDATE items SET n = 10, flag = false, doc = '{"k": 1}' WHERE id = 1;
         UPDATE items SET n = 20, flag = true, doc = '{"k": 2}' WHERE id = 2;
         UPDATE items SET doc = '{"k": 3}' WHERE id = 3;
         UPDATE items SET at = at - interval '1 microsecond' WHERE id = 4;
         UPDATE items SET body = 'row 5' || E'\\twith tab, "quotes" and \\\\ backslash' WHERE id = 5;
         UPDATE items SET n = NULL WHERE id = 96;`,
      );
    }
    const restored = await baseline('items', (d) => String(d.id));
    expect(restored.digestOf).toEqual(digestOf);
  });

  it('changes every digest when a column is renamed (the record changes, the row text does not)', async () => {
    await sql(url, `CREATE TABLE renamed (id int PRIMARY KEY, a text); INSERT INTO renamed VALUES (1, 'x'), (2, 'y')`);
    const before = await baseline('renamed', (d) => String(d.id));
    await sql(url, `ALTER TABLE renamed RENAME COLUMN a TO b`);
    const after = await baseline('renamed', (d) => String(d.id));
    expect(after.digestOf.get('1')).not.toBe(before.digestOf.get('1'));
    expect(after.digestOf.get('2')).not.toBe(before.digestOf.get('2'));
    // Same hash part: only the tag tells the two shapes apart.
    expect(after.digestOf.get('1')!.split(':')[1]).toBe(before.digestOf.get('1')!.split(':')[1]);
  });
});

describe('postgres source digests follow the record', () => {
  // Values each column can take: the tricky pairs are equal by the type's = but differ in text
  // (numeric scale, jsonb number forms, -0, case under a case-insensitive collation), or are
  // neighbours in the digest's own encoding (NULL, '', 'NULL', commas, quotes, parentheses).
  const POOLS: Record<string, string[]> = {
    t: [`NULL`, `''`, `'NULL'`, `'\\N'`, `'a,b'`, `'(a)'`, `'"q"'`, `'x\\y'`, `'émoji 🎉'`, `'A'`, `'a'`, `'{}'`],
    ci: [`NULL`, `'abc'`, `'ABC'`, `'Abc'`, `''`],
    vc: [`NULL`, `'v'`, `'V'`, `''`, `'v '`],
    ch: [`NULL`, `'x'`, `'x '`, `'y'`],
    n8: [`NULL`, `1`, `4294967296`, `-1`, `0`, `-4294967297`],
    num: [`NULL`, `1.0`, `1.00`, `1`, `'NaN'`, `0`, `-0.0`],
    f8: [`NULL`, `0`, `'-0'`, `0.1`, `'NaN'`, `'Infinity'`],
    js: [`NULL`, `'{"a": 1.0}'`, `'{"a": 1.00}'`, `'{"a": 1}'`, `'null'`, `'""'`, `'{"a": "1"}'`],
    arr: [`NULL`, `'{}'`, `'{"a,b"}'`, `'{a,b}'`, `'{NULL}'`, `'{"NULL"}'`, `'{""}'`],
    by: [`NULL`, `'\\x'`, `'\\x00'`, `'\\x0000'`, `'\\x2c'`],
    ts: [`NULL`, `'2024-01-01 00:00:00+00'`, `'2024-01-01 00:00:00.000001+00'`, `'infinity'`],
    // bpchar without a length keeps trailing spaces, which its cast to text drops.
    bp: [`NULL`, `'x'`, `'x '`, `''`, `' '`],
    b: [`NULL`, `true`, `false`],
    ip: [`NULL`, `'10.0.0.1'`, `'10.0.0.1/32'`, `'10.0.0.1/24'`, `'::1'`],
    en: [`NULL`, `'a'`, `'b'`, `'a,b'`],
    ia: [`NULL`, `'{}'`, `'{1,2}'`, `'{1,NULL}'`, `'{NULL}'`],
  };
  const TYPES: Record<string, string> = {
    t: 'text',
    ci: 'text COLLATE ci_test',
    vc: 'varchar(5)',
    ch: 'char(2)',
    n8: 'bigint',
    num: 'numeric',
    f8: 'float8',
    js: 'jsonb',
    arr: 'text[]',
    by: 'bytea',
    ts: 'timestamptz',
    bp: 'bpchar',
    b: 'bool',
    ip: 'inet',
    en: 'digest_mood',
    ia: 'int[]',
  };

  it('a digest changes exactly when the row text does, so whenever the record does, over random single-column changes', async () => {
    const cols = Object.keys(POOLS);
    await sql(
      url,
      `CREATE COLLATION IF NOT EXISTS ci_test (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
       DROP TYPE IF EXISTS digest_mood CASCADE; CREATE TYPE digest_mood AS ENUM ('a', 'b', 'a,b');
       CREATE TABLE mut (id int PRIMARY KEY, ${cols.map((c) => `${c} ${TYPES[c]}`).join(', ')});
       INSERT INTO mut (id) SELECT g FROM generate_series(1, 150) g;`,
    );
    const random = mulberry32(11);
    const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)];
    const cfg = config(url);
    // The digest against the simple reference, the row's whole text (what md5(ROW(…)::text) hashed).
    const snapshot = async () => {
      const { msgs } = await run(cfg, catalog(stream('mut', 'full_refresh')), fakeStored('mut', false).stored);
      const texts = new Map((await sql(url, 'SELECT id, mut::text AS t FROM mut')).rows.map((r) => [r.id as number, r.t as string]));
      return new Map(
        recs(msgs).map((r) => [
          r.data.id as number,
          { record: canonicalJson(r.data), digest: r.digest!, text: texts.get(r.data.id as number)! },
        ]),
      );
    };
    let before = await snapshot();
    let changes = 0;
    let sameRecord = 0;
    for (let round = 0; round < 8; round++) {
      const updates: string[] = [];
      for (let id = 1; id <= 150; id++) {
        const c = pick(cols);
        updates.push(`UPDATE mut SET ${c} = ${pick(POOLS[c])} WHERE id = ${id}`);
      }
      await sql(url, updates.join(';\n'));
      const after = await snapshot();
      for (const [id, b] of before) {
        const a = after.get(id)!;
        const label = `row ${id}, round ${round}: ${b.text} → ${a.text}`;
        // Same digest exactly when the row's text is the same; a changed record always changes its text.
        expect(a.digest === b.digest, label).toBe(a.text === b.text);
        if (a.record !== b.record) expect(a.text, label).not.toBe(b.text);
        if (a.text === b.text) sameRecord++;
        else changes++;
      }
      before = after;
    }
    // Both sides of the equivalence were exercised.
    expect(changes).toBeGreaterThan(500);
    expect(sameRecord).toBeGreaterThan(50);
  });

  it("tells apart swapped values, NULL and '' in any column, and equal values in two columns", async () => {
    // One row taking each value in turn: its digest must differ every time (hashes combined by XOR
    // would cancel out without a seed per column).
    const variants = [
      `'x', 'y', 1`,
      `'y', 'x', 1`,
      `'x', NULL, 1`,
      `NULL, 'x', 1`,
      `'', NULL, 1`,
      `NULL, '', 1`,
      `NULL, NULL, 1`,
      `'', '', 1`,
      `'x', 'x', 1`,
      `'y', 'y', 1`,
      `'x', 'y', NULL`,
      `'x', 'y', 0`,
    ];
    await sql(url, `CREATE TABLE swaps (id int PRIMARY KEY, a text, b text, n int); INSERT INTO swaps VALUES (1, NULL, NULL, NULL)`);
    const digests: string[] = [];
    for (const v of variants) {
      await sql(url, `UPDATE swaps SET (a, b, n) = (${v}) WHERE id = 1`);
      digests.push((await baseline('swaps', (d) => String(d.id))).digestOf.get('1')!);
    }
    expect(new Set(digests).size).toBe(variants.length);
    // The same content again gives the same digest.
    await sql(url, `UPDATE swaps SET (a, b, n) = (${variants[0]}) WHERE id = 1`);
    expect((await baseline('swaps', (d) => String(d.id))).digestOf.get('1')).toBe(digests[0]);
  });

  it('reads a custom query whose columns share a name with digests of its whole row', async () => {
    const extra = { streams: [{ name: 'dup', query: 'SELECT id, n AS x, body AS x FROM items', primary_key: ['id'] }] };
    const { plain, digestOf } = await baseline('dup', (d) => String(d.id), extra);
    expect(plain).toHaveLength(98);
    expect(new Set(digestOf.values()).size).toBe(98);
  });
});

describe('postgres source digests, skipping on', () => {
  /** Checks one keyed stream: accepts `accept`, expects exactly the other rows, as the plain read has them. */
  async function skipsExactly(name: string, key: (d: Record<string, unknown>) => string, accept: (k: string) => boolean, extra = {}) {
    const { cfg, plain, digestOf } = await baseline(name, key, extra);
    expect(plain.length).toBeGreaterThan(0);
    const fake = fakeStored(name, true, (k) => accept(key(k)));
    const { msgs } = await run(cfg, catalog(stream(name, 'full_refresh')), fake.stored);
    // Every row offered once, with the digest the full read gives it.
    expect(fake.offers.map((o) => key(o.key)).sort()).toEqual(plain.map((r) => key(r.data)).sort());
    for (const o of fake.offers) expect(o.digest).toBe(digestOf.get(key(o.key)));
    // The key record holds the key columns valued as in the record.
    for (const o of fake.offers) {
      const full = plain.find((r) => key(r.data) === key(o.key))!;
      for (const [k, v] of Object.entries(o.key)) expect(v).toEqual(full.data[k]);
    }
    const emitted = recs(msgs);
    const expected = plain.filter((r) => !accept(key(r.data)));
    expect(emitted.map(({ digest: _d, ...r }) => r)).toEqual(expected);
    for (const r of emitted) expect(r.digest).toBe(digestOf.get(key(r.data)));
    expect(complete(msgs, name)).toBe(true);
    return { msgs, fake, plain };
  }

  it('emits exactly the rejected rows, deep-equal to the plain read’s', async () => {
    await skipsExactly(
      'items',
      (d) => String(d.id),
      (k) => Number(k) % 3 !== 0,
    );
  });

  it('emits nothing but the states and COMPLETE when every row is unchanged', async () => {
    const { msgs } = await skipsExactly(
      'items',
      (d) => String(d.id),
      () => true,
      { batch_size: 40, digest_page_size: 40 },
    );
    expect(recs(msgs)).toEqual([]);
    expect(stateBlobs(msgs)).toEqual([
      { mode: 'full_refresh', pk_after: [40] },
      { mode: 'full_refresh', pk_after: [80] },
      { mode: 'full_refresh', completed: true },
    ]);
  });

  it('reads the first page while the check is pending, and reads as asked once it resolves', async () => {
    const { cfg, plain, digestOf } = await baseline('items', (d) => String(d.id));
    const cat = catalog(stream('items', 'full_refresh'));
    const page = { batch_size: 30, digest_page_size: 30 };
    // Skipping, late: the same rows out as with a check at hand, every row offered once.
    const late = fakeStored('items', true, (k) => Number(k.id) % 3 !== 0, 150);
    const skipped = await run(config(url, page), cat, late.stored);
    expect(recs(skipped.msgs)).toEqual(
      plain.filter((r) => Number(r.data.id) % 3 === 0).map((r) => ({ ...r, digest: digestOf.get(String(r.data.id)) })),
    );
    expect(late.offers.map((o) => o.key.id)).toEqual(plain.map((r) => r.data.id));
    // Not skipping, late: the first page read meanwhile is dropped; a read in full with digests follows, as without the wait.
    const full = await run(config(url, page), cat, fakeStored('items', false, () => true, 150).stored);
    const fullNow = await run(config(url, page), cat, fakeStored('items', false).stored);
    expect(recs(full.msgs)).toEqual(recs(fullNow.msgs));
    expect(stateBlobs(full.msgs)).toEqual(stateBlobs(fullNow.msgs));
    expect(recs(full.msgs)).toHaveLength(plain.length);
    // No check, late: today's read, without digests.
    const none = await run(config(url, page), cat, fakeStored('other', true, () => true, 150).stored);
    expect(recs(none.msgs)).toEqual(plain);
    void cfg;
  });

  it('pages by primary key with a checkpoint after each page, and resumes from one', async () => {
    const cfg = config(url, { batch_size: 7, digest_page_size: 7 });
    const accept = (k: Record<string, unknown>) => Number(k.id) % 2 === 0;
    const all = await skipsExactly(
      'items',
      (d) => String(d.id),
      (k) => Number(k) % 2 === 0,
      { batch_size: 7, digest_page_size: 7 },
    );
    const pages = stateBlobs(all.msgs).filter((s) => s.pk_after);
    expect(pages.map((s) => s.pk_after)).toEqual(Array.from({ length: 14 }, (_, i) => [7 * (i + 1)]));
    // Each checkpoint follows its page's records: stop after the third, resume from it.
    const first = await run(cfg, catalog(stream('items', 'full_refresh')), fakeStored('items', true, accept).stored, {
      stopAfterStates: 3,
    });
    expect(first.state?.streams.items).toEqual({ mode: 'full_refresh', pk_after: [21] });
    expect(recs(first.msgs).map((r) => r.data.id)).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21]);
    const fake = fakeStored('items', true, accept);
    const second = await run(cfg, catalog(stream('items', 'full_refresh')), fake.stored, { state: first.state });
    expect(fake.offers.map((o) => o.key.id)).toEqual(Array.from({ length: 77 }, (_, i) => i + 22));
    expect(recs(second.msgs).map((r) => r.data.id)).toEqual(Array.from({ length: 77 }, (_, i) => i + 22).filter((id) => id % 2 === 1));
  });

  it('handles a composite primary key', async () => {
    await skipsExactly(
      'pairs',
      (d) => `${d.a}/${d.b}`,
      (k) => !k.endsWith('3'),
      { batch_size: 9, digest_page_size: 9 },
    );
  });

  it('re-reads text keys with quotes, backslashes, tabs, newlines and non-ASCII exactly', async () => {
    const { fake } = await skipsExactly(
      'texts',
      (d) => String(d.k),
      (k) => k === 'plain',
      { batch_size: 4, digest_page_size: 4 },
    );
    expect(fake.offers.map((o) => o.key.k)).toContain('emoji 🎉');
  });

  it('handles uuid, timestamptz, numeric and float keys', async () => {
    await skipsExactly(
      'uuids',
      (d) => String(d.id),
      (k) => k < '8',
      { batch_size: 8, digest_page_size: 8 },
    );
    await skipsExactly(
      'stamps',
      (d) => String(d.at),
      (k) => k.endsWith('1Z'),
      { batch_size: 8, digest_page_size: 8 },
    );
    await skipsExactly(
      'amounts',
      (d) => String(d.amount),
      (k) => k.includes('5'),
      { batch_size: 8, digest_page_size: 8 },
    );
    // float keys are not paged by key (their text might not round-trip): every row is emitted with its digest.
    const { cfg, plain, digestOf } = await baseline('floats', (d) => String(d.x));
    const fake = fakeStored('floats', true, () => true);
    const { msgs } = await run(cfg, catalog(stream('floats', 'full_refresh')), fake.stored);
    expect(fake.offers).toEqual([]);
    expect(recs(msgs).map(({ digest: _d, ...r }) => r)).toEqual(plain);
    for (const r of recs(msgs)) expect(r.digest).toBe(digestOf.get(String(r.data.x)));
  });

  it('offers the configured primary key’s columns too', async () => {
    const cfg = config(url);
    const fake = fakeStored('items', true, () => true);
    await run(cfg, catalog(stream('items', 'full_refresh', { primary_key: [['n']] })), fake.stored);
    expect(Object.keys(fake.offers[0].key)).toEqual(['id', 'n']);
    expect(fake.offers[0].key).toEqual({ id: 1, n: 10 });
  });

  it('reads a custom query stream with a primary key, rows with a NULL key in full at the end', async () => {
    const extra = {
      batch_size: 5,
      digest_page_size: 5,
      streams: [
        { name: 'q', query: 'SELECT id, body, CASE WHEN id % 10 = 0 THEN NULL ELSE id END AS kid FROM items', primary_key: ['kid'] },
      ],
    };
    const { cfg, plain, digestOf } = await baseline('q', (d) => String(d.id), extra);
    const fake = fakeStored('q', true, (k) => Number(k.kid) % 2 === 1);
    const { msgs } = await run(cfg, catalog(stream('q', 'full_refresh')), fake.stored);
    expect(fake.offers).toHaveLength(98 - 9);
    for (const o of fake.offers) expect(o.key.kid).not.toBeNull();
    const emitted = recs(msgs);
    const expectedIds = plain.filter((r) => r.data.kid === null || Number(r.data.kid) % 2 === 0).map((r) => r.data.id);
    expect(emitted.map((r) => r.data.id).sort()).toEqual(expectedIds.sort());
    for (const r of emitted) {
      expect(r.data).toEqual(plain.find((p) => p.data.id === r.data.id)!.data);
      expect(r.digest).toBe(digestOf.get(String(r.data.id)));
    }
  });
});

describe('postgres source digests in the conformance kit', () => {
  it('runs and passes the kit’s three digest checks (not skipped, not "not applicable")', async () => {
    const report = await runSourceConformance(source, { config: { url, include: ['items', 'pairs'], batch_size: 7, digest_page_size: 7 } });
    const digestChecks = report.checks.filter((c) => c.name.startsWith('digests.'));
    expect(digestChecks.map((c) => [c.name, c.ok, c.skipped ?? false, c.notApplicable ?? false])).toEqual([
      ['digests.records-carry-digests', true, false, false],
      ['digests.skip-rejected-only', true, false, false],
      ['digests.skip-all-unchanged', true, false, false],
    ]);
    expect(digestChecks[1].message).toBe('158 rows offered, 79 accepted, 79 emitted');
  });
});

describe('postgres source digests and the server’s hash functions', () => {
  /** A login role whose search_path puts `fn` (which fails) ahead of pg_catalog's. */
  async function roleWithBroken(role: string, fn: string, message: string) {
    await sql(
      url,
      `DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN PASSWORD 'pw-${role}';
       CREATE SCHEMA IF NOT EXISTS ${role};
       CREATE OR REPLACE FUNCTION ${role}.${fn} LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION '${message}'; END$$;
       GRANT USAGE ON SCHEMA ${role} TO ${role}; GRANT SELECT ON items, pairs TO ${role};
       ALTER ROLE ${role} SET search_path = ${role}, pg_catalog, public;`,
    );
    const u = new URL(url);
    u.username = role;
    u.password = `pw-${role}`;
    return config(u.toString());
  }

  it('keeps digests on a server that refuses md5 (FIPS): they do not use it', async () => {
    const cfg = await roleWithBroken('fips_user', 'md5(text) RETURNS text', 'could not compute MD5 hash: unsupported');
    const warnings: string[] = [];
    const fake = fakeStored('items', true, () => true);
    const { msgs } = await run(cfg, catalog(stream('items', 'full_refresh')), fake.stored, { warnings });
    expect(warnings).toEqual([]);
    // Every row offered and accepted: nothing read in full.
    expect(fake.offers.length).toBeGreaterThan(0);
    expect(recs(msgs)).toEqual([]);
  });

  it('reads as today, without digests, and says so once, when the server cannot hash text', async () => {
    const cfg = await roleWithBroken('nohash_user', 'hashtextextended(text, bigint) RETURNS bigint', 'function unavailable here');
    const plain = await run(config(url), catalog(stream('items', 'full_refresh'), stream('pairs', 'full_refresh')));
    const warnings: string[] = [];
    const fake = fakeStored('items', true, () => true);
    const { msgs } = await run(cfg, catalog(stream('items', 'full_refresh'), stream('pairs', 'full_refresh')), fake.stored, { warnings });
    expect(recs(msgs)).toEqual(recs(plain.msgs));
    expect(fake.offers).toEqual([]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/source digests are off: the server cannot compute them \(.*function unavailable here/);
  });
});
