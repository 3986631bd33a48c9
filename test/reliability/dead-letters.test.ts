// Dead letters and error budgets through the CLI: records without a key, without text, or refused
// by the embedding API (a 400 from the OpenAI-compatible fixture) go to the store with stream, key,
// stage, error and payload; the sync goes on until the budget is spent; `sluice dead-letters
// retry` re-processes them exactly once after the cause is fixed; `purge` removes them.
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startOpenAIServer, type OpenAIServer, type OpenAIServerOptions } from '../fixtures/openai-server.ts';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { readJsonl } from '../helpers/jsonl.ts';

const KEY = 'sk-dead-letter-secret-0000';
const serverOpts: OpenAIServerOptions = { rejectInput: (t) => t.includes('POISON') };
let server: OpenAIServer;
beforeAll(async () => {
  server = await startOpenAIServer(serverOpts);
});
afterAll(() => server.close());

const pipeline = (errors: string) => `version: 1
connections:
  - name: items
    source: { type: file, config: { path: ./data, stream: items } }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
    embedding: { provider: openai, base_url: ${server.url}, api_key: \${TEST_OPENAI_KEY}, model: text-embedding-3-small, dimensions: 8, batch_size: 16 }
    processing: { text_fields: [title] }
    streams: [ { name: items, primary_key: [[sku]], destination_sync_mode: append_dedup } ]
${errors}`;

function data(n: number): string {
  const rows: string[] = [];
  for (let i = 0; i < n; i++) {
    if (i === 10) rows.push(JSON.stringify({ title: 'no key here' }));
    else if (i === 20) rows.push(JSON.stringify({ sku: `S${i}`, title: '' }));
    else if (i === 30) rows.push(JSON.stringify({ sku: `S${i}`, title: 'POISON pill', note: KEY }));
    else rows.push(JSON.stringify({ sku: `S${i}`, title: `item number ${i}` }));
  }
  return rows.join('\n') + '\n';
}

const cli = (dir: string, ...args: string[]) => runCli(args, { cwd: dir, env: { TEST_OPENAI_KEY: KEY } });

