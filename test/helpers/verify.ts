// The fixture the `sluice verify` tests share (test/ops/verify-*.test.ts): one pipeline shape per
// destination, documents long enough for three chunks each, and the drift report of the standard
// damage (one kind per document: a chunk row gone from a, b deleted at the source, an orphan chunk
// on c, a duplicate of d, e's text changed, f gone from the store).
import { join } from 'node:path';
import { writeFiles } from './cli.ts';
import { runInProcess } from './cli-in-process.ts';

export interface VerifyPipelineOptions {
  dimensions?: number;
  metadataFields?: string[];
  destinationSyncMode?: 'append_dedup' | 'overwrite';
}

/** A file source `./docs` → `destination` (a YAML flow mapping), hash embedder, 40-character chunks. */
export function verifyPipeline(destination: string, opts: VerifyPipelineOptions = {}): string {
  const metadata = opts.metadataFields ? `, metadata_fields: [${opts.metadataFields.join(', ')}]` : '';
  return `version: 1
connections:
  - name: docs
    source: { type: file, config: { path: ./docs } }
    destination: ${destination}
    embedding: { provider: hash, dimensions: ${opts.dimensions ?? 32} }
    processing: { chunk_size: 40, chunk_overlap: 0, chunk_unit: characters${metadata} }
    streams: [ { name: docs, sync_mode: full_refresh, destination_sync_mode: ${opts.destinationSyncMode ?? 'append_dedup'} } ]
`;
}

/** Three paragraphs, three 40-character chunks. */
export const longDocument = (name: string) =>
  `${name} first part of a longer text.\n\n${name} second part of this longer text.\n\n${name} third part, the end.`;

/**
 * Writes `docs/<name>.md` for each name plus the given pipeline files into `dir`; returns
 * `run(file, command, ...args)`, the CLI in this process on `<dir>/<file>`.
 */
export function verifyProject(dir: string, pipelines: Record<string, string>, names: string[]) {
  const files: Record<string, string> = { ...pipelines };
  for (const n of names) files[`docs/${n}.md`] = longDocument(n.toUpperCase());
  writeFiles(dir, files);
  return (file: string, command: string, ...args: string[]) => runInProcess([command, join(dir, file), ...args]);
}

/** Every drift kind at 0, with `counts` on top: what `--json` reports under `streams.<s>.counts`. */
export const driftCounts = (counts: Record<string, number>) => ({
  missing_documents: 0,
  deleted_documents: 0,
  stale_chunks: 0,
  stale_fingerprints: 0,
  missing_chunks: 0,
  duplicate_chunks: 0,
  orphaned_chunks: 0,
  wrong_dimensions: 0,
  wrong_model: 0,
  ...counts,
});

/** The drift counts of the standard damage of documents a–f (see the file comment). */
export const STANDARD_DAMAGE_COUNTS = {
  missing_documents: 1,
  deleted_documents: 1,
  stale_chunks: 1,
  missing_chunks: 1,
  duplicate_chunks: 1,
  orphaned_chunks: 1,
};

/** The report's examples for the standard damage of documents a–f (see the file comment). */
export const STANDARD_DAMAGE_EXAMPLES = {
  missing_documents: ['f.md'],
  deleted_documents: ['b.md'],
  stale_chunks: ['e.md'],
  missing_chunks: ['a.md'],
  duplicate_chunks: ['d.md'],
  orphaned_chunks: ['c.md'],
};
