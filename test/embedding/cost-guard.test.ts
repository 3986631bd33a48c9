// The cost guard (embedding.max_cost_usd / sync --max-cost) and the dry-run plan, through the real
// CLI: file source (incremental, a checkpoint per file) → jsonl, embedded by the openai provider
// talking to the OpenAI-compatible fixture, which counts requests and tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { utimesSync } from 'node:fs';
import { join } from 'node:path';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { tokenizerFor } from '../../src/text/tokenizer.ts';
import { CostGuard, CostLimitError, pacedSeconds } from '../../src/engine/cost-guard.ts';

let server: OpenAIServer;
beforeAll(async () => {
  server = await startOpenAIServer({ latencyMs: 5 });
});
afterAll(() => server.close());

const FILES = 10;
// One chunk per file, one file per request (batch_size 1), requests in parallel (concurrency 4).
const pipeline = (url: string, embeddingExtra = '') => `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs, checkpoint_every: 1 } }
    destination: { type: jsonl, config: { path: ./out/docs.jsonl } }
    embedding:
      provider: openai
      base_url: ${url}
      api_key: test-key
      model: text-embedding-3-small
      dimensions: 8
      batch_size: 1
      concurrency: 4
      price_per_million_tokens: 1000000   # $1 a token: costs are token counts
${embeddingExtra}
    processing: { chunk_size: 2000, chunk_overlap: 0, chunk_unit: characters, splitter: none }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`;

/** Texts of different lengths, so a wrong request count cannot add up to the same cost. */
const fileText = (i: number) => `File ${i} is about pumps${' and valves'.repeat(i + 1)}, version one.`;
const tokens = (i: number) => tokenizerFor('text-embedding-3-small').count(fileText(i));

function project(embeddingExtra = '') {
  const dir = tempDir();
  const files: Record<string, string> = { 'p.yaml': pipeline(server.url, embeddingExtra) };
  for (let i = 0; i < FILES; i++) files[`docs/f${String(i).padStart(2, '0')}.txt`] = fileText(i);
  writeFiles(dir, files);
  // Read in this order: the file source's cursor is (mtime, path).
  for (let i = 0; i < FILES; i++) {
    const t = new Date(Date.UTC(2026, 0, 1, 0, 0, i));
    utimesSync(join(dir, `docs/f${String(i).padStart(2, '0')}.txt`), t, t);
  }
  return dir;
}

const sync = (dir: string, ...args: string[]) => runCli(['sync', join(dir, 'p.yaml'), ...args], { cwd: dir });

type Summary = {
  status: string;
  connections: Array<{
    status: string;
    error?: { message: string; hint?: string };
    cost?: { spent_usd: number; limit_usd: number; stopped: boolean };
    plan?: Record<string, number | boolean | null>;
    streams: Record<string, Record<string, number | null>>;
  }>;
};

