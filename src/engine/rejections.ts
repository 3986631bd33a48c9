// Records that fail outside the engine's own stages: a source that could not parse one input
// record (TRACE SLUICE_RECORD_ERROR, see src/protocol/messages.ts) and a destination that refused
// one document (DestinationEvent REJECTED). Either fails the run, or — with errors.tolerance: all —
// becomes a dead letter that counts against the error budget, and the run goes on.
import type { DestinationEvent } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';
import { truncateRaw, type RecordError } from '../protocol/messages.ts';
import type { DeadLetterStage, ErrorBudget } from './dead-letters.ts';

/** The counters a failed record moves (a subset of StreamStats, so this file needs no engine import). */
export interface FailureCounters {
  records_failed?: number;
  /** Dead letters of this run by stage (source, key, text, embed, destination). */
  failed_by_stage?: Partial<Record<DeadLetterStage, number>>;
}

export function countFailed(stats: FailureCounters | undefined, stage: DeadLetterStage): void {
  if (!stats) return;
  stats.records_failed = (stats.records_failed ?? 0) + 1;
  stats.failed_by_stage = { ...stats.failed_by_stage, [stage]: (stats.failed_by_stage?.[stage] ?? 0) + 1 };
}

/**
 * A record the source could not parse. Without tolerance: the error that fails the run, naming the
 * connection, stream and position. With it: a dead letter (stage `source`, payload `{ raw }`).
 */
export async function sourceRecordError(
  e: RecordError,
  where: string,
  budget: ErrorBudget | undefined,
  stats: FailureCounters | undefined,
  recordsRead: number,
): Promise<void> {
  const err = new SluiceError(e.message, {
    kind: 'source',
    where: `${where}, ${e.position}`,
    hint: `${e.hint ?? 'fix the record at the source'}; or set errors.tolerance: all on the connection to keep such records as dead letters and go on`,
  });
  if (!budget?.tolerant) throw err;
  await budget.deadLetter(
    err,
    { stream: e.stream, stage: 'source', position: e.position, payload: e.raw !== undefined ? { raw: truncateRaw(e.raw) } : {} },
    recordsRead,
  );
  countFailed(stats, 'source');
}

/**
 * A document the destination refused (the rest of its batch was written). Without tolerance the
 * run fails naming it; with tolerance it becomes a dead letter (stage `destination`) carrying the
 * record, so `sluice dead-letters retry` can send it again once the cause is fixed.
 */
export async function destinationRejection(
  ev: Extract<DestinationEvent, { type: 'REJECTED' }>,
  where: string,
  budget: ErrorBudget | undefined,
  stats: FailureCounters | undefined,
  recordsRead: number,
): Promise<void> {
  const err = new SluiceError(`the destination refused document ${ev.documentId}: ${ev.error}`, {
    kind: 'destination',
    where: `${where}, stream ${ev.stream}, document ${ev.documentId}`,
    hint: 'change the record or the pipeline (e.g. fewer metadata_fields), or set errors.tolerance: all to keep such records as dead letters and go on',
  });
  if (!budget?.tolerant) throw err;
  await budget.deadLetter(err, { stream: ev.stream, key: ev.documentId, stage: 'destination', payload: ev.record ?? {} }, recordsRead);
  countFailed(stats, 'destination');
}
