// The REST pieces of the kit against a real HTTP server on 127.0.0.1: each authenticator, the
// rate limiter's spacing (shared by streams), Retry-After pausing everyone, retries counted at
// debug level, and record validation during a read.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HttpClient,
  HttpStatusError,
  RequestRateLimiter,
  SluiceError,
  apiKeyAuth,
  basicAuth,
  bearerAuth,
  defineSource,
  oauth2RefreshToken,
  z,
  type Authenticator,
  type ConfiguredCatalog,
} from 'sluice/cdk';
import { testContext } from 'sluice/testing';

let base = '';
const arrivals: { at: number; path: string }[] = [];
let validAccessToken = '';
let tokenRequests: { grant: string | null; refresh: string | null; auth: string | undefined }[] = [];
let throttle = 0;
let issued = 0;

const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  const url = new URL(req.url ?? '/', 'http://x');
  arrivals.push({ at: Date.now(), path: url.pathname });
  const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const ok = () => reply(200, { ok: true, path: url.pathname });
  const h = req.headers;
  switch (url.pathname) {
    case '/key-header':
      return h['x-api-key'] === 'k-123' ? ok() : reply(401, {});
    case '/key-query':
      return url.searchParams.get('api_key') === 'k-123' ? ok() : reply(401, {});
    case '/bearer':
      return h.authorization === 'Bearer t-456' ? ok() : reply(401, {});
    case '/basic':
      return h.authorization === `Basic ${Buffer.from('ann:s3cret:x').toString('base64')}` ? ok() : reply(401, {});
    case '/oauth/token': {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        tokenRequests.push({ grant: form.get('grant_type'), refresh: form.get('refresh_token'), auth: h.authorization });
        const clientOk = h.authorization === `Basic ${Buffer.from('client-1:client-secret').toString('base64')}`;
        if (
          !clientOk ||
          form.get('grant_type') !== 'refresh_token' ||
          !['refresh-1', 'refresh-2'].includes(form.get('refresh_token') ?? '')
        )
          return reply(400, { error: 'invalid_grant', refresh_token_echo: form.get('refresh_token') });
        validAccessToken = `access-${++issued}`;
        reply(200, { access_token: validAccessToken, token_type: 'Bearer', expires_in: 3600, refresh_token: 'refresh-2' });
      });
      return;
    }
    case '/oauth/data':
      return h.authorization === `Bearer ${validAccessToken}` && validAccessToken ? ok() : reply(401, { error: 'expired' });
    case '/limited':
      if (throttle > 0) {
        throttle--;
        return reply(429, {}, { 'retry-after': '1' });
      }
      return ok();
    default:
      return reply(404, {});
  }
});

beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('authenticators', () => {
  it('API key in a header or the query string, bearer and basic', async () => {
    const get = (path: string, auth: Authenticator) => new HttpClient({ baseUrl: base, auth, retries: 0 }).fetchJson<{ ok: boolean }>(path);
    expect((await get('/key-header', apiKeyAuth({ key: 'k-123' }))).body.ok).toBe(true);
    expect((await get('/key-query', apiKeyAuth({ key: 'k-123', in: 'query' }))).body.ok).toBe(true);
    expect((await get('/bearer', bearerAuth('t-456'))).body.ok).toBe(true);
    expect((await get('/basic', basicAuth('ann', 's3cret:x'))).body.ok).toBe(true);
    // A wrong credential is a clean 401 error with a hint, and the key never shows in it.
    const err = await get('/key-query', apiKeyAuth({ key: 'wrong-key', in: 'query' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpStatusError);
    expect((err as HttpStatusError).message).toBe(`GET ${base}/key-query returned HTTP 401: {}`);
    expect((err as HttpStatusError).hint).toBe('check the credentials in the connector config');
  });

  it('OAuth2 refresh token: one token request for many calls, a new one after a 401, rotation reported', async () => {
    tokenRequests = [];
    const rotated: string[] = [];
    const auth = oauth2RefreshToken({
      tokenUrl: `${base}/oauth/token`,
      clientId: 'client-1',
      clientSecret: 'client-secret',
      refreshToken: 'refresh-1',
      onRefreshToken: (t) => void rotated.push(t),
    });
    const http = new HttpClient({ baseUrl: base, auth, retries: 0 });
    // Concurrent first calls share one refresh.
    await Promise.all(Array.from({ length: 5 }, () => http.fetchJson('/oauth/data')));
    await http.fetchJson('/oauth/data');
    expect(tokenRequests).toEqual([
      { grant: 'refresh_token', refresh: 'refresh-1', auth: `Basic ${Buffer.from('client-1:client-secret').toString('base64')}` },
    ]);
    expect(rotated).toEqual(['refresh-2']);
    // The server revokes the access token: the next call gets 401, refreshes (with the rotated
    // refresh token) and succeeds.
    validAccessToken = 'revoked-elsewhere';
    expect((await http.fetchJson<{ ok: boolean }>('/oauth/data')).body.ok).toBe(true);
    expect(tokenRequests.map((t) => t.refresh)).toEqual(['refresh-1', 'refresh-2']);
    expect(auth.refreshes).toBe(2);
  });

  it('OAuth2: a refused refresh token is a clean error that shows only the OAuth2 error code', async () => {
    const auth = oauth2RefreshToken({
      tokenUrl: `${base}/oauth/token`,
      clientId: 'client-1',
      clientSecret: 'client-secret',
      refreshToken: 'stolen',
    });
    const err = await new HttpClient({ baseUrl: base, auth, retries: 0 }).fetchJson('/oauth/data').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toBe(`OAuth2 token request POST ${base}/oauth/token returned HTTP 400 (invalid_grant)`);
    expect(String((err as SluiceError).message) + (err as SluiceError).hint).not.toContain('stolen');
  });
});

describe('rate limiting', () => {
  it('spaces requests evenly, across streams sharing one client', async () => {
    const http = new HttpClient({ baseUrl: base, rateLimit: { perSecond: 20 } });
    arrivals.length = 0;
    const t0 = Date.now();
    const stream = async () => {
      for (let i = 0; i < 5; i++) await http.fetchJson('/limited');
    };
    await Promise.all([stream(), stream()]); // two streams, ten requests
    const times = arrivals.map((a) => a.at).sort((a, b) => a - b);
    expect(times).toHaveLength(10);
    // 20 per second: the i-th request cannot start before i × 50 ms (a busy machine only delays
    // arrivals, so this holds however loaded it is), and the ten take at least 450 ms.
    times.forEach((t, i) => expect(t - t0).toBeGreaterThanOrEqual(i * 50 - 5));
  });

  it('per minute: a full window makes the next request wait', async () => {
    const limiter = new RequestRateLimiter({ perMinute: 3 });
    const started = Date.now();
    for (let i = 0; i < 3; i++) await limiter.acquire();
    expect(Date.now() - started).toBeLessThan(100);
    const stop = new AbortController();
    const fourth = limiter.acquire(stop.signal);
    const outcome = await Promise.race([fourth.then(() => 'started'), new Promise((r) => setTimeout(() => r('still waiting'), 300))]);
    expect(outcome).toBe('still waiting');
    stop.abort();
    await expect(fourth).rejects.toThrow();
  });

  it('a Retry-After pauses every stream of the client; retries are counted and logged at debug', async () => {
    const ctx = testContext();
    const http = new HttpClient({ baseUrl: base, rateLimit: { perSecond: 50 }, backoffMs: 10 }, { logger: ctx.logger });
    arrivals.length = 0;
    throttle = 1;
    // Stream A gets 429 + Retry-After: 1. Stream B starts once A has seen it, and waits too.
    const a = http.fetchJson('/limited');
    while (http.stats.retries === 0) await new Promise((r) => setTimeout(r, 5));
    const b = http.fetchJson('/limited');
    await Promise.all([a, b]);
    const [first, ...rest] = arrivals.map((x) => x.at);
    expect(rest).toHaveLength(2);
    expect(Math.min(...rest) - first).toBeGreaterThanOrEqual(990);
    expect(http.stats).toEqual({ retries: 1, byReason: { 'HTTP 429': 1 } });
    expect(ctx.logs.filter((l) => l.level === 'warn')).toEqual([]);
    expect(ctx.logs.find((l) => l.msg === 'retrying HTTP request')?.level).toBe('debug');
  });
});

describe('validate: warn | fail', () => {
  const source = (validate: 'warn' | 'fail') =>
    defineSource({
      spec: { name: 'v', config: z.strictObject({}) },
      validate,
      streams: [
        {
          name: 'things',
          schema: z.object({ id: z.number(), label: z.string() }),
          primaryKey: 'id',
          async *read() {
            yield { id: 1, label: 'one' };
            yield { id: 2, label: 42 };
            yield { id: 3, label: 'three' };
          },
        },
      ],
    });
  const catalog = async (s: ReturnType<typeof source>): Promise<ConfiguredCatalog> => ({
    streams: (await s.discover({}, testContext())).streams.map((stream) => ({
      stream,
      sync_mode: 'full_refresh' as const,
      destination_sync_mode: 'overwrite' as const,
    })),
  });
  const records = async (s: ReturnType<typeof source>, ctx = testContext()) => {
    const out: unknown[] = [];
    for await (const m of s.read({}, await catalog(s), undefined, ctx)) if (m.type === 'RECORD') out.push(m.record.data);
    return out;
  };

  it('fail: stops at the first bad record, naming stream, position, key and field', async () => {
    const err = await records(source('fail')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SluiceError);
    expect((err as SluiceError).message).toBe(
      'stream "things", record 2 (id=2) does not match the stream\'s schema: label: Invalid input: expected string, received number',
    );
  });

  it('warn: passes every record on and logs the bad one', async () => {
    const ctx = testContext();
    expect(await records(source('warn'), ctx)).toHaveLength(3);
    expect(ctx.logs.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
      'stream "things", record 2 (id=2) does not match the stream\'s schema: label: Invalid input: expected string, received number',
    ]);
  });
});
