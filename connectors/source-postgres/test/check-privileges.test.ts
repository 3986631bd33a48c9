// Issue 14, defect 4: `sluice check` verifies the privileges the configured modes need and fails
// with what to GRANT — real roles lacking privileges on the real PostgreSQL 15 test server.
import { join } from 'node:path';
import { beforeAll, describe, expect, it, inject } from 'vitest';
import { runCli, tempDir, writeFiles } from '../../../test/helpers/cli.ts';
import { createDatabase, sql } from './helpers.ts';

let adminUrl: string;
const roleUrl = (user: string, db = 'check_priv') => {
  const u = new URL(adminUrl);
  u.username = user;
  u.password = 'pw-' + user;
  u.pathname = '/' + db;
  return u.toString();
};

beforeAll(async () => {
  adminUrl = await createDatabase(inject('pgUrl'), 'check_priv');
  await sql(
    adminUrl,
    `DROP ROLE IF EXISTS reader; DROP ROLE IF EXISTS streamer;
     CREATE ROLE reader LOGIN PASSWORD 'pw-reader';
     CREATE ROLE streamer LOGIN REPLICATION PASSWORD 'pw-streamer';
     CREATE TABLE docs (id int PRIMARY KEY, body text);
     CREATE TABLE secret (id int PRIMARY KEY, body text);
     CREATE TABLE quiet (id int PRIMARY KEY, body text);
     ALTER TABLE quiet REPLICA IDENTITY NOTHING;
     INSERT INTO docs VALUES (1, 'hello'); INSERT INTO quiet VALUES (1, 'x');
     GRANT SELECT ON docs, quiet TO reader, streamer;`,
  );
});

function pipeline(dir: string, user: string, streams: string, destination = `{ type: jsonl, config: { path: out.jsonl } }`) {
  writeFiles(dir, {
    'pipeline.yaml': `version: 1
connections:
  - name: priv
    source:
      type: postgres
      config: { url: ${JSON.stringify(roleUrl(user))} }
    destination: ${destination}
    streams:
${streams}
`,
  });
  return join(dir, 'pipeline.yaml');
}

describe('check verifies what the configured modes need', () => {
  it('full refresh with SELECT is ok (and names the server version)', async () => {
    const r = await runCli(['check', pipeline(tempDir('priv-'), 'reader', '      - { name: docs, sync_mode: full_refresh }')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/priv source: ok — connected to .*\(PostgreSQL 15\.\d+/);
    expect(r.stdout).not.toMatch(/undefined/);
    // REPLICA IDENTITY is a CDC matter: a full-refresh pipeline is not warned about it.
    const quiet = await runCli(['check', pipeline(tempDir('priv-'), 'reader', '      - { name: quiet, sync_mode: full_refresh }')]);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout).not.toMatch(/REPLICA IDENTITY/);
  });

  it('a table without SELECT fails with the GRANT', async () => {
    const r = await runCli(['check', pipeline(tempDir('priv-'), 'reader', '      - { name: secret, sync_mode: full_refresh }')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('priv source: FAILED');
    expect(r.stdout).toContain('stream secret: no SELECT on public.secret (GRANT SELECT ON "public"."secret" TO "reader";)');
  });

  it(
    'cdc without REPLICATION, CREATE and ownership fails with each thing to grant — and the sync fails the same way',
    { timeout: 180_000 },
    async () => {
      const file = pipeline(tempDir('priv-'), 'reader', '      - { name: docs, sync_mode: cdc }');
      const r = await runCli(['check', file]);
      expect(r.code).toBe(1);
      expect(r.stdout).toContain('CDC: reader lacks the REPLICATION attribute (ALTER ROLE "reader" REPLICATION;)');
      expect(r.stdout).toContain('GRANT CREATE ON DATABASE "check_priv" TO "reader";');
      expect(r.stdout).toMatch(
        /needs ownership of public\.docs; have their owner or an administrator run: CREATE PUBLICATION "sluice_priv" FOR TABLE "public"\."docs"/,
      );
      // What check predicted: the sync fails too.
      expect((await runCli(['sync', file])).code).not.toBe(0);
    },
  );

  it('cdc with REPLICATION but without the publication: ok once an administrator created it', { timeout: 180_000 }, async () => {
    const file = pipeline(tempDir('priv-'), 'streamer', '      - { name: docs, sync_mode: cdc }');
    await sql(adminUrl, 'GRANT CREATE ON DATABASE check_priv TO streamer');
    const before = await runCli(['check', file]);
    expect(before.code).toBe(1);
    expect(before.stdout).not.toMatch(/REPLICATION attribute/);
    expect(before.stdout).toMatch(/needs ownership of public\.docs/);
    await sql(adminUrl, 'CREATE PUBLICATION sluice_priv FOR TABLE docs WITH (publish_via_partition_root = true)');
    const after = await runCli(['check', file]);
    expect(after.code, after.stdout).toBe(0);
    await sql(adminUrl, 'DROP PUBLICATION sluice_priv');
  });

  it('cdc on a table with REPLICA IDENTITY NOTHING fails with the ALTER TABLE', async () => {
    const file = pipeline(tempDir('priv-'), 'streamer', '      - { name: quiet, sync_mode: cdc }');
    const r = await runCli(['check', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('ALTER TABLE "public"."quiet" REPLICA IDENTITY DEFAULT;');
  });

  it('pgvector: a user without CREATE on the schema is told what to grant', { timeout: 180_000 }, async () => {
    await sql(adminUrl, 'CREATE SCHEMA IF NOT EXISTS vectors');
    const dest = (user: string, schema: string) =>
      `{ type: pgvector, config: { url: ${JSON.stringify(roleUrl(user))}, schema: ${schema} } }\n    embedding: { provider: hash, dimensions: 8 }`;
    const existing = await runCli([
      'check',
      pipeline(tempDir('priv-'), 'reader', '      - { name: docs, sync_mode: full_refresh }', dest('reader', 'vectors')),
    ]);
    expect(existing.code).toBe(1);
    expect(existing.stdout).toContain(
      'reader may not create tables in schema vectors (GRANT USAGE, CREATE ON SCHEMA "vectors" TO "reader";)',
    );
    const missing = await runCli([
      'check',
      pipeline(tempDir('priv-'), 'reader', '      - { name: docs, sync_mode: full_refresh }', dest('reader', 'fresh_schema')),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toContain(
      'schema fresh_schema does not exist and reader may not create it (GRANT CREATE ON DATABASE "check_priv" TO "reader";)',
    );
  });
});
