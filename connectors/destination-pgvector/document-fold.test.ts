// The listing's binary COPY fold (document-fold.ts, fed by the kit's CopyOutReader) against a plain
// reference: every row decoded as UTF-8 and folded the simple way (the rule of
// documentFingerprintSql), on random rows (non-ASCII, emoji, control characters, NULLs, documents
// of many chunks that agree or not), with the protocol bytes cut anywhere: inside a message header,
// a length, a multi-byte character.
import { describe, expect, it } from 'vitest';
import type { StoredDocument, StoredSource } from '../../src/protocol/connector.ts';
import { copyCompleted, copyOutResponse, pgMessage, readCopyOut } from 'sluice/testing';
import { DocumentFold, SourceFold } from './document-fold.ts';

/** document_id, fingerprint_content, fingerprint_metadata, fingerprint_embedder, fingerprint_source */
type Row = [string, string | null, string | null, string | null, string | null];

/** The reference: rows as strings, folded document by document. */
function reference(rows: Row[], batch: number): StoredDocument[][] {
  const docs: StoredDocument[] = [];
  for (let i = 0; i < rows.length;) {
    let j = i + 1;
    while (j < rows.length && rows[j][0] === rows[i][0]) j++;
    const own = rows.slice(i, j);
    const [, c, m, e, src] = own[0];
    const same = c !== null && m !== null && own.every((r) => r[1] === c && r[2] === m);
    const sameEmbedder = e !== null && own.every((r) => r[3] === e);
    const sameSource = src !== null && own.every((r) => r[4] === src);
    const doc: StoredDocument = { documentId: own[0][0], chunks: own.length };
    if (same) {
      doc.fingerprint = { content: c, metadata: m };
      if (sameEmbedder && e) doc.fingerprint.embedder = e;
      if (sameSource && src) doc.fingerprint.source = src;
    }
    docs.push(doc);
    i = j;
  }
  const pages: StoredDocument[][] = [];
  for (let i = 0; i < docs.length; i += batch) pages.push(docs.slice(i, i + batch));
  return pages;
}

function tuple(row: Row): Buffer {
  const parts = [Buffer.from([0, 5])];
  for (const v of row) {
    const len = Buffer.alloc(4);
    if (v === null) len.writeInt32BE(-1);
    else {
      const bytes = Buffer.from(v, 'utf8');
      len.writeInt32BE(bytes.length);
      parts.push(len, bytes);
      continue;
    }
    parts.push(len);
  }
  return Buffer.concat(parts);
}

const HEADER = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
/** What pg is handed back after the copy data. */
const AFTER = copyCompleted(9);

/** The server's bytes for `rows`: CopyOutResponse, the header with the first row, one row a message, trailer, CopyDone, then pg's. */
function protocol(rows: Row[], extension = Buffer.alloc(0), encode: (row: Row) => Buffer = tuple): Buffer {
  const header = Buffer.concat([HEADER.subarray(0, 15), Buffer.from([0, 0, 0, extension.length]), extension]);
  const messages = [copyOutResponse(5, 'binary')];
  rows.forEach((r, i) => messages.push(pgMessage('d', i ? encode(r) : Buffer.concat([header, encode(r)]))));
  if (!rows.length) messages.push(pgMessage('d', header));
  messages.push(pgMessage('d', Buffer.from([0xff, 0xff])), pgMessage('c', Buffer.alloc(0)), AFTER);
  return Buffer.concat(messages);
}

/** The kit's COPY reader with a DocumentFold, fed `chunks` one at a time: its pages and what pg got back. */
async function run(chunks: Buffer[], batch: number): Promise<{ pages: StoredDocument[][]; toPg: Buffer }> {
  const { batches, handedBack } = await readCopyOut(new DocumentFold(batch), chunks);
  return { pages: batches, toPg: handedBack };
}

const ALPHABET = ['a', 'b', 'Z', '0', '9', '-', '\t', '\n', '\\', '\\N', 'N', ' ', 'é', 'ü', '日', '😀', '\u0000'.slice(1), '\x7f', '\x80'];

