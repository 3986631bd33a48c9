// HTTP helpers for API sources: JSON requests with sluice's shared retry policy (backoff with
// jitter, Retry-After honoured, 408/429/5xx and dropped connections retried) and pagination by
// page number, offset, cursor token, next-URL in the body, or the Link header.
import type { Logger } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { isRetryableError, retry } from '../net/retry.ts';

export type QueryValue = string | number | boolean | undefined | null;

export interface HttpRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  query?: Record<string, QueryValue>;
  /** Sent as JSON. */
  body?: unknown;
  /** Retries after the first attempt (default 5). */
  retries?: number;
  /** First backoff step in ms (default 500). */
  backoffMs?: number;
  /** Longest wait between attempts, also caps Retry-After (default 60 s). */
  maxBackoffMs?: number;
  /** Per attempt (default 30 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Logger;
}

export interface HttpResponse<T> {
  status: number;
  headers: Headers;
  url: string;
  body: T;
}

/** An HTTP error response; `status`/`headers` let the shared retry policy classify it. */
export class HttpStatusError extends SluiceError {
  readonly status: number;
  readonly headers: Headers;
  constructor(status: number, headers: Headers, what: string, snippet: string) {
    super(`${what} returned HTTP ${status}${snippet ? `: ${snippet}` : ''}`, {
      kind: 'connection',
      where: what,
      transient: status === 408 || status === 425 || status === 429 || status >= 500,
      hint:
        status === 401 || status === 403
          ? 'check the credentials in the connector config'
          : status === 404
            ? 'check the base URL and path in the connector config'
            : status === 429
              ? 'the API is rate limiting; sluice retried with backoff — lower the request rate or try later'
              : status >= 500
                ? 'the API failed; sluice retried with backoff — try again later'
                : undefined,
    });
    this.status = status;
    this.headers = headers;
  }
}

/** "GET https://host/path" without the query string, which may carry tokens. */
function describeRequest(method: string, url: URL): string {
  return `${method} ${url.origin}${url.pathname}`;
}

export function withQuery(url: string | URL, query: Record<string, QueryValue> | undefined): URL {
  const u = new URL(url);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v === undefined || v === null) continue;
    u.searchParams.set(k, String(v));
  }
  return u;
}

/** One JSON request with retries. Throws HttpStatusError / SluiceError that say what failed. */
export async function fetchJson<T = unknown>(url: string | URL, opts: HttpRequestOptions = {}): Promise<HttpResponse<T>> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const target = withQuery(url, opts.query);
  const what = describeRequest(method, target);
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
  try {
    return await retry(
      async () => {
        const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000)];
        if (opts.signal) signals.push(opts.signal);
        const res = await fetch(target, {
          method,
          headers,
          body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
          signal: AbortSignal.any(signals),
        });
        if (!res.ok) {
          const text = await res.text().catch(() => '');
          throw new HttpStatusError(res.status, res.headers, what, text.replace(/\s+/g, ' ').trim().slice(0, 200));
        }
        const text = await res.text();
        let body: unknown;
        try {
          body = text.length ? JSON.parse(text) : undefined;
        } catch {
          throw new SluiceError(`${what} returned a body that is not JSON: ${text.slice(0, 120)}`, { kind: 'source', where: what });
        }
        return { status: res.status, headers: res.headers, url: res.url || target.toString(), body: body as T };
      },
      {
        maxRetries: opts.retries ?? 5,
        baseMs: opts.backoffMs ?? 500,
        maxMs: opts.maxBackoffMs ?? 60_000,
        signal: opts.signal,
        isRetryable: isRetryableError,
        onRetry: (err, attempt, waitMs) =>
          opts.logger?.warn({ request: what, attempt, wait_ms: Math.round(waitMs), error: describeUnknown(err) }, 'retrying HTTP request'),
      },
    );
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    if (opts.signal?.aborted) throw new SluiceError(`${what} was interrupted`, { kind: 'interrupted', where: what });
    const cause = (err as { cause?: unknown }).cause;
    const detail = cause ? describeUnknown(cause) : describeUnknown(err);
    throw new SluiceError(`${what} failed: ${detail}`, {
      kind: 'connection',
      where: what,
      transient: isRetryableError(err),
      hint: 'check that the API is reachable from this machine and the base URL is right',
      cause: err,
    });
  }
}

