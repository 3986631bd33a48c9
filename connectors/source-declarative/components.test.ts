// Single components and manifest resolution, each with a small manifest written in the test and
// a local HTTP server: $ref / *ref / $parameters, unsupported components, request options and
// bodies, DpathExtractor wildcards, error-handler actions and backoff, per-partition state,
// is_data_feed.
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { scratchDir, testContext } from '../../src/testing/index.ts';
import source from './index.ts';
import { loadManifest } from './manifest.ts';

interface Req {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, unknown>;
  body: string;
}
const servers: { close(): void }[] = [];
afterEach(() => {
  while (servers.length) servers.pop()!.close();
});

async function server(handle: (req: Req, res: ServerResponse) => void): Promise<{ url: string; requests: Req[] }> {
  const requests: Req[] = [];
  const s = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const u = new URL(req.url!, 'http://x');
      const r = { method: req.method!, path: u.pathname, query: Object.fromEntries(u.searchParams), headers: req.headers, body };
      requests.push(r);
      handle(r, res);
    });
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  servers.push(s);
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, requests };
}
const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

function manifestFile(yaml: string): { dir: string; file: string } {
  const dir = scratchDir('sluice-declarative-');
  writeFileSync(join(dir, 'm.yaml'), yaml);
  return { dir, file: join(dir, 'm.yaml') };
}

async function read(
  yaml: string,
  config: Record<string, unknown>,
  opts: { incremental?: boolean; state?: Record<string, Record<string, unknown>> } = {},
) {
  const { dir } = manifestFile(yaml);
  const ctx = testContext({ baseDir: dir });
  const cfg = { manifest: 'm.yaml', config };
  const v = await source.validateConfig!(cfg, { baseDir: dir });
  if (v.problems.length) throw new Error(v.problems.map((p) => p.message).join('\n'));
  const catalog = await source.discover(cfg, ctx);
  const records: Record<string, unknown>[] = [];
  const states: Record<string, unknown>[] = [];
  const configured = {
    streams: catalog.streams.map((s) => ({
      stream: s,
      sync_mode: (opts.incremental ? 'incremental' : 'full_refresh') as 'incremental' | 'full_refresh',
      destination_sync_mode: 'append_dedup' as const,
    })),
  };
  for await (const m of source.read(cfg, configured, opts.state ? { streams: opts.state } : undefined, ctx)) {
    if (m.type === 'RECORD') records.push(m.record.data);
    if (m.type === 'STATE') states.push(m.state.stream!.stream_state!);
  }
  return { records, states, catalog, logs: ctx.logs };
}

const stream = (retriever: string, extra = '') => `
version: 6.7.0
type: DeclarativeSource
streams:
  - type: DeclarativeStream
    name: items
    primary_key: id
${extra}
    retriever:
${retriever}
`;

