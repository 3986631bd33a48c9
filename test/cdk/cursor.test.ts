// Tie-safe cursors: a read stopped at any record and resumed from its last state neither loses
// nor repeats records, including inside runs of equal cursor values.
import { describe, expect, it } from 'vitest';
import { CursorTracker, compareValues, defineSource, deleted, z } from 'sluice/cdk';
import { testContext } from 'sluice/testing';
import type { AirbyteMessage, SourceState } from 'sluice/cdk';

type Row = { id: number; ts: string };
// 20 rows, cursor values in runs of 4 (ties), sorted by (ts, id).
const rows: Row[] = Array.from({ length: 20 }, (_, i) => ({ id: i + 1, ts: `2024-05-0${1 + Math.floor(i / 4)}T10:00:00Z` }));

type RowRead = (ctx: { since?: unknown }) => AsyncGenerator<Row | ReturnType<typeof deleted>>;

/** A one-stream source over `Row`s (primary key id, cursor ts) whose records come from `read`. */
function rowsSource(read: RowRead, opts: { ordering?: 'cursor_then_key' | 'cursor'; stateEvery?: number } = {}) {
  return defineSource({
    spec: { name: 'rows', config: z.strictObject({}) },
    streams: [
      {
        name: 'rows',
        schema: z.object({ id: z.number(), ts: z.string() }),
        primaryKey: 'id',
        cursorField: 'ts',
        ...opts,
        read: read as never,
      },
    ],
  });
}

function source(ordering: 'cursor_then_key' | 'cursor', data: () => Row[]) {
  // Like an API: inclusive lower bound on the cursor only.
  return rowsSource(
    async function* ({ since }) {
      for (const r of data()) if (since === undefined || compareValues(r.ts, since) >= 0) yield r;
    },
    { ordering, stateEvery: 3 },
  );
}

async function readAll(src: ReturnType<typeof source>, state: SourceState | undefined, stopAfterRecords = Infinity, ctx = testContext()) {
  const catalog = {
    streams: [
      {
        stream: (await src.discover({}, ctx)).streams[0],
        sync_mode: 'incremental' as const,
        destination_sync_mode: 'append_dedup' as const,
      },
    ],
  };
  const out: AirbyteMessage[] = [];
  let records = 0;
  for await (const m of src.read({}, catalog, state, ctx)) {
    out.push(m);
    if (m.type === 'RECORD' && ++records >= stopAfterRecords) break;
  }
  return out;
}

const lastState = (msgs: AirbyteMessage[]): SourceState | undefined => {
  const s = msgs.filter((m) => m.type === 'STATE').at(-1);
  return s && s.type === 'STATE' ? { streams: { rows: s.state.stream!.stream_state! } } : undefined;
};
const ids = (msgs: AirbyteMessage[]) => msgs.flatMap((m) => (m.type === 'RECORD' ? [m.record.data.id as number] : []));
/** Ids covered by the last state: those yielded before it. */
const coveredIds = (msgs: AirbyteMessage[]) => {
  const at = msgs.map((m) => m.type).lastIndexOf('STATE');
  return at < 0 ? [] : ids(msgs.slice(0, at));
};

