// The batching writer: batches by count and bytes, a STATE is acknowledged only after the batch
// before it was written, STREAM_COMPLETE flushes then completes, memory is bounded by one batch.
import { describe, expect, it } from 'vitest';
import { batchedWriter, defineDestination, z, type BatchSink, type DestinationMessage, type WriteOperation } from 'sluice/cdk';
import { testContext } from 'sluice/testing';

const doc = (id: string, text = 'x'): DestinationMessage => ({
  type: 'DOCUMENT',
  stream: 's',
  documentId: id,
  chunks: [{ id: `${id}#0`, documentId: id, chunkIndex: 0, content: text, contentHash: 'h', metadata: {} }],
  record: { id },
});
const state = (n: number): DestinationMessage => ({
  type: 'STATE',
  state: { type: 'STREAM', stream: { stream_descriptor: { name: 's' }, stream_state: { n } } },
  connection: { streams: { s: { n } } },
});

function recordingSink() {
  const log: string[] = [];
  const sink: BatchSink = {
    async writeBatch(ops: WriteOperation[]) {
      log.push(`batch ${ops.map((o) => (o.type === 'DELETE' ? `-${o.documentId}` : o.documentId)).join(',')}`);
    },
    async completeStream(s) {
      log.push(`complete ${s.name}`);
    },
    async close() {
      log.push('close');
    },
  };
  return { sink, log };
}

describe('batchedWriter', () => {
  it('flushes by count, before each STATE, at STREAM_COMPLETE and at the end; acks after the flush', async () => {
    const { sink, log } = recordingSink();
    const writer = batchedWriter(
      sink,
      { streams: [{ name: 's', destinationSyncMode: 'overwrite', primaryKey: [['id']] }] },
      { maxRecords: 2 },
    );
    const input = [
      doc('a'),
      doc('b'),
      doc('c'),
      state(1),
      { type: 'DELETE', stream: 's', documentId: 'a' } as DestinationMessage,
      { type: 'STREAM_COMPLETE', stream: 's' } as DestinationMessage,
      doc('d'),
      state(2),
      state(3),
    ];
    async function* feed() {
      for (const m of input) {
        log.push(`in ${m.type === 'STATE' ? `state ${(m.connection.streams.s as { n: number }).n}` : m.type}`);
        yield m;
      }
    }
    for await (const e of writer.write(feed()))
      log.push(
        e.type === 'STATE_COMMITTED'
          ? `ack ${(e.connection.streams.s as { n: number }).n}`
          : e.type === 'WRITTEN'
            ? `written ${e.records}`
            : e.type,
      );
    await writer.close();
    expect(log).toEqual([
      'in DOCUMENT',
      'in DOCUMENT',
      'batch a,b',
      'written 2',
      'in DOCUMENT',
      'in state 1',
      'batch c',
      'written 1',
      'ack 1',
      'in DELETE',
      'in STREAM_COMPLETE',
      'batch -a',
      'written 1',
      'complete s',
      'in DOCUMENT',
      'in state 2',
      'batch d',
      'written 1',
      'ack 2',
      'in state 3',
      'ack 3',
      'close',
    ]);
  });

  it('flushes by bytes and pulls no more input than one batch (backpressure)', async () => {
    const { sink, log } = recordingSink();
    const writer = batchedWriter(
      sink,
      { streams: [{ name: 's', destinationSyncMode: 'append', primaryKey: [] }] },
      { maxRecords: 1000, maxBytes: 2000 },
    );
    let pulled = 0;
    async function* feed() {
      for (let i = 0; i < 10; i++) {
        pulled++;
        yield doc(`d${i}`, 'y'.repeat(1000));
      }
    }
    const it = writer.write(feed())[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value).toMatchObject({ type: 'WRITTEN', records: 2 });
    expect(pulled).toBe(2);
    while (!(await it.next()).done);
    expect(log).toEqual(['batch d0,d1', 'batch d2,d3', 'batch d4,d5', 'batch d6,d7', 'batch d8,d9']);
  });

  it('rejects data for a stream it was not opened for, and modes the destination does not support', async () => {
    const { sink } = recordingSink();
    const writer = batchedWriter(sink, { streams: [{ name: 'other', destinationSyncMode: 'append', primaryKey: [] }] });
    async function* feed() {
      yield doc('a');
    }
    await expect(async () => {
      for await (const _ of writer.write(feed()));
    }).rejects.toThrow('received data for stream "s", which the destination was not opened for');
    const dest = defineDestination({
      spec: { name: 'x', config: z.strictObject({}) },
      destinationSyncModes: ['append'],
      connect: async () => sink,
    });
    await expect(
      dest.open({}, testContext(), { streams: [{ name: 's', destinationSyncMode: 'overwrite', primaryKey: [] }] }),
    ).rejects.toThrow('destination "x" does not support destination_sync_mode overwrite');
  });

  it('passes documents() and documentBatches() on; documentBatches() without documents() is refused', async () => {
    const { sink } = recordingSink();
    const listed = [{ documentId: 'a', chunks: 1 }];
    const dest = defineDestination({
      spec: { name: 'x', config: z.strictObject({}) },
      connect: async () => sink,
      async *documents() {
        yield* listed;
      },
      async *documentBatches() {
        yield listed;
      },
    });
    const pages = [];
    for await (const page of dest.documentBatches!({}, testContext(), 's')) pages.push(page);
    expect(pages).toEqual([listed]);
    expect(() =>
      defineDestination({
        spec: { name: 'y', config: z.strictObject({}) },
        connect: async () => sink,
        async *documentBatches() {
          yield listed;
        },
      }),
    ).toThrow('destination "y" defines documentBatches() without documents()');
  });

  it('passes documentSources() on; without documents() and sourceDigests it is refused', async () => {
    const { sink } = recordingSink();
    const light = [{ documentId: 'a', source: 'tag:1' }];
    const def = {
      spec: { name: 'x', config: z.strictObject({}) },
      connect: async () => sink,
      async *documents() {
        yield { documentId: 'a', chunks: 1, fingerprint: { content: 'c', metadata: 'm', source: 'tag:1' } };
      },
      async *documentSources() {
        yield light;
      },
    };
    const dest = defineDestination({ ...def, sourceDigests: true });
    const pages = [];
    for await (const page of dest.documentSources!({}, testContext(), 's')) pages.push(page);
    expect(pages).toEqual([light]);
    expect(() => defineDestination(def)).toThrow('destination "x" defines documentSources() without documents() and sourceDigests');
    expect(() => defineDestination({ ...def, sourceDigests: true, documents: undefined })).toThrow(
      'destination "x" defines documentSources() without documents() and sourceDigests',
    );
  });
});
