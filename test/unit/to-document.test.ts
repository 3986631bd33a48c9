// toDocument with a fingerprinter (the unchanged path): the document is made with its fingerprint and
// deferred chunking, and chunked only on demand (ensureChunks) to exactly what the processor makes.
import { describe, expect, it } from 'vitest';
import { Fingerprinter } from '../../src/engine/fingerprint.ts';
import { toDocument, type StreamStats } from '../../src/engine/sync.ts';
import { ensureChunks, hasNoText } from '../../src/engine/unchanged.ts';
import type { DestinationMessage } from '../../src/protocol/connector.ts';
import type { ConfiguredStream } from '../../src/protocol/messages.ts';
import { ProcessingConfigSchema } from '../../src/text/config.ts';
import { createTextProcessor } from '../../src/text/index.ts';

const processor = createTextProcessor(ProcessingConfigSchema.parse({ text_fields: ['title', 'body'], chunk_size: 40, chunk_overlap: 0 }));
const fingerprinter = new Fingerprinter(processor, { provider: 'hash', model: 'hash', dimensions: 8 });
const cs = {
  stream: { name: 's', json_schema: {}, supported_sync_modes: ['full_refresh'] },
  sync_mode: 'full_refresh',
  destination_sync_mode: 'append_dedup',
  primary_key: [['id']],
} as unknown as ConfiguredStream;
const newStats = () => ({ records_skipped: 0 }) as StreamStats;
type Doc = Extract<DestinationMessage, { type: 'DOCUMENT' }>;

describe('toDocument with a fingerprinter', () => {
  it('defers chunking; ensureChunks gives what processing the record gives, once', () => {
    const stats = newStats();
    const record = { id: 7, title: 'A title', body: 'A body long enough to be cut into more than one chunk of forty.' };
    const doc = toDocument(cs, record, processor, stats, 'here', fingerprinter) as Doc;
    expect(doc).toMatchObject({ type: 'DOCUMENT', stream: 's', documentId: '7', chunks: [], record });
    expect(doc.fingerprint).toEqual(fingerprinter.of(processor.extract(record)));
    expect(hasNoText(doc)).toBe(false);
    // The deferred chunking is not an enumerable member: serializing the message shows none of it.
    expect(Object.keys(doc).sort()).toEqual(['chunks', 'documentId', 'fingerprint', 'record', 'stream', 'type']);
    ensureChunks(doc);
    expect(doc.chunks.map((c) => c.content)).toEqual(processor.process(record).map((c) => c.content));
    expect(doc.chunks.map((c) => c.chunkIndex)).toEqual(doc.chunks.map((_, i) => i));
    const chunks = doc.chunks;
    expect(ensureChunks(doc).chunks).toBe(chunks); // not chunked twice
    expect(stats.records_skipped).toBe(0);
  });

  it('a record without text is known empty before chunking, and counted as skipped when chunked', () => {
    const stats = newStats();
    const doc = toDocument(cs, { id: 1, title: '  ', body: null }, processor, stats, 'here', fingerprinter) as Doc;
    expect(hasNoText(doc)).toBe(true);
    expect(ensureChunks(doc).chunks).toEqual([]);
    expect(hasNoText(doc)).toBe(true);
    expect(stats.records_skipped).toBe(1);
  });

  it('a missing key names the record; `where` given as a function is built only then', () => {
    let built = 0;
    const where = () => (built++, 'stream s, record 3');
    toDocument(cs, { id: 1, title: 't' }, processor, newStats(), where, fingerprinter);
    expect(built).toBe(0);
    expect(() => toDocument(cs, { title: 't' }, processor, newStats(), where, fingerprinter)).toThrow(
      /^stream s, record 3 has no value for primary key field "id"/,
    );
    expect(() => toDocument(cs, { title: 't' }, processor, newStats(), 'stream s, record 4', fingerprinter)).toThrow(
      /^stream s, record 4 has no value/,
    );
  });
});
