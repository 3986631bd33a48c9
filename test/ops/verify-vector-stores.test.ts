// `sluice verify` on the Qdrant and Pinecone fixtures (loopback servers validated against the
// vendors' API documents): damage made through each store's own API — a document gone, a document
// the source no longer has, an orphan chunk index, and on Qdrant also a duplicate point, a changed
// text and a missing chunk — is reported (exit 1), --repair fixes it, a second verify is clean, and
// the store then holds exactly what a fresh sync of the same source writes.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startQdrantFixture, type QdrantFixture } from '../fixtures/qdrant-server.ts';
import { startPineconeFixture, type PineconeFixture } from '../fixtures/pinecone-server.ts';
import { tempDir } from '../helpers/cli.ts';
import { useInProcessCli } from '../helpers/cli-in-process.ts';
import { STANDARD_DAMAGE_COUNTS, driftCounts, verifyPipeline, verifyProject } from '../helpers/verify.ts';
import { connectQdrant } from '../../connectors/destination-qdrant/client.ts';
import { QdrantConfigSchema } from '../../connectors/destination-qdrant/config.ts';
import { PineconeConfigSchema } from '../../connectors/destination-pinecone/config.ts';
import { PineconeStore } from '../../connectors/destination-pinecone/store.ts';
import { chunkUuid } from '../../src/protocol/identity.ts';
import { scratchDir } from '../../src/testing/context.ts';

useInProcessCli();

const DIMS = 16;
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const ctx = () => ({
  logger: quiet,
  baseDir: process.cwd(),
  signal: new AbortController().signal,
  connection: 'docs',
  follow: false,
  workDir: scratchDir('sluice-verify-'),
});

const corpus = (dir: string, destination: string, fresh: string) =>
  verifyProject(
    dir,
    { 'p.yaml': verifyPipeline(destination, { dimensions: DIMS }), 'fresh.yaml': verifyPipeline(fresh, { dimensions: DIMS }) },
    ['a', 'b', 'c', 'd', 'e', 'f', 'h'],
  );

describe('sluice verify on the Qdrant fixture', { timeout: 120_000 }, () => {
  let fx: QdrantFixture;
  beforeAll(async () => {
    fx = await startQdrantFixture();
  });
  afterAll(async () => {
    await fx?.close();
  });

  it('reports, repairs, is clean afterwards, and equals a fresh sync', async () => {
    const dir = tempDir();
    const run = corpus(
      dir,
      `{ type: qdrant, config: { url: "${fx.url}", collection: kb } }`,
      `{ type: qdrant, config: { url: "${fx.url}", collection: kb_ref } }`,
    );
    expect((await run('p.yaml', 'sync')).code).toBe(0);
    expect((await run('p.yaml', 'verify')).code).toBe(0);

    const q = connectQdrant(QdrantConfigSchema.parse({ url: fx.url, collection: 'kb' }), quiet);
    const point = (doc: string, i: number) => fx.pointsOf('kb').find((p) => p.id === chunkUuid('docs', doc, i))!;
    rmSync(join(dir, 'docs/b.md')); // b: should be deleted
    await q.client.delete('kb', { wait: true, points: [chunkUuid('docs', 'a.md', 1)] }); // a: a chunk gone
    const c0 = point('c.md', 0);
    await q.client.upsert('kb', {
      wait: true,
      points: [{ id: randomUUID(), vector: c0.vector, payload: { ...c0.payload, chunk_index: 99 } }],
    }); // c: orphan
    const d0 = point('d.md', 0);
    await q.client.upsert('kb', { wait: true, points: [{ id: randomUUID(), vector: d0.vector, payload: d0.payload }] }); // d: duplicate
    const e0 = point('e.md', 0);
    await q.client.upsert('kb', {
      wait: true,
      points: [{ id: e0.id, vector: e0.vector, payload: { ...e0.payload, content: 'tampered' } }],
    }); // e: stale
    await q.client.delete('kb', { wait: true, filter: { must: [{ key: 'document_id', match: { value: 'f.md' } }] } }); // f: gone

    const found = await run('p.yaml', 'verify', '--json');
    expect(found.code, found.stderr).toBe(1);
    expect(JSON.parse(found.stdout).streams.docs.counts).toEqual(driftCounts(STANDARD_DAMAGE_COUNTS));
    const repaired = await run('p.yaml', 'verify', '--repair', '--json');
    expect(repaired.code).toBe(1);
    expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 5, documents_deleted: 1 });
    const after = await run('p.yaml', 'verify', '--json');
    expect(after.code, after.stdout).toBe(0);

    expect((await run('fresh.yaml', 'sync')).code).toBe(0);
    const content = (name: string) =>
      fx
        .pointsOf(name)
        .map((p) => JSON.stringify([p.id, p.payload, p.vector]))
        .sort();
    expect(content('kb')).toEqual(content('kb_ref'));
  });
});

