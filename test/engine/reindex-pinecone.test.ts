// `sluice reindex` on Pinecone through the CLI (file source, OpenAI-compatible fixture, Pinecone
// fixture validating every request and response against Pinecone's OpenAPI documents): a model
// change is refused by sync, then rebuilt in a fresh namespace generation while an application
// that follows the pointer record (as docs/pinecone.md tells it to) always sees one complete
// generation of exactly one model; --keep-previous + --rollback; a SIGKILL mid-load; a crash right
// after the switch, before the state was saved; a dimension change refused clearly.
import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pinecone } from '@pinecone-database/pinecone';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { startPineconeFixture, type PineconeFixture } from '../fixtures/pinecone-server.ts';

const KEY = 'sk-reindex-pinecone-0000';
const INDEX = 'reindex';
const DIMS = 16;
const FILES = 12;
const POINTERS = '__sluice_generations';
let openai: OpenAIServer;
let pfx: PineconeFixture;
let projects = 0;

beforeAll(async () => {
  [openai, pfx] = await Promise.all([startOpenAIServer({ latencyMs: 1 }), startPineconeFixture()]);
  await pfx.createIndex(INDEX, DIMS);
});
afterAll(async () => {
  await Promise.all([openai?.close(), pfx?.close()]);
  expect(pfx.violations).toEqual([]);
});

function project() {
  const dir = tempDir('sluice-reindex-pinecone-');
  const tag = `p${++projects}`;
  const files: Record<string, string> = {};
  for (let i = 0; i < FILES; i++)
    files[`docs/f${String(i).padStart(2, '0')}.md`] = `Note ${i} is about valves and pumps.\n\nIt has a second part ${i} on basins.`;
  writeFiles(dir, files);
  for (let i = 0; i < FILES; i++) {
    const t = new Date(Date.UTC(2026, 0, 1, 0, 0, i));
    utimesSync(join(dir, `docs/f${String(i).padStart(2, '0')}.md`), t, t);
  }
  const write = (model: string, dims = DIMS) =>
    writeFileSync(
      join(dir, 'p.yaml'),
      `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: { type: pinecone, config: { api_key: "\${TEST_PINECONE_KEY}", index: ${INDEX}, controller_host: ${pfx.controllerUrl}, namespace: "${tag}-{stream}", batch_size: 8, retry_initial_delay_ms: 5 } }
    embedding: { provider: openai-compatible, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: ${model}, dimensions: ${dims}, batch_size: 4 }
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`,
    );
  const env = { TEST_OPENAI_KEY: KEY, TEST_PINECONE_KEY: pfx.apiKey };
  const cli = (cmd: string, ...args: string[]) => runCli([cmd, join(dir, 'p.yaml'), ...args], { cwd: dir, env });
  const start = (cmd: string, ...args: string[]) => startCli([cmd, join(dir, 'p.yaml'), ...args], { cwd: dir, env });
  const state = () => JSON.parse(readFileSync(join(dir, '.sluice/state/docs.json'), 'utf8')).state;
  const logical = `${tag}-docs`;
  /** This project's namespaces in the index (generations), sorted. */
  const namespaces = () => pfx.namespaceNames(INDEX).filter((n) => n === logical || n.startsWith(`${logical}__`));
  const pointer = () => pfx.vector(INDEX, POINTERS, `ns:${logical}`)?.metadata as Record<string, unknown> | undefined;
  return { dir, write, cli, start, state, logical, namespaces, pointer };
}

/** The application's side, exactly as docs/pinecone.md shows it: resolve the pointer, then read that namespace. */
const app = () => new Pinecone({ apiKey: pfx.apiKey, controllerHostUrl: pfx.controllerUrl, maxRetries: 0 });
async function liveNamespace(client: Pinecone, logical: string): Promise<string> {
  const index = client.index({ host: `http://${pfx.indexes.get(INDEX)!.host}` });
  const res = await index.namespace(POINTERS).fetch({ ids: [`ns:${logical}`] });
  return (res.records[`ns:${logical}`]?.metadata?.current as string | undefined) ?? logical;
}

/**
 * What one reader sees in the live namespace: every document, whether each is complete (all chunks
 * below the chunk_count of its chunk 0 and nothing else), and the embedders their fingerprints name.
 */
