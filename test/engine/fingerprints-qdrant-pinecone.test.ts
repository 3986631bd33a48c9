// Issue 15 §1 end to end for Qdrant and Pinecone: `sluice sync --json` through the CLI (scripted
// source, counting OpenAI-compatible embedding server) into the HTTP fixtures, which validate every
// request and response against the vendors' OpenAPI documents and log every request. An unchanged
// re-sync sends no write request and no embedding request; a metadata-only change embeds nothing
// and upserts no vector; full refresh deletes what the source dropped (through documents()); an
// overwrite of unchanged data writes nothing and does not switch; documents() lists what is stored.
import { writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, runCli, STACK_LINE, tempDir } from '../helpers/cli.ts';
import type { ScriptStep } from '../helpers/scripted-source.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { startQdrantFixture, type QdrantFixture } from '../fixtures/qdrant-server.ts';
import { startPineconeFixture, type PineconeFixture } from '../fixtures/pinecone-server.ts';
import qdrant from '../../connectors/destination-qdrant/index.ts';
import pinecone from '../../connectors/destination-pinecone/index.ts';
import { QdrantConfigSchema } from '../../connectors/destination-qdrant/config.ts';
import { PineconeConfigSchema } from '../../connectors/destination-pinecone/config.ts';
import { captureContext } from '../../connectors/destination-pinecone/test-helpers.ts';
import type { StoredDocument } from '../../src/protocol/connector.ts';

const KEY = 'sk-fingerprints-vector-0000';
const DIMS = 16;
let openai: OpenAIServer;
let qfx: QdrantFixture;
let pfx: PineconeFixture;
beforeAll(async () => {
  [openai, qfx, pfx] = await Promise.all([startOpenAIServer({ latencyMs: 1 }), startQdrantFixture(), startPineconeFixture()]);
  await pfx.createIndex('fp-e2e', DIMS);
});
afterAll(async () => {
  await Promise.all([openai?.close(), qfx?.close(), pfx?.close()]);
  expect(qfx.violations).toEqual([]);
  expect(pfx.violations).toEqual([]);
});

const scriptedSource = (dir: string) => {
  const rel = relative(dir, join(REPO, 'test/helpers/scripted-source.ts'));
  return rel.startsWith('.') ? rel : `./${rel}`;
};

/** The destination under test: its pipeline block, its write log, and what it stores. */
interface Target {
  name: string;
  destination(dir: string, mode: string): string;
  /** Requests so far (a position in the fixture's log). */
  mark(): number;
  /** Write requests since a mark, as "METHOD path". */
  writesSince(mark: number): string[];
  /** Stored chunks of the stream's live data: "document|chunk|title|content", sorted. */
  stored(dir: string, mode: string): string[];
  /** Vectors by "document|chunk", to prove they were kept. */
  vectors(dir: string, mode: string): Map<string, number[]>;
  /** The live generation (collection behind the alias / current namespace). */
  generation(dir: string, mode: string): string;
  documents(dir: string, mode: string): AsyncIterable<StoredDocument>;
}

const collectionOf = (dir: string, mode: string) => `fp_${mode}_${dir.replace(/[^A-Za-z0-9]/g, '').slice(-8)}`;
const qdrantTarget: Target = {
  name: 'qdrant',
  destination: (dir, mode) => `{ type: qdrant, config: { url: ${qfx.url}, collection: ${collectionOf(dir, mode)}, batch_points: 8 } }`,
  mark: () => qfx.log.length,
  writesSince: (mark) =>
    qfx.log
      .slice(mark)
      .map((l) => l.operation)
      .filter((op) => /^(PUT|DELETE)|points\/(delete|batch|payload)$|\/collections\/aliases$/.test(op)),
  stored: (dir, mode) =>
    qfx
      .pointsOf(collectionOf(dir, mode))
      .map((p) => `${p.payload.document_id}|${p.payload.chunk_index}|${p.payload.title}|${p.payload.content}`)
      .sort(),
  vectors: (dir, mode) =>
    new Map(qfx.pointsOf(collectionOf(dir, mode)).map((p) => [`${p.payload.document_id}|${p.payload.chunk_index}`, p.vector])),
  generation: (dir, mode) => qfx.aliases.get(collectionOf(dir, mode))!,
  documents: (dir, mode) =>
    qdrant.documents!(QdrantConfigSchema.parse({ url: qfx.url, collection: collectionOf(dir, mode) }), captureContext(), 'items'),
};

const namespaceOf = (dir: string, mode: string) => `${collectionOf(dir, mode)}-{stream}`;
const pineconeConfig = (dir: string, mode: string) =>
  PineconeConfigSchema.parse({
    api_key: pfx.apiKey,
    index: 'fp-e2e',
    controller_host: pfx.controllerUrl,
    namespace: namespaceOf(dir, mode),
  });
