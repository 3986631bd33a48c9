// Destination conformance: the checkpoint rule (a STATE is acknowledged only after the data before
// it is readable), every batch stored and counted, updates within one batch, idempotent replay,
// replacing a document's chunks as a unit, deletes and overwrite.
//
// The kit never touches a user's data (invariant 9): it runs under a connection name of its own,
// writes uniquely named test streams, in the destination's sandbox() when it has one, refuses to
// write into a test stream that already holds data, and removes everything it wrote at the end.
//
// Every read-back compares the whole test stream with a model of what must be stored: each
// document's chunk indexes and contents, and no document that should not be there.
import { randomBytes } from 'node:crypto';
import type {
  Chunk,
  ConnectorContext,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  DestinationWriter,
  DocumentFingerprint,
  SourceState,
  StoredChunk,
} from '../protocol/connector.ts';
import { chunkId, sha256 } from '../protocol/identity.ts';
import type { DestinationSyncMode, StateMessage } from '../protocol/messages.ts';
import { testContext } from './context.ts';
import { ReportBuilder, type ConformanceReport } from './report.ts';
import { checkConfigRejected, checkSpec } from './spec-checks.ts';
import { describeFailure } from './source.ts';
import { FINGERPRINT_CHECKS, SOURCE_DIGEST_CHECKS, runFingerprintChecks } from './fingerprints.ts';

export type { StoredChunk } from '../protocol/connector.ts';

export const DESTINATION_CHECKS = [
  'spec.json-schema',
  'spec.secrets-marked',
  'spec.accepts-config',
  'check.succeeds',
  'check.rejects-bad-config',
  'write.acks-states-in-order',
  'write.state-acked-after-data-durable',
  'write.every-batch-stored',
  'write.written-counts-match',
  'write.same-batch-updates',
  'write.idempotent-replay',
  'write.replaces-chunks-as-unit',
  'write.deletes',
  'write.overwrite',
  ...FINGERPRINT_CHECKS,
  ...SOURCE_DIGEST_CHECKS,
  'cleanup.test-data-removed',
] as const;

export interface DestinationConformanceOptions {
  config: unknown;
  badConfigs?: unknown[];
  /**
   * Lists every chunk the destination holds for a stream (as a reader would see it). It receives
   * the config the kit writes with (the sandbox's, when the destination has one). Default: the
   * destination's own readBack(), else its search() with a large top_k.
   */
  readBack?: (config: any, ctx: ConnectorContext, stream: string) => Promise<StoredChunk[]>;
  /** Vector size to write (default 8 when the destination stores vectors). */
  dimensions?: number;
  /** Prefix of the test streams' names (default "conformance"); a random run id follows it. */
  streamPrefix?: string;
  /** Use the destination's sandbox() when it has one (default true). */
  sandbox?: boolean;
  /** Context overrides; the connection name is always the kit's own. */
  ctx?: Partial<ConnectorContext>;
}

type Mode = DestinationSyncMode;
/** A stream's expected content: document id → chunk contents by index. */
export type Model = Map<string, string[]>;

export function makeChunks(
  documentId: string,
  texts: string[],
  dimensions: number | undefined,
  metadata: Record<string, unknown> = { source: 'conformance' },
): Chunk[] {
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
      metadata,
      ...(embedding ? { embedding } : {}),
    };
  });
}

