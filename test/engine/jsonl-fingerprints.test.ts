// Issue 15 §1 end to end on the jsonl destination, through the real CLI with a counting
// OpenAI-compatible embedding server: an unchanged re-sync sends 0 embedding requests and leaves
// the file itself untouched (same inode, mtime and bytes); a metadata-only change sends 0 requests
// and rewrites only the metadata, keeping the stored text and vectors. In append_dedup and overwrite.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, runCli, STACK_LINE, tempDir } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import type { ScriptStep } from '../helpers/scripted-source.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';

const KEY = 'sk-jsonl-fingerprints-0000';
let openai: OpenAIServer;
beforeAll(async () => {
  openai = await startOpenAIServer({ latencyMs: 1 });
});
afterAll(() => openai?.close());

function pipeline(dir: string, mode: 'append_dedup' | 'overwrite') {
  let source = relative(dir, join(REPO, 'test/helpers/scripted-source.ts'));
  if (!source.startsWith('.')) source = `./${source}`;
  writeFileSync(
    join(dir, 'p.yaml'),
    `version: 1
connections:
  - name: jsonl-fp
    source: { type: ${source}, config: { script: ./script.json } }
    destination: { type: jsonl, config: { path: ./out/chunks.jsonl } }
    embedding: { provider: openai-compatible, base_url: ${openai.url}, api_key: "\${TEST_OPENAI_KEY}", model: text-embedding-3-small, dimensions: 8, batch_size: 16 }
    processing: { text_fields: [body], metadata_fields: [title], chunk_size: 60, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: items, sync_mode: full_refresh, destination_sync_mode: ${mode} } ]
`,
  );
}

const body = (i: number) => `Item ${i} describes valve ${i}. It opens towards basin ${i % 5} and closes slowly, without a sound.`;
function script(dir: string, n: number, title: (i: number) => string = (i) => `title ${i}`) {
  const steps: ScriptStep[] = [];
  for (let i = 1; i <= n; i++) {
    steps.push({ id: i, title: title(i), body: body(i) });
    if (i % 10 === 0) steps.push({ state: true });
  }
  writeFileSync(join(dir, 'script.json'), JSON.stringify(steps));
}

async function sync(dir: string) {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
  expect(r.code, r.stderr + r.stdout).toBe(0);
  expect(r.stderr).not.toMatch(STACK_LINE);
  return (JSON.parse(r.stdout) as { connections: { streams: Record<string, Record<string, number>> }[] }).connections[0].streams.items;
}

/** What identifies one version of the file: a rewrite (temp file + rename) changes the inode and mtime. */
const fileVersion = (file: string) => {
  const s = statSync(file, { bigint: true });
  return { ino: s.ino, mtimeNs: s.mtimeNs, bytes: readFileSync(file, 'utf8') };
};

describe.each(['append_dedup', 'overwrite'] as const)('jsonl fingerprints end to end (%s)', (mode) => {
  it('unchanged re-sync: 0 embedding requests, file untouched; metadata-only change: 0 requests, only metadata rewritten', async () => {
    const dir = tempDir(`sluice-jsonl-fp-${mode}-`);
    const file = join(dir, 'out/chunks.jsonl');
    pipeline(dir, mode);
    script(dir, 30);
    const first = await sync(dir);
    expect(first.records_written).toBe(30);
    expect(first.embedding_requests).toBeGreaterThan(0);
    const lines = readJsonl(file);
    expect(new Set(lines.map((l) => l.document_id)).size).toBe(30);
    for (const l of lines) {
      expect(l.fingerprint?.content).toMatch(/^[0-9a-f]{64}$/);
      expect(l.embedding).toHaveLength(8);
    }
    const before = fileVersion(file);

    // Unchanged: nothing chunked, embedded or written, and the file is the very same file.
    let requests = openai.stats.requests;
    await new Promise((r) => setTimeout(r, 20)); // a rewrite would show in the mtime
    const again = await sync(dir);
    expect(again).toMatchObject({ records_read: 30, records_unchanged: 30, records_written: 0, chunks_written: 0, embedding_requests: 0 });
    expect(openai.stats.requests).toBe(requests);
    expect(fileVersion(file)).toEqual(before);

    // Metadata only: titles of three documents change (title is metadata, not embedded text).
    const retitled = new Set([4, 17, 30]);
    script(dir, 30, (i) => (retitled.has(i) ? `renamed ${i}` : `title ${i}`));
    requests = openai.stats.requests;
    const meta = await sync(dir);
    expect(meta).toMatchObject({ records_metadata_updated: 3, records_unchanged: 27, embedding_requests: 0 });
    expect(openai.stats.requests).toBe(requests);
    const after = readJsonl(file);
    const key = (l: { document_id: string; chunk_index: number }) => `${l.document_id}#${l.chunk_index}`;
    const old = new Map(lines.map((l) => [key(l), l]));
    expect(after.map(key).sort()).toEqual(lines.map(key).sort());
    for (const l of after) {
      const was = old.get(key(l))!;
      // Text and vectors stay as they were; only the retitled documents' metadata and fingerprint change.
      expect([l.content, l.content_hash, l.embedding]).toEqual([was.content, was.content_hash, was.embedding]);
      expect(l.fingerprint!.content).toBe(was.fingerprint!.content);
      if (retitled.has(Number(l.document_id))) {
        expect(l.metadata.title).toBe(`renamed ${l.document_id}`);
        expect(l.fingerprint!.metadata).not.toBe(was.fingerprint!.metadata);
      } else expect(l).toEqual(was);
    }

    // And the next run finds the new metadata stored: nothing to do, file untouched again.
    const settled = fileVersion(file);
    await new Promise((r) => setTimeout(r, 20));
    expect(await sync(dir)).toMatchObject({ records_unchanged: 30, records_metadata_updated: 0, embedding_requests: 0 });
    expect(fileVersion(file)).toEqual(settled);
  }, 180_000);
});
