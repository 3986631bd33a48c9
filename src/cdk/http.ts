// HTTP helpers for API sources: JSON requests with sluice's shared retry policy (backoff with
// jitter, Retry-After honoured, 408/429/5xx and dropped connections retried) and pagination by
// page number, offset, cursor token, next-URL in the body, or the Link header.
import type { Logger } from '../protocol/connector.ts';
import { SluiceError, describeUnknown } from '../protocol/errors.ts';
import { httpStatus, isRetryableError, retry, retryAfterMs } from '../net/retry.ts';
import type { Authenticator } from './auth.ts';
import { RequestRateLimiter, type RateLimitOptions } from './rate-limit.ts';

/** undefined/null leave the parameter out; a Date is sent as ISO-8601; anything else as String(value). */
export type QueryValue = unknown;

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
  /** Retries are logged at debug level (they are routine); `stats` counts them. */
  logger?: Logger;
  /** Credentials added to every attempt; a 401 lets it refresh them once. */
  auth?: Authenticator;
  /** Waited on before every attempt; a Retry-After pauses it for everyone sharing it. */
  limiter?: RequestRateLimiter;
  /** Counts retries (for a summary line instead of a log line per retry). */
  stats?: RetryStats;
}

export interface RetryStats {
  retries: number;
  /** Retries by reason: "HTTP 429", "HTTP 503", "ECONNRESET"… */
  byReason: Record<string, number>;
}

export function newRetryStats(): RetryStats {
  return { retries: 0, byReason: {} };
}

/** "12 HTTP requests were retried (HTTP 429 ×10, HTTP 503 ×2)", or undefined when none were. */
export function describeRetries(stats: RetryStats): string | undefined {
  if (!stats.retries) return undefined;
  const reasons = Object.entries(stats.byReason)
    .sort(([, a], [, b]) => b - a)
    .map(([r, n]) => `${r} ×${n}`)
    .join(', ');
  return `${stats.retries} HTTP request${stats.retries === 1 ? ' was' : 's were'} retried (${reasons})`;
}

function retryReason(err: unknown): string {
  const status = httpStatus(err);
  if (status !== undefined) return `HTTP ${status}`;
  const code = (err as { code?: unknown; cause?: { code?: unknown } })?.code ?? (err as { cause?: { code?: unknown } })?.cause?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.name : 'error';
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
    u.searchParams.set(k, v instanceof Date ? v.toISOString() : String(v));
  }
  return u;
}

/** One JSON request with retries. Throws HttpStatusError / SluiceError that say what failed. */
export async function fetchJson<T = unknown>(url: string | URL, opts: HttpRequestOptions = {}): Promise<HttpResponse<T>> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const target = withQuery(url, opts.query);
  const what = describeRequest(method, target);
  const baseHeaders: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (opts.body !== undefined) baseHeaders['content-type'] ??= 'application/json';
  let reauthorized = false;
  const attempt = async (): Promise<HttpResponse<T>> => {
    await opts.limiter?.acquire(opts.signal);
    // Credentials per attempt: a refreshed token is used by the next try.
    const requestUrl = new URL(target);
    const headers = { ...baseHeaders };
    await opts.auth?.apply({ url: requestUrl, headers }, opts.signal);
    const signals = [AbortSignal.timeout(opts.timeoutMs ?? 30_000)];
    if (opts.signal) signals.push(opts.signal);
    const res = await fetch(requestUrl, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: AbortSignal.any(signals),
    });
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      if (res.status === 401 && opts.auth?.unauthorized && !reauthorized) {
        reauthorized = true;
        if (await opts.auth.unauthorized()) return attempt();
      }
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
  };
  try {
    return await retry(attempt, {
      maxRetries: opts.retries ?? 5,
      baseMs: opts.backoffMs ?? 500,
      maxMs: opts.maxBackoffMs ?? 60_000,
      signal: opts.signal,
      isRetryable: isRetryableError,
      onRetry: (err, attempt, waitMs) => {
        const reason = retryReason(err);
        if (opts.stats) {
          opts.stats.retries++;
          opts.stats.byReason[reason] = (opts.stats.byReason[reason] ?? 0) + 1;
        }
        // The server said when to come back: nobody sharing the limiter goes before then.
        const hinted = retryAfterMs(err);
        if (hinted !== undefined) opts.limiter?.pause(Math.min(hinted, opts.maxBackoffMs ?? 60_000));
        opts.logger?.debug({ request: what, attempt, wait_ms: Math.round(waitMs), reason }, 'retrying HTTP request');
      },
    });
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

export interface HttpClientOptions {
  /** Paths given to the client are resolved against it (`/articles` → `<baseUrl>/articles`). */
  baseUrl?: string;
  auth?: Authenticator;
  /** Requests per second/minute for every stream of a read together. */
  rateLimit?: RateLimitOptions | RequestRateLimiter;
  headers?: Record<string, string>;
  retries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  timeoutMs?: number;
}

/**
 * fetchJson/paginate with a base URL, credentials, one rate limiter and one retry count shared by
 * every request made through it. defineSource makes one per read and hands it to each stream as
 * `http`.
 */
export class HttpClient {
  readonly stats = newRetryStats();
  readonly limiter?: RequestRateLimiter;
  constructor(
    readonly options: HttpClientOptions = {},
    private readonly ctx: { logger?: Logger; signal?: AbortSignal } = {},
  ) {
    const r = options.rateLimit;
    this.limiter = r instanceof RequestRateLimiter ? r : r && (r.perSecond || r.perMinute) ? new RequestRateLimiter(r) : undefined;
  }

  /** A path resolved against the base URL (a full URL is kept as it is). */
  url(path: string | URL): URL {
    if (path instanceof URL || /^https?:\/\//i.test(path)) return new URL(path);
    if (!this.options.baseUrl)
      throw new SluiceError(`request path "${path}" needs a base URL`, { kind: 'internal', hint: 'set http.baseUrl in defineSource' });
    const base = this.options.baseUrl.endsWith('/') ? this.options.baseUrl : `${this.options.baseUrl}/`;
    return new URL(path.replace(/^\//, ''), base);
  }

  private defaults(opts: HttpRequestOptions): HttpRequestOptions {
    const o = this.options;
    return {
      ...(o.retries !== undefined ? { retries: o.retries } : {}),
      ...(o.backoffMs !== undefined ? { backoffMs: o.backoffMs } : {}),
      ...(o.maxBackoffMs !== undefined ? { maxBackoffMs: o.maxBackoffMs } : {}),
      ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
      ...(this.ctx.signal ? { signal: this.ctx.signal } : {}),
      ...(this.ctx.logger ? { logger: this.ctx.logger } : {}),
      ...(o.auth ? { auth: o.auth } : {}),
      ...(this.limiter ? { limiter: this.limiter } : {}),
      stats: this.stats,
      ...opts,
      headers: { ...o.headers, ...opts.headers },
    };
  }

  fetchJson<T = unknown>(path: string | URL, opts: HttpRequestOptions = {}): Promise<HttpResponse<T>> {
    return fetchJson<T>(this.url(path), this.defaults(opts));
  }

  /** Records of every page of `path` (or `url`), one page in memory at a time. */
  paginate<T = Record<string, any>>(
    opts: Omit<PaginateOptions<T>, 'url'> & ({ path: string; url?: never } | { url: string | URL; path?: never }),
  ): AsyncGenerator<T> {
    const { path, url, ...rest } = opts;
    return paginate<T>({
      ...this.defaults(rest),
      ...rest,
      headers: { ...this.options.headers, ...rest.headers },
      url: this.url(path ?? url!),
    } as PaginateOptions<T>);
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
