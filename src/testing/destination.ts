// Destination conformance: the checkpoint rule (a STATE is acknowledged only after the data before
// it is readable), idempotent replay, replacing a document's chunks as a unit, deletes and
// overwrite. Read-back checks need `readBack`, which lists what the destination holds.
import type {
  Chunk,
  ConnectorContext,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  SourceState,
} from '../protocol/connector.ts';
import { chunkId, sha256 } from '../protocol/identity.ts';
import type { DestinationSyncMode, StateMessage } from '../protocol/messages.ts';
import { testContext } from './context.ts';
import { ReportBuilder, type ConformanceReport } from './report.ts';
import { checkConfigRejected, checkSpec } from './spec-checks.ts';
import { describeFailure } from './source.ts';

export const DESTINATION_CHECKS = [
  'spec.json-schema',
  'spec.secrets-marked',
  'spec.accepts-config',
  'check.succeeds',
  'check.rejects-bad-config',
  'write.acks-states-in-order',
  'write.state-acked-after-data-durable',
  'write.idempotent-replay',
  'write.replaces-chunks-as-unit',
  'write.deletes',
  'write.overwrite',
] as const;

/** One stored chunk as the test sees it. */
export interface StoredChunk {
  documentId: string;
  chunkIndex: number;
  content?: string;
}

export interface DestinationConformanceOptions {
  config: unknown;
  badConfigs?: unknown[];
  /**
   * Lists every chunk the destination holds for a stream (as a reader would see it). Default: the
   * destination's own search() with a large top_k, when it has one.
   */
  readBack?: (config: any, ctx: ConnectorContext, stream: string) => Promise<StoredChunk[]>;
  /** Vector size to write (default 8 when the destination stores vectors). */
  dimensions?: number;
  /** Prefix of the test streams' names (default "conformance"). */
  streamPrefix?: string;
  ctx?: Partial<ConnectorContext>;
}

type Mode = DestinationSyncMode;

function makeChunks(documentId: string, texts: string[], dimensions: number | undefined): Chunk[] {
  return texts.map((content, chunkIndex) => {
    const hash = sha256(content);
    let embedding: Float32Array | undefined;
    if (dimensions) {
      embedding = new Float32Array(dimensions);
      for (let i = 0; i < dimensions; i++) embedding[i] = (parseInt(hash.slice((i * 2) % 60, ((i * 2) % 60) + 2), 16) + 1) / 256;
    }
    return {
      id: chunkId(documentId, chunkIndex),
      documentId,
      chunkIndex,
      content,
      contentHash: hash,
      metadata: { source: 'conformance' },
      ...(embedding ? { embedding } : {}),
    };
  });
}

