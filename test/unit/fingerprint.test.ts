// Fingerprint bytes are a stored contract: a change would make every stored document count as
// changed once (FINGERPRINT_VERSION exists for that). These pin them, whatever way `of` assembles them.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NO_METADATA } from '../../src/text/extract.ts';
import { FINGERPRINT_VERSION, Fingerprinter, escapeAsciiInPlace, stableJson } from '../../src/engine/fingerprint.ts';
import { ProcessingConfigSchema } from '../../src/text/config.ts';
import { createTextProcessor } from '../../src/text/index.ts';

const processor = createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['title', 'body'], chunk_size: 512, chunk_overlap: 0 }));
const embedder = { provider: 'hash', model: 'hash', dimensions: 384 };

/** The definition (docs/fingerprints.md): sha256 of the canonical JSON of embedder, processing, text, version. */
const expected = (text: string) =>
  createHash('sha256')
    .update(stableJson({ embedder, processing: processor.settings, text, version: FINGERPRINT_VERSION }), 'utf8')
    .digest('hex');

// Values computed by the code before the fingerprint was hashed from a reused buffer (sluice main, 2026-12).
const texts: [name: string, text: string, hex: string][] = [
  ['empty', '', '442c38bcdd922cc848d704a9b1a2ba8abd59e54139404102b06004819d59a43f'],
  ['plain', 'plain', 'f6cd7e3d283b05e7c5840cccf33e7a875dcc51040d8a9ebeffc7f4aba9505f19'],
  ['escapes', 'a\n\nb "q" \\ \t\u0001\u001f', '685ad4e8c5798dc473bb98345d34683e96900a3a3367c8523b8bce70b902b120'],
  ['non-ASCII', 'héllo wörld — ünïcode 日本語', 'b14ff83c27fb93a83d4f79d3c7b21053906c26ad4207a26c8c5aae3c122e52b6'],
  ['surrogate pair', 'emoji 😀 pair', '53baea43ed262cbe30df3530aac50551a280008b9894b8c33bdb4818c9027263'],
  ['lone surrogates', '\ud800x\udc00', '34f998fe4fa9e8344a35b9ca1c69c35f76da1831a13bba014da2c3f30c9b101f'],
  // Larger than the first buffer (it grows), then larger than any buffer kept (hashed as a string).
  ['200 kB', 'x'.repeat(200_000) + '€', 'f590470331663dd126d671370b2c389f3789352141c76755cc9fa1609906df2b'],
  [
    '400 kB of text, over 1 MB of UTF-8 bound',
    'y'.repeat(400_000) + '日',
    '8600e6d7205293b7de7235914250009b36cb55493f835345ee57597896cef4f9',
  ],
];

