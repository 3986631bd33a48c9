// Config of the S3 source, and how it resolves into the streams it reads.
import { z } from 'zod';
import picomatch from 'picomatch';
import { configError } from '../../src/protocol/errors.ts';

export const FORMATS = ['auto', 'jsonl', 'csv', 'json', 'parquet', 'text', 'markdown'] as const;
export type Format = (typeof FORMATS)[number];
export type ConcreteFormat = Exclude<Format, 'auto'>;

const PrimaryKeySchema = z
  .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
  .describe(
    'Field (dot path for nested fields) or list of fields identifying a row. Default: the object key (text, markdown) or object key + row number (structured formats).',
  );

const CsvSchema = z
  .strictObject({
    delimiter: z.string().min(1).optional().describe('Field separator (default: tab for .tsv, comma otherwise).'),
    quote: z.string().length(1).default('"'),
    columns: z.array(z.string().min(1)).optional().describe('Column names when the files have no header row.'),
  })
  .describe('CSV options.');

const StreamSchema = z.strictObject({
  name: z.string().min(1).describe('Stream name (what destinations see).'),
  prefix: z.string().optional().describe('Only keys starting with this prefix are listed.'),
  globs: z.array(z.string().min(1)).min(1).optional().describe('Only keys matching one of these globs (e.g. "docs/**/*.md").'),
  format: z.enum(FORMATS).optional().describe('Overrides the connection-level format for this stream.'),
  primary_key: PrimaryKeySchema.optional(),
});

export const S3ConfigSchema = z.strictObject({
  bucket: z.string().min(1).describe('Bucket name.'),
  prefix: z.string().optional().describe('Only keys starting with this prefix are listed, e.g. "exports/2024/".'),
  globs: z.array(z.string().min(1)).min(1).optional().describe('Only keys matching one of these globs, e.g. ["**/*.jsonl"].'),
  region: z.string().min(1).default('us-east-1').describe('Bucket region.'),
  endpoint: z.url().optional().describe('S3-compatible endpoint (MinIO, Cloudflare R2, Ceph…), e.g. http://localhost:9000.'),
  force_path_style: z
    .boolean()
    .default(false)
    .describe('Address buckets as <endpoint>/<bucket> instead of <bucket>.<endpoint> (MinIO, Ceph).'),
  access_key_id: z
    .string()
    .min(1)
    .optional()
    .describe('Access key id; omit to use the default AWS credential chain (env, profile, SSO, instance role).'),
  secret_access_key: z.string().min(1).optional().meta({ secret: true }).describe('Secret access key (with access_key_id).'),
  session_token: z.string().min(1).optional().meta({ secret: true }).describe('Session token for temporary credentials.'),
  format: z
    .enum(FORMATS)
    .default('auto')
    .describe(
      'How objects are parsed; auto picks by extension (.jsonl/.ndjson, .csv/.tsv, .json, .parquet, .md/.markdown, anything else text).',
    ),
  primary_key: PrimaryKeySchema.optional(),
  csv: CsvSchema.optional(),
  stream: z.string().min(1).optional().describe('Name of the single stream (default: last segment of the prefix, or the bucket name).'),
  streams: z.array(StreamSchema).min(1).optional().describe('Several streams from one bucket, each with its own prefix/globs/format.'),
  page_size: z.number().int().min(1).max(1000).default(1000).describe('Keys per ListObjectsV2 page.'),
  max_pending_objects: z
    .number()
    .int()
    .min(1)
    .default(100_000)
    .describe('Most changed objects held in memory per listing pass; a bigger backlog is read in several passes.'),
  poll_interval_seconds: z
    .number()
    .min(0.05)
    .default(60)
    .describe('With `sluice sync --follow`: how often incremental streams list the bucket again for new, changed and deleted objects.'),
  max_document_bytes: z
    .number()
    .int()
    .min(1)
    .default(32 * 1024 * 1024)
    .describe('text/markdown objects bigger than this are skipped with a warning (a document is held whole in memory).'),
  max_json_object_bytes: z
    .number()
    .int()
    .min(1)
    .default(64 * 1024 * 1024)
    .describe('Largest single JSON value (a top-level object, or one element of a top-level array).'),
});
export type S3Config = z.infer<typeof S3ConfigSchema>;

