// Issue 15 §1, engine side: documents that did not change are neither chunked, embedded nor
// written; a metadata-only change is written without embedding; a change made and undone within
// one run is never compared with a stale stored fingerprint; full refresh + append_dedup deletes
// what the source no longer has after a complete read only, within processing.max_delete_share.
// Through the real CLI, with a custom destination implementing the contract with the public kit
// (test/helpers/fingerprint-destination.ts) and a counting OpenAI-compatible embedding server.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, runCli, startCli, STACK_LINE, tempDir } from '../helpers/cli.ts';
import { readLog, readStore, type StoreFile } from '../helpers/fingerprint-destination.ts';
import type { ScriptStep } from '../helpers/scripted-source.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';

const KEY = 'sk-fingerprints-test-0000';
let openai: OpenAIServer;
beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 1 });
});
afterAll(() => openai?.close());

const modulePath = (dir: string, file: string) => {
  const rel = relative(dir, join(REPO, 'test/helpers', file));
  return rel.startsWith('.') ? rel : `./${rel}`;
};

interface PipelineOptions {
  source?: string;
  mode?: 'append_dedup' | 'overwrite' | 'append';
  syncMode?: 'full_refresh' | 'incremental';
  fingerprints?: boolean;
  embedder?: 'openai' | 'hash';
  processing?: string;
  stream?: string;
}

function pipeline(dir: string, o: PipelineOptions = {}): string {
  const source = o.source ?? `{ type: ${modulePath(dir, 'scripted-source.ts')}, config: { script: ./script.json } }`;
  const embedding =
    o.embedder === 'hash'
      ? '{ provider: hash, dimensions: 16 }'
      : `{ provider: openai-compatible, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: 16, batch_size: 16, price_per_million_tokens: 0.02 }`;
  const file = join(dir, 'p.yaml');
  writeFileSync(
    file,
    `version: 1
connections:
  - name: fp
    source: ${source}
    destination: { type: ${modulePath(dir, 'fingerprint-destination.ts')}, config: { path: ./store.json, fingerprints: ${o.fingerprints ?? true} } }
    embedding: ${embedding}
    processing: ${o.processing ?? '{ text_fields: [body], metadata_fields: [title], chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }'}
    streams: [ { name: ${o.stream ?? 'items'}, sync_mode: ${o.syncMode ?? 'full_refresh'}, destination_sync_mode: ${o.mode ?? 'append_dedup'} } ]
`,
  );
  return file;
}

const body = (i: number, v = 1) =>
  `Item ${i} describes pump ${i} in version ${v}. It moves water from basin ${i % 4} to tank ${i % 3}, quietly and reliably.`;
const items = (n: number, v: (i: number) => number = () => 1, title: (i: number) => string = (i) => `title ${i}`): ScriptStep[] =>
  Array.from({ length: n }, (_, k) => ({ id: k + 1, title: title(k + 1), body: body(k + 1, v(k + 1)) }));
const withStates = (steps: ScriptStep[], every = 10): ScriptStep[] =>
  steps.flatMap((s, i) => ((i + 1) % every === 0 ? [s, { state: true } as const] : [s]));

const script = (dir: string, steps: ScriptStep[]) => writeFileSync(join(dir, 'script.json'), JSON.stringify(steps));

type Stats = Record<string, number | string | undefined>;
type Summary = {
  status: string;
  connections: Array<{
    status: string;
    error?: { message: string; hint?: string; where?: string };
    streams: Record<string, Stats>;
    plan?: Record<string, number>;
  }>;
};

async function sync(dir: string, args: string[] = [], expectCode = 0): Promise<Summary> {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json', ...args], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
  expect(r.code, r.stderr + r.stdout).toBe(expectCode);
  expect(r.stderr).not.toMatch(STACK_LINE);
  return JSON.parse(r.stdout) as Summary;
}

/** The store as comparable text per document: fingerprint, chunk hashes, metadata, vector presence. */
const contents = (store: StoreFile, stream = 'items') =>
  Object.fromEntries(
    Object.entries(store.live[stream] ?? {})
      .sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))
      .map(([id, d]) => [id, JSON.stringify([d.fingerprint ?? null, d.chunks.map((c) => [c.id, c.contentHash, c.metadata, c.vector])])]),
  );
const texts = (store: StoreFile, stream = 'items') =>
  Object.fromEntries(Object.entries(store.live[stream] ?? {}).map(([id, d]) => [id, d.chunks.map((c) => c.content).join('')]));
