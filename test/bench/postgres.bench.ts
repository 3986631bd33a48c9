// PostgreSQL source bench, on a throwaway local PostgreSQL 15:
//  1. full refresh of 1M rows (narrow rows, and ~1 KB text rows) into a null sink, against
//     `psql -c "\copy (select …) to '/dev/null'"` on the same server: rows/s and ratio (target ≥ 50 %);
//  2. peak RSS of the read at 100k vs 1M rows (target: flat), each read in its own process;
//  3. CDC latency from commit to destination commit (jsonl, hash embedder), p50/p95 (target p50 < 500 ms).
// SLUICE_BENCH_PG_ROWS scales the big tables (default 1,000,000).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { psqlCommand, startPostgres, TEST_PASSWORD, type PostgresServer } from '../../scripts/postgres-test-server.ts';

const THIS_FILE = fileURLToPath(import.meta.url);
const CHILD_FLAG = '--pg-bench-child';

interface ReadResult {
  rows: number;
  ms: number;
  maxRssMb: number;
}

/** One full-refresh read of `table` into a null sink, in a fresh process (clean peak RSS). */
function readInChild(url: string, table: string): Promise<ReadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', THIS_FILE, CHILD_FLAG, url, table], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`bench read of ${table} exited with ${code}`));
      resolve(JSON.parse(out.trim().split('\n').at(-1)!) as ReadResult);
    });
  });
}

function psqlCopy(server: PostgresServer, table: string): { ms: number } {
  const [cmd, args] = psqlCommand(server, `\\copy (select * from ${table}) to '/dev/null'`);
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env: { ...process.env, PGPASSWORD: TEST_PASSWORD }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql \\copy failed: ${r.stderr}`);
  return { ms: performance.now() - t0 };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function fullRefreshBench(server: PostgresServer, rows: number) {
  const c = new pg.Client(server.url);
  await c.connect();
  const small = Math.max(1, Math.floor(rows / 10));
  await c.query(`CREATE TABLE narrow (id bigint PRIMARY KEY, a int, b text, ts timestamptz)`);
  await c.query(
    `INSERT INTO narrow SELECT g, g % 1000, 'name ' || g, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, ${rows}) g`,
  );
  await c.query(`CREATE TABLE narrow_small AS SELECT * FROM narrow WHERE id <= ${small}; ALTER TABLE narrow_small ADD PRIMARY KEY (id)`);
  // ~1 KB of text per row (below the TOAST threshold, so stored inline and uncompressed).
  await c.query(`CREATE TABLE wide (id bigint PRIMARY KEY, title text, body text)`);
  await c.query(`INSERT INTO wide SELECT g, 'doc ' || g, repeat(md5(g::text), 32) FROM generate_series(1, ${rows}) g`);
  await c.query(`CREATE TABLE wide_small AS SELECT * FROM wide WHERE id <= ${small}; ALTER TABLE wide_small ADD PRIMARY KEY (id)`);
  await c.query('VACUUM ANALYZE');
  await c.end();

  const out: Record<string, unknown> = {};
  for (const table of ['narrow', 'wide']) {
    psqlCopy(server, table); // warm the cache for both contenders
    const base = psqlCopy(server, table);
    const ours = await readInChild(server.url, table);
    if (ours.rows !== rows) throw new Error(`read ${ours.rows} rows of ${table}, expected ${rows}`);
    const smallRead = await readInChild(server.url, `${table}_small`);
    const ratio = base.ms / ours.ms;
    out[table] = {
      rows,
      sluice_rows_per_s: Math.round(rows / (ours.ms / 1000)),
      psql_copy_rows_per_s: Math.round(rows / (base.ms / 1000)),
      ratio_vs_psql_copy: Number(ratio.toFixed(3)),
      target_ratio: 0.5,
      target_met: ratio >= 0.5,
      peak_rss_mb: { [`rows_${small}`]: Math.round(smallRead.maxRssMb), [`rows_${rows}`]: Math.round(ours.maxRssMb) },
      rss_growth_factor: Number((ours.maxRssMb / smallRead.maxRssMb).toFixed(2)),
      rss_flat: ours.maxRssMb / smallRead.maxRssMb < 1.5,
    };
  }
  return out;
}

/** Commit → destination commit latency through the real engine, CDC follow mode, hash embedder. */
async function cdcLatencyBench(server: PostgresServer) {
  const { loadPipeline } = await import('../../src/config/load.ts');
  const { runSync } = await import('../../src/engine/sync.ts');
  const c = new pg.Client(server.url);
  await c.connect();
  await c.query(`CREATE TABLE lat (id int PRIMARY KEY, body text NOT NULL, t_ms double precision NOT NULL)`);
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pg-bench-'));
  writeFileSync(
    join(dir, 'pipeline.yaml'),
    `version: 1
