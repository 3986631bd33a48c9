import { describe, expect, it } from 'vitest';
import { createTextProcessor, tokenizerFor } from './index.ts';
import { ProcessingConfigSchema } from './config.ts';

const tokens = (text: string) => tokenizerFor('text-embedding-3-small').count(text);
const cfg = (c: Record<string, unknown>) => ProcessingConfigSchema.parse(c);

const sentences = Array.from({ length: 60 }, (_, i) => `Sentence number ${i} talks about topic ${i % 7} in some detail.`);

describe('default processing', () => {
  it('uses the content field when it is a string', () => {
    const p = createTextProcessor(undefined, {});
    const chunks = p.process({ id: 1, content: 'Hello world', title: 'ignored' });
    expect(chunks).toEqual([{ content: 'Hello world', metadata: {} }]);
  });

  it('otherwise joins top-level string fields as "key: value" lines, skipping bookkeeping columns', () => {
    const p = createTextProcessor(undefined, {});
    const chunks = p.process({ id: 7, title: 'Pumps', body: 'Centrifugal pumps move water.', n: 3, _ab_cdc_lsn: 'x' });
    expect(chunks.map((c) => c.content)).toEqual(['title: Pumps\nbody: Centrifugal pumps move water.']);
  });

  it('returns no chunks for empty, whitespace-only or missing text', () => {
    const p = createTextProcessor(undefined, {});
    expect(p.process({ content: '' })).toEqual([]);
    expect(p.process({ content: '  \n\t ' })).toEqual([]);
    expect(p.process({ id: 5 })).toEqual([]);
    const fields = createTextProcessor(cfg({ text_fields: ['body'] }), {});
    expect(fields.process({ title: 'x' })).toEqual([]);
    const template = createTextProcessor(cfg({ text_template: 'Title: {{title}}' }), {});
    expect(template.process({ body: 'x' })).toEqual([]);
  });

  it('defaults to 512-token chunks with overlap', () => {
    const p = createTextProcessor(undefined, { model: 'text-embedding-3-small' });
    const text = Array.from({ length: 400 }, (_, i) => `word${i}`).join(' ');
    const chunks = p.process({ content: text });
    expect(chunks.length).toBeGreaterThan(1);
    for (const c of chunks) expect(tokens(c.content)).toBeLessThanOrEqual(512);
    expect(tokens(chunks[0].content)).toBeGreaterThan(400);
  });
});

describe('text selection and metadata', () => {
  it('reads dot paths with * into arrays, and copies metadata with renames', () => {
    const p = createTextProcessor(
      cfg({ text_fields: ['title', 'comments.*.body'], metadata_fields: ['lang', { field: 'author.name', as: 'author' }, 'tags.*'] }),
      {},
    );
    const [chunk] = p.process({
      title: 'Release notes',
      comments: [{ body: 'first comment' }, { body: 'second comment' }],
      lang: 'en',
      author: { name: 'Ada' },
      tags: ['a', 'b'],
    });
    expect(chunk.content).toBe('Release notes\n\nfirst comment\n\nsecond comment');
    expect(chunk.metadata).toEqual({ lang: 'en', author: 'Ada', 'tags.*': ['a', 'b'] });
  });

  it('fills a text template', () => {
    const p = createTextProcessor(cfg({ text_template: '{{title}}\n\n{{ body }}' }), {});
    expect(p.process({ title: 'T', body: 'B' })[0].content).toBe('T\n\nB');
  });
});

describe('recursive splitter', () => {
  it('overlaps consecutive chunks and keeps each within chunk_size tokens', () => {
    const p = createTextProcessor(cfg({ chunk_size: 60, chunk_overlap: 15 }), { model: 'text-embedding-3-small' });
    const chunks = p.process({ content: sentences.join(' ') }).map((c) => c.content);
    expect(chunks.length).toBeGreaterThan(5);
    for (const c of chunks) expect(tokens(c)).toBeLessThanOrEqual(60);
    for (let i = 1; i < chunks.length; i++) {
      // The next chunk starts with the tail of the previous one.
      const head = chunks[i].split(' ').slice(0, 3).join(' ');
      expect(chunks[i - 1]).toContain(head);
      const shared = sharedSuffixPrefix(chunks[i - 1], chunks[i]);
      expect(tokens(shared)).toBeGreaterThan(0);
      expect(tokens(shared)).toBeLessThanOrEqual(16);
    }
    // Nothing is lost: every sentence appears in some chunk.
    for (const s of sentences) expect(chunks.some((c) => c.includes(s))).toBe(true);
  });

  it('without overlap, chunks concatenate back to the text', () => {
    const p = createTextProcessor(cfg({ chunk_size: 40, chunk_overlap: 0 }), {});
    const text = sentences.join(' ');
    const chunks = p.process({ content: text }).map((c) => c.content);
    expect(chunks.join(' ')).toBe(text);
  });

  it('prefers paragraph boundaries', () => {
    const paragraphs = [
      'Alpha paragraph about pumps. '.repeat(5),
      'Beta paragraph about valves. '.repeat(5),
      'Gamma paragraph about pipes. '.repeat(5),
    ];
    const p = createTextProcessor(cfg({ chunk_size: 50, chunk_overlap: 0 }), {});
    const chunks = p.process({ content: paragraphs.join('\n\n') }).map((c) => c.content);
    expect(chunks).toEqual(paragraphs.map((s) => s.trim()));
  });

  it('counts characters when chunk_unit is characters', () => {
    const p = createTextProcessor(cfg({ chunk_size: 100, chunk_overlap: 20, chunk_unit: 'characters' }), {});
    const chunks = p.process({ content: sentences.join(' ') }).map((c) => c.content);
    for (const c of chunks) expect([...c].length).toBeLessThanOrEqual(100);
    expect(chunks.length).toBeGreaterThan(20);
  });

  it('splits very long words between characters, losing nothing', () => {
    const word = 'x'.repeat(5000) + 'y'.repeat(3000);
    const p = createTextProcessor(cfg({ chunk_size: 100, chunk_overlap: 0 }), {});
    const chunks = p.process({ content: `short ${word} end` }).map((c) => c.content);
    for (const c of chunks) expect(tokens(c)).toBeLessThanOrEqual(100);
    expect(chunks.join('').replace(/\s/g, '')).toBe(`short${word}end`);
  });

  it('handles Korean and emoji without breaking characters', () => {
    const korean = '안녕하세요. 오늘은 임베딩과 청크 분할에 대해 이야기합니다. '.repeat(40);
    const emoji = '👩‍👩‍👧‍👦🎉🚀'.repeat(300); // a ZWJ family emoji is one grapheme of many code points
    const p = createTextProcessor(cfg({ chunk_size: 50, chunk_overlap: 0 }), {});
    const chunks = p.process({ content: `${korean}\n\n${emoji}` }).map((c) => c.content);
    for (const c of chunks) {
      expect(tokens(c)).toBeLessThanOrEqual(50);
      expect(c).not.toContain('\uFFFD');
      expect(c).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/); // no lone surrogate
      expect(c.startsWith('\u200d')).toBe(false); // no grapheme cut in the middle
    }
    expect(chunks.join('').replace(/\s/g, '')).toBe(`${korean}${emoji}`.replace(/\s/g, ''));
  });
});