const lookups = (dir: string) =>
  existsSync(join(dir, 'store.json.lookups')) ? readFileSync(join(dir, 'store.json.lookups'), 'utf8').split('\n').filter(Boolean) : [];

describe('unchanged documents', () => {
  it('an unchanged re-sync sends 0 embedding requests and writes 0 chunks; one change re-embeds only that document', async () => {
    const dir = tempDir('sluice-fp-');
    pipeline(dir);
    script(dir, withStates(items(40)));
    const first = (await sync(dir)).connections[0].streams.items;
    expect(first.records_written).toBe(40);
    expect(first.records_unchanged).toBe(0);
    expect(first.embedding_requests).toBeGreaterThan(0);
    const stored = readStore(join(dir, 'store.json'));
    expect(Object.keys(stored.live.items)).toHaveLength(40);
    for (const d of Object.values(stored.live.items)) {
      expect(d.fingerprint?.content).toMatch(/^[0-9a-f]{64}$/);
      expect(d.chunks.every((c) => c.vector)).toBe(true);
    }
    const batches = readLog(join(dir, 'store.json')).length;
    const requests = openai.stats.requests;

    const again = (await sync(dir)).connections[0].streams.items;
    expect(again).toMatchObject({
      records_read: 40,
      records_unchanged: 40,
      records_metadata_updated: 0,
      records_written: 0,
      chunks_written: 0,
      embedding_requests: 0,
      embedding_cache_hits: 0, // not even a cache look-up: nothing was chunked
      records_deleted: 0,
    });
    expect(openai.stats.requests).toBe(requests);
    expect(readLog(join(dir, 'store.json'))).toHaveLength(batches); // the destination got no write at all
    expect(contents(readStore(join(dir, 'store.json')))).toEqual(contents(stored));
    // Batched look-ups: one per checkpoint-delimited batch, never one per document.
    expect(lookups(dir).length).toBeLessThanOrEqual(2 * 5);

    script(dir, withStates(items(40, (i) => (i === 7 ? 2 : 1))));
    const one = (await sync(dir)).connections[0].streams.items;
    expect(one).toMatchObject({ records_unchanged: 39, records_written: 1 });
    // Only document 7 was chunked (a chunk of it whose text did not change comes from the cache).
    expect(Number(one.embedding_cache_hits)).toBeLessThan(readStore(join(dir, 'store.json')).live.items[7].chunks.length);
    expect(one.embedding_requests).toBeGreaterThan(0);
    // (The chunks of a text, joined, are the text without the spaces they were cut at.)
    expect(texts(readStore(join(dir, 'store.json')))['7'].replace(/\s/g, '')).toBe(body(7, 2).replace(/\s/g, ''));
    const log = readLog(join(dir, 'store.json')).slice(batches).flat();
    expect(log.map((o) => `${o.type} ${o.documentId}`)).toEqual(['DOCUMENT 7']);
  }, 120_000);

  it('a change in metadata only is written without embedding (0 requests), keeping the stored vectors', async () => {
    const dir = tempDir('sluice-fp-meta-');
    pipeline(dir);
    script(dir, withStates(items(30)));
    await sync(dir);
    const before = readStore(join(dir, 'store.json'));
    const batches = readLog(join(dir, 'store.json')).length;
    const requests = openai.stats.requests;

    const retitled = new Set([3, 11, 12, 29]);
    script(
      dir,
      withStates(
        items(
          30,
          () => 1,
          (i) => (retitled.has(i) ? `new title ${i}` : `title ${i}`),
        ),
      ),
    );
    const s = (await sync(dir)).connections[0].streams.items;
    expect(s).toMatchObject({ records_metadata_updated: 4, records_unchanged: 26, embedding_requests: 0, embedding_cache_hits: 0 });
    expect(openai.stats.requests).toBe(requests);
    const ops = readLog(join(dir, 'store.json')).slice(batches).flat();
    expect(ops.map((o) => Number(o.documentId)).sort((a, b) => a - b)).toEqual([...retitled]);
    for (const o of ops) expect(o).toMatchObject({ type: 'DOCUMENT', metadataOnly: true, embedded: 0 });
    const after = readStore(join(dir, 'store.json'));
    for (const id of retitled) {
      expect(after.live.items[id].chunks.map((c) => c.metadata.title)).toEqual(after.live.items[id].chunks.map(() => `new title ${id}`));
      expect(after.live.items[id].chunks.map((c) => [c.contentHash, c.vector])).toEqual(
        before.live.items[id].chunks.map((c) => [c.contentHash, true]),
      );
      expect(after.live.items[id].fingerprint!.content).toBe(before.live.items[id].fingerprint!.content);
      expect(after.live.items[id].fingerprint!.metadata).not.toBe(before.live.items[id].fingerprint!.metadata);
    }
    // And the next run sees the new metadata as stored: nothing to do.
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_unchanged: 30, records_metadata_updated: 0 });
  }, 120_000);

  it('a changed processing setting or embedding model changes every fingerprint', async () => {
    const dir = tempDir('sluice-fp-settings-');
    pipeline(dir, { embedder: 'hash' });
    script(dir, withStates(items(12)));
    await sync(dir);
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_unchanged: 12 });
    pipeline(dir, {
      embedder: 'hash',
      processing: '{ text_fields: [body], metadata_fields: [title], chunk_size: 50, chunk_overlap: 0, chunk_unit: characters }',
    });
    // A sync refuses a changed index identity before any write (docs/embeddings.md, `sluice reindex`)…
    const refused = await sync(dir, [], 2);
    expect(refused.connections[0].error?.message).toMatch(/processing\.chunk_size: 60 → 50/);
    // …and once the connection starts afresh (its state, identity included, reset), no stored
    // fingerprint matches the new settings: every document is sent again.
    const reset = async () => {
      const r = await runCli(['state', 'reset', join(dir, 'p.yaml'), '--connection', 'fp'], { cwd: dir });
      expect(r.code, r.stderr + r.stdout).toBe(0);
    };
    await reset();
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_unchanged: 0, records_written: 12 });
    writeFileSync(join(dir, 'p.yaml'), readFileSync(join(dir, 'p.yaml'), 'utf8').replace('dimensions: 16', 'dimensions: 24'));
    await sync(dir, [], 2);
    await reset();
    // (A new vector size is this test destination's business; the engine sends every document again.)
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_unchanged: 0, records_written: 12 });
  }, 120_000);

  it('overwrite: an unchanged generation is all KEEPs, nothing embedded; a changed document is written', async () => {
    const dir = tempDir('sluice-fp-ow-');
    pipeline(dir, { mode: 'overwrite' });
    script(dir, withStates(items(25)));
    await sync(dir);
    const before = readStore(join(dir, 'store.json'));
    const batches = readLog(join(dir, 'store.json')).length;
    const requests = openai.stats.requests;
    script(dir, withStates(items(25, (i) => (i === 5 ? 2 : 1))));
    const s = (await sync(dir)).connections[0].streams.items;
    expect(s).toMatchObject({ records_unchanged: 24 });
    expect(Number(s.embedding_cache_hits)).toBeLessThan(readStore(join(dir, 'store.json')).live.items[5].chunks.length);
    const ops = readLog(join(dir, 'store.json')).slice(batches).flat();
    expect(ops.filter((o) => o.type === 'KEEP')).toHaveLength(24);
    expect(ops.filter((o) => o.type === 'DOCUMENT').map((o) => o.documentId)).toEqual(['5']);
    expect(openai.stats.requests).toBeGreaterThan(requests); // document 5 only
    const after = readStore(join(dir, 'store.json'));
    expect(Object.keys(after.live.items)).toHaveLength(25);
    const { 5: changed, ...rest } = contents(after);
    const { 5: old, ...restBefore } = contents(before);
    expect(rest).toEqual(restBefore);
    expect(changed).not.toEqual(old);
  }, 120_000);
});