const sortedEntries = <V>(m: Map<string, V>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/** What a stream holds, as document → sorted chunk indexes (for messages). */
export function showHeld(chunks: StoredChunk[]): string {
  const out = new Map<string, number[]>();
  for (const c of chunks)
    out.set(
      c.documentId,
      [...(out.get(c.documentId) ?? []), c.chunkIndex].sort((a, b) => a - b),
    );
  return JSON.stringify(Object.fromEntries(sortedEntries(out)));
}

/**
 * Differences between what a stream holds and what it must hold; empty when they agree. Documents
 * in `optional` (sent after the acknowledged STATE: a writer may already have stored them) may be
 * absent, but when present must be exactly right.
 */
export function compareStream(held: StoredChunk[], expected: Model, optional: Model = new Map()): string[] {
  const problems: string[] = [];
  const byDoc = new Map<string, StoredChunk[]>();
  for (const c of held) byDoc.set(c.documentId, [...(byDoc.get(c.documentId) ?? []), c]);
  const all = new Map([...optional, ...expected]);
  for (const [id, texts] of sortedEntries(all)) {
    const chunks = byDoc.get(id);
    if (!chunks) {
      if (expected.has(id)) problems.push(`document "${id}" is missing`);
      continue;
    }
    const indexes = chunks.map((c) => c.chunkIndex).sort((a, b) => a - b);
    const want = texts.map((_, i) => i);
    const dupes = indexes.filter((x, i) => indexes.indexOf(x) !== i);
    if (dupes.length) problems.push(`document "${id}" holds chunk(s) ${[...new Set(dupes)].join(', ')} more than once`);
    else if (JSON.stringify(indexes) !== JSON.stringify(want))
      problems.push(`document "${id}" holds chunks ${JSON.stringify(indexes)}, expected ${JSON.stringify(want)}`);
    for (const c of chunks) {
      if (c.content !== undefined && c.chunkIndex < texts.length && c.content !== texts[c.chunkIndex])
        problems.push(
          `chunk ${c.chunkIndex} of document "${id}" holds ${JSON.stringify(c.content)}, expected ${JSON.stringify(texts[c.chunkIndex])}`,
        );
    }
  }
  const extra = [...byDoc.keys()].filter((id) => !all.has(id)).sort();
  if (extra.length) problems.push(`document(s) ${extra.map((id) => `"${id}"`).join(', ')} should not be there`);
  return problems;
}

export async function runDestinationConformance(
  destination: Destination,
  options: DestinationConformanceOptions,
): Promise<ConformanceReport> {
  const report = new ReportBuilder(destination.spec?.name ?? '(unnamed)', 'destination');
  const runId = randomBytes(4).toString('hex');
  const ctx = testContext({ ...options.ctx, connection: `sluice-conformance-${runId}` });
  const userConfig = checkSpec(destination, options.config, report);
  const writeChecks = DESTINATION_CHECKS.slice(5);
  if (userConfig === undefined) {
    for (const name of DESTINATION_CHECKS.slice(3)) report.skip(name, 'the config does not parse, so nothing else can run');
    return report.build();
  }
  try {
    const r = await destination.check(userConfig, ctx);
    if (r.ok) report.pass('check.succeeds');
    else report.fail('check.succeeds', `check() returned ok:false with the good config: ${r.message ?? '(no message)'}`);
  } catch (err) {
    report.fail('check.succeeds', `check() threw with the good config: ${describeFailure(err)}`);
  }
  await checkConfigRejected(destination, options.config, options.badConfigs, ctx, report);

  // Where the kit writes: the destination's sandbox, else the user's config with test streams.
  let config: unknown = userConfig;
  let removeSandbox: ((streams: string[]) => Promise<void>) | undefined;
  if (destination.sandbox && options.sandbox !== false) {
    try {
      const sb = await destination.sandbox(userConfig, ctx, runId);
      config = sb.config;
      removeSandbox = (streams) => sb.remove(streams);
    } catch (err) {
      for (const name of writeChecks) report.fail(name, `sandbox() failed, so nothing was written: ${describeFailure(err)}`);
      return report.build();
    }
  }

  const dims = options.dimensions ?? (destination.capabilities.vectors ? 8 : undefined);
  const prefix = `${options.streamPrefix ?? 'conformance'}_${runId}`;
  const modes = destination.capabilities.destinationSyncModes;
  const name = (mode: Mode) => `${prefix}_${mode}`;
  const testStreams = modes.map(name);
  const expected = new Map<string, Model>(testStreams.map((s) => [s, new Map()]));
  const doc = (
    stream: string,
    id: string,
    texts: string[],
    extra: { fingerprint?: DocumentFingerprint; metadata?: Record<string, unknown>; metadataOnly?: boolean } = {},
  ): DestinationMessage => ({
    type: 'DOCUMENT',
    stream,
    documentId: id,
    // A metadata-only update comes without vectors: the stored ones stay.
    chunks: makeChunks(id, texts, extra.metadataOnly ? undefined : dims, extra.metadata),
    record: { id, text: texts.join(' ') },
    ...(extra.fingerprint ? { fingerprint: extra.fingerprint } : {}),
    ...(extra.metadataOnly ? { metadataOnly: true } : {}),
  });
  const del = (stream: string, id: string): DestinationMessage => ({ type: 'DELETE', stream, documentId: id });
  const complete = (stream: string): DestinationMessage => ({ type: 'STREAM_COMPLETE', stream });
  const stateOf = (n: number): { msg: DestinationMessage; state: StateMessage; connection: SourceState } => {
    const st: StateMessage = { type: 'STREAM', stream: { stream_descriptor: { name: `${prefix}_source` }, stream_state: { position: n } } };
    const connection: SourceState = { streams: { [`${prefix}_source`]: { position: n } } };
    return { msg: { type: 'STATE', state: st, connection }, state: st, connection };
  };
  let stateNo = 0;
  const state = () => stateOf(++stateNo).msg;

  /** Applies what a writer was sent to the model, the way the stream's mode must. */
  const applyToModel = (mode: Mode, messages: DestinationMessage[]) => {
    const generation = new Set<string>();
    for (const m of messages) {
      if (m.type === 'DOCUMENT') {
        const model = expected.get(m.stream)!;
        const texts = m.chunks.map((c) => c.content);
        if (mode === 'append') {
          // Upsert by chunk id: chunks beyond the new count stay.
          const old = model.get(m.documentId) ?? [];
          model.set(m.documentId, texts.length >= old.length ? texts : [...texts, ...old.slice(texts.length)]);
        } else model.set(m.documentId, texts);
        generation.add(`${m.stream}\u0000${m.documentId}`);
      } else if (m.type === 'KEEP') generation.add(`${m.stream}\u0000${m.documentId}`);
      else if (m.type === 'DELETE') expected.get(m.stream)!.delete(m.documentId);
      else if (m.type === 'STREAM_COMPLETE' && mode === 'overwrite') {
        const model = expected.get(m.stream)!;
        for (const id of [...model.keys()]) if (!generation.has(`${m.stream}\u0000${id}`)) model.delete(id);
      }
    }
  };

  const streamsFor = (ms: Mode[]): DestinationStream[] => ms.map((m) => ({ name: name(m), destinationSyncMode: m, primaryKey: [['id']] }));

  const openWriter = (ms: Mode[]): Promise<DestinationWriter> =>
    destination.open(config, ctx, {
      streams: streamsFor(ms),
      ...(dims ? { dimensions: dims, embedderName: 'conformance test vectors' } : {}),
    });
  /** Opens a writer, feeds it `input`, calls `onEvent` (with the writer) as events arrive, closes it. */
  const run = async (
    ms: Mode[],
    input: DestinationMessage[],
    onEvent?: (e: DestinationEvent, writer: DestinationWriter) => Promise<void>,
  ): Promise<DestinationEvent[]> => {
    const writer = await openWriter(ms);
    const events: DestinationEvent[] = [];
    try {
      async function* feed() {
        for (const m of input) yield m;
      }
      for await (const e of writer.write(feed())) {
        events.push(e);
        if (onEvent) await onEvent(e, writer);
      }
    } finally {
      await writer.close();
    }
    return events;
  };

  // Read-back: the caller's, the destination's own, else its search() with a large top_k (every
  // chunk of a small test stream comes back for any query vector).
  const ownReadBack = options.readBack ?? destination.readBack?.bind(destination);
  const searchBack =
    destination.search && dims
      ? async (stream: string): Promise<StoredChunk[]> => {
          const vector = new Float32Array(dims).fill(1 / Math.sqrt(dims));
          const hits = await destination.search!(config, ctx, { vector, topK: 1000, streams: [stream] });
          return hits
            .filter((h) => h.stream === stream)
            .map((h) => ({ documentId: h.documentId, chunkIndex: h.chunkIndex, content: h.content, metadata: h.metadata }));
        }
      : undefined;
  const read: ((stream: string) => Promise<StoredChunk[]>) | undefined = ownReadBack
    ? (stream) => ownReadBack(config, ctx, stream)
    : searchBack;
  const noReadBack =
    'the destination has neither readBack() nor search(): pass readBack(config, ctx, stream), or export readBack from the connector module, so the kit can see what was stored';
  /** Differences between a stream and its model, prefixed with when they were seen. */
  const verify = async (stream: string, when: string, optional?: Model): Promise<string[]> => {
    const held = await read!(stream);
    return compareStream(held, expected.get(stream)!, optional).map((p) => `${when}: ${p} (stream holds ${showHeld(held)})`);
  };
  /** Reads that fail because a stream was never created count as empty. */
  const readOrEmpty = async (stream: string): Promise<StoredChunk[]> => {
    try {
      return await read!(stream);
    } catch {
      return [];
    }
  };

  try {
    // A test stream that already holds data means the config sends every stream to one place
    // (a fixed table or file): writing there would change the user's data.
    if (read) {
      const occupied: string[] = [];
      for (const s of testStreams) {
        const held = await readOrEmpty(s);
        if (held.length) occupied.push(`"${s}" (${held.length} chunks)`);
      }
      if (occupied.length) {
        for (const n of writeChecks)
          report.fail(
            n,
            `refused to write: the new test stream(s) ${occupied.join(', ')} already hold data, so this config sends every stream to the same place; give the kit a config with a table/file per stream`,
          );
        return report.build();
      }
    }
    await writeChecksRun();
    await runFingerprintChecks({
      destination,
      config,
      ctx,
      report,
      modes,
      name,
      dims,
      expected,
      applyToModel,
      doc,
      complete,
      state,
      run,
      openWriter,
      read,
      searchBack,
      noReadBack,
      compareStream,
      showHeld,
    });
  } finally {
    await cleanup();
  }
  return report.build();

  async function writeChecksRun(): Promise<void> {
    // Main mode for document checks: append_dedup if offered, else append, else overwrite.
    const main: Mode = modes.includes('append_dedup') ? 'append_dedup' : modes.includes('append') ? 'append' : modes[0];
    const s = name(main);

    // Several batches in one writer (a STATE ends each); read back after every acknowledgement.
    try {
      const batches: DestinationMessage[][] = [
        [doc(s, 'a', ['alpha one', 'alpha two']), doc(s, 'b', ['beta'])],
        [doc(s, 'c', ['gamma one', 'gamma two', 'gamma three']), doc(s, 'd', ['delta'])],
        [doc(s, 'e', ['epsilon']), doc(s, 'f', ['zeta one', 'zeta two'])],
        [doc(s, 'g', ['eta']), doc(s, 'h', ['theta one', 'theta two'])],
      ];
      const states = batches.map(() => state());
      const input: DestinationMessage[] = [];
      batches.forEach((b, i) => input.push(...b, states[i]));
      // A tail after the last STATE: flushed when the input ends.
      const tail = [doc(s, 'i', ['iota'])];
      input.push(...tail);
      if (main === 'overwrite') input.push(complete(s), state());
      const durability: string[] = [];
      let acks = 0;
      const events = await run([main], input, async (e) => {
        if (e.type !== 'STATE_COMMITTED' || !read || main === 'overwrite') return;
        acks++;
        if (acks > batches.length) return;
        // Everything before this STATE must be readable now; what came after may be, too.
        applyToModel(main, [...batches[acks - 1]]);
        const later: Model = new Map();
        for (const m of [...batches.slice(acks).flat(), ...tail])
          if (m.type === 'DOCUMENT')
            later.set(
              m.documentId,
              m.chunks.map((c) => c.content),
            );
        durability.push(...(await verify(s, `when STATE ${acks} was acknowledged`, later)));
      });
      const sentStates = input.filter((m) => m.type === 'STATE') as Extract<DestinationMessage, { type: 'STATE' }>[];
      const committed = events.filter((e): e is Extract<DestinationEvent, { type: 'STATE_COMMITTED' }> => e.type === 'STATE_COMMITTED');
      const problems: string[] = [];
      if (committed.length !== sentStates.length)
        problems.push(
          `expected ${sentStates.length} STATE_COMMITTED events for ${sentStates.length} STATE messages, got ${committed.length}`,
        );
      else {
        committed.forEach((c, i) => {
          if (JSON.stringify(c.state) !== JSON.stringify(sentStates[i].state))
            problems.push(`STATE_COMMITTED ${i + 1} is not STATE message ${i + 1}: the acknowledgements must come in the order received`);
          if (JSON.stringify(c.connection) !== JSON.stringify(sentStates[i].connection))
            problems.push(`STATE_COMMITTED ${i + 1}.connection differs from the STATE message it acknowledges`);
        });
      }
      for (const e of events) {
        if (e.type !== 'WRITTEN' && e.type !== 'STATE_COMMITTED')
          problems.push(`unknown event type ${JSON.stringify((e as { type?: unknown }).type)}`);
      }
      report.result('write.acks-states-in-order', problems);

      if (!read || main === 'overwrite') applyToModel(main, input);
      else applyToModel(main, [...batches.slice(Math.min(acks, batches.length)).flat(), ...tail]);
      if (!read) {
        report.skip('write.state-acked-after-data-durable', noReadBack);
        report.skip('write.every-batch-stored', noReadBack);
      } else {
        if (main === 'overwrite') report.notApplicable('write.state-acked-after-data-durable', 'the destination only supports overwrite');
        else report.result('write.state-acked-after-data-durable', durability);
        report.result('write.every-batch-stored', await verify(s, `after ${batches.length} batches and a tail, once the writer closed`));
      }

      // WRITTEN events count what was sent, and the chunks they report are what is stored.
      const written = events.filter((e): e is Extract<DestinationEvent, { type: 'WRITTEN' }> => e.type === 'WRITTEN');
      const counts: string[] = [];
      const docsSent = input.filter((m) => m.type === 'DOCUMENT').length;
      const chunksSent = input.reduce((n, m) => n + (m.type === 'DOCUMENT' ? m.chunks.length : 0), 0);
      const records = written.reduce((n, e) => n + e.records, 0);
      const chunks = written.reduce((n, e) => n + e.chunksWritten, 0);
      if (written.some((e) => e.stream !== s))
        counts.push(`WRITTEN events name streams that were not written: ${[...new Set(written.map((e) => e.stream))].join(', ')}`);
      if (records !== docsSent) counts.push(`WRITTEN events count ${records} records; ${docsSent} documents were written`);
      if (chunks !== chunksSent)
        counts.push(`WRITTEN events count ${chunks} chunks written; ${chunksSent} chunks were sent to a new stream`);
      if (read) {
        const stored = (await read(s)).length;
        if (stored !== chunks) counts.push(`WRITTEN events report ${chunks} chunks written, but the destination holds ${stored}`);
      }
      report.result('write.written-counts-match', counts, `${records} records, ${chunks} chunks`);
    } catch (err) {
      const why = `writing ${4} batches failed: ${describeFailure(err)}`;
      for (const n of [
        'write.acks-states-in-order',
        'write.state-acked-after-data-durable',
        'write.every-batch-stored',
        'write.written-counts-match',
      ])
        report.fail(n, why);
    }

    // Updates within one batch, in every mode: the same document twice (the second replaces the
    // first; in append mode it upserts chunk by chunk) and a document followed by its DELETE (it
    // must stay deleted).
    if (!read) report.skip('write.same-batch-updates', noReadBack);
    else {
      try {
        const problems: string[] = [];
        for (const m of modes.filter((x) => x !== 'overwrite' || main === 'overwrite')) {
          const sm = name(m);
          const input = [
            doc(sm, 'twice', ['first version a', 'first version b', 'first version c']),
            doc(sm, 'neighbour', ['next door']),
            doc(sm, 'twice', ['second version']),
            doc(sm, 'brief', ['here briefly', 'and gone']),
            del(sm, 'brief'),
            ...(m === 'overwrite' ? [complete(sm)] : []),
            state(),
          ];
          await run([m], input);
          applyToModel(m, input);
          problems.push(...(await verify(sm, `${m}: after one batch that wrote "twice" twice and "brief" then its DELETE`)));
        }
        report.result('write.same-batch-updates', problems);
      } catch (err) {
        report.fail('write.same-batch-updates', describeFailure(err));
      }
    }

    // idempotent replay: the same batch twice, in every non-overwrite mode, leaves one copy
    {
      const replayModes = modes.filter((m) => m !== 'overwrite');
      if (!replayModes.length) report.notApplicable('write.idempotent-replay', 'the destination only supports overwrite');
      else {
        try {
          const problems: string[] = [];
          for (const m of replayModes) {
            const batch = [doc(name(m), 'r1', ['one', 'two', 'three']), doc(name(m), 'r2', ['four']), state()];
            await run([m], batch);
            await run([m], batch);
            applyToModel(m, batch);
            if (read) problems.push(...(await verify(name(m), `${m}: after the same batch was written twice`)));
          }
          if (!read) report.skip('write.idempotent-replay', `replay ran without error; ${noReadBack}`);
          else report.result('write.idempotent-replay', problems);
        } catch (err) {
          report.fail('write.idempotent-replay', `replaying a batch failed: ${describeFailure(err)}`);
        }
      }
    }

    // a document's chunks are replaced as a unit (3 chunks, then 1, in separate writers)
    if (!modes.includes('append_dedup')) report.notApplicable('write.replaces-chunks-as-unit', 'append_dedup is not supported');
    else if (!read) report.skip('write.replaces-chunks-as-unit', noReadBack);
    else {
      try {
        const sd = name('append_dedup');
        const first = [doc(sd, 'shrink', ['s0', 's1', 's2']), state()];
        await run(['append_dedup'], first);
        applyToModel('append_dedup', first);
        const second = [doc(sd, 'shrink', ['s0 changed']), state()];
        await run(['append_dedup'], second);
        applyToModel('append_dedup', second);
        report.result('write.replaces-chunks-as-unit', await verify(sd, 'after document "shrink" went from 3 chunks to 1'));
      } catch (err) {
        report.fail('write.replaces-chunks-as-unit', describeFailure(err));
      }
    }

    // deletes, including one of a document that does not exist
    if (!read) report.skip('write.deletes', noReadBack);
    else {
      try {
        const first = [doc(s, 'gone', ['to be deleted', 'twice']), doc(s, 'kept', ['stays']), state()];
        await run([main], main === 'overwrite' ? [...first.slice(0, 2), complete(s), first[2]] : first);
        applyToModel(main, first);
        const second = [del(s, 'gone'), del(s, 'never-existed'), state()];
        await run([main], second);
        applyToModel(main, second);
        report.result('write.deletes', await verify(s, 'after DELETE of "gone" and of "never-existed"'));
      } catch (err) {
        report.fail(
          'write.deletes',
          `deleting documents failed (deleting a document that does not exist must succeed too): ${describeFailure(err)}`,
        );
      }
    }

    // overwrite: a new generation replaces the old one at STREAM_COMPLETE, and until then readers
    // see the whole old generation (no hole)
    if (!modes.includes('overwrite')) report.notApplicable('write.overwrite', 'overwrite is not supported');
    else {
      try {
        const so = name('overwrite');
        const gen1 = [doc(so, 'old1', ['x']), doc(so, 'both', ['y']), complete(so), state()];
        await run(['overwrite'], gen1);
        applyToModel('overwrite', gen1);
        const problems: string[] = [];
        if (read) problems.push(...(await verify(so, 'after the first generation')));
        const gen2 = [doc(so, 'both', ['y2']), state(), doc(so, 'new1', ['z']), complete(so), state()];
        // While the second generation loads, readers see the whole first one, or (once the writer
        // has read ahead to STREAM_COMPLETE and switched) the whole second one; never a mix.
        const oldGeneration = new Map(expected.get(so)!);
        applyToModel('overwrite', gen2);
        const newGeneration = new Map(expected.get(so)!);
        let acks = 0;
        await run(['overwrite'], gen2, async (e) => {
          if (e.type !== 'STATE_COMMITTED' || !read || ++acks !== 1) return;
          const held = await read(so);
          const asOld = compareStream(held, oldGeneration);
          if (asOld.length && compareStream(held, newGeneration).length)
            problems.push(
              ...asOld.map(
                (p) =>
                  `while the second generation was loading, readers saw neither the whole first generation nor the whole second: ${p} (stream holds ${showHeld(held)})`,
              ),
            );
        });
        if (!read) report.skip('write.overwrite', `two generations written without error; ${noReadBack}`);
        else {
          problems.push(...(await verify(so, 'after the second generation completed')));
          report.result('write.overwrite', problems);
        }
      } catch (err) {
        report.fail('write.overwrite', describeFailure(err));
      }
    }
  }

  async function cleanup(): Promise<void> {
    try {
      if (removeSandbox) {
        await removeSandbox(testStreams);
        const left: string[] = [];
        if (read) for (const s of testStreams) if ((await readOrEmpty(s)).length) left.push(s);
        report.result(
          'cleanup.test-data-removed',
          left.map((s) => `stream "${s}" still holds data after sandbox().remove()`),
          'the sandbox was removed',
        );
        return;
      }
      // No sandbox: delete every document the kit wrote, stream by stream.
      let deleted = 0;
      for (const [stream, model] of expected) {
        const mode = modes.find((m) => name(m) === stream)!;
        const held = read ? await readOrEmpty(stream) : [];
        const ids = new Set([...model.keys(), ...held.map((c) => c.documentId)]);
        if (!ids.size) continue;
        if (mode === 'overwrite') await run([mode], [complete(stream), state()]);
        else await run([mode], [...[...ids].map((id) => del(stream, id)), state()]);
        deleted += ids.size;
        model.clear();
      }
      if (!read) {
        report.skip('cleanup.test-data-removed', `deleted the ${deleted} test documents; ${noReadBack}`);
        return;
      }
      const problems: string[] = [];
      for (const s of testStreams) problems.push(...(await verify(s, 'after the kit deleted its test documents')));
      report.result(
        'cleanup.test-data-removed',
        problems,
        `deleted the ${deleted} test documents of streams ${testStreams.join(', ')} (the destination has no sandbox(), so empty containers may remain)`,
      );
    } catch (err) {
      report.fail('cleanup.test-data-removed', `removing the test data failed: ${describeFailure(err)}`);
    }
  }
}
