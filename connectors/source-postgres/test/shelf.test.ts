// In a sync (a context with a shelf), discover() leaves its session for read(): read() neither
// connects nor discovers again. A parked session the server ended meanwhile is not used: read()
// connects afresh. Without a shelf, discover() closes its session as before.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { beforeAll, describe, expect, inject, it, vi } from 'vitest';
import type { StoredDigests } from '../../../src/protocol/connector.ts';
import { RunShelf } from '../../../src/engine/shelf.ts';
import source from '../index.ts';
import { catalog, config, context, createDatabase, records, sql, stream } from './helpers.ts';

let url: string;

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_shelf');
  await sql(
    url,
    `CREATE TABLE items (id int PRIMARY KEY, body text); INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 250) g;`,
  );
});

/** Sessions of other clients on this database (the parked one, while it waits). */
const sessions = async () =>
  (
    await sql(
      url,
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
    )
  ).rows[0].n as number;

async function readAll(ctx: ReturnType<typeof context>) {
  const out = [];
  for await (const m of source.read(config(url, { batch_size: 100 }), catalog(stream('items', 'full_refresh')), undefined, ctx))
    out.push(m);
  return records(out).map((r) => r.data.id as number);
}

const all = Array.from({ length: 250 }, (_, i) => i + 1);

describe('postgres source: the discover session is read with (ConnectorContext.shelf)', () => {
  it('read() takes the session discover() parked and ends it at the end; the shelf waits for the close', async () => {
    const shelf = new RunShelf();
    const ctx = { ...context('shelf'), shelf };
    const discovered = await source.discover(config(url, { batch_size: 100 }), ctx);
    expect(discovered.streams.map((s) => s.name)).toEqual(['items']);
    expect(shelf.size).toBe(1);
    expect(await sessions()).toBe(1);
    expect(await readAll(ctx)).toEqual(all);
    // The parked session was taken; what is on the shelf now is its close, which the run's end awaits.
    expect(shelf.size).toBe(1);
    await shelf.close();
    expect(shelf.size).toBe(0);
    for (let i = 0; i < 50 && (await sessions()); i++) await sleep(20);
    expect(await sessions()).toBe(0);
  });

  it('a parked session the server ended is not used: read() connects afresh and reads everything', async () => {
    const shelf = new RunShelf();
    const ctx = { ...context('shelf'), shelf };
    await source.discover(config(url, { batch_size: 100 }), ctx);
    await sql(
      url,
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
    );
    await sleep(200); // the client hears of it
    expect(await readAll(ctx)).toEqual(all);
  });

  it('what read() never takes is closed with the shelf', async () => {
    const shelf = new RunShelf();
    await source.discover(config(url), { ...context('shelf'), shelf });
    expect(await sessions()).toBe(1);
    await shelf.close();
    for (let i = 0; i < 50 && (await sessions()); i++) await sleep(20);
    expect(await sessions()).toBe(0);
  });

  it('discover() asks whether the server computes digests while its session waits; read() does not ask again', async () => {
    const spy = vi.spyOn(pg.Client.prototype, 'query');
    const asked = () =>
      spy.mock.calls.filter((c) => typeof c[0] === 'string' && c[0].startsWith(`SELECT hashtextextended('sluice'`)).length;
    try {
      const shelf = new RunShelf();
      // Every row read in full, with its digest (the first run with digests).
      const storedDigests: StoredDigests = { forStream: async () => ({ skipping: false, unchanged: () => false }) };
      const ctx = { ...context('shelf'), shelf, storedDigests };
      await source.discover(config(url, { batch_size: 100 }), ctx);
      expect(asked()).toBe(1);
      const out = [];
      for await (const m of source.read(config(url, { batch_size: 100 }), catalog(stream('items', 'full_refresh')), undefined, ctx))
        out.push(m);
      expect(records(out).map((r) => r.data.id)).toEqual(all);
      const digests = out.flatMap((m) => (m.type === 'RECORD' ? [(m as { record: { digest?: string } }).record.digest] : []));
      expect(digests.length).toBe(all.length);
      expect(digests.every((d) => typeof d === 'string')).toBe(true);
      expect(asked()).toBe(1);
      await shelf.close();
      // With digests off, nobody asks.
      spy.mockClear();
      const off = new RunShelf();
      await source.discover(config(url, { source_digests: false }), { ...context('shelf'), shelf: off });
      expect(asked()).toBe(0);
      await off.close();
    } finally {
      spy.mockRestore();
    }
  });

  it('without a shelf, discover() closes its session', async () => {
    await source.discover(config(url), context('plain'));
    for (let i = 0; i < 50 && (await sessions()); i++) await sleep(20);
    expect(await sessions()).toBe(0);
  });
});
