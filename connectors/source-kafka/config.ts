// Kafka source configuration and its translation into kafkajs client options.
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { KafkaConfig, SASLOptions } from 'kafkajs';
import { z } from 'zod';
import { SluiceError } from '../../src/protocol/errors.ts';

const secret = <T extends z.ZodType>(s: T) => s.meta({ secret: true });

const PemOrPath = z.string().min(1).describe('PEM text, or a path to a PEM file (relative to the pipeline file)');

export const KafkaConfigSchema = z.strictObject({
  brokers: z
    .union([z.array(z.string().min(1)).min(1), z.string().min(1)])
    .describe('Bootstrap brokers, host:port (a list, or one comma-separated string)'),
  topics: z
    .union([
      z.array(z.string().min(1)).min(1),
      z.strictObject({ pattern: z.string().min(1).describe('Regular expression matched against whole topic names') }),
    ])
    .describe('Topics to read (each topic is one stream): a list of names, or { pattern: "<regex>" }'),
  client_id: z.string().min(1).default('sluice').describe('Kafka client id (shows up in broker logs and quotas)'),
  group_id: z
    .string()
    .min(1)
    .optional()
    .describe('Consumer group. Workers sharing it split the partitions. Default: sluice-<connection name>'),
  format: z
    .enum(['auto', 'json', 'debezium'])
    .default('auto')
    .describe('Message values: json (record = value), debezium (change-event envelope), auto (Debezium envelopes detected per message)'),
  key_field: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .optional()
    .describe(
      'Primary-key field(s) (dotted paths) in the value; missing ones are taken from the message key. Default: the message key, as field _kafka_key',
    ),
  max_errors: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe('Malformed messages tolerated per sync (logged and skipped); one more fails the sync'),
  start_from: z.enum(['earliest', 'latest']).default('earliest').describe('Where to start in partitions with no saved offset'),
  checkpoint_every: z.number().int().min(1).default(1000).describe('Emit a checkpoint (STATE) at least every N messages'),
  session_timeout_ms: z.number().int().min(1000).default(30_000).describe('Consumer-group session timeout'),
  connection_timeout_ms: z.number().int().min(100).default(10_000).describe('TCP connect timeout per broker'),
  request_timeout_ms: z.number().int().min(100).default(30_000),
  sasl: z
    .strictObject({
      mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
      username: z.string().min(1),
      password: secret(z.string().min(1)),
    })
    .optional()
    .describe('SASL authentication (use with ssl unless the network is trusted)'),
  ssl: z
    .union([
      z.boolean(),
      z.strictObject({
        ca: PemOrPath.optional().describe('CA certificate(s) to trust: PEM text or file path'),
        cert: PemOrPath.optional().describe('Client certificate (mutual TLS): PEM text or file path'),
        key: secret(PemOrPath).optional().describe('Client private key: PEM text or file path'),
        passphrase: secret(z.string()).optional(),
        servername: z.string().optional().describe('TLS server name (SNI) if it differs from the broker host'),
        reject_unauthorized: z.boolean().default(true).describe('Verify the broker certificate (keep true outside tests)'),
      }),
    ])
    .optional()
    .describe('TLS: true for system CAs, or an object with certificates'),
});

export type KafkaSourceConfig = z.infer<typeof KafkaConfigSchema>;

export function brokerList(config: KafkaSourceConfig): string[] {
  const list = Array.isArray(config.brokers) ? config.brokers : config.brokers.split(',');
  return list.map((b) => b.trim()).filter(Boolean);
}

export function groupIdOf(config: KafkaSourceConfig, connection: string): string {
  return config.group_id ?? `sluice-${connection}`;
}

/** Primary-key paths configured by key_field, or the synthetic `_kafka_key` field. */
export const KAFKA_KEY_FIELD = '_kafka_key';
export function keyPaths(config: KafkaSourceConfig): string[][] {
  if (!config.key_field) return [[KAFKA_KEY_FIELD]];
  const fields = Array.isArray(config.key_field) ? config.key_field : [config.key_field];
  return fields.map((f) => f.split('.'));
}

export function topicMatcher(config: KafkaSourceConfig): (topic: string) => boolean {
  if (Array.isArray(config.topics)) {
    const names = new Set(config.topics);
    return (t) => names.has(t);
  }
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${config.topics.pattern})$`);
  } catch (err) {
    throw new SluiceError(`topics.pattern is not a valid regular expression: ${(err as Error).message}`, {
      kind: 'config',
      where: 'source.config.topics.pattern',
    });
  }
  return (t) => re.test(t);
}

function pem(value: string, baseDir: string, field: string): string {
  if (value.includes('-----BEGIN')) return value;
  const path = isAbsolute(value) ? value : resolve(baseDir, value);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new SluiceError(`cannot read ssl.${field} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      kind: 'config',
      where: `source.config.ssl.${field}`,
      hint: 'give a PEM file path relative to the pipeline file, or the PEM text itself',
    });
  }
}

/** kafkajs client options. `logCreator` is added by the caller. */
export function kafkaClientOptions(config: KafkaSourceConfig, baseDir: string): KafkaConfig {
  const opts: KafkaConfig = {
    clientId: config.client_id,
    brokers: brokerList(config),
    connectionTimeout: config.connection_timeout_ms,
    requestTimeout: config.request_timeout_ms,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 5000 },
  };
  if (config.ssl === true) opts.ssl = true;
  else if (config.ssl) {
    const s = config.ssl;
    opts.ssl = {
      rejectUnauthorized: s.reject_unauthorized,
      ...(s.ca ? { ca: [pem(s.ca, baseDir, 'ca')] } : {}),
      ...(s.cert ? { cert: pem(s.cert, baseDir, 'cert') } : {}),
      ...(s.key ? { key: pem(s.key, baseDir, 'key') } : {}),
      ...(s.passphrase ? { passphrase: s.passphrase } : {}),
      ...(s.servername ? { servername: s.servername } : {}),
    };
  }
  if (config.sasl) {
    const { mechanism, username, password } = config.sasl;
    opts.sasl = { mechanism, username, password } as SASLOptions;
  }
  return opts;
}
