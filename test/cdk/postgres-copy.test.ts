// The kit's COPY-OUT reader (src/cdk/postgres-copy.ts): protocol framing on a fake connection (data
// cut at every byte, one byte at a time, messages that are no rows, a sink that stops for a batch
// inside a chunk, server errors and sink errors, what pg gets back), and against the test server
// (a slow caller leaves the server waiting, an early stop leaves no COPY once the connection closes,
// the connection is usable after a COPY). docs/custom-connectors.md shows the `Lines` sink below.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { copyOut, CopyOutReader, type CopyOutSink } from 'sluice/cdk';
import { copyCompleted, copyOutResponse, fakeCopyOut, pgMessage, readCopyOut } from 'sluice/testing';
import { REPO } from '../helpers/cli.ts';

// docs:start
/** COPY's text rows as strings (without their newline): those of a network chunk, at most 1000. */
class Lines implements CopyOutSink<string[]> {
  private lines: string[] = [];

  data(buf: Buffer, start: number, end: number): boolean {
    this.lines.push(buf.toString('utf8', start, end - 1));
    return this.lines.length >= 1000; // a batch is ready: stop reading until it is taken
  }

  end(): void {}

  take(): string[] | undefined {
    if (!this.lines.length) return undefined;
    const lines = this.lines;
    this.lines = [];
    return lines;
  }
}

async function countTitles(client: pg.Client): Promise<number> {
  let count = 0;
  for await (const lines of copyOut(client, 'COPY (SELECT title FROM posts) TO STDOUT', new Lines())) count += lines.length;
  return count;
}
// docs:end

/** Every payload as a string, `perBatch` to a batch; `trailer`: end() fails unless the last payload was it. */
class Payloads implements CopyOutSink<string[]> {
  private batch: string[] = [];
  private last: string | undefined;
  constructor(
    private readonly perBatch = Infinity,
    private readonly trailer?: string,
  ) {}
  data(buf: Buffer, start: number, end: number): boolean {
    this.last = buf.toString('utf8', start, end);
    if (this.last === 'bad') throw new Error('a bad row');
    if (this.last !== this.trailer) this.batch.push(this.last);
    return this.batch.length >= this.perBatch;
  }
  end(): void {
    if (this.trailer !== undefined && this.last !== this.trailer) throw new Error('COPY data ended without its trailer');
  }
  take(): string[] | undefined {
    if (!this.batch.length) return undefined;
    const batch = this.batch;
    this.batch = [];
    return batch;
  }
}

const COPY_OUT_RESPONSE = copyOutResponse(1);
const AFTER = copyCompleted(3);
const NOTICE = pgMessage('N', 'SNOTICE\0Mhello\0\0');
const ROWS = ['1\tplain\n', '2\té😀 straddles\n', '', `3\t${'long '.repeat(200)}\n`, '4\t\\N\n'];
/** A COPY's bytes as the server sends them: a notice and a parameter status among the rows, then pg's. */
const WIRE = Buffer.concat([
  COPY_OUT_RESPONSE,
  pgMessage('d', ROWS[0]),
  NOTICE,
  pgMessage('d', ROWS[1]),
  pgMessage('S', 'TimeZone\0UTC\0'),
  ...ROWS.slice(2).map((r) => pgMessage('d', r)),
  pgMessage('c', ''),
  AFTER,
]);

const tick = () => new Promise((r) => setImmediate(r));
/** Feeds `chunks` one at a time (each read before the next arrives) and collects the batches. */
const run = (chunks: Buffer[], sink: CopyOutSink<string[]> = new Payloads()) => readCopyOut(sink, chunks);

