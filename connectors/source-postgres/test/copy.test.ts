// The COPY row reader: protocol framing, the plain-ASCII fast path and the escaped/UTF-8 path,
// rows and multi-byte characters split across network chunks at every byte offset, and (against
// the test server) COPY reads equal to ordinary query reads. The framing itself: test/cdk/postgres-copy.test.ts.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { mulberry32 } from '../../../test/helpers/random.ts';
import { copyCompleted, copyOutResponse, fakeCopyOut, pgMessage, readCopyOut } from 'sluice/testing';
import { DigestedRowBatches, MAX_ROWS, RowBatches } from '../copy.ts';
import { connect } from '../db.ts';
import { flatten } from '../flatten.ts';
import { catalog, config, context, createDatabase, drive, records, sql, stream, unescapeCopyWithRegex } from './helpers.ts';

const row = (fields: string[]) => pgMessage('d', fields.join('\t') + '\n');
const AFTER = copyCompleted(1);

const COLUMNS = [
  { name: 'id', oid: 20 }, // int8
  { name: 'n', oid: 23 }, // int4
  { name: 'flag', oid: 16 }, // bool
  { name: 't', oid: 25 }, // text
  { name: 'ts', oid: 1184 }, // timestamptz
  { name: 'j', oid: 3802 }, // jsonb
  { name: 'ia', oid: 1007 }, // int4[]
  { name: 'by', oid: 17 }, // bytea
  { name: '__proto__', oid: 25 }, // a column name that is no prototype
];

const LONG = 'x'.repeat(100);
/** COPY text fields (as the server sends them) and the values they must read as. */
const CASES: { fields: string[]; want: Record<string, unknown> }[] = [
  {
    fields: ['1', '42', 't', 'plain', '2024-01-02 03:04:05.123456+00', '{"a": 1}', '{1,2,NULL}', '\\\\xdeadbeef', 'p'],
    want: {
      id: '1',
      n: 42,
      flag: true,
      t: 'plain',
      ts: '2024-01-02T03:04:05.123456Z',
      j: { a: 1 },
      ia: [1, 2, null],
      by: Buffer.from('deadbeef', 'hex').toString('base64'),
      ['__proto__']: 'p',
    },
  },
  {
    fields: ['-9223372036854775808', '-2147483648', 'f', '', '2024-01-02 03:04:05+02', '"x\\\\ty"', '{}', '\\\\x', ''],
    want: {
      id: '-9223372036854775808',
      n: -2147483648,
      flag: false,
      t: '',
      ts: '2024-01-02T03:04:05+02:00',
      j: 'x\ty',
      ia: [],
      by: '',
      ['__proto__']: '',
    },
  },
  {
    fields: ['\\N', '\\N', '\\N', '\\N', '\\N', '\\N', '\\N', '\\N', '\\N'],
    want: { id: null, n: null, flag: null, t: null, ts: null, j: null, ia: null, by: null, ['__proto__']: null },
  },
  {
    // escapes on the fast/slow boundary: a backslash as first, last and only character, `\\N` text
    fields: ['2', '0', 't', '\\\\N', 'infinity', 'null', '{-1}', '\\\\x00', '\\\\'],
    want: { id: '2', n: 0, flag: true, t: '\\N', ts: 'infinity', j: null, ia: [-1], by: 'AA==', ['__proto__']: '\\' },
  },
  {
    fields: ['3', '7', 't', 'tab\\there\\nnewline\\r\\\\ back \\b\\f\\v \\101', '-infinity', '{"k": "é✓"}', '{3}', '\\\\x01', 'a\\tb'],
    want: {
      id: '3',
      n: 7,
      flag: true,
      t: 'tab\there\nnewline\r\\ back \b\f\v A',
      ts: '-infinity',
      j: { k: 'é✓' },
      ia: [3],
      by: 'AQ==',
      ['__proto__']: 'a\tb',
    },
  },
  {
    // multi-byte UTF-8 (2, 3 and 4 bytes), short and long, with and without escapes
    fields: ['4', '1', 'f', 'héllo ✓ 😀', '2024-02-29 23:59:59.999999+00', '[1, "😀"]', '{4}', '\\\\xff', `${LONG}é${LONG}`],
    want: {
      id: '4',
      n: 1,
      flag: false,
      t: 'héllo ✓ 😀',
      ts: '2024-02-29T23:59:59.999999Z',
      j: [1, '😀'],
      ia: [4],
      by: '/w==',
      ['__proto__']: `${LONG}é${LONG}`,
    },
  },
  {
    fields: ['5', '2', 't', LONG, '2024-01-01 00:00:00+00', `"${LONG}"`, '{5}', '\\\\x02', `${LONG}\\n${LONG}😀`],
    want: {
      id: '5',
      n: 2,
      flag: true,
      t: LONG,
      ts: '2024-01-01T00:00:00Z',
      j: LONG,
      ia: [5],
      by: 'Ag==',
      ['__proto__']: `${LONG}\n${LONG}😀`,
    },
  },
  {
    // a long row (decoded on its own) with NULLs before escaped fields
    fields: ['6', '\\N', '\\N', LONG, '\\N', '\\N', '\\N', '\\\\x03', `a\\\\b\\t${LONG}`],
    want: { id: '6', n: null, flag: null, t: LONG, ts: null, j: null, ia: null, by: 'Aw==', ['__proto__']: `a\\b\t${LONG}` },
  },
];

