// Cold start of the installed command, next to `node -e 0` on the same machine in the same run (the
// ratio is what to compare across machines), runs of the three commands interleaved so load from
// other processes falls on all of them alike:
// - `sluice --version`: the CLI's own floor. Budget: well under 300 ms.
// - `sluice sync` of a PostgreSQL → pgvector pipeline up to its first connection: the start-up
//   every scheduled run pays before any work. The pipeline points at a closed local port, so the
//   run needs no server and ends at that first connection (refused); a preload notes the moment
//   the first socket connects, in the process's own clock, which leaves out process spawn and exit.
// Medians of the wall time (spawn to exit) and of the process's CPU time (user + system).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { builtCli } from './built-cli.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const RUNS = Number(process.env.SLUICE_BENCH_STARTUP_RUNS ?? 15);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** A local port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as { port: number };
  await new Promise((ok) => server.close(ok));
  return port;
}

// Loaded with --require into the measured process: on exit it writes its CPU time and the moment
// (ms since the process started) its first socket began to connect to the file named by the env.
const PROBE = `
const net = require('node:net');
const { writeFileSync } = require('node:fs');
const connect = net.Socket.prototype.connect;
let firstConnectMs;
net.Socket.prototype.connect = function (...args) {
  firstConnectMs ??= performance.now();
  return connect.apply(this, args);
};
process.on('exit', () => {
  const cpu = process.cpuUsage();
  writeFileSync(process.env.SLUICE_BENCH_PROBE_OUT, JSON.stringify({ firstConnectMs, cpuMs: (cpu.user + cpu.system) / 1000 }));
});
`;

interface Sample {
  wallMs: number;
  cpuMs: number;
  firstConnectMs?: number;
}

interface Case {
  name: string;
  args: string[];
  /** Exit status the command must end with (the sync case ends at the refused connection). */
  status: number;
}

export default async function startup(): Promise<Record<string, unknown>> {
  const cli = builtCli(ROOT);
  const dir = mkdtempSync(join(tmpdir(), 'sluice-startup-'));
  try {
    const probe = join(dir, 'probe.cjs');
    const probeOut = join(dir, 'probe.json');
    writeFileSync(probe, PROBE);
    const url = `postgres://sluice:pw@127.0.0.1:${await closedPort()}/postgres`;
    const pipeline = join(dir, 'pipeline.yaml');
    writeFileSync(
      pipeline,
      [
        'version: 1',
        'connections:',
        '  - name: bench',
        `    source: { type: postgres, config: { url: "${url}", schemas: [src], include: [docs] } }`,
        `    destination: { type: pgvector, config: { url: "${url}", schema: dst, index: none } }`,
        '    embedding: { provider: hash, dimensions: 384 }',
        '    processing: { text_fields: [title, body], chunk_size: 512 }',
        '    streams:',
        '      - { name: src.docs, sync_mode: full_refresh, destination_sync_mode: append_dedup }',
        '',
      ].join('\n'),
    );
    const cases: Case[] = [
      { name: 'node -e 0', args: ['-e', '0'], status: 0 },
      { name: 'sluice --version', args: [cli.entry, '--version'], status: 0 },
      { name: 'sluice sync (postgres → pgvector, to the first connection)', args: [cli.entry, 'sync', pipeline], status: 1 },
    ];
    const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
    // The first round warms the file system cache and is not counted.
    for (let round = 0; round <= RUNS; round++) {
      for (const c of cases) {
        rmSync(probeOut, { force: true });
        const started = process.hrtime.bigint();
        const r = spawnSync(process.execPath, ['--require', probe, ...c.args], {
          cwd: dir,
          env: { ...cli.env, SLUICE_BENCH_PROBE_OUT: probeOut },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
        if (r.status !== c.status) throw new Error(`${c.name} exited with ${r.status} (expected ${c.status}): ${r.stderr}`);
        const probed = JSON.parse(readFileSync(probeOut, 'utf8')) as { firstConnectMs?: number; cpuMs: number };
        if (round > 0) samples.get(c.name)!.push({ wallMs, ...probed });
      }
    }
    const report: Record<string, unknown> = { runs: RUNS, node: process.version, how: cli.how };
    for (const c of cases) {
      const s = samples.get(c.name)!;
      const firstConnect = s.map((x) => x.firstConnectMs).filter((x): x is number => x !== undefined);
      report[c.name] = {
        'wall ms (median)': Math.round(median(s.map((x) => x.wallMs))),
        'cpu ms (median)': Math.round(median(s.map((x) => x.cpuMs))),
        ...(firstConnect.length === s.length ? { 'ms to the first connection (median)': Math.round(median(firstConnect)) } : {}),
      };
    }
    const node = samples.get('node -e 0')!;
    const version = samples.get('sluice --version')!;
    const versionMs = median(version.map((x) => x.wallMs));
    report['ratio sluice --version / node'] = Number((versionMs / median(node.map((x) => x.wallMs))).toFixed(2));
    report['budget for --version (ms)'] = 300;
    report.within_budget = versionMs < 300;
    return report;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
