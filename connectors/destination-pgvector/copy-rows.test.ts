// COPY text-format rows (copy-rows.ts) against PostgreSQL's own escaping rules, fed in chunks cut
// anywhere: inside a row, inside an escape, inside a multi-byte character.
import { expect, it } from 'vitest';
import { CopyTextRows, unescapeCopyText } from './copy-rows.ts';

/** A value as PostgreSQL's COPY TO writes it in text format (CopyAttributeOutText). */
const escape = (v: string | null) =>
  v === null
    ? '\\N'
    : v.replace(
        /[\\\b\f\n\r\t\v]/g,
        (c) => ({ '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' })[c]!,
      );

const rows: (string | null)[][] = [
  ['plain', 'a', 'b', 'c'],
  ['tab\there', null, 'x\ny', 'back\\slash'],
  ['\\N', '\\', '', null],
  ['ünïcödé — 日本語 😀', 'end\\', '\b\f\r\v', 'N'],
  ['', '', '', ''],
];
const data = Buffer.from(rows.map((r) => r.map(escape).join('\t') + '\n').join(''), 'utf8');

function parse(chunks: Buffer[]): (string | null)[][] {
  const out: (string | null)[][] = [];
  const parser = new CopyTextRows(4);
  for (const c of chunks) parser.push(c, (r) => out.push(r));
  parser.end();
  return out;
}

it('reads every row back exactly, in one chunk or cut at any byte', () => {
  expect(parse([data])).toEqual(rows);
  for (let cut = 1; cut < data.length; cut++) expect(parse([data.subarray(0, cut), data.subarray(cut)])).toEqual(rows);
  // One byte at a time: every row waits for its newline.
  expect(parse([...data].map((b) => Buffer.from([b])))).toEqual(rows);
});

it('unescapes the escapes PostgreSQL writes (and the input-only octal and hex forms)', () => {
  expect(unescapeCopyText('a\\tb\\nc\\\\d\\re\\bf\\fg\\vh')).toBe('a\tb\nc\\d\re\bf\fg\vh');
  expect(unescapeCopyText('\\101\\x42\\q')).toBe('ABq');
});

it('a row with too few columns, or data that ends inside a row, is an error', () => {
  expect(() => parse([Buffer.from('a\tb\n')])).toThrow('COPY row with fewer than 4 columns');
  expect(() => parse([Buffer.from('a\tb\tc\td\na\tb')])).toThrow('COPY data ended inside a row');
});
