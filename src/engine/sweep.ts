// Deletion detection for full refresh + append_dedup (mark and sweep, docs/fingerprints.md): every
// document id the read produces is marked; when the source reports the stream complete, the stored
// documents that were not marked are deleted, before the stream's completion (and the STATE after
// it), so they are committed with it. An interrupted or failed read deletes nothing, and a swept
// stream is always read from its beginning (withoutSweptProgress).
import { randomBytes, createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { LoadedConnection } from '../config/load.ts';
import type { ConnectorContext, DestinationMessage, Logger, SourceState } from '../protocol/connector.ts';
import { SluiceError, describeUnknown, withContext } from '../protocol/errors.ts';
import type { ConfiguredCatalog } from '../protocol/messages.ts';

export interface SweepOptions {
  conn: Pick<LoadedConnection, 'config' | 'destination' | 'destinationConfig' | 'index'>;
  ctx: ConnectorContext;
  catalog: ConfiguredCatalog;
  /** Per stream: records_deleted is counted, records_failed read (a stream with failed records is not swept). */
  stats: Record<string, { records_deleted: number; records_failed?: number }>;
  signal: AbortSignal;
  logger: Logger;
  /** A worker of a sharded run reads only part of a stream: it never sweeps. */
  sharded: boolean;
}

/** Streams that get deletion detection in this run (empty when the destination cannot list documents). */
export function sweptStreams(opts: Pick<SweepOptions, 'conn' | 'catalog' | 'sharded'>): string[] {
  if (opts.sharded || !opts.conn.destination.documents) return [];
  return opts.catalog.streams
    .filter((s) => s.sync_mode === 'full_refresh' && s.destination_sync_mode === 'append_dedup')
    .map((s) => s.stream.name);
}

/**
 * A swept stream is always read from its beginning: saved progress of an interrupted full refresh
 * (a resume position) is not used, because the ids the interrupted read produced are not known to
 * this run, and a sweep after a resumed read would delete them. With a destination that keeps
 * fingerprints, re-reading what did not change costs no embedding and no writes.
 */
export function withoutSweptProgress(state: SourceState | undefined, swept: string[]): SourceState | undefined {
  if (!state || !swept.some((s) => state.streams[s] !== undefined)) return state;
  return { ...state, streams: Object.fromEntries(Object.entries(state.streams).filter(([k]) => !swept.includes(k))) };
}

/** Writes are awaited every this many marks, so LMDB's write queue stays bounded (invariant 6). */
const MARKS_PER_COMMIT = 10_000;

/**
 * Passes messages through, marking the document ids of swept streams (in a temporary LMDB database
 * in the connection's work directory, so memory does not grow with the stream), and inserts a
 * DELETE for every stored document the read did not produce before the stream's STREAM_COMPLETE.
 */
export async function* sweepStage(input: AsyncIterable<DestinationMessage>, opts: SweepOptions): AsyncGenerator<DestinationMessage> {
  const swept = new Set(sweptStreams(opts));
  if (!swept.size) return yield* input;
  const name = opts.conn.config.name;
  const maxShare = opts.conn.config.processing?.max_delete_share ?? 0.5;
  const dir = join(opts.ctx.workDir, `sweep-${process.pid}-${randomBytes(4).toString('hex')}`);
  let root: RootDatabase | undefined;
  let seen: Database<true, string> | undefined;
  let doomed: Database<string, number> | undefined;
  let marks = 0;
  let nextDoomed = 0;
  const key = (stream: string, id: string) => createHash('sha256').update(stream).update('\u0000').update(id).digest('base64');
  const db = () => {
    if (!root) {
      // A scratch database: no durability needed (removed at the end, and ignored after a crash).
      root = open({ path: dir, noSync: true, maxDbs: 2 });
      seen = root.openDB<true, string>({ name: 'seen' });
      doomed = root.openDB<string, number>({ name: 'doomed' });
    }
    return { seen: seen!, doomed: doomed! };
  };

  const sweep = async function* (stream: string): AsyncGenerator<DestinationMessage> {
    const stats = opts.stats[stream];
    if (opts.signal.aborted) return;
    if (stats?.records_failed) {
      opts.logger.warn(
        { connection: name, stream },
        `connection ${name}, stream ${stream}: ${stats.records_failed} records failed in this run, so their ids are not all known; documents the source no longer has are not deleted this time`,
      );
      return;
    }
    const { seen, doomed } = db();
    await seen.committed;
    const first = nextDoomed;
    let stored = 0;
    const where = `connection ${name}, destination ${opts.conn.config.destination.type}, stream ${stream}`;
    try {
      for await (const d of opts.conn.destination.documents!(opts.conn.destinationConfig, opts.ctx, stream)) {
        if (opts.signal.aborted) return;
        stored++;
        if (seen.doesExist(key(stream, d.documentId))) continue;
        void doomed.put(nextDoomed++, d.documentId);
        if ((nextDoomed - first) % MARKS_PER_COMMIT === 0) await doomed.committed;
      }
    } catch (err) {
      throw withContext(err, `${where} (listing stored documents to find those the source no longer has)`);
    }
    await doomed.committed;
    const count = nextDoomed - first;
    if (!count) return;
    if (count / stored > maxShare) {
      throw new SluiceError(
        `stream ${stream}: the complete read no longer has ${count} of the ${stored} stored documents (${Math.round((100 * count) / stored)}%); deleting them is more than processing.max_delete_share (${maxShare}) allows, so nothing was deleted`,
        {
          kind: 'config',
          where: `connections[${opts.conn.index}].processing.max_delete_share`,
          hint: `check that the source reads the right table/path and filters; if the source really lost that many documents, raise processing.max_delete_share (1 turns the check off) and sync again`,
        },
      );
    }
    opts.logger.info({ connection: name, stream, count }, `stream ${stream}: deleting ${count} documents the source no longer has`);
    for (const { value } of doomed.getRange({ start: first, end: nextDoomed })) {
      if (stats) stats.records_deleted++;
      yield { type: 'DELETE', stream, documentId: value };
    }
  };

  try {
    for await (const m of input) {
      if ((m.type === 'DOCUMENT' || m.type === 'DELETE') && swept.has(m.stream)) {
        // A DELETE's id is marked too: the source deleted it already, the sweep must not again.
        void db().seen.put(key(m.stream, m.documentId), true);
        if (++marks % MARKS_PER_COMMIT === 0) await db().seen.committed;
      } else if (m.type === 'STREAM_COMPLETE' && swept.has(m.stream)) {
        swept.delete(m.stream);
        yield* sweep(m.stream);
      }
      yield m;
    }
  } finally {
    if (root) await root.close().catch((e) => opts.logger.warn({ err: describeUnknown(e) }, 'closing the sweep database failed'));
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