export interface ResolvedStream {
  name: string;
  prefix: string;
  matches: (key: string) => boolean;
  format: Format;
  /** Field paths from config, if the user set a primary key. */
  primaryKey?: string[][];
}

export function resolveStreams(config: S3Config): ResolvedStream[] {
  if (config.streams) {
    if (config.stream) throw configError('set either `stream` or `streams`, not both', 'stream');
    const seen = new Set<string>();
    return config.streams.map((s, i) => {
      if (seen.has(s.name)) throw configError(`stream name "${s.name}" is used twice`, `streams[${i}].name`);
      seen.add(s.name);
      return build(
        s.name,
        s.prefix ?? config.prefix,
        s.globs ?? config.globs,
        s.format ?? config.format,
        s.primary_key ?? config.primary_key,
      );
    });
  }
  return [build(config.stream ?? defaultStreamName(config), config.prefix, config.globs, config.format, config.primary_key)];
}

function build(
  name: string,
  prefix: string | undefined,
  globs: string[] | undefined,
  format: Format,
  pk: string | string[] | undefined,
): ResolvedStream {
  const listPrefix = prefix ?? (globs ? commonLiteralPrefix(globs) : '');
  const matchers = globs?.map((g) => picomatch(g, { dot: true }));
  return {
    name,
    prefix: listPrefix,
    matches: (key) => key.startsWith(prefix ?? '') && (!matchers || matchers.some((m) => m(key))),
    format,
    primaryKey: pk === undefined ? undefined : (Array.isArray(pk) ? pk : [pk]).map((f) => f.split('.')),
  };
}

function defaultStreamName(config: S3Config): string {
  const segment = (config.prefix ?? '').split('/').filter(Boolean).pop();
  return segment ?? config.bucket;
}

/** The literal directory part every glob shares, so listing can skip the rest of the bucket. */
function commonLiteralPrefix(globs: string[]): string {
  const bases = globs.map((g) => {
    const { base, isGlob } = picomatch.scan(g);
    return isGlob ? (base ? `${base}/` : '') : g;
  });
  let common = bases[0];
  for (const b of bases.slice(1)) {
    let i = 0;
    while (i < common.length && i < b.length && common[i] === b[i]) i++;
    common = common.slice(0, i);
  }
  return common;
}

const TEXT_EXTENSIONS = /\.(txt|text|rst|adoc|asciidoc|org|html?|xml|ya?ml|log|tex)$/;

/**
 * Format of one object: the configured one, or by extension when `auto`. Undefined means `auto`
 * does not know it (PDFs, images, archives…): such objects are skipped rather than read as
 * garbage text; set `format: text` to force them.
 */
export function formatOf(key: string, format: Format): ConcreteFormat | undefined {
  if (format !== 'auto') return format;
  const lower = key.toLowerCase().replace(/\.(gz|gzip)$/, '');
  if (/\.(jsonl|ndjson)$/.test(lower)) return 'jsonl';
  if (/\.(csv|tsv)$/.test(lower)) return 'csv';
  if (lower.endsWith('.json')) return 'json';
  if (lower.endsWith('.parquet')) return 'parquet';
  if (/\.(md|markdown|mdx)$/.test(lower)) return 'markdown';
  const name = lower.slice(lower.lastIndexOf('/') + 1);
  if (TEXT_EXTENSIONS.test(lower) || !name.includes('.')) return 'text';
  return undefined;
}

export type Family = 'text' | 'structured';
export const familyOf = (f: ConcreteFormat): Family => (f === 'text' || f === 'markdown' ? 'text' : 'structured');

/** Default primary keys: a text document is its object; a row is (object key, row number). */
export const TEXT_KEY = [['key']];
export const ROW_KEY = [['_s3_key'], ['_s3_row']];
