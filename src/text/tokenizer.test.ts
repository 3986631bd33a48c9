import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { encodingForModel, hasLongRun, tokenizerFor } from './tokenizer.ts';
import { BytePairEncoder, asciiPieceEnd } from './bpe.ts';
import { mulberry32 as rng } from '../../test/helpers/random.ts';

const require = createRequire(import.meta.url);
const { Tiktoken } = require('js-tiktoken/lite') as {
  Tiktoken: new (r: unknown) => { encode(t: string, a?: string[], d?: string[]): number[] };
};
const reference = (name: string) => {
  const ranks = require(`js-tiktoken/ranks/${name}`);
  return new Tiktoken(ranks.default ?? ranks);
};

const samples = [
  'The quick brown fox jumps over the lazy dog.',
  "I'll say it's THE DOG'S bone, you've seen; they'd agree.",
  'function f(x) {\n  return x * 1234567 + 0.5; // comment\n}\n\n\n',
  'numbers 1 12 123 1234 12345 3.14159 -42 1e10',
  '안녕하세요. 오늘은 임베딩과 청크 분할에 대해 이야기합니다.',
  '日本語のテキストと中文文本。',
  '👩‍👩‍👧‍👦🎉🚀 emoji ✨ and symbols ∑∫√ ©®',
  'spaces   between\t\ttabs  \n \n  and trailing   ',
  'special <|endoftext|> text stays text',
  'https://example.com/path?query=1&b=2#frag user@example.org',
  'Ünïcödé áccents naïve café résumé Straße',
  '',
];

function randomText(random: () => number, length: number): string {
  const ranges = [
    [0x20, 0x7e],
    [0x20, 0x7e],
    [0xa0, 0x24f],
    [0xac00, 0xd7a3],
    [0x4e00, 0x9fff],
    [0x1f300, 0x1f64f],
    [0x9, 0xd],
  ];
  let s = '';
  for (let i = 0; i < length; i++) {
    const [lo, hi] = ranges[Math.floor(random() * ranges.length)];
    s += String.fromCodePoint(lo + Math.floor(random() * (hi - lo + 1)));
  }
  return s;
}

/** The pieces asciiPieceEnd() cuts ASCII `text` into. */
function asciiPieces(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length;) {
    const end = asciiPieceEnd(text, i, text.length);
    out.push(text.slice(i, end));
    i = end;
  }
  return out;
}

