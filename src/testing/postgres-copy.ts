// A CopyOutSink fed the bytes a server would send, without a server: how a connector's COPY row
// parser is tested with the data cut at every byte or sent one byte at a time (the built-in
// PostgreSQL source and pgvector's listing are tested this way).
import { PassThrough } from 'node:stream';
import { CopyOutReader, type CopyOutSink } from '../cdk/postgres-copy.ts';

/** One backend protocol message: its type byte, its length (counting itself) and its body (a string is UTF-8). */
export function pgMessage(code: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const head = Buffer.alloc(5);
  head[0] = code.charCodeAt(0);
  head.writeUInt32BE(payload.length + 4, 1);
  return Buffer.concat([head, payload]);
}

/** The CopyOutResponse that starts a COPY of `columns` columns, in text (the default) or binary format. */
export function copyOutResponse(columns: number, format: 'text' | 'binary' = 'text'): Buffer {
  const code = format === 'binary' ? 1 : 0;
  const body = Buffer.alloc(3 + 2 * columns);
  body[0] = code;
  body.writeUInt16BE(columns, 1);
  for (let i = 0; i < columns; i++) body.writeUInt16BE(code, 3 + 2 * i);
  return pgMessage('H', body);
}

/** What pg receives after a COPY of `rows` rows completes: CommandComplete and ReadyForQuery. */
export const copyCompleted = (rows: number): Buffer => Buffer.concat([pgMessage('C', `COPY ${rows}\0`), pgMessage('Z', 'I')]);

/** A CopyOutReader submitted on a fake connection; `write` feeds it server bytes. */
export interface FakeCopyOut<T> {
  reader: CopyOutReader<T>;
  write(chunk: Buffer): void;
  /** The bytes the reader handed back to pg (what follows the COPY), so far. */
  handedBack(): Buffer;
  /** The statements sent to the server. */
  sent: string[];
}

export function fakeCopyOut<T>(sink: CopyOutSink<T>, sql = 'COPY x TO STDOUT'): FakeCopyOut<T> {
  const stream = new PassThrough();
  const back: Buffer[] = [];
  stream.on('data', (b: Buffer) => back.push(b));
  const sent: string[] = [];
  const reader = new CopyOutReader(sql, sink);
  const refused = reader.submit({ stream, query: (text) => sent.push(text) });
  if (refused) throw refused;
  return { reader, write: (chunk) => stream.write(chunk), handedBack: () => Buffer.concat(back), sent };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/**
 * Feeds `chunks` one at a time, each handled before the next arrives (as network chunks are), and
 * collects every batch the sink gives out. Rejects with the read's error (a server error in the
 * data, or the sink's own).
 */
export async function readCopyOut<T>(
  sink: CopyOutSink<T>,
  chunks: Buffer[],
  sql?: string,
): Promise<{ batches: T[]; handedBack: Buffer; sent: string[] }> {
  const fake = fakeCopyOut(sink, sql);
  const batches: T[] = [];
  const reading = (async () => {
    for (let b = await fake.reader.next(); b !== null; b = await fake.reader.next()) batches.push(b);
  })();
  reading.catch(() => undefined); // awaited below, after the writes
  for (const chunk of chunks) {
    fake.write(chunk);
    await tick();
  }
  await reading;
  await tick();
  return { batches, handedBack: fake.handedBack(), sent: fake.sent };
}
