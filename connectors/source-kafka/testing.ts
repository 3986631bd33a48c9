// Test helpers for the Kafka source: a producer for the mock cluster, hand-built catalogs, and a
// driver that plays the engine (persists each STATE into a deep-merged store, then calls
// onStateCommitted) so connector tests need no engine.
import { Kafka, logLevel, Partitioners, type Producer } from 'kafkajs';
import { deepMerge } from '../../src/state/merge.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { ConnectorContext, SourceState } from '../../src/protocol/connector.ts';
import { CDC_DELETED_AT, type AirbyteMessage, type ConfiguredCatalog } from '../../src/protocol/messages.ts';
import { KafkaConfigSchema, keyPaths, type KafkaSourceConfig } from './config.ts';
import source from './index.ts';

export function testKafka(brokers: string): Kafka {
  return new Kafka({ clientId: 'sluice-test', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
}

export async function testProducer(brokers: string): Promise<Producer> {
  const p = testKafka(brokers).producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: true });
  await p.connect();
  return p;
}

export type TestMessage = { key?: string | null; value: unknown; partition?: number };

/** Sends messages in order (values that are not strings are JSON-encoded; null = tombstone). */
export async function produce(producer: Producer, topic: string, messages: TestMessage[], chunk = 2000): Promise<void> {
  for (let i = 0; i < messages.length; i += chunk) {
    await producer.send({
      topic,
      acks: -1,
      messages: messages.slice(i, i + chunk).map((m) => ({
        key: m.key ?? null,
        value: m.value === null ? null : typeof m.value === 'string' ? m.value : JSON.stringify(m.value),
        ...(m.partition !== undefined ? { partition: m.partition } : {}),
      })),
    });
  }
}

export function kafkaConfig(
  brokers: string,
  topics: string[] | { pattern: string },
  extra: Record<string, unknown> = {},
): KafkaSourceConfig {
  return KafkaConfigSchema.parse({ brokers, topics, session_timeout_ms: 3000, ...extra });
}

export function catalogFor(
  config: KafkaSourceConfig,
  topics: string[],
  syncMode: 'incremental' | 'full_refresh' = 'incremental',
): ConfiguredCatalog {
  const pk = keyPaths(config);
  return {
    streams: topics.map((name) => ({
      stream: {
        name,
        json_schema: { type: 'object' },
        supported_sync_modes: ['incremental', 'full_refresh'],
        source_defined_cursor: true,
        source_defined_primary_key: pk,
      },
      sync_mode: syncMode,
      destination_sync_mode: 'append_dedup',
      primary_key: pk,
    })),
  };
}

export interface DriveResult {
  messages: AirbyteMessage[];
  records: Record<string, unknown>[];
  upserts: Record<string, unknown>[];
  deletions: Record<string, unknown>[];
  states: Array<{ stream: string; offsets: Record<string, string> }>;
  warnings: string[];
  completed: string[];
  error?: unknown;
}

/** A shared, deep-merged state store, like the engine's file store with stateMerge 'deep'. */
export class MemoryStore {
  state: SourceState = { streams: {} };
  apply(stream: string, streamState: Record<string, unknown>): SourceState {
    this.state = deepMerge(this.state, { streams: { [stream]: streamState } }) as SourceState;
    return this.state;
  }
}

/**
 * Runs read() to its end like the engine does: each STATE is "committed" (merged into the store)
 * and acknowledged through onStateCommitted before the next message is pulled.
 */
export async function drive(
  config: KafkaSourceConfig,
  catalog: ConfiguredCatalog,
  state: SourceState | undefined,
  ctx: ConnectorContext,
  store?: MemoryStore,
  onMessage?: (m: AirbyteMessage, r: DriveResult) => void,
): Promise<DriveResult> {
  const r: DriveResult = { messages: [], records: [], upserts: [], deletions: [], states: [], warnings: [], completed: [] };
  try {
    for await (const m of source.read(config, catalog, state, ctx)) {
      r.messages.push(m);
      if (m.type === 'RECORD') {
        r.records.push(m.record.data);
        (m.record.data[CDC_DELETED_AT] != null ? r.deletions : r.upserts).push(m.record.data);
      } else if (m.type === 'STATE') {
        const stream = m.state.stream!.stream_descriptor.name;
        const streamState = m.state.stream!.stream_state as { offsets: Record<string, string> };
        r.states.push({ stream, offsets: streamState.offsets });
        const connection = store ? store.apply(stream, streamState) : { streams: { [stream]: streamState } };
        await source.onStateCommitted!(config, m.state, connection, ctx);
      } else if (m.type === 'LOG' && m.log.level === 'WARN') {
        r.warnings.push(m.log.message);
      } else if (m.type === 'TRACE' && m.trace.record_error) {
        // As the engine does without errors.tolerance: the bad record fails the run.
        const e = m.trace.record_error;
        throw new SluiceError(e.message, { kind: 'source', where: e.position, hint: e.hint });
      } else if (m.type === 'TRACE' && m.trace.stream_status?.status === 'COMPLETE') {
        r.completed.push(m.trace.stream_status.stream_descriptor.name);
      }
      onMessage?.(m, r);
    }
  } catch (err) {
    r.error = err;
  }
  return r;
}

export const uniqueName = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
