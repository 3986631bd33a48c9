// Reads Kafka topics through a consumer group, with sluice state (not the group) as the truth
// for where to resume. See docs/kafka.md for the reasoning; in short:
//
// - kafkajs only assigns partitions. autoCommit is off; at every group join this reader pauses the
//   assigned partitions, works out where each one resumes, seeks there and resumes. The resume
//   point of a partition is the highest of: the offset in the sluice state loaded at start, this
//   worker's own position (if it owned the partition before), and the offset committed to the
//   consumer group. Offsets reach the group only from onStateCommitted, i.e. after the engine has
//   persisted a state containing them, so every one of these is durably covered — resuming from
//   the highest never skips an unwritten message. The group is how a partition handed over by a
//   rebalance continues from where its previous owner's destination commit left it.
// - Push (kafkajs eachBatch) is bridged to pull (the async generator): eachBatch hands its batch
//   over and waits, heart-beating, until the generator has yielded every message — so memory
//   holds one fetch batch and a slow destination slows fetching instead of filling a buffer.
// - STATE is per topic, { offsets: { "<partition>": "<next offset>" } }, for the partitions this
//   worker owns only; the engine deep-merges stream states (capabilities.stateMerge = 'deep'), so
//   workers sharing a group never overwrite each other's partitions.
import { Kafka, PartitionAssigners, logLevel, type Admin, type Batch, type Consumer, type LogEntry, type PartitionAssigner } from 'kafkajs';
import { setTimeout as sleep } from 'node:timers/promises';
import { isUtf8 } from 'node:buffer';
import type { ConnectorContext, Logger, SourceState } from '../../src/protocol/connector.ts';
import { SluiceError, describeUnknown } from '../../src/protocol/errors.ts';
import { message, type AirbyteMessage, type ConfiguredCatalog, type StateMessage } from '../../src/protocol/messages.ts';
import { brokerList, groupIdOf, kafkaClientOptions, keyPaths, type KafkaSourceConfig } from './config.ts';
import { decodeMessage } from './decode.ts';

type PartitionKey = string;
const pkey = (topic: string, partition: number): PartitionKey => `${partition}@${topic}`;
const splitKey = (k: PartitionKey) => {
  const at = k.indexOf('@');
  return { partition: Number(k.slice(0, at)), topic: k.slice(at + 1) };
};
const maxOf = (xs: bigint[]) => xs.reduce((a, b) => (b > a ? b : a));

export interface TopicState {
  offsets?: Record<string, string>;
}

interface StreamPlan {
  topic: string;
  fullRefresh: boolean;
  primaryKey: string[][];
}

interface BatchItem {
  batch: Batch;
  generation: number;
  resolveOffset: (offset: string) => void;
  /** Set when kafkajs gave up on the batch (rebalance): stop yielding its messages. */
  abandoned: boolean;
  finished: () => void;
  finishedPromise: Promise<void>;
}

/** kafkajs log lines go to the connector logger at debug: rebalances log at ERROR there but are routine. */
function kafkajsLogCreator(logger: Logger) {
  return () =>
    ({ namespace, log }: LogEntry) => {
      const { message: text, ...fields } = log;
      logger.debug({ kafkajs: namespace, ...fields }, String(text));
    };
}

