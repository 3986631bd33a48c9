// The Jinja expressions and macros manifests use, and the sandbox: a template sees only the
// variables it is given.
import { describe, expect, it, vi } from 'vitest';
import { formatDatetime, parseDatetime, parseDuration } from './datetime.ts';
import { evaluate, evaluateBoolean, evaluateMapping, evaluateString, templateError } from './interpolation.ts';

const vars = {
  config: {
    domain: 'acme.example',
    page_size: '50',
    user: 'me',
    password: 'pw',
    start_date: '2024-01-15T10:20:30Z',
    repos: ['a/b', 'c/d'],
  },
  parameters: { name: 'issues', path: '/issues' },
  stream_partition: { repository: 'a/b' },
  stream_slice: { repository: 'a/b', start_time: '2024-02-01T00:00:00Z', end_time: '2024-02-02T00:00:00Z' },
  stream_interval: { start_time: '2024-02-01T00:00:00Z', end_time: '2024-02-02T00:00:00Z' },
  stream_state: { updated_at: '2024-01-31T00:00:00Z' },
  next_page_token: { next_page_token: 'abc' },
  response: { _links: { next: '/page/2' }, meta: { has_more: false }, items: [1, 2] },
  last_record: { id: 7 },
  record: { id: 7, tags: ['x'] },
  headers: { link: { next: { url: 'https://api/x?page=2' } }, 'x-rate': '10' },
};

describe('variables', () => {
  it('reads every context variable', () => {
    expect(evaluate("https://{{ config['domain'] }}/api", vars)).toBe('https://acme.example/api');
    expect(evaluate('{{ parameters.path }}', vars)).toBe('/issues');
    expect(evaluate('{{ stream_partition.repository }}', vars)).toBe('a/b');
    expect(evaluate("{{ stream_slice['start_time'] }}", vars)).toBe('2024-02-01T00:00:00Z');
    expect(evaluate('{{ stream_interval.end_time }}', vars)).toBe('2024-02-02T00:00:00Z');
    expect(evaluate("{{ stream_state.get('updated_at') }}", vars)).toBe('2024-01-31T00:00:00Z');
    expect(evaluate("{{ next_page_token['next_page_token'] }}", vars)).toBe('abc');
    expect(evaluate("{{ response['_links']['next'] }}", vars)).toBe('/page/2');
    expect(evaluate('{{ last_record.id }}', vars)).toBe(7);
    expect(evaluate('{{ record.tags }}', vars)).toEqual(['x']);
    expect(evaluate("{{ headers['link']['next']['url'] }}", vars)).toBe('https://api/x?page=2');
    expect(evaluate("{{ headers['x-rate'] }}", vars)).toBe('10');
  });

  it('keeps the type of a single expression; renders mixed text; nothing → no value', () => {
    expect(evaluate("{{ config['repos'] }}", vars)).toEqual(['a/b', 'c/d']);
    expect(evaluate('{{ response.meta }}', vars)).toEqual({ has_more: false });
    expect(evaluate('page {{ 1 + 1 }}', vars)).toBe('page 2');
    expect(evaluate("{{ config['missing'] }}", vars)).toBeUndefined();
    expect(evaluate('no template', vars)).toBe('no template');
    expect(evaluateMapping({ a: "{{ config['missing'] }}", b: '{{ config.domain }}', '{{ parameters.name }}_n': 1 }, vars)).toEqual({
      b: 'acme.example',
      issues_n: 1,
    });
  });
});

describe('filters, tests and operators', () => {
  it('default, string, int, b64encode, is defined, in, ternaries', () => {
    expect(evaluate("{{ config['missing'] | default('fallback') }}", vars)).toBe('fallback');
    expect(evaluate("{{ config.get('missing', 25) }}", vars)).toBe(25);
    expect(evaluate('{{ record.id | string }}', vars)).toBe('7');
    expect(evaluate("{{ config['page_size'] | int + 1 }}", vars)).toBe(51);
    expect(evaluate("{{ (config['user'] + ':' + config['password']) | b64encode }}", vars)).toBe(Buffer.from('me:pw').toString('base64'));
    expect(evaluate('{{ config.missing is defined }}', vars)).toBe(false);
    expect(evaluate('{{ config.domain is defined }}', vars)).toBe(true);
    expect(evaluate("{{ 'next' in response._links }}", vars)).toBe(true);
    expect(evaluate("{{ 'x' not in record.tags }}", vars)).toBe(false);
    expect(evaluate("{{ 'more' if response.meta.has_more else 'done' }}", vars)).toBe('done');
    expect(evaluateBoolean("{{ not response['meta']['has_more'] }}", vars)).toBe(true);
    expect(evaluateBoolean('{{ response.items | length > 5 }}', vars)).toBe(false);
    expect(evaluateBoolean('False', vars)).toBe(false);
    expect(evaluateString('{{ record.tags }}', vars)).toBe('["x"]');
  });
});

