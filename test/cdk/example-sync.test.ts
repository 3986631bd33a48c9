// The example custom source (examples/custom-source) loaded by path from a pipeline file syncs
// incrementally into pgvector (PGlite served on loopback), survives SIGKILL mid-sync, and picks
// up updates and soft deletes on the next run.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadPipeline } from '../../src/config/load.ts';
import { sampleArticles, startArticlesApi, type ArticlesApi } from '../../examples/custom-source/fixture-server.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/sluice.js');
const schema = `cdk_example_${process.pid}`;
const dir = mkdtempSync(join(tmpdir(), 'sluice-cdk-example-'));
let api: ArticlesApi;
let db: pg.Client;

function sync(
  file: string,
  killWhen?: () => Promise<boolean>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [BIN, 'sync', file, '--json'], { cwd: dir, env: { ...process.env, ARTICLES_TOKEN: 'tok-123' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (killWhen) {
      timer = setInterval(async () => {
        if (await killWhen()) {
          clearInterval(timer);
          child.kill('SIGKILL');
        }
      }, 25);
    }
    child.on('close', (code, signal) => {
      clearInterval(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

const rows = async () =>
  (await db.query(`SELECT document_id, content FROM "${schema}".articles ORDER BY document_id::int`).catch(() => ({ rows: [] }))).rows as {
    document_id: string;
    content: string;
  }[];

beforeAll(async () => {
  api = await startArticlesApi({ articles: sampleArticles(60), token: 'tok-123', delayMs: 60 });
  db = new pg.Client({ connectionString: inject('pgliteUrl') });
  await db.connect();
  const source = relative(dir, join(ROOT, 'examples/custom-source/articles.ts'));
  writeFileSync(
    join(dir, 'pipeline.yaml'),
    `version: 1
state: { type: file, path: ./state }
connections:
  - name: articles
    source:
      type: ${source.startsWith('.') ? source : `./${source}`}
      config: { base_url: "${api.url}", api_token: "\${ARTICLES_TOKEN}", page_size: 10 }
    destination:
      type: pgvector
      config: { url: "${inject('pgliteUrl')}", schema: ${schema}, index: none }
    embedding: { provider: hash, dimensions: 32 }
    processing: { text_template: "{{title}}\\n\\n{{body}}", metadata_fields: [updated_at] }
    streams:
      - name: articles
        sync_mode: incremental
        destination_sync_mode: append_dedup
`,
  );
});
afterAll(async () => {
  await db?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
  await db?.end();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('example custom source → pgvector', () => {
  it('the shipped examples/custom-source/pipeline.yaml is a valid pipeline', async () => {
    const p = await loadPipeline(join(ROOT, 'examples/custom-source/pipeline.yaml'), { ARTICLES_API_URL: api.url });
    expect(p.connections[0].source.spec.name).toBe('articles');
    expect(p.connections[0].destination.spec.name).toBe('pgvector');
  });

  it('resumes after SIGKILL without loss or duplicates, then syncs only changes', async () => {
    // Killed once some batches are committed, while pages are still being fetched.
    const killed = await sync('pipeline.yaml', async () => (await rows()).length >= 25);
    expect(killed.signal).toBe('SIGKILL');
    const partial = (await rows()).length;
    expect(partial).toBeGreaterThanOrEqual(25);
    expect(partial).toBeLessThan(60);

    const resumed = await sync('pipeline.yaml');
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).not.toContain('tok-123');
    const s1 = JSON.parse(resumed.stdout).connections[0].streams.articles;
    // It resumed from the committed state instead of starting over.
    expect(s1.records_read).toBeLessThan(60);
    expect(s1.records_read).toBeGreaterThan(0);
    const all = await rows();
    expect(all.map((r) => r.document_id)).toEqual(Array.from({ length: 60 }, (_, i) => String(i + 1)));

    // Changes at the API: 2 updated (one inside a tie), 1 new, 1 soft-deleted.
    const later = (m: number) => new Date(Date.parse('2025-01-01T00:00:00Z') + m * 1000).toISOString();
    api.articles[4] = { ...api.articles[4], title: 'Article 5 (revised)', updated_at: later(1) };
    api.articles[5] = { ...api.articles[5], title: 'Article 6 (revised)', updated_at: later(1) };
    api.articles.push({ id: 61, title: 'Article 61', body: 'Brand new.', author: null, tags: [], updated_at: later(2) });
    api.articles[9] = { ...api.articles[9], deleted: true, updated_at: later(3) };
    const third = await sync('pipeline.yaml');
    expect(third.code, third.stderr).toBe(0);
    const s2 = JSON.parse(third.stdout).connections[0].streams.articles;
    expect(s2.records_read).toBe(4);
    const after = await rows();
    const ids = after.map((r) => r.document_id);
    expect(ids).toHaveLength(60);
    expect(ids).not.toContain('10');
    expect(ids).toContain('61');
    expect(after.find((r) => r.document_id === '5')!.content).toContain('Article 5 (revised)');

    // Nothing changed: nothing read.
    const fourth = JSON.parse((await sync('pipeline.yaml')).stdout).connections[0].streams.articles;
    expect(fourth.records_read).toBe(0);
  });
});
