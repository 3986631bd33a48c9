// CDC over logical replication against the real server: consistent snapshot, inserts / updates /
// deletes, TOAST-unchanged updates, acknowledgement only after commit, heartbeats, invalid slots,
// schema changes, privileges.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { SourceState } from '../../../src/protocol/connector.ts';
import { CDC_DELETED_AT, type AirbyteMessage } from '../../../src/protocol/messages.ts';
import source from '../index.ts';
import { defaultSlotName } from '../cdc.ts';
import { catalog, config, context, createDatabase, drive, records, sql, states, stream } from './helpers.ts';

let url: string;

beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_cdc');
});

/** Applies records like a destination keyed by primary key: upsert, or delete on `_ab_cdc_deleted_at`. */
function fold(msgs: AirbyteMessage[], into = new Map<string, Record<string, unknown>>(), stream?: string) {
  for (const r of records(msgs)) {
    if (stream && r.stream !== stream) continue;
    const id = String(r.data.id);
    if (r.data[CDC_DELETED_AT]) into.delete(id);
    else into.set(id, r.data);
  }
  return into;
}

/** The slot sluice names for a connection in this test's database. */
const slotOf = (connection: string) => defaultSlotName(connection, 'srcpg_cdc');

async function tableAsMap(table: string) {
  const rows = (await sql(url, `SELECT * FROM ${table}`)).rows;
  return new Map(rows.map((r) => [String(r.id), r]));
}

