// defineDestination and the batching writer: a destination implements "apply this batch durably"
// and the kit handles the protocol — batching by count and bytes, flushing before every STATE and
// acknowledging it only after the flush, STREAM_COMPLETE for overwrite, and the final flush.
import type { z } from 'zod';
import type {
  CheckResult,
  Chunk,
  ConnectorContext,
  ConnectorSpec,
  Destination,
  DestinationEvent,
  DestinationMessage,
  DestinationStream,
  DestinationWriter,
  OpenOptions,
  SourceState,
} from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import type { DestinationSyncMode } from '../protocol/messages.ts';

export type WriteOperation = Extract<DestinationMessage, { type: 'DOCUMENT' } | { type: 'DELETE' } | { type: 'KEEP' }>;

/** Counts a sink may report for a batch, per stream; missing ones are estimated. */
export interface BatchResult {
  chunksWritten?: Record<string, number>;
  chunksDeleted?: Record<string, number>;
  /**
   * Documents of the batch the sink refused and did not write (their stored version, if any, is
   * unchanged), with why; every other operation of the batch was applied. The kit reports each as a
   * REJECTED event with the document's record, before any later STATE is acknowledged.
   */
  rejected?: Array<{ stream: string; documentId: string; error: string }>;
}

export interface BatchSink {
  /**
   * Applies the operations, in order, durably (when it returns they survive a crash). Must be
   * idempotent: after a crash the same batch may arrive again.
   */
  writeBatch(ops: WriteOperation[]): Promise<BatchResult | void>;
  /** The source finished this stream (after its last batch): switch an overwrite generation here. */
  completeStream?(stream: DestinationStream): Promise<void>;
  /** Exactly-once destinations: store the connection state with the data (called after the flush). */
  commitState?(state: SourceState): Promise<void>;
  readState?(): Promise<SourceState | undefined>;
  /** See DestinationWriter.fingerprints: a sink with it stores DOCUMENT.fingerprint and handles metadataOnly and KEEP. */
  fingerprints?: DestinationWriter['fingerprints'];
  close(): Promise<void>;
  /** Batch limits chosen from the config (override the definition's `batch`). */
  batch?: BatchOptions;
}

export interface BatchOptions {
  /** Flush after this many documents/deletes (default 500). */
  maxRecords?: number;
  /** Flush after about this many bytes of chunk text and vectors (default 8 MiB). */
  maxBytes?: number;
}

/** Rough size of an operation: text plus vector bytes plus overhead, enough for batching. */
export function operationBytes(op: WriteOperation): number {
  if (op.type !== 'DOCUMENT') return 64 + op.documentId.length;
  let n = 128 + op.documentId.length;
  for (const c of op.chunks) n += chunkBytes(c);
  return n;
}
function chunkBytes(c: Chunk): number {
  return 96 + c.id.length + Buffer.byteLength(c.content, 'utf8') + (c.embedding ? c.embedding.length * 4 : 0);
}

/**
 * A DestinationWriter over a BatchSink. Memory is bounded by one batch: input is pulled only
 * while the batch is below its limits, so a slow sink slows the reader (backpressure).
 */
