// The file source into the jsonl destination through the real CLI: incremental add/modify/delete,
// full refresh deletions, overwrite, structured files.
import { describe, expect, it } from 'vitest';
import { existsSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const pipeline = (mode = 'incremental', dest = 'append_dedup', extra = '') => `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs${extra} } }
    destination: { type: jsonl, config: { path: ./out/docs.jsonl } }
    embedding: { provider: hash, dimensions: 32 }
    processing: { chunk_size: 40, chunk_overlap: 5, chunk_unit: characters, metadata_fields: [path] }
    streams: [ { name: docs, sync_mode: ${mode}, destination_sync_mode: ${dest} } ]
`;

async function sync(dir: string, ...args: string[]) {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json', ...args], { cwd: dir });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { connections: Array<{ streams: Record<string, Record<string, number>> }> };
}

/** Documents in the destination → their texts re-assembled from chunk 0 (enough to compare). */
function docsIn(dir: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of readJsonl(join(dir, 'out/docs.jsonl'))) m.set(l.document_id, (m.get(l.document_id) ?? 0) + 1);
  return m;
}

describe('file → jsonl', () => {
  it('incremental: adds, modifies and deletes follow the directory', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': pipeline(),
      'docs/a.md': '# A\n\nAlpha text that is long enough to make two chunks at forty characters.',
      'docs/b.md': '# B\n\nBravo.',
      'docs/sub/c.txt': 'Charlie in a subfolder.',
    });
    const first = await sync(dir);
    expect(first.connections[0].streams.docs.records_read).toBe(3);
    expect([...docsIn(dir).keys()].sort()).toEqual(['a.md', 'b.md', 'sub/c.txt']);
    const aChunks = docsIn(dir).get('a.md')!;
    expect(aChunks).toBeGreaterThan(1);

    // Nothing changed: nothing read, written or embedded.
    const again = await sync(dir);
    expect(again.connections[0].streams.docs).toMatchObject({ records_read: 0, chunks_written: 0, embedding_tokens: 0 });

    // Shrink a (fewer chunks), delete b, add d.
    writeFileSync(join(dir, 'docs/a.md'), 'Short now.');
    const future = new Date(Date.now() + 5_000);
    utimesSync(join(dir, 'docs/a.md'), future, future);
    rmSync(join(dir, 'docs/b.md'));
    writeFiles(dir, { 'docs/d.md': 'Delta.' });
    const third = await sync(dir);
    expect(third.connections[0].streams.docs).toMatchObject({ records_read: 3, records_deleted: 1 }); // 2 files + 1 deletion
    const docs = docsIn(dir);
    expect([...docs.keys()].sort()).toEqual(['a.md', 'd.md', 'sub/c.txt']);
    expect(docs.get('a.md')).toBe(1);
    const lines = readJsonl(join(dir, 'out/docs.jsonl'));
    expect(lines.find((l) => l.document_id === 'a.md')!.content).toBe('Short now.');
    expect(lines.every((l) => l.embedding?.length === 32)).toBe(true);
    expect(lines.find((l) => l.document_id === 'd.md')!.metadata).toMatchObject({ path: 'd.md' });
    // Ids are unique: nothing duplicated.
    expect(new Set(lines.map((l) => l.id)).size).toBe(lines.length);
  });

  it('a file copied in with an old modification time is still picked up', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline(), 'docs/new.md': 'New doc.' });
    await sync(dir);
    writeFiles(dir, { 'docs/old.md': 'Old doc restored from backup.' });
    const past = new Date('2001-01-01T00:00:00Z');
    utimesSync(join(dir, 'docs/old.md'), past, past);
    const r = await sync(dir);
    expect(r.connections[0].streams.docs.records_read).toBe(1);
    expect([...docsIn(dir).keys()].sort()).toEqual(['new.md', 'old.md']);
  });

  it('full refresh reports vanished files as deletions; the local hash embedder is recomputed, never cached', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline('full_refresh'), 'docs/a.md': 'Alpha.', 'docs/b.md': 'Bravo.' });
    await sync(dir);
    rmSync(join(dir, 'docs/a.md'));
    const r = await sync(dir);
    // jsonl lists its documents, so the engine's mark and sweep finds the vanished file (the read
    // starts from scratch: one record read, one document deleted).
    expect(r.connections[0].streams.docs).toMatchObject({
      records_read: 1,
      records_deleted: 1,
      embedding_requests: 0,
      embedding_cache_hits: 0,
    });
    // Recomputing a hash vector is cheaper than a cache lookup: no cache on disk at all.
    expect(existsSync(join(dir, '.sluice/state/embeddings'))).toBe(false);
    expect([...docsIn(dir).keys()]).toEqual(['b.md']);
  });

  it('overwrite replaces the whole stream with the new generation', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'p.yaml': pipeline('full_refresh', 'overwrite'), 'docs/a.md': 'Alpha.', 'docs/b.md': 'Bravo.' });
    await sync(dir);
    rmSync(join(dir, 'docs/a.md'));
    writeFiles(dir, { 'docs/c.md': 'Charlie.' });
    await sync(dir);
    expect([...docsIn(dir).keys()].sort()).toEqual(['b.md', 'c.md']);
  });

  it('jsonl and csv files give one record per line/row, keyed by primary_key', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': `version: 1
connections:
  - name: rows
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: jsonl, config: { path: ./out/rows.jsonl } }
    processing: { text_fields: [title, body] }
    streams: [ { name: items, primary_key: [[sku]], destination_sync_mode: append_dedup } ]
`,
      'data/a.jsonl': '{"sku":"A1","title":"Kettle","body":"Boils water"}\n{"sku":"A2","title":"Mug","body":"Holds tea"}\n',
      'data/b.csv': 'sku,title,body\nB1,Teapot,"Brews, pours"\n',
    });
    const r = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const lines = readJsonl(join(dir, 'out/rows.jsonl'));
    expect(lines.map((l) => l.document_id).sort()).toEqual(['A1', 'A2', 'B1']);
    expect(lines.find((l) => l.document_id === 'B1')!.content).toContain('Brews, pours');
    expect(lines.every((l) => l.embedding === undefined)).toBe(true);
  });

  it('a malformed JSONL line fails the stream with file and line, and commits nothing after it', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': pipeline('incremental', 'append').replace('path: ./docs', 'path: ./data, stream: docs'),
      'data/x.jsonl': '{"content":"ok"}\n{not json}\n',
    });
    const r = await runCli(['sync', join(dir, 'p.yaml')], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/invalid JSON/);
    expect(r.stderr).toMatch(/file x\.jsonl, line 2/);
    expect(r.stderr).toMatch(/connection docs, source file, stream docs/);
  });
});