describe('changes within one run are never compared with a stale stored fingerprint', () => {
  it('A→B→A and delete→re-add, with and without a commit in between, end as the source says', async () => {
    const dir = tempDir('sluice-fp-aba-');
    pipeline(dir, { embedder: 'hash' });
    script(dir, withStates(items(20)));
    await sync(dir);
    const original = texts(readStore(join(dir, 'store.json')));
    const batches = readLog(join(dir, 'store.json')).length;
    // No checkpoint between the steps of 1 and 2 (one batch, nothing committed); a checkpoint between those of 3 and 4.
    const v1 = items(20);
    const steps: ScriptStep[] = [
      { id: 1, title: 'title 1', body: body(1, 2) },
      { id: 1, title: 'title 1', body: body(1, 1) },
      { delete: 2 },
      { id: 2, title: 'title 2', body: body(2, 1) },
      { id: 3, title: 'title 3', body: body(3, 2) },
      { delete: 4 },
      { state: true },
      { id: 3, title: 'title 3', body: body(3, 1) },
      { id: 4, title: 'title 4', body: body(4, 1) },
      ...v1.slice(4),
      { state: true },
    ];
    script(dir, steps);
    const s = (await sync(dir)).connections[0].streams.items;
    const store = readStore(join(dir, 'store.json'));
    expect(texts(store)).toEqual(original);
    expect(s.records_unchanged).toBe(16); // 5…20
    const ops = readLog(join(dir, 'store.json')).slice(batches).flat();
    expect(ops.map((o) => `${o.type} ${o.documentId}`)).toEqual([
      'DOCUMENT 1',
      'DOCUMENT 1',
      'DELETE 2',
      'DOCUMENT 2',
      'DOCUMENT 3',
      'DELETE 4',
      'DOCUMENT 3',
      'DOCUMENT 4',
    ]);
  }, 120_000);

  it('killed mid-run (SIGKILL), then run again: the store equals an uninterrupted run', async () => {
    // Many versions of few documents, so replays meet documents changed by the lost run.
    const steps: ScriptStep[] = [];
    for (let round = 0; round < 30; round++) {
      for (let i = 1; i <= 12; i++) {
        const v = (round * 7 + i) % 3;
        if ((round + i) % 11 === 0) steps.push({ delete: i });
        else steps.push({ id: i, title: `title ${i} ${(round + i) % 2}`, body: body(i, v) });
      }
      steps.push({ state: true });
    }
    const ref = tempDir('sluice-fp-ref-');
    pipeline(ref, { embedder: 'hash', syncMode: 'incremental' });
    script(ref, steps);
    await sync(ref);
    const expected = contents(readStore(join(ref, 'store.json')));

    const dir = tempDir('sluice-fp-kill-');
    pipeline(dir, {
      embedder: 'hash',
      syncMode: 'incremental',
      source: `{ type: ${modulePath(dir, 'scripted-source.ts')}, config: { script: ./script.json, delay_ms: 8 } }`,
    });
    script(dir, steps);
    let midway = 0;
    for (let trial = 0; trial < 3; trial++) {
      const run = startCli(['sync', join(dir, 'p.yaml')], { cwd: dir });
      const log = join(dir, 'store.json.log');
      const seen = existsSync(log) ? readFileSync(log, 'utf8').split('\n').length : 0;
      for (let i = 0; i < 1000 && (!existsSync(log) || readFileSync(log, 'utf8').split('\n').length < seen + 3); i++) await sleep(10);
      await sleep(Math.random() * 100);
      run.child.kill('SIGKILL');
      const r = await run.done;
      if (r.signal === 'SIGKILL') midway++;
    }
    expect(midway).toBeGreaterThan(0);
    pipeline(dir, { embedder: 'hash', syncMode: 'incremental' });
    await sync(dir);
    expect(contents(readStore(join(dir, 'store.json')))).toEqual(expected);
  }, 180_000);
});

