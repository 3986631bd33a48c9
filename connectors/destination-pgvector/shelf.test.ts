// In a sync (a context with a shelf), readState() — the index identity check — leaves its session
// for the writer the run opens next: one session, not two. A parked session the server ended
// meanwhile is not used: open() connects afresh. Without a shelf, readState() closes its session.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { describeOnNativePgvector } from '../../test/helpers/pgvector-backends.ts';
import { sessionCounter, urlNamed } from '../../test/helpers/pg-sessions.ts';
import { RunShelf } from '../../src/engine/shelf.ts';
import destination from './index.ts';
import { PgvectorConfigSchema } from './config.ts';
import { documentMessage, drain, stateMessage, testContext } from './testing.ts';

describeOnNativePgvector('pgvector: the identity check session is the writer’s (ConnectorContext.shelf)', (backend) => {
  let admin: pg.Client;
  const schema = `shelf_${randomBytes(4).toString('hex')}`;
  // Its own application_name, so only this test's sessions are counted.
  const url = () => urlNamed(backend.url, schema);
  const config = () => PgvectorConfigSchema.parse({ url: url(), schema, index: 'none' });
  const open = (ctx: ReturnType<typeof testContext>) =>
    destination.open(config(), ctx, {
      streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }],
      dimensions: 4,
    });
  const { sessions, settle, terminate } = sessionCounter(() => admin, schema);

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
    // A first sync leaves a state to read.
    const ctx = testContext('shelf');
    const w = await open(ctx);
    await drain(w, [documentMessage('docs', 'a', 1, 4), stateMessage('docs', 1)]);
    await w.close();
  });
  afterAll(async () => {
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin?.end();
  });

  it('open() writes through the session readState() parked; the state read is the stored one', async () => {
    await settle(0);
    const shelf = new RunShelf();
    const ctx = { ...testContext('shelf'), shelf };
    const state = await destination.readState!(config(), ctx);
    expect(state?.streams.docs).toEqual({ cursor: 1 });
    expect(shelf.size).toBe(1);
    expect(await sessions()).toBe(1);
    const w = await open(ctx);
    // Taken; what is left is the columns of table docs, for this run's listing (./spare.ts).
    expect(shelf.size).toBe(1);
    expect(await sessions()).toBe(1);
    expect(await w.readState!()).toEqual(state);
    await drain(w, [documentMessage('docs', 'b', 1, 4), stateMessage('docs', 2)]);
    await w.close();
    await settle(0);
    expect(await sessions()).toBe(0);
  });

  it('a parked session the server ended is not used: open() connects afresh', async () => {
    await settle(0);
    const ctx = { ...testContext('shelf'), shelf: new RunShelf() };
    await destination.readState!(config(), ctx);
    await terminate();
    await sleep(200); // the client hears of it
    const w = await open(ctx);
    expect((await w.readState!())?.streams.docs).toEqual({ cursor: 2 });
    await w.close();
  });

  it('without a shelf, readState() closes its session', async () => {
    await settle(0);
    await destination.readState!(config(), testContext('shelf'));
    await settle(0);
    expect(await sessions()).toBe(0);
  });

  // Every statement this process sends (on any session), to see what open() and readState() ask.
  const sent = () => {
    const spy = vi.spyOn(pg.Client.prototype, 'query');
    return () => spy.mock.calls.map((c) => (typeof c[0] === 'string' ? c[0] : String((c[0] as { text?: string })?.text ?? '')));
  };
  afterEach(() => vi.restoreAllMocks());

  it('the writer starts from what readState() read: no second state read, no CREATE of the state table it found, one extension look-up', async () => {
    const shelf = new RunShelf();
    const ctx = { ...testContext('shelf'), shelf };
    const statements = sent();
    const state = await destination.readState!(config(), ctx);
    const w = await open(ctx);
    const first = await w.readState!();
    expect(first).toEqual(state);
    expect(first).not.toBe(state); // a copy, as a read of its own would be
    const asked = statements();
    expect(asked.filter((q) => q.includes('SELECT state FROM'))).toHaveLength(1);
    expect(asked.filter((q) => /CREATE (TABLE|SCHEMA|EXTENSION)/.test(q))).toEqual([]);
    // The extension was looked up once, with the state table.
    expect(asked.filter((q) => q.includes('pg_extension'))).toHaveLength(1);
    // The remembered state serves once: a later call reads the table (here: what this writer committed).
    await drain(w, [documentMessage('docs', 'c', 1, 4), stateMessage('docs', 3)]);
    expect((await w.readState!())?.streams.docs).toEqual({ cursor: 3 });
    expect(statements().filter((q) => q.includes('SELECT state FROM'))).toHaveLength(2);
    await w.close();
  });

  it('where readState() found no state table, open() creates the schema and the table, and the state commits', async () => {
    const fresh = `${schema}_new`;
    const freshConfig = () => PgvectorConfigSchema.parse({ url: url(), schema: fresh, index: 'none' });
    try {
      const ctx = { ...testContext('shelf'), shelf: new RunShelf() };
      expect(await destination.readState!(freshConfig(), ctx)).toBeUndefined();
      const w = await destination.open(freshConfig(), ctx, {
        streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }],
        dimensions: 4,
      });
      expect(await w.readState!()).toBeUndefined();
      await drain(w, [documentMessage('docs', 'a', 1, 4), stateMessage('docs', 1)]);
      await w.close();
      expect((await destination.readState!(freshConfig(), testContext('shelf')))?.streams.docs).toEqual({ cursor: 1 });
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS ${fresh} CASCADE`);
    }
  });
});