describe('cost guard', () => {
  it('stops before the request that would go over embedding.max_cost_usd, keeps what was committed, and a re-run with a higher limit pays nothing twice', async () => {
    const before = 4;
    const spent = Array.from({ length: before }, (_, i) => tokens(i)).reduce((a, b) => a + b, 0);
    // Room for the first four files and half of the fifth.
    const limit = spent + tokens(before) / 2;
    const dir = project(`      max_cost_usd: ${limit}`);
    const requests0 = server.stats.requests;
    const tokens0 = server.stats.tokens;

    const stopped = await sync(dir);
    expect(stopped.code, stopped.stderr).toBe(1);
    // Exactly the four requests that fit were made, although four were allowed in flight at once.
    expect(server.stats.requests - requests0).toBe(before);
    expect(server.stats.tokens - tokens0).toBe(spent);
    for (let i = 0; i < FILES; i++) expect(server.stats.embedded.get(fileText(i)) ?? 0).toBe(i < before ? 1 : 0);
    // The message says what was spent, the limit and how to go on; no stack trace.
    const out = stopped.stdout + stopped.stderr;
    expect(out).toContain(`stopped before an embedding request of ${tokens(before)} tokens`);
    expect(out).toContain(`$${spent.toFixed(2)} spent of $${limit.toFixed(2)} (embedding.max_cost_usd)`);
    expect(out).toMatch(/raise embedding\.max_cost_usd.*or run the sync again/);
    expect(stopped.stdout).toContain(`cost: $${spent.toFixed(2)} of $${limit.toFixed(2)} allowed (stopped at the limit)`);
    expect(out).not.toMatch(STACK_LINE);
    // What was embedded was written and checkpointed: four documents, nothing half-written.
    const written = readJsonl(join(dir, 'out/docs.jsonl'));
    expect(written.map((l) => l.content).sort()).toEqual(Array.from({ length: before }, (_, i) => fileText(i)).sort());

    // Again, with --max-cost above what is left: it resumes after the checkpoint and finishes.
    const rest = Array.from({ length: FILES - before }, (_, i) => tokens(before + i)).reduce((a, b) => a + b, 0);
    const resumed = await sync(dir, '--json', '--max-cost', String(rest + 1));
    expect(resumed.code, resumed.stderr).toBe(0);
    const summary = JSON.parse(resumed.stdout) as Summary;
    const c = summary.connections[0];
    expect(c.streams.docs.records_read).toBe(FILES - before); // the saved state was used
    expect(c.cost).toEqual({ spent_usd: rest, limit_usd: rest + 1, stopped: false });
    expect(server.stats.requests - requests0).toBe(FILES);
    for (let i = 0; i < FILES; i++) expect(server.stats.embedded.get(fileText(i))).toBe(1);
    expect(readJsonl(join(dir, 'out/docs.jsonl'))).toHaveLength(FILES);
  }, 60_000);

  it('--max-cost overrides embedding.max_cost_usd, and a limit below the first request writes nothing', async () => {
    const dir = project('      max_cost_usd: 1000000');
    const requests0 = server.stats.requests;
    const r = await sync(dir, '--json', '--max-cost', String(tokens(0) - 1));
    expect(r.code, r.stderr).toBe(1);
    expect(server.stats.requests).toBe(requests0);
    const c = (JSON.parse(r.stdout) as Summary).connections[0];
    expect(c.status).toBe('failed');
    expect(c.error?.message).toContain('(--max-cost)');
    expect(c.error?.hint).toContain('raise --max-cost');
    expect(c.cost).toEqual({ spent_usd: 0, limit_usd: tokens(0) - 1, stopped: true });
    expect(readJsonl(join(dir, 'out/docs.jsonl'))).toHaveLength(0);
  }, 60_000);

  it('refuses a limit it cannot keep (no known price) before any request', async () => {
    const dir = tempDir();
    writeFiles(dir, {
      'p.yaml': `version: 1
connections:
  - name: local
    source: { type: file, config: { path: ./docs } }
    destination: { type: jsonl, config: { path: ./out/docs.jsonl } }
    embedding: { provider: openai-compatible, base_url: ${server.url}, model: nomic-embed-text, max_cost_usd: 5 }
`,
      'docs/a.txt': 'Some text about pumps.',
    });
    const requests0 = server.stats.requests;
    for (const args of [[], ['--dry-run']]) {
      const r = await sync(dir, ...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        'a cost limit is set (embedding.max_cost_usd 5) but the price of openai-compatible model nomic-embed-text is not known',
      );
      expect(r.stderr).toContain('set embedding.price_per_million_tokens');
      expect(r.stderr).not.toMatch(STACK_LINE);
    }
    expect(server.stats.requests).toBe(requests0);
  }, 60_000);

  it('rejects a --max-cost that is not an amount', async () => {
    const r = await runCli(['sync', 'p.yaml', '--max-cost', 'lots']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('expected an amount in USD');
  });
});

describe('dry-run plan', () => {
  it('counts documents, chunks, tokens, requests, cost and the time under the rate limits, calling nothing', async () => {
    const total = Array.from({ length: FILES }, (_, i) => tokens(i)).reduce((a, b) => a + b, 0);
    const dir = project(`      max_cost_usd: ${total - 1}\n      requests_per_minute: 6`);
    const requests0 = server.stats.requests;
    const r = await sync(dir, '--dry-run', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(server.stats.requests).toBe(requests0);
    const c = (JSON.parse(r.stdout) as Summary).connections[0];
    expect(c.plan).toEqual({
      documents_to_write: FILES,
      documents_to_delete: 0,
      documents_unchanged: 0,
      chunks_to_write: FILES,
      chunks_to_embed: FILES,
      tokens_to_embed: total,
      requests_to_embed: FILES,
      estimated_cost_usd: total,
      // 6 a minute: one at once (ten seconds' worth), then one every 10 s.
      estimated_seconds: (FILES - 1) * 10,
      max_cost_usd: total - 1,
      within_max_cost: false,
    });
    expect(c.streams.docs).toMatchObject({ documents_to_write: FILES, documents_to_embed: FILES, documents_cached: 0 });
    expect(readJsonl(join(dir, 'out/docs.jsonl'))).toHaveLength(0);

    const human = await sync(dir, '--dry-run');
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain(
      `plan: ${FILES} documents to write, 0 to delete, 0 unchanged; ${FILES} chunks, ${FILES} to embed (${total} tokens, ~${FILES} requests); est. cost $${total.toFixed(2)}; embedding time ~90s under the configured rate limits`,
    );
    expect(human.stdout).toContain('a real run would stop before the request that goes over it');

    // After a real run (without the slow pacing) everything is stored with its fingerprint: nothing to
    // write, embed or pay (docs/fingerprints.md).
    writeFiles(dir, { 'p.yaml': pipeline(server.url, `      max_cost_usd: ${total}`) });
    expect((await sync(dir)).code).toBe(0);
    const again = await sync(dir, '--dry-run', '--json', '--full-refresh');
    const plan = (JSON.parse(again.stdout) as Summary).connections[0].plan;
    expect(plan).toMatchObject({
      documents_to_write: 0,
      documents_unchanged: FILES,
      chunks_to_embed: 0,
      requests_to_embed: 0,
      estimated_cost_usd: 0,
      within_max_cost: true,
    });
    expect((JSON.parse(again.stdout) as Summary).connections[0].streams.docs).toMatchObject({ documents_to_embed: 0 });
  }, 60_000);
});

describe('CostGuard', () => {
  it('decides in turn order, whatever order the reservations arrive in', async () => {
    const guard = new CostGuard(10, 1_000_000, 'embedding.max_cost_usd', 'c'); // $1 a token
    const [a, b, c] = [guard.turn(), guard.turn(), guard.turn()];
    const third = c.reserve(1); // asks first, decided last
    const second = b.reserve(6);
    (await a.reserve(5)).paid(5);
    await expect(second).rejects.toBeInstanceOf(CostLimitError);
    await expect(third).rejects.toBeInstanceOf(CostLimitError); // once stopped, nothing more is sent
    expect(guard.spentUsd).toBe(5);
  });

  it('estimates paced time like the rate limiter: a ten-second burst, then the steady rate', () => {
    expect(pacedSeconds(10, 0, {})).toBeUndefined();
    expect(pacedSeconds(10, 0, { requests_per_minute: 60 })).toBe(0);
    expect(pacedSeconds(70, 0, { requests_per_minute: 60 })).toBe(60);
    expect(pacedSeconds(1, 120_000, { tokens_per_minute: 60_000 })).toBe(110);
  });
});
