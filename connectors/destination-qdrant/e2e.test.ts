// End to end through the CLI (`sluice sync --json`, file source, hash embedder) into the Qdrant
// fixture: SIGKILL mid-sync several times, with files shrunk, grown, added and deleted between
// runs, then a final run must leave exactly what a clean sync of the same files leaves.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startQdrantFixture, type QdrantFixture } from '../../test/fixtures/qdrant-server.ts';
import { corpusWriter, filePipeline, runCliKilledWhen } from '../../test/helpers/e2e.ts';

let fx: QdrantFixture;
let dir: string;

beforeAll(async () => {
  // Slow upserts a little so a kill lands while writes are in flight.
  fx = await startQdrantFixture({ faults: { latencyMs: 15, only: ['PUT /collections/{collection_name}/points'] } });
  dir = mkdtempSync(join(tmpdir(), 'sluice-qdrant-e2e-'));
});
afterAll(async () => {
  await fx?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const upserts = () => fx.log.filter((l) => l.operation === 'PUT /collections/{collection_name}/points').length;

const writers = new Map<string, ReturnType<typeof corpusWriter>>();
function writeDoc(corpus: string, name: string, paragraphs: number, variant = ''): void {
  if (!writers.has(corpus)) writers.set(corpus, corpusWriter(corpus));
  writers.get(corpus)!(name, paragraphs, variant);
}

const pipeline = (folder: string, corpus: string, collection: string, mode?: 'append_dedup' | 'overwrite') =>
  filePipeline(
    folder,
    corpus,
    { type: 'qdrant', config: { url: fx.url, collection, batch_points: 4, buffer_points: 8, concurrency: 2 } },
    { mode },
  );

/** `sluice sync`; with `killAfterUpserts`, SIGKILLed once that many upserts reached Qdrant. */
function sync(file: string, killAfterUpserts?: number) {
  const before = upserts();
  return runCliKilledWhen(['sync', file, '--json'], killAfterUpserts ? () => upserts() - before >= killAfterUpserts : undefined);
}
const cliRun = (args: string[]) => runCliKilledWhen(args);

function stored(collection: string): string[] {
  return fx
    .pointsOf(collection)
    .map((p) => `${p.payload.stream}|${p.payload.document_id}|${p.payload.chunk_index}|${p.payload.content}`)
    .sort();
}

describe('qdrant end to end through the CLI', () => {
  it('SIGKILL mid-sync (several times) then a re-run leaves no duplicate or stale chunks', async () => {
    const corpus = join(dir, 'corpus');
    mkdirSync(corpus);
    for (let i = 0; i < 24; i++) writeDoc(corpus, `doc${String(i).padStart(2, '0')}`, 2 + (i % 4));
    const main = pipeline(join(dir, 'main'), corpus, 'kb');

    const kills = [2, 5, 3];
    for (const [trial, after] of kills.entries()) {
      const run = await sync(main, after);
      expect(run.signal, `trial ${trial} should be killed mid-sync: ${run.stderr.slice(-500)}`).toBe('SIGKILL');
      // Change documents between the crash and the next run: shrink, grow, delete, add.
      writeDoc(corpus, `doc0${trial}`, 1, ' shrunk');
      writeDoc(corpus, `doc1${trial}`, 6, ' grown');
      rmSync(join(corpus, `doc2${trial}.md`));
      writeDoc(corpus, `new${trial}`, 3);
    }
    const final = await sync(main);
    expect(final.code, final.stderr.slice(-2000)).toBe(0);
    expect(JSON.parse(final.stdout).status).toBe('succeeded');

    // Reference: one clean sync of the same files into another collection.
    const reference = await sync(pipeline(join(dir, 'ref'), corpus, 'kb_ref'));
    expect(reference.code, reference.stderr.slice(-2000)).toBe(0);

    const got = stored('kb');
    const want = stored('kb_ref');
    expect(want.length).toBeGreaterThan(60);
    expect(got).toEqual(want);
    expect(got.some((s) => s.includes('shrunk'))).toBe(true);
    expect(got.some((s) => s.includes('doc20.md'))).toBe(false);
    expect(new Set(fx.pointsOf('kb').map((p) => `${p.payload.document_id}#${p.payload.chunk_index}`)).size).toBe(got.length);
    expect(fx.violations).toEqual([]);
    expect(fx.log.filter((l) => l.status >= 400 && l.status < 500)).toEqual([]);

    // `sluice search` reads through the alias.
    const probe = fx.pointsOf('kb').find((p) => p.payload.document_id === 'doc05.md')!;
    const search = await cliRun(['search', main, String(probe.payload.content), '--top-k', '3', '--json']);
    expect(search.code, search.stderr.slice(-2000)).toBe(0);
    const { hits } = JSON.parse(search.stdout) as {
      hits: { score: number; stream: string; documentId: string; chunkIndex: number; content: string }[];
    };
    expect(hits).toHaveLength(3);
    const all = new Set(got);
    for (const h of hits) expect(all.has(`${h.stream}|${h.documentId}|${h.chunkIndex}|${h.content}`)).toBe(true);
    expect(hits[0].score).toBeGreaterThanOrEqual(hits[1].score);
    expect(hits[1].score).toBeGreaterThanOrEqual(hits[2].score);
  }, 120_000);

  it('overwrite killed mid-load: readers keep the complete old generation; the re-run replaces it cleanly', async () => {
    const corpus = join(dir, 'corpus-ow');
    mkdirSync(corpus);
    for (let i = 0; i < 16; i++) writeDoc(corpus, `page${i}`, 3);
    const file = pipeline(join(dir, 'ow'), corpus, 'owk', 'overwrite');
    expect((await sync(file)).code).toBe(0);
    const first = stored('owk');
    expect(fx.aliases.get('owk')).toBe('owk_1');

    // Every document changes, so the overwrite must load a new generation (unchanged ones would
    // only be kept: with fingerprints an overwrite of unchanged data writes nothing).
    for (let i = 0; i < 16; i++) writeDoc(corpus, `page${i}`, 3, ' v2');
    const killed = await sync(file, 3);
    expect(killed.signal).toBe('SIGKILL');
    expect(fx.collections.has('owk_2')).toBe(true); // the half-loaded generation nobody reads
    expect(fx.aliases.get('owk')).toBe('owk_1');
    expect(stored('owk')).toEqual(first);

    const rerun = await sync(file);
    expect(rerun.code, rerun.stderr.slice(-2000)).toBe(0);
    expect(fx.aliases.get('owk')).toBe('owk_3');
    expect([...fx.collections.keys()].filter((n) => n.startsWith('owk'))).toEqual(['owk_3']);
    // Reference: one clean sync of the same files into another collection.
    const reference = await sync(pipeline(join(dir, 'ow-ref'), corpus, 'ref_owk', 'overwrite'));
    expect(reference.code, reference.stderr.slice(-2000)).toBe(0);
    const want = stored('ref_owk');
    expect(want).toHaveLength(first.length);
    expect(want.every((s) => s.includes(' v2'))).toBe(true);
    expect(stored('owk')).toEqual(want);
    expect(fx.violations).toEqual([]);
  }, 90_000);
});
