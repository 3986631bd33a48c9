// Tie-safe incremental cursors.
//
// A cursor alone ("updated_at > last value") loses records when several share the last value and
// the read stopped in the middle of them, and repeats them if it resumes with ">=". So the saved
// position is the pair (cursor value, primary key) of the last record covered by a STATE:
//
//   ordering 'cursor_then_key' (default): records arrive sorted by (cursor, primary key). A state
//     may be cut after any record; a resumed read skips every record at or before the saved pair
//     and keeps the rest, so ties are neither lost nor repeated.
//   ordering 'cursor': records are sorted by cursor only (typical of REST APIs). Within a tie the
//     order is unknown, so a state is cut only when the cursor value moves on; the saved position
//     is "every record with cursor <= value", and a resumed read keeps cursor > value.
//
// Either way the source is asked for records with cursor >= the saved value (inclusive), and the
// tracker drops what was already covered. A record that goes backwards is an error, not silently
// accepted, because it would make the saved position wrong.
import { SluiceError } from '../protocol/errors.ts';
import { getPath } from '../protocol/identity.ts';

export type CursorOrdering = 'cursor_then_key' | 'cursor';

/** The stream state the kit stores: `key` is absent when everything up to `cursor` is covered. */
export interface CursorState {
  cursor: unknown;
  key?: unknown[];
}

export interface CursorTrackerOptions {
  stream: string;
  cursorField: readonly string[];
  primaryKey: readonly (readonly string[])[];
  ordering?: CursorOrdering;
  /** Saved state to resume after (from a previous STATE of this stream). */
  start?: CursorState;
  /** Override the order of cursor values (default: numbers numerically, dates by time, else text). */
  compare?: (a: unknown, b: unknown) => number;
}

export function isCursorState(value: unknown): value is CursorState {
  return !!value && typeof value === 'object' && 'cursor' in value;
}

