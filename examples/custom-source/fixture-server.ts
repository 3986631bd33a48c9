// A small "articles" REST API for the example source's tests: GET /v1/articles?updated_since=&per_page=
// returns articles sorted by (updated_at, id), paginated with a Link header like GitHub's, behind
// an optional bearer token. It can answer the first N requests with 429 + Retry-After to show the
// kit's retry. Run it by hand with: npx tsx examples/custom-source/fixture-server.ts [count]
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface Article {
  id: number;
  title: string;
  body: string;
  author: string | null;
  tags: string[];
  updated_at: string;
  /** Soft-deleted articles stay in the feed (with their new updated_at) so clients see the deletion. */
  deleted?: boolean;
}

export interface ArticlesApi {
  url: string;
  articles: Article[];
  /** Requests served so far (including rejected ones). */
  requests: number;
  /** Answer the next N requests with 429 and `Retry-After: <seconds>`. */
  throttleNext(n: number, retryAfterSeconds?: number): void;
  close(): Promise<void>;
}

/** Articles with deliberate ties: every three share one updated_at. */
export function sampleArticles(count: number, start = Date.parse('2024-01-01T00:00:00Z')): Article[] {
  return Array.from({ length: count }, (_, i) => ({
    id: i + 1,
    title: `Article ${i + 1}`,
    body: `This is article number ${i + 1}. It explains topic ${i % 7} in a few sentences.`,
    author: i % 5 === 0 ? null : `author${i % 4}`,
    tags: [`topic-${i % 7}`],
    updated_at: new Date(start + Math.floor(i / 3) * 60_000).toISOString(),
  }));
}

export async function startArticlesApi(
  opts: {
    articles?: Article[];
    token?: string;
    port?: number;
    /** Slow every answer down (to interrupt syncs in tests). */ delayMs?: number;
  } = {},
): Promise<ArticlesApi> {
  let throttle = 0;
  let retryAfter = 0;
  const api: ArticlesApi = {
    url: '',
    articles: opts.articles ?? sampleArticles(50),
    requests: 0,
    throttleNext(n, seconds = 0) {
      throttle = n;
      retryAfter = seconds;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    api.requests++;
    const url = new URL(req.url ?? '/', api.url);
    if (throttle > 0) {
      throttle--;
      return send(res, 429, { error: 'rate limited' }, { 'retry-after': String(retryAfter) });
    }
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) return send(res, 401, { error: 'invalid or missing token' });
    if (req.method !== 'GET' || url.pathname !== '/v1/articles') return send(res, 404, { error: `no route ${req.method} ${url.pathname}` });
    const perPage = Math.min(100, Math.max(1, Number(url.searchParams.get('per_page') ?? 20)));
    const page = Math.max(1, Number(url.searchParams.get('page') ?? 1));
    const since = url.searchParams.get('updated_since');
    if (since !== null && !Number.isFinite(Date.parse(since)))
      return send(res, 400, { error: `updated_since is not a timestamp: ${since}` });
    const matching = api.articles
      .filter((a) => since === null || Date.parse(a.updated_at) >= Date.parse(since))
      .sort((a, b) => (a.updated_at < b.updated_at ? -1 : a.updated_at > b.updated_at ? 1 : a.id - b.id));
    const data = matching.slice((page - 1) * perPage, page * perPage);
    const headers: Record<string, string> = {};
    if (page * perPage < matching.length) {
      const next = new URL(url);
      next.searchParams.set('page', String(page + 1));
      headers.link = `<${next.pathname}${next.search}>; rel="next"`;
    }
    send(res, 200, { data, total: matching.length }, headers);
  };
  const server = createServer((req, res) => {
    if (opts.delayMs) setTimeout(() => handle(req, res), opts.delayMs);
    else handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  api.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return api;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const api = await startArticlesApi({ articles: sampleArticles(Number(process.argv[2] ?? 50)), port: Number(process.env.PORT ?? 0) });
  process.stdout.write(`${api.url}\n`);
}