async function confirmedFlush(slot: string): Promise<string | null> {
  return (
    (await sql(url, 'SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]?.l ?? null
  );
}
const lsnNum = (l: string) => {
  const [a, b] = l.split('/');
  return BigInt('0x' + a) * 2n ** 32n + BigInt('0x' + b);
};

const completed = (msgs: AirbyteMessage[], name: string) =>
  msgs.some(
    (m) =>
      m.type === 'TRACE' &&
      (m as { trace: { stream_status?: { status: string; stream_descriptor: { name: string } } } }).trace.stream_status?.stream_descriptor
        .name === name,
  );

describe('postgres source CDC', () => {
  it('snapshots, then streams inserts, updates, deletes and TOAST-unchanged updates', async () => {
    await sql(
      url,
      `CREATE TABLE docs (id int PRIMARY KEY, title text, body text, n int, tags text[], price numeric(12,4), at timestamptz);
       INSERT INTO docs SELECT g, 'title ' || g, 'body ' || g, g, ARRAY['t' || g], g * 1.5, '2024-01-01 00:00:00+00' FROM generate_series(1, 250) g;`,
    );
    const cfg = config(url, { batch_size: 100 });
    const cat = catalog(stream('docs', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_basic');
    expect(records(first.msgs)).toHaveLength(250);
    expect(completed(first.msgs, 'docs')).toBe(true);
    const st = states(first.msgs).at(-1)!;
    expect(st.type).toBe('GLOBAL');
    expect(st.global!.shared_state).toMatchObject({ slot: slotOf('pgsrc_basic'), publication: 'sluice_pgsrc_basic' });
    expect(first.state?.streams.docs).toEqual({ snapshot: 'done', columns: ['id', 'title', 'body', 'n', 'tags', 'price', 'at'] });

    const big = (await sql(url, `SELECT string_agg(md5(g::text || random()::text), '') AS s FROM generate_series(1, 400) g`)).rows[0]
      .s as string;
    expect(big.length).toBeGreaterThan(8192);
    await sql(url, `UPDATE docs SET body = $1 WHERE id = 7`, [big]);
    await sql(
      url,
      `INSERT INTO docs VALUES (1001, 'new', 'fresh', 1, '{a,b}', 10.1234, '2024-06-01 10:00:00.5+00');
       UPDATE docs SET title = 'edited' WHERE id = 3;
       UPDATE docs SET id = 2000 WHERE id = 4;
       DELETE FROM docs WHERE id IN (5, 6);
       UPDATE docs SET n = 77 WHERE id = 7;`,
    );
    const second = await drive(cfg, cat, first.state, 'pgsrc_basic');
    const recs = records(second.msgs);
    const deletions = recs.filter((r) => r.data[CDC_DELETED_AT]).map((r) => r.data.id);
    expect(deletions.sort()).toEqual([4, 5, 6]);
    expect(recs.find((r) => r.data.id === 1001)?.data).toMatchObject({
      title: 'new',
      tags: ['a', 'b'],
      price: '10.1234',
      at: '2024-06-01T10:00:00.5Z',
    });
    expect(recs.find((r) => r.data.id === 3)?.data.title).toBe('edited');
    // The last change to row 7 left its TOASTed body untouched: the text must still be there.
    const toastUpdate = recs.filter((r) => r.data.id === 7).at(-1)!;
    expect(toastUpdate.data.n).toBe(77);
    expect(toastUpdate.data.body).toBe(big);
    expect(completed(second.msgs, 'docs')).toBe(true);

    const dest = fold(second.msgs, fold(first.msgs));
    const table = await tableAsMap('docs');
    expect([...dest.keys()].sort()).toEqual([...table.keys()].sort());
    expect(dest.get('7')!.body).toBe(big);
    expect(dest.get('2000')!.title).toBe('title 4');

    // Caught up and nothing new: a third run yields no records and still ends.
    const third = await drive(cfg, cat, second.state, 'pgsrc_basic');
    expect(records(third.msgs)).toHaveLength(0);
  });

  it('the initial snapshot and the stream neither lose nor repeat a change made during the snapshot', async () => {
    await sql(url, `CREATE TABLE snap (id int PRIMARY KEY, v text); INSERT INTO snap SELECT g, 'v' || g FROM generate_series(1, 300) g;`);
    const cfg = config(url, { batch_size: 50 });
    const ctx = context('pgsrc_snap');
    const msgs: AirbyteMessage[] = [];
    let wrote = false;
    for await (const m of source.read(cfg, catalog(stream('snap', 'cdc')), undefined, ctx)) {
      msgs.push(m);
      if (!wrote && m.type === 'RECORD') {
        wrote = true; // the slot and its snapshot exist now; change rows on both sides of the cursor
        await sql(
          url,
          `INSERT INTO snap VALUES (301, 'late'); UPDATE snap SET v = 'upd' WHERE id IN (2, 290); DELETE FROM snap WHERE id IN (1, 299);`,
        );
      }
    }
    const recs = records(msgs);
    expect(recs.filter((r) => r.data.id === 301)).toHaveLength(1);
    expect(recs.filter((r) => r.data.id === 290).map((r) => r.data.v)).toEqual(['v290', 'upd']);
    expect(recs.filter((r) => r.data.id === 299).map((r) => !!r.data[CDC_DELETED_AT])).toEqual([false, true]);
    const dest = fold(msgs);
    expect([...dest.keys()].sort()).toEqual([...(await tableAsMap('snap')).keys()].sort());
    expect(dest.get('290')!.v).toBe('upd');
  });

  it('resumes a snapshot interrupted mid-table and converges', async () => {
    await sql(url, `CREATE TABLE snap2 (id int PRIMARY KEY, v text); INSERT INTO snap2 SELECT g, 'v' || g FROM generate_series(1, 400) g;`);
    const cfg = config(url, { batch_size: 100 });
    const cat = catalog(stream('snap2', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_snap2', { stopAfterStates: 2 });
    expect(first.state?.streams.snap2).toEqual({ pk_after: [200] });
    await sql(url, `UPDATE snap2 SET v = 'x' WHERE id IN (10, 300); DELETE FROM snap2 WHERE id = 350; INSERT INTO snap2 VALUES (401, 'n')`);
    const second = await drive(cfg, cat, first.state, 'pgsrc_snap2');
    expect(records(second.msgs)[0].data.id).toBe(201);
    const dest = fold(second.msgs, fold(first.msgs));
    const table = await tableAsMap('snap2');
    expect(dest.size).toBe(table.size);
    for (const [k, v] of table) expect(dest.get(k)?.v).toBe(v.v);
  });

  it('acknowledges an LSN only once its state is committed; uncommitted changes are re-delivered', async () => {
    await sql(url, `CREATE TABLE acks (id int PRIMARY KEY, v text); INSERT INTO acks VALUES (1, 'a')`);
    const cfg = config(url);
    const cat = catalog(stream('acks', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_acks');
    const committedLsn = first.state!.shared!.lsn as string;
    await sql(url, `INSERT INTO acks VALUES (2, 'b')`);
    const before = await confirmedFlush(slotOf('pgsrc_acks'));
    // The destination never commits: the server must keep the change.
    const uncommitted = await drive(cfg, cat, first.state, 'pgsrc_acks', { commit: false });
    expect(records(uncommitted.msgs).map((r) => r.data.id)).toEqual([2]);
    expect(await confirmedFlush(slotOf('pgsrc_acks'))).toBe(before);
    expect(lsnNum(before!)).toBeLessThanOrEqual(lsnNum(committedLsn));
    // Restarted from the last committed state, the change comes again; committing it advances the slot.
    const again = await drive(cfg, cat, first.state, 'pgsrc_acks');
    expect(records(again.msgs).map((r) => r.data.id)).toEqual([2]);
    const after = await confirmedFlush(slotOf('pgsrc_acks'));
    expect(lsnNum(after!)).toBeGreaterThan(lsnNum(before!));
    expect(after).toBe(again.state!.shared!.lsn);
  });

  it('heartbeats advance the slot while the watched table is idle (follow mode)', async () => {
    await sql(url, `CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id serial PRIMARY KEY, pad text);`);
    const cfg = config(url, { cdc: { heartbeat_seconds: 0.3 } });
    const cat = catalog(stream('quiet', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_hb');
    const start = await confirmedFlush(slotOf('pgsrc_hb'));
    // Unwatched writes create WAL the slot would otherwise retain forever.
    await sql(url, `INSERT INTO busy (pad) SELECT repeat('p', 200) FROM generate_series(1, 2000)`);
    const walAfterWrites = (await sql(url, 'SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string;
    const t0 = Date.now();
    const run = await drive(cfg, cat, first.state, 'pgsrc_hb', {
      follow: true,
      timeoutMs: 15_000,
      until: () => Date.now() - t0 > 2_500,
    });
    expect(records(run.msgs)).toHaveLength(0);
    expect(states(run.msgs).length).toBeGreaterThan(1);
    // Slot lag is reported when streaming starts.
    expect(
      run.msgs.some(
        (m) =>
          m.type === 'LOG' &&
          new RegExp(`slot ${slotOf('pgsrc_hb')}: \\d+ bytes of WAL retained`).test((m as { log: { message: string } }).log.message),
      ),
    ).toBe(true);
    const end = await confirmedFlush(slotOf('pgsrc_hb'));
    expect(lsnNum(end!)).toBeGreaterThan(lsnNum(start!));
    expect(lsnNum(end!)).toBeGreaterThanOrEqual(lsnNum(walAfterWrites));
  });

  it('follow mode streams new changes until the signal aborts, then stops with a state', async () => {
    await sql(url, `CREATE TABLE live (id int PRIMARY KEY, v text)`);
    const cfg = config(url);
    const cat = catalog(stream('live', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_live');
    setTimeout(() => void sql(url, `INSERT INTO live VALUES (1, 'one'), (2, 'two')`), 300);
    const run = await drive(cfg, cat, first.state, 'pgsrc_live', {
      follow: true,
      until: (m) => records(m).length >= 2 && m.at(-1)!.type === 'STATE',
    });
    expect(records(run.msgs).map((r) => r.data.id)).toEqual([1, 2]);
    expect(run.msgs.at(-1)!.type).toBe('STATE');
  });

  it('on_invalid_slot: fail stops with a clear message; resnapshot re-reads and continues', async () => {
    await sql(url, `CREATE TABLE lost (id int PRIMARY KEY, v text); INSERT INTO lost VALUES (1, 'a'), (2, 'b')`);
    const cat = catalog(stream('lost', 'cdc'));
    const first = await drive(config(url), cat, undefined, 'pgsrc_lost');
    await sql(url, `SELECT pg_drop_replication_slot('${slotOf('pgsrc_lost')}')`);
    await sql(url, `INSERT INTO lost VALUES (3, 'c')`);
    await expect(drive(config(url), cat, first.state, 'pgsrc_lost')).rejects.toThrow(
      new RegExp(`slot "${slotOf('pgsrc_lost')}" no longer exists.*cannot be replayed`),
    );
    const re = await drive(config(url, { cdc: { on_invalid_slot: 'resnapshot' } }), cat, first.state, 'pgsrc_lost');
    expect(
      records(re.msgs)
        .map((r) => r.data.id)
        .sort(),
    ).toEqual([1, 2, 3]);
    expect(re.msgs.some((m) => m.type === 'LOG' && /new snapshot/.test((m as { log: { message: string } }).log.message))).toBe(true);
  });

  it('schema changes: propagate carries new columns, fail stops naming the change', async () => {
    await sql(url, `CREATE TABLE shape (id int PRIMARY KEY, a text); INSERT INTO shape VALUES (1, 'x')`);
    const cat = catalog(stream('shape', 'cdc'));
    const first = await drive(config(url), cat, undefined, 'pgsrc_shape');
    await sql(url, `ALTER TABLE shape ADD COLUMN extra int; INSERT INTO shape VALUES (2, 'y', 42)`);
    await expect(drive(config(url, { cdc: { schema_change: 'fail' } }), cat, first.state, 'pgsrc_shape')).rejects.toThrow(
      /columns of public.shape changed \(added extra\)/,
    );
    const ok = await drive(config(url), cat, first.state, 'pgsrc_shape');
    expect(records(ok.msgs).map((r) => r.data)).toEqual([{ id: 2, a: 'y', extra: 42 }]);
    expect(ok.msgs.some((m) => m.type === 'LOG' && /added extra/.test((m as { log: { message: string } }).log.message))).toBe(true);
  });

  it('replicates a partitioned table under its own name, and leaves generated columns out consistently', async () => {
    await sql(
      url,
      `CREATE TABLE parts (id int, region text, body text, len int GENERATED ALWAYS AS (length(body)) STORED, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
       CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu');
       CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us');
       INSERT INTO parts (id, region, body) VALUES (1, 'eu', 'one'), (2, 'us', 'two');`,
    );
    const cat = catalog(stream('parts', 'cdc'));
    const first = await drive(config(url), cat, undefined, 'pgsrc_parts');
    expect(
      records(first.msgs)
        .map((r) => r.data)
        .sort((x, y) => Number(x.id) - Number(y.id)),
    ).toEqual([
      { id: 1, region: 'eu', body: 'one' },
      { id: 2, region: 'us', body: 'two' },
    ]);
    await sql(
      url,
      `INSERT INTO parts (id, region, body) VALUES (3, 'us', 'three'); UPDATE parts SET body = 'uno' WHERE id = 1; DELETE FROM parts WHERE id = 2`,
    );
    const second = await drive(config(url, { cdc: { schema_change: 'fail' } }), cat, first.state, 'pgsrc_parts');
    const recs = records(second.msgs);
    expect(recs.every((r) => r.stream === 'parts')).toBe(true);
    expect(recs.find((r) => r.data.id === 3)?.data).toEqual({ id: 3, region: 'us', body: 'three' });
    expect(recs.find((r) => r.data.id === 1)?.data).toEqual({ id: 1, region: 'eu', body: 'uno' });
    expect(recs.find((r) => r.data.id === 2)?.data).toMatchObject({ id: 2, region: 'us', [CDC_DELETED_AT]: expect.any(String) });
  });

  it('names the missing privilege when the user may not replicate', async () => {
    await sql(
      url,
      `CREATE TABLE guarded (id int PRIMARY KEY);
       DROP ROLE IF EXISTS plain_user; CREATE ROLE plain_user LOGIN PASSWORD 'plain-pw';
       GRANT SELECT ON guarded TO plain_user;`,
    );
    const u = new URL(url);
    u.username = 'plain_user';
    u.password = 'plain-pw';
    const cat = catalog(stream('guarded', 'cdc'));
    await expect(drive(config(u.toString()), cat, undefined, 'pgsrc_priv')).rejects.toThrow(
      /creating publication "sluice_pgsrc_priv" needs the CREATE privilege/,
    );
    await sql(url, `CREATE PUBLICATION sluice_pgsrc_priv FOR TABLE guarded`);
    const err = await drive(config(u.toString()), cat, undefined, 'pgsrc_priv').catch((e) => e);
    expect(String(err.message) + err.hint).toMatch(/REPLICATION/);
    const checked = await source.check(config(u.toString()), context('pgsrc_priv'));
    expect(checked.warnings?.some((w) => w.includes('REPLICATION attribute'))).toBe(true);
  });
});

export type { SourceState };
