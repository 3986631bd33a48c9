// SyncMetrics without servers: readiness (streaming, failed, stalled) on a controlled clock, and
// the log lines it turns into metrics (retries, PostgreSQL slot lag, Kafka consumer lag).
import { describe, expect, it } from 'vitest';
import type { ConnectionSummary, StreamStats } from '../../src/engine/sync.ts';
import { SyncMetrics } from '../../src/metrics/index.ts';
import { SluiceError } from '../../src/protocol/errors.ts';

const stats = (): StreamStats => ({
  status: 'running',
  records_read: 0,
  records_written: 0,
  records_deleted: 0,
  records_skipped: 0,
  chunks_written: 0,
  chunks_deleted: 0,
  embedding_requests: 0,
  embedding_tokens: 0,
  embedding_cache_hits: 0,
  duration_ms: 0,
});
const summary = (name: string): ConnectionSummary => ({
  name,
  status: 'succeeded',
  duration_ms: 0,
  states_committed: 0,
  streams: { items: stats() },
});
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

async function value(m: SyncMetrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = metric?.values.find((x) => Object.entries(labels).every(([k, l]) => String(x.labels[k]) === l));
  return v?.value;
}

describe('readiness', () => {
  it('is ready only while a connection streams, and not when it stalls', () => {
    let now = 1_000_000;
    const m = new SyncMetrics('/etc/sluice/cdc.yaml', { stallSeconds: 60, now: () => now });
    expect(m.ready()).toEqual({ ready: false, reason: 'starting' });
    const s = summary('tickets');
    m.observer.connectionStarted!(s, undefined);
    expect(m.ready().ready).toBe(true);
    now += 59_000;
    expect(m.ready().ready).toBe(true);
    now += 2_000;
    expect(m.ready()).toEqual({ ready: false, reason: 'connection tickets stalled: nothing read or committed for 61s' });
    s.streams.items.records_read++; // a record was read since the last look
    expect(m.ready().ready).toBe(true);
    now += 61_000;
    expect(m.ready().ready).toBe(false);
    m.observer.stateCommitted!('tickets', 0.01, 0); // an idle CDC connection commits heartbeats
    expect(m.ready().ready).toBe(true);

    s.status = 'failed';
    m.observer.connectionFinished!(s, new SluiceError('boom', { kind: 'source' }));
    expect(m.ready()).toEqual({ ready: false, reason: 'connection tickets failed' });
    m.notReady('connection tickets: the server ended the replication stream');
    expect(m.ready().reason).toBe('not connected: connection tickets: the server ended the replication stream');
    m.observer.connectionStarted!(summary('tickets'), undefined);
    expect(m.ready().ready).toBe(true);
  });

  it('never reports a stall without --stall-seconds', () => {
    let now = 0;
    const m = new SyncMetrics('p.yaml', { now: () => now });
    m.observer.connectionStarted!(summary('a'), undefined);
    now += 10 * 24 * 3600 * 1000;
    expect(m.ready().ready).toBe(true);
  });
});

