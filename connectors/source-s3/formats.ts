// Object parsers. Each yields plain JSON-able rows and never holds more than one row (one parquet
// row group, one text document) in memory at a time.
import { parse as csvParse } from 'csv-parse';
import { parquetMetadataAsync, parquetReadObjects, type AsyncBuffer } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { SluiceError } from '../../src/protocol/errors.ts';
import { badRecord, type BadRecord } from '../../src/cdk/source.ts';
import type { ConcreteFormat, S3Config } from './config.ts';

export interface ObjectSource {
  key: string;
  size: number;
  /** Streamed body (every format but parquet). */
  open(): Promise<Readable>;
  /** Ranged reads (parquet). */
  ranged(): AsyncBuffer;
}

type Row = Record<string, unknown>;

/**
 * The object's rows. A row that cannot be parsed (a JSON Lines line that is not a JSON object, a
 * CSV row with too many fields, an array element that is not an object) comes as a BadRecord in
 * its place — the engine fails the run naming it or keeps it as a dead letter (errors.tolerance) —
 * and the rows after it follow. What breaks the object as a whole (truncated, not the format,
 * a value over the size limit) still throws.
 */
export async function* parseRows(format: ConcreteFormat, src: ObjectSource, config: S3Config): AsyncGenerator<Row | BadRecord> {
  if (format === 'parquet') {
    yield* parquetRows(src);
    return;
  }
  const raw = await src.open();
  const body = /\.(gz|gzip)$/i.test(src.key) ? raw.pipe(createGunzip()) : raw;
  if (body !== raw) raw.on('error', (e) => body.destroy(e));
  try {
    if (format === 'jsonl') yield* jsonlRows(body, src.key, config.max_json_object_bytes);
    else if (format === 'csv') yield* csvRows(body, src.key, config);
    else if (format === 'json') yield* jsonRows(body, src.key, config.max_json_object_bytes);
    else throw new Error(`not a row format: ${format}`);
  } finally {
    body.destroy();
    raw.destroy();
  }
}

/** The whole object as text, or undefined when it is bigger than `maxBytes` (after gunzip). */
export async function readText(src: ObjectSource, maxBytes: number): Promise<string | undefined> {
  const raw = await src.open();
  const body = /\.(gz|gzip)$/i.test(src.key) ? raw.pipe(createGunzip()) : raw;
  const parts: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) return undefined;
      parts.push(chunk);
    }
  } finally {
    body.destroy();
    raw.destroy();
  }
  return Buffer.concat(parts, total)
    .toString('utf8')
    .replace(/^\uFEFF/, '');
}

function rowError(key: string, position: string, what: string, hint: string): SluiceError {
  return new SluiceError(`${what}`, { kind: 'source', where: `object ${key}, ${position}`, hint });
}

function asRow(value: unknown, key: string, position: string): Row {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Row;
  throw rowError(
    key,
    position,
    `expected a JSON object, found ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`,
    'each row must be a JSON object; set `format` if this object is not what auto-detection assumed',
  );
}

/** One row that could not be parsed, handed on instead of failing the object. */
function badRow(key: string, position: string, what: string, hint: string, raw: string): BadRecord {
  return badRecord(`object ${key}, ${position}`, what, raw, hint);
}