export async function runDestinationConformance(
  destination: Destination,
  options: DestinationConformanceOptions,
): Promise<ConformanceReport> {
  const report = new ReportBuilder(destination.spec?.name ?? '(unnamed)', 'destination');
  const ctx = testContext(options.ctx);
  const config = checkSpec(destination, options.config, report);
  if (config === undefined) {
    for (const name of DESTINATION_CHECKS.slice(3)) report.skip(name, 'the config does not parse, so nothing else can run');
    return report.build();
  }
  try {
    const r = await destination.check(config, ctx);
    if (r.ok) report.pass('check.succeeds');
    else report.fail('check.succeeds', `check() returned ok:false with the good config: ${r.message ?? '(no message)'}`);
  } catch (err) {
    report.fail('check.succeeds', `check() threw with the good config: ${describeFailure(err)}`);
  }
  await checkConfigRejected(destination, options.badConfigs, ctx, report);

  const dims = options.dimensions ?? (destination.capabilities.vectors ? 8 : undefined);
  const prefix = options.streamPrefix ?? 'conformance';
  const modes = destination.capabilities.destinationSyncModes;
  const name = (mode: Mode) => `${prefix}_${mode}`;
  const doc = (stream: string, id: string, texts: string[]): DestinationMessage => ({
    type: 'DOCUMENT',
    stream,
    documentId: id,
    chunks: makeChunks(id, texts, dims),
    record: { id, text: texts.join(' ') },
  });
  const state = (n: number): { msg: DestinationMessage; state: StateMessage; connection: SourceState } => {
    const st: StateMessage = { type: 'STREAM', stream: { stream_descriptor: { name: `${prefix}_source` }, stream_state: { position: n } } };
    const connection: SourceState = { streams: { [`${prefix}_source`]: { position: n } } };
    return { msg: { type: 'STATE', state: st, connection }, state: st, connection };
  };
  const streamsFor = (ms: Mode[]): DestinationStream[] => ms.map((m) => ({ name: name(m), destinationSyncMode: m, primaryKey: [['id']] }));

  /** Opens a writer, feeds it `input`, calls `onEvent` as events arrive, closes it. */
  const run = async (
    ms: Mode[],
    input: DestinationMessage[],
    onEvent?: (e: DestinationEvent) => Promise<void>,
  ): Promise<DestinationEvent[]> => {
    const writer = await destination.open(config, ctx, {
      streams: streamsFor(ms),
      ...(dims ? { dimensions: dims, embedderName: 'conformance test vectors' } : {}),
    });
    const events: DestinationEvent[] = [];
    try {
      async function* feed() {
        for (const m of input) yield m;
      }
      for await (const e of writer.write(feed())) {
        events.push(e);
        if (onEvent) await onEvent(e);
      }
    } finally {
      await writer.close();
    }
    return events;
  };
  // Without a readBack hook, a destination that can search is read back through its own search():
  // a query with a large top_k returns every chunk of a small test stream.
  const searchBack =
    destination.search && dims
      ? async (stream: string): Promise<StoredChunk[]> => {
          const vector = new Float32Array(dims).fill(1 / Math.sqrt(dims));
          const hits = await destination.search!(config, ctx, { vector, topK: 1000, streams: [stream] });
          return hits
            .filter((h) => h.stream === stream)
            .map((h) => ({ documentId: h.documentId, chunkIndex: h.chunkIndex, content: h.content }));
        }
      : undefined;
  const read = options.readBack ? (stream: string) => options.readBack!(config, ctx, stream) : searchBack;
  const docsOf = async (stream: string): Promise<Map<string, number[]>> => {
    const out = new Map<string, number[]>();
    for (const c of await read!(stream))
      out.set(
        c.documentId,
        [...(out.get(c.documentId) ?? []), c.chunkIndex].sort((a, b) => a - b),
      );
    return out;
  };
  const show = (m: Map<string, number[]>) => JSON.stringify(Object.fromEntries([...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1))));
  const noReadBack = 'pass readBack(config, ctx, stream) to let the kit see what the destination stored';

  // The primary mode for document checks: append_dedup if offered, else the first one.
  const dedup: Mode | undefined = modes.includes('append_dedup') ? 'append_dedup' : undefined;
  const main: Mode = dedup ?? modes[0];
  const s = name(main);

  // acks in order, durability at ack time
  try {
    const s1 = state(1);
    const s2 = state(2);
    const durabilityProblems: string[] = [];
    let acks = 0;
    const events = await run(
      [main],
      [doc(s, 'a', ['alpha one', 'alpha two']), doc(s, 'b', ['beta']), s1.msg, doc(s, 'c', ['gamma']), s2.msg],
      async (e) => {
        if (e.type !== 'STATE_COMMITTED' || !read) return;
        acks++;
        // At the first ack, everything written before the first STATE must already be readable.
        if (acks === 1) {
          const held = await docsOf(s);
          for (const id of ['a', 'b'])
            if (!held.has(id))
              durabilityProblems.push(
                `STATE 1 was acknowledged before document "${id}" written before it was readable (held: ${show(held)})`,
              );
        }
      },
    );
    const committed = events.filter((e): e is Extract<DestinationEvent, { type: 'STATE_COMMITTED' }> => e.type === 'STATE_COMMITTED');
    const problems: string[] = [];
    if (committed.length !== 2) problems.push(`expected 2 STATE_COMMITTED events for 2 STATE messages, got ${committed.length}`);
    else {
      if (
        JSON.stringify(committed[0].state) !== JSON.stringify(s1.state) ||
        JSON.stringify(committed[1].state) !== JSON.stringify(s2.state)
      ) {
        problems.push('STATE_COMMITTED events are not the STATE messages received, in the same order');
      }
      if (JSON.stringify(committed[1].connection) !== JSON.stringify(s2.connection))
        problems.push('STATE_COMMITTED.connection differs from the STATE message it acknowledges');
    }
    for (const e of events) {
      if (e.type !== 'WRITTEN' && e.type !== 'STATE_COMMITTED')
        problems.push(`unknown event type ${JSON.stringify((e as { type?: unknown }).type)}`);
    }
    const written = events.filter((e) => e.type === 'WRITTEN').reduce((n, e) => n + (e as { records: number }).records, 0);
    if (written !== 3) problems.push(`WRITTEN events count ${written} records; 3 documents were written`);
    report.result('write.acks-states-in-order', problems);
    if (!read) report.skip('write.state-acked-after-data-durable', noReadBack);
    else report.result('write.state-acked-after-data-durable', durabilityProblems);
  } catch (err) {
    report.fail('write.acks-states-in-order', `writing 3 documents and 2 states failed: ${describeFailure(err)}`);
    report.skip('write.state-acked-after-data-durable', 'the write failed');
  }

  // idempotent replay: the same batch twice, in every non-overwrite mode, leaves one copy
  {
    const problems: string[] = [];
    const replayModes = modes.filter((m) => m !== 'overwrite');
    if (!replayModes.length) report.skip('write.idempotent-replay', 'the destination only supports overwrite');
    else {
      try {
        for (const m of replayModes) {
          const batch = [doc(name(m), 'r1', ['one', 'two', 'three']), doc(name(m), 'r2', ['four']), state(3).msg];
          await run([m], batch);
          const once = read ? await docsOf(name(m)) : undefined;
          await run([m], batch);
          if (read) {
            const twice = await docsOf(name(m));
            const chunks = await read(name(m));
            const ids = chunks.filter((c) => c.documentId === 'r1' || c.documentId === 'r2').map((c) => `${c.documentId}#${c.chunkIndex}`);
            const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
            if (dupes.length) problems.push(`${m}: replaying the same batch duplicated chunks ${[...new Set(dupes)].join(', ')}`);
            if (show(once!) !== show(twice))
              problems.push(`${m}: after replay the stream holds ${show(twice)}, before it held ${show(once!)}`);
            if (!twice.has('r1') || twice.get('r1')!.length !== 3)
              problems.push(`${m}: document r1 should have chunks [0,1,2], has ${JSON.stringify(twice.get('r1') ?? [])}`);
          }
        }
        if (!read) report.skip('write.idempotent-replay', `replay ran without error; ${noReadBack}`);
        else report.result('write.idempotent-replay', problems);
      } catch (err) {
        report.fail('write.idempotent-replay', `replaying a batch failed: ${describeFailure(err)}`);
      }
    }
  }

  // a document's chunks are replaced as a unit (3 chunks, then 1)
  if (!dedup) report.skip('write.replaces-chunks-as-unit', 'append_dedup is not supported');
  else if (!read) report.skip('write.replaces-chunks-as-unit', noReadBack);
  else {
    try {
      const sd = name('append_dedup');
      await run(['append_dedup'], [doc(sd, 'shrink', ['s0', 's1', 's2']), state(4).msg]);
      await run(['append_dedup'], [doc(sd, 'shrink', ['s0 changed']), state(5).msg]);
      const held = (await docsOf(sd)).get('shrink') ?? [];
      const content = (await read(sd)).find((c) => c.documentId === 'shrink' && c.chunkIndex === 0)?.content;
      const problems: string[] = [];
      if (JSON.stringify(held) !== '[0]')
        problems.push(
          `document "shrink" went from 3 chunks to 1 but the destination holds chunks ${JSON.stringify(held)}; chunks at or above the new count must be removed`,
        );
      if (content !== undefined && content !== 's0 changed')
        problems.push(`chunk 0 of "shrink" still has the old content ${JSON.stringify(content)}`);
      report.result('write.replaces-chunks-as-unit', problems);
    } catch (err) {
      report.fail('write.replaces-chunks-as-unit', describeFailure(err));
    }
  }

  // deletes
  if (!read) report.skip('write.deletes', noReadBack);
  else {
    try {
      await run([main], [doc(s, 'gone', ['to be deleted', 'twice']), doc(s, 'kept', ['stays']), state(6).msg]);
      await run(
        [main],
        [{ type: 'DELETE', stream: s, documentId: 'gone' }, { type: 'DELETE', stream: s, documentId: 'never-existed' }, state(7).msg],
      );
      const held = await docsOf(s);
      const problems: string[] = [];
      if (held.has('gone')) problems.push(`DELETE of document "gone" left chunks ${JSON.stringify(held.get('gone'))}`);
      if (!held.has('kept')) problems.push('DELETE of one document removed another ("kept")');
      report.result('write.deletes', problems);
    } catch (err) {
      report.fail(
        'write.deletes',
        `deleting documents failed (deleting a document that does not exist must succeed too): ${describeFailure(err)}`,
      );
    }
  }

  // overwrite: a new generation replaces the old one at STREAM_COMPLETE
  if (!modes.includes('overwrite')) report.skip('write.overwrite', 'overwrite is not supported');
  else {
    try {
      const so = name('overwrite');
      await run(['overwrite'], [doc(so, 'old1', ['x']), doc(so, 'both', ['y']), { type: 'STREAM_COMPLETE', stream: so }, state(8).msg]);
      await run(['overwrite'], [doc(so, 'both', ['y2']), doc(so, 'new1', ['z']), { type: 'STREAM_COMPLETE', stream: so }, state(9).msg]);
      if (!read) report.skip('write.overwrite', `two generations written without error; ${noReadBack}`);
      else {
        const held = await docsOf(so);
        const ids = [...held.keys()].sort();
        report.result(
          'write.overwrite',
          JSON.stringify(ids) === JSON.stringify(['both', 'new1'])
            ? []
            : [
                `after overwriting with documents [both, new1] the stream holds ${JSON.stringify(ids)}; the old generation must be replaced at STREAM_COMPLETE`,
              ],
        );
      }
    } catch (err) {
      report.fail('write.overwrite', describeFailure(err));
    }
  }
  return report.build();
}