describe('full refresh deletion detection (mark and sweep)', () => {
  let sourceUrl: string;
  beforeAll(async () => {
    sourceUrl = await createDatabase(inject('pgUrl'), 'fp_sweep_src');
    await sql(sourceUrl, `CREATE TABLE notes (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL)`);
    await sql(
      sourceUrl,
      `INSERT INTO notes SELECT i, 'note ' || i, 'Note ' || i || ' explains how valve ' || i || ' regulates basin ' || (i % 5) || '.' FROM generate_series(1, 60) i`,
    );
  });

  it('a postgres full_refresh + append_dedup deletes the rows that are gone, once, after a complete read', async () => {
    const dir = tempDir('sluice-fp-pg-');
    pipeline(dir, { embedder: 'hash', stream: 'notes', source: `{ type: postgres, config: { url: "${sourceUrl}", batch_size: 7 } }` });
    const first = (await sync(dir)).connections[0].streams.notes;
    expect(first.records_written).toBe(60);
    await sql(sourceUrl, `DELETE FROM notes WHERE id IN (5, 17, 42)`);
    await sql(sourceUrl, `UPDATE notes SET body = body || ' Updated.' WHERE id = 8`);
    const s = (await sync(dir)).connections[0].streams.notes;
    expect(s).toMatchObject({ records_read: 57, records_deleted: 3, records_unchanged: 56, records_written: 4 }); // 1 update + 3 deletes
    const ids = Object.keys(readStore(join(dir, 'store.json')).live.notes).map(Number);
    expect(ids).toHaveLength(57);
    expect(ids).not.toContain(5);
    expect(ids).not.toContain(42);
    // Nothing more to delete the next time.
    expect((await sync(dir)).connections[0].streams.notes).toMatchObject({ records_deleted: 0, records_unchanged: 57, records_written: 0 });
  }, 120_000);

  it('the listing answers the skip decisions too: once it is complete, documents are not looked up; a repeated id is', async () => {
    const dir = tempDir('sluice-fp-listed-');
    pipeline(dir, { embedder: 'hash' });
    script(dir, withStates(items(40)));
    await sync(dir);
    const stored = contents(readStore(join(dir, 'store.json')));
    // Read slowly, so the listing (read at the first document) is complete long before the end;
    // document 7 comes changed at its place and again, as it was, at the end.
    pipeline(dir, {
      embedder: 'hash',
      source: `{ type: ${modulePath(dir, 'scripted-source.ts')}, config: { script: ./script.json, delay_ms: 15 } }`,
    });
    script(dir, withStates([...items(40, (i) => (i === 7 ? 2 : 1)), ...items(40).filter((s) => 'id' in s && s.id === 7)]));
    const before = lookups(dir).length;
    const s = (await sync(dir)).connections[0].streams.items;
    expect(s).toMatchObject({ records_read: 41, records_unchanged: 39, records_written: 2, records_deleted: 0 });
    // Looked up: at most the first batch (read before the listing was complete) and document 7's second occurrence.
    const lookedUp = lookups(dir)
      .slice(before)
      .reduce((n, line) => n + Number(line.split(' ')[1]), 0);
    expect(lookedUp).toBeLessThanOrEqual(6);
    // The last version of 7 is what the source has now: the store is as before.
    expect(contents(readStore(join(dir, 'store.json')))).toEqual(stored);
  }, 120_000);

  it('an interrupted read deletes nothing (SIGINT and SIGKILL mid-stream)', async () => {
    const dir = tempDir('sluice-fp-int-');
    pipeline(dir, { embedder: 'hash' });
    script(dir, withStates(items(40)));
    await sync(dir);
    // The source now has only the first 30 documents, read slowly.
    pipeline(dir, {
      embedder: 'hash',
      source: `{ type: ${modulePath(dir, 'scripted-source.ts')}, config: { script: ./script.json, delay_ms: 60, progress_file: ./progress } }`,
    });
    script(dir, withStates(items(30)));
    const progress = () => (existsSync(join(dir, 'progress')) ? readFileSync(join(dir, 'progress'), 'utf8').split('\n').length - 1 : 0);
    for (const signal of ['SIGINT', 'SIGKILL'] as const) {
      rmSync(join(dir, 'progress'), { force: true });
      const run = startCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir });
      // Mid-stream: a few records have been read.
      for (let i = 0; i < 1500 && progress() < 3; i++) await sleep(10);
      run.child.kill(signal);
      const r = await run.done;
      if (signal === 'SIGINT') {
        expect(r.code, r.stderr).toBe(130);
        const summary = JSON.parse(r.stdout) as Summary;
        expect(summary.status).toBe('interrupted');
        expect(summary.connections[0].streams.items.records_read).toBeLessThan(30);
        expect(summary.connections[0].streams.items.records_deleted).toBe(0);
      } else expect(r.signal).toBe('SIGKILL');
      expect(Object.keys(readStore(join(dir, 'store.json')).live.items)).toHaveLength(40);
    }
    // A complete read then deletes the 10.
    pipeline(dir, { embedder: 'hash' });
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_deleted: 10, records_unchanged: 30 });
    expect(Object.keys(readStore(join(dir, 'store.json')).live.items)).toHaveLength(30);
  }, 180_000);

  it('refuses to delete more than processing.max_delete_share of the stored documents, and deletes nothing', async () => {
    const dir = tempDir('sluice-fp-guard-');
    pipeline(dir, { embedder: 'hash' });
    script(dir, withStates(items(40)));
    await sync(dir);
    script(dir, withStates(items(12)));
    const failed = await sync(dir, [], 1);
    const err = failed.connections[0].error!;
    expect(err.message).toContain('no longer has 28 of the 40 stored documents (70%)');
    expect(err.message).toContain('processing.max_delete_share (0.5)');
    expect(err.hint).toContain('raise processing.max_delete_share');
    expect(err.where).toBe('connections[0].processing.max_delete_share');
    expect(Object.keys(readStore(join(dir, 'store.json')).live.items)).toHaveLength(40);
    // The dry run says the same, without writing.
    await sync(dir, ['--dry-run'], 1);
    pipeline(dir, {
      embedder: 'hash',
      processing:
        '{ text_fields: [body], metadata_fields: [title], chunk_size: 60, chunk_overlap: 0, chunk_unit: characters, max_delete_share: 0.8 }',
    });
    expect((await sync(dir)).connections[0].streams.items).toMatchObject({ records_deleted: 28 });
    expect(Object.keys(readStore(join(dir, 'store.json')).live.items)).toHaveLength(12);
  }, 120_000);

  it('the file source: a vanished file is deleted once (its own deletion and the sweep are not both counted)', async () => {
    const dir = tempDir('sluice-fp-file-');
    for (let i = 0; i < 8; i++) writeFileSync(join(dir, `d${i}.md`), `# Doc ${i}\n\n${body(i)}\n`);
    pipeline(dir, {
      embedder: 'hash',
      stream: 'docs',
      processing: '{ chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }',
      source: `{ type: file, config: { path: ., include: ['*.md'], stream: docs } }`,
    });
    await sync(dir);
    expect(Object.keys(readStore(join(dir, 'store.json')).live.docs)).toHaveLength(8);
    const { rmSync } = await import('node:fs');
    rmSync(join(dir, 'd3.md'));
    const s = (await sync(dir)).connections[0].streams.docs;
    expect(s).toMatchObject({ records_deleted: 1, records_unchanged: 7 });
    const batches = readLog(join(dir, 'store.json')).flat();
    expect(batches.filter((o) => o.type === 'DELETE').map((o) => o.documentId)).toEqual(['d3.md']);
    expect(Object.keys(readStore(join(dir, 'store.json')).live.docs)).toHaveLength(7);
  }, 120_000);
});

