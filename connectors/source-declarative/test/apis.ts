// Local HTTP APIs on 127.0.0.1 that behave like the real ones the test manifests are shaped after:
// a Confluence-like wiki, a news API, a ticketing API with OAuth, and a GitHub-like API. Each keeps
// a request log so tests can assert what was asked (auth, query parameters, page tokens).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LoggedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface Api {
  url: string;
  requests: LoggedRequest[];
  close(): Promise<void>;
}

type Handler = (req: LoggedRequest, res: ServerResponse) => void;

async function serve(handler: Handler): Promise<Api> {
  const requests: LoggedRequest[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      const logged: LoggedRequest = {
        method: req.method ?? 'GET',
        path: u.pathname,
        query: Object.fromEntries(u.searchParams),
        headers: req.headers,
        body,
      };
      requests.push(logged);
      try {
        handler(logged, res);
      } catch (err) {
        res.writeHead(500).end(String(err));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};

// ---- Confluence-like wiki: basic auth, cursor pagination via _links.next, page bodies ---------------

export interface WikiPage {
  id: string;
  title: string;
  body: string;
}

export async function wikiApi(opts: { email: string; token: string; pages: WikiPage[] }): Promise<Api & { pages: WikiPage[] }> {
  const auth = `Basic ${Buffer.from(`${opts.email}:${opts.token}`).toString('base64')}`;
  const data = { pages: opts.pages };
  const api = await serve((req, res) => {
    if (req.headers.authorization !== auth) return json(res, 401, { message: 'Unauthorized' });
    const list = /^\/wiki\/rest\/api\/content$/.exec(req.path);
    if (list) {
      const limit = Number(req.query.limit ?? 25);
      const start = req.query.cursor ? Number(Buffer.from(req.query.cursor, 'base64url').toString()) : 0;
      const results = data.pages
        .slice(start, start + limit)
        .map((p) => ({ id: p.id, title: p.title, type: 'page', _links: { webui: `/pages/${p.id}` } }));
      const links: Record<string, string> = { base: `${api.url}/wiki` };
      if (start + limit < data.pages.length)
        links.next = `/rest/api/content?limit=${limit}&cursor=${Buffer.from(String(start + limit)).toString('base64url')}`;
      return json(res, 200, { results, size: results.length, _links: links });
    }
    const one = /^\/wiki\/rest\/api\/content\/([^/]+)$/.exec(req.path);
    if (one) {
      const p = data.pages.find((x) => x.id === one[1]);
      if (!p) return json(res, 404, { message: 'not found' });
      return json(res, 200, { id: p.id, title: p.title, body: { storage: { value: p.body, representation: 'storage' } } });
    }
    json(res, 404, { message: 'no route' });
  });
  return Object.assign(api, { pages: data.pages });
}

// ---- news API: key in the query, time-window filters, page numbers, a 429 with Retry-After ----------

export interface Article {
  url: string;
  title: string;
  description: string;
  publishedAt: string;
}

export async function newsApi(opts: {
  apiKey: string;
  articles: Article[];
  rateLimitFirst?: number;
}): Promise<Api & { articles: Article[] }> {
  let limited = opts.rateLimitFirst ?? 0;
  const data = { articles: opts.articles };
  const api = await serve((req, res) => {
    if (req.path !== '/v2/everything') return json(res, 404, { status: 'error' });
    if (req.query.apiKey !== opts.apiKey) return json(res, 401, { status: 'error', code: 'apiKeyInvalid' });
    if (limited > 0) {
      limited--;
      return json(res, 429, { status: 'error', code: 'rateLimited' }, { 'retry-after': '1' });
    }
    const from = Date.parse(req.query.from);
    const to = Date.parse(req.query.to);
    const pageSize = Number(req.query.pageSize ?? 100);
    const page = Number(req.query.page ?? 1);
    const hits = data.articles
      .filter((a) => Date.parse(a.publishedAt) >= from && Date.parse(a.publishedAt) <= to)
      .sort((a, b) => Date.parse(a.publishedAt) - Date.parse(b.publishedAt));
    json(res, 200, { status: 'ok', totalResults: hits.length, articles: hits.slice((page - 1) * pageSize, page * pageSize) });
  });
  return Object.assign(api, { articles: data.articles });
}

// ---- ticketing API: OAuth refresh (tokens expire after N calls → 401), offsets, comments per ticket --

export interface Ticket {
  id: number;
  subject: string;
  description: string;
  updated_at: string;
  comments: { id: number; body: string }[];
}

export async function ticketApi(opts: {
  clientId: string;
  clientSecret: string;
  refreshToken: string;
  tickets: Ticket[];
  /** A token stops working after this many API calls (the API answers 401). */
  callsPerToken: number;
}): Promise<Api & { tickets: Ticket[]; tokensIssued: () => number }> {
  let issued = 0;
  const tokens = new Map<string, number>();
  const data = { tickets: opts.tickets };
  const api = await serve((req, res) => {
    if (req.path === '/oauth/token' && req.method === 'POST') {
      const form = new URLSearchParams(req.body);
      if (
        form.get('grant_type') !== 'refresh_token' ||
        form.get('client_id') !== opts.clientId ||
        form.get('client_secret') !== opts.clientSecret ||
        form.get('refresh_token') !== opts.refreshToken
      )
        return json(res, 400, { error: 'invalid_grant' });
      const token = `tok-${++issued}`;
      tokens.set(token, opts.callsPerToken);
      // Claims a long life; the API still revokes it early (as real ones do on rotation).
      return json(res, 200, { access_token: token, expires_in: 3600, token_type: 'bearer' });
    }
    const token = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''))?.[1];
    const left = token ? tokens.get(token) : undefined;
    if (!token || left === undefined || left <= 0) return json(res, 401, { error: 'invalid_token' });
    tokens.set(token, left - 1);
    if (req.path === '/api/v2/tickets') {
      const since = req.query.updated_since ? Date.parse(req.query.updated_since) : 0;
      const offset = Number(req.query.offset ?? 0);
      const limit = Number(req.query.limit ?? 100);
      const hits = data.tickets
        .filter((t) => Date.parse(t.updated_at) >= since)
        .sort((a, b) => a.updated_at.localeCompare(b.updated_at) || a.id - b.id);
      return json(res, 200, { tickets: hits.slice(offset, offset + limit).map(({ comments: _c, ...t }) => t) });
    }
    const m = /^\/api\/v2\/tickets\/(\d+)\/comments$/.exec(req.path);
    if (m) {
      const t = data.tickets.find((x) => x.id === Number(m[1]));
      if (!t) return json(res, 404, { error: 'not found' });
      return json(res, 200, { comments: t.comments });
    }
    json(res, 404, { error: 'no route' });
  });
  return Object.assign(api, { tickets: data.tickets, tokensIssued: () => issued });
}

