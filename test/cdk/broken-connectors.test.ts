// The conformance kit must fail broken connectors with messages that say exactly what is wrong.
import { describe, expect, it } from 'vitest';
import { defineDestination, defineSource, z, type Destination, type Source, type WriteOperation } from 'sluice/cdk';
import {
  runDestinationConformance,
  runSourceConformance,
  type ConformanceReport,
  type DestinationConformanceOptions,
} from 'sluice/testing';

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
    expect(f['check.rejects-bad-config']).toMatch(
      /^a config with an unknown key was accepted by the config schema \(the good config plus "__sluice_conformance_unknown_key__"\); use z\.strictObject/,
    );

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
  /** Rows by stream, shared by every writer of one destination. */
  const newStore = () => {
    const tables = new Map<string, Row[]>();
    const table = (s: string) => tables.get(s) ?? (tables.set(s, []), tables.get(s)!);
    return { tables, table, readBack: async (_c: unknown, _x: unknown, stream: string) => [...table(stream)] };
  };

  /** An in-memory store behind its own writer, with switchable faults. */
  function memoryDestination(faults: {
    ackEarly?: boolean;
    noDelete?: boolean;
    appendDuplicates?: boolean;
    keepOldChunks?: boolean;
    noOverwrite?: boolean;
    wrongCounts?: boolean;
  }) {
    const { tables, table, readBack } = newStore();
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
            if (op.type === 'KEEP') continue; // never sent: this writer has no fingerprints()
            // Overwrite loads the new generation beside the old one (noOverwrite: over it).
            if (modes.get(op.stream) === 'overwrite' && !faults.noOverwrite) {
              const next = staged.get(op.stream) ?? [];
              staged.set(op.stream, [
                ...next.filter((r) => r.documentId !== op.documentId),
                ...op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content })),
              ]);
              continue;
            }
            const append = modes.get(op.stream) === 'append';
            const kept = faults.appendDuplicates
              ? rows
              : rows.filter(
                  (r) => r.documentId !== op.documentId || ((append || faults.keepOldChunks) && r.chunkIndex >= op.chunks.length),
                );
            tables.set(op.stream, [
              ...kept,
              ...op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content })),
            ]);
          }
        };
        const staged = new Map<string, Row[]>();
        return {
          async *write(input) {
            let records = 0;
            let chunks = 0;
            for await (const m of input) {
              if (m.type === 'DOCUMENT' || m.type === 'DELETE') {
                pending.push(m);
                records++;
                if (m.type === 'DOCUMENT') chunks += m.chunks.length;
              } else if (m.type === 'STATE') {
                if (!faults.ackEarly) apply();
                yield { type: 'STATE_COMMITTED', state: m.state, connection: m.connection };
              } else if (m.type === 'STREAM_COMPLETE' && !faults.noOverwrite) {
                apply();
                tables.set(m.stream, staged.get(m.stream) ?? []);
                staged.delete(m.stream);
              }
            }
            apply();
            if (faults.wrongCounts) records = 3;
            yield { type: 'WRITTEN', stream: streams[0].name, records, chunksWritten: chunks, chunksDeleted: 0 };
          },
          async close() {},
        };
      },
    });
    return { destination, readBack };
  }

  /**
   * Realistic sink bugs behind the kit's own batching writer (a STATE ends a batch):
   * - dropAfterFirst: stores the first batch and silently drops every later one;
   * - writeBehind: acknowledges each batch at once and stores it a little later;
   * - deleteThenInsert: applies a batch as "delete all its documents, then insert all chunks".
   */
  function sinkDestination(fault?: 'dropAfterFirst' | 'writeBehind' | 'deleteThenInsert') {
    const { tables, table, readBack } = newStore();
    let batches = 0;
    const applyInOrder = (ops: WriteOperation[]) => {
      for (const op of ops) {
        const rows = table(op.stream).filter((r) => r.documentId !== op.documentId);
        if (op.type === 'DOCUMENT')
          rows.push(...op.chunks.map((c) => ({ documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content })));
        tables.set(op.stream, rows);
      }
    };
    const destination = defineDestination({
      spec: { name: 'memory-sink', config: z.strictObject({}) },
      destinationSyncModes: ['append_dedup'],
      async connect() {
        return {
          async writeBatch(ops) {
            batches++;
            if (fault === 'dropAfterFirst' && batches > 1) return;
            if (fault === 'writeBehind') {
              setTimeout(() => applyInOrder(ops), 30);
              return;
            }
            if (fault === 'deleteThenInsert') {
              const ids = new Set(ops.map((o) => `${o.stream}\u0000${o.documentId}`));
              for (const [stream, rows] of tables)
                tables.set(
                  stream,
                  rows.filter((r) => !ids.has(`${stream}\u0000${r.documentId}`)),
                );
              for (const op of ops) {
                if (op.type !== 'DOCUMENT') continue;
                const rows = table(op.stream);
                for (const c of op.chunks) {
                  const at = rows.findIndex((r) => r.documentId === op.documentId && r.chunkIndex === c.chunkIndex);
                  const row = { documentId: op.documentId, chunkIndex: c.chunkIndex, content: c.content };
                  if (at >= 0) rows[at] = row;
                  else rows.push(row);
                }
              }
              return;
            }
            applyInOrder(ops);
          },
          async close() {},
        };
      },
    });
    return { destination, readBack };
  }

  const run = (d: { destination: Destination; readBack: DestinationConformanceOptions['readBack'] }) =>
    runDestinationConformance(d.destination, { config: {}, readBack: d.readBack });

  it('passes correct in-memory destinations, and removes its test data from them', async () => {
    const own = memoryDestination({});
    const report = await run(own);
    expect(failed(report)).toEqual({});
    expect(report.skipped).toBe(0);
    const sink = sinkDestination();
    expect(failed(await run(sink))).toEqual({});
    // No sandbox(): the kit deleted every document it wrote (and read back that they are gone).
    const r = report.checks.find((c) => c.name === 'cleanup.test-data-removed')!;
    expect(r.message).toMatch(/^deleted the \d+ test documents of streams conformance_[0-9a-f]{8}_overwrite, /);
  });

  it('fails a destination that silently drops every batch after the first', async () => {
    const f = failed(await run(sinkDestination('dropAfterFirst')));
    expect(f['write.state-acked-after-data-durable']).toMatch(/^when STATE 2 was acknowledged: document "c" is missing/);
    expect(f['write.every-batch-stored']).toMatch(/^after 4 batches and a tail, once the writer closed: document "c" is missing/);
    expect(f['write.written-counts-match']).toBe('WRITTEN events report 14 chunks written, but the destination holds 3');
  });

  it('fails a write-behind destination that acknowledges a STATE before its batch is stored', async () => {
    const f = failed(await run(sinkDestination('writeBehind')));
    expect(f['write.state-acked-after-data-durable']).toMatch(
      /^when STATE 1 was acknowledged: document "a" is missing \(stream holds \{\}\)/,
    );
  });

  it('fails a destination that applies a batch as "delete its documents, then insert all chunks"', async () => {
    const f = failed(await run(sinkDestination('deleteThenInsert')));
    expect(f['write.same-batch-updates']).toBe(
      [
        'append_dedup: after one batch that wrote "twice" twice and "brief" then its DELETE: document "twice" holds chunks [0,1,2], expected [0] (stream holds {"a":[0,1],"b":[0],"brief":[0,1],"c":[0,1,2],"d":[0],"e":[0],"f":[0,1],"g":[0],"h":[0,1],"i":[0],"neighbour":[0],"twice":[0,1,2]})',
        'append_dedup: after one batch that wrote "twice" twice and "brief" then its DELETE: document(s) "brief" should not be there (stream holds {"a":[0,1],"b":[0],"brief":[0,1],"c":[0,1,2],"d":[0],"e":[0],"f":[0,1],"g":[0],"h":[0,1],"i":[0],"neighbour":[0],"twice":[0,1,2]})',
      ].join('\n'),
    );
  });

  it('names each broken promise', async () => {
    const early = failed(await run(memoryDestination({ ackEarly: true })));
    expect(early['write.state-acked-after-data-durable']).toMatch(
      /^when STATE 1 was acknowledged: document "a" is missing \(stream holds \{\}\)\nwhen STATE 1 was acknowledged: document "b" is missing/,
    );
    expect(failed(await run(memoryDestination({ appendDuplicates: true })))['write.idempotent-replay']).toMatch(
      /^append: after the same batch was written twice: document "r1" holds chunk\(s\) 0, 1, 2 more than once/,
    );
    expect(failed(await run(memoryDestination({ keepOldChunks: true })))['write.replaces-chunks-as-unit']).toMatch(
      /^after document "shrink" went from 3 chunks to 1: document "shrink" holds chunks \[0,1,2\], expected \[0\]/,
    );
    expect(failed(await run(memoryDestination({ noDelete: true })))['write.deletes']).toMatch(
      /^after DELETE of "gone" and of "never-existed": document\(s\) "brief", "gone" should not be there/,
    );
    expect(failed(await run(memoryDestination({ noOverwrite: true })))['write.overwrite']).toMatch(
      /^while the second generation was loading, readers saw neither the whole first generation nor the whole second: chunk 0 of document "both" holds "y2", expected "y"[^]*\nafter the second generation completed: document\(s\) "old1" should not be there/,
    );
    expect(failed(await run(memoryDestination({ wrongCounts: true })))['write.written-counts-match']).toBe(
      'WRITTEN events count 3 records; 9 documents were written',
    );
  });

  it('a loose config object fails the unknown-key probe even when bad configs are given', async () => {
    const loose = defineDestination({
      spec: { name: 'loose', config: z.object({ url: z.string().default('x') }) },
      async connect() {
        return { async writeBatch() {}, async close() {} };
      },
    });
    const f = failed(await runDestinationConformance(loose, { config: { url: 'x' }, badConfigs: [{ url: 5 }] }));
    expect(f['check.rejects-bad-config']).toMatch(/^a config with an unknown key was accepted by the config schema/);
  });
});
