// `sluice reindex` on Qdrant (issue 15 §2) through the CLI into the Qdrant fixture: a model change is
// refused; the reindex loads a new generation behind the alias while a concurrent reader, querying
// the alias like an application, always sees one complete generation of exactly one model (vector
// size and embedder tag); cost is reported; --keep-previous keeps the replaced generation under
// `<collection>__sluice_previous` and --rollback swaps back with state and identity; a SIGKILLed
// reindex leaves the old generation serving and its leftover is dropped by the re-run; a crash right
// after the alias switch (before the engine records the new state) is refused by `sync` and
// converges with a re-run of the reindex.
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QdrantClient } from '@qdrant/js-client-rest';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runCli, startCli, STACK_LINE, tempDir } from '../helpers/cli.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { startQdrantFixture, type QdrantFixture } from '../fixtures/qdrant-server.ts';

const DOCS = 30;
let openai: OpenAIServer;
let fx: QdrantFixture;
let client: QdrantClient;
beforeAll(async () => {
  [openai, fx] = await Promise.all([startOpenAIServer({ latencyMs: 2 }), startQdrantFixture()]);
  client = new QdrantClient({ url: fx.url, checkCompatibility: false });
});
afterAll(async () => {
  await Promise.all([openai?.close(), fx?.close()]);
  expect(fx.violations).toEqual([]);
});

let projects = 0;
function project() {
  const dir = tempDir('sluice-reindex-qdrant-');
  const collection = `rq_${++projects}`;
  const corpus = join(dir, 'corpus');
  mkdirSync(corpus);
  const base = Math.floor(Date.now() / 1000) - 10_000;
  for (let i = 0; i < DOCS; i++) {
    const file = join(corpus, `doc-${String(i).padStart(3, '0')}.md`);
    writeFileSync(file, Array.from({ length: 2 + (i % 4) }, (_, p) => `Document ${i} talks about pumps, paragraph ${p}.`).join('\n\n'));
    utimesSync(file, base + i, base + i);
  }
  const write = (model: string, dims: number) =>
    writeFileSync(
      join(dir, 'p.yaml'),
      `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: corpus, stream: docs, checkpoint_every: 10 } }
    destination: { type: qdrant, config: { url: "${fx.url}", collection: ${collection}, batch_points: 8, buffer_points: 16 } }
    embedding: { provider: openai-compatible, base_url: "${openai.url}", api_key: test-key, model: ${model}, dimensions: ${dims}, price_per_million_tokens: 1000000 }
    processing: { chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`,
    );
  const yaml = join(dir, 'p.yaml');
  const cli = (cmd: string, ...args: string[]) => runCli([cmd, yaml, ...args], { cwd: dir });
  const index = () => JSON.parse(readFileSync(join(dir, '.sluice/state/docs.json'), 'utf8')).state.index;
  /** The sluice generations of this collection that exist (physical collections). */
  const generations = () => [...fx.collections.keys()].filter((n) => n.startsWith(`${collection}_`)).sort();
  return { dir, collection, write, cli, yaml, index, generations };
}

/** What a reader querying the alias sees in one request: vector sizes, embedder tags, documents, points. */
async function read(collection: string) {
  const { points } = await client.scroll(collection, {
    limit: 100_000,
    with_vector: true,
    with_payload: ['document_id', 'chunk_index', '_sluice_fp_embedder'],
  });
  const sizes = new Set(points.map((p) => (p.vector as number[]).length));
  const tags = new Set(points.filter((p) => p.payload?.chunk_index === 0).map((p) => String(p.payload?._sluice_fp_embedder)));
  const docs = new Set(points.map((p) => String(p.payload?.document_id)));
  return { sizes: [...sizes], tags: [...tags], docs: docs.size, points: points.length };
}

