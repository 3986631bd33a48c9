// `sluice check` also checks the dead-letter store of a connection with `errors.tolerance: all`:
// without it, an unreachable or unwritable store surfaced only at the first bad record, mid-run.
// A file directory, a PostgreSQL table (missing but creatable, present, or not writable by the
// user), a Kafka topic on the mock cluster; check writes nothing and prints no password.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { STACK_LINE, fileToJsonlPipeline, runCli, tempDir } from '../helpers/cli.ts';
import { useAdminClient } from '../helpers/pg-admin.ts';

const pgUrl = inject('pgUrl');
const admin = useAdminClient(() => pgUrl);

const pipelineWith = (dir: string, deadLetter: Record<string, unknown>, tolerance = 'all') =>
  fileToJsonlPipeline(dir, { files: { 'docs/a.md': '# A\n\nalpha' }, connection: { errors: { tolerance, dead_letter: deadLetter } } });

const check = async (file: string) => {
  const r = await runCli(['check', file, '--json']);
  expect(r.stderr).not.toMatch(STACK_LINE);
  return { code: r.code, result: JSON.parse(r.stdout)[0] as { dead_letters?: { ok: boolean; message: string; hint?: string } }, r };
};

describe('sluice check: the dead-letter store', () => {
  it('a file directory: creatable is ok; a file in its place fails naming the path; no store, no line', async () => {
    const dir = tempDir('check-dl-file-');
    const ok = await check(pipelineWith(dir, { type: 'file', path: './letters/here' }));
    expect(ok.code).toBe(0);
    expect(ok.result.dead_letters).toEqual({
      ok: true,
      message: `directory ${join(dir, 'letters/here')} will be created at the first letter`,
    });
    expect(existsSync(join(dir, 'letters')), 'check writes nothing').toBe(false);

    writeFileSync(join(dir, 'blocked'), 'not a directory');
    const bad = await check(pipelineWith(dir, { type: 'file', path: './blocked/letters' }));
    expect(bad.code).toBe(1);
    expect(bad.result.dead_letters?.ok).toBe(false);
    expect(bad.result.dead_letters?.message).toContain(`${join(dir, 'blocked')} is not a directory`);
    expect(bad.result.dead_letters?.hint).toMatch(/errors\.dead_letter\.path/);
    const text = await runCli(['check', pipelineWith(dir, { type: 'file', path: './blocked/letters' })]);
    expect(text.stdout).toMatch(/^c dead letters: FAILED — dead-letter directory .* cannot be used/m);

    // tolerance none: a sync never writes letters, so check does not look.
    const none = await check(pipelineWith(dir, { type: 'file', path: './blocked/letters' }, 'none'));
    expect(none.code).toBe(0);
    expect(none.result.dead_letters).toBeUndefined();
  });

  it('a PostgreSQL table: missing but creatable, present, not writable by the user, unreachable', { timeout: 60_000 }, async () => {
    const dir = tempDir('check-dl-pg-');
    const schema = `dl_check_${Date.now().toString(36)}`;
    const missing = await check(pipelineWith(dir, { type: 'postgres', url: pgUrl, schema, table: 'letters' }));
    expect(missing.code, missing.r.stdout).toBe(0);
    expect(missing.result.dead_letters).toEqual({ ok: true, message: `table ${schema}.letters will be created at the first letter` });
    const { rows } = await admin.query('SELECT to_regnamespace($1) AS s', [schema]);
    expect(rows[0].s, 'check creates nothing').toBeNull();

    await admin.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.letters (id text)`);
    const present = await check(pipelineWith(dir, { type: 'postgres', url: pgUrl, schema, table: 'letters' }));
    expect(present.result.dead_letters).toEqual({ ok: true, message: `table ${schema}.letters is writable` });

    // A user who may connect but not write the table.
    const role = `${schema}_reader`;
    const password = 'dl-check-Pw-0042';
    await admin.query(
      `CREATE ROLE ${role} LOGIN PASSWORD '${password}'; GRANT USAGE ON SCHEMA ${schema} TO ${role}; GRANT SELECT ON ${schema}.letters TO ${role}`,
    );
    const url = new URL(pgUrl);
    url.username = role;
    url.password = password;
    const readOnly = await check(pipelineWith(dir, { type: 'postgres', url: url.toString(), schema, table: 'letters' }));
    expect(readOnly.code).toBe(1);
    expect(readOnly.result.dead_letters?.message).toBe(
      `dead-letter table ${schema}.letters cannot be used: the user may not select, insert, update and delete its rows`,
    );
    // …nor create it where it is missing.
    const notCreatable = await check(pipelineWith(dir, { type: 'postgres', url: url.toString(), schema, table: 'other' }));
    expect(notCreatable.result.dead_letters?.message).toMatch(/other cannot be used: it does not exist and the user may not create it/);

    url.port = '9';
    const unreachable = await check(pipelineWith(dir, { type: 'postgres', url: url.toString(), schema, table: 'letters' }));
    expect(unreachable.code).toBe(1);
    expect(unreachable.result.dead_letters?.message).toMatch(/cannot be used: .*(ECONNREFUSED|connect)/);
    for (const r of [readOnly, notCreatable, unreachable]) expect(r.r.stdout + r.r.stderr).not.toContain(password);
    await admin.query(`DROP SCHEMA ${schema} CASCADE; DROP ROLE ${role}`);
  });

  it('a Kafka topic: the brokers answer and its partitions are read', { timeout: 60_000 }, async () => {
    const brokers = inject('kafkaBrokers');
    const topic = `dl-check-${Date.now().toString(36)}`;
    const dir = tempDir('check-dl-kafka-');
    const ok = await check(pipelineWith(dir, { type: 'kafka', brokers, topic }));
    expect(ok.code, ok.r.stdout).toBe(0);
    expect(ok.result.dead_letters?.message).toMatch(new RegExp(`^topic ${topic} has \\d+ partitions?$`));
    const down = await check(pipelineWith(dir, { type: 'kafka', brokers: '127.0.0.1:9', topic }));
    expect(down.code).toBe(1);
    expect(down.result.dead_letters?.message).toMatch(new RegExp(`^dead-letter topic ${topic}: connecting failed: `));
    expect(down.result.dead_letters?.hint).toMatch(/errors\.dead_letter\.brokers/);
  });
});
