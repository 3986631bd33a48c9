// When the engine says a listing will come (ConnectorContext.listsDocuments), readState() — a
// sync's first call — also connects the session documents() will list with, so that connect
// overlaps the run's set-up. The listing takes it; what no listing takes is closed with the shelf;
// a spare the server ended is not used. Without the hint nothing more is opened than before.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { describeOnNativePgvector } from '../../test/helpers/pgvector-backends.ts';
import { sessionCounter, urlNamed } from '../../test/helpers/pg-sessions.ts';
import { RunShelf } from '../../src/engine/shelf.ts';
import destination from './index.ts';
import { PgvectorConfigSchema } from './config.ts';
import { documentMessage, drain, stateMessage, testContext } from './testing.ts';

describeOnNativePgvector('pgvector: the listing session is connected ahead (ConnectorContext.listsDocuments)', (backend) => {
  let admin: pg.Client;
  const schema = `spare_${randomBytes(4).toString('hex')}`;
  // Its own application_name, so only this test's sessions are counted.
  const url = () => urlNamed(backend.url, schema);
  const config = () => PgvectorConfigSchema.parse({ url: url(), schema, index: 'none' });
  const open = (ctx: ReturnType<typeof testContext>) =>
    destination.open(config(), ctx, {
      streams: [{ name: 'docs', destinationSyncMode: 'append_dedup', primaryKey: [['id']] }],
      dimensions: 4,
    });
  const { sessions, settle, terminate } = sessionCounter(() => admin, schema);
  const list = async (ctx: ReturnType<typeof testContext>) => {
    const ids: string[] = [];
    for await (const d of destination.documents!(config(), ctx, 'docs')) ids.push(d.documentId);
    return ids.sort();
  };

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: backend.url });
    await admin.connect();
    const ctx = testContext('spare');
    const w = await open(ctx);
    await drain(w, [documentMessage('docs', 'a', 1, 4), documentMessage('docs', 'b', 1, 4), stateMessage('docs', 1)]);
    await w.close();
  });
  afterAll(async () => {
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin?.end();
  });

  it('readState() connects the listing session too; documents() lists through it', async () => {
    await settle(0);
    const shelf = new RunShelf();
    const ctx = { ...testContext('spare'), shelf, listsDocuments: true };
    await destination.readState!(config(), ctx);
    expect(shelf.size).toBe(2);
    expect(await settle(2)).toBe(2);
    const w = await open(ctx);
    expect(shelf.size).toBe(2); // the spare, and the columns the writer found in table docs
    expect(await list(ctx)).toEqual(['a', 'b']);
    // Taken and closed by the listing; no third session was opened for it.
    expect(shelf.size).toBe(0);
    expect(await settle(1)).toBe(1);
    await w.close();
    expect(await settle(0)).toBe(0);
  });

  it('the listing starts from the columns the writer found: no catalog query of its own, the same documents and fingerprints', async () => {
    const all = async (ctx: ReturnType<typeof testContext>) => {
      const docs = [];
      for await (const d of destination.documents!(config(), ctx, 'docs')) docs.push(d);
      return docs.sort((x, y) => x.documentId.localeCompare(y.documentId));
    };
    const alone = await all(testContext('spare'));
    expect(alone.map((d) => d.documentId)).toEqual(['a', 'b']);
    const shelf = new RunShelf();
    const ctx = { ...testContext('spare'), shelf, listsDocuments: true };
    await destination.readState!(config(), ctx);
    const w = await open(ctx);
    const spy = vi.spyOn(pg.Client.prototype, 'query');
    try {
      expect(await all(ctx)).toEqual(alone);
      const asked = spy.mock.calls.map((c) => (typeof c[0] === 'string' ? c[0] : String((c[0] as { text?: string })?.text ?? '')));
      expect(asked.filter((q) => q.includes('pg_attribute'))).toEqual([]);
      // Taken once: a second listing in the run asks the catalog, as any listing did.
      spy.mockClear();
      expect(await all(ctx)).toEqual(alone);
      const again = spy.mock.calls.map((c) => (typeof c[0] === 'string' ? c[0] : String((c[0] as { text?: string })?.text ?? '')));
      expect(again.filter((q) => q.includes('pg_attribute'))).toHaveLength(1);
    } finally {
      spy.mockRestore();
      await w.close();
      await shelf.close();
    }
    expect(await settle(0)).toBe(0);
  });

  it('a run that never lists closes the spare with its shelf', async () => {
    await settle(0);
    const shelf = new RunShelf();
    const ctx = { ...testContext('spare'), shelf, listsDocuments: true };
    await destination.readState!(config(), ctx);
    expect(await settle(2)).toBe(2);
    await shelf.close();
    expect(await settle(0)).toBe(0);
  });

  it('a spare the server ended is not used: documents() connects afresh', async () => {
    await settle(0);
    const shelf = new RunShelf();
    const ctx = { ...testContext('spare'), shelf, listsDocuments: true };
    await destination.readState!(config(), ctx);
    expect(await settle(2)).toBe(2);
    await terminate();
    await sleep(200); // the clients hear of it
    expect(await list(ctx)).toEqual(['a', 'b']);
    await shelf.close();
    expect(await settle(0)).toBe(0);
  });

  it('without the hint, readState() connects nothing for a listing', async () => {
    await settle(0);
    const shelf = new RunShelf();
    const ctx = { ...testContext('spare'), shelf };
    await destination.readState!(config(), ctx);
    expect(shelf.size).toBe(1);
    expect(await settle(1)).toBe(1);
    await shelf.close();
    expect(await settle(0)).toBe(0);
  });
});
