// The public shape of a pipeline file. Later features extend it; they never rename.
import { z } from 'zod';
import { EmbeddingConfigSchema } from '../embedding/config.ts';
import { ErrorsConfigSchema } from './errors.ts';
import { DestinationSyncModeSchema, PipelineSyncModeSchema } from '../protocol/messages.ts';
import { ProcessingConfigSchema } from '../text/config.ts';

/** `updated_at`, `[updated_at]` or `[[user, id]]` style field paths, normalised to string[]. */
const FieldPath = z.union([
  z
    .string()
    .min(1)
    .transform((s) => s.split('.')),
  z.array(z.string().min(1)),
]);
const PrimaryKey = z
  .union([z.string().min(1), z.array(z.union([z.string().min(1), z.array(z.string().min(1)).min(1)])).min(1)])
  .transform((pk): string[][] => (typeof pk === 'string' ? [[pk]] : pk.map((p) => (typeof p === 'string' ? [p] : p))));

export const StreamConfigSchema = z.strictObject({
  name: z.string().min(1),
  sync_mode: PipelineSyncModeSchema.optional(),
  destination_sync_mode: DestinationSyncModeSchema.optional(),
  cursor_field: FieldPath.optional(),
  primary_key: PrimaryKey.optional(),
});
export type StreamConfig = z.infer<typeof StreamConfigSchema>;

const ConnectorRef = z.strictObject({
  /** A built-in connector name, a path (./my-source.ts) or an npm package. */
  type: z.string().min(1),
  config: z.record(z.string(), z.unknown()).default({}),
});

export const ConnectionSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "-" and "." only'),
  source: ConnectorRef,
  destination: ConnectorRef,
  embedding: EmbeddingConfigSchema.optional(),
  processing: ProcessingConfigSchema.optional(),
  streams: z.array(StreamConfigSchema).min(1).optional(),
  /** What a changed source schema does (docs/reliability.md); unset: added columns propagate, a used column dropped or retyped stops. */
  schema_changes: z.enum(['propagate', 'ignore', 'fail']).optional(),
  /** Dead letters and error budget (docs/reliability.md). */
  errors: ErrorsConfigSchema.optional(),
});
export type ConnectionConfig = z.infer<typeof ConnectionSchema>;

export const PipelineSchema = z.strictObject({
  version: z.literal(1),
  state: z
    .discriminatedUnion('type', [
      z.strictObject({ type: z.literal('file'), path: z.string().min(1) }),
      // State in PostgreSQL (pods without a lasting disk). `path` is still where local work files go.
      z.strictObject({
        type: z.literal('postgres'),
        url: z.string().min(1),
        schema: z.string().min(1).max(63).default('sluice'),
        path: z.string().min(1).default('.sluice/state'),
      }),
    ])
    .default({ type: 'file', path: '.sluice/state' }),
  /** Where embeddings are cached: `postgres` (default with postgres state) or `local` (LMDB file). */
  cache: z.strictObject({ type: z.enum(['local', 'postgres']) }).optional(),
  connections: z.array(ConnectionSchema).min(1),
});
export type PipelineConfig = z.infer<typeof PipelineSchema>;
