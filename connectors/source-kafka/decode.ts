// One Kafka message → what it means for the destination: an upsert of a record, a deletion of a
// key, nothing (an event sluice does not apply), or a malformed message (counted against
// max_errors). Pure: no I/O, so every rule here is unit-tested.
import { isUtf8 } from 'node:buffer';
import { canonicalJson, getPath, keyPart } from '../../src/protocol/identity.ts';
import { KAFKA_KEY_FIELD } from './config.ts';

export type Decoded =
  | { op: 'upsert'; data: Record<string, unknown> }
  | { op: 'delete'; key: Record<string, unknown> }
  | { op: 'skip'; reason: string }
  | { op: 'malformed'; reason: string };

export interface DecodeOptions {
  format: 'auto' | 'json' | 'debezium';
  /** Primary-key paths of the stream (from the catalog). */
  primaryKey: string[][];
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Kafka Connect's JsonConverter with schemas enabled wraps every value/key as { schema, payload }. */
function unwrapSchema(v: unknown): unknown {
  if (isObject(v) && 'payload' in v && 'schema' in v && Object.keys(v).length === 2) return v.payload;
  return v;
}

const DEBEZIUM_OPS = new Set(['c', 'r', 'u', 'd', 't', 'm']);
function isEnvelope(v: Record<string, unknown>): boolean {
  return typeof v.op === 'string' && DEBEZIUM_OPS.has(v.op) && ('after' in v || 'before' in v);
}

interface ParsedKey {
  /** The key as parsed JSON (schema wrapper removed), or its raw text when it is not JSON. */
  value: unknown;
  /** The key as one stable string: the document id when no key_field is configured. */
  text: string;
}

export function parseKey(raw: Buffer | null | undefined): ParsedKey | undefined {
  if (raw == null || raw.length === 0) return undefined;
  // Binary keys (Avro, UUID bytes…): decoding would map different keys to the same U+FFFD text.
  if (!isUtf8(raw)) {
    const hex = raw.toString('hex');
    return { value: hex, text: hex };
  }
  const text = raw.toString('utf8');
  let value: unknown = text;
  try {
    value = unwrapSchema(JSON.parse(text));
  } catch {
    return { value: text, text };
  }
  if (value === null || value === undefined) return undefined;
  if (isObject(value)) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    // { "id": 42 } (Debezium, Kafka Connect) identifies the row by 42; composite keys keep all parts.
    if (entries.length === 1 && entries[0][1] !== null && typeof entries[0][1] !== 'object') return { value, text: keyPart(entries[0][1]) };
    return { value, text: canonicalJson(value) };
  }
  if (Array.isArray(value)) return { value, text: canonicalJson(value) };
  return { value, text: keyPart(value) };
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let o = target;
  for (let i = 0; i < path.length - 1; i++) {
    const next = o[path[i]];
    if (!isObject(next)) o[path[i]] = {};
    o = o[path[i]] as Record<string, unknown>;
  }
  o[path[path.length - 1]] = value;
}

/**
 * The value of one primary-key path: from the row first, then from the message key (a field of a
 * JSON key, or the whole key when the primary key has a single part).
 */
function keyValue(path: string[], row: Record<string, unknown> | undefined, key: ParsedKey | undefined, singlePart: boolean): unknown {
  if (path.length === 1 && path[0] === KAFKA_KEY_FIELD) return key?.text;
  const fromRow = row ? getPath(row, path) : undefined;
  if (fromRow !== undefined && fromRow !== null) return fromRow;
  if (!key) return undefined;
  if (isObject(key.value)) {
    const fromKey = getPath(key.value, path);
    if (fromKey !== undefined && fromKey !== null) return fromKey;
    return undefined;
  }
  return singlePart ? key.value : undefined;
}

const describePath = (p: string[]) => p.join('.');

function withKey(row: Record<string, unknown>, key: ParsedKey | undefined, pk: string[][]): Decoded {
  const data: Record<string, unknown> = { ...row };
  for (const path of pk) {
    const v = keyValue(path, row, key, pk.length === 1);
    if (v === undefined || v === null) return { op: 'malformed', reason: missingKeyReason(path, key) };
    if (getPath(data, path) === undefined || getPath(data, path) === null) setPath(data, path, v);
  }
  return { op: 'upsert', data };
}

function deletionKey(row: Record<string, unknown> | undefined, key: ParsedKey | undefined, pk: string[][]): Decoded {
  const out: Record<string, unknown> = {};
  for (const path of pk) {
    const v = keyValue(path, row, key, pk.length === 1);
    if (v === undefined || v === null) return { op: 'malformed', reason: `deletion without a key: ${missingKeyReason(path, key)}` };
    setPath(out, path, v);
  }
  return { op: 'delete', key: out };
}

function missingKeyReason(path: string[], key: ParsedKey | undefined): string {
  if (path.length === 1 && path[0] === KAFKA_KEY_FIELD) return 'message has no key (set key_field to take the primary key from the value)';
  return `no value for key field "${describePath(path)}" in the value${key ? ' or the message key' : ' and the message has no key'}`;
}

export function decodeMessage(rawKey: Buffer | null | undefined, rawValue: Buffer | null | undefined, opts: DecodeOptions): Decoded {
  const key = parseKey(rawKey);
  const pk = opts.primaryKey;
  // A tombstone (null value) deletes the key: Kafka's compaction convention, also sent by Debezium after a delete.
  if (rawValue == null) return deletionKey(undefined, key, pk);
  if (rawValue.length === 0) return { op: 'malformed', reason: 'value is empty (a tombstone must be null, not an empty string)' };
  let value: unknown;
  try {
    value = JSON.parse(rawValue.toString('utf8'));
  } catch (err) {
    return { op: 'malformed', reason: `value is not JSON (${(err as Error).message})` };
  }
  value = unwrapSchema(value);
  if (value === null) return deletionKey(undefined, key, pk);
  if (!isObject(value))
    return { op: 'malformed', reason: `value is JSON ${Array.isArray(value) ? 'array' : typeof value}, expected an object` };

  if (opts.format !== 'json') {
    if (isEnvelope(value)) return decodeEnvelope(value, key, pk);
    // Debezium's ExtractNewRecordState (unwrap) SMT flattens rows and marks deletions with __deleted.
    if (value.__deleted === 'true' || value.__deleted === true) return deletionKey(value, key, pk);
    if (opts.format === 'debezium')
      return { op: 'malformed', reason: 'value is not a Debezium change event (no "op" with "before"/"after")' };
  }
  return withKey(value, key, pk);
}

function decodeEnvelope(env: Record<string, unknown>, key: ParsedKey | undefined, pk: string[][]): Decoded {
  const before = isObject(env.before) ? env.before : undefined;
  const after = isObject(env.after) ? env.after : undefined;
  switch (env.op) {
    case 'c':
    case 'r':
    case 'u':
      if (!after) return { op: 'malformed', reason: `Debezium "${env.op}" event has no "after" row` };
      return withKey(after, key, pk);
    case 'd':
      return deletionKey(before, key, pk);
    case 't':
      // A truncate carries no keys, and a full refresh of the topic would replay the rows from
      // before it: there is no exact way on from here but a fresh snapshot (docs/kafka.md).
      return {
        op: 'skip',
        reason:
          'Debezium truncate event not applied: documents of the rows it removed stay in the index until it is rebuilt from a fresh snapshot of the table (see "Truncate" in docs/kafka.md)',
      };
    default:
      return { op: 'skip', reason: `Debezium "${String(env.op)}" event carries no row change` };
  }
}
