// Replication slots are server-wide: connections of the same name in two databases of one server
// get slots of their own, an existing user's `sluice_<connection>` slot keeps working, and a slot
// that belongs to another database is never dropped (nor is dropping it suggested).
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { defaultSlotName, legacySlotName } from '../cdc.ts';
import source from '../index.ts';
import { catalog, config, context, createDatabase, drive, records, sql, states } from './helpers.ts';
import { stream } from './helpers.ts';

let dbA: string;
let dbB: string;
beforeAll(async () => {
  dbA = await createDatabase(inject('pgUrl'), 'srcpg_slots_a');
  dbB = await createDatabase(inject('pgUrl'), 'srcpg_slots_b');
  for (const u of [dbA, dbB]) await sql(u, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')`);
});

const slotsNamed = async (names: string[]) =>
  (await sql(dbA, `SELECT slot_name, database FROM pg_replication_slots WHERE slot_name = ANY($1) ORDER BY slot_name`, [names])).rows.map(
    (r) => `${r.slot_name}@${r.database}`,
  );

describe('replication slot names', () => {
  it('two databases, one connection name: each gets its own slot, and both keep streaming', async () => {
    const cat = catalog(stream('t', 'cdc'));
    const a = await drive(config(dbA), cat, undefined, 'shared_name');
    const b = await drive(config(dbB), cat, undefined, 'shared_name');
    const slotA = defaultSlotName('shared_name', 'srcpg_slots_a');
    const slotB = defaultSlotName('shared_name', 'srcpg_slots_b');
    expect(slotA).not.toBe(slotB);
    expect(slotA).toMatch(/^sluice_shared_name_[0-9a-f]{8}$/);
    expect(await slotsNamed([slotA, slotB])).toEqual([`${slotA}@srcpg_slots_a`, `${slotB}@srcpg_slots_b`].sort());
    await sql(dbA, `INSERT INTO t VALUES (2, 'a two')`);
    await sql(dbB, `INSERT INTO t VALUES (2, 'b two')`);
    const a2 = await drive(config(dbA), cat, a.state, 'shared_name');
    const b2 = await drive(config(dbB), cat, b.state, 'shared_name');
    expect(records(a2.msgs).map((r) => r.data.v)).toEqual(['a two']);
    expect(records(b2.msgs).map((r) => r.data.v)).toEqual(['b two']);
  });

  it('a state made on the old slot name (sluice_<connection>) goes on with that slot, without a new snapshot', async () => {
    const cat = catalog(stream('t', 'cdc'));
    const legacy = legacySlotName('old_user');
    // What an earlier version did by default: the slot is sluice_<connection>.
    const first = await drive(config(dbA, { cdc: { slot: legacy } }), cat, undefined, 'old_user');
    expect(states(first.msgs).at(-1)!.global!.shared_state).toMatchObject({ slot: legacy });
    await sql(dbA, `INSERT INTO t VALUES (30, 'after upgrade')`);
    const next = await drive(config(dbA), cat, first.state, 'old_user');
    expect(records(next.msgs).map((r) => r.data.id)).toEqual([30]); // streamed, not re-snapshotted
    expect(states(next.msgs).at(-1)!.global!.shared_state).toMatchObject({ slot: legacy });
    expect(await slotsNamed([defaultSlotName('old_user', 'srcpg_slots_a')])).toEqual([]);
    // check() reports on that slot too
    const check = await source.check(config(dbA), context('old_user'));
    expect(check.warnings?.join('\n')).toMatch(new RegExp(`slot ${legacy} retains \\d+ bytes of WAL`));
  });

  it('a saved slot that belongs to another database is never dropped: fail names it; resnapshot moves to our own slot', async () => {
    const cat = catalog(stream('t', 'cdc'));
    // Pipeline B on database B streams from its slot ...
    const other = await drive(config(dbB, { cdc: { slot: 'sluice_collide' } }), cat, undefined, 'collide');
    // ... and pipeline A's saved state names the same slot (made by the old, colliding default).
    const mine = await drive(config(dbA), cat, undefined, 'collide');
    const stolen = { ...mine.state!, shared: { ...mine.state!.shared, slot: 'sluice_collide' } };
    const err = await drive(config(dbA), cat, stolen, 'collide').catch((e) => e);
    expect(err.message).toMatch(
      /replication slot "sluice_collide" belongs to database srcpg_slots_b, not to this connection \(database srcpg_slots_a/,
    );
    expect(err.hint).toMatch(/another pipeline’s slot: leave it alone/);
    expect(err.hint).not.toMatch(/drop/i);
    expect(await slotsNamed(['sluice_collide'])).toEqual(['sluice_collide@srcpg_slots_b']);

    const re = await drive(config(dbA, { cdc: { on_invalid_slot: 'resnapshot' } }), cat, stolen, 'collide');
    expect(
      records(re.msgs)
        .map((r) => r.data.id)
        .sort((x, y) => Number(x) - Number(y)),
    ).toEqual([1, 2, 30]);
    expect(states(re.msgs).at(-1)!.global!.shared_state).toMatchObject({ slot: defaultSlotName('collide', 'srcpg_slots_a') });
    expect(await slotsNamed(['sluice_collide'])).toEqual(['sluice_collide@srcpg_slots_b']); // still there, untouched
    // and B goes on streaming from it
    await sql(dbB, `INSERT INTO t VALUES (40, 'b forty')`);
    const b2 = await drive(config(dbB, { cdc: { slot: 'sluice_collide' } }), cat, other.state, 'collide');
    expect(records(b2.msgs).map((r) => r.data.id)).toEqual([40]);
  });

  it('a configured slot name taken in another database fails at once, without touching it', async () => {
    const cat = catalog(stream('t', 'cdc'));
    await drive(config(dbB, { cdc: { slot: 'sluice_taken' } }), cat, undefined, 'taken_b');
    const err = await drive(config(dbA, { cdc: { slot: 'sluice_taken' } }), cat, undefined, 'taken_a').catch((e) => e);
    expect(err.message).toMatch(/replication slot "sluice_taken" belongs to database srcpg_slots_b/);
    expect(err.hint).toMatch(/set cdc.slot to a name of this connection’s own/);
    expect(await slotsNamed(['sluice_taken'])).toEqual(['sluice_taken@srcpg_slots_b']);
  });
});
