// The COPY BINARY fast path's encoder against a real PostgreSQL 15 (test/servers/postgres.global.ts):
// into a bytea column (bytea takes any bytes, compared with pgvector's binary layout), and into a
// real vector column on native pgvector, where pgvector itself parses what was sent.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { copyBinary, encodeCopyTuple, type CopyValue } from './copy.ts';
import { decodeVectorText, encodeVector } from './sql.ts';
import { describeOnNativePgvector } from '../../test/helpers/pgvector-backends.ts';

let client: pg.Client;
beforeAll(async () => {
  client = new pg.Client({ connectionString: inject('pgUrl') });
  await client.connect();
});
afterAll(async () => {
  await client.end();
});

describe('COPY ... FROM STDIN (FORMAT BINARY)', () => {
  it('encodes text, int4, jsonb and vector fields PostgreSQL reads back exactly, across many 256 KiB writes', async () => {
    await client.query('DROP TABLE IF EXISTS pgv_copy_check');
    await client.query(
      'CREATE TEMP TABLE pgv_copy_check (id text, document_id text, chunk_index int, content text, metadata jsonb, embedding bytea)',
    );
    const n = 3000;
    const vec = (i: number) => Float32Array.from({ length: 384 }, (_, k) => Math.sin(i * 0.37 + k) * (k % 7 === 0 ? -1e-7 : 1));
    function* tuples(): Generator<CopyValue[]> {
      for (let i = 0; i < n; i++) {
        yield [
          { kind: 'text', value: `doc ${i}#0` },
          { kind: 'text', value: `doc "${i}" ü€` },
          { kind: 'int4', value: i - 5 },
          { kind: 'text', value: i === 7 ? '' : `line\nwith\ttabs \\ and ‘quotes’ ${i}` },
          { kind: 'jsonb', value: JSON.stringify({ i, tags: ['a', 'b'], nested: { ok: true }, s: 'é"\\' }) },
          { kind: 'vector', value: i === 9 ? undefined : vec(i) },
        ];
      }
    }
    await copyBinary(client, 'COPY pgv_copy_check FROM STDIN (FORMAT BINARY)', tuples());
    const { rows } = await client.query('SELECT * FROM pgv_copy_check ORDER BY chunk_index');
    expect(rows).toHaveLength(n);
    for (const i of [0, 7, 9, 1234, n - 1]) {
      const r = rows[i];
      expect(r.id).toBe(`doc ${i}#0`);
      expect(r.document_id).toBe(`doc "${i}" ü€`);
      expect(r.chunk_index).toBe(i - 5);
      expect(r.content).toBe(i === 7 ? '' : `line\nwith\ttabs \\ and ‘quotes’ ${i}`);
      expect(r.metadata).toEqual({ i, tags: ['a', 'b'], nested: { ok: true }, s: 'é"\\' });
      if (i === 9) expect(r.embedding).toBeNull();
      else {
        const b = r.embedding as Buffer;
        expect(b.equals(encodeVector(vec(i)))).toBe(true);
        expect(b.readInt16BE(0)).toBe(384);
        expect(b.readFloatBE(4 + 4 * 3)).toBeCloseTo(Math.fround(Math.sin(i * 0.37 + 3)), 6);
      }
    }
    const typed = await client.query(`SELECT pg_typeof(metadata)::text AS t, metadata->'nested'->>'ok' AS ok FROM pgv_copy_check LIMIT 1`);
    expect(typed.rows[0]).toEqual({ t: 'jsonb', ok: 'true' });
  });

  it('takes tuples larger than a write buffer, and multi-byte text that only fits once measured exactly', async () => {
    await client.query('DROP TABLE IF EXISTS pgv_copy_big');
    await client.query('CREATE TEMP TABLE pgv_copy_big (id text, n int, content text)');
    // 'é' is 2 UTF-8 bytes but budgeted at 3, 'x' is 1: sizes around the buffer's end take both branches.
    const contents = [
      'x'.repeat(100_000),
      'é'.repeat(60_000),
      '€😀'.repeat(70_000), // ~560 KB: more than one write buffer
      'a',
      'é'.repeat(43_000),
      'x'.repeat(250_000),
      '',
    ];
    const tuple = (c: string, i: number): CopyValue[] => [
      { kind: 'text', value: `t${i}` },
      { kind: 'int4', value: i },
      { kind: 'text', value: c },
    ];
    await copyBinary(client, 'COPY pgv_copy_big FROM STDIN (FORMAT BINARY)', contents.map(tuple));
    const { rows } = await client.query('SELECT id, n, content FROM pgv_copy_big ORDER BY n');
    expect(rows.map((r) => r.content)).toEqual(contents);
    expect(rows.map((r) => r.id)).toEqual(contents.map((_, i) => `t${i}`));
    expect(encodeCopyTuple(tuple('é', 3)).length).toBe(2 + 4 + 2 + 8 + 4 + 2);
  });
});

