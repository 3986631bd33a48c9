// The `errors:` block of a connection: error tolerance, budget and dead-letter store (src/engine/dead-letters.ts).
import { z } from 'zod';

export const ErrorsConfigSchema = z.strictObject({
  tolerance: z
    .enum(['none', 'all'])
    .default('none')
    .describe('none: the first bad record fails the run; all: bad records become dead letters'),
  max_error_rate: z
    .number()
    .min(0)
    .max(1)
    .default(0.01)
    .describe('Share of the records read that may fail before the run fails (checked from 100 records on, and at the end)'),
  dead_letter: z
    .discriminatedUnion('type', [
      z.strictObject({
        type: z.literal('file'),
        path: z.string().min(1).optional().describe('Directory of the JSON-lines files (default <state dir>/dead-letters)'),
      }),
      z.strictObject({
        type: z.literal('postgres'),
        url: z.string().min(1).describe('PostgreSQL URL'),
        schema: z.string().min(1).default('public'),
        table: z.string().min(1).default('sluice_dead_letters'),
      }),
      z.strictObject({
        type: z.literal('kafka'),
        brokers: z
          .union([z.array(z.string().min(1)).min(1), z.string().min(1)])
          .describe('Bootstrap brokers, host:port (a list, or one comma-separated string)'),
        topic: z.string().min(1).describe('Topic the letters are appended to (docs/reliability.md: what list/retry/purge do on Kafka)'),
        group_prefix: z
          .string()
          .min(1)
          .default('sluice-dead-letters')
          .describe(
            'Consumer group <group_prefix>.<connection>: its committed offsets mark where the open letters of the connection start (nothing joins it)',
          ),
        client_id: z.string().min(1).default('sluice-dead-letters'),
        ssl: z.boolean().default(false).describe('Connect with TLS (system CAs)'),
        sasl: z
          .strictObject({
            mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
            username: z.string().min(1),
            password: z.string().min(1).describe('Secret: use ${ENV_VAR}'),
          })
          .optional(),
      }),
    ])
    .default({ type: 'file' }),
});
export type ErrorsConfig = z.infer<typeof ErrorsConfigSchema>;
