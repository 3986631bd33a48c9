// Through the real CLI, as users run it: validate (unsupported components, config against the
// manifest's spec), spec / discover / check on manifests, secrets never printed, and a news-API
// manifest synced into pgvector (PGlite server) — full, SIGKILLed mid-way and resumed, then
// incremental — ending equal to an uninterrupted run.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { STACK_LINE, runCli, startCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import { qualified } from '../destination-pgvector/sql.ts';
import { githubApi, newsApi, type Article } from './test/apis.ts';
import { MANIFESTS } from './test/read.ts';

const url = inject('pgliteUrl');
let admin: pg.Client;
beforeAll(async () => {
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
});
afterAll(async () => {
  await admin.end();
});

function pipeline(dir: string, file: string, body: string): string {
  writeFiles(dir, { [file]: `version: 1\nconnections:\n${body}` });
  return join(dir, file);
}

describe('sluice CLI on declarative manifests', () => {
  it(
    'validate names an unsupported component with its YAML path, and config that breaks the manifest spec',
    { timeout: 60_000 },
    async () => {
      const dir = tempDir('sluice-decl-validate-');
      const manifest = readFileSync(join(MANIFESTS, 'news.yaml'), 'utf8').replace(
        /        pagination_strategy:\n          type: PageIncrement/,
        '        pagination_strategy:\n          type: CustomPaginationStrategy\n          class_name: source_news.components.Pages',
      );
      writeFileSync(join(dir, 'custom.yaml'), manifest);
      copyFileSync(join(MANIFESTS, 'news.yaml'), join(dir, 'news.yaml'));
      const conn = (name: string, m: string, cfg: string) => `  - name: ${name}
    source:
      type: declarative
      config:
        manifest: ./${m}
        config: ${cfg}
    destination: { type: jsonl, config: { path: out.jsonl } }
`;
      const bad = pipeline(
        dir,
        'bad.yaml',
        conn('news', 'custom.yaml', '{ api_url: "http://127.0.0.1:9", api_key: k-123456, search_query: x, start_date: "2024-01-01" }'),
      );
      const r = await runCli(['validate', bad]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).not.toMatch(STACK_LINE);
      expect(r.stderr).toContain(
        `DeclarativeStream "articles" at streams[0].retriever.paginator.pagination_strategy: unsupported component 'CustomPaginationStrategy' (needs Python code: source_news.components.Pages)`,
      );
      expect(r.stderr).toMatch(/bad\.yaml:\d+: connections\[0\]\.source\.config\.manifest:/);

      const missing = pipeline(
        dir,
        'missing.yaml',
        conn('news', 'news.yaml', '{ api_url: "http://127.0.0.1:9", api_key: k-123456, start_date: "01/01/2024" }'),
      );
      const m = await runCli(['validate', missing]);
      expect(m.code).not.toBe(0);
      expect(m.stderr).toContain(
        `connections[0].source.config.config: missing required field "search_query" (from the manifest's spec.connection_specification)`,
      );
      expect(m.stderr).toMatch(/connections\[0\]\.source\.config\.config\.start_date: must match pattern/);
      expect(m.stderr).not.toContain('k-123456');

      const good = pipeline(
        dir,
        'good.yaml',
        conn('news', 'news.yaml', '{ api_url: "http://127.0.0.1:9", api_key: k-123456, search_query: x, start_date: "2024-01-01" }'),
      );
      const g = await runCli(['validate', good]);
      expect(g.stderr + g.stdout).toContain('valid (1 connection: news)');
      expect(g.code).toBe(0);
    },
  );

  it(
    'spec, connectors, discover and check work on manifests; secrets from the manifest spec are never printed',
    { timeout: 60_000 },
    async () => {
      const spec = await runCli(['spec', join(MANIFESTS, 'wiki.yaml')]);
      expect(spec.code, spec.stderr).toBe(0);
      const printed = JSON.parse(spec.stdout) as { spec: { connectionSpecification: { required: string[] } } };
      expect(printed.spec.connectionSpecification.required).toEqual(['api_url', 'email', 'api_token']);
      const list = await runCli(['connectors']);
      expect(list.stdout).toMatch(/source\s+declarative\s+Airbyte declarative \(low-code\) manifest \(full_refresh, incremental\)/);

      // An API that echoes the credential it rejected, as some do in their error bodies.
      const token = 'ghp_leaky_token_987654';
      const api = await githubApi({ token: 'the-right-token', repos: { 'acme/api': [] } });
      try {
        const dir = tempDir('sluice-decl-cli-');
        copyFileSync(join(MANIFESTS, 'github.yaml'), join(dir, 'github.yaml'));
        const file = pipeline(
          dir,
          'p.yaml',
          `  - name: gh
    source:
      type: declarative
      config:
        manifest: github.yaml
        config:
          api_url: "${api.url}"
          repositories: [acme/api]
          credentials: { option_title: PAT Credentials, personal_access_token: ${token} }
    destination: { type: jsonl, config: { path: out.jsonl } }
`,
        );
        const discover = await runCli(['discover', file]);
        expect(discover.code, discover.stderr).toBe(0);
        const catalog = JSON.parse(discover.stdout) as { catalog: { streams: { name: string; source_defined_primary_key: string[][] }[] } };
        expect(catalog.catalog.streams.map((s) => [s.name, s.source_defined_primary_key])).toEqual([
          ['issues', [['repository'], ['number']]],
        ]);

        const check = await runCli(['check', file, '--debug']);
        expect(check.code).not.toBe(0);
        expect(check.stdout).toMatch(/gh source: FAILED — GET http:\/\/127\.0\.0\.1:\d+\/repos\/acme\/api\/issues returned HTTP 401/);
        expect(api.requests[0].headers.authorization).toBe(`Bearer ${token}`); // it was sent…
        expect(check.stdout + check.stderr).not.toContain(token); // …and never printed
        const sync = await runCli(['sync', file, '--json']);
        expect(sync.code).not.toBe(0);
        expect(sync.stdout + sync.stderr).not.toContain(token);
        expect(sync.stderr).not.toMatch(STACK_LINE);
      } finally {
        await api.close();
      }
    },
  );
});