describe('CopyOutReader', () => {
  it('hands every row to the sink and the bytes after the copy back to pg, however the data is cut', async () => {
    const whole = await run([WIRE]);
    expect(whole.sent).toEqual(['COPY x TO STDOUT']);
    expect(whole.batches.flat()).toEqual(ROWS);
    expect(whole.handedBack).toEqual(AFTER);
    for (let cut = 1; cut < WIRE.length; cut++) {
      const { batches, handedBack } = await run([WIRE.subarray(0, cut), WIRE.subarray(cut)]);
      expect(batches.flat(), `cut at ${cut}`).toEqual(ROWS);
      expect(handedBack, `cut at ${cut}`).toEqual(AFTER);
    }
    const bytes = await run(Array.from(WIRE, (_, i) => WIRE.subarray(i, i + 1)));
    expect(bytes.batches.flat()).toEqual(ROWS);
    expect(bytes.handedBack).toEqual(AFTER);
  });

  it('stops where the sink has a batch ready and goes on from there at the next pull, whatever the cut', async () => {
    const rows = Array.from({ length: 50 }, (_, i) => `row ${i}${'.'.repeat(i % 7)}\n`);
    const wire = Buffer.concat([COPY_OUT_RESPONSE, ...rows.map((r) => pgMessage('d', r)), pgMessage('c', ''), AFTER]);
    for (const perBatch of [1, 3, 7]) {
      for (let cut = 1; cut < wire.length; cut += 5) {
        const { batches, handedBack } = await run([wire.subarray(0, cut), wire.subarray(cut)], new Payloads(perBatch));
        expect(batches.flat()).toEqual(rows);
        expect(Math.max(...batches.map((b) => b.length))).toBeLessThanOrEqual(perBatch);
        expect(handedBack).toEqual(AFTER);
      }
    }
    // All in one chunk and read only after it arrived: still one batch at a time.
    const { reader: copy, write, handedBack } = fakeCopyOut(new Payloads(10));
    write(wire);
    await tick();
    const sizes: number[] = [];
    for (let b = await copy.next(); b; b = await copy.next()) sizes.push(b.length);
    expect(sizes).toEqual([10, 10, 10, 10, 10]);
    await tick();
    expect(handedBack()).toEqual(AFTER);
  });

  it('a server error goes to pg (from its first byte on, cut anywhere); the rows before it come first, then the error pg reports', async () => {
    const error = Buffer.concat([pgMessage('E', 'SERROR\0Mboom\0\0'), pgMessage('Z', 'I')]);
    const wire = Buffer.concat([COPY_OUT_RESPONSE, pgMessage('d', 'a\n'), pgMessage('d', 'b\n'), error]);
    for (let cut = 1; cut < wire.length; cut++) {
      const { reader: copy, write, handedBack } = fakeCopyOut(new Payloads());
      write(wire.subarray(0, cut));
      await tick();
      write(wire.subarray(cut));
      await tick();
      const rows: string[] = [];
      while (rows.length < 2) rows.push(...(await copy.next())!);
      expect(rows).toEqual(['a\n', 'b\n']);
      await tick();
      expect(handedBack(), `cut at ${cut}`).toEqual(error);
      copy.handleError(new Error('boom')); // what pg does once it has parsed the ErrorResponse
      await expect(copy.next()).rejects.toThrow('boom');
    }
  });

  it("the sink's errors fail the read after the rows before them: a bad row, a missing trailer (pg still gets its bytes)", async () => {
    const bad = Buffer.concat([
      COPY_OUT_RESPONSE,
      pgMessage('d', 'a'),
      pgMessage('d', 'bad'),
      pgMessage('d', 'c'),
      pgMessage('c', ''),
      AFTER,
    ]);
    const { reader: copy, write } = fakeCopyOut(new Payloads());
    write(bad);
    await tick();
    expect(await copy.next()).toEqual(['a']);
    await expect(copy.next()).rejects.toThrow('a bad row');

    const trailer = (rows: string[]) =>
      Buffer.concat([COPY_OUT_RESPONSE, ...rows.map((r) => pgMessage('d', r)), pgMessage('c', ''), AFTER]);
    expect((await run([trailer(['a', 'b', 'END'])], new Payloads(Infinity, 'END'))).batches).toEqual([['a', 'b']]);
    const missing = fakeCopyOut(new Payloads(Infinity, 'END'));
    missing.write(trailer(['a', 'b']));
    await tick();
    expect(await missing.reader.next()).toEqual(['a', 'b']);
    await expect(missing.reader.next()).rejects.toThrow('COPY data ended without its trailer');
    await tick();
    expect(missing.handedBack()).toEqual(AFTER);
  });

  it("sluice/testing's wire helpers build the protocol's bytes (type, length counting itself, body)", () => {
    expect(pgMessage('d', 'é\n')).toEqual(Buffer.from([0x64, 0, 0, 0, 7, 0xc3, 0xa9, 0x0a]));
    expect(pgMessage('c')).toEqual(Buffer.from([0x63, 0, 0, 0, 4]));
    // CopyOutResponse: overall format, column count, then each column's format (0 text, 1 binary).
    expect(copyOutResponse(2)).toEqual(Buffer.from([0x48, 0, 0, 0, 11, 0, 0, 2, 0, 0, 0, 0]));
    expect(copyOutResponse(2, 'binary')).toEqual(Buffer.from([0x48, 0, 0, 0, 11, 1, 0, 2, 0, 1, 0, 1]));
    expect(copyCompleted(3)).toEqual(Buffer.concat([pgMessage('C', 'COPY 3\0'), pgMessage('Z', 'I')]));
  });

  it('hands pg a response that is no COPY at all, and ends without rows', async () => {
    const { batches, handedBack } = await run([AFTER]);
    expect(batches).toEqual([]);
    expect(handedBack).toEqual(AFTER);
  });

  it('refuses a connection it cannot take over (pg then fails the query with that error)', () => {
    const stream = new PassThrough();
    stream.on('data', () => {});
    stream.on('data', () => {});
    const copy = new CopyOutReader('COPY x TO STDOUT', new Payloads());
    expect(copy.submit({ stream, query: () => {} })?.message).toMatch(/data listener \(found 2\)/);
    expect(stream.listenerCount('data')).toBe(2);
  });
});

