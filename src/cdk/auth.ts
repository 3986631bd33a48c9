// Authenticators for API sources: an API key in a header or the query string, a bearer token,
// HTTP basic, and OAuth2 refresh-token (the access token is cached until shortly before it
// expires, and refreshed once when the API answers 401). fetchJson/paginate/HttpClient apply them
// to every attempt, so a token refreshed during retries is used by the next attempt.
import { SluiceError, describeUnknown } from '../protocol/errors.ts';

export interface AuthRequest {
  url: URL;
  headers: Record<string, string>;
}

export interface Authenticator {
  /** Adds credentials to a request (called before every attempt). */
  apply(request: AuthRequest, signal?: AbortSignal): void | Promise<void>;
  /**
   * The API answered 401: drop cached credentials. Return true when new ones may work, so the
   * request is sent once more.
   */
  unauthorized?(): boolean | Promise<boolean>;
}

/** `X-API-Key: <key>` (any header name), or `?api_key=<key>` with `in: 'query'`. */
export function apiKeyAuth(opts: { key: string; in?: 'header' | 'query'; name?: string; prefix?: string }): Authenticator {
  const where = opts.in ?? 'header';
  const name = opts.name ?? (where === 'header' ? 'x-api-key' : 'api_key');
  const value = opts.prefix ? `${opts.prefix} ${opts.key}` : opts.key;
  return {
    apply({ url, headers }) {
      if (where === 'query') url.searchParams.set(name, value);
      else headers[name.toLowerCase()] = value;
    },
  };
}

/** `Authorization: Bearer <token>`. */
export function bearerAuth(token: string): Authenticator {
  return {
    apply({ headers }) {
      headers.authorization = `Bearer ${token}`;
    },
  };
}

/** `Authorization: Basic base64(username:password)`. */
export function basicAuth(username: string, password: string): Authenticator {
  const encoded = Buffer.from(`${username}:${password}`, 'utf8').toString('base64');
  return {
    apply({ headers }) {
      headers.authorization = `Basic ${encoded}`;
    },
  };
}

export interface OAuth2RefreshTokenOptions {
  tokenUrl: string;
  clientId: string;
  clientSecret?: string;
  refreshToken: string;
  scopes?: string[];
  /** Send the client credentials as HTTP basic (default) or in the form body. */
  clientAuth?: 'basic' | 'body';
  /** Refresh this long before the token expires (default 60 s). */
  expirySkewMs?: number;
  /** Called when the server rotates the refresh token, so it can be stored for the next run. */
  onRefreshToken?: (refreshToken: string) => void | Promise<void>;
}

/**
 * OAuth2 refresh-token grant (RFC 6749 §6). One token request serves every stream: concurrent
 * requests wait for the same refresh.
 */
export function oauth2RefreshToken(opts: OAuth2RefreshTokenOptions): Authenticator & { readonly refreshes: number } {
  let token: { value: string; expiresAt: number } | undefined;
  let inflight: Promise<string> | undefined;
  let refreshToken = opts.refreshToken;
  let refreshes = 0;
  const skew = opts.expirySkewMs ?? 60_000;

  async function refresh(signal?: AbortSignal): Promise<string> {
    const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken });
    if (opts.scopes?.length) body.set('scope', opts.scopes.join(' '));
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if ((opts.clientAuth ?? 'basic') === 'basic' && opts.clientSecret !== undefined) {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(opts.clientId)}:${encodeURIComponent(opts.clientSecret)}`).toString('base64')}`;
    } else {
      body.set('client_id', opts.clientId);
      if (opts.clientSecret !== undefined) body.set('client_secret', opts.clientSecret);
    }
    const where = `POST ${new URL(opts.tokenUrl).origin}${new URL(opts.tokenUrl).pathname}`;
    let res: Response;
    try {
      res = await fetch(opts.tokenUrl, { method: 'POST', headers, body, signal: signal ?? AbortSignal.timeout(30_000) });
    } catch (err) {
      throw new SluiceError(`OAuth2 token request ${where} failed: ${describeUnknown(err)}`, {
        kind: 'connection',
        where,
        transient: true,
        hint: 'check that the token URL is reachable',
      });
    }
    const text = await res.text();
    let json: { access_token?: unknown; expires_in?: unknown; refresh_token?: unknown; error?: unknown } = {};
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      /* reported below */
    }
    if (!res.ok || typeof json.access_token !== 'string') {
      // The body may echo credentials: only the OAuth2 error code is shown.
      const code = typeof json.error === 'string' ? ` (${json.error})` : '';
      throw new SluiceError(`OAuth2 token request ${where} returned HTTP ${res.status}${code}`, {
        kind: 'connection',
        where,
        transient: res.status >= 500 || res.status === 429,
        hint:
          res.status === 400 || res.status === 401
            ? 'check client_id, client_secret and the refresh token (it may have expired or been revoked)'
            : undefined,
      });
    }
    refreshes++;
    if (typeof json.refresh_token === 'string' && json.refresh_token !== refreshToken) {
      refreshToken = json.refresh_token;
      await opts.onRefreshToken?.(refreshToken);
    }
    const ttl = typeof json.expires_in === 'number' ? json.expires_in * 1000 : 3_600_000;
    token = { value: json.access_token, expiresAt: Date.now() + ttl - skew };
    return token.value;
  }

  async function current(signal?: AbortSignal): Promise<string> {
    if (token && Date.now() < token.expiresAt) return token.value;
    inflight ??= refresh(signal).finally(() => (inflight = undefined));
    return inflight;
  }

  return {
    get refreshes() {
      return refreshes;
    },
    async apply({ headers }, signal) {
      headers.authorization = `Bearer ${await current(signal)}`;
    },
    unauthorized() {
      token = undefined;
      return true;
    },
  };
}
