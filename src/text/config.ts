// The `processing:` block of a connection: which fields become text, which become metadata, and
// how text is cut into chunks.
import { z } from 'zod';

export const MetadataFieldSchema = z.union([z.string().min(1), z.strictObject({ field: z.string().min(1), as: z.string().min(1) })]);

export const ProcessingConfigSchema = z
  .strictObject({
    /** Dot paths into the record; `*` walks into arrays (e.g. `comments.*.body`). */
    text_fields: z.array(z.string().min(1)).min(1).optional(),
    /** A template over record fields, e.g. "{{title}}\n\n{{body}}". */
    text_template: z.string().min(1).optional(),
    metadata_fields: z.array(MetadataFieldSchema).optional(),
    chunk_size: z.number().int().positive().default(512),
    chunk_overlap: z.number().int().min(0).default(64),
    chunk_unit: z.enum(['tokens', 'characters']).default('tokens'),
    splitter: z.enum(['recursive', 'markdown', 'none']).default('recursive'),
    /**
     * A run fails (before it replaces or deletes anything) when more than this share of a stream's
     * records yields no text — usually a misspelt field. 1 turns the check off.
     */
    max_empty_share: z.number().min(0).max(1).default(0.5),
    /**
     * Full refresh + append_dedup: the end-of-read sweep (deleting documents the source no longer has)
     * fails the run, before deleting anything, when it would delete more than this share of the
     * stream's stored documents — usually a source pointed at the wrong table. 1 turns the check off.
     */
    max_delete_share: z.number().min(0).max(1).default(0.5),
  })
  .refine((p) => !(p.text_fields && p.text_template), { message: 'use either text_fields or text_template, not both' })
  .refine((p) => p.chunk_overlap < p.chunk_size, { message: 'chunk_overlap must be smaller than chunk_size', path: ['chunk_overlap'] });
export type ProcessingConfig = z.infer<typeof ProcessingConfigSchema>;
