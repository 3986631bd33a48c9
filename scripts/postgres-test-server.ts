// Starts a throwaway PostgreSQL 15 cluster for tests and benches: its own data dir under the OS
// temp dir, its own loopback port, wal_level=logical (CDC), a password superuser for clients.
// Runs the server as the `postgres` OS user when we are root (initdb refuses root).
//
//   tsx scripts/postgres-test-server.ts            # start, print the URL, stop on Ctrl-C
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PostgresServer {
  /** Superuser URL (password auth over TCP on 127.0.0.1). */
  url: string;
  port: number;
  dataDir: string;
  bin: string;
  stop(): Promise<void>;
}

const USER = 'sluice';
const PASSWORD = 'sluice-test-pw';

function findBin(): string {
  const candidates = [process.env.PG_BIN, '/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin'];
  for (const c of candidates) if (c && existsSync(join(c, 'postgres'))) return c;
  throw new Error('PostgreSQL server binaries not found: run scripts/install-system-deps.sh (postgresql-15) or set PG_BIN');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const asRoot = process.getuid?.() === 0;
function pgArgs(bin: string, tool: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] : [join(bin, tool), args];
}
function run(bin: string, tool: string, args: string[]): string {
  const [cmd, full] = pgArgs(bin, tool, args);
  const r = spawnSync(cmd, full, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

export async function startPostgres(opts: { extraConf?: string } = {}): Promise<PostgresServer> {
  const bin = findBin();
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-pg-'));
  if (asRoot) {
    const pw = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    chownSync(dataDir, Number(pw.stdout.trim()), Number(gid.stdout.trim()));
  }
  chmodSync(dataDir, 0o700);
  const pwFile = join(dataDir, '.pw');
  writeFileSync(pwFile, PASSWORD + '\n', { mode: 0o644 });
  // --no-sync: a test cluster need not survive a power cut; it halves initdb time.
  run(bin, 'initdb', [
    '-D',
    join(dataDir, 'data'),
    '-U',
    USER,
    `--pwfile=${pwFile}`,
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '--no-sync',
    '-E',
    'UTF8',
    '--locale=C',
  ]);
  rmSync(pwFile);
  const port = await freePort();
  const describe = spawnSync(join(bin, 'postgres'), ['--describe-config'], { encoding: 'utf8', maxBuffer: 16 << 20 });
  const conf = [
    `port = ${port}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = '${dataDir}'`,
    `wal_level = logical`,
    `max_replication_slots = 64`,
    `max_wal_senders = 64`,
    `max_connections = 200`,
    `shared_buffers = 128MB`,
    `fsync = off`, // test cluster only: durability of the server itself is not under test
    `full_page_writes = off`,
    `logging_collector = off`,
    `log_min_messages = warning`,
    `wal_sender_timeout = 60s`,
  ];
  // 15.19+ only lets REPLICATION users use plugins listed here.
  if (/^output_plugin_libraries\b/m.test(describe.stdout ?? '')) conf.push(`output_plugin_libraries = 'pgoutput, test_decoding, wal2json'`);
  if (opts.extraConf) conf.push(opts.extraConf);
  writeFileSync(join(dataDir, 'data', 'postgresql.auto.conf'), conf.join('\n') + '\n');
  run(bin, 'pg_ctl', ['-D', join(dataDir, 'data'), '-l', join(dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
  // If this process dies without stopping the server (killed test run), a watchdog does it, so
  // clusters never pile up on a shared machine.
  const [stopCmd, stopArgs] = pgArgs(bin, 'pg_ctl', ['-D', join(dataDir, 'data'), '-m', 'immediate', 'stop']);
  const stopLine = [stopCmd, ...stopArgs].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  spawn(
    'sh',
    [
      '-c',
      `while kill -0 ${process.pid} 2>/dev/null && [ -d '${dataDir}' ]; do sleep 2; done; [ -d '${dataDir}' ] && { ${stopLine} >/dev/null 2>&1; rm -rf '${dataDir}'; }`,
    ],
    {
      detached: true,
      stdio: 'ignore',
    },
  ).unref();
  let stopped = false;
  return {
    url,
    port,
    dataDir,
    bin,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        run(bin, 'pg_ctl', ['-D', join(dataDir, 'data'), '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}

/** Runs psql as the right OS user against the server (used by the bench for the COPY baseline). */
export function psqlCommand(server: PostgresServer, sql: string): [string, string[]] {
  return pgArgs(server.bin, 'psql', ['-X', '-q', '-h', '127.0.0.1', '-p', String(server.port), '-U', USER, '-d', 'postgres', '-c', sql]);
}
export const TEST_PASSWORD = PASSWORD;

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const server = await startPostgres();
  process.stdout.write(server.url + '\n');
  const stop = () => void server.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  setInterval(() => {}, 1 << 30);
}
