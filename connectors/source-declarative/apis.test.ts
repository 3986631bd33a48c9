// The declarative source against local APIs shaped like real ones, with manifests shaped like
// published ones (test/manifests): what it asks for, what it reads, the states it emits, resuming.
import { afterEach, describe, expect, it } from 'vitest';
import { githubApi, newsApi, ticketApi, wikiApi, type Api, type Article, type Issue, type Ticket } from './test/apis.ts';
import { checkSource, discoverSource, readSource } from './test/read.ts';

const open: Api[] = [];
afterEach(async () => {
  while (open.length) await open.pop()!.close();
});
const track = <T extends Api>(api: T): T => {
  open.push(api);
  return api;
};

describe('Confluence-like wiki (basic auth, _links.next cursor, child stream of page bodies)', () => {
  const pages = Array.from({ length: 7 }, (_, i) => ({ id: String(100 + i), title: `Page ${i}`, body: `<p>Body of page ${i}</p>` }));
  const config = (url: string, token = 'wiki-token-123456') => ({ api_url: url, email: 'me@example.com', api_token: token });

  it('reads every page through the cursor links and each page body as a child record', async () => {
    const api = track(await wikiApi({ email: 'me@example.com', token: 'wiki-token-123456', pages }));
    const r = await readSource('wiki.yaml', config(api.url));
    expect(r.records.pages!.map((p) => p.id)).toEqual(pages.map((p) => p.id));
    expect(r.records.pages![0]).toEqual({ id: '100', title: 'Page 0', type: 'page', _links: { webui: '/pages/100' } });
    // Page size 3 → 3 list requests per read of `pages`; the 2nd and 3rd follow _links.next.
    const lists = api.requests.filter((q) => q.path === '/wiki/rest/api/content');
    expect(lists.slice(0, 3).map((q) => q.query)).toEqual([
      { limit: '3' },
      { limit: '3', cursor: Buffer.from('3').toString('base64url') },
      { limit: '3', cursor: Buffer.from('6').toString('base64url') },
    ]);
    expect(
      api.requests.every((q) => q.headers.authorization === `Basic ${Buffer.from('me@example.com:wiki-token-123456').toString('base64')}`),
    ).toBe(true);
    // Child stream: AddFields content from the body, RemoveFields body.
    expect(r.records.page_bodies).toEqual(pages.map((p) => ({ id: p.id, title: p.title, content: p.body })));
    const bodies = api.requests.filter((q) => /content\/\d+$/.test(q.path));
    expect(bodies.map((q) => q.path)).toEqual(pages.map((p) => `/wiki/rest/api/content/${p.id}`));
    expect(bodies.every((q) => q.query.expand === 'body.storage')).toBe(true);
  });

  it('check reads the first page; wrong credentials fail the check with the API status', async () => {
    const api = track(await wikiApi({ email: 'me@example.com', token: 'wiki-token-123456', pages }));
    expect(await checkSource('wiki.yaml', config(api.url))).toMatchObject({ ok: true });
    // The schema of page_bodies comes from a JsonFileSchemaLoader file next to the manifest.
    const catalog = await discoverSource('wiki.yaml', config(api.url));
    expect(catalog.streams.find((s) => s.name === 'page_bodies')!.json_schema).toEqual({
      type: 'object',
      properties: { id: { type: 'string' }, title: { type: 'string' }, content: { type: 'string' } },
    });
    expect(api.requests).toHaveLength(1);
    const bad = await checkSource('wiki.yaml', config(api.url, 'wrong-token-999'));
    expect(bad.ok).toBe(false);
    expect(bad.message).toMatch(/HTTP 401/);
    expect(bad.message).toMatch(/check the credentials/);
  });
});

