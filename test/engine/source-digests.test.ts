// Source digests end to end (docs/fingerprints.md, "Source digests"): a custom source with
// `capabilities.sourceDigests` (test/helpers/digest-source.ts) into jsonl, through runSync with a
// counting embedding server. The first run stores every row's digest; an unchanged re-sync reads no
// row in full; changed, new and deleted rows are handled as in a full read; a settings change or an
// upgrade from documents stored without digests reads everything in full once.
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPipeline } from '../../src/config/load.ts';
import { runSync } from '../../src/engine/sync.ts';
import { verifyConnection } from '../../src/engine/verify.ts';
import { REPO, tempDir } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { digestOf, type DigestSourceLog } from '../helpers/digest-source.ts';
import { readStore } from '../helpers/fingerprint-destination.ts';
import { readListings } from '../helpers/light-listing-destination.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';

const KEY = 'sk-source-digests-0000';
let openai: OpenAIServer;
beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 1 });
  process.env.TEST_OPENAI_KEY = KEY;
});
afterAll(() => openai?.close());

type Row = { id: number; title: string; body: string };
const row = (i: number, body = `Item ${i} describes valve ${i}. It opens towards basin ${i % 5} and closes slowly.`): Row => ({
  id: i,
  title: `title ${i}`,
  body,
});
const N = 20;

interface Setup {
  source?: 'digest-source.ts' | 'digest-source-plain.ts';
  metadataFields?: string[];
  /** Also read stream `others` into an overwrite stream (not swept). */
  others?: boolean;
  failAfter?: number;
  /** A destination (YAML flow mapping) instead of jsonl. */
  destination?: string;
  /** The source never asks for digests (digest-source.ts `ignore_digests`). */
  ignoreDigests?: boolean;
}

function pipeline(dir: string, s: Setup = {}) {
  let source = relative(dir, join(REPO, 'test/helpers', s.source ?? 'digest-source.ts'));
  if (!source.startsWith('.')) source = `./${source}`;
  const fail = (s.failAfter === undefined ? '' : `, fail_after: ${s.failAfter}`) + (s.ignoreDigests ? ', ignore_digests: true' : '');
  writeFileSync(
    join(dir, 'p.yaml'),
    `version: 1
connections:
  - name: digests
    source: { type: ${source}, config: { rows: ./rows.json, log: ./log.jsonl${fail} } }
    destination: ${s.destination ?? '{ type: jsonl, config: { path: ./out/chunks.jsonl, include_embeddings: true } }'}
    embedding: { provider: openai-compatible, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: 8, batch_size: 16 }
    processing: { text_fields: [body], metadata_fields: ${JSON.stringify(s.metadataFields ?? ['title'])}, chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }
    streams:
      - { name: items, sync_mode: full_refresh, destination_sync_mode: append_dedup }
${s.others ? '      - { name: others, sync_mode: full_refresh, destination_sync_mode: overwrite }\n' : ''}`,
  );
}

const writeRows = (dir: string, rows: Row[]) => writeFileSync(join(dir, 'rows.json'), JSON.stringify(rows));
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** One sync: its status, the per-stream stats, what the source logged and the embedding requests it made. */
async function sync(dir: string) {
  rmSync(join(dir, 'log.jsonl'), { force: true });
  const requests = openai.stats.requests;
  const summary = await runSync(await loadPipeline(join(dir, 'p.yaml')), { signal: new AbortController().signal, logger: quiet });
  const log = readFileSync(join(dir, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as DigestSourceLog);
  const streams = summary.connections[0].streams as unknown as Record<string, Record<string, number>>;
  return { status: summary.status, items: streams.items, others: streams.others, log, requests: openai.stats.requests - requests };
}

const lines = (dir: string) => readJsonl(join(dir, 'out/chunks.jsonl'));
/** Per stored document of `items`: its source (one per document: every line of it agrees). */
function storedSources(dir: string): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const l of lines(dir)) {
    if (l.stream !== 'items') continue;
    if (out.has(l.document_id)) expect(l.fingerprint?.source).toBe(out.get(l.document_id));
    out.set(l.document_id, l.fingerprint?.source);
  }
  return out;
}

