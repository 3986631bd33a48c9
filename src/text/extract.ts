// Which parts of a record become text, and which become chunk metadata.
import { canonicalJson } from '../protocol/identity.ts';
import { isWhitespaceUnit } from './whitespace.ts';

/** Values at a dot path; `*` walks into every element of an array (or value of an object). */
export function valuesAtPath(record: unknown, path: string): unknown[] {
  if (!path.includes('.') && path !== '*') {
    // A top-level field (most text_fields): no split, no intermediate arrays.
    if (record === null || typeof record !== 'object') return [];
    const v = (record as Record<string, unknown>)[path];
    return v === undefined ? [] : [v];
  }
  let current: unknown[] = [record];
  for (const part of path.split('.')) {
    const next: unknown[] = [];
    for (const value of current) {
      if (value === null || typeof value !== 'object') continue;
      if (part === '*') {
        next.push(...(Array.isArray(value) ? value : Object.values(value as Record<string, unknown>)));
      } else {
        const v = (value as Record<string, unknown>)[part];
        if (v !== undefined) next.push(v);
      }
    }
    current = next;
  }
  return current;
}

/** Text form of a field value; empty for null/undefined. */
export function valueToText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value))
    return value
      .map(valueToText)
      .filter((s) => s.length > 0)
      .join('\n');
  return canonicalJson(value);
}

/**
 * Whether a string has a non-whitespace character: what `/\S/.test(s)` and `s.trim().length > 0`
 * say, without a regular expression call or a copy. Text nearly always returns at its first unit.
 */
export function hasText(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (!isWhitespaceUnit(s.charCodeAt(i))) return true;
  return false;
}

/** Airbyte bookkeeping columns (`_ab_cdc_deleted_at`, `_ab_cdc_lsn`…) are never text. */
const isBookkeeping = (key: string) => key.startsWith('_ab_');

export type TextExtractor = (record: Record<string, unknown>) => string;

/** What joins the values of text_fields into one text. */
export const TEXT_SEPARATOR = '\n\n';

/** The values of text_fields that have text, in order: the text is them joined by TEXT_SEPARATOR. */
export function textPartsExtractor(fields: string[]): (record: Record<string, unknown>) => string[] {
  // What valuesAtPath does for a top-level field, without its one-element array per field and record.
  const topLevel = fields.map((f) => !f.includes('.') && f !== '*');
  // A plain loop: this runs once per record, and the chained form allocated three arrays and a
  // trimmed copy of every value just to test it for text.
  // Filled per record, then copied at its exact size: a new array grown by push() took room for 17.
  // (Indexed, not emptied by `length = 0`, which gives up the array's storage.)
  const found: string[] = [];
  return (record) => {
    let k = 0;
    for (let i = 0; i < fields.length; i++) {
      if (topLevel[i]) {
        const v = record[fields[i]];
        if (v === undefined) continue;
        const s = valueToText(v);
        if (hasText(s)) found[k++] = s;
        continue;
      }
      for (const v of valuesAtPath(record, fields[i])) {
        const s = valueToText(v);
        if (hasText(s)) found[k++] = s;
      }
    }
    const parts = found.slice(0, k);
    for (let j = 0; j < k; j++) found[j] = ''; // holds no record's text until the next one
    return parts;
  };
}

/**
 * The parts joined by TEXT_SEPARATOR. By `+` rather than join(): V8 then keeps the result as a
 * rope over the parts, and a document whose text is only fingerprinted (from its parts) never
 * has it copied into one flat string.
 */
export function joinTextParts(parts: readonly string[]): string {
  let text = parts.length ? parts[0] : '';
  for (let i = 1; i < parts.length; i++) text = text + TEXT_SEPARATOR + parts[i];
  return text;
}

export function textExtractor(opts: { textFields?: string[]; textTemplate?: string }): TextExtractor {
  if (opts.textTemplate !== undefined) {
    const template = opts.textTemplate;
    return (record) => {
      let anyValue = false;
      const text = template.replace(/\{\{\s*([^}\s]+)\s*\}\}/g, (_m, path: string) => {
        const value = valuesAtPath(record, path)
          .map(valueToText)
          .filter((s) => s.length > 0)
          .join('\n');
        if (value.trim().length) anyValue = true;
        return value;
      });
      // A template whose fields are all empty is empty text, whatever literal words it holds.
      return anyValue ? text : '';
    };
  }
  if (opts.textFields) {
    const parts = textPartsExtractor(opts.textFields);
    return (record) => joinTextParts(parts(record));
  }
  return (record) => {
    if (typeof record.content === 'string') return record.content;
    const lines: string[] = [];
    for (const [key, value] of Object.entries(record)) {
      if (typeof value === 'string' && value.trim().length && !isBookkeeping(key)) lines.push(`${key}: ${value}`);
    }
    return lines.join('\n');
  };
}

export type MetadataField = string | { field: string; as: string };

/**
 * The metadata of every record when there are no metadata_fields: one shared object rather than
 * one per record (chunks get copies of it), frozen so it stays empty.
 */
export const NO_METADATA: Record<string, unknown> = Object.freeze({});

export function metadataExtractor(fields: MetadataField[] | undefined): (record: Record<string, unknown>) => Record<string, unknown> {
  if (!fields?.length) return () => NO_METADATA;
  const specs = fields.map((f) => (typeof f === 'string' ? { field: f, as: f } : f));
  return (record) => {
    const metadata: Record<string, unknown> = {};
    for (const { field, as } of specs) {
      const values = valuesAtPath(record, field);
      if (!values.length) continue;
      // A wildcard path yields a list; a plain path its single value.
      metadata[as] = field.includes('*') ? values : values[0];
    }
    return metadata;
  };
}