describe('news API (key in the query, DatetimeBasedCursor with step and lookback, 429 + Retry-After)', () => {
  const articles: Article[] = [
    ['a1', '2024-01-02T08:00:00Z'],
    ['a2', '2024-01-05T09:00:00Z'],
    ['a3', '2024-01-05T10:00:00Z'],
    ['a4', '2024-01-09T00:00:00Z'],
    ['a5', '2024-01-12T12:00:00Z'],
    ['a6', '2024-01-20T23:59:59Z'],
    ['a7', '2024-01-25T06:30:00Z'],
  ].map(([id, at]) => ({ url: `https://news.example/${id}`, title: `Title ${id}`, description: `About ${id}`, publishedAt: at }));
  const config = (url: string) => ({
    api_url: url,
    api_key: 'news-key-abcdef',
    search_query: 'sluice',
    start_date: '2024-01-01',
    end_date: '2024-01-31T00:00:00Z',
  });

  it('reads 10-day windows page by page, waits out a 429, and checkpoints each window', async () => {
    const api = track(await newsApi({ apiKey: 'news-key-abcdef', articles, rateLimitFirst: 1 }));
    const started = Date.now();
    const r = await readSource('news.yaml', config(api.url), { incremental: true });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900); // Retry-After: 1
    expect(r.records.articles!.map((a) => String(a.url).split('/').pop())).toEqual(['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7']);
    const windows = api.requests.filter((q) => q.query.page === '1').map((q) => [q.query.from, q.query.to]);
    // As in the CDK, the lookback applies to the configured start too (2024-01-01 less P1D).
    expect(windows).toEqual([
      ['2023-12-31T00:00:00Z', '2024-01-09T23:59:59Z'], // the 429, retried
      ['2023-12-31T00:00:00Z', '2024-01-09T23:59:59Z'],
      ['2024-01-10T00:00:00Z', '2024-01-19T23:59:59Z'],
      ['2024-01-20T00:00:00Z', '2024-01-29T23:59:59Z'],
      ['2024-01-30T00:00:00Z', '2024-01-31T00:00:00Z'],
    ]);
    const q = api.requests[1].query;
    expect(q).toMatchObject({ apiKey: 'news-key-abcdef', q: 'sluice', language: 'en', sortBy: 'publishedAt', pageSize: '2', page: '1' });
    // Window 1 has 4 articles → pages 1, 2 and an empty 3 (after the rate-limited first try).
    expect(api.requests.filter((x) => x.query.from === '2023-12-31T00:00:00Z').map((x) => x.query.page)).toEqual(['1', '1', '2', '3']);
    // A state after each window that had records: the highest publishedAt so far.
    expect(r.states.articles).toEqual([
      { publishedAt: '2024-01-09T00:00:00Z' },
      { publishedAt: '2024-01-12T12:00:00Z' },
      { publishedAt: '2024-01-25T06:30:00Z' },
    ]);
  });

  it('resumes from the state less the lookback window, and sees new articles', async () => {
    const api = track(await newsApi({ apiKey: 'news-key-abcdef', articles: [...articles] }));
    const first = await readSource('news.yaml', config(api.url), { incremental: true });
    api.requests.length = 0;
    api.articles.push({ url: 'https://news.example/a8', title: 'Title a8', description: 'late', publishedAt: '2024-01-26T00:00:00Z' });
    const second = await readSource('news.yaml', config(api.url), { incremental: true, state: first.state });
    // State 2024-01-25T06:30:00Z, lookback P1D → from 2024-01-24T06:30:00Z.
    expect(api.requests[0].query.from).toBe('2024-01-24T06:30:00Z');
    expect(second.records.articles!.map((a) => String(a.url).split('/').pop())).toEqual(['a7', 'a8']);
    expect(second.state.streams.articles).toEqual({ publishedAt: '2024-01-26T00:00:00Z' });
  });

  it('a rejected key fails with the filter message and never shows the key', async () => {
    const api = track(await newsApi({ apiKey: 'news-key-abcdef', articles }));
    const r = await checkSource('news.yaml', { ...config(api.url), api_key: 'stolen-key-000000' });
    expect(r.ok).toBe(false);
    expect(r.message).toContain('the API key was rejected');
    expect(r.message).not.toContain('stolen-key-000000');
  });
});