/** A kafkajs failure as a SluiceError that says what to check. Never includes secrets. */
export function kafkaError(err: unknown, config: KafkaSourceConfig, what: string): SluiceError {
  if (err instanceof SluiceError) return err;
  const e = err as { name?: string; type?: string; message?: string; cause?: unknown; originalError?: unknown };
  const text = describeUnknown(err);
  const brokers = brokerList(config).join(', ');
  const chain = [e.name, (e.cause as { name?: string } | undefined)?.name, (e.originalError as { name?: string } | undefined)?.name]
    .filter(Boolean)
    .join(' ');
  if (/SASLAuthentication/.test(chain) || e.type === 'SASL_AUTHENTICATION_FAILED') {
    return new SluiceError(`Kafka SASL authentication failed while ${what}: ${text}`, {
      kind: 'config',
      where: 'source.config.sasl',
      hint: 'check sasl.mechanism, sasl.username and sasl.password',
      cause: err,
    });
  }
  if (/ServerDoesNotSupportApiKey/.test(chain) && config.sasl) {
    return new SluiceError(`the Kafka listener at ${brokers} does not accept SASL (${text})`, {
      kind: 'config',
      where: 'source.config.sasl',
      hint: 'point brokers at the SASL listener, or remove sasl if this listener needs none',
      cause: err,
    });
  }
  if (e.type === 'TOPIC_AUTHORIZATION_FAILED' || e.type === 'GROUP_AUTHORIZATION_FAILED' || e.type === 'CLUSTER_AUTHORIZATION_FAILED') {
    return new SluiceError(`Kafka refused access while ${what}: ${text}`, {
      kind: 'config',
      hint: `grant this principal Read on the topics and on group ${config.group_id ?? 'sluice-<connection>'} (and Describe on the cluster)`,
      cause: err,
    });
  }
  if (/Connection|NumberOfRetriesExceeded|BrokerNotFound|NoBrokerAvailable|RequestTimeout/.test(chain)) {
    return new SluiceError(`cannot reach Kafka at ${brokers} while ${what}: ${text}`, {
      kind: 'connection',
      transient: true,
      hint: config.ssl
        ? 'check brokers, and that they are TLS listeners (ssl is on)'
        : 'check that brokers are reachable host:port listeners (set ssl: true for TLS listeners)',
      cause: err,
    });
  }
  return new SluiceError(`Kafka error while ${what}: ${text}`, { kind: 'source', cause: err });
}

const GROUP_PROTOCOL_ERRORS = new Set([
  'INVALID_REQUEST',
  'ILLEGAL_GENERATION',
  'UNKNOWN_MEMBER_ID',
  'REBALANCE_IN_PROGRESS',
  'NOT_COORDINATOR',
  'COORDINATOR_NOT_AVAILABLE',
  'COORDINATOR_LOAD_IN_PROGRESS',
]);
/**
 * Round-robin, but the group leader waits a moment before sending the assignment. A real broker
 * holds early followers' SyncGroup until the leader's arrives; librdkafka's mock cluster (our test
 * broker) settles the group on the leader's and answers a follower that comes later with
 * INVALID_REQUEST, which forces a second rebalance. Half a second per rebalance costs nothing.
 */
const LEADER_SYNC_DELAY_MS = 500;
const patientRoundRobin: PartitionAssigner = (config) => {
  const inner = PartitionAssigners.roundRobin(config);
  return {
    ...inner,
    async assign(group) {
      await sleep(LEADER_SYNC_DELAY_MS);
      return inner.assign(group);
    },
  };
};

const REBALANCE_ERRORS = new Set(['REBALANCE_IN_PROGRESS', 'NOT_COORDINATOR_FOR_GROUP', 'NOT_COORDINATOR', 'ILLEGAL_GENERATION']);
const isRebalance = (err: unknown) => REBALANCE_ERRORS.has((err as { type?: string } | undefined)?.type ?? '');

