// A sync's fixed set-up cost: the PostgreSQL source reads through the session it discovered with
// (not a second connection and a second discovery), and the pgvector writer opens on the session
// the index identity check read the state with (ConnectorContext.shelf). Connections are counted
// by a TCP proxy in front of each server. Whatever a run parks and does not take is closed when
// the run ends, also when it fails before reading or writing.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDatabase, sql } from '../../connectors/source-postgres/test/helpers.ts';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { describeOnNativePgvector } from '../helpers/pgvector-backends.ts';

/** The PostgreSQL protocol's Terminate message: what a client sends when it closes a session itself. */
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/**
 * Forwards TCP to a server and counts the connections made through it, and those that ended
 * without the client closing its session (a process that exits with a session still open).
 */
class CountingProxy {
  opened = 0;
  abandoned = 0;
  private readonly sockets = new Set<Socket>();
  private server!: Server;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<this> {
    this.server = createServer((client) => {
      this.opened++;
      this.sockets.add(client);
      const upstream = connect(this.target.port, this.target.host);
      this.sockets.add(upstream);
      let tail = Buffer.alloc(0);
      client.on('data', (d: Buffer) => {
        tail = Buffer.concat([tail, d]).subarray(-TERMINATE.length);
      });
      let counted = false;
      const drop = () => {
        if (!counted) {
          counted = true;
          if (!tail.equals(TERMINATE)) this.abandoned++;
        }
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** Client connections still open (each has its upstream twin). */
  get open(): number {
    return this.sockets.size / 2;
  }

  /** Resolves once every connection made through the proxy has closed. */
  async settled(): Promise<void> {
    for (let i = 0; i < 100 && this.sockets.size; i++) await new Promise((r) => setTimeout(r, 50));
  }

  /** `url` with its host and port replaced by this proxy's. */
  url(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const target = (url: string) => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432) };
};

describeOnNativePgvector('sessions a sync opens (postgres source → pgvector)', (backend) => {
  let sourceUrl: string;
  let src: CountingProxy;
  let dst: CountingProxy;

  beforeAll(async () => {
    sourceUrl = await createDatabase(inject('pgUrl'), 'run_sessions');
    await sql(
      sourceUrl,
      `CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL);
       INSERT INTO docs SELECT i, 'Title ' || i, 'Body ' || i || ' explains refunds in some detail.' FROM generate_series(1, 10) i;`,
    );
    src = await new CountingProxy(target(sourceUrl)).start();
    dst = await new CountingProxy(target(backend.url)).start();
  });
  afterAll(async () => {
    await src?.stop();
    await dst?.stop();
  });

  const pipeline = (dir: string, opts: { dimensions?: number; stream?: string } = {}) => {
    writeFiles(dir, {
      'p.yaml': `version: 1
connections:
  - name: sessions
    source: { type: postgres, config: { url: ${JSON.stringify(src.url(sourceUrl))} } }
    destination: { type: pgvector, config: { url: ${JSON.stringify(dst.url(backend.url))}, schema: run_sessions, index: none } }
    embedding: { provider: hash, dimensions: ${opts.dimensions ?? 16} }
    processing: { text_fields: [title, body] }
    streams:
      - { name: ${opts.stream ?? 'docs'}, sync_mode: full_refresh, destination_sync_mode: append_dedup }
`,
    });
    return join(dir, 'p.yaml');
  };

  async function sync(file: string, dir: string) {
    for (const p of [src, dst]) p.opened = p.abandoned = 0;
    const r = await runCli(['sync', file, '--json'], { cwd: dir });
    await src.settled();
    await dst.settled();
    return {
      ...r,
      summary: r.stdout ? (JSON.parse(r.stdout) as { connections: Array<{ streams: Record<string, Record<string, number>> }> }) : undefined,
    };
  }

  it(
    'reads through the discover session and writes through the identity-check session; nothing stays open',
    { timeout: 120_000 },
    async () => {
      const dir = tempDir('run-sessions-');
      const file = pipeline(dir);
      const first = await sync(file, dir);
      expect(first.code, first.stderr).toBe(0);
      expect(first.summary!.connections[0].streams.docs).toMatchObject({ records_read: 10, records_written: 10 });

      const again = await sync(file, dir);
      expect(again.code, again.stderr).toBe(0);
      expect(again.summary!.connections[0].streams.docs).toMatchObject({ records_read: 10, records_written: 0, records_unchanged: 10 });
      // One source session: discover and read (it was two: read connected and discovered again).
      expect(src.opened).toBe(1);
      // The identity check's session is the writer's (it was two), plus at most the end-of-read
      // listing of stored documents, which has its own session.
      expect(dst.opened).toBeLessThanOrEqual(2);
      expect([src.open, dst.open, src.abandoned, dst.abandoned]).toEqual([0, 0, 0, 0]);
    },
  );

  it('a run refused after discover (changed embedder: exit 2) closes the sessions it parked', { timeout: 120_000 }, async () => {
    const dir = tempDir('run-sessions-');
    expect((await sync(pipeline(dir), dir)).code).toBe(0);
    const refused = await sync(pipeline(dir, { dimensions: 32 }), dir);
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr + refused.stdout).toContain('the index was built with other settings');
    expect(src.opened).toBe(1);
    // The identity check's session, and the listing's, connected ahead because the pipeline's
    // stream is full_refresh + append_dedup (ConnectorContext.listsDocuments): both closed unused.
    expect(dst.opened).toBe(2);
    expect([src.open, dst.open, src.abandoned, dst.abandoned]).toEqual([0, 0, 0, 0]);
  });

  it('a run that fails on a stream the source lacks closes the sessions it parked', { timeout: 120_000 }, async () => {
    const dir = tempDir('run-sessions-');
    const failed = await sync(pipeline(dir, { stream: 'nosuchtable' }), dir);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr + failed.stdout).toContain('nosuchtable');
    expect([src.open, dst.open, src.abandoned, dst.abandoned]).toEqual([0, 0, 0, 0]);
  });
});
