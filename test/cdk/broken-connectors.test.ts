// The conformance kit must fail broken connectors with messages that say exactly what is wrong.
import { describe, expect, it } from 'vitest';
import { defineDestination, defineSource, z, type Source, type WriteOperation } from 'sluice/cdk';
import { runDestinationConformance, runSourceConformance, type ConformanceReport } from 'sluice/testing';

const items = Array.from({ length: 12 }, (_, i) => ({
  id: i + 1,
  name: `item ${i + 1}`,
  updated_at: `2024-01-0${1 + Math.floor(i / 4)}T00:00:00.000Z`,
}));

const good = {
  spec: { name: 'items', config: z.strictObject({ rows: z.number().int().default(12) }) },
  streams: [
    {
      name: 'items',
      schema: z.object({ id: z.number().int(), name: z.string(), updated_at: z.string() }),
      primaryKey: 'id',
      cursorField: 'updated_at',
      stateEvery: 3,
      async *read({ since }: { since: unknown }) {
        for (const it of items) if (since === undefined || it.updated_at >= (since as string)) yield it;
      },
    },
  ],
};

const failedChecks = (report: ConformanceReport) => failed(report);
function failed(report: ConformanceReport): Record<string, string> {
  return Object.fromEntries(report.checks.filter((c) => !c.ok).map((c) => [c.name, c.message ?? '']));
}

