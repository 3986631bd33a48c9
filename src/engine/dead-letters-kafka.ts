// Dead letters on a Kafka topic (errors.dead_letter.type: kafka). A topic is an append-only log,
// so the store is a log of changes, keyed by connection (one partition per connection, in order):
//   {"op":"add","letter":{…}}      a new letter (sent with acks=all before the sync goes on)
//   {"op":"update","letter":{…}}   a retry failed again: the newer version replaces it
//   {"op":"remove","ids":[…]}      retried successfully, or purged by id
// `list` reads the topic from the committed offsets of the consumer group
// <group_prefix>.<connection> (nothing ever joins it; it only holds offsets) to the end and folds
// these changes. When a connection has no open letter left, the group's offsets are committed past
// everything that list read ("purge = commit past"), so later lists start there. Other consumers
// of the topic (alerting, archiving) see every letter as it was added.
import type { Admin, Kafka, SASLOptions } from 'kafkajs';
import { randomUUID } from 'node:crypto';
import type { ErrorsConfig } from '../config/errors.ts';
import { redact, registerSecret } from '../config/secrets.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import type { DeadLetter, DeadLetterStore } from './dead-letters.ts';

type KafkaDeadLetterConfig = Extract<ErrorsConfig['dead_letter'], { type: 'kafka' }>;
type Change = { op: 'add' | 'update'; letter: DeadLetter } | { op: 'remove'; ids: string[] };

/** How long a list may wait for the topic to deliver what its end offsets promise. */
const READ_TIMEOUT_MS = 60_000;

export class KafkaDeadLetterStore implements DeadLetterStore {
  private kafkaClient?: Promise<Kafka>;
  private admin?: Admin;
  private producer?: ReturnType<Kafka['producer']>;
  /** Per connection: the end offsets the last list read up to (what a commit may move past). */
  private readonly readUpTo = new Map<string, Array<{ partition: number; offset: string }>>();

  constructor(private readonly cfg: KafkaDeadLetterConfig) {
    if (cfg.sasl) registerSecret(cfg.sasl.password);
  }

