// What prepare() needs to know about an existing chunk table — its columns and vector size, what
// kind of relation it is, whether id is unique, sluice's note, its vector index — sent as one
// multi-statement query: the same catalog queries inspectTable, notATable, tableShapeProblems,
// readTableNote and vectorIndexOf run, in one round trip instead of six (round trips are most of
// the fixed cost of opening the writer). One statement that joins them all cost the server more.
import type pg from 'pg';
import {
  FINGERPRINT_COLUMNS,
  documentIndexName,
  parseTableNote,
  vectorIndexFrom,
  type TableInfo,
  type TableNote,
  type VectorIndexInfo,
} from './schema.ts';
import type { ShapeFacts } from './shape.ts';
import { literal, qualified } from './sql.ts';

export interface TableFacts extends ShapeFacts {
  info: TableInfo;
  /** sluice's note in the table comment (see readTableNote). */
  note: TableNote | undefined | 'foreign';
  /** The index on the embedding column (see vectorIndexOf). */
  vectorIndex: VectorIndexInfo | undefined;
  /**
   * sluice's document index (documentIndexName): 'plain' when it is one made before it carried
   * every fingerprint column (key document_id, nothing included, or not every column of
   * FINGERPRINT_COLUMNS, e.g. no fingerprint_source: coverDocumentIndex replaces it), 'covering'
   * when it includes all of them (or other columns someone chose); undefined when there is no index
   * of that name.
   */
  documentIndex: 'plain' | 'covering' | undefined;
}

export async function tableFacts(client: pg.Client, schema: string, table: string): Promise<TableFacts> {
  // A simple query (no parameters) may hold several statements; the name goes in as a literal.
  const rel = `to_regclass(${literal(qualified(schema, table))})`;
  const results = (await client.query(
    `SELECT a.attname, a.atttypid::int AS atttypid, a.atttypmod, t.typname, format_type(a.atttypid, a.atttypmod) AS shown
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = ${rel} AND a.attnum > 0 AND NOT a.attisdropped;
     SELECT relkind FROM pg_class WHERE oid = ${rel};
     SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = ${rel} AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'id';
     SELECT obj_description(${rel}, 'pg_class') AS c;
     SELECT c.relname AS name, am.amname AS method, opc.opcname AS opclass, c.reloptions AS options
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
       JOIN pg_opclass opc ON opc.oid = i.indclass[0]
      WHERE i.indrelid = ${rel} AND a.attname = 'embedding';
     SELECT i.indnatts AS natts, i.indnkeyatts AS nkeys, a.attname AS key,
            ARRAY(SELECT x.attname::text FROM pg_attribute x WHERE x.attrelid = i.indrelid AND x.attnum = ANY (i.indkey::int2[])) AS columns
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      WHERE i.indrelid = ${rel} AND c.relname = ${literal(documentIndexName(table))} AND i.indpred IS NULL`,
  )) as unknown as pg.QueryResult[];
  const [columnRows, kindRows, uniqueRows, noteRows, indexRows, documentIndexRows] = results.map((r) => r.rows);
  const columns = columnRows as { attname: string; atttypid: number; atttypmod: number; typname: string; shown: string }[];
  const relkind = (kindRows[0] as { relkind: string } | undefined)?.relkind;
  if (!columns.length)
    return {
      info: { exists: false, columns: [] },
      relkind,
      columns: [],
      uniqueId: false,
      note: undefined,
      vectorIndex: undefined,
      documentIndex: undefined,
    };
  const emb = columns.find((c) => c.attname === 'embedding');
  const index = indexRows[0] as { name: string; method: string; opclass: string; options: string[] | null } | undefined;
  const documentIndex = documentIndexRows[0] as { natts: number; nkeys: number; key: string; columns: string[] } | undefined;
  return {
    info: {
      exists: true,
      dimensions: emb && emb.atttypmod > 0 ? emb.atttypmod : undefined,
      vectorOid: emb?.atttypid,
      columns: columns.map((c) => c.attname),
    },
    relkind,
    columns,
    uniqueId: uniqueRows.length > 0,
    note: parseTableNote((noteRows[0] as { c: string | null } | undefined)?.c),
    vectorIndex: index ? vectorIndexFrom(index) : undefined,
    documentIndex: !documentIndex ? undefined : documentIndexKind(documentIndex),
  };
}

/**
 * 'plain': sluice's index from before it carried every fingerprint column (key document_id,
 * including nothing or only some of FINGERPRINT_COLUMNS: the listing then reads the table, not
 * only the index). Any other index of that name is someone's choice, left alone.
 */
function documentIndexKind(index: { natts: number; nkeys: number; key: string; columns: string[] }): 'plain' | 'covering' | undefined {
  const included = index.columns.filter((c) => c !== 'document_id');
  if (
    index.nkeys === 1 &&
    index.key === 'document_id' &&
    included.every((c) => FINGERPRINT_COLUMNS.includes(c)) &&
    !FINGERPRINT_COLUMNS.every((c) => included.includes(c))
  )
    return 'plain';
  return index.natts > index.nkeys ? 'covering' : undefined;
}
