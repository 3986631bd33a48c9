// The text a record's text_fields make: what is chunked, embedded and fingerprinted.
import { describe, expect, it } from 'vitest';
import { TEXT_SEPARATOR, hasText, joinTextParts, textExtractor, textPartsExtractor } from '../../src/text/extract.ts';
import { createTextProcessor } from '../../src/text/index.ts';
import { ProcessingConfigSchema } from '../../src/text/config.ts';

describe('textExtractor with text_fields', () => {
  it('joins the fields that have text with a blank line, in the order of text_fields', () => {
    const extract = textExtractor({ textFields: ['title', 'missing', 'empty', 'blank', 'nothing', 'n', 'when', 'tags', 'obj', 'body'] });
    const record = {
      body: 'Body text',
      title: 'Title',
      empty: '',
      blank: ' \n\t',
      nothing: null,
      n: 0,
      when: new Date('2026-12-05T10:00:00Z'),
      tags: ['a', '', 'b'],
      obj: { b: 1, a: 'x' },
    };
    expect(extract(record)).toBe('Title\n\n0\n\n2026-12-05T10:00:00.000Z\n\na\nb\n\n{"a":"x","b":1}\n\nBody text');
  });

  it('reads dot paths and * like top-level fields', () => {
    const extract = textExtractor({ textFields: ['doc.title', 'items.*.text', 'title'] });
    expect(extract({ title: 'Top', doc: { title: 'Nested' }, items: [{ text: 'one' }, { text: ' ' }, { text: 'two' }] })).toBe(
      'Nested\n\none\n\ntwo\n\nTop',
    );
  });

  it('is empty when no field has text, and a field that is only present in some records is skipped in others', () => {
    const extract = textExtractor({ textFields: ['title', 'body'] });
    expect(extract({ title: '  ', body: undefined })).toBe('');
    expect(extract({ id: 1 })).toBe('');
    expect(extract({ body: 'only body' })).toBe('only body');
  });
});

describe('textPartsExtractor (what fingerprints are hashed from)', () => {
  it('gives the texts of the fields that have text, which join to the text, a fresh array per record', () => {
    const fields = ['title', 'missing', 'blank', 'n', 'items.*.text', 'body'];
    const parts = textPartsExtractor(fields);
    const text = textExtractor({ textFields: fields });
    const records = [
      { title: 'T', blank: ' ', n: 0, items: [{ text: 'one' }, { text: '' }], body: 'B' },
      { title: '', body: 'only body' },
      { id: 1 },
    ];
    const got = records.map(parts);
    expect(got).toEqual([['T', '0', 'one', 'B'], ['only body'], []]);
    for (const [i, record] of records.entries()) {
      expect(joinTextParts(got[i])).toBe(text(record));
      expect(got[i].join(TEXT_SEPARATOR)).toBe(text(record));
    }
    // The arrays handed out are not reused for the next record.
    expect(got[0]).toEqual(['T', '0', 'one', 'B']);
  });

  it("a processor's parts are only texts that have text: none exactly when the text is empty (the engine's empty test)", () => {
    const processor = createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['title', 'body', 'tags', 'items.*.text'] }));
    const values = ['', ' ', '\n\t\u00a0', '\u3000', 'a', ' b ', '\ud800', undefined, null, 0, false, [], ['  '], ['', 'x'], { k: ' ' }];
    let seed = 7;
    const pick = () => values[(seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % values.length];
    let empty = 0;
    for (let i = 0; i < 2000; i++) {
      const record = { title: pick(), body: pick(), tags: pick(), items: [{ text: pick() }, { text: pick() }] };
      const { text, parts } = processor.extract(record);
      expect(parts!.every(hasText)).toBe(true);
      expect(parts!.length === 0).toBe(!hasText(text));
      expect(parts!.length === 0).toBe(processor.process(record).length === 0);
      if (!parts!.length) empty++;
    }
    expect(empty).toBeGreaterThan(10);
  });
});

describe('hasText', () => {
  it('says what /\\S/ says for every UTF-16 unit, alone, after whitespace and before it', () => {
    const regex = /\S/;
    for (let c = 0; c <= 0xffff; c++) {
      const unit = String.fromCharCode(c);
      for (const s of [unit, ` \u00a0\u3000${unit}`, `${unit}\n\ufeff`, `\t${unit}${unit}\u2029`]) {
        if (hasText(s) !== regex.test(s)) expect.fail(`hasText(${JSON.stringify(s)}) is ${hasText(s)}`);
      }
    }
  });

  it('is false for empty and all-whitespace text, true for a pair or a lone surrogate among whitespace', () => {
    expect(hasText('')).toBe(false);
    expect(hasText(' \t\n\v\f\r\u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\ufeff')).toBe(false);
    expect(hasText('  \ud83d\ude00 ')).toBe(true);
    expect(hasText(' \udc00')).toBe(true);
    expect(hasText('\u200b')).toBe(true); // zero width space is not whitespace to \s
  });
});

describe('metadata without metadata_fields', () => {
  it('is one shared empty object that cannot be changed; each chunk gets its own copy', () => {
    const processor = createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['body'], chunk_size: 5, chunk_overlap: 0 }));
    const a = processor.extract({ body: 'one two three four five six. '.repeat(20) });
    const b = processor.extract({ body: 'four' });
    expect(a.metadata).toBe(b.metadata);
    expect(a.metadata).toEqual({});
    expect(() => {
      (a.metadata as Record<string, unknown>).k = 1;
    }).toThrow(TypeError);
    const chunks = processor.chunk(a);
    expect(chunks.length).toBeGreaterThan(1);
    chunks[0].metadata.headings = ['mine'];
    expect(chunks[1].metadata).toEqual({});
    expect(processor.process({ body: 'four' })[0].metadata).toEqual({});
  });
});
