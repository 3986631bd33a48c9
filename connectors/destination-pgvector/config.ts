// The `destination:` block for `type: pgvector`.
import { z } from 'zod';
import { connectionUrlProblem } from '../../src/cdk/url.ts';

const HnswSchema = z.strictObject({
  m: z.number().int().min(2).max(100).default(16).describe('Max connections per layer (pgvector default 16).'),
  ef_construction: z.number().int().min(4).max(1000).default(64).describe('Candidate list size while building (pgvector default 64).'),
});

const IvfflatSchema = z.strictObject({
  lists: z
    .number()
    .int()
    .min(1)
    .max(32768)
    .optional()
    .describe('Number of lists; default rows/1000 (at least 1), sqrt(rows) above 1M rows.'),
});

export const PgvectorConfigSchema = z
  .strictObject({
    url: z
      .string()
      .min(1)
      .superRefine((url, ctx) => {
        const problem = connectionUrlProblem(url);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional()
      .meta({ secret: true })
      .describe('PostgreSQL connection URL (postgres://user:password@host:5432/db). The server needs the pgvector extension.'),
    embedded: z
      .string()
      .min(1)
      .optional()
      .describe(
        'Directory of an embedded PGlite database with pgvector, started by sluice itself (relative to the pipeline file). Use instead of url.',
      ),
    sslmode: z
      .enum(['disable', 'prefer', 'require', 'verify-ca', 'verify-full'])
      .optional()
      .describe('TLS mode, as in libpq. Overrides sslmode in the url.'),
    sslrootcert: z.string().min(1).optional().describe('CA certificate file (PEM) to verify the server with (verify-ca / verify-full).'),
    sslcert: z.string().min(1).optional().describe('Client certificate file (PEM).'),
    sslkey: z.string().min(1).optional().describe('Client private key file (PEM).'),
    schema: z.string().min(1).max(63).default('public').describe('Schema holding the tables (created when missing).'),
    table: z
      .union([z.string().min(1), z.record(z.string(), z.string().min(1))])
      .optional()
      .describe(
        'Table per stream: a name, a template with {stream}, or a map stream → table. Default: the stream name in lower case with other characters than a-z, 0-9 and _ replaced by _.',
      ),
    distance: z.enum(['cosine', 'l2', 'inner_product']).default('cosine').describe('Distance the vector index and search use.'),
    index: z.enum(['hnsw', 'ivfflat', 'none']).default('hnsw').describe('Vector index, built after the first bulk load.'),
    hnsw: HnswSchema.optional(),
    ivfflat: IvfflatSchema.optional(),
    ef_search: z
      .number()
      .int()
      .min(1)
      .max(1000)
      .optional()
      .describe('HNSW search breadth (hnsw.ef_search) for sluice search; raised to top-k when smaller (pgvector default 40).'),
    probes: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe('IVFFlat lists probed per search (ivfflat.probes); default sqrt(lists) when lists is set, else 10.'),
    maintenance_work_mem: z
      .string()
      .regex(/^\d+\s*(kB|MB|GB)$/)
      .optional()
      .describe('maintenance_work_mem for index builds, e.g. "1GB" (HNSW builds are much faster when the graph fits).'),
    batch_rows: z
      .number()
      .int()
      .positive()
      .max(1_000_000)
      .default(2000)
      .describe('Commit after this many buffered chunks (and at every checkpoint).'),
    batch_bytes: z
      .number()
      .int()
      .positive()
      .default(8 * 1024 * 1024)
      .describe('Commit after this many buffered bytes.'),
    insert_rows: z.number().int().positive().max(50_000).default(500).describe('Rows per INSERT statement on the insert path (PGlite).'),
    write_method: z
      .enum(['auto', 'copy', 'insert'])
      .default('auto')
      .describe('auto: COPY BINARY into a staging table then merge on PostgreSQL, batched INSERTs on PGlite.'),
  })
  .refine((c) => !!c.url !== !!c.embedded, { message: 'set exactly one of url or embedded' });

export type PgvectorConfig = z.infer<typeof PgvectorConfigSchema>;