describe('dead letters', () => {
  it('stores bad records and goes on; retry re-processes them exactly once; purge removes the rest', { timeout: 240_000 }, async () => {
    const dir = tempDir('dead-letters-');
    writeFiles(dir, {
      'p.yaml': pipeline('    errors: { tolerance: all, max_error_rate: 0.05, dead_letter: { type: file } }\n'),
      'data/a.jsonl': data(100),
    });
    const r = await cli(dir, 'sync', 'p.yaml', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(KEY);
    const summary = JSON.parse(r.stdout).connections[0];
    expect(summary.dead_letters).toBe(3);
    expect(summary.streams.items.records_failed).toBe(3);
    const written = new Set(readJsonl(join(dir, 'out.jsonl')).map((l) => l.document_id));
    // 100 read: the keyless and the refused record are not written; the one without text has no chunks
    // (it is still passed on, so chunks of an older version would go) and is kept as a letter
    expect(written.size).toBe(97);
    expect(written.has('S20')).toBe(false);
    expect(written.has('S30')).toBe(false);

    const listed = await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json');
    expect(listed.code, listed.stderr).toBe(0);
    const letters = JSON.parse(listed.stdout).items as Array<Record<string, any>>;
    expect(letters.map((l) => [l.stage, l.key ?? null]).sort()).toEqual([
      ['embed', 'S30'],
      ['key', null],
      ['text', 'S20'],
    ]);
    const embed = letters.find((l) => l.stage === 'embed')!;
    expect(embed).toMatchObject({
      connection: 'items',
      stream: 'items',
      attempts: 0,
      payload: { sku: 'S30', title: 'POISON pill', note: '***' },
    });
    expect(embed.error).toMatch(/400.*rejected by the content policy/);
    expect(letters.find((l) => l.stage === 'key')!.error).toMatch(/primary key/);
    expect(listed.stdout).not.toContain(KEY);
    const text = await cli(dir, 'dead-letters', 'list', 'p.yaml');
    expect(text.stdout).toMatch(/items: 3 dead letter\(s\)/);
    expect(text.stdout).toMatch(/stream items {2}key S30 {2}stage embed {2}attempts 0/);

    // The cause is fixed at the provider: the refused record goes through; the others fail again.
    serverOpts.rejectInput = undefined;
    const retry = await cli(dir, 'dead-letters', 'retry', 'p.yaml', '--json');
    expect(retry.code).toBe(1); // some still fail
    const result = JSON.parse(retry.stdout)[0];
    expect(result).toMatchObject({ connection: 'items', retried: 3, succeeded: 1 });
    expect(result.failed.map((f: { key?: string }) => f.key ?? null).sort()).toEqual(['S20', null].sort());
    const after = readJsonl(join(dir, 'out.jsonl'));
    expect(after.filter((l) => l.document_id === 'S30').map((l) => l.content)).toEqual(['POISON pill']);
    expect(server.stats.embedded.get('POISON pill')).toBe(1);
    // exactly once: a second retry does not touch it again
    await cli(dir, 'dead-letters', 'retry', 'p.yaml', '--json');
    expect(server.stats.embedded.get('POISON pill')).toBe(1);
    const remaining = JSON.parse((await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json')).stdout).items;
    expect(remaining.map((l: { attempts: number }) => l.attempts)).toEqual([2, 2]);

    const purge = await cli(dir, 'dead-letters', 'purge', 'p.yaml');
    expect(purge.stdout).toMatch(/items: purged 2 dead letter\(s\)/);
    expect(JSON.parse((await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json')).stdout).items).toEqual([]);
    serverOpts.rejectInput = (t) => t.includes('POISON');
  });

  it(
    'fails the run when the budget is spent, and without tolerance the first bad record fails it as before',
    { timeout: 180_000 },
    async () => {
      const dir = tempDir('dead-letters-budget-');
      writeFiles(dir, { 'p.yaml': pipeline('    errors: { tolerance: all, max_error_rate: 0.01 }\n'), 'data/a.jsonl': data(100) });
      const spent = await cli(dir, 'sync', 'p.yaml', '--json');
      expect(spent.code).not.toBe(0);
      const conn = JSON.parse(spent.stdout).connections[0];
      expect(conn.error.message).toMatch(/^3 of 100 records failed \(3\.0%\), more than errors\.max_error_rate 1%/);
      expect(conn.error.hint).toMatch(/sluice dead-letters list/);

      writeFiles(dir, { 'p.yaml': pipeline('') });
      const strict = await cli(dir, 'sync', 'p.yaml', '--json');
      expect(strict.code).not.toBe(0);
      expect(JSON.parse(strict.stdout).connections[0].error.message).toMatch(/primary key/);
    },
  );

  it('keeps letters in a PostgreSQL table when asked', { timeout: 180_000 }, async () => {
    const dir = tempDir('dead-letters-pg-');
    const table = `dl_${Math.random().toString(36).slice(2, 8)}`;
    writeFiles(dir, {
      'p.yaml': pipeline(
        `    errors: { tolerance: all, max_error_rate: 0.05, dead_letter: { type: postgres, url: "${inject('pgUrl')}", table: ${table} } }\n`,
      ),
      'data/a.jsonl': data(100),
    });
    const r = await cli(dir, 'sync', 'p.yaml', '--json');
    expect(r.code, r.stderr).toBe(0);
    const db = new pg.Client({ connectionString: inject('pgUrl') });
    await db.connect();
    try {
      const { rows } = await db.query(`SELECT stream, key, stage, payload FROM public.${table} ORDER BY stage`);
      expect(rows.map((x) => x.stage)).toEqual(['embed', 'key', 'text']);
      expect(rows[0]).toMatchObject({ stream: 'items', key: 'S30', payload: { sku: 'S30', note: '***' } });
    } finally {
      await db.end();
    }
    const listed = JSON.parse((await cli(dir, 'dead-letters', 'list', 'p.yaml', '--json')).stdout).items;
    expect(listed).toHaveLength(3);
  });
});