describe('dry run and writers without fingerprints', () => {
  it('the dry run counts unchanged documents and leaves them out of chunks, tokens and cost to embed', async () => {
    const dir = tempDir('sluice-fp-dry-');
    pipeline(dir);
    script(dir, withStates(items(30)));
    const fresh = (await sync(dir, ['--dry-run'])).connections[0].plan!;
    expect(fresh).toMatchObject({ documents_unchanged: 0, documents_to_write: 30 });
    await sync(dir);
    script(
      dir,
      withStates(
        items(
          28,
          (i) => (i <= 2 ? 2 : 1),
          (i) => (i === 10 ? 'retitled' : `title ${i}`),
        ),
      ),
    );
    const requests = openai.stats.requests;
    const summary = await sync(dir, ['--dry-run']);
    const plan = summary.connections[0].plan!;
    const stream = summary.connections[0].streams.items;
    expect(plan).toMatchObject({ documents_unchanged: 25, documents_to_write: 3, documents_to_delete: 2 });
    expect(stream.documents_unchanged).toBe(25);
    expect(stream.documents_to_embed).toBe(2); // the retitled one keeps its vectors
    expect(plan.tokens_to_embed).toBeGreaterThan(0);
    expect(plan.tokens_to_embed).toBeLessThan(fresh.tokens_to_embed / 5);
    expect(plan.estimated_cost_usd).toBeLessThan(fresh.estimated_cost_usd / 5);
    expect(openai.stats.requests).toBe(requests);
    expect(Object.keys(readStore(join(dir, 'store.json')).live.items)).toHaveLength(30); // nothing written
  }, 120_000);

  it('a writer without fingerprints() gets every document in full, as before', async () => {
    const dir = tempDir('sluice-fp-none-');
    pipeline(dir, { embedder: 'hash', fingerprints: false, syncMode: 'incremental' });
    script(dir, withStates(items(15)));
    await sync(dir);
    const batches = readLog(join(dir, 'store.json')).length;
    // Incremental from its saved position: re-read everything by resetting the position.
    const s = (await sync(dir, ['--full-refresh'])).connections[0].streams.items;
    expect(s.records_written).toBe(15);
    expect(s).not.toHaveProperty('records_unchanged');
    expect(s).not.toHaveProperty('records_metadata_updated');
    const ops = readLog(join(dir, 'store.json')).slice(batches).flat();
    expect(ops).toHaveLength(15);
    for (const o of ops) expect(o).toMatchObject({ type: 'DOCUMENT', metadataOnly: false, embedded: o.chunks });
    expect(lookups(dir)).toEqual([]);
    for (const d of Object.values(readStore(join(dir, 'store.json')).live.items)) expect(d.fingerprint).toBeUndefined();
  }, 120_000);
});