describe('news manifest into pgvector: full, SIGKILL + resume, incremental', () => {
  function articles(days: number, perDay: number, from = Date.parse('2024-01-01T00:00:00Z')): Article[] {
    const out: Article[] = [];
    for (let d = 0; d < days; d++)
      for (let i = 0; i < perDay; i++) {
        const at = new Date(from + d * 86_400_000 + (i + 1) * 3_600_000).toISOString().replace('.000Z', 'Z');
        out.push({
          url: `https://news.example/${d}-${i}`,
          title: `Day ${d} story ${i}`,
          description: `What happened on day ${d}, part ${i}.`,
          publishedAt: at,
        });
      }
    return out;
  }

  function write(dir: string, name: string, schema: string, apiUrl: string): string {
    // Daily windows, so a run has many checkpoints to be killed between.
    writeFileSync(join(dir, 'news.yaml'), readFileSync(join(MANIFESTS, 'news.yaml'), 'utf8').replace('step: P10D', 'step: P1D'));
    return pipeline(
      dir,
      `${name}.yaml`,
      `  - name: ${name}
    source:
      type: declarative
      config:
        manifest: ./news.yaml
        config: { api_url: "${apiUrl}", api_key: "\${NEWS_KEY}", search_query: sluice, start_date: "2024-01-01", end_date: "2024-03-01T00:00:00Z" }
    destination:
      type: pgvector
      config: { url: "${url}", schema: "${schema}", batch_rows: 10 }
    embedding: { provider: hash, dimensions: 16 }
    processing: { text_fields: [title, description], metadata_fields: [url, publishedAt], chunk_size: 500, chunk_unit: characters }
    streams:
      - { name: articles, sync_mode: incremental, destination_sync_mode: append_dedup }
`,
    );
  }

  async function rows(schema: string) {
    const { rows } = await admin.query<{ id: string; document_id: string; content: string; embedding: string }>(
      `SELECT id, document_id, content, embedding::text AS embedding FROM ${qualified(schema, 'articles')} ORDER BY id`,
    );
    return rows;
  }
  async function state(schema: string, connection: string) {
    const { rows } = await admin.query(`SELECT state FROM ${qualified(schema, '_sluice_state')} WHERE connection = $1`, [connection]);
    return rows[0]?.state as { streams: Record<string, Record<string, unknown>> } | undefined;
  }
  const env = { NEWS_KEY: 'news-key-e2e-123456' };
  async function sync(file: string) {
    const r = await runCli(['sync', file, '--json'], { env });
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(env.NEWS_KEY);
    return r;
  }

  it('a killed sync resumes to exactly what a clean run writes; the next run reads only new windows', { timeout: 300_000 }, async () => {
    const api = await newsApi({ apiKey: env.NEWS_KEY, articles: articles(59, 3) });
    try {
      const dir = tempDir('sluice-decl-pgv-');
      const tag = Math.random().toString(36).slice(2, 8);
      const crash = write(dir, 'crashy', `decl_crash_${tag}`, api.url);
      const clean = write(dir, 'clean', `decl_clean_${tag}`, api.url);

      // Start, wait for the first committed rows, SIGKILL.
      const { child, done } = startCli(['sync', crash, '--json'], { env });
      const started = Date.now();
      let seen = 0;
      while (Date.now() - started < 120_000) {
        const r = await admin
          .query(`SELECT count(*)::int AS n FROM ${qualified(`decl_crash_${tag}`, 'articles')}`)
          .catch(() => ({ rows: [{ n: 0 }] }));
        seen = r.rows[0].n as number;
        if (seen > 0) break;
        await sleep(5);
      }
      child.kill('SIGKILL');
      const killed = await done;
      expect(killed.signal).toBe('SIGKILL');
      const partial = (await rows(`decl_crash_${tag}`)).length;
      expect(partial).toBeGreaterThan(0);
      expect(partial).toBeLessThan(177);
      const savedAfterKill = await state(`decl_crash_${tag}`, 'crashy');

      api.requests.length = 0;
      await sync(crash);
      // Resumed from the saved window (less the 1-day lookback), not from the start date.
      const firstFrom = api.requests[0].query.from;
      const saved = savedAfterKill?.streams?.articles?.publishedAt as string | undefined;
      const lookbackFrom = (t: string) => new Date(Date.parse(t) - 86_400_000).toISOString().replace('.000Z', 'Z');
      expect(firstFrom).toBe(saved ? lookbackFrom(saved) : '2023-12-31T00:00:00Z');
      await sync(clean);
      const crashed = await rows(`decl_crash_${tag}`);
      expect(crashed).toHaveLength(177);
      expect(new Set(crashed.map((r) => r.document_id)).size).toBe(177);
      expect(crashed).toEqual(await rows(`decl_clean_${tag}`));
      expect(await state(`decl_crash_${tag}`, 'crashy')).toEqual(await state(`decl_clean_${tag}`, 'clean'));
      expect((await state(`decl_clean_${tag}`, 'clean'))?.streams.articles).toEqual({ publishedAt: '2024-02-28T03:00:00Z' });

      // Incremental: a late article and a new one; the run starts one day (lookback) before the state.
      api.articles.push(
        ...articles(1, 2, Date.parse('2024-02-28T10:00:00Z')).map((a, i) => ({ ...a, url: `https://news.example/late-${i}` })),
      );
      api.requests.length = 0;
      await sync(crash);
      expect(api.requests[0].query.from).toBe('2024-02-27T03:00:00Z');
      expect(api.requests.every((q) => q.query.from >= '2024-02-27T03:00:00Z')).toBe(true);
      const after = await rows(`decl_crash_${tag}`);
      expect(after).toHaveLength(179);
      expect(after.filter((r) => r.document_id.startsWith('https://news.example/late-')).map((r) => r.content)).toHaveLength(2);
    } finally {
      await api.close();
    }
  });
});
