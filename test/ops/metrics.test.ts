// Metrics against the real Prometheus and Pushgateway (Debian packages): a batch sync pushes its
// final metrics, which must equal its --json summary; a `--follow` CDC sync is scraped by
// Prometheus and its readiness follows the source database going away and coming back.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../../scripts/postgres-test-server.ts';
import { sql } from '../../connectors/source-postgres/test/helpers.ts';
import { startOpenAIServer, type OpenAIServer } from '../fixtures/openai-server.ts';
import { runCli, startCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { pgCtl } from '../helpers/pg-ctl.ts';
import { freePort, startPrometheus, startPushgateway, total, type PromSample } from '../helpers/prometheus.ts';

type Stats = Record<string, number>;
type Summary = {
  status: string;
  connections: Array<{ name: string; status: string; states_committed: number; streams: Record<string, Stats> }>;
};

const KEY = 'sk-metrics-test-0000';
const PER_STREAM: Array<[metric: string, field: string]> = [
  ['sluice_records_read_total', 'records_read'],
  ['sluice_records_written_total', 'records_written'],
  ['sluice_records_deleted_total', 'records_deleted'],
  ['sluice_records_skipped_total', 'records_skipped'],
  ['sluice_chunks_written_total', 'chunks_written'],
  ['sluice_chunks_deleted_total', 'chunks_deleted'],
  ['sluice_embedding_tokens_total', 'embedding_tokens'],
  ['sluice_embedding_cache_hits_total', 'embedding_cache_hits'],
];

describe('batch run: Pushgateway and textfile', () => {
  let openai: OpenAIServer;
  let gateway: Awaited<ReturnType<typeof startPushgateway>>;
  beforeAll(async () => {
    openai = await startOpenAIServer({ failRate: 0.25, seed: 11 });
    gateway = await startPushgateway();
  });
  afterAll(async () => {
    await gateway?.stop();
    await openai?.close();
  });

  it('pushes one group per connection whose values equal the --json summary', async () => {
    const dir = tempDir('sluice-metrics-push-');
    const files: Record<string, string> = {};
    for (let i = 0; i < 12; i++)
      files[`docs/d${i}.md`] = `# Doc ${i}\n\nPumps number ${i} move water. Valves hold pressure ${i * 3}. Pipes carry it along.\n`;
    for (let i = 0; i < 5; i++) files[`notes/n${i}.txt`] = `note ${i}: ${'words '.repeat(i * 20)}`;
    files['nightly.yaml'] = `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: { type: jsonl, config: { path: ./out/docs.jsonl } }
    embedding:
      provider: openai
      base_url: ${openai.url}
      api_key: \${TEST_OPENAI_KEY}
      model: text-embedding-3-small
      dimensions: 16
      batch_size: 4
      max_retries: 20
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters }
  - name: notes
    source: { type: file, config: { path: ./notes } }
    destination: { type: jsonl, config: { path: ./out/notes.jsonl } }
    embedding: { provider: hash, dimensions: 8 }
    processing: { chunk_size: 30, chunk_overlap: 0 }
`;
    writeFiles(dir, files);
    const textfile = join(dir, 'sluice.prom');
    const sync = async () => {
      const r = await runCli(['sync', 'nightly.yaml', '--json', '--pushgateway', gateway.url, '--metrics-textfile', textfile], {
        cwd: dir,
        env: { TEST_OPENAI_KEY: KEY },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout + r.stderr).not.toContain(KEY);
      return JSON.parse(r.stdout) as Summary;
    };

    const failuresBefore = openai.stats.failures;
    const first = await sync();
    const docs = first.connections[0].streams.docs;
    expect(docs.embedding_requests).toBeGreaterThan(3);
    expect(openai.stats.failures - failuresBefore).toBeGreaterThan(0); // retries happened

    const check = async (summary: Summary, retries: number) => {
      const groups = await gateway.groups();
      expect(groups.map((g) => g.labels).sort((a, b) => a.connection.localeCompare(b.connection))).toEqual([
        { job: 'sluice', pipeline: 'nightly', connection: 'docs' },
        { job: 'sluice', pipeline: 'nightly', connection: 'notes' },
      ]);
      for (const conn of summary.connections) {
        const group = groups.find((g) => g.labels.connection === conn.name)!;
        // A group holds only its own connection's series.
        for (const fam of Object.values(group.families)) for (const s of fam) expect(s.labels.connection ?? conn.name).toBe(conn.name);
        for (const [stream, stats] of Object.entries(conn.streams)) {
          for (const [metric, field] of PER_STREAM)
            expect([metric, total(group.families[metric], { stream })]).toEqual([metric, stats[field]]);
          expect(total(group.families.sluice_embedding_requests_total, { stream, outcome: 'success' })).toBe(stats.embedding_requests);
        }
        expect(total(group.families.sluice_state_commits_total)).toBe(conn.states_committed);
        expect(total(group.families.sluice_last_success_timestamp_seconds)).toBeGreaterThan(Date.now() / 1000 - 120);
      }
      const docsGroup = groups.find((g) => g.labels.connection === 'docs')!;
      // text-embedding-3-small: $0.02 per million tokens.
      const tokens = summary.connections[0].streams.docs.embedding_tokens;
      expect(total(docsGroup.families.sluice_embedding_estimated_cost_usd_total)).toBeCloseTo((tokens * 0.02) / 1e6, 12);
      expect(total(docsGroup.families.sluice_retries_total)).toBe(retries);
    };
    await check(first, openai.stats.failures - failuresBefore);

    // The textfile holds the same values; written atomically (no temp file left behind).
    const text = readFileSync(textfile, 'utf8');
    expect(text).toContain(`sluice_records_read_total{pipeline="nightly",connection="docs",stream="docs"} ${docs.records_read}\n`);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);

    // A second run replaces each group (PUT): nothing changed, so everything came from the cache.
    const failuresMid = openai.stats.failures;
    const second = await sync();
    expect(second.connections[0].streams.docs.embedding_requests).toBe(0);
    await check(second, openai.stats.failures - failuresMid);

    // A pod of a Kubernetes Indexed Job (a shard) pushes to a group of its own.
    const shard = await runCli(['sync', 'nightly.yaml', '--connection', 'notes', '--pushgateway', gateway.url], {
      cwd: dir,
      env: { TEST_OPENAI_KEY: KEY, JOB_COMPLETION_INDEX: '2' },
    });
    expect(shard.code, shard.stderr).toBe(0);
    const labels = (await gateway.groups()).map((g) => g.labels);
    expect(labels).toContainEqual({ job: 'sluice', pipeline: 'nightly', connection: 'notes', shard: '2' });
    expect(labels).toHaveLength(3);
  });

  it('rejects a malformed --pushgateway before syncing', async () => {
    const dir = tempDir('sluice-metrics-badurl-');
    writeFiles(dir, {
      'p.yaml': `version: 1\nconnections:\n  - name: a\n    source: { type: file, config: { path: ./d } }\n    destination: { type: jsonl, config: { path: ./o.jsonl } }\n`,
      'd/x.md': 'x',
    });
    const r = await runCli(['sync', 'p.yaml', '--pushgateway', 'pushgateway:9091'], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--pushgateway expects an http(s) URL');
    expect(existsSync(join(dir, 'o.jsonl'))).toBe(false);
  });
});

describe('--follow: scraped by Prometheus; readiness follows the source database', () => {
  let pg: PostgresServer;
  let prometheus: Awaited<ReturnType<typeof startPrometheus>> | undefined;
  beforeAll(async () => {
    pg = await startPostgres();
  });
  afterAll(async () => {
    await prometheus?.stop();
    await pg?.stop().catch(() => undefined); // already stopped when the test failed mid-outage
  });

  it('serves metrics, health and readiness while streaming changes', async () => {
    await sql(pg.url, `CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL)`);
    await sql(pg.url, `INSERT INTO items SELECT i, 'item number ' || i FROM generate_series(1, 5) i`);
    const dir = tempDir('sluice-metrics-follow-');
    writeFiles(dir, {
      'cdc.yaml': `version: 1
connections:
  - name: items
    source:
      type: postgres
      config: { url: ${JSON.stringify(pg.url)}, cdc: { lag_report_seconds: 1, heartbeat_seconds: 1 } }
    destination: { type: jsonl, config: { path: out.jsonl } }
    embedding: { provider: hash, dimensions: 8 }
    processing: { text_fields: [body] }
    streams: [ { name: items, sync_mode: cdc, destination_sync_mode: append_dedup } ]
`,
    });
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const run = startCli(['sync', 'cdc.yaml', '--follow', '--json', '--metrics-port', String(port), '--stall-seconds', '5'], { cwd: dir });
    let stderr = '';
    run.child.stderr!.on('data', (d) => (stderr += d));
    prometheus = await startPrometheus([`127.0.0.1:${port}`]);
    const status = (path: string) =>
      fetch(base + path).then(
        (r) => r.status,
        () => 0,
      );
    const until = async (what: string, cond: () => Promise<boolean>, ms = 60_000) => {
      const end = Date.now() + ms;
      while (!(await cond())) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; sync ${run.child.exitCode ?? 'running'}, stderr:\n${stderr}`);
        await sleep(200);
      }
    };
    const promValue = async (expr: string) => total(await prometheus!.query(expr));
    const recordsRead = () => promValue('sum(sluice_records_read_total{stream="items"})');

    try {
      await until('the snapshot, seen by Prometheus', async () => (await recordsRead()) === 5);
      expect(await status('/readyz')).toBe(200);
      expect(await status('/healthz')).toBe(200);
      await until('Prometheus to see sluice_ready 1', async () => (await promValue('sluice_ready')) === 1);

      await sql(pg.url, `INSERT INTO items VALUES (6, 'six'), (7, 'seven'), (8, 'eight')`);
      await until('the changes, seen by Prometheus', async () => (await recordsRead()) === 8);
      const chunks = await prometheus.query('sluice_chunks_written_total');
      expect(chunks.map((s: PromSample) => [s.labels.pipeline, s.labels.connection, s.labels.stream])).toEqual([['cdc', 'items', 'items']]);
      expect(total(chunks)).toBe(8);
      await until(
        'slot WAL bytes',
        async () => (await prometheus!.query('sluice_replication_slot_wal_bytes{kind="retained"}')).length === 1,
      );
      await until('CDC lag', async () => (await prometheus!.query('sluice_replication_lag_seconds')).length === 1);
      expect(await promValue('sluice_replication_lag_seconds')).toBeLessThan(30);
      expect(await promValue('sluice_state_commits_total')).toBeGreaterThan(0);
      expect(await promValue('time() - sluice_last_commit_timestamp_seconds')).toBeLessThan(60);

      // Idle for longer than --stall-seconds: the CDC heartbeat's commits keep it ready.
      const commits = await promValue('sluice_state_commits_total');
      await sleep(8_000);
      expect(await status('/readyz')).toBe(200);
      await until('heartbeat commits, seen by Prometheus', async () => (await promValue('sluice_state_commits_total')) > commits);

      // The database goes away: not ready (but alive); it comes back: ready again, and streaming.
      pgCtl(pg, '-m', 'fast', 'stop');
      await until('/readyz 503', async () => (await status('/readyz')) === 503);
      expect(await status('/healthz')).toBe(200);
      await until('Prometheus to see sluice_ready 0', async () => (await promValue('sluice_ready')) === 0);
      expect(run.child.exitCode).toBeNull();
      pgCtl(pg, 'start');
      await until('/readyz 200 again', async () => (await status('/readyz')) === 200, 90_000);
      await sql(pg.url, `INSERT INTO items VALUES (9, 'nine'), (10, 'ten')`);
      await until('the new rows after the outage', async () => (await recordsRead()) >= 10);
      expect(await promValue('sum(sluice_errors_total)')).toBeGreaterThanOrEqual(1);
      const out = readFileSync(join(dir, 'out.jsonl'), 'utf8').trim().split('\n');
      await until('all ten documents in the destination', async () => {
        const docs = new Set(
          readFileSync(join(dir, 'out.jsonl'), 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l).document_id),
        );
        return docs.size === 10;
      });
      expect(out.length).toBeGreaterThan(0);
    } finally {
      run.child.kill('SIGTERM');
    }
    const res = await run.done;
    // `sync --follow` stopped by SIGTERM after a clean shutdown exits 0 (README, Exit codes).
    expect(res.code, res.stderr).toBe(0);
    expect((JSON.parse(res.stdout) as Summary).status).toBe('interrupted');
    expect(await status('/healthz')).toBe(0); // the server is gone with the process
  }, 240_000);
});