async function* jsonlRows(body: Readable, key: string, maxLine: number): AsyncGenerator<Row | BadRecord> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let line = 0;
  const parseLine = (buf: Buffer): Row | BadRecord | undefined => {
    line++;
    if (buf.length > maxLine)
      throw rowError(
        key,
        `line ${line}`,
        `line longer than ${maxLine} bytes`,
        'raise max_json_object_bytes, or check that the object really is JSON Lines',
      );
    const text = buf.toString('utf8').trim();
    if (!text) return undefined;
    try {
      return asRow(JSON.parse(line === 1 ? text.replace(/^\uFEFF/, '') : text), key, `line ${line}`);
    } catch (err) {
      const what = err instanceof SluiceError ? err.message : `invalid JSON: ${(err as Error).message}`;
      return badRow(key, `line ${line}`, what, 'fix the line, or set `format` if this is not JSON Lines', text);
    }
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    let start = 0;
    let nl: number;
    while ((nl = chunk.indexOf(10, start)) !== -1) {
      const piece = chunk.subarray(start, nl);
      const whole = pending.length ? Buffer.concat([...pending, piece]) : piece;
      pending = [];
      pendingBytes = 0;
      const row = parseLine(whole);
      if (row) yield row;
      start = nl + 1;
    }
    if (start < chunk.length) {
      // Copy: the chunk's memory may be reused by the stream.
      pending.push(Buffer.from(chunk.subarray(start)));
      pendingBytes += chunk.length - start;
      if (pendingBytes > maxLine)
        throw rowError(
          key,
          `line ${line + 1}`,
          `line longer than ${maxLine} bytes`,
          'raise max_json_object_bytes, or check that the object really is JSON Lines',
        );
    }
  }
  if (pendingBytes) {
    const row = parseLine(Buffer.concat(pending));
    if (row) yield row;
  }
}

async function* csvRows(body: Readable, key: string, config: S3Config): AsyncGenerator<Row | BadRecord> {
  const delimiter = config.csv?.delimiter ?? (/\.tsv(\.gz)?$/i.test(key) ? '\t' : ',');
  const parser = csvParse({
    columns: config.csv?.columns ?? true,
    delimiter,
    quote: config.csv?.quote ?? '"',
    bom: true,
    skip_empty_lines: true,
    relax_column_count_less: true,
    // A row with too many fields (or an unclosed quote) is skipped by the parser and handed on in
    // its place: rows and skipped rows come out in line order.
    info: true,
    raw: true,
    skip_records_with_error: true,
    on_skip: (err, raw) => {
      const line = Number(err?.lines ?? 0);
      skipped.push([
        line,
        badRow(key, `line ${line}`, `invalid CSV: ${err?.message ?? 'unreadable row'}`, 'fix the row, or the `csv` options', raw ?? ''),
      ]);
      return undefined;
    },
  });
  const skipped: Array<[line: number, bad: BadRecord]> = [];
  body.on('error', (e) => parser.destroy(e));
  body.pipe(parser);
  try {
    for await (const row of parser as AsyncIterable<{ record: Row; info: { lines: number } }>) {
      while (skipped.length && skipped[0][0] < row.info.lines) yield skipped.shift()![1];
      yield row.record;
    }
    for (const [, bad] of skipped.splice(0)) yield bad;
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    const e = err as { code?: string; lines?: number; message: string };
    throw rowError(
      key,
      `line ${e.lines ?? '?'}`,
      `invalid CSV: ${e.message}`,
      'check the file, or the `csv` options (delimiter, quote, columns)',
    );
  } finally {
    parser.destroy();
  }
}

/**
 * A top-level JSON array is split into its elements without parsing the whole document, so a
 * large array streams; a top-level object is one row (bounded by `maxValue`).
 */
