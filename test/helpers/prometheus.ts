// The real Prometheus server and Pushgateway (Debian packages `prometheus`,
// `prometheus-pushgateway`) on loopback random ports, each with its own scratch directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { scratchDir } from '../../src/testing/context.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

interface Daemon {
  url: string;
  stop(): Promise<void>;
}

async function startDaemon(bin: string, args: string[], port: number, readyPath: string): Promise<Daemon & { child: ChildProcess }> {
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${bin} exited (${child.exitCode}): ${log}`);
    const ok = await fetch(url + readyPath).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${bin} did not become ready on ${url}: ${log}`);
    }
    await sleep(100);
  }
  return {
    url,
    child,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000).then(() => child.kill('SIGKILL'))]);
    },
  };
}

/** Prometheus scraping `targets` (host:port) every second. */
export async function startPrometheus(targets: string[]): Promise<Daemon & { query(expr: string): Promise<PromSample[]> }> {
  const dir = scratchDir('sluice-prometheus-');
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '900ms', evaluation_interval: '1s' },
      scrape_configs: [{ job_name: 'sluice', static_configs: [{ targets }] }],
    }),
  );
  const d = await startDaemon(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    port,
    '/-/ready',
  );
  return {
    ...d,
    async query(expr: string) {
      const r = await fetch(`${d.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await r.json()) as {
        status: string;
        error?: string;
        data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> };
      };
      if (body.status !== 'success') throw new Error(`query ${expr} failed: ${body.error}`);
      return body.data.result.map((x) => ({ labels: x.metric, value: Number(x.value[1]) }));
    },
  };
}

export interface PromSample {
  labels: Record<string, string>;
  value: number;
}

/** A Pushgateway; `groups()` reads what was pushed back through its JSON API. */
export async function startPushgateway(): Promise<Daemon & { groups(): Promise<PushGroup[]> }> {
  const port = await freePort();
  const d = await startDaemon(
    'prometheus-pushgateway',
    [
      `--web.listen-address=127.0.0.1:${port}`,
      // Debian's build persists to /var/lib/prometheus by default; a test keeps its pushes in memory.
      '--persistence.file=',
      '--log.level=warn',
    ],
    port,
    '/-/ready',
  );
  return {
    ...d,
    async groups() {
      const r = await fetch(`${d.url}/api/v1/metrics`);
      const body = (await r.json()) as { status: string; data: Array<Record<string, unknown>> };
      if (body.status !== 'success') throw new Error('pushgateway /api/v1/metrics failed');
      return body.data.map((g) => {
        const labels = g.labels as Record<string, string>;
        const families: Record<string, PromSample[]> = {};
        for (const [name, fam] of Object.entries(g)) {
          if (name === 'labels' || !fam || typeof fam !== 'object') continue;
          const metrics = (fam as { metrics?: Array<{ labels: Record<string, string>; value?: string }> }).metrics ?? [];
          families[name] = metrics.map((m) => ({ labels: m.labels, value: Number(m.value) }));
        }
        return { labels, families };
      });
    },
  };
}

export interface PushGroup {
  labels: Record<string, string>;
  families: Record<string, PromSample[]>;
}

/** Sum of the samples matching `labels`. */
export function total(samples: PromSample[] | undefined, labels: Record<string, string> = {}): number {
  return (samples ?? []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}