describe('ticketing API (OAuth refresh, offsets, substream with incremental_dependency)', () => {
  const ticket = (id: number, at: string): Ticket => ({
    id,
    subject: `Ticket ${id}`,
    description: `Problem ${id}`,
    updated_at: at,
    comments: [
      { id: id * 10 + 1, body: `first reply to ${id}` },
      { id: id * 10 + 2, body: `second reply to ${id}` },
    ],
  });
  const creds = { client_id: 'cid', client_secret: 'csecret-123456', refresh_token: 'rtoken-123456' };
  const config = (url: string) => ({ api_url: url, start_date: '2024-01-01T00:00:00Z', credentials: creds });

  it('refreshes the OAuth token when the API answers 401, and reads tickets by offset', async () => {
    const api = track(
      await ticketApi({
        clientId: 'cid',
        clientSecret: 'csecret-123456',
        refreshToken: 'rtoken-123456',
        callsPerToken: 2,
        tickets: [1, 2, 3, 4, 5].map((i) => ticket(i, `2024-02-0${i}T10:00:00Z`)),
      }),
    );
    const r = await readSource('tickets.yaml', config(api.url), { incremental: true, streams: ['tickets'] });
    expect(r.records.tickets!.map((t) => t.id)).toEqual([1, 2, 3, 4, 5]);
    expect(api.tokensIssued()).toBeGreaterThanOrEqual(2);
    const reads = api.requests.filter((q) => q.path === '/api/v2/tickets' && q.headers.authorization !== undefined);
    expect(reads.every((q) => q.query.updated_since === '2024-01-01T00:00:00Z' && q.query.limit === '2')).toBe(true);
    const refresh = api.requests.find((q) => q.path === '/oauth/token')!;
    expect(Object.fromEntries(new URLSearchParams(refresh.body))).toEqual({
      grant_type: 'refresh_token',
      client_id: 'cid',
      client_secret: 'csecret-123456',
      refresh_token: 'rtoken-123456',
    });
    expect(r.state.streams.tickets).toEqual({ updated_at: '2024-02-05T10:00:00Z' });
  });

  it('child comments follow only the tickets changed since the saved parent state', async () => {
    const api = track(
      await ticketApi({
        clientId: 'cid',
        clientSecret: 'csecret-123456',
        refreshToken: 'rtoken-123456',
        callsPerToken: 100,
        tickets: [1, 2, 3, 4].map((i) => ticket(i, `2024-02-0${i}T10:00:00Z`)),
      }),
    );
    const first = await readSource('tickets.yaml', config(api.url), { incremental: true, streams: ['ticket_comments'] });
    expect(first.records.ticket_comments!.map((c) => [c.ticket_id, c.id])).toEqual([
      [1, 11],
      [1, 12],
      [2, 21],
      [2, 22],
      [3, 31],
      [3, 32],
      [4, 41],
      [4, 42],
    ]);
    expect(first.state.streams.ticket_comments).toEqual({ parent_state: { tickets: { updated_at: '2024-02-04T10:00:00Z' } } });

    api.requests.length = 0;
    const t2 = api.tickets.find((t) => t.id === 2)!;
    t2.updated_at = '2024-02-06T09:00:00Z';
    t2.comments.push({ id: 23, body: 'a new reply' });
    const second = await readSource('tickets.yaml', config(api.url), {
      incremental: true,
      streams: ['ticket_comments'],
      state: first.state,
    });
    const commentCalls = api.requests.filter((q) => q.path.endsWith('/comments')).map((q) => q.path);
    // Ticket 4 sits at the saved cursor (the API's `>=` returns it again) but the state covers it:
    // only the changed ticket 2 is asked for its comments.
    expect(commentCalls).toEqual(['/api/v2/tickets/2/comments']);
    expect(second.records.ticket_comments!.filter((c) => c.ticket_id === 2).map((c) => c.id)).toEqual([21, 22, 23]);
    expect(second.state.streams.ticket_comments).toEqual({ parent_state: { tickets: { updated_at: '2024-02-06T09:00:00Z' } } });
  });
});

describe('GitHub-like API (SelectiveAuthenticator, Link header pagination, ListPartitionRouter)', () => {
  const issue = (n: number, extra: Partial<Issue> = {}): Issue => ({
    number: n,
    title: `Issue ${n}`,
    body: `Body ${n}`,
    state: 'open',
    user: { login: `user${n}`, id: n },
    updated_at: `2024-03-0${n}T00:00:00Z`,
    ...extra,
  });

  it('pages through Link headers per repository, filters pull requests, adds and removes fields', async () => {
    const api = track(
      await githubApi({
        token: 'ghp_token_123456',
        repos: {
          'acme/api': [issue(1), issue(2, { pull_request: { url: 'x' } }), issue(3), issue(4), issue(5)],
          'acme/web': [issue(6)],
        },
      }),
    );
    const r = await readSource('github.yaml', {
      api_url: api.url,
      repositories: ['acme/api', 'acme/web'],
      credentials: { option_title: 'PAT Credentials', personal_access_token: 'ghp_token_123456' },
    });
    expect(r.records.issues!.map((i) => [i.repository, i.number])).toEqual([
      ['acme/api', 1],
      ['acme/api', 3],
      ['acme/api', 4],
      ['acme/api', 5],
      ['acme/web', 6],
    ]);
    expect(r.records.issues![0]).toEqual({
      number: 1,
      title: 'Issue 1',
      body: 'Body 1',
      state: 'open',
      updated_at: '2024-03-01T00:00:00Z',
      repository: 'acme/api',
      author: 'user1',
    });
    expect(api.requests.map((q) => `${q.path}?${new URLSearchParams(q.query)}`)).toEqual([
      '/repos/acme/api/issues?state=all&per_page=2',
      '/repos/acme/api/issues?per_page=2&page=2&state=all',
      '/repos/acme/api/issues?per_page=2&page=3&state=all',
      '/repos/acme/web/issues?state=all&per_page=2',
    ]);
  });

  it('the selected authenticator follows the config (OAuth branch)', async () => {
    const api = track(await githubApi({ token: 'gho_oauth_123456', repos: { 'acme/api': [issue(1)] } }));
    const r = await readSource('github.yaml', {
      api_url: api.url,
      repositories: ['acme/api'],
      credentials: { option_title: 'OAuth Credentials', access_token: 'gho_oauth_123456' },
    });
    expect(r.records.issues).toHaveLength(1);
    expect(api.requests[0].headers.authorization).toBe('Bearer gho_oauth_123456');
  });
});