describe('manifest resolution', () => {
  it('$ref with sibling overrides, *ref strings, default types and $parameters propagation', () => {
    const { file, dir } = manifestFile(`
version: 6.7.0
definitions:
  requester:
    url_base: https://api.example.com/v1
    http_method: GET
    request_headers: { X-Kind: base }
  base:
    retriever:
      requester:
        $ref: "#/definitions/requester"
        request_headers: { X-Kind: override }
      record_selector:
        extractor:
          field_path: ["{{ parameters.data_key }}"]
  named:
    $ref: "#/definitions/base"
    $parameters: { name: events, path: /events, data_key: events }
streams:
  - $ref: "#/definitions/base"
    $parameters: { name: users, path: /users, data_key: users, primary_key: id }
  - "*ref(definitions.named)"
`);
    const m = loadManifest(file, dir);
    const [a] = m.streams;
    expect(a.type).toBe('DeclarativeStream');
    expect(a.name).toBe('users');
    expect(a.primary_key).toBe('id');
    expect(a.retriever.type).toBe('SimpleRetriever');
    expect(a.retriever.requester.type).toBe('HttpRequester');
    expect(a.retriever.requester.path).toBe('/users');
    expect(a.retriever.requester.url_base).toBe('https://api.example.com/v1');
    expect(a.retriever.requester.request_headers).toEqual({ 'X-Kind': 'override' });
    expect(a.retriever.record_selector.extractor.type).toBe('DpathExtractor');
    expect(a.retriever.record_selector.extractor.$parameters.data_key).toBe('users');
    expect(m.streams[1].name).toBe('events');
    expect(m.streams[1].retriever.requester.path).toBe('/events');
    expect(m.streams[1].retriever.requester.url_base).toBe('https://api.example.com/v1');
  });

  it('names the component type and YAML path of anything unsupported', () => {
    const { file, dir } = manifestFile(`
version: 6.7.0
definitions:
  ok:
    type: DeclarativeStream
    retriever:
      requester: { url_base: "https://x", path: /a }
streams:
  - { $ref: "#/definitions/ok", name: a }
  - { $ref: "#/definitions/ok", name: b }
  - $ref: "#/definitions/ok"
    name: c
    retriever:
      requester: { url_base: "https://x", path: /c }
      record_selector:
        extractor: { type: CustomRecordExtractor, class_name: source_x.components.Extractor }
  - $ref: "#/definitions/ok"
    name: d
    retriever:
      requester: { url_base: "https://x", path: /d }
      paginator: { type: CustomPaginator, class_name: source_x.components.Pager }
  - type: DeclarativeStream
    name: e
    retriever: { type: AsyncRetriever }
  - $ref: "#/definitions/ok"
    name: f
    retriever:
      requester: { url_base: "https://x", path: "{{ config['x'] " }
`);
    let message = '';
    try {
      loadManifest(file, dir);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.split('\n')).toEqual([
      `DeclarativeStream "c" at streams[2].retriever.record_selector.extractor: unsupported component 'CustomRecordExtractor' (needs Python code: source_x.components.Extractor)`,
      `DeclarativeStream "d" at streams[3].retriever.paginator: unsupported component 'CustomPaginator' (needs Python code: source_x.components.Pager)`,
      `DeclarativeStream "e" at streams[4].retriever: unsupported component 'AsyncRetriever' (asynchronous report jobs are not implemented in sluice)`,
      expect.stringMatching(
        /^DeclarativeStream "f" at streams\[5\]\.retriever\.requester\.path: invalid Jinja expression "\{\{ config\['x'\] ": /,
      ),
    ]);
  });
});

describe('requests', () => {
  it('POST with request_body_json, body_json and header options, NoAuth, NoPagination, wildcard extraction', async () => {
    const api = await server((req, res) =>
      json(res, 200, { groups: [{ members: [{ id: 1 }, { id: 2 }] }, { members: [{ id: 3 }] }], next: null }),
    );
    const r = await read(
      stream(`
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${api.url}"
        path: /search
        http_method: POST
        authenticator: { type: NoAuth }
        request_headers: { X-Team: "{{ config.team }}" }
        request_body_json:
          query: "{{ config.query }}"
          filter: { since: "{{ config.since }}" }
      paginator: { type: NoPagination }
      record_selector:
        extractor: { field_path: [groups, "*", members] }
`),
      { team: 'core', query: 'status:open', since: '2024-01-01' },
    );
    expect(r.records).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
    expect(api.requests).toHaveLength(1);
    expect(api.requests[0].method).toBe('POST');
    expect(api.requests[0].headers['x-team']).toBe('core');
    expect(api.requests[0].headers['content-type']).toBe('application/json');
    expect(JSON.parse(api.requests[0].body)).toEqual({ query: 'status:open', filter: { since: '2024-01-01' } });
  });

  it('request_body_data as a form and OffsetIncrement injected into body_json from the first request', async () => {
    const api = await server((req, res) => {
      const offset = JSON.parse(req.body || '{}').page?.offset ?? 0;
      json(res, 200, { data: Array.from({ length: offset < 4 ? 2 : 1 }, (_, i) => ({ id: offset + i })) });
    });
    const r = await read(
      stream(`
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${api.url}"
        path: /list
        http_method: POST
        authenticator: { type: BearerAuthenticator, api_token: "{{ config.token }}" }
      paginator:
        type: DefaultPaginator
        pagination_strategy: { type: OffsetIncrement, page_size: 2, inject_on_first_request: true }
        page_token_option: { type: RequestOption, inject_into: body_json, field_path: [page, offset] }
        page_size_option: { type: RequestOption, inject_into: body_json, field_name: limit }
      record_selector:
        extractor: { field_path: [data] }
`),
      { token: 'tkn-abc-123' },
    );
    expect(r.records.map((x) => x.id)).toEqual([0, 1, 2, 3, 4]);
    expect(api.requests.map((q) => JSON.parse(q.body))).toEqual([
      { limit: 2, page: { offset: 0 } },
      { limit: 2, page: { offset: 2 } },
      { limit: 2, page: { offset: 4 } },
    ]);
    expect(api.requests[0].headers.authorization).toBe('Bearer tkn-abc-123');

    const form = await server((req, res) => json(res, 200, [{ id: 1, got: req.body }]));
    const f = await read(
      stream(`
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${form.url}"
        http_method: POST
        request_body_data: { grant: "{{ config.kind }}", n: "{{ 1 + 2 }}" }
      record_selector:
        extractor: { field_path: [] }
`),
      { kind: 'all' },
    );
    expect(f.records).toEqual([{ id: 1, got: 'grant=all&n=3' }]);
    expect(form.requests[0].headers['content-type']).toBe('application/x-www-form-urlencoded');
  });
});

