// End to end through the CLI: Kafka (librdkafka mock cluster) → `sluice sync --json` → jsonl and
// pgvector. 10k Debezium snapshot events, then updates/deletes/tombstones/plain JSON, then a sync
// SIGKILLed mid-way and re-run: the destination must equal the state the topic describes, with
// every document exactly once.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Producer } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { produce, testKafka, testProducer, uniqueName, type TestMessage } from './testing.ts';
import { scratchDir } from '../../src/testing/context.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const brokers = inject('kafkaBrokers');
const pgUrl = inject('pgliteUrl');
let producer: Producer;
let db: pg.Client;

beforeAll(async () => {
  producer = await testProducer(brokers);
  db = new pg.Client({ connectionString: pgUrl });
  await db.connect();
});
afterAll(async () => {
  await producer?.disconnect();
  await db?.end();
});

/** The topic's meaning: id → body (absent = deleted), applied in produce order. */
class Model {
  readonly docs = new Map<number, string>();
  readonly messages: TestMessage[] = [];
  private key = (id: number) => JSON.stringify({ schema: { type: 'struct' }, payload: { id } });
  debezium(op: 'r' | 'c' | 'u', id: number, body: string) {
    const before = op === 'u' ? { id, body: this.docs.get(id) ?? null } : null;
    this.messages.push({
      key: this.key(id),
      value: { schema: { type: 'struct' }, payload: { op, before, after: { id, body }, source: { table: 'docs' }, ts_ms: Date.now() } },
    });
    this.docs.set(id, body);
  }
  /** Debezium's delete: a "d" event, then a tombstone for compaction. */
  debeziumDelete(id: number) {
    this.messages.push({
      key: this.key(id),
      value: { op: 'd', before: { id, body: this.docs.get(id) ?? null }, after: null, ts_ms: Date.now() },
    });
    this.messages.push({ key: this.key(id), value: null });
    this.docs.delete(id);
  }
  tombstone(id: number) {
    this.messages.push({ key: JSON.stringify({ id }), value: null });
    this.docs.delete(id);
  }
  json(id: number, body: string) {
    this.messages.push({ key: String(id), value: { id, body } });
    this.docs.set(id, body);
  }
  async flush(topic: string) {
    await produce(producer, topic, this.messages.splice(0));
  }
  expected(): Array<[string, string]> {
    return [...this.docs].map(([id, body]) => [String(id), body] as [string, string]).sort(([a], [b]) => a.localeCompare(b));
  }
}

function writePipeline(dir: string, connection: string, topic: string, destination: string, checkpointEvery = 1000): string {
  const file = join(dir, `${connection}.yaml`);
  writeFileSync(
    file,
    `version: 1
connections:
  - name: ${connection}
    source:
      type: kafka
      config: { brokers: "${brokers}", topics: [${topic}], key_field: id, session_timeout_ms: 3000, checkpoint_every: ${checkpointEvery} }
    destination:
      ${destination}
    ${destination.includes('pgvector') ? 'embedding: { provider: hash, dimensions: 8 }' : ''}
    processing: { text_fields: [body], metadata_fields: [id], chunk_size: 200, chunk_overlap: 0, chunk_unit: characters }
    streams:
      - { name: ${topic}, sync_mode: incremental, destination_sync_mode: append_dedup }
`,
  );
  return file;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  summary?: {
    status: string;
    connections: Array<{ status: string; streams: Record<string, { records_read: number; records_deleted: number }> }>;
  };
  stderr: string;
}

/** `sluice sync --json`; with `killWhen`, sends `signal` (SIGKILL) to the process as soon as it returns true. */
function sync(yaml: string, killWhen?: () => Promise<boolean>, opts: { follow?: boolean; signal?: NodeJS.Signals } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const args = ['bin/sluice.js', 'sync', yaml, '--json', ...(opts.follow ? ['--follow'] : [])];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let poll: NodeJS.Timeout | undefined;
    if (killWhen) {
      let busy = false;
      poll = setInterval(async () => {
        if (busy) return;
        busy = true;
        if (await killWhen().catch(() => false)) {
          clearInterval(poll);
          child.kill(opts.signal ?? 'SIGKILL');
        }
        busy = false;
      }, 20);
    }
    child.on('error', fail);
    child.on('exit', (code, signal) => {
      clearInterval(poll);
      let summary: Run['summary'];
      try {
        summary = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        summary = undefined;
      }
      done({ code, signal, summary, stderr });
    });
  });
}

async function endSum(topic: string): Promise<number> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).reduce((s, p) => s + Number(p.high), 0);
  } finally {
    await admin.disconnect();
  }
}

