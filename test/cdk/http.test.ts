// HTTP helpers against a real loopback server: every pagination style, Retry-After, clean errors.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchJson, HttpStatusError, nextLink, paginate, SluiceError } from 'sluice/cdk';

const items = Array.from({ length: 23 }, (_, i) => ({ n: i }));
let base = '';
let hits: string[] = [];
let failures: { status: number; headers: Record<string, string> }[] = [];
const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  const url = new URL(req.url ?? '/', 'http://x');
  hits.push(url.pathname + url.search);
  const f = failures.shift();
  if (f) {
    res.writeHead(f.status, { 'content-type': 'application/json', ...f.headers });
    return res.end(JSON.stringify({ error: 'nope', token: 'leaky' }));
  }
  const json = (body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const size = 10;
  switch (url.pathname) {
    case '/page': {
      const p = Number(url.searchParams.get('page'));
      return json(items.slice((p - 1) * size, p * size));
    }
    case '/offset': {
      const o = Number(url.searchParams.get('offset'));
      return json({ data: items.slice(o, o + Number(url.searchParams.get('limit'))) });
    }
    case '/cursor': {
      const c = Number(url.searchParams.get('after') ?? 0);
      const page = items.slice(c, c + size);
      return json({ results: page, next: c + size < items.length ? String(c + size) : null });
    }
    case '/next': {
      const c = Number(url.searchParams.get('from') ?? 0);
      return json({ data: items.slice(c, c + size), next_url: c + size < items.length ? `/next?from=${c + size}` : undefined });
    }
    case '/link': {
      const c = Number(url.searchParams.get('from') ?? 0);
      const headers: Record<string, string> =
        c + size < items.length ? { link: `<${base}/link?from=${c + size}>; rel="next", <${base}/link?from=20>; rel="last"` } : {};
      return json(items.slice(c, c + size), headers);
    }
    case '/loop':
      return json([{ n: 1 }], { link: '</loop>; rel="next"' });
    case '/text':
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<html>oops</html>');
  }
  res.writeHead(404).end();
});

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const all = async <T>(g: AsyncIterable<T>) => {
  const out: T[] = [];
  for await (const x of g) out.push(x);
  return out;
};

describe('paginate', () => {
  it('reads every item with page, offset, cursor, next_url and Link pagination', async () => {
    const want = items;
    expect(await all(paginate({ url: `${base}/page`, pagination: { type: 'page' } }))).toEqual(want);
    expect(await all(paginate({ url: `${base}/offset`, pagination: { type: 'offset', limit: 7 } }))).toEqual(want);
    expect(
      await all(
        paginate({ url: `${base}/cursor`, pagination: { type: 'cursor', param: 'after', next: (b) => b.next }, records: (b) => b.results }),
      ),
    ).toEqual(want);
    expect(await all(paginate({ url: `${base}/next`, pagination: { type: 'next_url', next: (b) => b.next_url } }))).toEqual(want);
    hits = [];
    expect(await all(paginate({ url: `${base}/link`, query: { q: 'x' }, pagination: { type: 'link' } }))).toEqual(want);
    expect(hits).toEqual(['/link?q=x', '/link?from=10', '/link?from=20']);
  });

  it('stops a server that links a page to itself', async () => {
    await expect(all(paginate({ url: `${base}/loop`, pagination: { type: 'link' } }))).rejects.toThrow(
      'pagination loops: /loop was already fetched',
    );
  });

  it('parses Link headers with several relations and relative targets', () => {
    expect(nextLink('<https://a/x?page=3>; rel="next", <https://a/x?page=9>; rel="last"', 'https://a/x')).toBe('https://a/x?page=3');
    expect(nextLink('</x?page=2>; rel="prev next"', 'https://a/y')).toBe('https://a/x?page=2');
    expect(nextLink('<https://a/x?page=1>; rel="prev"', 'https://a/')).toBeUndefined();
  });
});

describe('fetchJson', () => {
  it('waits as long as Retry-After says, then succeeds', async () => {
    failures = [
      { status: 429, headers: { 'retry-after': '1' } },
      { status: 503, headers: {} },
    ];
    hits = [];
    const t0 = Date.now();
    const r = await fetchJson<unknown[]>(`${base}/page?page=1`, { backoffMs: 10 });
    expect(r.body).toHaveLength(10);
    expect(hits).toHaveLength(3);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
  });

  it('does not retry a 401 and says what to check, without the query string or the body secrets', async () => {
    failures = [{ status: 401, headers: {} }];
    hits = [];
    const err = await fetchJson(`${base}/page?page=1&api_key=sekrit`, { backoffMs: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpStatusError);
    expect(hits).toHaveLength(1);
    expect((err as HttpStatusError).message).toMatch(new RegExp(`^GET ${base}/page returned HTTP 401`));
    expect((err as HttpStatusError).message).not.toContain('sekrit');
    expect((err as HttpStatusError).hint).toBe('check the credentials in the connector config');
  });

  it('gives up after the retries with a transient error, and reports unreachable hosts and non-JSON bodies', async () => {
    failures = [
      { status: 500, headers: {} },
      { status: 500, headers: {} },
      { status: 500, headers: {} },
    ];
    const e500 = (await fetchJson(`${base}/page?page=1`, { retries: 2, backoffMs: 5 }).catch((e: unknown) => e)) as HttpStatusError;
    expect(e500.status).toBe(500);
    expect(e500.transient).toBe(true);
    const down = (await fetchJson('http://127.0.0.1:1/x', { retries: 1, backoffMs: 5 }).catch((e: unknown) => e)) as SluiceError;
    expect(down).toBeInstanceOf(SluiceError);
    expect(down.message).toMatch(/^GET http:\/\/127\.0\.0\.1:1\/x failed: /);
    const text = (await fetchJson(`${base}/text`).catch((e: unknown) => e)) as SluiceError;
    expect(text.message).toBe(`GET ${base}/text returned a body that is not JSON: <html>oops</html>`);
  });
});
