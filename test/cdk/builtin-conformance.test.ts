// Every built-in connector runs the same conformance kit a custom connector runs (invariant 8).
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { describeDestinationConformance, describeSourceConformance } from 'sluice/testing';
import fileSource from '../../connectors/source-file/index.ts';
import jsonlDestination from '../../connectors/destination-jsonl/index.ts';
import pgvectorDestination from '../../connectors/destination-pgvector/index.ts';
import postgresSource from '../../connectors/source-postgres/index.ts';
import qdrantDestination from '../../connectors/destination-qdrant/index.ts';
import pineconeDestination from '../../connectors/destination-pinecone/index.ts';
import { startQdrantFixture, type QdrantFixture } from '../fixtures/qdrant-server.ts';
import { startPineconeFixture, type PineconeFixture } from '../fixtures/pinecone-server.ts';
import s3Source from '../../connectors/source-s3/index.ts';
import { TEST_CREDENTIALS, freshBucket, put, testClient } from '../fixtures/s3.ts';
import kafkaSource from '../../connectors/source-kafka/index.ts';
import { produce, testProducer, uniqueName } from '../../connectors/source-kafka/testing.ts';
import { testContext } from 'sluice/testing';
import { describeOnNativePgvector } from '../helpers/pgvector-backends.ts';

