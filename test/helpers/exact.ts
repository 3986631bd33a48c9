// "Exact" for the fault-matrix tests: a JSONL destination read back one entry per document, its
// chunks in order; a document twice or a gap in its chunk indexes fails the test.
import { existsSync, readFileSync } from 'node:fs';
import { expect } from 'vitest';

interface Line {
  document_id: string;
  chunk_index: number;
  content: string;
  metadata: Record<string, unknown>;
}

/** The destination, one entry per document (its chunks in order); fails on a duplicate or a gap. */
export function documents(file: string): Map<string, Array<Pick<Line, 'content' | 'metadata'>>> {
  const byDoc = new Map<string, Line[]>();
  if (existsSync(file))
    for (const l of readFileSync(file, 'utf8').split('\n')) {
      if (!l) continue;
      const c = JSON.parse(l) as Line;
      byDoc.set(c.document_id, [...(byDoc.get(c.document_id) ?? []), c]);
    }
  const out = new Map<string, Array<Pick<Line, 'content' | 'metadata'>>>();
  for (const [id, chunks] of [...byDoc].sort(([a], [b]) => a.localeCompare(b))) {
    expect(
      chunks.map((c) => c.chunk_index).sort((a, b) => a - b),
      `chunk indexes of ${id}`,
    ).toEqual(chunks.map((_, i) => i));
    out.set(
      id,
      chunks.sort((a, b) => a.chunk_index - b.chunk_index).map((c) => ({ content: c.content, metadata: c.metadata })),
    );
  }
  return out;
}
