// Kafka source: each topic is a stream; JSON values or Debezium change events become upserts and
// deletions keyed by the message key (or key_field). Offsets are sluice state, per partition,
// checkpointed only after the destination commits; workers sharing a group_id split partitions.
// See docs/kafka.md.
import { Kafka, logLevel } from 'kafkajs';
import type { CheckResult, ConnectorContext, Source, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError } from '../../src/protocol/errors.ts';
import type { AirbyteCatalog, AirbyteStream, ConfiguredCatalog, StateMessage } from '../../src/protocol/messages.ts';
import { KAFKA_KEY_FIELD, KafkaConfigSchema, kafkaClientOptions, keyPaths, topicMatcher, type KafkaSourceConfig } from './config.ts';
import { KafkaReader, kafkaError } from './reader.ts';

/** Readers running in this process, so the engine's onStateCommitted reaches the right one. */
const readersByCtx = new WeakMap<ConnectorContext, KafkaReader>();
const readersByConnection = new Map<string, Set<KafkaReader>>();

async function withAdmin<T>(
  config: KafkaSourceConfig,
  ctx: ConnectorContext,
  what: string,
  fn: (admin: ReturnType<Kafka['admin']>) => Promise<T>,
): Promise<T> {
  const kafka = new Kafka({
    ...kafkaClientOptions(config, ctx.baseDir),
    retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 2000 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    return await fn(admin);
  } catch (err) {
    throw kafkaError(err, config, what);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

/** Topics the config selects, in name order; named topics must exist. */
async function selectedTopics(config: KafkaSourceConfig, ctx: ConnectorContext): Promise<string[]> {
  const matches = topicMatcher(config);
  const all = await withAdmin(config, ctx, 'listing topics', (admin) => admin.listTopics());
  if (Array.isArray(config.topics)) {
    const existing = new Set(all);
    const missing = config.topics.filter((t) => !existing.has(t));
    if (missing.length) {
      const visible = all.filter((t) => !t.startsWith('__')).sort();
      throw new SluiceError(`Kafka topic${missing.length > 1 ? 's' : ''} ${missing.map((t) => `"${t}"`).join(', ')} not found`, {
        kind: 'config',
        where: 'source.config.topics',
        hint: visible.length
          ? `topics on the brokers: ${visible.slice(0, 20).join(', ')}${visible.length > 20 ? ', …' : ''}`
          : 'the brokers have no topics yet',
      });
    }
    return [...config.topics].sort();
  }
  // Internal topics (__consumer_offsets, __transaction_state…) only when a pattern names them.
  const pattern = config.topics.pattern;
  return all.filter((t) => matches(t) && (!t.startsWith('__') || pattern.startsWith('__'))).sort();
}

function streamOf(topic: string, config: KafkaSourceConfig): AirbyteStream {
  const pk = keyPaths(config);
  const usesMessageKey = pk.length === 1 && pk[0][0] === KAFKA_KEY_FIELD;
  return {
    name: topic,
    json_schema: {
      type: 'object',
      additionalProperties: true,
      ...(usesMessageKey ? { properties: { [KAFKA_KEY_FIELD]: { type: 'string', description: 'The Kafka message key' } } } : {}),
    },
    supported_sync_modes: ['incremental', 'full_refresh'],
    source_defined_cursor: true,
    source_defined_primary_key: pk,
    is_resumable: true,
  };
}

const source: Source<KafkaSourceConfig> = {
  kind: 'source',
  spec: {
    name: 'kafka',
    title: 'Apache Kafka',
    description:
      'Topics as streams: JSON or Debezium change events → upserts and deletions; per-partition offsets checkpointed after the destination commits.',
    documentationUrl: 'docs/kafka.md',
    config: KafkaConfigSchema,
  },
  capabilities: { syncModes: ['incremental', 'full_refresh'], sourceDefinedCursor: true, stateMerge: 'deep' },

  async check(config, ctx): Promise<CheckResult> {
    try {
      const topics = await selectedTopics(config, ctx);
      if (!topics.length) {
        return { ok: true, message: 'connected to Kafka', warnings: [`no topic matches ${JSON.stringify(config.topics)} yet`] };
      }
      return {
        ok: true,
        message: `connected to Kafka; ${topics.length} topic${topics.length > 1 ? 's' : ''}: ${topics.slice(0, 10).join(', ')}${topics.length > 10 ? ', …' : ''}`,
      };
    } catch (err) {
      const e = err instanceof SluiceError ? err : kafkaError(err, config, 'checking');
      return { ok: false, message: e.hint ? `${e.message} (${e.hint})` : e.message };
    }
  },

  async discover(config, ctx): Promise<AirbyteCatalog> {
    const topics = await selectedTopics(config, ctx);
    return { streams: topics.map((t) => streamOf(t, config)) };
  },

  async *read(config: KafkaSourceConfig, catalog: ConfiguredCatalog, state: SourceState | undefined, ctx: ConnectorContext) {
    const reader = new KafkaReader(config, catalog, state, ctx);
    readersByCtx.set(ctx, reader);
    let set = readersByConnection.get(ctx.connection);
    if (!set) readersByConnection.set(ctx.connection, (set = new Set()));
    set.add(reader);
    try {
      yield* reader.read();
    } finally {
      if (readersByCtx.get(ctx) === reader) readersByCtx.delete(ctx);
      set.delete(reader);
      if (!set.size) readersByConnection.delete(ctx.connection);
    }
  },

  onStateCommitted(_config: KafkaSourceConfig, state: StateMessage, _connection: SourceState, ctx: ConnectorContext) {
    const reader = readersByCtx.get(ctx) ?? single(readersByConnection.get(ctx.connection));
    return reader?.onStateCommitted(state);
  },
};

function single<T>(set: Set<T> | undefined): T | undefined {
  return set && set.size === 1 ? set.values().next().value : undefined;
}

export default source;
