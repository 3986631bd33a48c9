// The embedded database's socket server keeps each connection's extended-protocol query together
// (pglite-queue.ts): two pg clients querying at once with parameters each get their own rows, and a
// connection that leaves in the middle of a query does not hold the others up.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { keepQueriesTogether } from './pglite-queue.ts';

/** A raw protocol connection: its messages go out exactly when written (pg's clients batch them). */
async function rawConnection(path: string) {
  const socket = connect(path);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  /** Waits for ReadyForQuery; returns the message types received since the last call, and clears them (S: a parameter status). */
  const untilReady = async () => {
    for (let i = 0; i < 500; i++) {
      const types: string[] = [];
      let at = 0;
      while (at + 5 <= received.length) {
        const len = received.readInt32BE(at + 1);
        types.push(String.fromCharCode(received[at]));
        at += 1 + len;
      }
      if (types.at(-1) === 'Z') {
        received = received.subarray(at);
        return types;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('no ReadyForQuery');
  };
  const message = (type: string, body: Buffer) => {
    const m = Buffer.alloc(5 + body.length);
    m[0] = type.charCodeAt(0);
    m.writeInt32BE(4 + body.length, 1);
    body.copy(m, 5);
    return m;
  };
  const params = Buffer.from('user\0postgres\0database\0postgres\0\0');
  const startup = Buffer.alloc(8 + params.length);
  startup.writeInt32BE(startup.length, 0);
  startup.writeInt32BE(196608, 4);
  params.copy(startup, 8);
  socket.write(startup);
  await untilReady();
  return {
    socket,
    untilReady,
    /** Parse of the unnamed statement, no parameters. */
    parse: (sql: string) => socket.write(message('P', Buffer.concat([Buffer.from(`\0${sql}\0`), Buffer.from([0, 0])]))),
    /** Bind (no parameters), Execute and Sync of the unnamed statement. */
    bindExecuteSync: () =>
      socket.write(
        Buffer.concat([
          message('B', Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])),
          message('E', Buffer.from([0, 0, 0, 0, 0])),
          message('S', Buffer.alloc(0)),
        ]),
      ),
  };
}

describe('embedded PGlite: one session behind several connections', () => {
  let db: PGlite;
  let server: PGLiteSocketServer;
  let dir: string;
  const client = async () => {
    const c = new pg.Client({ host: dir, user: 'postgres', database: 'postgres' });
    await c.connect();
    return c;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-pglite-queue-'));
    db = await PGlite.create();
    server = new PGLiteSocketServer({ db, path: join(dir, '.s.PGSQL.5432'), maxConnections: 8 });
    keepQueriesTogether(server);
    await server.start();
  });
  afterAll(async () => {
    await server?.stop();
    await db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a query whose messages arrive apart is not cut into by another connection', async () => {
    const slow = await rawConnection(join(dir, '.s.PGSQL.5432'));
    const other = await client();
    try {
      slow.parse('SELECT 7 AS v');
      await new Promise((r) => setTimeout(r, 100));
      // Another connection queries (Parse of the same unnamed statement, other parameters) before the Bind arrives.
      const answer = other.query('SELECT $1::int + 1 AS v', [41]).then((r) => r.rows[0].v as number);
      await new Promise((r) => setTimeout(r, 200));
      slow.bindExecuteSync();
      // The slow query ran as written: parse complete, bind complete, a data row, no error.
      expect((await slow.untilReady()).filter((t) => !'SKN'.includes(t))).toEqual(['1', '2', 'D', 'C', 'Z']);
      expect(await answer).toBe(42);
    } finally {
      slow.socket.destroy();
      await other.end();
    }
  });

  it('parameterized queries from several connections at once each get their own answer', async () => {
    const clients = await Promise.all([client(), client(), client()]);
    try {
      // Different statements and parameter types per connection: an interleaved Bind fails or answers another's query.
      const runs = clients.map(async (c, k) => {
        const answers: unknown[] = [];
        for (let i = 0; i < 150; i++) {
          if (k === 0) answers.push((await c.query('SELECT $1::text || $2::text AS v', [`a${i}`, '!'])).rows[0].v);
          else if (k === 1) answers.push((await c.query('SELECT $1::int * 2 AS v', [i])).rows[0].v);
          else answers.push((await c.query('SELECT count(*)::int AS v FROM generate_series(1, $1::int)', [i + 1])).rows[0].v);
        }
        return answers;
      });
      const [a, b, c] = await Promise.all(runs);
      expect(a).toEqual(Array.from({ length: 150 }, (_, i) => `a${i}!`));
      expect(b).toEqual(Array.from({ length: 150 }, (_, i) => i * 2));
      expect(c).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('a connection that leaves in the middle of its query (Parse sent, no Sync) does not hold the others up', async () => {
    const other = await client();
    try {
      // A raw connection: startup, then a Parse and nothing more, then gone.
      const raw = await rawConnection(join(dir, '.s.PGSQL.5432'));
      raw.parse('SELECT 1');
      await new Promise((r) => setTimeout(r, 200));
      raw.socket.destroy();
      const answer = await Promise.race([
        other.query('SELECT $1::int + 1 AS v', [41]).then((r) => r.rows[0].v as number),
        new Promise((_, reject) => setTimeout(() => reject(new Error('the other connection was held up')), 10_000)),
      ]);
      expect(answer).toBe(42);
    } finally {
      await other.end();
    }
  });
});