/** Parses an RFC 8288 Link header and returns the target of rel="next", resolved against `base`. */
export function nextLink(header: string | null | undefined, base: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (!m) continue;
    const rels = /;\s*rel\s*=\s*"?([^";]+)"?/i.exec(m[2]);
    if (rels && rels[1].split(/\s+/).includes('next')) return new URL(m[1], base).toString();
  }
  return undefined;
}

export type Pagination =
  /** ?page=1,2,3…; stops at an empty page, or a short one when `size` is set. */
  | { type: 'page'; param?: string; start?: number; sizeParam?: string; size?: number }
  /** ?offset=0,limit,2*limit…; stops at a short page. */
  | { type: 'offset'; param?: string; limitParam?: string; limit: number }
  /** An opaque token from the body (or headers) sent back as a query parameter. */
  | { type: 'cursor'; param: string; next: (body: any, response: HttpResponse<unknown>) => string | number | null | undefined }
  /** The body carries the next page's URL. */
  | { type: 'next_url'; next: (body: any, response: HttpResponse<unknown>) => string | null | undefined }
  /** The `Link: <…>; rel="next"` header (GitHub style). */
  | { type: 'link' }
  | { type: 'none' };

export interface PaginateOptions<T> extends HttpRequestOptions {
  url: string | URL;
  pagination: Pagination;
  /** The records in a page body. Default: the body if it is an array, else `body.data`. */
  records?: (body: any, response: HttpResponse<unknown>) => T[] | undefined;
  /** Safety stop (default: unlimited). */
  maxPages?: number;
}

function defaultRecords(body: unknown): unknown[] {
  if (Array.isArray(body)) return body;
  const data = (body as { data?: unknown } | undefined)?.data;
  if (Array.isArray(data)) return data;
  throw new SluiceError('could not find the records in the response: it is not an array and has no "data" array', {
    kind: 'source',
    hint: 'pass `records: (body) => body.<field>` to paginate()',
  });
}

/** Yields the records of every page, one page in memory at a time. */
export async function* paginate<T = Record<string, unknown>>(opts: PaginateOptions<T>): AsyncGenerator<T> {
  const p = opts.pagination;
  const pick = (body: unknown, res: HttpResponse<unknown>) =>
    opts.records ? (opts.records(body, res) ?? []) : (defaultRecords(body) as T[]);
  let url: string | undefined = withQuery(opts.url, opts.query).toString();
  let page = p.type === 'page' ? (p.start ?? 1) : 0;
  let offset = 0;
  let token: string | number | undefined;
  const seenUrls = new Set<string>();
  for (let pages = 0; url && (opts.maxPages === undefined || pages < opts.maxPages); pages++) {
    if (opts.signal?.aborted) return;
    const extra: Record<string, QueryValue> = {};
    if (p.type === 'page') {
      extra[p.param ?? 'page'] = page;
      if (p.size !== undefined) extra[p.sizeParam ?? 'per_page'] = p.size;
    } else if (p.type === 'offset') {
      extra[p.param ?? 'offset'] = offset;
      extra[p.limitParam ?? 'limit'] = p.limit;
    } else if (p.type === 'cursor' && token !== undefined) {
      extra[p.param] = token;
    }
    const target = withQuery(url, extra).toString();
    // A server that links a page to itself would otherwise loop forever.
    if (seenUrls.has(target)) {
      throw new SluiceError(`pagination loops: ${new URL(target).pathname} was already fetched`, {
        kind: 'source',
        hint: 'check the pagination settings',
      });
    }
    seenUrls.add(target);
    if (seenUrls.size > 10_000) seenUrls.clear();
    const res = await fetchJson<unknown>(target, { ...opts, query: undefined });
    const items = pick(res.body, res);
    for (const item of items) yield item;
    switch (p.type) {
      case 'none':
        url = undefined;
        break;
      case 'page':
        if (items.length === 0 || (p.size !== undefined && items.length < p.size)) url = undefined;
        page++;
        break;
      case 'offset':
        if (items.length < p.limit) url = undefined;
        offset += items.length;
        break;
      case 'cursor': {
        const next = p.next(res.body, res);
        if (next === undefined || next === null || next === '' || items.length === 0) url = undefined;
        else token = next;
        break;
      }
      case 'next_url': {
        const next = p.next(res.body, res);
        url = next ? new URL(next, res.url).toString() : undefined;
        break;
      }
      case 'link':
        url = nextLink(res.headers.get('link'), res.url);
        break;
    }
  }
}