it(
  'model change refused; reindex switches with a concurrent reader seeing one complete model; cost; keep-previous and rollback',
  { timeout: 400_000 },
  async () => {
    const p = project();
    p.write('model-a', 16);
    const first = await p.cli('sync');
    expect(first.code, first.stderr).toBe(0);
    const before = await read(p.collection);
    expect(before).toMatchObject({ sizes: [16], tags: ['openai-compatible/model-a/16'], docs: DOCS });
    const original = fx.aliases.get(p.collection)!;

    p.write('model-b', 24);
    const refused = await p.cli('sync');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('model-a (16 dimensions) → openai-compatible model-b (24 dimensions)');
    expect(refused.stderr).not.toMatch(STACK_LINE);
    expect(fx.aliases.get(p.collection)).toBe(original);

    // The reader polls the alias for the whole run: every answer is one whole generation of one model.
    const seen: Awaited<ReturnType<typeof read>>[] = [];
    let reading = true;
    const reader = (async () => {
      while (reading) {
        seen.push(await read(p.collection));
        await new Promise((r) => setTimeout(r, 3));
      }
    })();
    const run = await p.cli('reindex', '--keep-previous', '--max-cost', '1000000', '--json');
    reading = false;
    await reader;
    expect(run.code, run.stderr).toBe(0);
    seen.push(await read(p.collection));
    for (const s of seen) {
      expect(s.sizes).toHaveLength(1);
      expect(s.tags).toEqual([s.sizes[0] === 16 ? 'openai-compatible/model-a/16' : 'openai-compatible/model-b/24']);
      expect(s.docs).toBe(DOCS);
      expect(s.points).toBe(before.points);
    }
    expect(seen.some((s) => s.sizes[0] === 16)).toBe(true); // the old model served while the new one loaded
    expect(seen.at(-1)!.sizes).toEqual([24]);

    // Cost (with --max-cost): $1 a token, so the cost is the tokens the run sent.
    const summary = JSON.parse(run.stdout);
    const docs = summary.connections[0].streams.docs;
    expect(docs.records_read).toBe(DOCS);
    expect(docs.embedding_tokens).toBeGreaterThan(0);
    expect(summary.connections[0].cost).toMatchObject({ spent_usd: docs.embedding_tokens, stopped: false });

    const reindexed = fx.aliases.get(p.collection)!;
    expect(reindexed).not.toBe(original);
    expect(fx.aliases.get(`${p.collection}__sluice_previous`)).toBe(original);
    expect(p.index()).toMatchObject({ model: 'model-b', dimensions: 24, previous: { index: { model: 'model-a' } } });
    const synced = await p.cli('sync', '--json');
    expect(synced.code, synced.stderr).toBe(0);
    expect(JSON.parse(synced.stdout).connections[0].streams.docs.embedding_requests).toBe(0);

    // Rollback: the aliases swap in one request; state and identity are model-a's again.
    const back = await p.cli('reindex', '--rollback');
    expect(back.code, back.stderr).toBe(0);
    expect(fx.aliases.get(p.collection)).toBe(original);
    expect(fx.aliases.get(`${p.collection}__sluice_previous`)).toBe(reindexed);
    expect(await read(p.collection)).toMatchObject({ sizes: [16], tags: ['openai-compatible/model-a/16'], docs: DOCS });
    expect(p.index()).toMatchObject({ model: 'model-a', dimensions: 16 });
    p.write('model-a', 16);
    const again = await p.cli('sync', '--json');
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).connections[0].streams.docs.records_read).toBe(0); // the restored state

    // Forward again with --keep-previous: the older kept generation goes; one kept, one served.
    p.write('model-b', 24);
    const forward = await p.cli('reindex', '--keep-previous');
    expect(forward.code, forward.stderr).toBe(0);
    expect(fx.aliases.get(`${p.collection}__sluice_previous`)).toBe(original);
    expect(p.generations()).toEqual([original, fx.aliases.get(p.collection)!].sort());
    // Without --keep-previous nothing is kept and rollback says so.
    const plain = await p.cli('reindex');
    expect(plain.code, plain.stderr).toBe(0);
    expect(fx.aliases.has(`${p.collection}__sluice_previous`)).toBe(false);
    expect(p.generations()).toEqual([fx.aliases.get(p.collection)!]);
    const none = await p.cli('reindex', '--rollback');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('nothing to roll back to');
  },
);

it('a SIGKILLed reindex leaves the old generation serving; the re-run drops the leftover and completes', { timeout: 300_000 }, async () => {
  const p = project();
  p.write('model-a', 16);
  expect((await p.cli('sync')).code).toBe(0);
  const original = fx.aliases.get(p.collection)!;
  const before = await read(p.collection);
  const indexBefore = p.index();

  p.write('model-b', 24);
  const { child, done } = startCli(['reindex', p.yaml], { cwd: p.dir });
  // Killed at its second write into the new generation: mid-load, the first points landed.
  let upserts = 0;
  fx.setFaults({
    failWhen: (op) => {
      if (op !== 'PUT /collections/{collection_name}/points' || !p.generations().some((g) => g !== original)) return false;
      if (++upserts < 2) return false;
      child.kill('SIGKILL');
      return true;
    },
  });
  const run = await done;
  fx.setFaults(undefined);
  expect(run.signal).toBe('SIGKILL');
  const leftover = p.generations().filter((g) => g !== original);
  expect(leftover).toHaveLength(1);
  expect(fx.pointsOf(leftover[0]).length).toBeGreaterThan(0);
  expect(fx.aliases.get(p.collection)).toBe(original);
  expect(await read(p.collection)).toEqual(before);
  expect(p.index()).toEqual(indexBefore);
  expect((await p.cli('sync')).code).toBe(2); // the identity is still model-a's: the new model is refused

  const rerun = await p.cli('reindex');
  expect(rerun.code, rerun.stderr).toBe(0);
  expect(await read(p.collection)).toMatchObject({ sizes: [24], tags: ['openai-compatible/model-b/24'], docs: DOCS });
  expect(p.generations()).toEqual([fx.aliases.get(p.collection)!]); // leftover and old generation gone
  expect(p.index()).toMatchObject({ model: 'model-b' });
  expect((await p.cli('sync')).code).toBe(0);
});

