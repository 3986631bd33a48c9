import { existsSync, readFileSync } from 'node:fs';
import type { JsonlChunkLine } from '../../connectors/destination-jsonl/index.ts';

export function readJsonl(file: string): JsonlChunkLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as JsonlChunkLine);
}

/** Destination content as a sorted, comparable list (id, content hash). */
export function contentOf(file: string): string[] {
  return readJsonl(file)
    .map((l) => `${l.stream}|${l.id}|${l.content_hash}`)
    .sort();
}