export function batchedWriter(sink: BatchSink, options: OpenOptions, batch: BatchOptions = {}): DestinationWriter {
  const maxRecords = Math.max(1, batch.maxRecords ?? 500);
  const maxBytes = Math.max(1, batch.maxBytes ?? 8 * 1024 * 1024);
  const streams = new Map(options.streams.map((s) => [s.name, s]));
  const streamOf = (name: string): DestinationStream => {
    const s = streams.get(name);
    if (!s) {
      throw new SluiceError(`received data for stream "${name}", which the destination was not opened for`, {
        kind: 'internal',
        hint: `streams opened: ${[...streams.keys()].join(', ')}`,
      });
    }
    return s;
  };

  return {
    ...(sink.readState ? { readState: () => sink.readState!() } : {}),
    ...(sink.fingerprints ? { fingerprints: (stream, ids) => sink.fingerprints!(stream, ids) } : {}),
    async *write(input: AsyncIterable<DestinationMessage>): AsyncGenerator<DestinationEvent> {
      let pending: WriteOperation[] = [];
      let bytes = 0;
      const flush = async function* (): AsyncGenerator<DestinationEvent> {
        if (!pending.length) return;
        const ops = pending;
        pending = [];
        bytes = 0;
        const result = (await sink.writeBatch(ops)) ?? {};
        const refused = rejectedOps(ops, result.rejected);
        const perStream = new Map<string, { records: number; chunks: number }>();
        for (const op of ops) {
          if (refused.has(op)) continue;
          const s = perStream.get(op.stream) ?? { records: 0, chunks: 0 };
          if (op.type !== 'KEEP') s.records++; // a kept document is not written again
          if (op.type === 'DOCUMENT') s.chunks += op.chunks.length;
          perStream.set(op.stream, s);
        }
        for (const [stream, s] of perStream) {
          yield {
            type: 'WRITTEN',
            stream,
            records: s.records,
            chunksWritten: result.chunksWritten?.[stream] ?? s.chunks,
            chunksDeleted: result.chunksDeleted?.[stream] ?? 0,
          };
        }
        for (const [op, error] of refused)
          yield {
            type: 'REJECTED',
            stream: op.stream,
            documentId: op.documentId,
            error,
            ...(op.type === 'DOCUMENT' ? { record: op.record } : {}),
          };
      };
      for await (const msg of input) {
        switch (msg.type) {
          case 'DOCUMENT':
          case 'DELETE':
          case 'KEEP':
            streamOf(msg.stream);
            pending.push(msg);
            bytes += operationBytes(msg);
            if (pending.length >= maxRecords || bytes >= maxBytes) yield* flush();
            break;
          case 'STATE':
            // The checkpoint rule: everything before this state is durable before it is acked.
            yield* flush();
            if (sink.commitState) await sink.commitState(msg.connection);
            yield { type: 'STATE_COMMITTED', state: msg.state, connection: msg.connection };
            break;
          case 'STREAM_COMPLETE':
            yield* flush();
            if (sink.completeStream) await sink.completeStream(streamOf(msg.stream));
            break;
        }
      }
      yield* flush();
    },
    close: () => sink.close(),
  };
}

/** The operations a sink refused (BatchResult.rejected), matched by stream and document id. */
function rejectedOps(ops: WriteOperation[], rejected: BatchResult['rejected']): Map<WriteOperation, string> {
  const out = new Map<WriteOperation, string>();
  if (!rejected?.length) return out;
  const why = new Map(rejected.map((r) => [`${r.stream}\u0000${r.documentId}`, r.error]));
  for (const op of ops) {
    const error = why.get(`${op.stream}\u0000${op.documentId}`);
    if (error !== undefined) out.set(op, error);
  }
  return out;
}

export interface DestinationDefinition<S extends z.ZodType> {
  spec: Omit<ConnectorSpec<z.output<S>>, 'config'> & { config: S };
  /** Default: all three modes. */
  destinationSyncModes?: DestinationSyncMode[];
  /** The destination stores vectors (needs `dimensions`). */
  vectors?: boolean;
  /**
   * Stores `DocumentFingerprint.source` with each document and gives it back from fingerprints() and
   * documents()/documentBatches(): sources with digests can then skip unchanged rows (docs/fingerprints.md).
   */
  sourceDigests?: boolean;
  check?(config: z.output<S>, ctx: ConnectorContext): Promise<CheckResult | void> | CheckResult | void;
  /** The common case: return a BatchSink and let the kit drive it. */
  connect?(config: z.output<S>, ctx: ConnectorContext, options: OpenOptions): Promise<BatchSink>;
  batch?: BatchOptions;
  /** Full control: return your own writer instead of a sink. */
  open?(config: z.output<S>, ctx: ConnectorContext, options: OpenOptions): Promise<DestinationWriter>;
  /** Read-only: throw what open() would refuse (e.g. an index of another vector size); `sync --dry-run` calls it. */
  preflight?: Destination<z.output<S>>['preflight'];
  search?: Destination<z.output<S>>['search'];
  maintain?: Destination<z.output<S>>['maintain'];
  /** For the conformance kit: where to write instead of the user's data, and how to remove it. */
  sandbox?: Destination<z.output<S>>['sandbox'];
  /** For the conformance kit: every chunk a stream holds. */
  readBack?: Destination<z.output<S>>['readBack'];
  /** Every stored document of a stream with its fingerprint (deletion detection, `sluice verify`). */
  documents?: Destination<z.output<S>>['documents'];
  /** Optional, with `documents`: the same documents in arrays (one async step per page for the sweep). */
  documentBatches?: Destination<z.output<S>>['documentBatches'];
  /**
   * Optional, with `sourceDigests` and `documents`: each document's id and stored source digest only
   * (a lighter listing for streams read with digests; see Destination.documentSources).
   */
  documentSources?: Destination<z.output<S>>['documentSources'];
  /** Every stored chunk of a stream, read-only (`sluice verify`). */
  scanChunks?: Destination<z.output<S>>['scanChunks'];
  /** `sluice reindex`: with your own `open()` whose writer honours `OpenOptions.reindex` (see Destination.reindex). */
  reindex?: Destination<z.output<S>>['reindex'];
}