describe('sluice verify on the Pinecone fixture', { timeout: 120_000 }, () => {
  let fx: PineconeFixture;
  beforeAll(async () => {
    fx = await startPineconeFixture();
    await fx.createIndex('kb', DIMS);
    await fx.createIndex('kb-ref', DIMS);
  });
  afterAll(async () => {
    await fx?.close();
  });

  it('reports missing, deleted and orphaned documents, repairs them, and equals a fresh sync', async () => {
    const dir = tempDir();
    const dest = (index: string) =>
      `{ type: pinecone, config: { api_key: "${fx.apiKey}", index: ${index}, controller_host: "${fx.controllerUrl}" } }`;
    const run = corpus(dir, dest('kb'), dest('kb-ref'));
    expect((await run('p.yaml', 'sync')).code).toBe(0);
    expect((await run('p.yaml', 'verify')).code).toBe(0);

    const store = await PineconeStore.connect(
      PineconeConfigSchema.parse({ api_key: fx.apiKey, index: 'kb', controller_host: fx.controllerUrl }),
      ctx(),
    );
    const ns = fx.namespaceNames('kb').find((n) => n.startsWith('docs'))!;
    rmSync(join(dir, 'docs/b.md')); // b: should be deleted
    await store.deleteIds(ns, ['a.md#1']); // a: a chunk gone
    // c: an orphan as a lost tail delete leaves it (chunk 0's chunk_count still covers it: the
    // writer finds tails through that count, so a row beyond it is out of any writer's reach).
    const c0 = fx.vector('kb', ns, 'c.md#0')!;
    const count = c0.metadata!.chunk_count as number;
    await store.upsert(ns, [
      { id: 'c.md#0', values: Array.from(c0.values), metadata: { ...c0.metadata, chunk_count: count + 1 } },
      { id: `c.md#${count}`, values: Array.from(c0.values), metadata: { ...c0.metadata, chunk_index: count, chunk_count: undefined } },
    ] as never);
    await store.deleteIds(
      ns,
      fx.ids('kb', ns).filter((id) => id.startsWith('f.md#')),
    ); // f: gone

    const found = await run('p.yaml', 'verify', '--json');
    expect(found.code, found.stderr).toBe(1);
    expect(JSON.parse(found.stdout).streams.docs.counts).toEqual(
      driftCounts({ missing_documents: 1, deleted_documents: 1, missing_chunks: 1, orphaned_chunks: 1 }),
    );
    expect((await run('p.yaml', 'verify', '--repair')).code).toBe(1);
    const after = await run('p.yaml', 'verify', '--json');
    expect(after.code, after.stdout).toBe(0);

    expect((await run('fresh.yaml', 'sync')).code).toBe(0);
    const content = (index: string) => {
      const n = fx.namespaceNames(index).find((x) => x.startsWith('docs'))!;
      return fx
        .ids(index, n)
        .map((id) => JSON.stringify([id, fx.vector(index, n, id)!.metadata, Array.from(fx.vector(index, n, id)!.values)]))
        .sort();
    };
    expect(content('kb')).toEqual(content('kb-ref'));
  });

  it('repairs a chunk written by hand beyond the chunk count chunk 0 records (found by listing the id prefix)', async () => {
    const dir = tempDir();
    const dest = (index: string) =>
      `{ type: pinecone, config: { api_key: "${fx.apiKey}", index: ${index}, controller_host: "${fx.controllerUrl}", namespace: "beyond-{stream}" } }`;
    const run = corpus(dir, dest('kb'), dest('kb-ref'));
    expect((await run('p.yaml', 'sync')).code).toBe(0);
    const store = await PineconeStore.connect(
      PineconeConfigSchema.parse({ api_key: fx.apiKey, index: 'kb', controller_host: fx.controllerUrl }),
      ctx(),
    );
    const ns = 'beyond-docs';
    const c0 = fx.vector('kb', ns, 'c.md#0')!;
    const count = c0.metadata!.chunk_count as number;
    const { chunk_count: _count, ...rest } = c0.metadata!;
    // Out of reach of the count: chunk 0 still says `count`, the stray chunk is far beyond it.
    await store.upsert(ns, [{ id: 'c.md#99', values: Array.from(c0.values), metadata: { ...rest, chunk_index: 99 } }] as never);
    expect(fx.vector('kb', ns, 'c.md#0')!.metadata!.chunk_count).toBe(count);

    const found = await run('p.yaml', 'verify', '--json');
    expect(found.code, found.stderr).toBe(1);
    const report = JSON.parse(found.stdout).streams.docs;
    expect(report.counts).toMatchObject({ orphaned_chunks: 1, missing_chunks: 0, stale_chunks: 0, deleted_documents: 0 });
    expect(report.examples.orphaned_chunks).toEqual(['c.md']);
    const repaired = await run('p.yaml', 'verify', '--repair', '--json');
    expect(repaired.code).toBe(1);
    expect(JSON.parse(repaired.stdout).repair.docs).toMatchObject({ documents_rewritten: 1 });
    expect(fx.vector('kb', ns, 'c.md#99')).toBeUndefined();
    const after = await run('p.yaml', 'verify', '--json');
    expect(after.code, after.stdout).toBe(0);

    expect((await run('fresh.yaml', 'sync')).code).toBe(0);
    const content = (index: string) =>
      fx
        .ids(index, ns)
        .map((id) => JSON.stringify([id, fx.vector(index, ns, id)!.metadata, Array.from(fx.vector(index, ns, id)!.values)]))
        .sort();
    expect(content('kb')).toEqual(content('kb-ref'));
  });
});
