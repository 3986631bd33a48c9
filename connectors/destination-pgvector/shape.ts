// What is wrong with an existing chunk table that someone altered by hand (a view in its place, a
// column retyped, the primary key dropped), found before the first write. Writing anyway would fail
// mid-run at best; at worst COPY BINARY puts a vector's bytes into a text column or a json column.
import type pg from 'pg';
import { SluiceError } from '../../src/protocol/errors.ts';
import { qualified } from './sql.ts';

/** Column → the types sluice can write into it (pg_type.typname), first the one it creates. */
const COLUMN_TYPES: Record<string, string[]> = {
  id: ['text', 'varchar'],
  document_id: ['text', 'varchar'],
  chunk_index: ['int4'],
  content: ['text', 'varchar'],
  metadata: ['jsonb'],
  embedding: ['vector'],
};

const RELKINDS: Record<string, string> = {
  v: 'a view',
  m: 'a materialized view',
  f: 'a foreign table',
  S: 'a sequence',
  c: 'a composite type',
};

/** Why `schema.table` is not a table sluice can write or replace (a view, …), or undefined. */
export async function notATable(client: pg.Client, schema: string, table: string): Promise<string | undefined> {
  const { rows } = await client.query<{ relkind: string }>(`SELECT relkind FROM pg_class WHERE oid = to_regclass($1)`, [
    qualified(schema, table),
  ]);
  return notATableOfKind(rows[0]?.relkind);
}

export function notATableOfKind(relkind: string | undefined): string | undefined {
  if (!relkind || relkind === 'r' || relkind === 'p') return undefined;
  return `it is ${RELKINDS[relkind] ?? `a relation of kind ${relkind}`}, not a table`;
}

/** What tableShapeProblems reads of a table (./table-facts.ts reads it with the rest at once). */
export interface ShapeFacts {
  relkind: string | undefined;
  columns: { attname: string; typname: string; shown: string }[];
  /** A unique index on id alone. */
  uniqueId: boolean;
}

/**
 * Each way `schema.table` (which exists) differs from a sluice chunk table, in words; [] when it can
 * be written. Missing columns are reported by the caller.
 */
export async function tableShapeProblems(client: pg.Client, schema: string, table: string): Promise<string[]> {
  const name = qualified(schema, table);
  const notTable = await notATable(client, schema, table);
  if (notTable) return [notTable];

  const { rows: columns } = await client.query<{ attname: string; typname: string; shown: string }>(
    `SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod) AS shown
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`,
    [name],
  );
  // Upserts are INSERT … ON CONFLICT (id): they need a unique index on id alone.
  const { rowCount } = await client.query(
    `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'id'`,
    [name],
  );
  return shapeProblemsOf({ relkind: 'r', columns, uniqueId: !!rowCount });
}

/** tableShapeProblems from facts already read. */
export function shapeProblemsOf(facts: ShapeFacts): string[] {
  const notTable = notATableOfKind(facts.relkind);
  if (notTable) return [notTable];
  const problems: string[] = [];
  for (const c of facts.columns) {
    const wanted = COLUMN_TYPES[c.attname];
    if (wanted && !wanted.includes(c.typname)) problems.push(`column ${c.attname} is ${c.shown}, expected ${wanted[0]}`);
  }
  if (!facts.uniqueId) problems.push('column id is not its primary key (no unique index on id)');
  return problems;
}

export function alteredTable(schema: string, table: string, problems: string[], where: string): SluiceError {
  return new SluiceError(`table ${schema}.${table} was altered and sluice cannot write it: ${problems.join('; ')}`, {
    kind: 'destination',
    where,
    hint: `restore it (sluice tables: id text primary key, document_id text, chunk_index int, content text, metadata jsonb, embedding vector(N)), or drop it (DROP TABLE/VIEW ${schema}.${table}) and sync again to rebuild it, or point destination.table at another table`,
  });
}