describe('macros', () => {
  it('now_utc, today_utc, day_delta, duration arithmetic', () => {
    vi.useFakeTimers({ now: Date.parse('2024-03-10T12:34:56.789Z') });
    try {
      expect(evaluate("{{ now_utc().strftime('%Y-%m-%dT%H:%M:%SZ') }}", vars)).toBe('2024-03-10T12:34:56Z');
      expect(evaluate('{{ now_utc() }}', vars)).toBe('2024-03-10 12:34:56.789000+00:00');
      expect(evaluate('{{ now_utc().isoformat() }}', vars)).toBe('2024-03-10T12:34:56.789000+00:00');
      expect(evaluate('{{ today_utc() }}', vars)).toBe('2024-03-10');
      expect(evaluate("{{ day_delta(-1, format='%Y-%m-%d') }}", vars)).toBe('2024-03-09');
      expect(evaluate('{{ day_delta(2) }}', vars)).toBe('2024-03-12T12:34:56.789000+0000');
      expect(evaluate("{{ (now_utc() - duration('P1DT2H')).strftime('%Y-%m-%d %H') }}", vars)).toBe('2024-03-09 10');
      expect(evaluate("{{ (today_utc() - duration('P1M')) }}", vars)).toBe('2024-02-10');
    } finally {
      vi.useRealTimers();
    }
  });

  it('format_datetime, str_to_datetime, timestamp, max, min', () => {
    expect(evaluate("{{ format_datetime(config['start_date'], '%Y/%m/%d') }}", vars)).toBe('2024/01/15');
    expect(evaluate("{{ format_datetime('15.01.2024', '%Y-%m-%d', '%d.%m.%Y') }}", vars)).toBe('2024-01-15');
    expect(evaluate("{{ format_datetime(stream_interval.start_time, '%s') }}", vars)).toBe('1706745600');
    expect(evaluate("{{ format_datetime(stream_interval.start_time, '%ms') }}", vars)).toBe('1706745600000');
    expect(evaluate("{{ str_to_datetime('2024-01-15') }}", vars)).toBe('2024-01-15 00:00:00+00:00');
    expect(evaluate("{{ str_to_datetime('2024-01-15T10:00:00+02:00').strftime('%H') }}", vars)).toBe('08');
    expect(evaluate("{{ str_to_datetime(config.start_date) > str_to_datetime('2024-01-01') }}", vars)).toBe(true);
    expect(evaluate("{{ timestamp('2024-01-01T00:00:00Z') }}", vars)).toBe(1704067200);
    expect(evaluate('{{ timestamp(1704067200.9) }}', vars)).toBe(1704067200);
    expect(evaluate('{{ max(1, 5, 3) }}', vars)).toBe(5);
    expect(evaluate("{{ min('2024-02-01', stream_state.updated_at) }}", vars)).toBe('2024-01-31T00:00:00Z');
  });
});

describe('sandbox', () => {
  it('templates cannot reach the process, the environment, files or JS internals', () => {
    process.env.SLUICE_TEST_SECRET = 'do-not-leak';
    for (const t of [
      '{{ process }}',
      '{{ env }}',
      '{{ environ }}',
      '{{ config.constructor }}',
      "{{ ''.constructor }}",
      '{{ config.__proto__ }}',
      "{{ open('/etc/passwd') }}",
      '{{ require }}',
      '{{ globalThis }}',
    ]) {
      let out: unknown;
      try {
        out = evaluate(t, vars);
      } catch (err) {
        out = (err as Error).message;
      }
      expect(JSON.stringify(out ?? null)).not.toMatch(/do-not-leak|root:x|\[native code\]|=>/);
    }
    delete process.env.SLUICE_TEST_SECRET;
  });

  it('reports syntax errors (for sluice validate)', () => {
    expect(templateError("{{ config['x'] ")).toMatch(/./);
    expect(templateError("{{ config['x'] }}")).toBeUndefined();
  });
});

describe('datetime formats and durations', () => {
  it('strftime / strptime round trips and ISO 8601 durations', () => {
    const t = Date.parse('2024-07-04T05:06:07.089Z');
    expect(formatDatetime(t, '%Y-%m-%dT%H:%M:%S.%f%z')).toBe('2024-07-04T05:06:07.089000+0000');
    expect(formatDatetime(t, '%d %b %Y, %I %p (day %j)')).toBe('04 Jul 2024, 05 AM (day 186)');
    expect(parseDatetime('2024-07-04T05:06:07.089000+0000', '%Y-%m-%dT%H:%M:%S.%f%z')).toBe(t);
    expect(parseDatetime('2024-07-04T07:06:07+02:00', '%Y-%m-%dT%H:%M:%S%z')).toBe(Date.parse('2024-07-04T05:06:07Z'));
    expect(parseDatetime('1720069567', '%s')).toBe(Date.parse('2024-07-04T05:06:07Z'));
    expect(parseDatetime('2024-07-04', '%Y-%m-%dT%H')).toBeUndefined();
    expect(parseDuration('P1Y2M3DT4H5M6S')).toEqual({ months: 14, ms: ((3 * 24 + 4) * 3600 + 5 * 60 + 6) * 1000 });
    expect(parseDuration('PT0.5S')).toEqual({ months: 0, ms: 500 });
    expect(parseDuration('1 day')).toBeUndefined();
  });
});