describe('tokenizer', () => {
  for (const encoding of ['cl100k_base', 'o200k_base'] as const) {
    it(`${encoding}: gives exactly js-tiktoken's tokens`, () => {
      const ref = reference(encoding);
      const ours = tokenizerFor(encoding === 'cl100k_base' ? 'text-embedding-3-small' : 'gpt-4o');
      expect(ours.encoding).toBe(encoding);
      const random = rng(11);
      const texts = [...samples, ...Array.from({ length: 120 }, () => randomText(random, Math.floor(random() * 120)))];
      for (const text of texts) {
        const expected = ref.encode(text, [], []);
        expect(ours.encode(text)).toEqual(expected);
        expect(ours.count(text)).toBe(expected.length);
        expect(ours.decode(ours.encode(text))).toBe(text);
      }
    });
  }

  it('counts very long runs without spaces quickly, erring high', () => {
    const ref = reference('cl100k_base');
    const blob = Buffer.from(Array.from({ length: 30_000 }, (_, i) => (i * 7919) % 256)).toString('base64');
    const started = performance.now();
    const n = tokenizerFor(undefined).count(blob);
    expect(performance.now() - started).toBeLessThan(2000);
    const exact = ref.encode(blob.slice(0, 1500), [], []).length;
    expect(tokenizerFor(undefined).count(blob.slice(0, 1500))).toBeGreaterThanOrEqual(exact);
    expect(n).toBeGreaterThan(blob.length / 8);
  });

  it('finds long non-space runs exactly as the regular expression \\S{257,} does', () => {
    const re = /\S{257,}/;
    const spaces = [
      ' ',
      '\t',
      '\n',
      '\r',
      '\v',
      '\f',
      '\u00a0',
      '\u1680',
      '\u2000',
      '\u200a',
      '\u2028',
      '\u2029',
      '\u202f',
      '\u205f',
      '\u3000',
      '\ufeff',
    ];
    const nonSpaces = ['a', '.', 'é', '\u200b', '\u0085', '\u180e', '😀', '中'];
    for (const run of [255, 256, 257, 300]) {
      for (const sp of spaces) {
        for (const ns of nonSpaces) {
          const text = `x${sp}${ns.repeat(Math.ceil(run / ns.length)).slice(0, run)}${sp}y`;
          expect(hasLongRun(text), JSON.stringify([run, sp, ns])).toBe(re.test(text));
        }
      }
    }
    // Runs near the limit at every offset against the probe positions, with other runs around.
    const random = rng(7);
    for (let i = 0; i < 3000; i++) {
      const parts: string[] = [];
      while (parts.join('').length < 1200) {
        const long = random() < 0.3;
        const length = long ? 250 + Math.floor(random() * 12) : 1 + Math.floor(random() * 40);
        parts.push('w'.repeat(length), spaces[Math.floor(random() * spaces.length)].repeat(1 + Math.floor(random() * 3)));
      }
      const text = parts.join('').slice(Math.floor(random() * 300));
      re.lastIndex = 0;
      if (hasLongRun(text) !== re.test(text)) expect.fail(JSON.stringify(text));
    }
  });

  it('cuts ASCII text into exactly the pieces of the cl100k pattern, and counts the same', () => {
    const table = require('js-tiktoken/ranks/cl100k_base');
    const ranks = table.default ?? table;
    const scanner = new BytePairEncoder(ranks);
    const regexOnly = new BytePairEncoder(ranks, { asciiScanner: false });
    const pattern = new RegExp(ranks.pat_str, 'gu');
    const ref = reference('cl100k_base');
    // Weighted towards the characters the pattern treats specially.
    const alphabet = [
      "'",
      "'",
      's',
      'S',
      't',
      'r',
      'R',
      'e',
      'E',
      'v',
      'l',
      'L',
      'm',
      'd',
      'D',
      'x',
      ' ',
      ' ',
      ' ',
      '\n',
      '\r',
      '\t',
      '\v',
      '\f',
      '0',
      '7',
      '.',
      ',',
      '!',
      '-',
      '(',
      '\x00',
      '\x1b',
      '\x7f',
      '~',
    ];
    const random = rng(5);
    const texts = [
      ...samples.filter((t) => Buffer.byteLength(t) === t.length),
      "it's THE DOG'S 'RE 'rE 'll 'LL 'Ve 'x '' ''s 's",
      '  \n  word\r\n\r\n   \t\n',
      'trailing spaces   ',
      ' . , ;;\n\n!x',
      '12345678 1 22 333 4444 a1b22c333',
    ];
    for (let i = 0; i < 4000; i++) {
      let t = '';
      const length = Math.floor(random() * 40);
      for (let k = 0; k < length; k++) t += alphabet[Math.floor(random() * alphabet.length)];
      texts.push(t);
    }
    for (const text of texts) {
      const expected = text.match(pattern) ?? [];
      if (JSON.stringify(asciiPieces(text)) !== JSON.stringify(expected))
        expect.fail(`${JSON.stringify(text)}: ${JSON.stringify(asciiPieces(text))} ≠ ${JSON.stringify(expected)}`);
      const count = scanner.count(text);
      if (count !== regexOnly.count(text) || count !== ref.encode(text, [], []).length) expect.fail(`count of ${JSON.stringify(text)}`);
    }
    // The piece table answers repeats: counts stay right across many texts sharing words.
    const prose = samples[0] + ' ' + samples[1];
    for (let i = 0; i < 3; i++) expect(scanner.count(prose)).toBe(ref.encode(prose, [], []).length);
  });

  it('holds every token of both rank tables at its rank, and finds each by its bytes', () => {
    for (const name of ['cl100k_base', 'o200k_base']) {
      const table = require(`js-tiktoken/ranks/${name}`);
      const encoder = new BytePairEncoder(table.default ?? table);
      let checked = 0;
      for (const line of ((table.default ?? table).bpe_ranks as string).split('\n')) {
        if (!line) continue;
        const [, offset, ...tokens] = line.split(' ');
        tokens.forEach((b64, i) => {
          const rank = Number(offset) + i;
          const bytes = Buffer.from(b64, 'base64');
          if (!Buffer.from(encoder.tokenBytesOf(rank) ?? []).equals(bytes)) expect.fail(`${name} rank ${rank} bytes`);
          if (encoder.rankOf(bytes, 0, bytes.length) !== rank) expect.fail(`${name} rank ${rank} lookup`);
          checked++;
        });
      }
      expect(checked).toBeGreaterThan(99_000);
      expect(encoder.rankOf(Buffer.from('not one token at all, surely'), 0, 28)).toBe(-1);
    }
  });

  it('picks the encoding from the model name', () => {
    expect(encodingForModel('text-embedding-3-large')).toBe('cl100k_base');
    expect(encodingForModel(undefined)).toBe('cl100k_base');
    expect(encodingForModel('gpt-4o-mini')).toBe('o200k_base');
  });
});
