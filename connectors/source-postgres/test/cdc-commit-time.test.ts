// CDC records carry their transaction's commit time (from pgoutput's BEGIN) as `emitted_at`, so
// the engine's replication-lag metric runs from the source commit to the destination commit.
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { CDC_DELETED_AT } from '../../../src/protocol/messages.ts';
import { catalog, config, createDatabase, drive, records, sql, stream } from './helpers.ts';

let url: string;
beforeAll(async () => {
  url = await createDatabase(inject('pgUrl'), 'srcpg_ctime');
});

describe('postgres CDC commit time', () => {
  it('stamps inserts, updates and deletes with the commit time, not the time they were read', async () => {
    await sql(url, `CREATE TABLE ct (id int PRIMARY KEY, started timestamptz, body text)`);
    const cfg = config(url);
    const cat = catalog(stream('ct', 'cdc'));
    const first = await drive(cfg, cat, undefined, 'pgsrc_ctime');

    // The transaction starts, waits 1.2 s, then commits; sluice reads it 1.5 s after that.
    await sql(url, `BEGIN; INSERT INTO ct VALUES (1, clock_timestamp(), 'a'); SELECT pg_sleep(1.2); COMMIT;`);
    const committedBy = Date.now();
    await sql(url, `UPDATE ct SET body = 'b' WHERE id = 1`);
    await sql(url, `DELETE FROM ct WHERE id = 1`);
    const lastCommittedBy = Date.now();
    await sleep(1_500);
    const readFrom = Date.now();
    const second = await drive(cfg, cat, first.state, 'pgsrc_ctime');
    const recs = records(second.msgs).filter((r) => r.stream === 'ct');
    expect(recs).toHaveLength(3);
    const emitted = second.msgs.filter((m) => m.type === 'RECORD').map((m) => (m as { record: { emitted_at: number } }).record.emitted_at);
    const started = new Date(recs[0].data.started as string).getTime();
    // Same machine, same clock: the commit came after the 1.2 s sleep and before our client saw it.
    expect(emitted[0]).toBeGreaterThanOrEqual(started + 1_150);
    expect(emitted[0]).toBeLessThanOrEqual(committedBy);
    for (const t of emitted) expect(t).toBeLessThanOrEqual(lastCommittedBy);
    for (const t of emitted) expect(t).toBeLessThan(readFrom);
    expect(recs[2].data[CDC_DELETED_AT]).toBe(new Date(emitted[2]).toISOString());
  });
});
