// The Kafka dead-letter store (errors.dead_letter.type: kafka) on the kcat mock cluster: letters
// are appended to the topic; list folds add/update/remove from the committed offsets of the
// connection's group; once nothing is open the group is committed past what was read (purge =
// commit past), and other connections sharing the topic are untouched. Then through the CLI: a
// sync stores its letters there, retry re-processes them exactly once, purge empties the list.
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { KafkaDeadLetterStore } from '../../src/engine/dead-letters-kafka.ts';
import type { DeadLetter } from '../../src/engine/dead-letters.ts';
import { ErrorsConfigSchema } from '../../src/config/errors.ts';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const brokers = inject('kafkaBrokers');
const unique = (p: string) => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
const storeFor = (topic: string) =>
  new KafkaDeadLetterStore(ErrorsConfigSchema.parse({ dead_letter: { type: 'kafka', brokers, topic } }).dead_letter as never);
const letter = (connection: string, n: number): DeadLetter => ({
  id: `${connection}-${n}`,
  connection,
  stream: 'items',
  key: `K${n}`,
  stage: 'key',
  error: `error ${n}`,
  payload: { n },
  at: new Date().toISOString(),
  attempts: 0,
});

const admin = new Kafka({ clientId: 'dl-test', brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
afterAll(() => admin.disconnect());

describe('Kafka dead-letter store', () => {
  it(
    'appends letters, folds updates and removals, commits past when nothing is open, keeps connections apart',
    { timeout: 120_000 },
    async () => {
      const topic = unique('dead-letters');
      const store = storeFor(topic);
      try {
        expect(await store.list('a')).toEqual([]); // no topic yet
        for (const n of [1, 2, 3]) await store.add(letter('a', n));
        await store.add(letter('b', 1));
        expect((await store.list('a')).map((l) => l.id)).toEqual(['a-1', 'a-2', 'a-3']);
        await store.update('a', [{ ...letter('a', 2), attempts: 1, error: 'failed again' }]);
        await store.remove('a', ['a-1']);
        expect((await store.list('a')).map((l) => [l.id, l.attempts, l.error])).toEqual([
          ['a-2', 1, 'failed again'],
          ['a-3', 0, 'error 3'],
        ]);
        // Nothing of `a` open: its group moves past what was read; `b` is untouched.
        await store.remove('a', ['a-2', 'a-3']);
        expect(await store.list('a')).toEqual([]);
        await admin.connect();
        const ends = await admin.fetchTopicOffsets(topic);
        const [committed] = await admin.fetchOffsets({ groupId: 'sluice-dead-letters.a', topics: [topic] });
        expect(new Map(committed.partitions.map((p) => [p.partition, p.offset]))).toEqual(new Map(ends.map((e) => [e.partition, e.high])));
        expect((await store.list('b')).map((l) => l.id)).toEqual(['b-1']);
        // A later letter is read from the committed offset on.
        await store.add(letter('a', 4));
        expect((await store.list('a')).map((l) => l.id)).toEqual(['a-4']);
      } finally {
        await store.close();
      }
      // A second store (another process) sees the same letters.
      const other = storeFor(topic);
      try {
        expect((await other.list('a')).map((l) => l.id)).toEqual(['a-4']);
      } finally {
        await other.close();
      }
    },
  );

  it(
    'through the CLI: a sync stores its letters on the topic; retry re-processes them once; purge empties the list',
    { timeout: 240_000 },
    async () => {
      const topic = unique('dl-cli');
      const dir = tempDir('dead-letters-kafka-');
      const pipeline = (textFields: string) => `version: 1
connections:
  - name: items
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    processing: { text_fields: [${textFields}] }
    streams: [ { name: items, primary_key: [[sku]], destination_sync_mode: append_dedup } ]
    errors: { tolerance: all, max_error_rate: 0.5, dead_letter: { type: kafka, brokers: "${brokers}", topic: ${topic} } }
`;
      const rows = [
        { sku: 'A', title: 'alpha' },
        { sku: 'B', title: '' },
        { sku: 'C', title: 'gamma' },
      ];
      writeFiles(dir, {
        'p.yaml': pipeline('title'),
        'data/a.jsonl': rows.map((r) => JSON.stringify(r)).join('\n') + '\n{broken\n',
      });
      const r = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).connections[0].streams.items.failed_by_stage).toEqual({ text: 1, source: 1 });
      const listed = JSON.parse((await runCli(['dead-letters', 'list', 'p.yaml', '--json'], { cwd: dir })).stdout).items as DeadLetter[];
      expect(listed.map((l) => [l.stage, l.key ?? l.position]).sort()).toEqual([
        ['source', 'file a.jsonl, line 4'],
        ['text', 'B'],
      ]);

      // B gets text from another field: the retry writes it once and removes its letter; the source letter stays.
      writeFiles(dir, { 'p.yaml': pipeline('title, sku') });
      const retry = await runCli(['dead-letters', 'retry', 'p.yaml', '--json'], { cwd: dir });
      expect(retry.code, retry.stderr).toBe(0);
      expect(JSON.parse(retry.stdout)[0]).toMatchObject({ retried: 1, succeeded: 1, failed: [] });
      const again = await runCli(['dead-letters', 'retry', 'p.yaml', '--json'], { cwd: dir });
      expect(JSON.parse(again.stdout)[0]).toMatchObject({ retried: 0, succeeded: 0 });
      expect(readJsonl(join(dir, 'out.jsonl')).filter((l) => l.document_id === 'B')).toHaveLength(1);

      const purge = await runCli(['dead-letters', 'purge', 'p.yaml'], { cwd: dir });
      expect(purge.stdout).toMatch(/items: purged 1 dead letter\(s\)/);
      expect(JSON.parse((await runCli(['dead-letters', 'list', 'p.yaml', '--json'], { cwd: dir })).stdout).items).toEqual([]);
    },
  );
});