const offsetSum = (state: unknown, topic: string): number => {
  const offsets =
    (state as { streams?: Record<string, { offsets?: Record<string, string> }> } | undefined)?.streams?.[topic]?.offsets ?? {};
  return Object.values(offsets).reduce((s, o) => s + Number(o), 0);
};

interface Target {
  rows(): Promise<Array<{ document_id: string; chunk_index: number; content: string }>>;
  state(): Promise<unknown>;
}

async function scenario(destination: (dir: string, topic: string) => { yaml: string; target: Target }) {
  const topic = uniqueName('e2e').replace(/-/g, '_');
  const dir = scratchDir('sluice-kafka-e2e-');
  const { yaml, target } = destination(dir, topic);
  const model = new Model();
  const check = async () => {
    const rows = await target.rows();
    const ids = rows.map((r) => r.document_id);
    expect(new Set(ids).size).toBe(ids.length); // one chunk per document, none twice
    expect(rows.every((r) => r.chunk_index === 0)).toBe(true);
    expect(rows.map((r) => [r.document_id, r.content] as [string, string]).sort(([a], [b]) => a.localeCompare(b))).toEqual(
      model.expected(),
    );
  };

  // 1. 10k snapshot events across partitions.
  for (let id = 0; id < 10_000; id++) model.debezium('r', id, `document ${id}, first version`);
  await model.flush(topic);
  const first = await sync(yaml);
  expect(first.code, first.stderr).toBe(0);
  expect(first.summary!.connections[0].streams[topic].records_read).toBe(10_000);
  await check();

  // 2. Updates, Debezium deletes (+ tombstones), bare tombstones, plain JSON inserts.
  for (let id = 0; id < 1000; id++) model.debezium('u', id, `document ${id}, second version`);
  for (let id = 1000; id < 1500; id++) model.debeziumDelete(id);
  for (let id = 1500; id < 2000; id++) model.tombstone(id);
  for (let id = 10_000; id < 10_500; id++) model.json(id, `new document ${id}`);
  await model.flush(topic);
  const second = await sync(yaml);
  expect(second.code, second.stderr).toBe(0);
  const s2 = second.summary!.connections[0].streams[topic];
  expect(s2.records_read).toBe(1000 + 1000 + 500 + 500);
  expect(s2.records_deleted).toBe(1500);
  await check();

  // 3. A big batch of updates; SIGKILL the sync once it has committed part of it, then re-run.
  const before = offsetSum(await target.state(), topic);
  for (let id = 2000; id < 10_000; id++) model.debezium(id % 2 ? 'u' : 'c', id, `document ${id}, third version`);
  await model.flush(topic);
  const end = await endSum(topic);
  let atKill = -1;
  const killed = await sync(yaml, async () => {
    const now = offsetSum(await target.state(), topic);
    if (now > before && now < end) {
      atKill = now;
      return true;
    }
    return false;
  });
  expect(killed.signal).toBe('SIGKILL');
  expect(atKill).toBeGreaterThan(before);
  expect(atKill).toBeLessThan(end);
  const resumed = await sync(yaml);
  expect(resumed.code, resumed.stderr).toBe(0);
  // Resumed from the last commit (possibly replaying what was written after it, never before it).
  expect(resumed.summary!.connections[0].streams[topic].records_read).toBeLessThanOrEqual(end - atKill);
  expect(offsetSum(await target.state(), topic)).toBe(end);
  await check();
}