describe('copyOut against the server', () => {
  let admin: pg.Client;
  const clients: pg.Client[] = [];
  const client = async () => {
    const c = new pg.Client({ connectionString: inject('pgUrl') });
    await c.connect();
    clients.push(c);
    return c;
  };
  /** The COPYs running with `marker` in their statement, and what they wait for. */
  const running = async (marker: string) =>
    (
      await admin.query<{ wait_event: string | null }>(
        `SELECT wait_event FROM pg_stat_activity WHERE query LIKE 'COPY%' || $1 || '%' AND pid <> pg_backend_pid()`,
        [marker],
      )
    ).rows;
  beforeAll(async () => {
    admin = await client();
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => {});
  });

  it('reads every row; the connection then runs the next query, also after a COPY that failed', async () => {
    const c = await client();
    await c.query('CREATE TEMP TABLE posts AS SELECT i, $1 || i AS title FROM generate_series(1, 2500) i', ['tïtle 😀 ']);
    expect(await countTitles(c)).toBe(2500);
    const batches: string[][] = [];
    for await (const b of copyOut(c, `COPY (SELECT title FROM posts ORDER BY i) TO STDOUT`, new Lines())) batches.push(b);
    expect(batches.every((b) => b.length > 0 && b.length <= 1000)).toBe(true);
    expect(batches.flat()).toEqual(Array.from({ length: 2500 }, (_, i) => `tïtle 😀 ${i + 1}`));
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    const failing = copyOut(c, 'COPY (SELECT 1 / (i - 2000) FROM generate_series(1, 3000) i) TO STDOUT', new Lines());
    await expect(
      (async () => {
        for await (const _ of failing);
      })(),
    ).rejects.toThrow('division by zero');
    expect((await c.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('a slow caller leaves the server waiting to write; an early stop leaves no COPY once the connection closes', async () => {
    const c = await client();
    const marker = `slow_${process.pid}`;
    const rows = 100_000; // ~100 MB, far more than the socket buffers hold
    const batches = copyOut(c, `COPY (SELECT i, repeat('x', 1000) AS ${marker} FROM generate_series(1, ${rows}) i) TO STDOUT`, new Lines());
    const first = await batches.next();
    expect(first.value?.length).toBeGreaterThan(0);
    let copies: { wait_event: string | null }[] = [];
    for (const deadline = Date.now() + 10_000; copies[0]?.wait_event !== 'ClientWrite' && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 100));
      copies = await running(marker);
    }
    expect(copies).toEqual([{ wait_event: 'ClientWrite' }]);
    // Read on a little, then stop early: the COPY still runs until the connection is closed.
    for (let i = 0; i < 5; i++) expect((await batches.next()).value?.length).toBeGreaterThan(0);
    await batches.return(undefined);
    expect(await running(marker)).toHaveLength(1);
    await c.end().catch(() => {}); // pg may report the COPY it cut short
    for (const deadline = Date.now() + 10_000; (await running(marker)).length && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 100));
    expect(await running(marker)).toEqual([]);
  });
});

describe('docs/custom-connectors.md', () => {
  it('shows the Lines example of this file as it is', () => {
    const source = readFileSync(join(REPO, 'test/cdk/postgres-copy.test.ts'), 'utf8');
    const example = source.slice(source.indexOf('// docs:start\n') + 14, source.indexOf('// docs:end'));
    const doc = readFileSync(join(REPO, 'docs/custom-connectors.md'), 'utf8');
    expect(doc).toContain(example);
  });

  it('shows the sink test below as it is, and it passes', async () => {
    // docs:test-start
    const wire = Buffer.concat([
      copyOutResponse(1),
      pgMessage('d', 'first\n'),
      pgMessage('d', 'sécond\n'),
      pgMessage('c'),
      copyCompleted(2),
    ]);
    for (let cut = 1; cut < wire.length; cut++) {
      const { batches } = await readCopyOut(new Lines(), [wire.subarray(0, cut), wire.subarray(cut)]);
      if (batches.flat().join() !== 'first,sécond') throw new Error(`cut at ${cut}`);
    }
    // docs:test-end
    const source = readFileSync(join(REPO, 'test/cdk/postgres-copy.test.ts'), 'utf8');
    const region = source.slice(source.indexOf('// docs:test-start\n') + 19, source.indexOf('    // docs:test-end'));
    const example = region.replace(/^ {4}/gm, '');
    expect(example.split('\n').length).toBeGreaterThan(4);
    expect(readFileSync(join(REPO, 'docs/custom-connectors.md'), 'utf8')).toContain(example);
  });
});