describeOnNativePgvector('COPY BINARY into a pgvector column', (backend) => {
  it('pgvector reads the binary vectors back exactly, and refuses a vector of the wrong dimension', async () => {
    const db = new pg.Client({ connectionString: backend.url });
    await db.connect();
    try {
      await db.query('CREATE TEMP TABLE pgv_copy_vec (n int, embedding vector(384))');
      const vec = (i: number) => Float32Array.from({ length: 384 }, (_, k) => Math.cos(i * 0.11 + k) * (k % 5 === 0 ? 1e-6 : 3));
      const n = 2000;
      function* tuples(): Generator<CopyValue[]> {
        for (let i = 0; i < n; i++)
          yield [
            { kind: 'int4', value: i },
            { kind: 'vector', value: i === 4 ? undefined : vec(i) },
          ];
      }
      await copyBinary(db, 'COPY pgv_copy_vec FROM STDIN (FORMAT BINARY)', tuples());
      const { rows } = await db.query<{ n: number; e: string | null; dims: number | null }>(
        'SELECT n, embedding::text AS e, vector_dims(embedding) AS dims FROM pgv_copy_vec ORDER BY n',
      );
      expect(rows).toHaveLength(n);
      for (const i of [0, 4, 777, n - 1]) {
        if (i === 4) expect(rows[i].e).toBeNull();
        else {
          expect(rows[i].dims).toBe(384);
          expect(Float32Array.from(decodeVectorText(rows[i].e!))).toEqual(vec(i));
        }
      }
      const wrong = await copyBinary(db, 'COPY pgv_copy_vec FROM STDIN (FORMAT BINARY)', [
        [
          { kind: 'int4', value: 1 },
          { kind: 'vector', value: new Float32Array(3) },
        ],
      ]).catch((e) => e);
      expect(String(wrong?.message)).toMatch(/expected 384 dimensions, not 3/);
    } finally {
      await db.end();
    }
  });
});

describe('a PostgreSQL database where pgvector cannot be used', () => {
  // Made here, whatever the server has installed: a fresh database without the extension and a
  // role that may create schemas there but is no superuser (pgvector is not a trusted extension).
  let limitedUrl: string;
  let dbName: string;
  let roleName: string;
  beforeAll(async () => {
    const tag = Math.random().toString(36).slice(2, 8);
    dbName = `nopgv_${tag}`;
    roleName = `nopgv_user_${tag}`;
    await client.query(`CREATE DATABASE ${dbName}`);
    await client.query(`CREATE ROLE ${roleName} LOGIN NOSUPERUSER PASSWORD 'nopgv-pw'`);
    await client.query(`GRANT CREATE ON DATABASE ${dbName} TO ${roleName}`);
    const u = new URL(inject('pgUrl'));
    u.username = roleName;
    u.password = 'nopgv-pw';
    u.pathname = `/${dbName}`;
    limitedUrl = u.toString();
  });
  afterAll(async () => {
    await client.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await client.query(`DROP ROLE IF EXISTS ${roleName}`);
  });

  it('is detected as PostgreSQL (COPY path), and check/open say pgvector is missing, in words', async () => {
    const { openSession } = await import('./session.ts');
    const { default: destination } = await import('./index.ts');
    const { PgvectorConfigSchema } = await import('./config.ts');
    const { testContext } = await import('./testing.ts');
    const session = await openSession({ url: limitedUrl }, { baseDir: '/' });
    expect(session.isPglite).toBe(false);
    const available = (await session.client.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'vector'`)).rowCount === 1;
    await session.close();

    const cfg = PgvectorConfigSchema.parse({ url: limitedUrl, schema: 'pgv_missing' });
    const check = await destination.check(cfg, testContext());
    expect(check.ok).toBe(false);
    // Installed on the server but not creatable by this user, or not installed at all.
    expect(check.message).toMatch(
      available
        ? new RegExp(`pgvector is installed on .* but not created in database ${dbName}, and user ${roleName} may not create it`)
        : /pgvector is not available on .*install it/,
    );
    const err = await destination
      .open(cfg, testContext('nopgv'), { streams: [{ name: 'a', destinationSyncMode: 'append', primaryKey: [['id']] }], dimensions: 4 })
      .catch((e) => e);
    expect(err.message).toMatch(/the pgvector extension is not installed and could not be created/);
    expect(err.hint).toMatch(/install pgvector/);
    expect(err.where).toMatch(/connection nopgv/);
    // nothing was created before the failure (the role could have created the schema)
    const db = new pg.Client({ connectionString: limitedUrl });
    await db.connect();
    const { rowCount } = await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgv_missing'`);
    await db.end();
    expect(rowCount).toBe(0);
  });
});

describe('TLS settings', () => {
  it('maps libpq TLS settings onto the driver and keeps them out of the URL', async () => {
    const { clientConfig } = await import('./session.ts');
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { scratchDir } = await import('../../src/testing/context.ts');
    const dir = scratchDir('pgv-tls-');
    writeFileSync(join(dir, 'ca.pem'), 'CA PEM');
    const full = clientConfig(
      { url: 'postgres://u:p@db.example.com:5433/rag?sslmode=require&application_name=x', sslmode: 'verify-full', sslrootcert: 'ca.pem' },
      dir,
    );
    expect(full.connectionString).toBe('postgres://u:p@db.example.com:5433/rag?application_name=x');
    expect(full.ssl).toMatchObject({ ca: 'CA PEM', rejectUnauthorized: true });
    const ca = clientConfig({ url: 'postgres://h/db', sslmode: 'verify-ca', sslrootcert: join(dir, 'ca.pem') }, '/');
    expect(typeof (ca.ssl as { checkServerIdentity?: unknown }).checkServerIdentity).toBe('function');
    expect(clientConfig({ url: 'postgres://h/db?sslmode=require' }, '/').ssl).toEqual({ rejectUnauthorized: false });
    expect(clientConfig({ url: 'postgres://h/db', sslmode: 'disable' }, '/').ssl).toBe(false);
    expect(() => clientConfig({ url: 'postgres://h/db', sslrootcert: 'missing.pem' }, dir)).toThrow(/cannot read sslrootcert missing\.pem/);
  });
});