describe('error handler', () => {
  it('IGNORE by predicate, FAIL by error_message_contains, RETRY with constant and exponential backoff', async () => {
    let calls = 0;
    const api = await server((req, res) => {
      calls++;
      if (req.path === '/gone') return json(res, 404, { error: 'resource archived' });
      if (req.path === '/flaky' && calls % 3 !== 0) return json(res, 503, { error: 'busy' });
      if (req.path === '/broken') return json(res, 200, { error: { code: 'QUOTA', message: 'quota exhausted' } });
      json(res, 200, [{ id: req.path }]);
    });
    const yaml = (path: string, backoff: string) =>
      stream(`
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${api.url}"
        path: ${path}
        error_handler:
          type: DefaultErrorHandler
          max_retries: 4
          backoff_strategies: [${backoff}]
          response_filters:
            - type: HttpResponseFilter
              action: IGNORE
              predicate: "{{ 'archived' in response.error }}"
            - type: HttpResponseFilter
              action: FAIL
              error_message_contains: QUOTA
              error_message: "quota used up: {{ response.error.message }}"
      record_selector:
        extractor: { field_path: [] }
`);
    expect((await read(yaml('/gone', '{ type: ConstantBackoffStrategy, backoff_time_in_seconds: 0.01 }'), {})).records).toEqual([]);
    calls = 0;
    const t0 = Date.now();
    expect((await read(yaml('/flaky', '{ type: ConstantBackoffStrategy, backoff_time_in_seconds: 0.2 }'), {})).records).toEqual([
      { id: '/flaky' },
    ]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(380); // two waits of 0.2 s
    calls = 0;
    const t1 = Date.now();
    await read(yaml('/flaky', '{ type: ExponentialBackoffStrategy, factor: 0.05 }'), {});
    expect(Date.now() - t1).toBeGreaterThanOrEqual(290); // 0.05·2 + 0.05·4 s
    await expect(read(yaml('/broken', '{ type: ConstantBackoffStrategy, backoff_time_in_seconds: 0.01 }'), {})).rejects.toThrow(
      /quota used up: quota exhausted/,
    );
  });

  it('gives up after max_retries with the status it kept getting', async () => {
    const api = await server((_req, res) => json(res, 500, { error: 'down' }));
    await expect(
      read(
        stream(`
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${api.url}"
        error_handler: { type: DefaultErrorHandler, max_retries: 2, backoff_strategies: [{ type: ConstantBackoffStrategy, backoff_time_in_seconds: 0.01 }] }
`),
        {},
      ),
    ).rejects.toThrow(/failed after 3 attempts: HTTP 500/);
    expect(api.requests).toHaveLength(3);
  });
});

describe('incremental', () => {
  const events = [
    { id: 'a1', team: 'a', at: '2024-05-01' },
    { id: 'a2', team: 'a', at: '2024-05-03' },
    { id: 'b1', team: 'b', at: '2024-05-02' },
  ];
  const partitioned = (url: string) =>
    stream(
      `
      type: SimpleRetriever
      requester:
        type: HttpRequester
        url_base: "${url}"
        path: "/teams/{{ stream_partition.team }}/events"
        request_parameters: { since: "{{ stream_interval.start_time }}" }
      record_selector:
        extractor: { field_path: [events] }
      partition_router:
        type: ListPartitionRouter
        values: [a, b]
        cursor_field: team
`,
      `    incremental_sync:
      type: DatetimeBasedCursor
      cursor_field: at
      datetime_format: "%Y-%m-%d"
      start_datetime: "{{ config.start }}"
      end_datetime: "2024-06-01"`,
    );

  it('keeps one cursor per partition and resumes each from its own', async () => {
    const api = await server((req, res) => {
      const team = req.path.split('/')[2];
      json(res, 200, { events: events.filter((e) => e.team === team && e.at >= req.query.since) });
    });
    const first = await read(partitioned(api.url), { start: '2024-04-01' }, { incremental: true });
    expect(first.records.map((r) => r.id)).toEqual(['a1', 'a2', 'b1']);
    const last = first.states[first.states.length - 1];
    expect(last).toEqual({
      states: [
        { partition: { team: 'a' }, cursor: { at: '2024-05-03' } },
        { partition: { team: 'b' }, cursor: { at: '2024-05-02' } },
      ],
    });
    api.requests.length = 0;
    await read(partitioned(api.url), { start: '2024-04-01' }, { incremental: true, state: { items: last } });
    expect(api.requests.map((q) => `${q.path}?since=${q.query.since}`)).toEqual([
      '/teams/a/events?since=2024-05-03',
      '/teams/b/events?since=2024-05-02',
    ]);
  });

  it('is_data_feed stops paging at the first record older than the saved state', async () => {
    const feed = Array.from({ length: 10 }, (_, i) => ({ id: i, at: `2024-05-${String(20 - i).padStart(2, '0')}T00:00:00Z` }));
    const api = await server((req, res) => {
      const page = Number(req.query.page ?? 0);
      json(res, 200, { items: feed.slice(page * 3, page * 3 + 3) });
    });
    const yaml = stream(
      `
      type: SimpleRetriever
      requester: { type: HttpRequester, url_base: "${api.url}" }
      paginator:
        type: DefaultPaginator
        pagination_strategy: { type: PageIncrement, page_size: 3 }
        page_token_option: { type: RequestOption, inject_into: request_parameter, field_name: page }
      record_selector:
        extractor: { field_path: [items] }
`,
      `    incremental_sync:
      type: DatetimeBasedCursor
      cursor_field: at
      is_data_feed: true
      datetime_format: "%Y-%m-%dT%H:%M:%SZ"
      start_datetime: "2024-01-01T00:00:00Z"`,
    );
    const first = await read(yaml, {}, { incremental: true });
    expect(first.records).toHaveLength(10);
    expect(first.states[first.states.length - 1]).toEqual({ at: '2024-05-20T00:00:00Z' });
    api.requests.length = 0;
    await read(yaml, {}, { incremental: true, state: { items: { at: '2024-05-16T12:00:00Z' } } });
    // Page 0 holds 20..18, page 1 holds 17..15: 15 is older than the state, so no page 2.
    expect(api.requests.map((q) => q.query.page ?? '0')).toEqual(['0', '1']);
  });

  it('discover: incremental streams have a source-defined cursor; schemas and keys come from the manifest', async () => {
    const api = await server((_req, res) => json(res, 200, { events: [] }));
    const { catalog } = await read(partitioned(api.url), { start: '2024-04-01' });
    expect(catalog.streams).toEqual([
      {
        name: 'items',
        json_schema: { type: 'object', properties: {}, additionalProperties: true },
        supported_sync_modes: ['full_refresh', 'incremental'],
        source_defined_cursor: true,
        default_cursor_field: ['at'],
        source_defined_primary_key: [['id']],
      },
    ]);
  });
});