async function snapshot(client: Pinecone, logical: string) {
  const index = client.index({ host: `http://${pfx.indexes.get(INDEX)!.host}` });
  const ns = await liveNamespace(client, logical);
  const ids: string[] = [];
  let token: string | undefined;
  do {
    const page = await index.namespace(ns).listPaginated({ limit: 100, ...(token ? { paginationToken: token } : {}) });
    ids.push(...(page.vectors ?? []).map((v) => v.id!));
    token = page.pagination?.next;
  } while (token);
  const byDoc = new Map<string, number[]>();
  for (const id of ids) {
    const at = id.lastIndexOf('#');
    const list = byDoc.get(id.slice(0, at)) ?? [];
    list.push(Number(id.slice(at + 1)));
    byDoc.set(id.slice(0, at), list);
  }
  const heads = byDoc.size ? (await index.namespace(ns).fetch({ ids: [...byDoc.keys()].map((d) => `${d}#0`) })).records : {};
  const embedders = new Set<string>();
  let complete = true;
  for (const [doc, chunks] of byDoc) {
    const md = heads[`${doc}#0`]?.metadata ?? {};
    embedders.add(String(md._sluice_fp_embedder));
    const count = md.chunk_count as number;
    if (chunks.length !== count || chunks.some((c) => c >= count)) complete = false;
  }
  return { ns, documents: byDoc.size, complete, embedders: [...embedders] };
}

