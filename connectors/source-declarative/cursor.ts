// DatetimeBasedCursor: time windows ("slices") between start_datetime (or the saved cursor, less
// lookback_window) and end_datetime (default now), `step` long and `cursor_granularity` apart; the
// window's bounds go into the request via start_time_option / end_time_option. The state is the
// highest cursor value seen, as the record had it ({ <cursor_field>: value }), like the CDK's.
import { SluiceError } from '../../src/cdk/index.ts';
import { addDuration, formatDatetime, parseAnyDatetime, parseDatetime, parseDuration, type Duration, type Instant } from './datetime.ts';
import { evaluate, evaluateString, type Vars } from './interpolation.ts';
import type { Component } from './manifest.ts';
import { injectOption, type RequestParts } from './requester.ts';

export type Interval = Record<string, string>;

export class DatetimeCursor {
  readonly cursorField: string;
  readonly isDataFeed: boolean;
  private readonly format: string;
  private readonly parseFormats: string[];
  private readonly step?: Duration;
  private readonly granularity?: Duration;
  private readonly lookback?: Duration;
  private readonly startField: string;
  private readonly endField: string;
  private readonly vars: Vars;

  constructor(
    private readonly c: Component,
    vars: Vars,
  ) {
    this.vars = { ...vars, parameters: c.$parameters ?? vars.parameters };
    this.cursorField = evaluateString(c.cursor_field, this.vars);
    this.format = evaluateString(c.datetime_format, this.vars) || '%Y-%m-%dT%H:%M:%S.%f%z';
    this.parseFormats = [...((c.cursor_datetime_formats ?? []) as string[]), this.format];
    const dur = (name: string): Duration | undefined => {
      const raw = c[name] === undefined ? undefined : evaluateString(c[name], this.vars);
      if (!raw) return undefined;
      const d = parseDuration(raw);
      if (!d)
        throw new SluiceError(`DatetimeBasedCursor.${name} "${raw}" is not an ISO 8601 duration (e.g. P1D, PT1H)`, { kind: 'config' });
      return d;
    };
    this.step = dur('step');
    this.granularity = dur('cursor_granularity');
    this.lookback = dur('lookback_window');
    if (this.step && !this.granularity)
      throw new SluiceError('DatetimeBasedCursor: step needs cursor_granularity (e.g. PT1S)', { kind: 'config' });
    this.startField = evaluateString(c.partition_field_start ?? 'start_time', this.vars) || 'start_time';
    this.endField = evaluateString(c.partition_field_end ?? 'end_time', this.vars) || 'end_time';
    this.isDataFeed = c.is_data_feed === true;
  }

  /** A lookback window asks to read records at or before the saved cursor again (late updates). */
  get hasLookback(): boolean {
    return !!this.lookback && (this.lookback.months !== 0 || this.lookback.ms !== 0);
  }

  /** A record's or state's cursor value as an instant (cursor_datetime_formats, then datetime_format, then ISO). */
  parse(value: unknown): Instant | undefined {
    if (value === undefined || value === null || value === '') return undefined;
    for (const f of this.parseFormats) {
      const t = parseDatetime(value, f);
      if (t !== undefined) return t;
    }
    return parseAnyDatetime(value);
  }

  private bound(spec: unknown, what: string): Instant | undefined {
    if (spec === undefined || spec === null) return undefined;
    const c = typeof spec === 'object' ? (spec as Component) : { datetime: spec };
    const v = { ...this.vars, parameters: c.$parameters ?? this.vars.parameters };
    const raw = evaluate(c.datetime, v);
    if (raw === undefined || raw === null || raw === '') return undefined;
    const fmt = c.datetime_format ? evaluateString(c.datetime_format, v) : undefined;
    let t = fmt ? parseDatetime(raw, fmt) : this.parse(raw);
    if (t === undefined) t = parseAnyDatetime(raw);
    if (t === undefined)
      throw new SluiceError(
        `DatetimeBasedCursor.${what} evaluates to ${JSON.stringify(raw)}, which is not a datetime${fmt ? ` in format ${fmt}` : ''}`,
        {
          kind: 'config',
          hint: 'check the start date in the source config',
        },
      );
    const min = c.min_datetime ? this.parse(evaluate(c.min_datetime, v)) : undefined;
    const max = c.max_datetime ? this.parse(evaluate(c.max_datetime, v)) : undefined;
    if (min !== undefined && t < min) t = min;
    if (max !== undefined && t > max) t = max;
    return t;
  }

  get configuredStart(): Instant {
    const t = this.bound(this.c.start_datetime, 'start_datetime');
    if (t === undefined)
      throw new SluiceError('DatetimeBasedCursor: start_datetime evaluates to nothing', {
        kind: 'config',
        hint: 'set the start date in the source config',
      });
    return t;
  }

  private get end(): Instant {
    const now = Date.now();
    const e = this.bound(this.c.end_datetime, 'end_datetime');
    return e === undefined ? now : Math.min(e, now);
  }

  /** The windows to read, given the saved cursor value (or none). */
  *intervals(saved: unknown): Generator<Interval> {
    const end = this.end;
    const configured = Math.min(this.configuredStart, end);
    const savedAt = this.parse(saved);
    let start = savedAt !== undefined ? Math.max(configured, savedAt) : configured;
    if (this.lookback) start = addDuration(start, this.lookback, -1);
    if (!this.step) {
      if (start <= end) yield { [this.startField]: formatDatetime(start, this.format), [this.endField]: formatDatetime(end, this.format) };
      return;
    }
    while (start <= end) {
      const next = addDuration(start, this.step);
      const sliceEnd = Math.min(addDuration(next, this.granularity!, -1), end);
      yield { [this.startField]: formatDatetime(start, this.format), [this.endField]: formatDatetime(sliceEnd, this.format) };
      if (next <= start) break;
      start = next;
    }
  }

  requestParts(interval: Interval, parts: RequestParts, vars: Vars): void {
    if (this.isDataFeed) return;
    const v = { ...vars, parameters: this.c.$parameters ?? vars.parameters };
    injectOption(parts, this.c.start_time_option, interval[this.startField], v);
    injectOption(parts, this.c.end_time_option, interval[this.endField], v);
  }

  /** The CDK keeps records inside the configured start/end only. */
  inBounds(record: Record<string, unknown>): boolean {
    const t = this.parse(record[this.cursorField]);
    if (t === undefined) return true;
    const start = this.configuredStart;
    const end = this.bound(this.c.end_datetime, 'end_datetime');
    return t >= start && (end === undefined || t <= end);
  }

  /** The larger of two cursor values (by time), kept in the record's own text form. */
  max(a: unknown, b: unknown): unknown {
    if (a === undefined || a === null) return b;
    if (b === undefined || b === null) return a;
    const ta = this.parse(a);
    const tb = this.parse(b);
    if (ta === undefined) return b;
    if (tb === undefined) return a;
    return tb > ta ? b : a;
  }
}
