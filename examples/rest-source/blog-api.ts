// A local "blog" REST API for docs/custom-connectors.md and its tests:
//   GET /articles?updated_since=&per_page=               articles sorted by (updated_at, id)
//   GET /articles/:id/comments?updated_since=&per_page=  that article's comments, same order
// paginated with a Link header, behind a bearer token. It records when each request arrived (to
// check client-side rate limiting) and can answer the next requests with 429 + Retry-After.
// Run it by hand with: npx tsx examples/rest-source/blog-api.ts [articles] [port]
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface BlogArticle {
  id: number;
  title: string;
  body: string;
  updated_at: string;
}
export interface BlogComment {
  id: number;
  article_id: number;
  text: string;
  updated_at: string;
}

export interface BlogApi {
  url: string;
  token: string;
  articles: BlogArticle[];
  comments: BlogComment[];
  /** Arrival time (ms) and path of every request. */
  log: { at: number; path: string }[];
  throttleNext(n: number, retryAfterSeconds?: number): void;
  close(): Promise<void>;
}

/** `articles` articles with 2–7 comments each; every two comments of an article share an updated_at. */
export function sampleBlog(articles: number): { articles: BlogArticle[]; comments: BlogComment[] } {
  const start = Date.parse('2024-01-01T00:00:00Z');
  const as: BlogArticle[] = [];
  const cs: BlogComment[] = [];
  for (let i = 1; i <= articles; i++) {
    as.push({
      id: i,
      title: `Article ${i}`,
      body: `Article ${i} explains topic ${i % 5}.`,
      updated_at: new Date(start + i * 60_000).toISOString(),
    });
    for (let j = 0; j < 2 + (i % 6); j++)
      cs.push({
        id: i * 100 + j,
        article_id: i,
        text: `Comment ${j} on article ${i}.`,
        updated_at: new Date(start + i * 60_000 + Math.floor(j / 2) * 1000).toISOString(),
      });
  }
  return { articles: as, comments: cs };
}

export async function startBlogApi(opts: { articles?: number; token?: string; delayMs?: number; port?: number } = {}): Promise<BlogApi> {
  const { articles, comments } = sampleBlog(opts.articles ?? 12);
  const token = opts.token ?? 'blog-token';
  const log: BlogApi['log'] = [];
  let throttle = { n: 0, seconds: 1 };
  const sorted = <T extends { id: number; updated_at: string }>(xs: T[]) =>
    [...xs].sort((a, b) => (a.updated_at < b.updated_at ? -1 : a.updated_at > b.updated_at ? 1 : a.id - b.id));

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    log.push({ at: Date.now(), path: url.pathname + url.search });
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      const reply = () => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(body));
      };
      if (opts.delayMs) setTimeout(reply, opts.delayMs);
      else reply();
    };
    if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: 'unauthorized' });
    if (throttle.n > 0) {
      throttle.n--;
      return send(429, { error: 'slow down' }, { 'retry-after': String(throttle.seconds) });
    }
    const match = /^\/articles(?:\/(\d+)\/comments)?$/.exec(url.pathname);
    if (!match) return send(404, { error: 'not found' });
    const all: { id: number; updated_at: string }[] = match[1] ? comments.filter((c) => c.article_id === Number(match[1])) : articles;
    const since = url.searchParams.get('updated_since');
    const perPage = Number(url.searchParams.get('per_page') ?? 3);
    const offset = Number(url.searchParams.get('offset') ?? 0);
    const rows = sorted(all).filter((x) => !since || x.updated_at >= since);
    const page = rows.slice(offset, offset + perPage);
    const next = new URL(url);
    next.searchParams.set('offset', String(offset + perPage));
    const headers: Record<string, string> = offset + perPage < rows.length ? { link: `<${next.pathname}${next.search}>; rel="next"` } : {};
    send(200, page, headers);
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    token,
    articles,
    comments,
    log,
    throttleNext(n, retryAfterSeconds = 1) {
      throttle = { n, seconds: retryAfterSeconds };
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const api = await startBlogApi({ articles: Number(process.argv[2] ?? 12), port: Number(process.argv[3] ?? 0) });
  process.stdout.write(`${api.url} (token: ${api.token})\n`);
}
