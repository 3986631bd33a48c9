// End to end through the CLI (`sluice sync --json`, file source, hash embedder) into the Pinecone
// fixture: SIGKILL mid-sync several times, with files shrunk, grown, added and deleted between
// runs; the final run must leave exactly what a clean sync of the same files leaves.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPineconeFixture, type PineconeFixture } from '../../test/fixtures/pinecone-server.ts';
import { corpusWriter, filePipeline, runCliKilledWhen } from '../../test/helpers/e2e.ts';

const DIM = 16;

let fx: PineconeFixture;
let dir: string;

beforeAll(async () => {
  // Slow the data plane a little so a kill lands while writes are in flight.
  fx = await startPineconeFixture({ faults: { latencyMs: 5 } });
  await fx.createIndex('kb', DIM);
  await fx.createIndex('kb-ref', DIM);
  dir = mkdtempSync(join(tmpdir(), 'sluice-pinecone-e2e-'));
});
afterAll(async () => {
  await fx?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const upserts = () => fx.requests.filter((r) => r.path === '/vectors/upsert' && r.status === 200).length;

const writers = new Map<string, ReturnType<typeof corpusWriter>>();
function writeDoc(corpus: string, name: string, paragraphs: number, variant = ''): void {
  if (!writers.has(corpus)) writers.set(corpus, corpusWriter(corpus));
  writers.get(corpus)!(name, paragraphs, variant);
}

const pipeline = (folder: string, corpus: string, index: string, mode?: 'append_dedup' | 'overwrite') =>
  filePipeline(
    folder,
    corpus,
    {
      type: 'pinecone',
      config: { api_key: fx.apiKey, index, controller_host: fx.controllerUrl, batch_size: 4, concurrency: 2, retry_initial_delay_ms: 5 },
    },
    { mode, dimensions: DIM },
  );

/** `sluice sync`; with `killAfterUpserts`, SIGKILLed once that many upserts reached Pinecone. */
function sync(file: string, killAfterUpserts?: number) {
  const before = upserts();
  return runCliKilledWhen(['sync', file, '--json'], killAfterUpserts ? () => upserts() - before >= killAfterUpserts : undefined);
}
const run = (args: string[]) => runCliKilledWhen(args);

/** What a reader sees: the current generation of the stream's namespace. */
function stored(index: string): string[] {
  const pointer = fx.vector(index, '__sluice_generations', 'ns:docs');
  const ns = typeof pointer?.metadata?.current === 'string' ? pointer.metadata.current : 'docs';
  return fx
    .ids(index, ns)
    .map((id) => {
      const md = fx.vector(index, ns, id)!.metadata!;
      return `${id}|${md.stream}|${md.document_id}|${md.chunk_index}|${md.content}`;
    })
    .sort();
}

describe('pinecone end to end through the CLI', () => {
  it('SIGKILL mid-sync (several times) then a re-run leaves no duplicate or stale chunks', async () => {
    const corpus = join(dir, 'corpus');
    mkdirSync(corpus);
    for (let i = 0; i < 24; i++) writeDoc(corpus, `doc${String(i).padStart(2, '0')}`, 2 + (i % 4));
    const main = pipeline(join(dir, 'main'), corpus, 'kb');

    for (const [trial, after] of [2, 5, 3].entries()) {
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

    const reference = await sync(pipeline(join(dir, 'ref'), corpus, 'kb-ref'));
    expect(reference.code, reference.stderr.slice(-2000)).toBe(0);

    const got = stored('kb');
    const want = stored('kb-ref');
    expect(want.length).toBeGreaterThan(60);
    expect(got).toEqual(want);
    expect(got.some((s) => s.includes('shrunk'))).toBe(true);
    expect(got.some((s) => s.includes('doc20.md'))).toBe(false);

    const search = await run(['search', main, 'Paragraph 1 of doc11 grown', '--json', '-k', '3']);
    expect(search.code, search.stderr.slice(-2000)).toBe(0);
    const hits = JSON.parse(search.stdout).hits as Array<{ documentId: string; content: string; stream: string }>;
    expect(hits).toHaveLength(3);
    expect(hits.every((h) => h.stream === 'docs' && h.documentId.endsWith('.md') && h.content.length > 0)).toBe(true);
    expect(fx.violations).toEqual([]);
    expect(fx.requests.filter((r) => r.status >= 400 && r.status < 500 && r.status !== 404)).toEqual([]);
  }, 240_000);

  it('overwrite killed mid-load keeps readers on the last complete generation; a re-run switches cleanly', async () => {
    const corpus = join(dir, 'corpus-ow');
    mkdirSync(corpus);
    for (let i = 0; i < 10; i++) writeDoc(corpus, `page${i}`, 3);
    await fx.createIndex('kb-ow', DIM);
    const file = pipeline(join(dir, 'ow'), corpus, 'kb-ow', 'overwrite');
    const first = await sync(file);
    expect(first.code, first.stderr.slice(-2000)).toBe(0);
    const complete = stored('kb-ow');
    expect(complete.length).toBeGreaterThan(20);

    rmSync(join(corpus, 'page0.md'));
    writeDoc(corpus, 'page1', 1, ' shrunk');
    const killed = await sync(file, 2);
    expect(killed.signal).toBe('SIGKILL');
    expect(stored('kb-ow')).toEqual(complete); // the half-loaded generation is invisible

    const rerun = await sync(file);
    expect(rerun.code, rerun.stderr.slice(-2000)).toBe(0);
    const after = stored('kb-ow');
    expect(after.some((s) => s.includes('page0.md'))).toBe(false);
    expect(after.some((s) => s.includes('shrunk'))).toBe(true);
    // Only the pointer namespace and the current generation remain.
    expect(fx.namespaceNames('kb-ow')).toHaveLength(2);
    expect(fx.violations).toEqual([]);
  }, 240_000);
});