function randomRows(seed: number, n: number): Row[] {
  let s = seed;
  const rnd = (k: number) => {
    s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x6d2b79f5) | 0;
    return (s >>> 0) % k;
  };
  const text = (max: number) => Array.from({ length: rnd(max + 1) }, () => ALPHABET[rnd(ALPHABET.length)]).join('');
  const ids = [...new Set(Array.from({ length: n }, () => text(6)))].sort();
  const rows: Row[] = [];
  // Values drawn from few choices, so rows of one document and consecutive documents often agree.
  const hex = () => ['c1', 'c2', 'ç3', '', text(4)][rnd(5)];
  const pick = <T>(xs: T[]) => xs[rnd(xs.length)];
  for (const id of ids) {
    const first: Row = [
      id,
      rnd(8) ? hex() : null,
      rnd(8) ? pick(['m', 'm2', 'mé', '']) : null,
      rnd(6) ? pick(['hash/x/3', 'e😀', '']) : null,
      // Source digests differ per document (a row's digest); a few repeat, empty or non-ASCII.
      rnd(5) ? pick([`t:${text(5)}`, 't:d1', 'té:😀', '']) : null,
    ];
    for (let c = 0, chunks = 1 + rnd(4); c < chunks; c++)
      rows.push(
        rnd(4) || !c
          ? [...first]
          : [
              id,
              rnd(2) ? first[1] : hex(),
              rnd(3) ? first[2] : pick(['m', null]),
              rnd(2) ? first[3] : pick(['hash/x/3', null]),
              rnd(2) ? first[4] : pick(['t:d1', null, `t:${text(3)}`]),
            ],
      );
  }
  return rows;
}

describe('DocumentFold', () => {
  it('folds random rows as the reference does, in pages, and hands pg the bytes after the copy', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rows = randomRows(seed, 60);
      const batch = 1 + (seed % 7);
      const data = protocol(rows);
      // In chunks of random sizes.
      const chunks: Buffer[] = [];
      for (let at = 0, k = seed; at < data.length; k++) {
        const size = 1 + ((k * 7919) % 97);
        chunks.push(data.subarray(at, at + size));
        at += size;
      }
      const { pages, toPg } = await run(chunks, batch);
      expect(pages).toEqual(reference(rows, batch));
      expect(toPg).toEqual(AFTER);
      // And whole: every row of a document in the same buffer (further rows compared as bytes with the previous one).
      expect((await run([data], batch)).pages).toEqual(reference(rows, batch));
    }
  });

  it('reads the same whatever byte the data is cut at, or one byte at a time', async () => {
    const rows: Row[] = [
      ['dé😀\t1', 'c', 'm', 'e', 'tag:d😀'],
      ['dé😀\t1', 'c', 'm', 'e', 'tag:d😀'],
      ['d\\N', null, 'm', null, 'tag:x'],
      ['e', 'c', 'm', 'e', 'tag:e'],
      ['e', 'c', 'm', 'other', 'tag:e'],
      ['f', 'ç', 'mé', 'e😀', null],
      ['f', 'ç', 'mé', 'e😀', null],
      ['g', 'c', 'm', 'e', 'tag:g1'],
      ['g', 'c', 'm', 'e', 'tag:g2'],
      ['h', 'c', 'm', 'e', 'tag:h'],
      ['h', 'c', 'm', 'e', null],
    ];
    const data = protocol(rows, Buffer.from('ext'));
    const want = reference(rows, 2);
    for (let cut = 1; cut < data.length; cut++) {
      const { pages, toPg } = await run([data.subarray(0, cut), data.subarray(cut)], 2);
      expect(pages).toEqual(want);
      expect(toPg).toEqual(AFTER);
    }
    const { pages } = await run(
      [...data].map((b) => Buffer.from([b])),
      2,
    );
    expect(pages).toEqual(want);
  });

  it('keeps one string for a metadata hash and an embedder tag that repeat, and values exact', async () => {
    const rows: Row[] = Array.from({ length: 5 }, (_, i) => [`d${i}`, `c${i}`, 'meta', 'hash/x/3', `0123456789abcdef:${i}`] as Row);
    const [page] = (await run([protocol(rows)], 10)).pages;
    expect(page.map((d) => d.fingerprint)).toEqual(rows.map(([, c, m, e, src]) => ({ content: c, metadata: m, embedder: e, source: src })));
    // The same string, so a later === compares no characters.
    expect(new Set(page.map((d) => d.fingerprint!.metadata)).size).toBe(1);
  });

  it('an empty table lists nothing', async () => {
    expect((await run([protocol([])], 3)).pages).toEqual([]);
  });

  it('malformed data is an error: rows with other columns, a missing trailer', async () => {
    const wrong = protocol([['a', 'c', 'm', 'e', 's']]);
    // The first row's column count (after the 5-byte message header and the 19-byte COPY header).
    const at = wrong.indexOf(Buffer.from('PGCOPY')) + 19;
    wrong.writeInt16BE(3, at);
    await expect(run([wrong], 2)).rejects.toThrow('COPY row with 3 columns, expected 5');
    const noTrailer = Buffer.concat([
      pgMessage('H', Buffer.alloc(3)),
      pgMessage('d', Buffer.concat([HEADER, tuple(['a', 'c', 'm', 'e', 's'])])),
      pgMessage('c', Buffer.alloc(0)),
    ]);
    await expect(run([noTrailer], 2)).rejects.toThrow('COPY data ended without its trailer');
  });
});

