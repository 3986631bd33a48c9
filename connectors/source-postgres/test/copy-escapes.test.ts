// COPY text escapes: the hand-written reader against the regular expression it replaced, on every
// escape at every position, non-ASCII text, surrogates (paired and lone), line terminators after a
// backslash, and fields cut out of a longer string.
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../../test/helpers/random.ts';
import { unescapeCopy } from '../copy-escapes.ts';
import { unescapeCopyWithRegex } from './helpers.ts';

/** Every escape form, and the pieces that make corner cases when put next to them. */
const ESCAPES = [
  ...['b', 'f', 'n', 'r', 't', 'v', '\\'].map((c) => '\\' + c),
  ...['\\0', '\\7', '\\10', '\\101', '\\377', '\\400', '\\777', '\\1234', '\\8', '\\9'],
  ...['\\x', '\\xg', '\\x4', '\\x41', '\\xfF', '\\x414', '\\X41'],
  ...['\\N', '\\a', '\\é', '\\✓', '\\😀', '\\\ud800', '\\\udc00', '\\\n', '\\\r', '\\\u2028', '\\\u2029', '\\ ', '\\"'],
];
const TEXTS = ['', 'a', 'plain text', 'é✓😀', 'x😀y\ud800z\udc00', '0123', 'ab\u2028cd'];

const whole = (field: string) => unescapeCopy(field, 0, field.length);

describe('unescapeCopy', () => {
  it('reads the plain escapes', () => {
    expect(whole('a\\nb\\tc\\\\d\\re\\bf\\fg\\vh')).toBe('a\nb\tc\\d\re\bf\fg\vh');
    expect(whole('\\101\\x42\\777\\9')).toBe('AB\u01ff9');
    expect(whole('end\\')).toBe('end\\');
    expect(whole('a\\\nb')).toBe('a\\\nb');
  });

  it('matches the regex on every escape at every position of every text', () => {
    for (const text of TEXTS) {
      for (const escape of ESCAPES) {
        for (let k = 0; k <= text.length; k++) {
          const field = text.slice(0, k) + escape + text.slice(k);
          expect(whole(field), JSON.stringify(field)).toBe(unescapeCopyWithRegex(field));
        }
      }
    }
  });

  it('matches the regex on two escapes side by side', () => {
    for (const a of ESCAPES) {
      for (const b of ESCAPES) {
        const field = `${a}${b}-${a}`;
        expect(whole(field), JSON.stringify(field)).toBe(unescapeCopyWithRegex(field));
      }
    }
  });

  it('matches the regex on random fields, cut out of a longer string at random offsets', () => {
    const random = mulberry32(3);
    const pieces = [...ESCAPES, ...TEXTS, '\\', '\\', '1', '7', 'x', 'F', 'g'];
    for (let round = 0; round < 20_000; round++) {
      const field = Array.from({ length: Math.floor(random() * 10) }, () => pieces[Math.floor(random() * pieces.length)]).join('');
      // what surrounds the field must not be read: backslashes and escapes on both sides
      const before = ['', 'a', '\\', '\\n', 'é\\'][round % 5];
      const after = ['', '\\', '\\n', '1', 'x41'][Math.floor(round / 5) % 5];
      const s = before + field + after;
      const start = before.length;
      const end = start + field.length;
      const want = unescapeCopyWithRegex(field);
      expect(unescapeCopy(s, start, end), JSON.stringify([s, start, end])).toBe(want);
      // with the first backslash given by the caller, as the row parsers do
      const first = s.indexOf('\\', start);
      expect(unescapeCopy(s, start, end, first < 0 ? s.length : first)).toBe(want);
    }
  });

  it('keeps long fields and escapes far apart intact', () => {
    const long = 'word '.repeat(2000);
    const field = `${long}\\n\\n${long}é\\t${long}😀\\\\`;
    expect(whole(field)).toBe(`${long}\n\n${long}é\t${long}😀\\`);
  });
});
