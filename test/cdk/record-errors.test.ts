// The public kit's side of dead letters: a defineSource stream yields badRecord() in place of a
// record it cannot parse and keeps reading (the engine decides: fail or dead letter); a BatchSink
// reports documents it refused (BatchResult.rejected) and the batching writer turns them into
// REJECTED events with the record, before the STATE that covers them, counting only what was written.
import { describe, expect, it } from 'vitest';
import {
  badRecord,
  batchedWriter,
  defineSource,
  message,
  z,
  type AirbyteMessage,
  type BatchSink,
  type DestinationEvent,
  type DestinationMessage,
} from 'sluice/cdk';
import { testContext } from 'sluice/testing';

describe('badRecord in a defineSource stream', () => {
  it('becomes a TRACE SLUICE_RECORD_ERROR in its place; the records around it flow on', async () => {
    const lines = ['{"id":1}', '{oops', '{"id":3}'];
    const source = defineSource({
      spec: { name: 'lines', config: z.object({}) },
      streams: [
        {
          name: 'rows',
          schema: z.object({ id: z.number() }),
          primaryKey: 'id',
          async *read() {
            for (const [i, line] of lines.entries()) {
              try {
                yield JSON.parse(line);
              } catch (err) {
                yield badRecord(`line ${i + 1}`, `invalid JSON: ${(err as Error).message}`, line, 'fix the line');
              }
            }
          },
        },
      ],
    });
    const catalog = {
      streams: [
        {
          stream: (await source.discover({}, testContext())).streams[0],
          sync_mode: 'full_refresh' as const,
          destination_sync_mode: 'append' as const,
        },
      ],
    };
    const out: AirbyteMessage[] = [];
    for await (const m of source.read({}, catalog, undefined, testContext())) out.push(m);
    const kinds = out.map((m) => (m.type === 'RECORD' ? `record ${m.record.data.id}` : m.type === 'TRACE' ? m.trace.type : m.type));
    expect(kinds).toEqual(['STREAM_STATUS', 'record 1', 'SLUICE_RECORD_ERROR', 'record 3', 'STREAM_STATUS']);
    const trace = out.find((m) => m.type === 'TRACE' && m.trace.type === 'SLUICE_RECORD_ERROR');
    expect(trace).toMatchObject({
      trace: {
        record_error: {
          stream: 'rows',
          position: 'line 2',
          message: expect.stringMatching(/^invalid JSON/),
          raw: '{oops',
          hint: 'fix the line',
        },
      },
    });
    // The same message, built by hand for sources that assemble messages themselves.
    expect(message.recordError('rows', { position: 'line 2', message: 'x' }).trace).toMatchObject({
      type: 'SLUICE_RECORD_ERROR',
      record_error: { stream: 'rows', position: 'line 2', message: 'x' },
    });
  });
});

describe('BatchResult.rejected', () => {
  const doc = (id: string): DestinationMessage => ({
    type: 'DOCUMENT',
    stream: 's',
    documentId: id,
    chunks: [{ id: `${id}#0`, documentId: id, chunkIndex: 0, content: id, contentHash: 'h', metadata: {} }],
    record: { id, body: `record ${id}` },
  });
  const state: DestinationMessage = {
    type: 'STATE',
    state: { type: 'STREAM', stream: { stream_descriptor: { name: 's' }, stream_state: { n: 1 } } },
    connection: { streams: { s: { n: 1 } } },
  };

  it('turns refused documents into REJECTED events with their record, before the STATE is acknowledged', async () => {
    const stored: string[] = [];
    const sink: BatchSink = {
      async writeBatch(ops) {
        const refused = ops.filter((o) => o.documentId === 'b');
        for (const o of ops) if (!refused.includes(o)) stored.push(o.documentId);
        return { rejected: refused.map((o) => ({ stream: o.stream, documentId: o.documentId, error: 'value too large' })) };
      },
      async close() {},
    };
    const writer = batchedWriter(sink, { streams: [{ name: 's', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }] });
    const events: DestinationEvent[] = [];
    for await (const e of writer.write(
      (async function* () {
        yield doc('a');
        yield doc('b');
        yield doc('c');
        yield state;
      })(),
    ))
      events.push(e);
    expect(stored).toEqual(['a', 'c']);
    expect(events).toEqual([
      { type: 'WRITTEN', stream: 's', records: 2, chunksWritten: 2, chunksDeleted: 0 },
      { type: 'REJECTED', stream: 's', documentId: 'b', error: 'value too large', record: { id: 'b', body: 'record b' } },
      { type: 'STATE_COMMITTED', state: (state as { state: unknown }).state, connection: { streams: { s: { n: 1 } } } },
    ]);
  });
});