  /** kafkajs is loaded when the store is first used: every sync opens its engine, few use this store. */
  private kafka(): Promise<Kafka> {
    const cfg = this.cfg;
    this.kafkaClient ??= import('kafkajs').then(({ Kafka, logLevel }) => {
      const brokers = (Array.isArray(cfg.brokers) ? cfg.brokers : cfg.brokers.split(',')).map((b) => b.trim()).filter(Boolean);
      return new Kafka({
        clientId: cfg.client_id,
        brokers,
        logLevel: logLevel.NOTHING,
        retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 5000 },
        ...(cfg.ssl ? { ssl: true } : {}),
        ...(cfg.sasl ? { sasl: { ...cfg.sasl } as SASLOptions } : {}),
      });
    });
    return this.kafkaClient;
  }

  private fail(what: string, err: unknown): SluiceError {
    return new SluiceError(`dead-letter topic ${this.cfg.topic}: ${what} failed: ${redact(describeUnknown(err))}`, {
      kind: 'config',
      where: 'errors.dead_letter',
      hint: 'check errors.dead_letter.brokers, topic and credentials, and that the user may write the topic and commit offsets',
    });
  }

  private group(connection: string) {
    return `${this.cfg.group_prefix}.${connection}`;
  }

  private async adminClient(): Promise<Admin> {
    if (this.admin) return this.admin;
    const a = (await this.kafka()).admin();
    await a.connect().catch((err) => {
      throw this.fail('connecting', err);
    });
    return (this.admin = a);
  }

  /** What `list` and a sync need: the brokers answer, and the topic's partitions can be read. */
  async check(): Promise<string> {
    const admin = await this.adminClient();
    const partitions = await admin.fetchTopicOffsets(this.cfg.topic).catch((err: unknown) => {
      throw this.fail('reading the topic', err);
    });
    return `topic ${this.cfg.topic} has ${partitions.length} partition${partitions.length === 1 ? '' : 's'}`;
  }

  private async send(connection: string, changes: Change[]): Promise<void> {
    if (!changes.length) return;
    try {
      if (!this.producer) {
        const p = (await this.kafka()).producer({ allowAutoTopicCreation: true });
        await p.connect();
        this.producer = p;
      }
      // acks=all: a letter is on every in-sync replica before the sync goes on (or commits a state).
      await this.producer.send({
        topic: this.cfg.topic,
        acks: -1,
        messages: changes.map((c) => ({ key: connection, value: JSON.stringify(c), headers: { 'sluice-op': c.op } })),
      });
    } catch (err) {
      throw this.fail('writing', err);
    }
  }

  async add(letter: DeadLetter): Promise<void> {
    await this.send(letter.connection, [{ op: 'add', letter }]);
  }

  async update(connection: string, letters: DeadLetter[]): Promise<void> {
    await this.send(
      connection,
      letters.map((letter) => ({ op: 'update', letter })),
    );
  }

  async remove(connection: string, ids: string[]): Promise<void> {
    await this.send(connection, [{ op: 'remove', ids }]);
    // Nothing open any more: move the group past what was read, so the next list starts there.
    if ((await this.list(connection)).length) return;
    const upTo = this.readUpTo.get(connection);
    if (!upTo?.length) return;
    await this.commit(connection, upTo);
  }

  /**
   * Commits the group's offsets by joining it for a moment (paused, reading nothing): the
   * OffsetCommit API is the one every broker (and the mock cluster) supports for this.
   */
  private async commit(connection: string, upTo: Array<{ partition: number; offset: string }>): Promise<void> {
    const consumer = (await this.kafka()).consumer({
      groupId: this.group(connection),
      sessionTimeout: 6000,
      rebalanceTimeout: 6000,
      heartbeatInterval: 500,
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.cfg.topic });
      const joined = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`could not join group ${this.group(connection)} within 30 s`)), 30_000);
        consumer.on(consumer.events.GROUP_JOIN, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch: async () => undefined });
      consumer.pause([{ topic: this.cfg.topic }]);
      await joined;
      await consumer.commitOffsets(upTo.map((p) => ({ topic: this.cfg.topic, ...p })));
    } catch (err) {
      throw this.fail('committing offsets', err);
    } finally {
      await consumer.disconnect().catch(() => undefined);
    }
  }

  async list(connection: string): Promise<DeadLetter[]> {
    const admin = await this.adminClient();
    let ends: Array<{ partition: number; high: string; low: string }>;
    try {
      ends = (await admin.fetchTopicOffsets(this.cfg.topic)).map((p) => ({ partition: p.partition, high: p.high, low: p.low }));
    } catch (err) {
      if ((err as { type?: string }).type === 'UNKNOWN_TOPIC_OR_PARTITION') return []; // nothing was ever written
      throw this.fail('reading the end offsets', err);
    }
    let committed: Map<number, bigint>;
    try {
      const [t] = await admin.fetchOffsets({ groupId: this.group(connection), topics: [this.cfg.topic] });
      committed = new Map((t?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
    } catch (err) {
      throw this.fail('reading the committed offsets', err);
    }
    const ranges = ends
      .map((e) => {
        const c = committed.get(e.partition) ?? -1n;
        const start = c >= 0n ? c : BigInt(e.low);
        return { partition: e.partition, start: start > BigInt(e.low) ? start : BigInt(e.low), end: BigInt(e.high) };
      })
      .filter((r) => r.start < r.end);
    this.readUpTo.set(
      connection,
      ends.map((e) => ({ partition: e.partition, offset: e.high })),
    );
    const changes = ranges.length ? await this.read(ranges, connection) : [];
    const open = new Map<string, DeadLetter>();
    for (const c of changes) {
      if (c.op === 'remove') for (const id of c.ids) open.delete(id);
      else if (c.op === 'add' || open.has(c.letter.id)) open.set(c.letter.id, c.letter);
    }
    return [...open.values()];
  }

  /** The changes of `connection` in the offset ranges, in log order (one partition holds a connection's). */
  private async read(ranges: Array<{ partition: number; start: bigint; end: bigint }>, connection: string): Promise<Change[]> {
    // A throwaway group: reading must not move the offsets of the store's own group.
    const groupId = `${this.group(connection)}.reader-${randomUUID().slice(0, 8)}`;
    const consumer = (await this.kafka()).consumer({ groupId, sessionTimeout: 6000, rebalanceTimeout: 6000, heartbeatInterval: 500 });
    const byPartition = new Map(ranges.map((r) => [r.partition, { ...r, changes: [] as Change[], done: false }]));
    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.cfg.topic, fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`the topic did not deliver up to its end offsets within ${READ_TIMEOUT_MS / 1000} s`)),
          READ_TIMEOUT_MS,
        );
        const check = () => {
          if ([...byPartition.values()].every((p) => p.done)) {
            clearTimeout(timer);
            resolve();
          }
        };
        consumer
          .run({
            autoCommit: false,
            eachMessage: async ({ partition, message }) => {
              const p = byPartition.get(partition);
              if (!p || p.done) return;
              const offset = BigInt(message.offset);
              if (offset < p.start) return;
              if (offset < p.end && message.key?.toString('utf8') === connection && message.value) {
                try {
                  p.changes.push(JSON.parse(message.value.toString('utf8')) as Change);
                } catch {
                  // Not written by sluice: other producers may share the topic.
                }
              }
              if (offset + 1n >= p.end) {
                p.done = true;
                check();
              }
            },
          })
          .then(() => {
            for (const p of byPartition.values()) consumer.seek({ topic: this.cfg.topic, partition: p.partition, offset: String(p.start) });
          })
          .catch(reject);
        check();
      });
    } catch (err) {
      throw this.fail('reading', err);
    } finally {
      await consumer.disconnect().catch(() => undefined);
      await this.admin?.deleteGroups([groupId]).catch(() => undefined);
    }
    return [...byPartition.values()].flatMap((p) => p.changes);
  }

  async close(): Promise<void> {
    await this.producer?.disconnect().catch(() => undefined);
    await this.admin?.disconnect().catch(() => undefined);
  }
}