// ---- GitHub-like API: bearer token, issues per repository, Link-header pagination -------------------

export interface Issue {
  number: number;
  title: string;
  body: string;
  state: 'open' | 'closed';
  pull_request?: { url: string };
  user: { login: string; id: number };
  updated_at: string;
}

export async function githubApi(opts: {
  token: string;
  repos: Record<string, Issue[]>;
}): Promise<Api & { repos: Record<string, Issue[]> }> {
  const data = { repos: opts.repos };
  const api = await serve((req, res) => {
    if (req.headers.authorization !== `Bearer ${opts.token}`) return json(res, 401, { message: 'Bad credentials' });
    const m = /^\/repos\/([^/]+\/[^/]+)\/issues$/.exec(req.path);
    if (!m) return json(res, 404, { message: 'Not Found' });
    const issues = data.repos[decodeURIComponent(m[1])];
    if (!issues) return json(res, 404, { message: 'Not Found' });
    const perPage = Number(req.query.per_page ?? 30);
    const page = Number(req.query.page ?? 1);
    const last = Math.max(1, Math.ceil(issues.length / perPage));
    const links: string[] = [];
    const link = (p: number, rel: string) =>
      `<${api.url}${req.path}?per_page=${perPage}&page=${p}&state=${req.query.state ?? 'open'}>; rel="${rel}"`;
    if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
    if (page > 1) links.push(link(1, 'first'), link(page - 1, 'prev'));
    json(res, 200, issues.slice((page - 1) * perPage, page * perPage), links.length ? { link: links.join(', ') } : {});
  });
  return Object.assign(api, { repos: data.repos });
}