const dir = mkdtempSync(join(tmpdir(), 'sluice-builtin-conformance-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// source-file: a few Markdown files with distinct modification times.
const docs = join(dir, 'docs');
mkdirSync(docs);
for (let i = 1; i <= 7; i++) {
  const f = join(docs, `note-${i}.md`);
  writeFileSync(f, `# Note ${i}\n\nSome text for note ${i}.\n`);
  const t = new Date(Date.parse('2024-03-01T00:00:00Z') + i * 60_000);
  utimesSync(f, t, t);
}
describeSourceConformance('source-file', {
  source: fileSource,
  config: { path: docs, include: ['**/*.md'], checkpoint_every: 2 },
  badConfigs: [{ path: join(dir, 'no-such-dir') }],
});

// destination-jsonl: the kit reads back through its readBack() and writes into its sandbox file.
describeDestinationConformance('destination-jsonl', {
  destination: jsonlDestination,
  config: { path: join(dir, 'out', 'chunks.jsonl'), batch_records: 2 },
});
// …and with batches large enough that a document and its DELETE land in the same one.
describeDestinationConformance('destination-jsonl (large batches)', {
  destination: jsonlDestination,
  config: { path: join(dir, 'out', 'chunks.jsonl'), batch_records: 1000 },
});

// destination-pgvector on the PGlite server of the test run, in a schema of its own.
const schema = `cdk_conformance_${process.pid}`;
let db: pg.Client;
beforeAll(async () => {
  db = new pg.Client({ connectionString: inject('pgliteUrl') });
  await db.connect();
});
afterAll(async () => {
  await db?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
  await db?.end();
});
describeDestinationConformance('destination-pgvector', () => ({
  destination: pgvectorDestination,
  config: { url: inject('pgliteUrl'), schema, index: 'none' },
  badConfigs: [{ url: 'postgres://nobody:wrong@127.0.0.1:1/none?sslmode=disable' }],
}));

// …and on native PostgreSQL + pgvector (COPY, staging and merge: the production path), in its sandbox schema.
describeOnNativePgvector('destination-pgvector', (backend) => {
  describeDestinationConformance('destination-pgvector', () => ({
    destination: pgvectorDestination,
    config: { url: backend.url, schema: `cdk_conformance_native_${process.pid}`, index: 'none' },
    badConfigs: [{ url: 'postgres://nobody:wrong@127.0.0.1:1/none?sslmode=disable' }],
  }));
});

// source-postgres on the PostgreSQL server of the test run: a table whose cursor has ties.
const pgSchema = `cdk_conformance_src_${process.pid}`;
let src: pg.Client;
beforeAll(async () => {
  src = new pg.Client({ connectionString: inject('pgUrl') });
  await src.connect();
  await src.query(
    `CREATE SCHEMA "${pgSchema}"; CREATE TABLE "${pgSchema}".posts (id int PRIMARY KEY, title text NOT NULL, updated_at timestamptz NOT NULL)`,
  );
  await src.query(
    `INSERT INTO "${pgSchema}".posts SELECT i, 'post ' || i, timestamptz '2024-01-01' + ((i / 3) || ' minutes')::interval FROM generate_series(1, 20) i`,
  );
});
afterAll(async () => {
  await src?.query(`DROP SCHEMA IF EXISTS "${pgSchema}" CASCADE`).catch(() => undefined);
  await src?.end();
});
describeSourceConformance('source-postgres', async () => {
  const config = { url: inject('pgUrl'), schemas: [pgSchema], batch_size: 4 };
  // The table's stream name as the source names it; its cursor is a column the user picks.
  const [stream] = (await postgresSource.discover(postgresSource.spec.config.parse(config), testContext())).streams;
  return {
    source: postgresSource,
    config,
    cursorFields: { [stream.name]: ['updated_at'] },
    badConfigs: [{ url: 'postgres://nobody:wrong@127.0.0.1:1/none' }],
  };
});

// Vector destinations with a search(): the kit reads back through search() itself.
let qdrant: QdrantFixture;
let pinecone: PineconeFixture;
beforeAll(async () => {
  qdrant = await startQdrantFixture();
  pinecone = await startPineconeFixture();
  await pinecone.createIndex('conformance', 8);
});
afterAll(async () => {
  await qdrant?.close();
  await pinecone?.close();
});
describeDestinationConformance('destination-qdrant', () => ({
  destination: qdrantDestination,
  config: { url: qdrant.url, collection: 'conformance', max_retries: 2 },
  badConfigs: [{ url: 'http://127.0.0.1:1', collection: 'conformance', max_retries: 0 }],
}));
describeDestinationConformance('destination-pinecone', () => ({
  destination: pineconeDestination,
  config: { api_key: pinecone.apiKey, index: 'conformance', controller_host: pinecone.controllerUrl, retry_initial_delay_ms: 5 },
  badConfigs: [{ api_key: 'wrong-key', index: 'conformance', controller_host: pinecone.controllerUrl, max_retries: 0 }],
}));

// source-s3 on the S3 server of the test run (fauxqs): a prefix of Markdown objects.
let bucket = '';
beforeAll(async () => {
  const client = testClient(inject('s3Endpoint'));
  bucket = await freshBucket(client, 'conformance');
  for (let i = 1; i <= 6; i++) await put(client, bucket, `notes/note-${i}.md`, `# Note ${i}\n\nText of note ${i}.\n`);
  client.destroy();
});
describeSourceConformance('source-s3', () => ({
  source: s3Source,
  config: { bucket, prefix: 'notes/', endpoint: inject('s3Endpoint'), force_path_style: true, ...TEST_CREDENTIALS },
  badConfigs: [{ bucket: 'no-such-bucket-for-conformance', endpoint: inject('s3Endpoint'), force_path_style: true, ...TEST_CREDENTIALS }],
}));

// source-kafka on the mock cluster of the test run: one partition of keyed JSON messages.
const topic = uniqueName('conformance');
beforeAll(async () => {
  const producer = await testProducer(inject('kafkaBrokers'));
  await produce(
    producer,
    topic,
    Array.from({ length: 12 }, (_, i) => ({ key: String(i + 1), value: { id: i + 1, text: `message ${i + 1}` }, partition: 0 })),
  );
  await producer.disconnect();
});
describeSourceConformance('source-kafka', () => ({
  source: kafkaSource,
  config: { brokers: inject('kafkaBrokers'), topics: [topic], key_field: 'id', session_timeout_ms: 3000 },
  streams: [topic],
  resumePoints: 2,
}));