describe('Fingerprinter.of', () => {
  it('hashes the same bytes as before for every kind of text, in any order (buffer growth and reuse)', () => {
    const fp = new Fingerprinter(processor, embedder);
    // Forwards, backwards, then forwards again: a short text after a long one must not see its bytes.
    const order = [...texts, ...[...texts].reverse(), ...texts];
    for (const [name, text, hex] of order) {
      const got = fp.of({ text, metadata: {} }).content;
      expect(got, name).toBe(hex);
      expect(got, name).toBe(expected(text));
    }
  });

  it('equals the definition for random texts of escapes, surrogates (paired and lone) and multi-byte characters', () => {
    const fp = new Fingerprinter(processor, embedder);
    const alphabet = [
      'a',
      ' ',
      '\n',
      '\r',
      '\t',
      '"',
      '\\',
      '\u0000',
      '\u001f',
      '\u007f',
      'é',
      '€',
      '\u2028',
      '😀',
      '\ud83d',
      '\ude00',
      '\udbff',
    ];
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      let text = '';
      const length = Math.floor(random() * 40);
      for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)];
      expect(fp.of({ text, metadata: {} }).content, JSON.stringify(text)).toBe(expected(text));
    }
  });

  it('equals the definition for longer texts, mostly plain ASCII with an escape or a non-ASCII character anywhere', () => {
    // ASCII is taken from the native encoder and escaped in place (escapeAsciiInPlace), anything else
    // goes the general way: every alignment of an odd character and of a text's edges.
    const fp = new Fingerprinter(processor, embedder);
    const odd = ['"', '\\', '\n', '\u0000', '\u001f', '\u007f', ' ', '~', 'é', '😀', '\ud83d', '\ude00'];
    let seed = 11;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 3000; i++) {
      const length = Math.floor(random() * 300);
      let text = '';
      for (let j = 0; j < length; j++) text += String.fromCharCode(0x23 + Math.floor(random() * 0x39)); // '#'..'[' : none escaped
      if (random() < 0.8) {
        const at = Math.floor(random() * (text.length + 1));
        text = text.slice(0, at) + odd[Math.floor(random() * odd.length)] + text.slice(at);
      }
      const parts = random() < 0.5 ? [text.slice(0, length >> 1), text.slice(length >> 1)] : undefined;
      const joined = parts ? parts.join('\n\n') : text;
      expect(fp.of({ text: joined, parts, metadata: {} }).content, JSON.stringify(joined)).toBe(expected(joined));
    }
  });

  it("escapeAsciiInPlace makes exactly JSON.stringify's escapes, for every escaped byte at every position and alignment", () => {
    const memory = Buffer.alloc(512);
    const words = new Uint32Array(memory.buffer, 0, memory.buffer.byteLength >>> 2);
    const escaped = [...Array.from({ length: 0x20 }, (_, c) => c), 0x22, 0x5c];
    const json = (bytes: Buffer) => JSON.stringify(bytes.toString('latin1')).slice(1, -1);
    const wrong: string[] = [];
    // A buffer may start anywhere in its memory (a pooled one): every shift of its words.
    for (const shift of [0, 1, 2, 3])
      for (let from = 0; from < 5; from++)
        for (let to = from; to < 14; to++) {
          const bytes = memory.subarray(shift, shift + 96);
          // Every ASCII byte JSON leaves alone, as a whole text: unchanged.
          for (let c = 0x20; c < 0x80; c++) {
            if (c === 0x22 || c === 0x5c) continue;
            bytes.fill(c);
            if (escapeAsciiInPlace(bytes, words, from, to) !== to) wrong.push(`plain byte ${c} in [${from}, ${to}), shift ${shift}`);
          }
          // One escaped byte at each position of the text, then two, with bytes around the text kept.
          for (const c of escaped)
            for (let at = from; at < to; at++)
              for (const second of [undefined, to - 1, from]) {
                bytes.fill(0x61);
                bytes.fill(0x7a, 0, from);
                bytes[at] = c;
                if (second !== undefined) bytes[second] = 0x0a;
                const want = json(bytes.subarray(from, to));
                const end = escapeAsciiInPlace(bytes, words, from, to);
                expect(bytes.toString('latin1', from, end), `byte ${c} at ${at} (and ${second}) in [${from}, ${to}), shift ${shift}`).toBe(
                  want,
                );
                expect(bytes.subarray(0, from).every((b) => b === 0x7a)).toBe(true);
              }
        }
  });

  it('escapeAsciiInPlace equals JSON.stringify on random ASCII texts with many escapes (its position list grows)', () => {
    const memory = Buffer.alloc(8 * 1024);
    const words = new Uint32Array(memory.buffer, 0, memory.buffer.byteLength >>> 2);
    let seed = 3;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 500; i++) {
      const length = Math.floor(random() * 1000);
      const share = random();
      let text = '';
      for (let j = 0; j < length; j++) text += String.fromCharCode(random() < share ? Math.floor(random() * 0x80) : 0x61);
      const from = Math.floor(random() * 8);
      memory.write(text, from, 'latin1');
      const end = escapeAsciiInPlace(memory, words, from, from + length);
      expect(memory.toString('latin1', from, end)).toBe(JSON.stringify(text).slice(1, -1));
    }
  });

  it('hashes a text given as its parts (text_fields) exactly as the joined text, for every kind of part', () => {
    const fp = new Fingerprinter(processor, embedder);
    const kinds = [
      ...texts.map(([, text]) => text),
      'x',
      '"quoted"',
      'back\\slash',
      'tab\tand\u0001',
      'ends high \ud83d',
      '\ude00 starts low',
      'é€日本',
      '😀',
    ];
    // Every pair and a few triples, in both orders: a part's edges meet the separator.
    const lists: string[][] = [];
    for (const a of kinds) for (const b of kinds) lists.push([a, b]);
    lists.push(kinds.slice(0, 4), kinds.slice(-5), ['a', '', 'b']);
    for (const parts of lists) {
      const text = parts.join('\n\n');
      const got = fp.of({ text, parts, metadata: {} }).content;
      expect(got, JSON.stringify(parts).slice(0, 80)).toBe(expected(text));
    }
    // A pair split by the separator is two lone surrogates, as in the joined text.
    expect(fp.of({ text: '\ud83d\n\n\ude00', parts: ['\ud83d', '\ude00'], metadata: {} }).content).toBe(expected('\ud83d\n\n\ude00'));
  });

  it("the processor's extraction gives parts that join to its text, and the same fingerprint as the text alone", () => {
    const fp = new Fingerprinter(processor, embedder);
    const records = [
      { title: 'Document 1', body: 'lorem "ipsum"\n\tdolor \ud800' },
      { title: '', body: 'only a body' },
      { title: '   ', body: null },
      { title: 'only a title' },
      { title: 42, body: ['a', 'b'] },
    ];
    for (const record of records) {
      const extracted = processor.extract(record);
      expect(extracted.parts, JSON.stringify(record)).toBeDefined();
      expect(extracted.parts!.join('\n\n')).toBe(extracted.text);
      expect(processor.process(record).map((c) => c.content)).toEqual(processor.chunk(extracted).map((c) => c.content));
      expect(fp.of(extracted).content).toBe(expected(extracted.text));
    }
    // text_template makes one text: no parts.
    const templated = createTextProcessor(ProcessingConfigSchema.parse({ text_template: '{{title}}: {{body}}' }));
    expect(templated.extract({ title: 'a', body: 'b' })).toEqual({ text: 'a: b', metadata: {} });
  });

  it('serializes empty metadata as {} whatever its prototype, and anything else as stableJson does', () => {
    const fp = new Fingerprinter(processor, embedder);
    const hashOf = (json: string) => createHash('sha256').update(json).digest('hex');
    expect(fp.of({ text: 'a', metadata: {} }).metadata).toBe(hashOf('{}'));
    expect(fp.of({ text: 'a', metadata: { k: 1 } }).metadata).toBe(hashOf('{"k":1}'));
    expect(fp.of({ text: 'a', metadata: Object.create(null) }).metadata).toBe(hashOf('{}'));
    expect(fp.of({ text: 'a', metadata: { gone: undefined } }).metadata).toBe(hashOf('{}'));
    // Not a plain object: its toJSON decides (a Date's is its ISO string).
    const date = new Date('2026-01-02T03:04:05Z') as unknown as Record<string, unknown>;
    expect(fp.of({ text: 'a', metadata: date }).metadata).toBe(hashOf('"2026-01-02T03:04:05.000Z"'));
    expect(fp.of({ text: 'a', metadata: {} }).metadata).toBe(hashOf('{}'));
    expect(fp.of({ text: 'a', metadata: NO_METADATA }).metadata).toBe(hashOf('{}'));
  });

  it('keeps metadata and embedder parts as before', () => {
    const fp = new Fingerprinter(processor, undefined);
    expect(fp.of({ text: 'a\n\nb', metadata: { b: 1, a: 'x' } })).toEqual({
      content: '6cbeae76ccc8d0622748ed2eee4d5fc78a5add55e5becd8eb0529219d477258e',
      metadata: 'cdab067e9f3beb32d1252cfd63e492592fecbf591b0d08cadb24bb17f3864246',
      embedder: 'none',
    });
  });
});