it(
  'a crash right after the alias switch (state not recorded yet): sync refuses, a re-run of reindex converges',
  { timeout: 300_000 },
  async () => {
    const p = project();
    p.write('model-a', 16);
    expect((await p.cli('sync')).code).toBe(0);
    const original = fx.aliases.get(p.collection)!;
    const indexBefore = p.index();

    p.write('model-b', 24);
    const { child, done } = startCli(['reindex', p.yaml], { cwd: p.dir });
    // The request after the switch is the drop of the replaced generation: the process dies there,
    // after the alias moved and before the engine recorded the new state and identity.
    fx.setFaults({
      failWhen: (op) => {
        if (op !== 'DELETE /collections/{collection_name}' || fx.aliases.get(p.collection) === original) return false;
        child.kill('SIGKILL');
        return true;
      },
    });
    const run = await done;
    fx.setFaults(undefined);
    expect(run.signal).toBe('SIGKILL');
    // Readers already get the new generation, whole and of one model.
    expect(await read(p.collection)).toMatchObject({ sizes: [24], tags: ['openai-compatible/model-b/24'], docs: DOCS });
    expect(p.index()).toEqual(indexBefore); // not recorded
    const refused = await p.cli('sync');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('sluice reindex');

    const rerun = await p.cli('reindex', '--json');
    expect(rerun.code, rerun.stderr).toBe(0);
    // Vectors come from the embedding cache: the re-run pays nothing again.
    expect(JSON.parse(rerun.stdout).connections[0].streams.docs.embedding_requests).toBe(0);
    expect(await read(p.collection)).toMatchObject({ sizes: [24], tags: ['openai-compatible/model-b/24'], docs: DOCS });
    expect(p.generations()).toEqual([fx.aliases.get(p.collection)!]);
    expect(p.index()).toMatchObject({ model: 'model-b', dimensions: 24 });
    const synced = await p.cli('sync', '--json');
    expect(synced.code, synced.stderr).toBe(0);
  },
);

it(
  'a rollback interrupted after the alias swap: sync refuses to mix models (same vector size), reindex converges',
  { timeout: 300_000 },
  async () => {
    const p = project();
    p.write('model-a', 16);
    expect((await p.cli('sync')).code).toBe(0);
    p.write('model-b', 16);
    const run = await p.cli('reindex', '--keep-previous');
    expect(run.code, run.stderr).toBe(0);
    const current = fx.aliases.get(p.collection)!;
    const kept = fx.aliases.get(`${p.collection}__sluice_previous`)!;
    // What --rollback's alias request does, without the state update that follows it (the crash).
    await client.updateCollectionAliases({
      actions: [
        { delete_alias: { alias_name: p.collection } },
        { create_alias: { alias_name: p.collection, collection_name: kept } },
        { delete_alias: { alias_name: `${p.collection}__sluice_previous` } },
        { create_alias: { alias_name: `${p.collection}__sluice_previous`, collection_name: current } },
      ],
    });
    expect(p.index()).toMatchObject({ model: 'model-b' });
    const mark = fx.log.length;
    const refused = await p.cli('sync');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(
      'holds vectors of openai-compatible/model-a/16, but this connection embeds with openai-compatible/model-b/16',
    );
    expect(refused.stderr).not.toMatch(STACK_LINE);
    expect(fx.log.slice(mark).filter((l) => /^(PUT|DELETE)|points\/(delete|batch|payload)$/.test(l.operation))).toEqual([]);
    expect(await read(p.collection)).toMatchObject({ sizes: [16], tags: ['openai-compatible/model-a/16'], docs: DOCS });
    // A second --rollback refuses too: the kept generation is not the model it would restore.
    const again = await p.cli('reindex', '--rollback');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('nothing was changed');
    expect(fx.aliases.get(p.collection)).toBe(kept);

    const rerun = await p.cli('reindex');
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(await read(p.collection)).toMatchObject({ sizes: [16], tags: ['openai-compatible/model-b/16'], docs: DOCS });
    expect(p.generations()).toEqual([fx.aliases.get(p.collection)!]);
    expect((await p.cli('sync')).code).toBe(0);
  },
);