describe('sluice sync: Kafka end to end', () => {
  it('into jsonl: 10k, then updates/deletes/tombstones, then SIGKILL mid-sync and resume', { timeout: 300_000 }, async () => {
    await scenario((dir, topic) => {
      // jsonl rewrites its whole file at every commit: fewer, larger checkpoints keep this quick.
      const yaml = writePipeline(
        dir,
        'kafka-jsonl',
        topic,
        `type: jsonl\n      config: { path: out.jsonl, include_embeddings: false }`,
        2000,
      );
      const stateFile = join(dir, '.sluice', 'state', 'kafka-jsonl.json');
      return {
        yaml,
        target: {
          rows: async () =>
            readFileSync(join(dir, 'out.jsonl'), 'utf8')
              .split('\n')
              .filter(Boolean)
              .map((l) => JSON.parse(l)),
          state: async () => (existsSync(stateFile) ? JSON.parse(readFileSync(stateFile, 'utf8')).state : undefined),
        },
      };
    });
  });

  it('into pgvector: the same, with state kept in the destination', { timeout: 300_000 }, async () => {
    await scenario((dir, topic) => {
      const schema = uniqueName('kafka_e2e').replace(/-/g, '_');
      const yaml = writePipeline(
        dir,
        'kafka-pgvector',
        topic,
        `type: pgvector\n      config: { url: "${pgUrl}", schema: ${schema}, table: docs, index: none }`,
      );
      return {
        yaml,
        target: {
          rows: async () => (await db.query(`SELECT document_id, chunk_index, content FROM "${schema}".docs`)).rows,
          state: async () => {
            const r = await db
              .query(`SELECT state FROM "${schema}"._sluice_state WHERE connection = 'kafka-pgvector'`)
              .catch(() => ({ rows: [] as Array<{ state: unknown }> }));
            return r.rows[0]?.state;
          },
        },
      };
    });
  });

  it('two CLI workers with one group id together deliver everything once (pgvector)', { timeout: 300_000 }, async () => {
    const topic = uniqueName('e2e_pair').replace(/-/g, '_');
    const dir = scratchDir('sluice-kafka-pair-');
    const schema = uniqueName('kafka_pair').replace(/-/g, '_');
    const yaml = writePipeline(
      dir,
      'kafka-pair',
      topic,
      `type: pgvector\n      config: { url: "${pgUrl}", schema: ${schema}, table: docs, index: none }`,
    );
    const model = new Model();
    for (let id = 0; id < 6000; id++) model.debezium('r', id, `document ${id}`);
    await model.flush(topic);
    const [a, b] = await Promise.all([sync(yaml), sync(yaml)]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const readA = a.summary!.connections[0].streams[topic].records_read;
    const readB = b.summary!.connections[0].streams[topic].records_read;
    // How the partitions split depends on when each process joins the group: one that starts
    // more than the group's initial rebalance delay after the other (a loaded machine: two CLI
    // start-ups) may find everything read already. The split itself is asserted where both
    // workers join at once (kafka.test.ts, "two workers with one group id split the partitions"); here, together, exactly once.
    expect(readA + readB).toBe(6000);
    const rows = (await db.query(`SELECT document_id, content FROM "${schema}".docs`)).rows as Array<{
      document_id: string;
      content: string;
    }>;
    expect(rows.length).toBe(6000);
    expect(rows.map((r) => [r.document_id, r.content] as [string, string]).sort(([x], [y]) => x.localeCompare(y))).toEqual(
      model.expected(),
    );
    // A later run (one worker) resumes every partition where the pair left off: nothing to read.
    const again = await sync(yaml);
    expect(again.code, again.stderr).toBe(0);
    expect(again.summary!.connections[0].streams[topic].records_read).toBe(0);
  });

  it('--follow keeps consuming new messages until SIGTERM, and exits with its progress saved', { timeout: 120_000 }, async () => {
    const topic = uniqueName('e2e_follow').replace(/-/g, '_');
    const dir = scratchDir('sluice-kafka-follow-');
    const yaml = writePipeline(dir, 'kafka-follow', topic, `type: jsonl\n      config: { path: out.jsonl, include_embeddings: false }`);
    const stateFile = join(dir, '.sluice', 'state', 'kafka-follow.json');
    const lines = () =>
      existsSync(join(dir, 'out.jsonl')) ? readFileSync(join(dir, 'out.jsonl'), 'utf8').split('\n').filter(Boolean).length : 0;
    const saved = () => (existsSync(stateFile) ? offsetSum(JSON.parse(readFileSync(stateFile, 'utf8')).state, topic) : 0);
    const model = new Model();
    for (let id = 0; id < 300; id++) model.debezium('r', id, `document ${id}`);
    await model.flush(topic);
    let phase = 0;
    let end = 0;
    const run = sync(
      yaml,
      async () => {
        if (phase === 0 && lines() === 300) {
          // Everything so far is in; produce more while the sync keeps running.
          phase = 1;
          for (let id = 300; id < 500; id++) model.debezium('c', id, `document ${id}`);
          for (let id = 0; id < 100; id++) model.tombstone(id);
          await model.flush(topic);
          end = await endSum(topic);
          return false;
        }
        // Stop once the new messages are written and checkpointed.
        return phase === 1 && lines() === 400 && saved() === end;
      },
      { follow: true, signal: 'SIGTERM' },
    );
    const r = await run;
    expect(r.code, r.stderr).toBe(0); // a --follow run stopped by SIGTERM after a clean shutdown is a success (syncExitCode)
    expect(r.summary?.status).toBe('interrupted');
    expect(saved()).toBe(end);
    const rows = readFileSync(join(dir, 'out.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(rows.map((r) => [r.document_id, r.content] as [string, string]).sort(([a], [b]) => a.localeCompare(b))).toEqual(
      model.expected(),
    );
    // Nothing left over: a bounded sync afterwards reads nothing.
    const after = await sync(yaml);
    expect(after.code, after.stderr).toBe(0);
    expect(after.summary!.connections[0].streams[topic].records_read).toBe(0);
  });
});