describe('metrics from the engine and the logs', () => {
  it('adds up restarted runs, counts failures by kind and reads retries and slot lag from log lines', async () => {
    const m = new SyncMetrics('/x/cdc.yml');
    expect(m.pipeline).toBe('cdc');
    const first = summary('tickets');
    m.observer.connectionStarted!(first, undefined);
    first.streams.items.records_read = 5;
    first.status = 'failed';
    m.observer.connectionFinished!(first, new SluiceError('gone', { kind: 'source', transient: true }));
    const second = summary('tickets');
    m.observer.connectionStarted!(second, undefined);
    second.streams.items.records_read = 3;
    const labels = { pipeline: 'cdc', connection: 'tickets' };
    expect(await value(m, 'sluice_records_read_total', { ...labels, stream: 'items' })).toBe(8);
    expect(await value(m, 'sluice_errors_total', { ...labels, kind: 'source' })).toBe(1);

    const logger = m.tap(quiet);
    logger.warn({ provider: 'openai', attempt: 1, waitMs: 250 }, 'embedding request failed (429), retrying');
    logger.warn({ provider: 'openai', attempt: 2, waitMs: 500 }, 'embedding request failed (429), retrying');
    logger.warn({ something: 'else' }, 'not a retry');
    expect(await value(m, 'sluice_retries_total', labels)).toBe(2);
    logger.info({ slot: 'sluice_tickets', walRetainedBytes: 4096, unconfirmedBytes: 128 }, 'replication slot lag');
    expect(await value(m, 'sluice_replication_slot_wal_bytes', { ...labels, kind: 'retained' })).toBe(4096);
    expect(await value(m, 'sluice_replication_slot_wal_bytes', { ...labels, kind: 'unconfirmed' })).toBe(128);
    // The first report comes as the source's LOG message, text only.
    logger.info(
      { connection: 'tickets', source: 'postgres' },
      'slot sluice_tickets: 9000 bytes of WAL retained, 0 bytes not yet confirmed',
    );
    expect(await value(m, 'sluice_replication_slot_wal_bytes', { ...labels, kind: 'retained' })).toBe(9000);
    // Kafka consumer lag: each report replaces the last, so a partition handed to another worker goes.
    logger.debug(
      {
        kafkaConsumerLag: [
          { topic: 'orders', partition: 0, messages: 7 },
          { topic: 'orders', partition: 1, messages: 0 },
        ],
      },
      'Kafka consumer lag',
    );
    expect(await value(m, 'sluice_kafka_consumer_lag_messages', { ...labels, topic: 'orders', partition: '0' })).toBe(7);
    expect(await value(m, 'sluice_kafka_consumer_lag_messages', { ...labels, topic: 'orders', partition: '1' })).toBe(0);
    logger.debug({ kafkaConsumerLag: [{ topic: 'orders', partition: 1, messages: 2 }] }, 'Kafka consumer lag');
    expect(await value(m, 'sluice_kafka_consumer_lag_messages', { ...labels, topic: 'orders', partition: '0' })).toBeUndefined();
    expect(await value(m, 'sluice_kafka_consumer_lag_messages', { ...labels, topic: 'orders', partition: '1' })).toBe(2);

    m.observer.embeddingBatch!('tickets', 'items', 0.2, false);
    expect(await value(m, 'sluice_embedding_requests_total', { ...labels, stream: 'items', outcome: 'failure' })).toBe(1);
    m.observer.stateCommitted!('tickets', 0.05, 1.5);
    expect(await value(m, 'sluice_replication_lag_seconds', labels)).toBe(1.5);
  });

  it('scrapes every table-defined counter per connection and stream, summed over runs', async () => {
    const m = new SyncMetrics('/x/files.yaml');
    // An embedder priced at $0.02 per million tokens (only its price matters here).
    const priced = { provider: 'openai', pricePerMillionTokens: 0.02 } as unknown as Parameters<
      NonNullable<SyncMetrics['observer']['connectionStarted']>
    >[1];
    for (const [name, read] of [
      ['docs', 4],
      ['wiki', 1],
      ['docs', 6],
    ] as const) {
      const s = summary(name);
      Object.assign(s.streams.items, {
        records_read: read,
        records_unchanged: 2,
        chunks_written: 10 * read,
        embedding_requests: 1,
        embedding_tokens: 1_000_000,
        failed_by_stage: { embed: 1, source: 0 },
      });
      s.states_committed = read;
      m.observer.connectionStarted!(s, name === 'docs' ? priced : undefined);
      m.observer.connectionFinished!(s, undefined);
    }
    const docs = { pipeline: 'files', connection: 'docs' };
    const wiki = { pipeline: 'files', connection: 'wiki' };
    expect(await value(m, 'sluice_records_read_total', { ...docs, stream: 'items' })).toBe(10);
    expect(await value(m, 'sluice_records_read_total', { ...wiki, stream: 'items' })).toBe(1);
    expect(await value(m, 'sluice_records_unchanged_total', { ...docs, stream: 'items' })).toBe(4);
    expect(await value(m, 'sluice_chunks_written_total', { ...docs, stream: 'items' })).toBe(100);
    expect(await value(m, 'sluice_embedding_requests_total', { ...docs, stream: 'items', outcome: 'success' })).toBe(2);
    expect(await value(m, 'sluice_dead_letters_total', { ...docs, stream: 'items', stage: 'embed' })).toBe(2);
    expect(await value(m, 'sluice_dead_letters_total', { ...docs, stream: 'items', stage: 'source' })).toBeUndefined();
    expect(await value(m, 'sluice_state_commits_total', docs)).toBe(10);
    expect(await value(m, 'sluice_state_commits_total', wiki)).toBe(1);
    // Two runs of 1M tokens at $0.02; the unpriced connection has no cost.
    expect(await value(m, 'sluice_embedding_estimated_cost_usd_total', { ...docs, stream: 'items' })).toBeCloseTo(0.04, 6);
    expect(await value(m, 'sluice_embedding_estimated_cost_usd_total', { ...wiki, stream: 'items' })).toBeUndefined();
  });
});
