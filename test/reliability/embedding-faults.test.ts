// Embedding server faults: malformed JSON, fewer vectors than inputs, vectors of the wrong
// dimension. Each stops the run in words with nothing wrong written; a plain re-run ends exact,
// and texts embedded before the fault are not sent again (never paid twice).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixtureVector, startOpenAIServer, type OpenAIServer, type OpenAIServerOptions } from '../fixtures/openai-server.ts';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const KEY = 'sk-embedding-faults-0000';
const opts: OpenAIServerOptions = {};
let server: OpenAIServer;
beforeAll(async () => {
  server = await startOpenAIServer(opts);
});
afterAll(() => server.close());

const pipeline = () => `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs, checkpoint_every: 2 } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    embedding: { provider: openai, base_url: ${server.url}, api_key: \${TEST_OPENAI_KEY}, model: text-embedding-3-small, dimensions: 8, batch_size: 4, concurrency: 1, max_retries: 2 }
    processing: { chunk_size: 200, chunk_overlap: 0, chunk_unit: characters }
    streams: [ { name: docs, sync_mode: incremental, destination_sync_mode: append_dedup } ]
`;

describe('embedding server faults', () => {
  for (const [kind, message] of [
    ['malformed-json', /embedding/i],
    ['fewer-vectors', /embedding/i],
    ['wrong-dimensions', /returned 7 dimensions, expected 8|7 dimensions|dimension/i],
  ] as const) {
    it(`${kind}: stops in words, writes nothing wrong, and a re-run ends exact without paying twice`, { timeout: 180_000 }, async () => {
      const dir = tempDir(`emb-fault-${kind}-`);
      const files: Record<string, string> = { 'p.yaml': pipeline() };
      for (let i = 0; i < 24; i++) files[`docs/f${String(i).padStart(2, '0')}.txt`] = `Document ${i} (${kind}) talks about item ${i * 13}.`;
      writeFiles(dir, files);
      const before = new Map(server.stats.embedded);
      opts.fault = { kind, afterRequests: server.stats.requests + 2 };
      const broken = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
      expect(opts.fault.done).toBe(true);
      expect(broken.code).not.toBe(0);
      expect(broken.stdout + broken.stderr).not.toContain(KEY);
      expect(broken.stderr).not.toMatch(STACK_LINE);
      expect(JSON.parse(broken.stdout).connections[0].error.message).toMatch(message);
      // Whatever was written is right: every stored vector is the fixture's vector of its text.
      const check = () => {
        for (const l of readJsonl(join(dir, 'out.jsonl'))) expect(l.embedding).toEqual(Array.from(fixtureVector(l.content, 8)));
      };
      try {
        check();
      } catch (e) {
        if (!String(e).includes('ENOENT')) throw e;
      }
      opts.fault = undefined;
      const fixed = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
      expect(fixed.code, fixed.stderr).toBe(0);
      const lines = readJsonl(join(dir, 'out.jsonl'));
      expect(new Set(lines.map((l) => l.document_id)).size).toBe(24);
      check();
      // Texts embedded by a good response were not sent again; at most the broken batch was.
      const sentTwice = lines.filter((l) => (server.stats.embedded.get(l.content) ?? 0) - (before.get(l.content) ?? 0) > 1);
      expect(sentTwice.length).toBeLessThanOrEqual(4);
      expect(readFileSync(join(dir, 'out.jsonl'), 'utf8')).not.toContain('NaN');
    });
  }
});

describe('embedding request hanging past the timeout', () => {
  // Generous timeouts and retries: on a loaded machine a normal answer may be slow too.
  const hanging = (retries: number) => pipeline().replace('max_retries: 2 }', `max_retries: ${retries}, timeout_ms: 5000 }`);
  for (const [hangs, retries, outcome] of [
    [1, 4, 'abandoned at the timeout and retried: the run succeeds'],
    [2, 1, 'every attempt hangs: the run fails naming the timeout'],
  ] as const) {
    it(`${hangs} hung request(s): ${outcome}; nothing is paid twice, and a re-run sends nothing`, { timeout: 180_000 }, async () => {
      const dir = tempDir(`emb-hang-${hangs}-`);
      const files: Record<string, string> = { 'p.yaml': hanging(retries) };
      for (let i = 0; i < 24; i++) files[`docs/f${String(i).padStart(2, '0')}.txt`] = `Hung document ${i} (${hangs}) about item ${i * 7}.`;
      writeFiles(dir, files);
      const texts = () => [...server.stats.embedded].filter(([t]) => t.includes(`(${hangs})`));
      // A hang on the third request: two batches were answered before it.
      const requestsAtStart = server.stats.requests;
      opts.hang = { afterRequests: requestsAtStart + 2, count: hangs };
      const started = Date.now();
      const first = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
      const elapsed = Date.now() - started;
      expect(opts.hang.hung).toBe(hangs);
      expect(opts.hang.abandoned, 'the client closed every hung request').toBe(hangs);
      expect(elapsed).toBeGreaterThanOrEqual(5000 * hangs);
      expect(first.stderr).not.toMatch(STACK_LINE);
      if (hangs === 1) expect(first.code, first.stderr).toBe(0);
      else {
        expect(first.code).not.toBe(0);
        const err = JSON.parse(first.stdout).connections[0].error;
        expect(err.message).toMatch(
          /embedding request to openai model text-embedding-3-small at 127\.0\.0\.1:\d+ failed after 2 attempts: .*timed out/i,
        );
        expect(err.hint).toMatch(/run the sync again to resume/);
        // The batches queued behind the failed one were not sent: an answer the run would not wait
        // for is money spent for nothing (and, uncached, spent again by the re-run).
        await new Promise((r) => setTimeout(r, 300));
        expect(server.stats.requests - requestsAtStart, 'two answered, then the hung attempts, then nothing').toBe(2 + hangs);
      }
      // Texts answered in the first run (a slow answer the client gave up on may count twice here:
      // the provider did the work; that is the price of a timeout, not a re-send).
      const paid = new Map(texts());
      opts.hang = undefined;
      const requestsBefore = server.stats.requests;
      const second = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
      expect(second.code, second.stderr).toBe(0);
      const lines = readJsonl(join(dir, 'out.jsonl'));
      expect(new Set(lines.map((l) => l.document_id)).size).toBe(24);
      expect(lines.length).toBe(24);
      for (const l of lines) expect(l.embedding).toEqual(Array.from(fixtureVector(l.content, 8)));
      // Nothing answered in the first run was sent again; a hung request is never answered.
      expect(texts().length).toBe(24);
      expect(texts().filter(([t, n]) => n !== (paid.get(t) ?? 1))).toEqual([]);
      if (hangs === 1) expect(server.stats.requests, 'the re-run had nothing to embed').toBe(requestsBefore);
      // And a further run has nothing left to send.
      const beforeThird = server.stats.requests;
      const third = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });
      expect(third.code).toBe(0);
      expect(server.stats.requests).toBe(beforeThird);
    });
  }
});