describe('sluice reindex on Pinecone', () => {
  it(
    'model change: sync refuses, reindex --keep-previous switches while readers see one complete generation of one model, --rollback restores',
    { timeout: 400_000 },
    async () => {
      const p = project();
      p.write('model-a');
      const first = await p.cli('sync');
      expect(first.code, first.stderr).toBe(0);
      const client = app();
      const before = await snapshot(client, p.logical);
      expect(before).toEqual({ ns: p.logical, documents: FILES, complete: true, embedders: ['openai-compatible/model-a/16'] });
      const originalState = p.state();

      p.write('model-b');
      const refused = await p.cli('sync');
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('model-a');
      expect(refused.stderr).toContain('sluice reindex');
      expect(refused.stderr).not.toMatch(STACK_LINE);
      expect(p.namespaces()).toEqual([p.logical]);

      // Slow enough for the reader to look many times mid-load.
      pfx.setFaults({ latencyMs: 3 });
      const { done } = p.start('reindex', '--keep-previous');
      let finished = false;
      void done.then(() => (finished = true));
      const seen: Array<Awaited<ReturnType<typeof snapshot>>> = [];
      while (!finished) seen.push(await snapshot(client, p.logical));
      pfx.setFaults({});
      const run = await done;
      expect(run.code, run.stderr).toBe(0);
      seen.push(await snapshot(client, p.logical));
      expect(seen.length).toBeGreaterThan(3);
      for (const s of seen) {
        expect(s.complete).toBe(true);
        expect(s.documents).toBe(FILES);
        expect(s.embedders).toHaveLength(1);
      }
      expect(seen[0].embedders).toEqual(['openai-compatible/model-a/16']);
      expect(seen.at(-1)).toEqual({
        ns: `${p.logical}__sluice_gen1`,
        documents: FILES,
        complete: true,
        embedders: ['openai-compatible/model-b/16'],
      });
      expect(p.pointer()).toMatchObject({ current: `${p.logical}__sluice_gen1`, generation: 1, kept: p.logical });
      expect(String(p.pointer()!.embedder)).toContain('model-b');
      expect(p.namespaces()).toEqual([p.logical, `${p.logical}__sluice_gen1`]); // the old one kept for --rollback
      expect(p.state().index).toMatchObject({ model: 'model-b', previous: { index: { model: 'model-a' } } });
      const again = await p.cli('sync', '--json');
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).connections[0].streams.docs.records_read).toBe(0);
      const search = await p.cli('search', 'valves', '--json');
      expect(search.code, search.stderr).toBe(0);

      const back = await p.cli('reindex', '--rollback');
      expect(back.code, back.stderr).toBe(0);
      expect(await snapshot(client, p.logical)).toEqual(before);
      expect(p.pointer()).toMatchObject({ current: p.logical, generation: 1, kept: `${p.logical}__sluice_gen1` });
      expect(String(p.pointer()!.kept_embedder)).toContain('model-b');
      const { index, ...rest } = p.state();
      expect(rest).toEqual({ streams: originalState.streams });
      expect(index).toMatchObject({ model: 'model-a' });
      p.write('model-a');
      expect((await p.cli('sync')).code).toBe(0);

      // Another reindex without --keep-previous: a new generation number (never the kept one's), and
      // every replaced generation goes.
      p.write('model-b');
      const third = await p.cli('reindex');
      expect(third.code, third.stderr).toBe(0);
      expect(p.namespaces()).toEqual([`${p.logical}__sluice_gen2`]);
      expect(p.pointer()).not.toHaveProperty('kept');
      expect((await snapshot(client, p.logical)).embedders).toEqual(['openai-compatible/model-b/16']);
      expect((await p.cli('reindex', '--rollback')).code).toBe(2);
    },
  );

  it(
    'a SIGKILLed reindex leaves the old generation serving and the state as it was; a re-run completes',
    { timeout: 300_000 },
    async () => {
      const p = project();
      p.write('model-a');
      expect((await p.cli('sync')).code).toBe(0);
      const client = app();
      const before = await snapshot(client, p.logical);
      const originalState = p.state();

      p.write('model-b');
      pfx.setFaults({ latencyMs: 5 });
      const { child, done } = p.start('reindex');
      let killed = false;
      for (let i = 0; i < 4000 && !killed; i++) {
        if (pfx.ids(INDEX, `${p.logical}__sluice_gen1`).length > 0) {
          child.kill('SIGKILL');
          killed = true;
        } else await new Promise((r) => setTimeout(r, 5));
      }
      const run = await done;
      pfx.setFaults({});
      expect(killed).toBe(true);
      expect(run.signal).toBe('SIGKILL');
      expect(await snapshot(client, p.logical)).toEqual(before);
      expect(p.pointer()).toBeUndefined();
      expect(p.state()).toEqual(originalState);
      expect((await p.cli('sync')).code).toBe(2); // the new model is still refused

      const rerun = await p.cli('reindex');
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(await snapshot(client, p.logical)).toEqual({
        ns: `${p.logical}__sluice_gen1`,
        documents: FILES,
        complete: true,
        embedders: ['openai-compatible/model-b/16'],
      });
      expect(p.namespaces()).toEqual([`${p.logical}__sluice_gen1`]); // the partial load was cleared and reused, the old one removed
      expect(p.state().index).toMatchObject({ model: 'model-b' });
    },
  );

  it(
    'a crash right after the switch, before the state is saved: readers are on the new model, sync is refused, a re-run of reindex repairs',
    {
      timeout: 300_000,
    },
    async () => {
      const p = project();
      p.write('model-a');
      expect((await p.cli('sync')).code).toBe(0);
      const originalState = p.state();
      const client = app();

      p.write('model-b');
      // The pointer upsert is applied and never answered: the process is killed right after the switch.
      pfx.setFaults({
        holdAfterApplying: (operation, body) =>
          operation === 'POST /vectors/upsert' && (body as { namespace?: string }).namespace === POINTERS,
      });
      const heldBefore = pfx.held;
      const { child, done } = p.start('reindex', '--keep-previous');
      for (let i = 0; i < 6000 && pfx.held === heldBefore; i++) await new Promise((r) => setTimeout(r, 5));
      expect(pfx.held).toBe(heldBefore + 1);
      child.kill('SIGKILL');
      const run = await done;
      pfx.setFaults({});
      expect(run.signal).toBe('SIGKILL');

      // Readers: the new generation, complete, one model. The state: untouched (the old identity).
      expect(await snapshot(client, p.logical)).toMatchObject({
        documents: FILES,
        complete: true,
        embedders: ['openai-compatible/model-b/16'],
      });
      expect(p.state()).toEqual(originalState);
      const refused = await p.cli('sync');
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain('sluice reindex');
      // The state keeps no previous generation: nothing to roll back to (the kept namespace is not paired with a state).
      const rollback = await p.cli('reindex', '--rollback');
      expect(rollback.code).toBe(2);

      const inputs = openai.stats.inputs;
      const rerun = await p.cli('reindex');
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(openai.stats.inputs - inputs).toBe(0); // every text was embedded by the crashed run: all from the cache
      expect(await snapshot(client, p.logical)).toEqual({
        ns: `${p.logical}__sluice_gen2`,
        documents: FILES,
        complete: true,
        embedders: ['openai-compatible/model-b/16'],
      });
      expect(p.namespaces()).toEqual([`${p.logical}__sluice_gen2`]); // the crashed run's generations are gone
      expect(p.state().index).toMatchObject({ model: 'model-b' });
      const after = await p.cli('sync', '--json');
      expect(after.code, after.stderr).toBe(0);
      expect(JSON.parse(after.stdout).connections[0].streams.docs.records_read).toBe(0);
    },
  );

  it('a model of another dimension is refused clearly before anything is written', { timeout: 200_000 }, async () => {
    const p = project();
    p.write('model-a');
    expect((await p.cli('sync')).code).toBe(0);
    const writesBefore = pfx.requests.filter((r) => /upsert|delete|update/.test(r.path)).length;
    p.write('model-c', 24);
    const run = await p.cli('reindex');
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain('a reindex cannot change the vector size');
    expect(run.stderr).toContain('create a Pinecone index with dimension 24');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(pfx.requests.filter((r) => /upsert|delete|update/.test(r.path)).length).toBe(writesBefore);
    expect(p.namespaces()).toEqual([p.logical]);
    expect(p.pointer()).toBeUndefined();
  });
});