connections:
  - name: latency
    source: { type: postgres, config: { url: ${JSON.stringify(server.url)}, cdc: { heartbeat_seconds: 5 } } }
    destination: { type: jsonl, config: { path: out.jsonl, include_embeddings: false } }
    embedding: { provider: hash, dimensions: 256 }
    processing: { text_fields: [body] }
    streams: [{ name: lat, sync_mode: cdc, destination_sync_mode: append_dedup }]
`,
  );
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };
  // Initial snapshot (empty table) creates the slot; the measured run follows.
  await runSync(await loadPipeline(join(dir, 'pipeline.yaml')), { signal: new AbortController().signal, logger: quiet });

  const pipeline = await loadPipeline(join(dir, 'pipeline.yaml'));
  const conn = pipeline.connections[0];
  const latencies: number[] = [];
  // Observe the destination: documents seen before a STATE are durable when that STATE commits.
  const realOpen = conn.destination.open.bind(conn.destination);
  conn.destination = {
    ...conn.destination,
    async open(config, ctx, options) {
      const writer = await realOpen(config, ctx, options);
      const pendingByState = new Map<object, number[]>();
      let current: number[] = [];
      return {
        ...writer,
        readState: writer.readState?.bind(writer),
        close: () => writer.close(),
        async *write(input) {
          const tapped = (async function* () {
            for await (const m of input) {
              if (m.type === 'DOCUMENT') current.push(Number(m.record.t_ms));
              if (m.type === 'STATE') {
                pendingByState.set(m.state, current);
                current = [];
              }
              yield m;
            }
          })();
          for await (const ev of writer.write(tapped)) {
            if (ev.type === 'STATE_COMMITTED') {
              const now = Date.now();
              for (const t of pendingByState.get(ev.state) ?? []) latencies.push(now - t);
              pendingByState.delete(ev.state);
            }
            yield ev;
          }
        },
      };
    },
  };
  const ac = new AbortController();
  const run = runSync(pipeline, { signal: ac.signal, logger: quiet, follow: true });
  await new Promise((r) => setTimeout(r, 1500)); // let the stream start
  const N = 150;
  for (let i = 1; i <= N; i++) {
    await c.query(`INSERT INTO lat VALUES ($1, $2, extract(epoch from clock_timestamp()) * 1000)`, [i, `change number ${i}`]);
    await new Promise((r) => setTimeout(r, 30));
  }
  const deadline = Date.now() + 20_000;
  while (latencies.length < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  await run;
  await c.end();
  rmSync(dir, { recursive: true, force: true });
  const p50 = pct(latencies, 50);
  return {
    changes: N,
    measured: latencies.length,
    note: 'commit (clock_timestamp at insert) → jsonl destination STATE_COMMITTED, through runSync --follow with the hash embedder',
    p50_ms: Math.round(p50),
    p95_ms: Math.round(pct(latencies, 95)),
    max_ms: Math.round(Math.max(...latencies)),
    target_p50_ms: 500,
    target_met: p50 < 500 && latencies.length === N,
  };
}

/** The source alone: commit → RECORD yielded by read() in follow mode (no engine, no destination). */
async function cdcSourceLatency(server: PostgresServer) {
  const { default: source } = await import('../../connectors/source-postgres/index.ts');
  const { PostgresSourceConfigSchema } = await import('../../connectors/source-postgres/config.ts');
  const c = new pg.Client(server.url);
  await c.connect();
  await c.query(`CREATE TABLE lat_src (id int PRIMARY KEY, t_ms double precision NOT NULL)`);
  const cfg = PostgresSourceConfigSchema.parse({ url: server.url });
  const ac = new AbortController();
  const ctx = {
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    baseDir: process.cwd(),
    signal: ac.signal,
    connection: 'latency_src',
    follow: true,
    workDir: tmpdir(),
  };
  const catalog = {
    streams: [
      {
        stream: { name: 'lat_src', json_schema: {}, supported_sync_modes: ['incremental' as const] },
        sync_mode: 'incremental' as const,
        destination_sync_mode: 'append_dedup' as const,
        cdc: true,
      },
    ],
  };
  const N = 100;
  const latencies: number[] = [];
  let started = false;
  const reading = (async () => {
    let conn = undefined as import('../../src/protocol/connector.ts').SourceState | undefined;
    for await (const m of source.read(cfg, catalog, undefined, ctx)) {
      if (m.type === 'RECORD') latencies.push(Date.now() - Number(m.record.data.t_ms));
      if (m.type === 'STATE') {
        started = true;
        const g = m.state.global!;
        conn = {
          shared: g.shared_state,
          streams: Object.fromEntries(g.stream_states.map((x) => [x.stream_descriptor.name, x.stream_state ?? {}])),
        };
        await source.onStateCommitted?.(cfg, m.state, conn, ctx);
      }
      if (latencies.length >= N) ac.abort();
    }
  })();
  while (!started) await new Promise((r) => setTimeout(r, 20));
  for (let i = 1; i <= N; i++) {
    await c.query(`INSERT INTO lat_src VALUES ($1, extract(epoch from clock_timestamp()) * 1000)`, [i]);
    await new Promise((r) => setTimeout(r, 30));
  }
  const timer = setTimeout(() => ac.abort(), 15_000);
  await reading;
  clearTimeout(timer);
  await c.end();
  return {
    changes: N,
    measured: latencies.length,
    note: 'commit → RECORD yielded by the source (follow mode, no engine)',
    p50_ms: Math.round(pct(latencies, 50)),
    p95_ms: Math.round(pct(latencies, 95)),
  };
}

export default async function bench(): Promise<Record<string, unknown>> {
  const rows = Number(process.env.SLUICE_BENCH_PG_ROWS ?? 1_000_000);
  const server = await startPostgres();
  try {
    const t0 = Date.now();
    const fullRefresh = await fullRefreshBench(server, rows);
    const cdc = await cdcLatencyBench(server);
    const cdcSource = await cdcSourceLatency(server);
    return {
      full_refresh: fullRefresh,
      cdc_latency: cdc,
      cdc_source_only_latency: cdcSource,
      bench_seconds: Math.round((Date.now() - t0) / 1000),
    };
  } finally {
    await server.stop();
  }
}

if (process.argv[2] === CHILD_FLAG) {
  const [url, table] = process.argv.slice(3);
  const { default: source } = await import('../../connectors/source-postgres/index.ts');
  const { PostgresSourceConfigSchema } = await import('../../connectors/source-postgres/config.ts');
  const ctx = {
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    baseDir: process.cwd(),
    signal: new AbortController().signal,
    connection: 'bench',
    follow: false,
    workDir: tmpdir(),
  };
  const catalog = {
    streams: [
      {
        stream: { name: table, json_schema: {}, supported_sync_modes: ['full_refresh' as const] },
        sync_mode: 'full_refresh' as const,
        destination_sync_mode: 'overwrite' as const,
      },
    ],
  };
  const t0 = performance.now();
  let n = 0;
  for await (const m of source.read(PostgresSourceConfigSchema.parse({ url }), catalog, undefined, ctx)) if (m.type === 'RECORD') n++;
  const ms = performance.now() - t0;
  process.stdout.write(JSON.stringify({ rows: n, ms, maxRssMb: process.resourceUsage().maxRSS / 1024 }) + '\n');
}