describe('tie-safe incremental cursor', () => {
  for (const ordering of ['cursor_then_key', 'cursor'] as const) {
    it(`${ordering}: a crash after any record, then a resume, yields every record exactly once`, async () => {
      const src = source(ordering, () => rows);
      for (let stop = 1; stop <= rows.length; stop++) {
        const first = await readAll(src, undefined, stop);
        const covered = coveredIds(first);
        const resumed = await readAll(src, lastState(first));
        expect([...covered, ...ids(resumed)], `stopped after ${stop} records`).toEqual(rows.map((r) => r.id));
      }
    });
  }

  it('cursor_then_key cuts states inside a tie; cursor ordering only where the value changes', async () => {
    const tied = await readAll(
      source('cursor_then_key', () => rows),
      undefined,
    );
    const states = tied
      .filter((m) => m.type === 'STATE')
      .map((m) => (m as { state: { stream: { stream_state: unknown } } }).state.stream.stream_state);
    expect(states[0]).toEqual({ cursor: '2024-05-01T10:00:00Z', key: [3] });
    const byValue = await readAll(
      source('cursor', () => rows),
      undefined,
    );
    const valueStates = byValue
      .filter((m) => m.type === 'STATE')
      .map((m) => (m as { state: { stream: { stream_state: unknown } } }).state.stream.stream_state);
    expect(valueStates[0]).toEqual({ cursor: '2024-05-01T10:00:00Z' });
    expect(valueStates.at(-1)).toEqual({ cursor: '2024-05-05T10:00:00Z' });
  });

  it('picks up records added later at the saved cursor value with a higher key, and updates', async () => {
    let data = rows.slice(0, 10);
    const src = source('cursor_then_key', () => data);
    const first = await readAll(src, undefined);
    expect(lastState(first)!.streams.rows).toEqual({ cursor: '2024-05-03T10:00:00Z', key: [10] });
    data = [...rows.slice(0, 10), { id: 11, ts: rows[10].ts }, { id: 3, ts: '2024-06-01T00:00:00Z' }].sort(
      (a, b) => compareValues(a.ts, b.ts) || a.id - b.id,
    );
    expect(ids(await readAll(src, lastState(first)))).toEqual([11, 3]);
  });

  it('rejects records that go backwards, naming stream, position and values', async () => {
    const src = source('cursor_then_key', () => [rows[0], rows[2], rows[1]]);
    await expect(readAll(src, undefined)).rejects.toThrow(
      'stream "rows" yielded records out of order at record 3: (ts="2024-05-01T10:00:00Z", key=[2]) came after (ts="2024-05-01T10:00:00Z", key=[3])',
    );
    // With ordering 'cursor' the same tie order is fine.
    expect(
      ids(
        await readAll(
          source('cursor', () => [rows[0], rows[2], rows[1]]),
          undefined,
        ),
      ),
    ).toEqual([1, 3, 2]);
  });

  it('orders numbers, bigints, dates and mixed ISO formats by value', () => {
    expect(compareValues(9, 10)).toBe(-1);
    expect(compareValues(10n, '9')).toBe(1);
    expect(compareValues('2024-01-01T00:00:00Z', '2024-01-01T00:00:00.500Z')).toBe(-1);
    expect(compareValues('2024-01-02T00:00:00+02:00', '2024-01-01T23:00:00Z')).toBe(-1);
    const t = new CursorTracker({ stream: 's', cursorField: ['n'], primaryKey: [['id']], start: { cursor: 5, key: [2] } });
    expect([t.observe({ n: 4, id: 9 }), t.observe({ n: 5, id: 2 }), t.observe({ n: 5, id: 3 }), t.observe({ n: 6, id: 1 })]).toEqual([
      false,
      false,
      true,
      true,
    ]);
  });

  it('a saved state that is not a cursor state is a clear error', () => {
    expect(() => new CursorTracker({ stream: 's', cursorField: ['n'], primaryKey: [['id']], start: { offset: 3 } as never })).toThrow(
      'saved state of stream "s" is not a cursor state: {"offset":3}',
    );
  });
});

describe('defineSource read loop', () => {
  it('on abort: stops, checkpoints what was yielded and marks the stream INCOMPLETE', async () => {
    const ctx = testContext();
    const src = rowsSource(
      async function* () {
        for (const r of rows) {
          if (r.id === 6) ctx.abort();
          yield r;
        }
      },
      { stateEvery: 100 },
    );
    const out = await readAll(src, undefined, Infinity, ctx);
    expect(ids(out)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(out.at(-2)).toMatchObject({ type: 'STATE', state: { stream: { stream_state: { cursor: rows[5].ts, key: [6] } } } });
    expect(out.at(-1)).toMatchObject({ type: 'TRACE', trace: { stream_status: { status: 'INCOMPLETE' } } });
  });

  it('deletions carrying the cursor move the position, so they are not repeated on resume', async () => {
    const src = rowsSource(async function* ({ since }) {
      const all = [rows[0], rows[1], deleted({ id: 99, ts: rows[2].ts })];
      for (const r of all) {
        const ts = 'key' in r ? (r.key.ts as string) : r.ts;
        if (since === undefined || ts >= (since as string)) yield r;
      }
    });
    const first = await readAll(src, undefined);
    const del = first.find((m) => m.type === 'RECORD' && m.record.data.id === 99);
    expect(del).toMatchObject({ record: { data: { id: 99, _ab_cdc_deleted_at: expect.any(String) } } });
    expect(lastState(first)!.streams.rows).toEqual({ cursor: rows[2].ts, key: [99] });
    expect(ids(await readAll(src, lastState(first)))).toEqual([]);
  });
});