const liveNamespace = (dir: string, mode: string) => {
  const logical = namespaceOf(dir, mode).replace('{stream}', 'items');
  return pfx.namespaceNames('fp-e2e').find((n) => n === logical || n.startsWith(`${logical}__sluice_gen`))!;
};
const pineconeTarget: Target = {
  name: 'pinecone',
  destination: (dir, mode) =>
    `{ type: pinecone, config: { api_key: "\${TEST_PINECONE_KEY}", index: fp-e2e, controller_host: ${pfx.controllerUrl}, namespace: "${namespaceOf(dir, mode)}", batch_size: 8, retry_initial_delay_ms: 5 } }`,
  mark: () => pfx.requests.length,
  writesSince: (mark) =>
    pfx.requests
      .slice(mark)
      .filter((r) => r.index === 'fp-e2e' && /upsert|delete|update/.test(r.path))
      .map((r) => `${r.method} ${r.path}`),
  stored: (dir, mode) => {
    const ns = liveNamespace(dir, mode);
    return pfx.ids('fp-e2e', ns).map((id) => {
      const md = pfx.vector('fp-e2e', ns, id)!.metadata!;
      return `${md.document_id}|${md.chunk_index}|${md.title}|${md.content}`;
    });
  },
  vectors: (dir, mode) => {
    const ns = liveNamespace(dir, mode);
    return new Map(pfx.ids('fp-e2e', ns).map((id) => [id.replace(/#(\d+)$/, '|$1'), Array.from(pfx.vector('fp-e2e', ns, id)!.values)]));
  },
  generation: (dir, mode) => liveNamespace(dir, mode),
  documents: (dir, mode) => pinecone.documents!(pineconeConfig(dir, mode), captureContext(), 'items'),
};

function pipeline(dir: string, target: Target, mode: 'append_dedup' | 'overwrite'): void {
  writeFileSync(
    join(dir, 'p.yaml'),
    `version: 1
connections:
  - name: fp
    source: { type: ${scriptedSource(dir)}, config: { script: ./script.json } }
    destination: ${target.destination(dir, mode)}
    embedding: { provider: openai-compatible, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: ${DIMS}, batch_size: 16 }
    processing: { text_fields: [body], metadata_fields: [title], chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: items, sync_mode: full_refresh, destination_sync_mode: ${mode} } ]
`,
  );
}

const body = (i: number, v = 1) => `Item ${i} describes pump ${i} in version ${v}. It moves water from basin ${i % 4} to tank ${i % 3}.`;
const items = (ids: number[], title: (i: number) => string = (i) => `title ${i}`, v: (i: number) => number = () => 1): ScriptStep[] =>
  ids.flatMap((i, k) => [{ id: i, title: title(i), body: body(i, v(i)) }, ...((k + 1) % 10 === 0 ? [{ state: true } as const] : [])]);
const range = (n: number) => Array.from({ length: n }, (_, k) => k + 1);
const script = (dir: string, steps: ScriptStep[]) => writeFileSync(join(dir, 'script.json'), JSON.stringify(steps));

type Stats = Record<string, number | undefined>;
async function sync(dir: string): Promise<Stats> {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json'], {
    cwd: dir,
    env: { TEST_OPENAI_KEY: KEY, TEST_PINECONE_KEY: pfx.apiKey },
  });
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stderr).not.toMatch(STACK_LINE);
  return (JSON.parse(r.stdout) as { connections: Array<{ streams: Record<string, Stats> }> }).connections[0].streams.items;
}

async function listed(target: Target, dir: string, mode: string): Promise<string[]> {
  const out: string[] = [];
  for await (const d of target.documents(dir, mode)) out.push(`${d.documentId}|${d.chunks}|${d.fingerprint ? 'fp' : 'none'}`);
  return out.sort();
}
/** What documents() should say, from the stored chunks themselves. */
const expectedListing = (stored: string[]) => {
  const counts = new Map<string, number>();
  for (const s of stored) {
    const id = s.split('|')[0];
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return [...counts].map(([id, n]) => `${id}|${n}|fp`).sort();
};

describe.each([qdrantTarget, pineconeTarget])('fingerprints end to end: $name', (target) => {
  it('full refresh + append_dedup: unchanged → no writes, no embeddings; metadata only → no embedding, no vector upsert; dropped → swept', async () => {
    const dir = tempDir(`sluice-fp-${target.name}-`);
    pipeline(dir, target, 'append_dedup');
    script(dir, items(range(30)));
    const first = await sync(dir);
    expect(first.records_written).toBe(30);
    const stored = target.stored(dir, 'append_dedup');
    expect(new Set(stored.map((s) => s.split('|')[0])).size).toBe(30);
    expect(await listed(target, dir, 'append_dedup')).toEqual(expectedListing(stored));
    const vectors = target.vectors(dir, 'append_dedup');

    // Unchanged: nothing embedded, nothing written.
    let requests = openai.stats.requests;
    let mark = target.mark();
    const again = await sync(dir);
    expect(again).toMatchObject({ records_read: 30, records_unchanged: 30, records_written: 0, chunks_written: 0, embedding_requests: 0 });
    expect(openai.stats.requests).toBe(requests);
    expect(target.writesSince(mark)).toEqual([]);
    expect(target.stored(dir, 'append_dedup')).toEqual(stored);

    // A title (metadata, not embedded text) changes on two documents.
    script(
      dir,
      items(range(30), (i) => (i === 3 || i === 17 ? `renamed ${i}` : `title ${i}`)),
    );
    requests = openai.stats.requests;
    mark = target.mark();
    const meta = await sync(dir);
    expect(meta).toMatchObject({ records_unchanged: 28, embedding_requests: 0 });
    expect(openai.stats.requests).toBe(requests);
    const writes = target.writesSince(mark);
    expect(writes.length).toBeGreaterThan(0);
    expect(writes.filter((w) => /PUT .*points$|vectors\/upsert/.test(w))).toEqual([]); // no vector upsert
    const renamed = target.stored(dir, 'append_dedup');
    expect(renamed.filter((s) => s.includes('|renamed '))).toHaveLength(stored.filter((s) => /^(3|17)\|/.test(s)).length);
    expect(target.vectors(dir, 'append_dedup')).toEqual(vectors);

    // Item 5 leaves the source: the complete full-refresh read sweeps it; the rest is untouched.
    script(
      dir,
      items(
        range(30).filter((i) => i !== 5),
        (i) => (i === 3 || i === 17 ? `renamed ${i}` : `title ${i}`),
      ),
    );
    requests = openai.stats.requests;
    await sync(dir);
    expect(openai.stats.requests).toBe(requests);
    const swept = target.stored(dir, 'append_dedup');
    expect(swept).toEqual(renamed.filter((s) => !s.startsWith('5|')));
    expect(await listed(target, dir, 'append_dedup')).toEqual(expectedListing(swept));
  }, 300_000); // four CLI runs: slow on a loaded machine

  it('overwrite of unchanged data writes nothing and does not switch; one change switches to a complete generation', async () => {
    const dir = tempDir(`sluice-fp-${target.name}-ow-`);
    pipeline(dir, target, 'overwrite');
    script(dir, items(range(20)));
    await sync(dir);
    const generation = target.generation(dir, 'overwrite');
    const stored = target.stored(dir, 'overwrite');
    const vectors = target.vectors(dir, 'overwrite');

    const requests = openai.stats.requests;
    const mark = target.mark();
    const again = await sync(dir);
    expect(again).toMatchObject({ records_unchanged: 20, records_written: 0, embedding_requests: 0 });
    expect(openai.stats.requests).toBe(requests);
    expect(target.writesSince(mark)).toEqual([]);
    expect(target.generation(dir, 'overwrite')).toBe(generation);
    expect(target.stored(dir, 'overwrite')).toEqual(stored);

    // One document's text changes: a new generation with the 19 kept documents copied (same vectors).
    script(
      dir,
      items(range(20), undefined, (i) => (i === 7 ? 2 : 1)),
    );
    const changed = await sync(dir);
    expect(changed).toMatchObject({ records_unchanged: 19 });
    expect(target.generation(dir, 'overwrite')).not.toBe(generation);
    const now = target.stored(dir, 'overwrite');
    expect(now.filter((s) => !s.startsWith('7|'))).toEqual(stored.filter((s) => !s.startsWith('7|')));
    expect(now.filter((s) => s.startsWith('7|')).join(' ')).toContain('version 2');
    // Kept documents carry the very vectors they had (Qdrant re-normalises on upsert: equal up to rounding).
    const after = target.vectors(dir, 'overwrite');
    const kept = [...vectors].filter(([id]) => !id.startsWith('7|'));
    expect(kept.length).toBeGreaterThan(19);
    for (const [id, v] of kept) expect(Math.max(...after.get(id)!.map((x, i) => Math.abs(x - v[i])))).toBeLessThan(1e-6);
    expect(await listed(target, dir, 'overwrite')).toEqual(expectedListing(now));
  }, 300_000);
});
