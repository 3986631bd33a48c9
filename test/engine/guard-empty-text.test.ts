// The empty-text guard (src/engine/preflight.ts) holds the first documents of a run back until they
// are judged; checkpoints with nothing held before them go on at once (an unchanged re-sync, whose
// documents the unchanged stage dropped, commits them during the read, not all at its end).
import { describe, expect, it } from 'vitest';
import type { LoadedConnection } from '../../src/config/load.ts';
import { guardEmptyText } from '../../src/engine/preflight.ts';
import type { DestinationMessage } from '../../src/protocol/connector.ts';

const conn = { index: 0, config: { processing: { text_fields: ['body'] } } } as unknown as LoadedConnection;
const state = (n: number): DestinationMessage => ({
  type: 'STATE',
  state: { type: 'STREAM', stream: { stream_descriptor: { name: 's' }, stream_state: { n } } },
  connection: { streams: { s: { n } } },
});
const doc = (id: string, text = true): DestinationMessage => ({
  type: 'DOCUMENT',
  stream: 's',
  documentId: id,
  chunks: text ? [{ id: `${id}#0`, text: 'x', index: 0 } as never] : [],
  record: {},
});

/**
 * Runs the guard over a scripted input that waits, after each message, until the guard has let
 * out everything it will without more input: returns what came out after each input message.
 */
async function stepwise(input: DestinationMessage[]): Promise<string[][]> {
  const out: string[][] = [];
  const seen: string[] = [];
  let step = 0;
  async function* source() {
    for (const m of input) {
      yield m;
      // Whatever the guard passes on without more input reaches the consumer before this resumes.
      await new Promise((r) => setTimeout(r, 5));
      out[step++] = seen.splice(0);
    }
  }
  const label = (m: DestinationMessage) =>
    m.type === 'STATE' ? `STATE ${(m.connection.streams.s as { n: number }).n}` : m.type === 'DOCUMENT' ? `DOC ${m.documentId}` : m.type;
  for await (const m of guardEmptyText(source(), { maxEmptyShare: 0.5, conn, ctx: { follow: false } })) seen.push(label(m));
  out[step] = seen.splice(0);
  return out;
}

describe('guardEmptyText', () => {
  it('passes a checkpoint on at once while no document is held, and holds one that follows a held document', async () => {
    const steps = await stepwise([state(1), state(2), doc('a'), state(3), { type: 'STREAM_COMPLETE', stream: 's' }]);
    expect(steps).toEqual([['STATE 1'], ['STATE 2'], [], [], ['DOC a', 'STATE 3', 'STREAM_COMPLETE'], []]);
  });

  it('still fails a stream whose records yield no text, before any of its documents or later checkpoints go on', async () => {
    const input = [
      state(1),
      ...Array.from({ length: 20 }, (_, i) => doc(`d${i}`, i < 2)),
      state(2),
      { type: 'STREAM_COMPLETE', stream: 's' } as const,
    ];
    const seen: DestinationMessage[] = [];
    await expect(
      (async () => {
        for await (const m of guardEmptyText(
          (async function* () {
            yield* input;
          })(),
          { maxEmptyShare: 0.5, conn, ctx: { follow: false } },
        ))
          seen.push(m);
      })(),
    ).rejects.toThrow(/18 of 20 records \(90%\) yield no text/);
    expect(seen.map((m) => m.type)).toEqual(['STATE']);
  });
});