describe('source digests end to end (custom source → jsonl)', () => {
  it('stores digests, then skips unchanged rows; changed, new and deleted rows as in a full read; a settings change reads in full', async () => {
    const dir = tempDir('sluice-digests-');
    pipeline(dir);
    let rows = Array.from({ length: N }, (_, i) => row(i + 1));
    writeRows(dir, rows);

    // First run: nothing stored, so nothing to skip by; every RECORD carries its digest, which is stored.
    const first = await sync(dir);
    expect(first.status).toBe('succeeded');
    expect(first.log).toEqual([{ stream: 'items', offered: true, check: { skipping: false }, emitted: N, withDigest: N, accepted: 0 }]);
    expect(first.items).toMatchObject({ records_read: N, records_written: N });
    expect(first.requests).toBeGreaterThan(0);
    const sources = storedSources(dir);
    expect(sources.size).toBe(N);
    const tag = sources.get('1')!.split(':')[0];
    expect(tag).toMatch(/^[0-9a-f]{16}$/);
    for (const r of rows) expect(sources.get(String(r.id))).toBe(`${tag}:${digestOf(r)}`);

    // Unchanged re-sync: no row read in full, nothing embedded or written, the file untouched.
    const before = readFileSync(join(dir, 'out/chunks.jsonl'), 'utf8');
    const mtime = statSync(join(dir, 'out/chunks.jsonl')).mtimeMs;
    const again = await sync(dir);
    expect(again.log).toEqual([{ stream: 'items', offered: true, check: { skipping: true }, emitted: 0, withDigest: 0, accepted: N }]);
    expect(again.items).toMatchObject({ records_read: N, records_unchanged: N, records_written: 0, records_deleted: 0, chunks_written: 0 });
    expect(again.requests).toBe(0);
    expect(readFileSync(join(dir, 'out/chunks.jsonl'), 'utf8')).toBe(before);
    expect(statSync(join(dir, 'out/chunks.jsonl')).mtimeMs).toBe(mtime);
    // verify reads the source without digests: a stored `source` it does not have is no drift.
    const loaded = await loadPipeline(join(dir, 'p.yaml'));
    const verified = await verifyConnection(loaded, loaded.connections[0], { signal: new AbortController().signal, logger: quiet });
    expect(verified.totals.stale_fingerprints).toBe(0);
    expect(verified.clean).toBe(true);

    // One row changed, one deleted, one new: exactly those two are read in full; the deleted one is swept.
    rows = [...rows.filter((r) => r.id !== 5).map((r) => (r.id === 3 ? row(3, 'Valve three was replaced by a gate.') : r)), row(N + 1)];
    writeRows(dir, rows);
    const changed = await sync(dir);
    expect(changed.log).toEqual([
      { stream: 'items', offered: true, check: { skipping: true }, emitted: 2, withDigest: 2, accepted: N - 2 },
    ]);
    // records_written: jsonl counts the deletion as a record written too.
    expect(changed.items).toMatchObject({ records_read: N, records_unchanged: N - 2, records_written: 3, records_deleted: 1 });
    const afterChange = storedSources(dir);
    expect([...afterChange.keys()].sort()).toEqual(rows.map((r) => String(r.id)).sort());
    for (const r of rows) expect(afterChange.get(String(r.id))).toBe(`${tag}:${digestOf(r)}`);
    expect(
      lines(dir)
        .filter((l) => l.document_id === '3')
        .map((l) => l.content)
        .join(''),
    ).toContain('gate');

    // A settings change (metadata_fields; chunking settings need a reindex): another tag, so no stored
    // digest counts and every row is read in full; the new metadata and digests are written without embedding.
    pipeline(dir, { metadataFields: ['title', 'id'] });
    const resized = await sync(dir);
    expect(resized.log).toEqual([{ stream: 'items', offered: true, check: { skipping: false }, emitted: N, withDigest: N, accepted: 0 }]);
    expect(resized.items).toMatchObject({ records_read: N, records_metadata_updated: N });
    expect(resized.requests).toBe(0);
    expect(lines(dir).every((l) => l.metadata.id !== undefined)).toBe(true);
    const retagged = storedSources(dir);
    const newTag = retagged.get('1')!.split(':')[0];
    expect(newTag).not.toBe(tag);
    for (const r of rows) expect(retagged.get(String(r.id))).toBe(`${newTag}:${digestOf(r)}`);
    const settled = await sync(dir);
    expect(settled.log[0]).toMatchObject({ check: { skipping: true }, emitted: 0, accepted: N });
    expect(settled.items).toMatchObject({ records_read: N, records_unchanged: N, records_written: 0 });
  }, 120_000);

  it('upgrade: documents stored without digests are read in full once and get their digests by metadata-only writes (0 embeddings)', async () => {
    const dir = tempDir('sluice-digests-upgrade-');
    const rows = Array.from({ length: N }, (_, i) => row(i + 1));
    writeRows(dir, rows);
    // A source without the capability is never offered ctx.storedDigests; its documents have no source.
    pipeline(dir, { source: 'digest-source-plain.ts' });
    const plain = await sync(dir);
    expect(plain.log).toEqual([{ stream: 'items', offered: false, check: null, emitted: N, withDigest: 0, accepted: 0 }]);
    expect([...storedSources(dir).values()].every((s) => s === undefined)).toBe(true);
    const vectors = new Map(lines(dir).map((l) => [l.id, l.embedding]));

    pipeline(dir);
    const upgrade = await sync(dir);
    expect(upgrade.log).toEqual([{ stream: 'items', offered: true, check: { skipping: false }, emitted: N, withDigest: N, accepted: 0 }]);
    expect(upgrade.items).toMatchObject({ records_read: N, records_metadata_updated: N, records_unchanged: 0 });
    expect(upgrade.requests).toBe(0);
    const sources = storedSources(dir);
    const tag = sources.get('1')!.split(':')[0];
    for (const r of rows) expect(sources.get(String(r.id))).toBe(`${tag}:${digestOf(r)}`);
    // Metadata-only: the stored vectors stay.
    for (const l of lines(dir)) expect(l.embedding).toEqual(vectors.get(l.id));

    const next = await sync(dir);
    expect(next.log[0]).toMatchObject({ check: { skipping: true }, emitted: 0, accepted: N });
    expect(next.items).toMatchObject({ records_read: N, records_unchanged: N, records_written: 0 });
    expect(next.requests).toBe(0);
  }, 120_000);

  it('an interrupted read deletes nothing, though the rows it skipped or never reached are gone from the source', async () => {
    const dir = tempDir('sluice-digests-cut-');
    pipeline(dir);
    const rows = Array.from({ length: N }, (_, i) => row(i + 1));
    writeRows(dir, rows);
    expect((await sync(dir)).status).toBe('succeeded');
    // Rows 1–3 gone, 10–12 changed; the read fails after its first full RECORD.
    writeRows(
      dir,
      rows.filter((r) => r.id > 3).map((r) => (r.id >= 10 && r.id <= 12 ? row(r.id, `changed ${r.id}`) : r)),
    );
    pipeline(dir, { failAfter: 1 });
    const cut = await sync(dir).catch((err: unknown) => ({ status: 'failed', error: err }) as const);
    expect(cut.status).toBe('failed');
    expect([...storedSources(dir).keys()].sort()).toEqual(rows.map((r) => String(r.id)).sort());
  }, 120_000);

  it('a destination without capabilities.sourceDigests (fingerprints and documents() all the same): no ctx.storedDigests', async () => {
    const dir = tempDir('sluice-digests-nocap-');
    let store = relative(dir, join(REPO, 'test/helpers/fingerprint-destination.ts'));
    if (!store.startsWith('.')) store = `./${store}`;
    pipeline(dir, { destination: `{ type: ${store}, config: { path: ./store.json } }` });
    writeRows(
      dir,
      Array.from({ length: 5 }, (_, i) => row(i + 1)),
    );
    for (let run = 0; run < 2; run++) {
      const r = await sync(dir);
      expect(r.log).toEqual([{ stream: 'items', offered: false, check: null, emitted: 5, withDigest: 0, accepted: 0 }]);
      // Its fingerprints still skip the unchanged documents of the second run.
      expect(r.items).toMatchObject({ records_read: 5, records_unchanged: run === 0 ? 0 : 5 });
    }
  }, 120_000);

  it('a stream that is not swept (overwrite) is offered no check; the swept one is', async () => {
    const dir = tempDir('sluice-digests-others-');
    pipeline(dir, { others: true });
    writeRows(
      dir,
      Array.from({ length: 5 }, (_, i) => row(i + 1)),
    );
    const run = await sync(dir);
    expect(run.log).toEqual([
      { stream: 'items', offered: true, check: { skipping: false }, emitted: 5, withDigest: 5, accepted: 0 },
      { stream: 'others', offered: true, check: null, emitted: 5, withDigest: 0, accepted: 0 },
    ]);
    const again = await sync(dir);
    expect(again.log).toEqual([
      { stream: 'items', offered: true, check: { skipping: true }, emitted: 0, withDigest: 0, accepted: 5 },
      { stream: 'others', offered: true, check: null, emitted: 5, withDigest: 0, accepted: 0 },
    ]);
    expect(again.others).toMatchObject({ records_read: 5, records_unchanged: 5 });
  }, 120_000);
});