describe('markdown splitter', () => {
  const doc = [
    'Preamble text.',
    '# Intro',
    'Intro body.',
    '## Setup',
    'Install things.',
    '```sh',
    '# not a heading',
    'npm install',
    '```',
    '## Usage',
    'Run it.',
    '# Reference',
    '### Deep',
    'Deep details.',
  ].join('\n');

  it('keeps the heading path as metadata and does not split inside code fences', () => {
    const p = createTextProcessor(cfg({ splitter: 'markdown', metadata_fields: ['id'] }), {});
    const chunks = p.process({ id: 3, content: doc });
    expect(chunks.map((c) => c.metadata)).toEqual([
      { id: 3, headings: [] },
      { id: 3, headings: ['Intro'] },
      { id: 3, headings: ['Intro', 'Setup'] },
      { id: 3, headings: ['Intro', 'Usage'] },
      { id: 3, headings: ['Reference', 'Deep'] },
    ]);
    expect(chunks[2].content).toContain('# not a heading');
    expect(chunks[2].content.startsWith('## Setup')).toBe(true);
  });

  it('understands CRLF line ends', () => {
    const p = createTextProcessor(cfg({ splitter: 'markdown' }), {});
    const chunks = p.process({ content: doc.replace(/\n/g, '\r\n') });
    expect(chunks.map((c) => c.metadata.headings)).toEqual([[], ['Intro'], ['Intro', 'Setup'], ['Intro', 'Usage'], ['Reference', 'Deep']]);
    const paragraphs = createTextProcessor(cfg({ chunk_size: 7, chunk_overlap: 0 }), {}).process({
      content: 'First paragraph here.\r\n\r\nSecond paragraph here.',
    });
    expect(paragraphs.map((c) => c.content)).toEqual(['First paragraph here.', 'Second paragraph here.']);
  });

  it('splits long sections further, each piece keeping the heading path', () => {
    const p = createTextProcessor(cfg({ splitter: 'markdown', chunk_size: 40, chunk_overlap: 5 }), {});
    const chunks = p.process({ content: `# Big\n${sentences.join(' ')}` });
    expect(chunks.length).toBeGreaterThan(3);
    for (const c of chunks) {
      expect(c.metadata.headings).toEqual(['Big']);
      expect(tokens(c.content)).toBeLessThanOrEqual(40);
    }
  });
});

describe('embedder input limit', () => {
  it('splits chunks longer than maxInputTokens instead of truncating (splitter none, characters unit)', () => {
    const text = sentences.join(' ');
    for (const c of [cfg({ splitter: 'none' }), cfg({ chunk_unit: 'characters', chunk_size: 100000, chunk_overlap: 0 })]) {
      const chunks = createTextProcessor(c, { maxInputTokens: 100 })
        .process({ content: text })
        .map((x) => x.content);
      expect(chunks.length).toBeGreaterThan(3);
      for (const chunk of chunks) expect(tokens(chunk)).toBeLessThanOrEqual(100);
      expect(chunks.join(' ')).toBe(text);
    }
  });

  it('caps token chunk_size at the input limit', () => {
    const chunks = createTextProcessor(cfg({ chunk_size: 1000, chunk_overlap: 0 }), { maxInputTokens: 64 }).process({
      content: sentences.join(' '),
    });
    for (const c of chunks) expect(tokens(c.content)).toBeLessThanOrEqual(64);
  });

  it('treats special-token text as ordinary text', () => {
    const [chunk] = createTextProcessor(undefined, {}).process({ content: 'before <|endoftext|> after' });
    expect(chunk.content).toBe('before <|endoftext|> after');
  });
});

function sharedSuffixPrefix(a: string, b: string): string {
  for (let n = Math.min(a.length, b.length); n > 0; n--) if (a.endsWith(b.slice(0, n))) return b.slice(0, n);
  return '';
}
