// End to end through the real CLI: file source → jsonl destination, embedded by the openai
// provider talking to the OpenAI-compatible fixture (which injects 429/500s).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { fixtureVector, startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';

let server: OpenAIServer;
beforeAll(async () => {
  server = await startOpenAIServer({ failRate: 0.2, latencyMs: 5, seed: 3 });
});
afterAll(() => server.close());

const pipeline = (url: string) => `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: { type: jsonl, config: { path: ./out/docs.jsonl } }
    embedding:
      provider: openai
      base_url: ${url}
      api_key: \${TEST_OPENAI_KEY}
      model: text-embedding-3-small
      dimensions: 16
      batch_size: 8
      concurrency: 4
      max_retries: 10
    processing: { chunk_size: 120, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: full_refresh, destination_sync_mode: overwrite } ]
`;

const fileText = (i: number, version = 1) =>
  `File ${i} opens with its own sentence about pumps number ${i}. ` +
  `The second sentence of file ${i} describes valves and pressure ${i * 7}. ` +
  `A third sentence in file ${i} mentions pipes, flanges and gaskets. ` +
  `The closing sentence of file ${i} is version ${version}.`;

type Summary = { connections: Array<{ status: string; streams: Record<string, Record<string, number | null>> }> };
const KEY = 'sk-e2e-secret-key-0000';

async function sync(dir: string, ...args: string[]): Promise<Summary> {
  const r = await runCli(['sync', join(dir, 'p.yaml'), '--json', ...args], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout + r.stderr).not.toContain(KEY);
  return JSON.parse(r.stdout) as Summary;
}

describe('sync with the openai provider', () => {
  it('embeds every chunk exactly once despite 20% failures, then never pays twice', async () => {
    const dir = tempDir();
    const files: Record<string, string> = { 'p.yaml': pipeline(server.url) };
    for (let i = 0; i < 30; i++) files[`docs/f${i}.txt`] = fileText(i);
    writeFiles(dir, files);

    const first = await sync(dir);
    const lines = readJsonl(join(dir, 'out/docs.jsonl'));
    expect(lines.length).toBeGreaterThan(60);
    expect(new Set(lines.map((l) => l.id)).size).toBe(lines.length);
    for (const l of lines) expect(Float32Array.from(l.embedding!)).toEqual(fixtureVector(l.content, 16));
    expect(server.stats.failures).toBeGreaterThan(0);
    // Every chunk was embedded by exactly one successful request.
    expect(server.stats.embedded.size).toBe(lines.length);
    expect([...server.stats.embedded.values()].every((n) => n === 1)).toBe(true);
    const stats1 = first.connections[0].streams.docs;
    expect(stats1.embedding_requests).toBe(server.stats.requests);
    expect(stats1.embedding_tokens).toBe(server.stats.tokens);

    // Unchanged data, full refresh: every document recognised by its fingerprint (docs/fingerprints.md),
    // so nothing is embedded, looked up in the cache or written: zero requests.
    const requestsBefore = server.stats.requests;
    const second = await sync(dir);
    expect(server.stats.requests).toBe(requestsBefore);
    expect(second.connections[0].streams.docs).toMatchObject({
      embedding_requests: 0,
      embedding_tokens: 0,
      embedding_cache_hits: 0,
      records_unchanged: second.connections[0].streams.docs.records_read,
    });
    expect(readJsonl(join(dir, 'out/docs.jsonl'))).toHaveLength(lines.length);

    // One file changes its last sentence: only that chunk is embedded again.
    writeFileSync(join(dir, 'docs/f3.txt'), fileText(3, 2));
    const inputsBefore = server.stats.inputs;
    await sync(dir);
    expect(server.stats.inputs - inputsBefore).toBe(1);
    expect([...server.stats.embedded.keys()].at(-1)).toContain('version 2');

    // Dry run: counts what would be embedded and what it costs, calls nothing.
    writeFileSync(join(dir, 'docs/f4.txt'), fileText(4, 3));
    const requestsBeforeDryRun = server.stats.requests;
    const dry = await sync(dir, '--dry-run');
    expect(server.stats.requests).toBe(requestsBeforeDryRun);
    const d = dry.connections[0].streams.docs;
    expect(d.chunks_to_embed).toBe(1);
    expect(d.tokens_to_embed).toBeGreaterThan(5);
    expect(d.estimated_cost_usd).toBeGreaterThan(0); // text-embedding-3-small list price (the summary rounds it)
    expect(d.estimated_cost_usd).toBeCloseTo(((d.tokens_to_embed as number) * 0.02) / 1_000_000, 5);
  }, 60_000);
});