describe('conformance kit on broken connectors', () => {
  it('passes the well-behaved reference connector', async () => {
    const report = await runSourceConformance(defineSource(good), { config: {} });
    expect(failed(report)).toEqual({});
    expect(report.ok).toBe(true);
  });

  it('reports a bad spec: invalid JSON Schema, an unmarked secret, a loose object', async () => {
    const source = defineSource({
      ...good,
      spec: { name: 'items', config: z.object({ api_key: z.string().default('k'), rows: z.number().default(1) }) },
    });
    const f = failed(await runSourceConformance(source, { config: {} }));
    expect(f['spec.secrets-marked']).toBe('config field "api_key" looks like a secret but is not marked: add .meta({ secret: true })');
    expect(f['check.rejects-bad-config']).toMatch(/unknown key was accepted by the config schema; use z\.strictObject/);

    // A spec whose config schema is not an object at all.
    const notObject = defineSource({ ...good, spec: { name: 'items', config: z.string() as unknown as z.ZodObject } });
    const f2 = failed(await runSourceConformance(notObject, { config: 'x' }));
    expect(f2['spec.json-schema']).toBe('the config schema must describe an object (type: object), not "string"');
  });

  it('reports a test config the spec refuses, naming the field', async () => {
    const f = failed(await runSourceConformance(defineSource(good), { config: { rows: 'many' } }));
    expect(f['spec.accepts-config']).toMatch(/^the test config does not match the spec: rows: .*expected number/i);
  });

  it('reports records that violate their schema, with stream, position, key and field', async () => {
    const source = defineSource({
      ...good,
      streams: [
        {
          ...good.streams[0],
          async *read() {
            yield items[0];
            yield { ...items[1], name: 42 };
            yield { id: 3, updated_at: items[2].updated_at };
          },
        },
      ],
    });
    const f = failed(await runSourceConformance(source, { config: {} }));
    expect(f['read.records-match-schema']).toBe(
      'stream "items", record 2 (id=2): /name must be string\nstream "items", record 3 (id=3): / is missing required property "name"',
    );
  });

  it('reports a state that does not advance', async () => {
    const stuck: Source = {
      ...defineSource(good),
      async *read(_config, catalog, _state) {
        for (const s of catalog.streams) {
          for (const [i, it] of items.entries()) {
            yield { type: 'RECORD', record: { stream: s.stream.name, data: it, emitted_at: 1 } };
            if (i % 4 === 3)
              yield {
                type: 'STATE',
                state: { type: 'STREAM', stream: { stream_descriptor: { name: s.stream.name }, stream_state: { cursor: null } } },
              };
          }
          yield {
            type: 'TRACE',
            trace: {
              type: 'STREAM_STATUS',
              emitted_at: 1,
              stream_status: { stream_descriptor: { name: s.stream.name }, status: 'COMPLETE' },
            },
          };
        }
      },
    };
    const f = failed(await runSourceConformance(stuck, { config: {} }));
    expect(f['incremental.state-advances']).toMatch(
      /^stream "items": the state after message 10 equals the one after message 5 \(\{"cursor":null\}\) although 4 record\(s\) came in between — the state does not advance/,
    );
    expect(f['incremental.resume-without-loss-or-repeats']).toMatch(
      /stream "items" repeated 4 record\(s\) the state already covered \(first: id=1, state \{"cursor":null\}\)/,
    );
  });

  it('reports a state that claims more than was read (loss), and a missing final state', async () => {
    const skipping: Source = {
      ...defineSource(good),
      async *read(_config, catalog, state) {
        const name = catalog.streams[0].stream.name;
        const after = (state?.streams[name]?.last as number | undefined) ?? 0;
        for (const it of items) {
          if (it.id <= after) continue;
          yield { type: 'RECORD', record: { stream: name, data: it, emitted_at: 1 } };
          // Claims two records more than it has emitted.
          if (it.id % 5 === 0)
            yield { type: 'STATE', state: { type: 'STREAM', stream: { stream_descriptor: { name }, stream_state: { last: it.id + 2 } } } };
        }
        yield {
          type: 'TRACE',
          trace: { type: 'STREAM_STATUS', emitted_at: 1, stream_status: { stream_descriptor: { name }, status: 'COMPLETE' } },
        };
      },
    };
    const f = failed(await runSourceConformance(skipping, { config: {} }));
    expect(f['incremental.resume-without-loss-or-repeats']).toMatch(
      /stream "items" lost 2 record\(s\) that came after the state \(first: id=6\) — the state claims more than was read/,
    );
    expect(f['incremental.state-emitted']).toBe(
      'stream "items": no STATE after its last record (message 14); the records after message 12 would be read again next time',
    );
  });

  it('reports protocol violations and a missing stream COMPLETE', async () => {
    const sloppy: Source = {
      ...defineSource(good),
      async *read(_config, catalog) {
        const name = catalog.streams[0].stream.name;
        yield { type: 'RECORD', record: { stream: name, data: items[0], emitted_at: 'yesterday' } } as never;
        yield { type: 'LOG', log: { level: 'LOUD', message: 'hi' } } as never;
      },
    };
    const f = failed(await runSourceConformance(sloppy, { config: {} }));
    expect(f['read.protocol-messages']).toMatch(/full refresh read, message 1 \(RECORD\): \/record\/emitted_at must be integer/);
    expect(f['read.protocol-messages']).toMatch(/full refresh read, message 2 \(LOG\): \/log\/level must be one of/);
    expect(f['read.streams-complete']).toMatch(/^stream "items" was read without a TRACE STREAM_STATUS COMPLETE/);
  });

  it('reports a crash in check() on a bad config as a crash, and a crash in read()', async () => {
    const crashing = defineSource({
      ...good,
      check: undefined,
      streams: [
        {
          ...good.streams[0],
          async *read() {
            yield items[0];
            throw new TypeError("Cannot read properties of undefined (reading 'x')");
          },
        },
      ],
    });
    const raw: Source = {
      ...crashing,
      check: async (c: { rows: number }) => {
        if (c.rows < 0) throw new RangeError('negative');
        return { ok: true };
      },
    };
    const f = failed(await runSourceConformance(raw, { config: {}, badConfigs: [{ rows: -1 }] }));
    expect(f['check.rejects-bad-config']).toBe(
      'bad config #1: check() crashed with RangeError: negative — return { ok: false, message } or throw a SluiceError',
    );
    expect(f['read.completes']).toBe(
      "full refresh read failed after 1 records: crashed with TypeError: Cannot read properties of undefined (reading 'x') [stream items] — throw a SluiceError that says what failed and what to do",
    );
  });
});