async function* jsonRows(body: Readable, key: string, maxValue: number): AsyncGenerator<Row | BadRecord> {
  const decoder = new StringDecoder('utf8');
  let mode: 'start' | 'array' | 'single' | 'done' = 'start';
  let depth = 0; // nesting inside the current element (array mode) or document (single mode)
  let inString = false;
  let escaped = false;
  let element: string[] = [];
  let elementSize = 0;
  let index = 0;
  let sawElement = false;
  const finish = (text: string, position: string): Row | BadRecord => {
    if (text.length > maxValue) throw tooBig();
    try {
      return asRow(JSON.parse(text), key, position);
    } catch (err) {
      const what = err instanceof SluiceError ? err.message : `invalid JSON: ${(err as Error).message}`;
      return badRow(key, position, what, 'fix the object, or set `format`', text);
    }
  };
  const tooBig = () =>
    rowError(
      key,
      mode === 'array' ? `array element ${index}` : 'document',
      `JSON value larger than ${maxValue} bytes`,
      'raise max_json_object_bytes, or store the data as JSON Lines',
    );

  const feed = function* (text: string): Generator<Row | BadRecord> {
    let i = 0;
    let segStart = 0;
    const n = text.length;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (mode === 'start') {
        if (c === 0x5b /* [ */) {
          mode = 'array';
          segStart = i + 1;
        } else if (c === 0x7b /* { */) {
          mode = 'single';
          segStart = i;
          depth = 1;
        } else if (!(c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0xfeff)) {
          throw rowError(key, 'start', 'a JSON object must be an array of objects or an object', 'set `format` if this is not JSON');
        }
        i++;
        continue;
      }
      if (mode === 'done') {
        if (!(c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09))
          throw rowError(key, 'end', 'unexpected data after the JSON document', 'fix the object');
        i++;
        continue;
      }
      if (inString) {
        if (escaped) escaped = false;
        else if (c === 0x5c) escaped = true;
        else if (c === 0x22) inString = false;
        i++;
        continue;
      }
      if (c === 0x22) inString = true;
      else if (c === 0x7b || c === 0x5b) depth++;
      else if (c === 0x7d || c === 0x5d) {
        if (mode === 'array' && depth === 0) {
          // end of the top-level array
          const rest = text.slice(segStart, i);
          const last = element.join('') + rest;
          if (last.trim()) {
            yield finish(last, `array element ${index}`);
            index++;
          } else if (sawElement) throw rowError(key, `array element ${index}`, 'trailing comma in JSON array', 'fix the object');
          element = [];
          elementSize = 0;
          mode = 'done';
          i++;
          continue;
        }
        depth--;
        if (mode === 'single' && depth === 0) {
          const whole = element.join('') + text.slice(segStart, i + 1);
          element = [];
          elementSize = 0;
          mode = 'done';
          yield finish(whole, 'document');
          i++;
          continue;
        }
      } else if (c === 0x2c /* , */ && mode === 'array' && depth === 0) {
        const whole = element.join('') + text.slice(segStart, i);
        element = [];
        elementSize = 0;
        sawElement = true;
        yield finish(whole, `array element ${index}`);
        index++;
        segStart = i + 1;
      }
      i++;
    }
    if ((mode === 'array' || mode === 'single') && segStart < n) {
      const rest = text.slice(segStart);
      element.push(rest);
      elementSize += rest.length;
      if (elementSize > maxValue) throw tooBig();
    }
  };

  for await (const chunk of body as AsyncIterable<Buffer>) yield* feed(decoder.write(chunk));
  yield* feed(decoder.end());
  const finalMode = mode as string;
  if (finalMode !== 'done' && finalMode !== 'start')
    throw rowError(key, 'end', 'the JSON document is truncated', 'check the object is complete');
}

async function* parquetRows(src: ObjectSource): AsyncGenerator<Row> {
  const file = src.ranged();
  let metadata;
  try {
    metadata = await parquetMetadataAsync(file);
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    throw rowError(src.key, 'footer', `not a readable parquet file: ${(err as Error).message}`, 'set `format` if this is not parquet');
  }
  // One row group at a time: memory is bounded by the largest row group, not the file.
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    const rows = await parquetReadObjects({ file, metadata, rowStart, rowEnd, compressors });
    for (const r of rows) yield normalize(r) as Row;
    rowStart = rowEnd;
  }
}

/** Makes parquet values JSON-able: bigints, dates and bytes. */
function normalize(value: unknown): unknown {
  if (typeof value === 'bigint') return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === 'object') {
    const out: Row = {};
    for (const [k, v] of Object.entries(value)) out[k] = normalize(v);
    return out;
  }
  return value;
}