const tick = () => new Promise((r) => setImmediate(r));

/** Feeds `chunks` one at a time (each parsed before the next arrives) and collects the rows. */
async function readChunks(chunks: Buffer[], columns = COLUMNS) {
  const { batches, handedBack } = await readCopyOut(new RowBatches(columns), chunks);
  return { rows: batches.flat(), handedBack };
}

const wire = Buffer.concat([copyOutResponse(COLUMNS.length), ...CASES.map((c) => row(c.fields)), pgMessage('c', ''), AFTER]);
const wanted = CASES.map((c) => c.want);

describe('COPY row reader', () => {
  it('reads every kind of field, in one chunk', async () => {
    const { rows, handedBack } = await readChunks([wire]);
    expect(rows).toEqual(wanted);
    expect(Object.getPrototypeOf(rows[0])).toBe(Object.prototype);
    expect(Object.keys(rows[0])).toContain('__proto__');
    // what follows CopyDone (CommandComplete, ReadyForQuery) goes back to pg, byte for byte
    expect(handedBack.equals(AFTER)).toBe(true);
  });

  it('reads the same with the stream split in two at every byte offset', async () => {
    for (let k = 1; k < wire.length; k++) {
      const { rows, handedBack } = await readChunks([wire.subarray(0, k), wire.subarray(k)]);
      expect(rows, `split at byte ${k}`).toEqual(wanted);
      expect(handedBack.equals(AFTER), `split at byte ${k}`).toBe(true);
    }
  });

  it('reads the same one byte at a time and in random pieces', async () => {
    const bytes = Array.from(wire, (_, i) => wire.subarray(i, i + 1));
    expect((await readChunks(bytes)).rows).toEqual(wanted);
    const random = mulberry32(7);
    for (let round = 0; round < 20; round++) {
      const chunks: Buffer[] = [];
      for (let p = 0; p < wire.length;) {
        const n = 1 + Math.floor(random() * 40);
        chunks.push(wire.subarray(p, p + n));
        p += n;
      }
      expect((await readChunks(chunks)).rows).toEqual(wanted);
    }
  });

  it('reads a trailing digest field apart from the row, in short and long rows, split at every byte offset', async () => {
    const digest = (i: number) => `0123456789ab:${String(i).padStart(32, 'f')}`;
    const digested = Buffer.concat([
      copyOutResponse(COLUMNS.length + 1),
      ...CASES.map((c, i) => row([...c.fields, digest(i)])),
      pgMessage('c', ''),
      AFTER,
    ]);
    const want = { rows: wanted, digests: CASES.map((_, i) => digest(i)) };
    const read = async (chunks: Buffer[]) => {
      const { batches, handedBack } = await readCopyOut(new DigestedRowBatches(COLUMNS), chunks);
      expect(handedBack.equals(AFTER)).toBe(true);
      return { rows: batches.flatMap((b) => b.rows), digests: batches.flatMap((b) => b.digests) };
    };
    expect(await read([digested])).toEqual(want);
    for (let k = 1; k < digested.length; k++)
      expect(await read([digested.subarray(0, k), digested.subarray(k)]), `split at byte ${k}`).toEqual(want);
    // A row without its digest field is refused, not read with the last column as digest.
    const short = Buffer.concat([copyOutResponse(COLUMNS.length + 1), row(CASES[0].fields), pgMessage('c', ''), AFTER]);
    await expect(read([short])).rejects.toThrow(/fewer fields/);
  });

  it('reads escapes, non-ASCII and broken UTF-8 as decoding then the regex did, in short and long rows, split at every byte', async () => {
    const random = mulberry32(5);
    // field pieces as bytes: every escape, multi-byte characters, bytes that are no UTF-8, `\N` as text
    const pieces = [
      ...[
        '\\b',
        '\\f',
        '\\n',
        '\\r',
        '\\t',
        '\\v',
        '\\\\',
        '\\101',
        '\\7',
        '\\777',
        '\\x41',
        '\\xg',
        '\\q',
        '\\é',
        '\\😀',
        '\\\r',
        '\\\u2028',
      ],
      ...['a', 'plain ', 'é', '✓', '😀', '\\N', '1', 'x'],
    ].map((p) => Buffer.from(p, 'utf8'));
    pieces.push(Buffer.from([0xff]), Buffer.from([0xc3]), Buffer.from([0x80]), Buffer.from([0xf0, 0x9f, 0x98]));
    const field = (min: number, max: number) =>
      Buffer.concat(Array.from({ length: min + Math.floor(random() * (max - min)) }, () => pieces[Math.floor(random() * pieces.length)]));
    const cols = [
      { name: 'a', oid: 25 },
      { name: 'b', oid: 25 },
      { name: 'n', oid: 23 },
    ];
    const rows = Array.from({ length: 14 }, (_, i) => {
      // rows 3, 7 and 11 are long (decoded as UTF-8 on their own), the others short
      const long = i % 4 === 3;
      const a = i === 5 ? Buffer.from('\\N') : long ? field(80, 120) : field(0, 12);
      return [a, long ? field(40, 60) : field(0, 6), Buffer.from(String(i))];
    });
    expect(rows.filter((r) => Buffer.concat(r).length > 300).length).toBe(3);
    const tab = Buffer.from('\t');
    const bytes = Buffer.concat([
      copyOutResponse(cols.length),
      ...rows.map((r) => pgMessage('d', Buffer.concat([r[0], tab, r[1], tab, r[2], Buffer.from('\n')]))),
      pgMessage('c', ''),
      AFTER,
    ]);
    const text = (b: Buffer) => (b.toString('latin1') === '\\N' ? null : unescapeCopyWithRegex(b.toString('utf8')));
    const want = rows.map((r, i) => ({ a: text(r[0]), b: text(r[1]), n: i }));
    expect((await readChunks([bytes], cols)).rows).toEqual(want);
    for (let k = 1; k < bytes.length; k++) {
      const { rows: got } = await readChunks([bytes.subarray(0, k), bytes.subarray(k)], cols);
      expect(got, `split at byte ${k}`).toEqual(want);
    }
  });

  it('hands a big chunk out in bounded batches, in order', async () => {
    const many = Array.from({ length: 1000 }, (_, i) => row([String(i), i % 3 ? `r${i}` : '\\N']));
    const bytes = Buffer.concat([copyOutResponse(2), ...many, pgMessage('c', ''), AFTER]);
    const cols = [
      { name: 'v', oid: 23 },
      { name: 't', oid: 25 },
    ];
    for (const cut of [bytes.length, 3000, 12345]) {
      const { reader: copy, write, handedBack } = fakeCopyOut(new RowBatches(cols));
      write(bytes.subarray(0, cut));
      if (cut < bytes.length) write(bytes.subarray(cut));
      await tick();
      const sizes: number[] = [];
      const rows: Record<string, unknown>[] = [];
      for (let r = await copy.next(); r; r = await copy.next()) {
        sizes.push(r.length);
        rows.push(...r);
      }
      await tick();
      expect(Math.max(...sizes)).toBeLessThanOrEqual(MAX_ROWS);
      expect(rows).toEqual(Array.from({ length: 1000 }, (_, i) => ({ v: i, t: i % 3 ? `r${i}` : null })));
      expect(handedBack().equals(AFTER)).toBe(true);
    }
  });

  it('names a row with fewer fields than columns', async () => {
    const stream = Buffer.concat([copyOutResponse(2), row(['1']), pgMessage('c', ''), AFTER]);
    const { reader: copy, write } = fakeCopyOut(
      new RowBatches([
        { name: 'a', oid: 23 },
        { name: 'b', oid: 23 },
      ]),
    );
    write(stream);
    await tick();
    await expect(copy.next()).rejects.toThrow(/fewer fields than the 2 expected columns/);
  });
});