describe('conformance kit on broken destinations', () => {
  type Row = { documentId: string; chunkIndex: number; content: string };
  /** An in-memory store with switchable faults. */
  function memoryDestination(faults: {
    ackEarly?: boolean;
    noDelete?: boolean;
    appendDuplicates?: boolean;
    keepOldChunks?: boolean;
    noOverwrite?: boolean;
  }) {
    const tables = new Map<string, Row[]>();
    const table = (s: string) => tables.get(s) ?? (tables.set(s, []), tables.get(s)!);
    const destination = defineDestination({
      spec: { name: 'memory', config: z.strictObject({}) },
      async open(_config, _ctx, { streams }) {
        const modes = new Map(streams.map((s) => [s.name, s.destinationSyncMode]));
        const pending: WriteOperation[] = [];
        const apply = () => {
          for (const op of pending.splice(0)) {
            const rows = table(op.stream);
            if (op.type === 'DELETE') {
              if (!faults.noDelete)
                tables.set(
                  op.stream,
                  rows.filter((r) => r.documentId !== op.documentId),
                );
              continue;
            }
            let kept = faults.appendDuplicates
              ? rows
              : rows.filter((r) => r.documentId !== op.documentId || (faults.keepOldChunks && r.chunkIndex >= op.chunks.length));
            if (modes.get(op.stream) === 'overwrite' && !faults.noOverwrite) kept = kept.filter((r) => r.documentId !== op.documentId);
            tables.set(op.stream, [
              ...kept,
              ...op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content })),
            ]);
          }
        };
        const generation = new Set<string>();
        return {
          async *write(input) {
            for await (const m of input) {
              if (m.type === 'DOCUMENT' || m.type === 'DELETE') {
                pending.push(m);
                if (m.type === 'DOCUMENT') generation.add(`${m.stream}\u0000${m.documentId}`);
              } else if (m.type === 'STATE') {
                if (!faults.ackEarly) apply();
                yield { type: 'STATE_COMMITTED', state: m.state, connection: m.connection };
              } else if (m.type === 'STREAM_COMPLETE' && !faults.noOverwrite) {
                apply();
                tables.set(
                  m.stream,
                  table(m.stream).filter((r) => generation.has(`${m.stream}\u0000${r.documentId}`)),
                );
              }
            }
            apply();
            yield { type: 'WRITTEN', stream: streams[0].name, records: 3, chunksWritten: 0, chunksDeleted: 0 };
          },
          async close() {},
        };
      },
    });
    return { destination, readBack: async (_c: unknown, _x: unknown, stream: string) => table(stream) };
  }

  it('passes a correct in-memory destination', async () => {
    const { destination, readBack } = memoryDestination({});
    const r = await runDestinationConformance(destination, { config: {}, readBack });
    expect(failedChecks(r)).toEqual({});
  });

  it('names each broken promise', async () => {
    const early = memoryDestination({ ackEarly: true });
    expect(
      failedChecks(await runDestinationConformance(early.destination, { config: {}, readBack: early.readBack }))[
        'write.state-acked-after-data-durable'
      ],
    ).toBe(
      'STATE 1 was acknowledged before document "a" written before it was readable (held: {})\nSTATE 1 was acknowledged before document "b" written before it was readable (held: {})',
    );
    const dup = memoryDestination({ appendDuplicates: true });
    expect(
      failedChecks(await runDestinationConformance(dup.destination, { config: {}, readBack: dup.readBack }))['write.idempotent-replay'],
    ).toMatch(/^append: replaying the same batch duplicated chunks r1#0, r1#1, r1#2, r2#0/);
    const stale = memoryDestination({ keepOldChunks: true });
    expect(
      failedChecks(await runDestinationConformance(stale.destination, { config: {}, readBack: stale.readBack }))[
        'write.replaces-chunks-as-unit'
      ],
    ).toBe(
      'document "shrink" went from 3 chunks to 1 but the destination holds chunks [0,1,2]; chunks at or above the new count must be removed',
    );
    const keep = memoryDestination({ noDelete: true });
    expect(failedChecks(await runDestinationConformance(keep.destination, { config: {}, readBack: keep.readBack }))['write.deletes']).toBe(
      'DELETE of document "gone" left chunks [0,1]',
    );
    const noSwitch = memoryDestination({ noOverwrite: true });
    expect(
      failedChecks(await runDestinationConformance(noSwitch.destination, { config: {}, readBack: noSwitch.readBack }))['write.overwrite'],
    ).toBe(
      'after overwriting with documents [both, new1] the stream holds ["both","new1","old1"]; the old generation must be replaced at STREAM_COMPLETE',
    );
  });
});