describe('the light listing (Destination.documentSources) for a stream read with digests', () => {
  /** A pipeline into test/helpers/light-listing-destination.ts; `store.json` in `dir`. */
  function lightPipeline(dir: string, s: Setup = {}) {
    let store = relative(dir, join(REPO, 'test/helpers/light-listing-destination.ts'));
    if (!store.startsWith('.')) store = `./${store}`;
    pipeline(dir, { ...s, destination: `{ type: ${store}, config: { path: ./store.json } }` });
  }
  const file = (dir: string) => join(dir, 'store.json');
  /** One sync, with the listings it made and how many ids it looked up (fingerprints()). */
  async function lightSync(dir: string) {
    rmSync(`${file(dir)}.listings`, { force: true });
    rmSync(`${file(dir)}.lookups`, { force: true });
    const r = await sync(dir);
    let lookedUp = 0;
    try {
      for (const l of readFileSync(`${file(dir)}.lookups`, 'utf8')
        .split('\n')
        .filter(Boolean))
        lookedUp += Number(l.split(' ')[1]);
    } catch {
      // no look-up at all
    }
    return { ...r, listings: readListings(file(dir)), lookedUp };
  }
  /** The stored documents of `items`: id → [source, body of its first chunk, title]. */
  const stored = (dir: string) =>
    Object.fromEntries(
      Object.entries(readStore(file(dir)).live.items ?? {}).map(([id, d]) => [
        id,
        [(d.fingerprint as { source?: string } | undefined)?.source, d.chunks[0]?.content, d.chunks[0]?.metadata.title],
      ]),
    );
  const expected = (rows: Row[]) =>
    Object.fromEntries(rows.map((r) => [String(r.id), [expect.stringContaining(digestOf(r)), expect.any(String), r.title]]));

  it('skips unchanged rows off the light listing; looks up only the rows read in full; lists whole when most are', async () => {
    const dir = tempDir('sluice-digests-light-');
    lightPipeline(dir);
    let rows = Array.from({ length: N }, (_, i) => row(i + 1));
    writeRows(dir, rows);
    const first = await lightSync(dir);
    // Nothing stored: the light listing is empty, nothing to list whole or look up.
    expect(first).toMatchObject({ status: 'succeeded', listings: ['light items'], lookedUp: 0 });
    expect(first.items).toMatchObject({ records_read: N, records_written: N });
    expect(stored(dir)).toEqual(expected(rows));

    const unchanged = await lightSync(dir);
    expect(unchanged.log).toEqual([{ stream: 'items', offered: true, check: { skipping: true }, emitted: 0, withDigest: 0, accepted: N }]);
    expect(unchanged).toMatchObject({ listings: ['light items'], lookedUp: 0, requests: 0 });
    expect(unchanged.items).toMatchObject({ records_read: N, records_unchanged: N, records_written: 0 });

    // Two bodies and a title changed, one row new, one gone: the three changed ones are looked up
    // (the new one is not listed, so not stored), the gone one deleted.
    rows = rows.filter((r) => r.id !== N);
    rows[0] = row(1, 'Item 1 now describes a different valve entirely.');
    rows[1] = row(2, 'Item 2 now describes a different valve entirely.');
    rows[2] = { ...rows[2], title: 'a new title' };
    rows.push(row(N + 1));
    writeRows(dir, rows);
    const some = await lightSync(dir);
    expect(some).toMatchObject({ listings: ['light items'], lookedUp: 3 });
    // records_written counts the deletion too.
    expect(some.items).toMatchObject({
      records_read: N,
      records_unchanged: N - 4,
      records_written: 5,
      records_deleted: 1,
      records_metadata_updated: 1,
    });
    expect(some.requests).toBeGreaterThan(0);
    expect(stored(dir)).toEqual(expected(rows));

    // Every title changed: past a quarter of the stream read in full, it is listed whole (the few
    // rows before that were looked up), and the metadata-only writes embed nothing.
    rows = rows.map((r) => ({ ...r, title: `${r.title}!` }));
    writeRows(dir, rows);
    const most = await lightSync(dir);
    expect(most.listings).toEqual(['light items', 'whole items']);
    expect(most.lookedUp).toBeLessThanOrEqual(Math.ceil(N / 4) + 1);
    expect(most.items).toMatchObject({ records_read: N, records_metadata_updated: N, records_deleted: 0 });
    expect(most.requests).toBe(0);
    expect(stored(dir)).toEqual(expected(rows));

    // A settings change: no stored digest has the new tag, so every row is read in full and the
    // stream is listed whole before the first of them (nothing looked up).
    lightPipeline(dir, { metadataFields: ['title', 'id'] });
    const changed = await lightSync(dir);
    expect(changed.log[0]).toMatchObject({ check: { skipping: false }, emitted: N });
    expect(changed).toMatchObject({ listings: ['light items', 'whole items'], lookedUp: 0, requests: 0 });
    expect(changed.items).toMatchObject({ records_read: N, records_metadata_updated: N, records_deleted: 0 });
    const again = await lightSync(dir);
    expect(again).toMatchObject({ listings: ['light items'], lookedUp: 0, requests: 0 });
    expect(again.items).toMatchObject({ records_unchanged: N, records_written: 0 });
  }, 120_000);

  it('a source that does not ask for digests this run gets the stream listed whole at its first document', async () => {
    const dir = tempDir('sluice-digests-light-noask-');
    lightPipeline(dir);
    const rows = Array.from({ length: N }, (_, i) => row(i + 1));
    writeRows(dir, rows);
    await lightSync(dir);
    lightPipeline(dir, { ignoreDigests: true });
    const r = await lightSync(dir);
    expect(r.log[0]).toMatchObject({ offered: true, check: null, emitted: N });
    expect(r.listings).toEqual(['light items', 'whole items']);
    expect(r.lookedUp).toBe(0);
    // Compared by content and metadata (no digest read): unchanged, nothing written, nothing deleted.
    expect(r.items).toMatchObject({ records_read: N, records_unchanged: N, records_written: 0, records_deleted: 0 });
    expect(stored(dir)).toEqual(expected(rows));
  }, 120_000);
});
