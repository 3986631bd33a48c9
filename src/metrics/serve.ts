// Where metrics go: an HTTP endpoint for a long-running sync (/metrics, /healthz, /readyz), a
// Pushgateway or a node-exporter textfile for batch runs that end before anyone scrapes them.
import { createServer, type Server } from 'node:http';
import { rename, writeFile } from 'node:fs/promises';
import { AggregatorRegistry, Pushgateway, type Registry } from 'prom-client';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import type { SyncMetrics } from './index.ts';

export async function serveMetrics(metrics: SyncMetrics, port: number, host: string): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
        (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${describeUnknown(err)}\n`),
      );
    } else if (path === '/healthz') {
      // Alive: the event loop answers. A stuck sync is what /readyz and the alerts are for.
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = metrics.ready();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.reason}\n`);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new SluiceError(`cannot serve metrics on ${host}:${port}: ${err.code ?? err.message}`, {
          kind: 'config',
          hint: err.code === 'EADDRINUSE' ? 'choose a free port with --metrics-port' : 'check --metrics-host and --metrics-port',
        }),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as { port: number; address: string };
  const shown = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shown}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The series of one connection as a registry of their own (a Pushgateway group holds one connection). */
async function connectionRegistry(metrics: SyncMetrics, connection: string): Promise<Registry> {
  const all = await metrics.registry.getMetricsAsJSON();
  const mine = all
    .map((m) => ({ ...m, values: m.values.filter((v) => v.labels.connection === connection) }))
    .filter((m) => m.values.length);
  return AggregatorRegistry.aggregate([mine]);
}

/**
 * PUTs each connection's final metrics to `<url>/metrics/job/sluice/pipeline/<p>/connection/<c>`
 * (`/shard/<i>` added in an Indexed Job pod), replacing that group's previous push: counters there
 * are those of the last run; alert on the timestamps.
 */
export async function pushMetrics(metrics: SyncMetrics, url: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  // The pods of a Kubernetes Indexed Job (a sharded backfill) each push their own group.
  const shard: Record<string, string> = env.JOB_COMPLETION_INDEX ? { shard: env.JOB_COMPLETION_INDEX } : {};
  for (const connection of metrics.connections()) {
    const gateway = new Pushgateway(url, { timeout: 10_000 }, await connectionRegistry(metrics, connection));
    await gateway.push({ jobName: 'sluice', groupings: { pipeline: metrics.pipeline, connection, ...shard } }).catch((err) => {
      throw new SluiceError(`pushing metrics to ${new URL(url).origin} failed: ${describeUnknown(err)}`, {
        kind: 'destination',
        hint: 'check --pushgateway (e.g. http://pushgateway:9091); the sync itself finished',
      });
    });
  }
}

/** Writes the metrics for node-exporter's textfile collector: a temp file renamed over the target. */
export async function writeMetricsTextfile(metrics: SyncMetrics, path: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, await metrics.registry.metrics());
    await rename(tmp, path);
  } catch (err) {
    throw new SluiceError(`writing metrics to ${path} failed: ${describeUnknown(err)}`, {
      kind: 'config',
      hint: 'check --metrics-textfile: its directory must exist and be writable (node-exporter reads *.prom files)',
    });
  }
}