/** Orders cursor / key values: numbers and bigints numerically, ISO-like dates by time, then text. */
export function compareValues(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if ((typeof a === 'number' || typeof a === 'bigint') && (typeof b === 'number' || typeof b === 'bigint')) {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  // A bigint cursor comes back from a JSON state as decimal text.
  if (typeof a === 'bigint' && typeof b === 'string' && /^-?\d+$/.test(b)) b = BigInt(b);
  if (typeof b === 'bigint' && typeof a === 'string' && /^-?\d+$/.test(a)) a = BigInt(a);
  if (typeof a === 'bigint' && typeof b === 'bigint') return a < b ? -1 : a > b ? 1 : 0;
  if (a instanceof Date) a = a.toISOString();
  if (b instanceof Date) b = b.toISOString();
  if (typeof a === 'string' && typeof b === 'string') {
    if (looksLikeDate(a) && looksLikeDate(b)) {
      const ta = Date.parse(a);
      const tb = Date.parse(b);
      // Same millisecond: fall back to text, which orders sub-millisecond digits of one format.
      if (ta !== tb) return ta < tb ? -1 : 1;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  }
  const sa = typeof a === 'string' ? a : JSON.stringify(a);
  const sb = typeof b === 'string' ? b : JSON.stringify(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

function looksLikeDate(s: string): boolean {
  return /^\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?$/.test(s) && Number.isFinite(Date.parse(s));
}

function compareKeys(a: readonly unknown[], b: readonly unknown[], cmp: (x: unknown, y: unknown) => number): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const c = cmp(a[i], b[i]);
    if (c !== 0) return c;
  }
  return 0;
}

export class CursorTracker {
  readonly stream: string;
  readonly ordering: CursorOrdering;
  private readonly cursorField: readonly string[];
  private readonly primaryKey: readonly (readonly string[])[];
  private readonly cmp: (a: unknown, b: unknown) => number;
  private readonly start: CursorState | undefined;
  private last: { cursor: unknown; key: unknown[] } | undefined;
  /** Position covered by a state that has not been emitted yet. */
  private pending: CursorState | undefined;
  private lastEmitted: CursorState | undefined;
  private position = 0;

  constructor(opts: CursorTrackerOptions) {
    this.stream = opts.stream;
    this.ordering = opts.ordering ?? 'cursor_then_key';
    this.cursorField = opts.cursorField;
    this.primaryKey = opts.primaryKey;
    this.cmp = opts.compare ?? compareValues;
    if (opts.start !== undefined && !isCursorState(opts.start)) {
      throw new SluiceError(`saved state of stream "${opts.stream}" is not a cursor state: ${JSON.stringify(opts.start).slice(0, 200)}`, {
        kind: 'source',
        where: `stream ${opts.stream}`,
        hint: 'reset the state of this stream (`sluice state reset`) so it is read from the start',
      });
    }
    this.start = opts.start;
  }

  /** The cursor value to ask the source for (records with cursor >= this value), if resuming. */
  get since(): unknown {
    return this.start?.cursor;
  }

  /** What the resumed read starts after; undefined on a first read. */
  get startState(): CursorState | undefined {
    return this.start;
  }

  /**
   * Registers the next record. Returns false when the saved state already covers it (skip it),
   * true when it is new. Throws when records arrive out of order.
   */
  observe(data: Record<string, unknown>): boolean {
    this.position++;
    const cursor = getPath(data, this.cursorField);
    if (cursor === undefined || cursor === null) {
      throw new SluiceError(
        `record ${this.position} of stream "${this.stream}" has no value for cursor field "${this.cursorField.join('.')}"`,
        {
          kind: 'source',
          where: `stream ${this.stream}`,
          hint: 'every record of an incremental stream needs a cursor value; check the cursor field name',
        },
      );
    }
    const key = this.primaryKey.map((p) => getPath(data, p));
    if (this.last) {
      const c = this.cmp(cursor, this.last.cursor);
      const backwards = c < 0 || (c === 0 && this.ordering === 'cursor_then_key' && compareKeys(key, this.last.key, this.cmp) < 0);
      if (backwards) {
        throw new SluiceError(
          `stream "${this.stream}" yielded records out of order at record ${this.position}: ` +
            `(${this.describe(cursor, key)}) came after (${this.describe(this.last.cursor, this.last.key)})`,
          {
            kind: 'source',
            where: `stream ${this.stream}`,
            hint:
              this.ordering === 'cursor_then_key'
                ? 'sort by cursor, then primary key (or declare ordering: "cursor" if ties are unordered)'
                : 'sort the records by the cursor field ascending',
          },
        );
      }
      // Cursor moved on: everything up to the previous value is complete.
      if (this.ordering === 'cursor' && c > 0) this.pending = { cursor: this.last.cursor };
    }
    this.last = { cursor: jsonSafe(cursor), key: key.map(jsonSafe) };
    if (this.ordering === 'cursor_then_key') this.pending = this.last;
    return !this.covered(cursor, key);
  }

  private covered(cursor: unknown, key: unknown[]): boolean {
    if (!this.start) return false;
    const c = this.cmp(cursor, this.start.cursor);
    if (c !== 0) return c < 0;
    if (this.start.key === undefined) return true;
    return compareKeys(key, this.start.key, this.cmp) <= 0;
  }

  private describe(cursor: unknown, key: unknown[]): string {
    return `${this.cursorField.join('.')}=${JSON.stringify(cursor)}, key=${JSON.stringify(key)}`;
  }

  /**
   * A state to emit now, if the position advanced since the last one. With ordering 'cursor' this
   * is the last completed cursor value, which may lag behind the records read.
   */
  checkpoint(): CursorState | undefined {
    const next = this.pending;
    if (!next) return undefined;
    if (this.lastEmitted && this.sameState(next, this.lastEmitted)) return undefined;
    if (this.start && this.cmpState(next, this.start) <= 0) return undefined;
    this.lastEmitted = next;
    return next;
  }

  /** The state at the end of a complete read: every record read is covered. */
  finish(): CursorState | undefined {
    if (this.last && this.ordering === 'cursor') this.pending = { cursor: this.last.cursor };
    return this.checkpoint();
  }

  private sameState(a: CursorState, b: CursorState): boolean {
    return this.cmpState(a, b) === 0 && (a.key === undefined) === (b.key === undefined);
  }

  private cmpState(a: CursorState, b: CursorState): number {
    const c = this.cmp(a.cursor, b.cursor);
    if (c !== 0) return c;
    // "Everything at this cursor" is past any key at the same cursor.
    if (a.key === undefined) return b.key === undefined ? 0 : 1;
    if (b.key === undefined) return -1;
    return compareKeys(a.key, b.key, this.cmp);
  }
}

/** States are stored as JSON: dates become ISO text, bigints decimal text. */
function jsonSafe(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'bigint') return v.toString();
  return v;
}