export function defineDestination<S extends z.ZodType>(def: DestinationDefinition<S>): Destination<z.output<S>> {
  type C = z.output<S>;
  if (!def.connect && !def.open) {
    throw new SluiceError(`destination "${def.spec.name}" defines neither connect() nor open()`, {
      kind: 'internal',
      hint: 'pass `connect(config, ctx, options)` returning a BatchSink, or `open()` returning a writer',
    });
  }
  if (def.documentBatches && !def.documents) {
    throw new SluiceError(`destination "${def.spec.name}" defines documentBatches() without documents()`, {
      kind: 'internal',
      hint: 'documentBatches() lists the same documents as documents() in arrays; pass documents() too (sluice verify and the conformance kit use it)',
    });
  }
  if (def.documentSources && !(def.documents && def.sourceDigests)) {
    throw new SluiceError(`destination "${def.spec.name}" defines documentSources() without documents() and sourceDigests`, {
      kind: 'internal',
      hint: 'documentSources() lists the source digests documents() gives back; pass documents() and sourceDigests: true too',
    });
  }
  const modes = def.destinationSyncModes ?? ['overwrite', 'append', 'append_dedup'];
  const destination: Destination<C> = {
    kind: 'destination',
    spec: def.spec as ConnectorSpec<C>,
    capabilities: {
      destinationSyncModes: modes,
      ...(def.vectors ? { vectors: true } : {}),
      ...(def.sourceDigests ? { sourceDigests: true } : {}),
    },
    async check(config, ctx) {
      if (!def.check) return { ok: true };
      try {
        return (await def.check(config, ctx)) ?? { ok: true };
      } catch (err) {
        if (err instanceof SluiceError) return { ok: false, message: err.hint ? `${err.message} (${err.hint})` : err.message };
        return { ok: false, message: describeUnknown(err) };
      }
    },
    async open(config, ctx, options) {
      for (const s of options.streams) {
        if (!modes.includes(s.destinationSyncMode)) {
          throw new SluiceError(`destination "${def.spec.name}" does not support destination_sync_mode ${s.destinationSyncMode}`, {
            kind: 'config',
            where: `stream ${s.name}`,
            hint: `supported: ${modes.join(', ')}`,
          });
        }
      }
      if (def.open) return def.open(config, ctx, options);
      const sink = await def.connect!(config, ctx, options);
      return batchedWriter(sink, options, sink.batch ?? def.batch);
    },
    ...(def.preflight ? { preflight: def.preflight } : {}),
    ...(def.search ? { search: def.search } : {}),
    ...(def.maintain ? { maintain: def.maintain } : {}),
    ...(def.sandbox ? { sandbox: def.sandbox } : {}),
    ...(def.readBack ? { readBack: def.readBack } : {}),
    ...(def.documents ? { documents: def.documents } : {}),
    ...(def.documentBatches ? { documentBatches: def.documentBatches } : {}),
    ...(def.documentSources ? { documentSources: def.documentSources } : {}),
    ...(def.scanChunks ? { scanChunks: def.scanChunks } : {}),
    ...(def.reindex && def.open ? { reindex: def.reindex } : {}),
  };
  return destination;
}