function isGroupProtocolError(err: unknown): boolean {
  for (let e = err as { type?: string; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (e.type && GROUP_PROTOCOL_ERRORS.has(e.type)) return true;
  }
  return false;
}

export class KafkaReader {
  private readonly kafka: Kafka;
  private admin?: Admin;
  private consumer?: Consumer;
  private readonly groupId: string;
  private readonly plans = new Map<string, StreamPlan>();
  private readonly follow: boolean;

  /** Offsets from the state the engine loaded at start (incremental streams only). */
  private readonly saved = new Map<PartitionKey, bigint>();
  /** End offsets seen at start: without --follow the read stops there. */
  private readonly targets = new Map<PartitionKey, bigint>();
  /** Start offsets seen at start (a partition whose target is its start has nothing to read). */
  private readonly lows = new Map<PartitionKey, bigint>();
  private othersCheckedAt = 0;
  /** Next offset to yield, per partition this worker has positioned. */
  private readonly position = new Map<PartitionKey, bigint>();
  /** End of each partition as last seen (fetch responses' high watermark, or the offsets at a join): for the lag. */
  private readonly highWatermarks = new Map<PartitionKey, bigint>();
  /** Partitions of the current assignment, once positioned. */
  private owned = new Set<PartitionKey>();
  private readonly done = new Set<PartitionKey>();
  private generation = 0;
  private positioned = false;

  private readonly queue: BatchItem[] = [];
  private wakeUp?: () => void;
  private failure?: unknown;
  private closing = false;

  private readonly dirty = new Set<string>();
  private sinceState = 0;
  private lastStateAt = Date.now();
  /** Offsets in STATE messages yielded / confirmed by the engine / committed to the group. */
  private readonly emitted = new Map<PartitionKey, bigint>();
  private readonly acked = new Map<PartitionKey, bigint>();
  private readonly groupCommitted = new Map<PartitionKey, bigint>();
  private ackWaiter?: () => void;
  private commitChain: Promise<void> = Promise.resolve();
  private errors = 0;
  private rejoins = 0;
  private flushSoon = false;
  private restarts = 0;
  private positioning: Promise<void> = Promise.resolve();
  readonly heartbeatMs: number;

  constructor(
    private readonly config: KafkaSourceConfig,
    catalog: ConfiguredCatalog,
    state: SourceState | undefined,
    private readonly ctx: ConnectorContext,
  ) {
    this.kafka = new Kafka({
      ...kafkaClientOptions(config, ctx.baseDir),
      logLevel: logLevel.INFO,
      logCreator: kafkajsLogCreator(ctx.logger),
    });
    this.groupId = groupIdOf(config, ctx.connection);
    this.follow = ctx.follow;
    this.heartbeatMs = Math.max(100, Math.min(3000, Math.floor(config.session_timeout_ms / 10)));
    for (const cs of catalog.streams) {
      const topic = cs.stream.name;
      const primaryKey = cs.primary_key?.length ? cs.primary_key : (cs.stream.source_defined_primary_key ?? keyPaths(config));
      this.plans.set(topic, { topic, fullRefresh: cs.sync_mode === 'full_refresh', primaryKey });
      if (cs.sync_mode === 'full_refresh') continue;
      const offsets = (state?.streams?.[topic] as TopicState | undefined)?.offsets ?? {};
      for (const [p, o] of Object.entries(offsets)) {
        if (/^\d+$/.test(p) && /^\d+$/.test(String(o))) this.saved.set(pkey(topic, Number(p)), BigInt(o));
      }
    }
  }

  async *read(): AsyncGenerator<AirbyteMessage> {
    if (!this.plans.size) return;
    try {
      await this.start();
      let completed = false;
      for (;;) {
        if (this.failure) throw this.failure;
        if (this.ctx.signal.aborted) break;
        if (!this.follow && this.positioned && [...this.owned].every((k) => this.done.has(k)) && (await this.othersDone())) {
          completed = true;
          break;
        }
        if (this.flushSoon) {
          this.flushSoon = false;
          if (this.dirty.size) yield* this.states();
        }
        const item = this.queue.shift();
        if (!item) {
          if (this.dirty.size && Date.now() - this.lastStateAt >= 1000) yield* this.states();
          await this.waitForWork(250);
          continue;
        }
        try {
          yield* this.consume(item);
        } finally {
          item.finished();
        }
        if (this.sinceState >= this.config.checkpoint_every || Date.now() - this.lastStateAt >= 5000) yield* this.states();
      }
      if (this.failure) throw this.failure;
      yield* this.states();
      if (completed) for (const topic of this.plans.keys()) yield message.streamStatus(topic, 'COMPLETE');
      await this.settle();
    } finally {
      await this.close();
    }
  }

  // ---- startup ---------------------------------------------------------------------------------

  private async start(): Promise<void> {
    const topics = [...this.plans.keys()];
    this.admin = this.kafka.admin({ retry: { retries: 3 } });
    await this.admin.connect().catch((err) => {
      throw kafkaError(err, this.config, 'connecting');
    });
    // "Up to the end offsets seen at start": fixed now, so a busy topic still lets a sync finish.
    await Promise.all(
      topics.map(async (topic) => {
        const parts = await this.admin!.fetchTopicOffsets(topic).catch((err) => {
          throw kafkaError(err, this.config, `reading the end offsets of topic ${topic}`);
        });
        for (const p of parts) {
          this.targets.set(pkey(topic, p.partition), BigInt(p.high));
          this.lows.set(pkey(topic, p.partition), BigInt(p.low));
        }
      }),
    );
    this.consumer = this.kafka.consumer({
      groupId: this.groupId,
      partitionAssigners: [patientRoundRobin],
      sessionTimeout: this.config.session_timeout_ms,
      // How long a rebalance waits for a silent member: bounds the wait after a worker crashed.
      rebalanceTimeout: Math.max(this.config.session_timeout_ms, 10_000),
      heartbeatInterval: this.heartbeatMs,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: this.follow ? 1000 : 250,
      // kafkajs already retried each request; a few restarts of the whole consumer on top (always
      // with --follow) ride out a broker restart without failing the sync.
      retry: { retries: 5, restartOnFailure: async () => !this.closing && (this.follow || ++this.restarts <= 3) },
    });
    const { GROUP_JOIN, CRASH, END_BATCH_PROCESS, REBALANCING } = this.consumer.events;
    // A rebalance may hand our partitions to another worker, which resumes from the group's
    // offsets: checkpoint now, so the destination commit and the group commit can land first.
    this.consumer.on(REBALANCING, () => {
      this.flushSoon = true;
      this.wake();
    });
    this.consumer.on(GROUP_JOIN, (e) => this.onJoin(e.payload.memberAssignment));
    this.consumer.on(END_BATCH_PROCESS, (e) =>
      this.onFilteredBatch(e.payload.topic, e.payload.partition, String(e.payload.lastOffset), e.payload.batchSize),
    );
    this.consumer.on(CRASH, (e) => {
      if (this.closing) return;
      const err = e.payload.error;
      if (e.payload.restart) {
        this.ctx.logger.warn({ err: describeUnknown(err) }, 'Kafka consumer failed; kafkajs restarts it');
      } else if (isGroupProtocolError(err) && this.rejoins < 5) {
        // kafkajs gives up on group-protocol answers it does not expect (e.g. INVALID_REQUEST to a
        // SyncGroup that arrives after the group settled); joining afresh is the cure.
        this.rejoins++;
        this.ctx.logger.info({ err: describeUnknown(err), attempt: this.rejoins }, `rejoining consumer group ${this.groupId}`);
        // kafkajs has just torn its connections down; give it a moment before connecting again.
        setTimeout(
          () => {
            this.runConsumer().catch((e2) => this.fail(kafkaError(e2, this.config, `rejoining consumer group ${this.groupId}`)));
          },
          300 + Math.floor(Math.random() * 500),
        );
      } else {
        this.fail(kafkaError(err, this.config, 'consuming'));
      }
    });
    try {
      await this.consumer.connect();
      await this.consumer.subscribe({ topics, fromBeginning: this.config.start_from === 'earliest' });
      await this.runConsumer();
    } catch (err) {
      throw kafkaError(err, this.config, `joining consumer group ${this.groupId}`);
    }
  }

  private async runConsumer(): Promise<void> {
    if (this.closing) return;
    await this.consumer!.connect();
    await this.consumer!.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.onBatch(payload.batch, payload.resolveOffset, payload.heartbeat),
    });
  }

  /**
   * A new assignment: pause everything at once (synchronously, before kafkajs fetches from
   * whatever the group says), then position each partition and resume it.
   */
  private onJoin(assignment: Record<string, number[]>): void {
    if (this.closing) return;
    const generation = ++this.generation;
    this.positioned = false;
    this.owned = new Set();
    const topics = Object.entries(assignment).map(([topic, partitions]) => ({ topic, partitions }));
    if (topics.length) this.quietly(() => this.consumer!.pause(topics));
    this.positioning = this.positionPartitions(generation, topics).catch((err) => {
      if (!this.closing) this.fail(kafkaError(err, this.config, 'positioning assigned partitions'));
    });
  }

  private async positionPartitions(generation: number, assignment: Array<{ topic: string; partitions: number[] }>): Promise<void> {
    if (this.closing) return;
    const topics = assignment.map((a) => a.topic);
    const [group, ends] = await Promise.all([
      topics.length ? this.admin!.fetchOffsets({ groupId: this.groupId, topics }) : Promise.resolve([]),
      Promise.all(topics.map(async (t) => [t, await this.admin!.fetchTopicOffsets(t)] as const)),
    ]);
    if (generation !== this.generation || this.closing) return;
    const committed = new Map<PartitionKey, bigint>();
    for (const t of group)
      for (const p of t.partitions) if (/^\d+$/.test(p.offset)) committed.set(pkey(t.topic, p.partition), BigInt(p.offset));
    const bounds = new Map<PartitionKey, { low: bigint; high: bigint }>();
    for (const [t, parts] of ends) for (const p of parts) bounds.set(pkey(t, p.partition), { low: BigInt(p.low), high: BigInt(p.high) });

    const owned = new Set<PartitionKey>();
    const resume: Array<{ topic: string; partitions: number[] }> = [];
    for (const { topic, partitions } of assignment) {
      const plan = this.plans.get(topic);
      if (!plan) continue;
      const toResume: number[] = [];
      for (const partition of partitions) {
        const key = pkey(topic, partition);
        const { low, high } = bounds.get(key) ?? { low: 0n, high: 0n };
        if (high > (this.highWatermarks.get(key) ?? -1n)) this.highWatermarks.set(key, high);
        // A partition created after the start has nothing "seen at start" to read up to.
        if (!this.targets.has(key)) this.targets.set(key, this.follow ? high : low);
        let next: bigint;
        if (plan.fullRefresh) {
          next = this.position.get(key) ?? low;
        } else {
          const known = [this.position.get(key), this.saved.get(key), committed.get(key)].filter((x): x is bigint => x !== undefined);
          next = known.length ? maxOf(known) : this.config.start_from === 'earliest' ? low : high;
          if (!this.saved.has(key) && !this.position.has(key) && committed.has(key)) {
            this.ctx.logger.info(
              { topic, partition, offset: String(committed.get(key)) },
              `resuming ${topic}[${partition}] from consumer group ${this.groupId}'s committed offset`,
            );
          }
        }
        if (next < low) {
          this.ctx.logger.warn(
            { topic, partition, from: String(next), to: String(low) },
            `${topic}[${partition}]: offsets ${next}..${low - 1n} were deleted by retention before sluice read them; continuing at ${low}`,
          );
          next = low;
        } else if (next > high) {
          this.ctx.logger.warn(
            { topic, partition, saved: String(next), end: String(high) },
            `${topic}[${partition}]: saved offset ${next} is past the end of the partition (${high}); the topic was probably recreated — reading it from ${this.config.start_from}`,
          );
          next = this.config.start_from === 'earliest' ? low : high;
        }
        this.position.set(key, next);
        owned.add(key);
        if (!this.follow && next >= this.targets.get(key)!) {
          this.done.add(key);
        } else {
          this.done.delete(key);
          this.quietly(() => this.consumer!.seek({ topic, partition, offset: String(next) }));
          toResume.push(partition);
        }
      }
      if (toResume.length) resume.push({ topic, partitions: toResume });
    }
    // A state right away for every planned topic: it records the starting points of the partitions
    // we got, and for topics we got none of, an empty state replaces the engine's stale startup
    // copy, which a deep merge would otherwise write back over other workers' progress.
    for (const topic of this.plans.keys()) this.dirty.add(topic);
    this.owned = owned;
    this.positioned = true;
    this.rejoins = 0;
    if (resume.length) this.quietly(() => this.consumer!.resume(resume));
    this.ctx.logger.debug({ group: this.groupId, generation, partitions: [...owned] }, 'Kafka partitions assigned');
    this.wake();
  }

  /**
   * Without --follow a worker leaves only when every partition of its topics reached the end
   * seen at start — its own by its position, the others' by the offsets their owners committed
   * to the group. Leaving earlier would strand the partitions of a worker that died: the group
   * hands them over only after its session times out.
   */
  private async othersDone(): Promise<boolean> {
    const others = [...this.targets.keys()].filter((k) => !this.owned.has(k));
    if (!others.length) return true;
    if (Date.now() - this.othersCheckedAt < 1000) return false;
    this.othersCheckedAt = Date.now();
    const group = await this.admin!.fetchOffsets({ groupId: this.groupId, topics: [...this.plans.keys()] }).catch(() => []);
    const committed = new Map<PartitionKey, bigint>();
    for (const t of group)
      for (const p of t.partitions) if (/^\d+$/.test(p.offset)) committed.set(pkey(t.topic, p.partition), BigInt(p.offset));
    const waiting = others.filter((k) => {
      const reached = [this.saved.get(k), committed.get(k), this.lows.get(k)].filter((x): x is bigint => x !== undefined);
      return (reached.length ? maxOf(reached) : 0n) < this.targets.get(k)!;
    });
    if (waiting.length)
      this.ctx.logger.debug({ group: this.groupId, partitions: waiting }, 'own partitions done; waiting for the rest of the group');
    return waiting.length === 0;
  }

  // ---- kafkajs → generator bridge --------------------------------------------------------------

  private async onBatch(batch: Batch, resolveOffset: (offset: string) => void, heartbeat: () => Promise<void>): Promise<void> {
    if (this.closing) return;
    // Every fetch response carries the partition's end: the consumer lag costs no extra request.
    if (/^\d+$/.test(batch.highWatermark)) this.highWatermarks.set(pkey(batch.topic, batch.partition), BigInt(batch.highWatermark));
    let finished!: () => void;
    const finishedPromise = new Promise<void>((r) => (finished = r));
    const item: BatchItem = { batch, generation: this.generation, resolveOffset, abandoned: false, finished, finishedPromise };
    this.queue.push(item);
    this.wake();
    let isDone = false;
    void finishedPromise.then(() => (isDone = true));
    while (!isDone && !this.closing) {
      await Promise.race([finishedPromise, sleep(this.heartbeatMs)]);
      if (isDone || this.closing) break;
      try {
        // Keeps the group membership alive while the destination is slow.
        await heartbeat();
      } catch (err) {
        item.abandoned = true;
        if (isRebalance(err)) await this.drainBeforeRejoin();
        throw err;
      }
    }
  }

  private *consume(item: BatchItem): Generator<AirbyteMessage> {
    const { topic, partition } = item.batch;
    const key = pkey(topic, partition);
    const plan = this.plans.get(topic);
    if (!plan) return;
    const target = this.targets.get(key) ?? 0n;
    const current = () => !item.abandoned && !this.closing && item.generation === this.generation && this.owned.has(key);
    const resolve = (offset: string) => {
      if (!current()) return;
      try {
        item.resolveOffset(offset);
      } catch {
        // kafkajs dropped this partition meanwhile; the next join re-positions it anyway.
      }
    };
    for (const m of item.batch.messages) {
      if (!current()) return;
      const offset = BigInt(m.offset);
      const next = this.position.get(key);
      if (next === undefined) return;
      if (offset < next) {
        resolve(m.offset);
        continue;
      }
      if (!this.follow && offset >= target) {
        this.markDone(key);
        return;
      }
      const decoded = decodeMessage(m.key, m.value, { format: this.config.format, primaryKey: plan.primaryKey });
      if (decoded.op === 'upsert') yield message.record(topic, decoded.data);
      else if (decoded.op === 'delete') yield message.deletion(topic, decoded.key);
      else if (decoded.op === 'skip') yield message.log('WARN', `${topic}[${partition}] offset ${m.offset}: ${decoded.reason}`);
      else {
        this.errors++;
        const where = `topic ${topic}, partition ${partition}, offset ${m.offset}`;
        if (this.errors <= this.config.max_errors) yield message.log('WARN', `skipped malformed message (${where}): ${decoded.reason}`);
        else {
          // Past max_errors the engine decides: the run fails naming the message, or it becomes a
          // dead letter (errors.tolerance: all). Either way it is behind the next checkpoint.
          const max = this.config.max_errors;
          yield message.recordError(topic, {
            position: where,
            message: `malformed Kafka message: ${decoded.reason}${max ? ` (${this.errors} malformed, more than max_errors ${max})` : ''}`,
            hint: 'fix the producer, raise max_errors in the source config to skip such messages, or set errors.tolerance: all to keep them as dead letters',
            raw: rawText(m.value),
          });
        }
      }
      this.position.set(key, offset + 1n);
      this.dirty.add(topic);
      this.sinceState++;
      resolve(m.offset);
      if (this.sinceState >= this.config.checkpoint_every) yield* this.states();
    }
    if (!this.follow && current() && (this.position.get(key) ?? 0n) >= target) this.markDone(key);
  }

  private markDone(key: PartitionKey): void {
    this.done.add(key);
    const { topic, partition } = splitKey(key);
    this.quietly(() => this.consumer!.pause([{ topic, partitions: [partition] }]));
    this.wake();
  }

  /**
   * A rebalance may give our partitions to another worker. Records we yielded but the destination
   * has not committed yet could then land after the new owner's newer versions of the same keys.
   * kafkajs rejoins only when this eachBatch returns, so checkpoint now and wait (bounded, well
   * within the rebalance timeout) until the destination has committed everything we yielded.
   */
  private async drainBeforeRejoin(): Promise<void> {
    this.flushSoon = true;
    this.wake();
    const deadline = Date.now() + Math.min(10_000, Math.floor(this.config.session_timeout_ms / 3));
    const pending = () => [...this.owned].some((k) => (this.acked.get(k) ?? -1n) < (this.position.get(k) ?? -1n));
    while (pending() && Date.now() < deadline && !this.closing) await sleep(25);
    if (!pending()) await Promise.race([this.commitChain, sleep(Math.max(0, deadline - Date.now()))]);
  }

  /**
   * kafkajs never hands over a batch that only held transaction markers or aborted messages, but
   * reports it here: move past it, or a partition ending in a marker would never reach its target.
   */
  private onFilteredBatch(topic: string, partition: number, lastOffset: string, batchSize: number): void {
    if (batchSize !== 0 || !/^\d+$/.test(lastOffset)) return;
    const key = pkey(topic, partition);
    const pos = this.position.get(key);
    if (!this.positioned || !this.owned.has(key) || pos === undefined) return;
    const next = BigInt(lastOffset) + 1n;
    if (next <= pos) return;
    this.position.set(key, next);
    this.dirty.add(topic);
    if (!this.follow && next >= (this.targets.get(key) ?? 0n)) this.markDone(key);
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  private *states(): Generator<AirbyteMessage> {
    // Mid-rebalance nothing is owned; what we read is recorded once the new assignment is known.
    if (!this.positioned) return;
    const topics = [...this.dirty];
    this.dirty.clear();
    this.sinceState = 0;
    this.lastStateAt = Date.now();
    this.reportLag();
    for (const topic of topics) {
      const offsets: Record<string, string> = {};
      for (const key of this.owned) {
        const { topic: t, partition } = splitKey(key);
        const pos = this.position.get(key);
        if (t !== topic || pos === undefined) continue;
        offsets[String(partition)] = String(pos);
        this.emitted.set(key, pos);
      }
      // With no partition of this topic, `{ offsets: {} }`: deep-merged, it changes nothing stored.
      yield message.streamState(topic, { offsets });
    }
  }

  /**
   * Consumer lag of the partitions this worker owns: messages between the next offset it reads and
   * the partition's high watermark. A structured log line, which the metrics (src/metrics) turn
   * into sluice_kafka_consumer_lag_messages — the same path as PostgreSQL's slot WAL bytes. Sent
   * with every checkpoint, so it needs no timer and no request of its own.
   */
  private reportLag(): void {
    const kafkaConsumerLag: Array<{ topic: string; partition: number; messages: number }> = [];
    for (const key of this.owned) {
      const pos = this.position.get(key);
      const high = this.highWatermarks.get(key);
      if (pos === undefined || high === undefined) continue;
      const { topic, partition } = splitKey(key);
      kafkaConsumerLag.push({ topic, partition, messages: Number(high > pos ? high - pos : 0n) });
    }
    this.ctx.logger.debug({ kafkaConsumerLag }, 'Kafka consumer lag');
  }

  /** The engine persisted a state we emitted: remember it and tell the consumer group. */
  onStateCommitted(state: StateMessage): Promise<void> {
    const topic = state.stream?.stream_descriptor.name;
    const offsets = (state.stream?.stream_state as TopicState | undefined)?.offsets;
    if (!topic || !offsets || !this.plans.has(topic)) return Promise.resolve();
    for (const [p, o] of Object.entries(offsets)) {
      const key = pkey(topic, Number(p));
      const v = BigInt(o);
      if (v > (this.acked.get(key) ?? -1n)) this.acked.set(key, v);
    }
    this.ackWaiter?.();
    // Not awaited by the engine: a commit during a rebalance can take a while and must not stall it.
    this.commitChain = this.commitChain.then(async () => {
      await this.commitToGroup();
    });
    return Promise.resolve();
  }

  private async commitToGroup(): Promise<boolean> {
    if (!this.consumer) return false;
    const byTopic = new Map<string, Array<{ partition: number; offset: string }>>();
    for (const key of this.owned) {
      const a = this.acked.get(key);
      if (a === undefined || a <= (this.groupCommitted.get(key) ?? -1n)) continue;
      const { topic, partition } = splitKey(key);
      if (!byTopic.has(topic)) byTopic.set(topic, []);
      byTopic.get(topic)!.push({ partition, offset: String(a) });
    }
    if (!byTopic.size) return true;
    const list = [...byTopic].flatMap(([topic, ps]) => ps.map((p) => ({ topic, ...p })));
    try {
      await this.consumer.commitOffsets(list);
      for (const c of list) this.groupCommitted.set(pkey(c.topic, c.partition), BigInt(c.offset));
      return true;
    } catch (err) {
      // Only a hint for the next owner and for lag monitoring; the sluice state is already safe.
      this.ctx.logger.debug({ err: describeUnknown(err) }, 'committing offsets to the consumer group failed');
      return false;
    }
  }

  /**
   * Before leaving the group, let the engine confirm our last states and pass them on to the
   * group, so whoever takes over our partitions starts where our destination commit ended.
   * Bounded: an engine that confirms later (or never) costs replays, not data.
   */
  private async settle(): Promise<void> {
    const deadline = Date.now() + (this.acked.size ? 10_000 : 3000);
    const pending = () => [...this.owned].some((k) => (this.acked.get(k) ?? -1n) < (this.emitted.get(k) ?? -1n));
    while (pending() && Date.now() < deadline && !this.ctx.signal.aborted) {
      await new Promise<void>((r) => {
        this.ackWaiter = r;
        setTimeout(r, 100);
      });
    }
    await this.commitChain;
    for (let i = 0; i < 10 && Date.now() < deadline; i++) {
      if (await this.commitToGroup()) break;
      await sleep(300);
    }
  }

  // ---- plumbing ---------------------------------------------------------------------------------

  /** pause/seek/resume throw while kafkajs restarts the consumer; the next join re-positions anyway. */
  private quietly(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.ctx.logger.debug({ err: describeUnknown(err) }, 'consumer not running; partition change deferred to the next join');
    }
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private waitForWork(ms: number): Promise<void> {
    const signal = this.ctx.signal;
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        if (this.wakeUp === done) this.wakeUp = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.wakeUp = done;
    });
  }

  private async close(): Promise<void> {
    this.closing = true;
    for (const item of this.queue.splice(0)) item.finished();
    await this.consumer?.disconnect().catch(() => undefined);
    // A join that completed while we were leaving may still be positioning through the admin client.
    await this.positioning;
    await this.admin?.disconnect().catch(() => undefined);
  }
}

/** A message value as text for a dead letter: UTF-8 as is, anything else base64 (marked). */
function rawText(value: Buffer | null | undefined): string {
  if (value == null) return '';
  return isUtf8(value) ? value.toString('utf8') : `base64:${value.toString('base64')}`;
}