/**
 * The light listing's row for a full one: document_id, a hash of content and metadata (as
 * `hashtext(fingerprint_content || ':' || fingerprint_metadata)`: NULL when either is; FNV-1a here,
 * distinct for the few values these tests use), fingerprint_source.
 */
function lightTuple(row: Row): Buffer {
  const [id, c, m, , src] = row;
  const field = (bytes: Buffer | null) => {
    const len = Buffer.alloc(4);
    len.writeInt32BE(bytes === null ? -1 : bytes.length);
    return bytes === null ? [len] : [len, bytes];
  };
  let hash: Buffer | null = null;
  if (c !== null && m !== null) {
    let h = 0x811c9dc5;
    for (const b of Buffer.from(`${c}:${m}`, 'utf8')) h = Math.imul(h ^ b, 16777619);
    hash = Buffer.alloc(4);
    hash.writeInt32BE(h | 0);
  }
  return Buffer.concat([
    Buffer.from([0, 3]),
    ...field(Buffer.from(id, 'utf8')),
    ...field(hash),
    ...field(src === null ? null : Buffer.from(src, 'utf8')),
  ]);
}

/** What documentSources() must give for these rows: each document's source exactly where documents() has one. */
const sourcesOf = (pages: StoredDocument[][]): StoredSource[][] =>
  pages.map((p) =>
    p.map((d) => (d.fingerprint?.source ? { documentId: d.documentId, source: d.fingerprint.source } : { documentId: d.documentId })),
  );

describe('SourceFold (the light listing)', () => {
  const runLight = async (chunks: Buffer[], batch: number) => readCopyOut(new SourceFold(batch), chunks);

  it('gives a source exactly where DocumentFold gives a fingerprint with it, on random rows cut anywhere', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const rows = randomRows(seed, 60);
      const batch = 1 + (seed % 7);
      const data = protocol(rows, Buffer.alloc(0), lightTuple);
      const chunks: Buffer[] = [];
      for (let at = 0, k = seed; at < data.length; k++) {
        const size = 1 + ((k * 7919) % 97);
        chunks.push(data.subarray(at, at + size));
        at += size;
      }
      const want = sourcesOf(reference(rows, batch));
      const { batches, handedBack } = await runLight(chunks, batch);
      expect(batches).toEqual(want);
      expect(handedBack).toEqual(AFTER);
      expect((await runLight([data], batch)).batches).toEqual(want);
    }
  });

  it('reads the same whatever byte the data is cut at; rows of a document that differ give no source', async () => {
    const rows: Row[] = [
      ['dé😀\t1', 'c', 'm', 'e', 'tag:d😀'],
      ['dé😀\t1', 'c', 'm', 'e', 'tag:d😀'],
      ['d\\N', null, 'm', null, 'tag:x'], // no fingerprint: no source
      ['e', 'c', 'm', 'e', 'tag:e'],
      ['e', 'c2', 'm', 'e', 'tag:e'], // another fingerprint in a further row
      ['f', 'c', 'mé', 'e😀', null],
      ['g', 'c', 'm', 'e', 'tag:g1'],
      ['g', 'c', 'm', 'e', 'tag:g2'],
      ['h', 'c', 'm', 'e', 'tag:h'],
      ['h', 'c', 'm', 'e', null],
      ['i', 'c', 'm', 'other', 'tag:i'], // the embedder tag does not matter
      ['j', 'c', 'm', 'e', ''], // empty: no source
    ];
    const data = protocol(rows, Buffer.from('ext'), lightTuple);
    const want = [
      [{ documentId: 'dé😀\t1', source: 'tag:d😀' }, { documentId: 'd\\N' }],
      [{ documentId: 'e' }, { documentId: 'f' }],
      [{ documentId: 'g' }, { documentId: 'h' }],
      [{ documentId: 'i', source: 'tag:i' }, { documentId: 'j' }],
    ];
    expect(want).toEqual(sourcesOf(reference(rows, 2)));
    for (let cut = 1; cut < data.length; cut++) {
      const { batches, handedBack } = await runLight([data.subarray(0, cut), data.subarray(cut)], 2);
      expect(batches).toEqual(want);
      expect(handedBack).toEqual(AFTER);
    }
    expect(
      (
        await runLight(
          [...data].map((b) => Buffer.from([b])),
          2,
        )
      ).batches,
    ).toEqual(want);
  });

  it('an empty table lists nothing; malformed data is an error', async () => {
    expect((await runLight([protocol([], Buffer.alloc(0), lightTuple)], 3)).batches).toEqual([]);
    await expect(runLight([protocol([['a', 'c', 'm', 'e', 's']])], 2)).rejects.toThrow('COPY row with 5 columns, expected 3');
  });
});