describe('flatten', () => {
  it('yields single items and the items of arrays in order, skipping empty arrays', async () => {
    async function* gen() {
      yield 1;
      yield [2, 3];
      yield [];
      yield [4];
      yield 5;
    }
    const out: number[] = [];
    for await (const x of flatten(gen())) out.push(x);
    expect(out).toEqual([1, 2, 3, 4, 5]);
  });

  it('passes errors through and closes the source when the consumer stops', async () => {
    let closed = false;
    async function* gen() {
      try {
        yield [1, 2];
        yield [3];
      } finally {
        closed = true;
      }
    }
    for await (const x of flatten(gen())) if (x === 2) break;
    expect(closed).toBe(true);
    async function* failing() {
      yield [1];
      throw new Error('broken');
    }
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const x of flatten(failing())) seen.push(x);
      })(),
    ).rejects.toThrow('broken');
    expect(seen).toEqual([1]);
  });

  it('keeps order when next() calls overlap', async () => {
    async function* gen() {
      yield [1, 2];
      await tick();
      yield [3];
    }
    const it = flatten(gen());
    const results = await Promise.all([it.next(), it.next(), it.next(), it.next()]);
    expect(results.map((r) => r.value)).toEqual([1, 2, 3, undefined]);
  });
});

describe('COPY reads against the server', () => {
  let url: string;
  beforeAll(async () => {
    url = await createDatabase(inject('pgUrl'), 'srcpg_copy');
    // ~2 MB of rows with random multi-byte text, escapes and NULLs: many rows and characters
    // straddle the network chunks.
    const random = mulberry32(11);
    const alphabet = ['a', 'b', ' ', '\t', '\n', '\\', 'é', '✓', '😀', '"', ',', 'N', '\r'];
    const text = (max: number) =>
      Array.from({ length: Math.floor(random() * max) }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
    const rows = Array.from({ length: 6000 }, (_, i) => [
      i + 1,
      random() < 0.1 ? null : Math.floor((random() - 0.5) * 4e9),
      random() < 0.1 ? null : text(i % 10 === 0 ? 2000 : 120),
      random() < 0.1 ? null : new Date(1.7e12 + Math.floor(random() * 1e11)).toISOString(),
      random() < 0.1 ? null : JSON.stringify({ s: text(30), n: random() }),
      random() < 0.1 ? null : [text(10), null, text(5)],
    ]);
    await sql(url, `CREATE TABLE mixed (id int PRIMARY KEY, n int, t text, ts timestamptz, j jsonb, ta text[])`);
    for (let i = 0; i < rows.length; i += 500) {
      const part = rows.slice(i, i + 500);
      await sql(
        url,
        `INSERT INTO mixed
           SELECT id, n, t, ts, j,
                  CASE WHEN ta IS NOT NULL THEN ARRAY(SELECT e FROM jsonb_array_elements_text(ta) WITH ORDINALITY AS x(e, o) ORDER BY o) END
             FROM unnest($1::int[], $2::int[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::jsonb[]) AS u(id, n, t, ts, j, ta)`,
        [0, 1, 2, 3, 4, 5].map((c) => part.map((r) => (c === 5 && r[c] !== null ? JSON.stringify(r[c]) : r[c]))),
      );
    }
  }, 120_000);

  it('reads every row exactly as an ordinary query does', async () => {
    const { msgs } = await drive(config(url, { batch_size: 1000 }), catalog(stream('mixed', 'full_refresh')), undefined, 'copy');
    const got = records(msgs).map((r) => r.data);
    const client = await connect(config(url), context('copy'));
    const want = (await client.query('SELECT * FROM mixed ORDER BY id')).rows;
    await client.end();
    expect(got.length).toBe(6000);
    expect(got).toEqual(want);
  });
});
