// The KEEP messages of an overwrite that has written nothing yet. While every document of the new
// generation is a KEEP, no table is created: the ids are only remembered (spilled to a private
// file past a bound, so memory stays flat) together with a count and an order-independent sum of
// their hashes. At the end of the stream the sum and count are compared with the live table's
// document ids: equal means every live document was kept, so there is nothing to write or switch.
// When anything else arrives, the ids are replayed to copy the kept documents into the new table.
import { createReadStream, appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { hash } from 'node:crypto';

const SPILL_IDS = 10_000;

/** 60 bits of sha256(id): summed over a set of ids, equal sums mean equal sets (multisets). */
export function idHash(id: string): bigint {
  return BigInt('0x' + hash('sha256', id, 'hex').slice(0, 15));
}

/** The same hash in SQL, over a text column (UTF-8 bytes whatever the server encoding). */
export const idHashSql = (column: string) => `('x' || left(encode(sha256(convert_to(${column}, 'UTF8')), 'hex'), 15))::bit(60)::bigint`;

export class KeepLog {
  count = 0;
  sum = 0n;
  private recent: string[] = [];
  private dir: string | undefined;

  constructor(private readonly parentDir: string) {}

  add(documentId: string): void {
    this.count++;
    this.sum += idHash(documentId);
    this.recent.push(documentId);
    if (this.recent.length >= SPILL_IDS) this.spill();
  }

  private get file(): string | undefined {
    return this.dir && join(this.dir, 'kept-ids.jsonl');
  }

  private spill(): void {
    this.dir ??= mkdtempSync(join(this.parentDir, 'pgvector-keep-'));
    appendFileSync(this.file!, this.recent.map((id) => JSON.stringify(id)).join('\n') + '\n');
    this.recent = [];
  }

  /** Every kept id, in order, in arrays of at most `size` (may repeat ids the source repeated). */
  async *batches(size: number): AsyncGenerator<string[]> {
    let out: string[] = [];
    if (this.file) {
      const lines = createInterface({ input: createReadStream(this.file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        if (!line) continue;
        out.push(JSON.parse(line) as string);
        if (out.length >= size) {
          yield out;
          out = [];
        }
      }
    }
    for (const id of this.recent) {
      out.push(id);
      if (out.length >= size) {
        yield out;
        out = [];
      }
    }
    if (out.length) yield out;
  }

  dispose(): void {
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
    this.recent = [];
  }
}
