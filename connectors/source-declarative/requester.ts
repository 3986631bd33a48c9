// HttpRequester, authenticators, request options and the error handler (response filters and
// backoff strategies), with the CDK's semantics. One request at a time; the body of one page is
// the only response data held in memory.
import { SluiceError } from '../../src/cdk/index.ts';
import type { Logger } from '../../src/protocol/connector.ts';
import { evaluate, evaluateBoolean, evaluateMapping, evaluateString, type Vars } from './interpolation.ts';
import type { Component } from './manifest.ts';

/** What a request is made of, before it is sent; every component adds its options to it. */
export interface RequestParts {
  params: Record<string, string>;
  headers: Record<string, string>;
  bodyJson?: Record<string, unknown>;
  bodyData?: Record<string, string>;
  /** A full path or URL that replaces the requester's path (RequestPath pagination). */
  path?: string;
}

export const emptyParts = (): RequestParts => ({ params: {}, headers: {} });

/** Injects a value where a RequestOption / RequestPath says. */
export function injectOption(parts: RequestParts, option: Component | undefined, value: unknown, vars: Vars): void {
  if (!option || value === undefined || value === null || value === '') return;
  if (option.type === 'RequestPath') {
    parts.path = String(value);
    return;
  }
  const fieldPath: string[] | undefined = Array.isArray(option.field_path)
    ? option.field_path.map((p: unknown) => evaluateString(p, vars))
    : undefined;
  const field = fieldPath ? fieldPath[fieldPath.length - 1] : evaluateString(option.field_name, vars);
  switch (option.inject_into) {
    case 'request_parameter':
      parts.params[field] = Array.isArray(value) ? value.join(',') : String(value);
      break;
    case 'header':
      parts.headers[field] = String(value);
      break;
    case 'body_data':
      (parts.bodyData ??= {})[field] = String(value);
      break;
    case 'body_json': {
      let node = (parts.bodyJson ??= {});
      const path = fieldPath ?? [field];
      for (const p of path.slice(0, -1)) node = (node[p] ??= {}) as Record<string, unknown>;
      node[path[path.length - 1]] = value;
      break;
    }
    default:
      throw new SluiceError(
        `RequestOption.inject_into "${option.inject_into}" is not one of request_parameter, header, body_data, body_json`,
        {
          kind: 'config',
        },
      );
  }
}

export function mergeParts(into: RequestParts, from: RequestParts): void {
  Object.assign(into.params, from.params);
  Object.assign(into.headers, from.headers);
  if (from.bodyJson) into.bodyJson = { ...(into.bodyJson ?? {}), ...from.bodyJson };
  if (from.bodyData) into.bodyData = { ...(into.bodyData ?? {}), ...from.bodyData };
  if (from.path !== undefined) into.path = from.path;
}

// ---- authenticators -----------------------------------------------------------------------------

export interface Authenticator {
  apply(parts: RequestParts, signal: AbortSignal): Promise<void>;
  /** After a 401: get fresh credentials; true when a retry may now succeed. */
  refreshAfterUnauthorized?(signal: AbortSignal): Promise<boolean>;
}

export function buildAuthenticator(c: Component | undefined, vars: Vars, logger: Logger): Authenticator {
  if (!c || c.type === 'NoAuth') return { apply: async () => {} };
  const v = { ...vars, parameters: c.$parameters ?? vars.parameters };
  switch (c.type) {
    case 'ApiKeyAuthenticator':
      return {
        apply: async (parts) => {
          const token = evaluateString(c.api_token, v);
          if (c.inject_into) injectOption(parts, c.inject_into, token, v);
          else parts.headers[evaluateString(c.header, v)] = token;
        },
      };
    case 'BearerAuthenticator':
      return {
        apply: async (parts) => {
          parts.headers.Authorization = `Bearer ${evaluateString(c.api_token, v)}`;
        },
      };
    case 'BasicHttpAuthenticator':
      return {
        apply: async (parts) => {
          const user = evaluateString(c.username, v);
          const password = evaluateString(c.password ?? '', v);
          parts.headers.Authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
        },
      };
    case 'OAuthAuthenticator':
      return new OAuth(c, v, logger);
    case 'SelectiveAuthenticator': {
      const path: string[] = (c.authenticator_selection_path ?? []).map((p: unknown) => String(p));
      let selected: unknown = (vars.config ?? {}) as unknown;
      for (const p of path) selected = selected && typeof selected === 'object' ? (selected as Record<string, unknown>)[p] : undefined;
      const chosen = (c.authenticators ?? {})[String(selected)];
      if (!chosen)
        throw new SluiceError(
          `SelectiveAuthenticator: config value ${path.join('.')}=${JSON.stringify(selected)} selects none of: ${Object.keys(c.authenticators ?? {}).join(', ')}`,
          { kind: 'config', hint: 'set that config field to one of the listed values' },
        );
      return buildAuthenticator(chosen, vars, logger);
    }
    default:
      throw new SluiceError(`unsupported authenticator ${c.type}`, { kind: 'config' });
  }
}

/** OAuth 2 refresh-token (or client-credentials) grant; the token lives only in memory. */
class OAuth implements Authenticator {
  private token: string | undefined;
  private expiresAt = 0;
  constructor(
    private readonly c: Component,
    private readonly vars: Vars,
    private readonly logger: Logger,
  ) {
    const given = evaluateString(c.access_token_value ?? '', vars);
    if (given) {
      this.token = given;
      const expiry = c.token_expiry_date ? Date.parse(evaluateString(c.token_expiry_date, vars)) : NaN;
      this.expiresAt = Number.isFinite(expiry) ? expiry : 0;
    }
  }

  async apply(parts: RequestParts, signal: AbortSignal): Promise<void> {
    // Refresh a minute early, as the CDK does, so a token does not expire in flight.
    if (!this.token || Date.now() > this.expiresAt - 60_000) await this.refresh(signal);
    parts.headers.Authorization = `Bearer ${this.token}`;
  }

  async refreshAfterUnauthorized(signal: AbortSignal): Promise<boolean> {
    await this.refresh(signal);
    return true;
  }

  private async refresh(signal: AbortSignal): Promise<void> {
    const c = this.c;
    const endpoint = evaluateString(c.token_refresh_endpoint, this.vars);
    const grant = evaluateString(c.grant_type ?? 'refresh_token', this.vars) || 'refresh_token';
    const body: Record<string, string> = { grant_type: grant };
    const clientId = evaluateString(c.client_id ?? '', this.vars);
    const clientSecret = evaluateString(c.client_secret ?? '', this.vars);
    if (clientId) body.client_id = clientId;
    if (clientSecret) body.client_secret = clientSecret;
    if (grant === 'refresh_token') body.refresh_token = evaluateString(c.refresh_token, this.vars);
    if (Array.isArray(c.scopes) && c.scopes.length) body.scope = c.scopes.join(' ');
    for (const [k, val] of Object.entries(evaluateMapping(c.refresh_request_body, this.vars))) body[k] = String(val);
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    for (const [k, val] of Object.entries(evaluateMapping(c.refresh_request_headers, this.vars))) headers[k] = String(val);
    let res: Response;
    try {
      res = await fetch(endpoint, { method: 'POST', headers, body: new URLSearchParams(body).toString(), signal });
    } catch (err) {
      throw new SluiceError(`OAuth token refresh at ${safeUrl(endpoint)} failed: ${(err as Error).message}`, {
        kind: 'connection',
        transient: true,
      });
    }
    const text = await res.text();
    if (!res.ok)
      throw new SluiceError(`OAuth token refresh at ${safeUrl(endpoint)} returned HTTP ${res.status}`, {
        kind: 'connection',
        hint: 'check client_id, client_secret and refresh_token in the config',
      });
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new SluiceError(`OAuth token refresh at ${safeUrl(endpoint)} did not return JSON`, { kind: 'connection' });
    }
    const name = evaluateString(c.access_token_name ?? 'access_token', this.vars) || 'access_token';
    const token = json[name];
    if (typeof token !== 'string' || !token)
      throw new SluiceError(`OAuth token refresh at ${safeUrl(endpoint)}: the response has no "${name}"`, {
        kind: 'connection',
        hint: 'check access_token_name',
      });
    this.token = token;
    const expiresIn = Number(json[evaluateString(c.expires_in_name ?? 'expires_in', this.vars) || 'expires_in']);
    this.expiresAt = Date.now() + (Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn * 1000 : 3_600_000);
    this.logger.debug({ endpoint: safeUrl(endpoint) }, 'declarative: OAuth access token refreshed');
  }
}

/** A URL without its query string (which may carry keys). */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return url.split('?')[0];
  }
}

// ---- error handler -------------------------------------------------------------------------------

export type Action = 'SUCCESS' | 'FAIL' | 'RETRY' | 'IGNORE' | 'RATE_LIMITED';

export interface Outcome {
  status: number;
  headers: Headers;
  bodyText: string;
  body: unknown;
}

interface Handler {
  filters: Component[];
  backoff: Component[];
  maxRetries: number;
  maxTimeMs?: number;
}

export class ErrorHandler {
  private readonly handlers: Handler[];
  constructor(
    c: Component | undefined,
    private readonly vars: Vars,
  ) {
    const list: Component[] = !c ? [] : c.type === 'CompositeErrorHandler' ? (c.error_handlers ?? []) : [c];
    this.handlers = list.map((h) => ({
      filters: h.response_filters ?? [],
      backoff: h.backoff_strategies ?? [],
      maxRetries: h.max_retries ?? 5,
      maxTimeMs: h.max_time !== undefined ? Number(h.max_time) * 1000 : undefined,
    }));
    if (!this.handlers.length) this.handlers.push({ filters: [], backoff: [], maxRetries: 5 });
  }

  get maxRetries(): number {
    return this.handlers[0].maxRetries;
  }

  /** The action for a response, and the error message a matching filter gives. */
  classify(o: Outcome): { action: Action; message?: string; handler: Handler } {
    for (const h of this.handlers) {
      for (const f of h.filters) {
        if (this.matches(f, o)) {
          const action = (f.action ?? (f.http_codes || f.error_message_contains || f.predicate ? 'FAIL' : 'SUCCESS')) as Action;
          const message = f.error_message
            ? evaluateString(f.error_message, { ...this.vars, response: o.body, headers: headerObject(o.headers) })
            : undefined;
          return { action, message, handler: h };
        }
      }
    }
    const h = this.handlers[0];
    const s = o.status;
    if (s >= 200 && s < 300) return { action: 'SUCCESS', handler: h };
    if (s === 429) return { action: 'RATE_LIMITED', handler: h };
    if (s === 408 || s >= 500) return { action: 'RETRY', handler: h };
    return { action: 'FAIL', handler: h };
  }

  private matches(f: Component, o: Outcome): boolean {
    const codes: number[] = (f.http_codes ?? []).map(Number);
    if (codes.includes(o.status)) return true;
    if (f.error_message_contains && o.bodyText.includes(evaluateString(f.error_message_contains, this.vars))) return true;
    if (f.predicate && evaluateBoolean(f.predicate, { ...this.vars, response: o.body, headers: headerObject(o.headers) })) return true;
    return false;
  }

  /** How long to wait before attempt `attempt` (1-based), in ms. */
  backoffMs(handler: Handler, attempt: number, headers: Headers | undefined): number {
    for (const b of handler.backoff) {
      const ms = strategyMs(b, attempt, headers, this.vars);
      if (ms !== undefined) return ms;
    }
    // No strategy: honour Retry-After if the API sends one, else the CDK's exponential default.
    const ra = headers ? retryAfter(headers.get('retry-after')) : undefined;
    return ra ?? 5000 * 2 ** attempt;
  }
}

function strategyMs(b: Component, attempt: number, headers: Headers | undefined, vars: Vars): number | undefined {
  switch (b.type) {
    case 'ExponentialBackoffStrategy':
      return Number(evaluate(b.factor ?? 5, vars)) * 1000 * 2 ** attempt;
    case 'ConstantBackoffStrategy':
      return Number(evaluate(b.backoff_time_in_seconds, vars)) * 1000;
    case 'WaitTimeFromHeader': {
      const raw = headers?.get(evaluateString(b.header, vars));
      if (raw === null || raw === undefined) return undefined;
      let text = raw;
      if (b.regex) {
        const m = new RegExp(evaluateString(b.regex, vars)).exec(raw);
        if (!m) return undefined;
        text = m[1] ?? m[0];
      }
      const seconds = Number(text);
      if (!Number.isFinite(seconds)) return undefined;
      const max = b.max_waiting_time_in_seconds !== undefined ? Number(evaluate(b.max_waiting_time_in_seconds, vars)) : undefined;
      if (max !== undefined && seconds > max)
        throw new SluiceError(`the API asks to wait ${seconds}s (header ${b.header}), more than max_waiting_time_in_seconds ${max}`, {
          kind: 'connection',
          transient: true,
        });
      return seconds * 1000;
    }
    default:
      return undefined;
  }
}

function retryAfter(v: string | null): number | undefined {
  if (!v) return undefined;
  const n = Number(v);
  if (Number.isFinite(n)) return n * 1000;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : undefined;
}

/** Response headers as templates see them: lower-case names, plus `link` parsed by rel like requests' `response.links`. */
export function headerObject(h: Headers): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  h.forEach((value, name) => {
    out[name] = value;
  });
  const link = h.get('link');
  if (link) {
    const links: Record<string, { url: string; rel: string }> = {};
    for (const part of link.split(/,(?=\s*<)/)) {
      const m = /^\s*<([^>]*)>(.*)$/.exec(part);
      if (!m) continue;
      const rel = /;\s*rel\s*=\s*"?([^";]+)"?/i.exec(m[2])?.[1];
      if (rel) for (const r of rel.split(/\s+/)) links[r] = { url: m[1], rel: r };
    }
    out.link = links;
  }
  return out;
}

// ---- the requester ---------------------------------------------------------------------------------

export interface SentRequest {
  url: string;
  status: number;
  headers: Headers;
  body: unknown;
}

export class Requester {
  readonly auth: Authenticator;
  readonly errors: ErrorHandler;
  constructor(
    readonly c: Component,
    private readonly baseVars: Vars,
    private readonly logger: Logger,
    private readonly stream: string,
    /** Connection checks answer quickly: few retries, short waits. */
    private readonly limits: { maxRetries?: number; maxBackoffMs?: number } = {},
  ) {
    const vars = { ...baseVars, parameters: c.$parameters ?? {} };
    this.auth = buildAuthenticator(c.authenticator, vars, logger);
    this.errors = new ErrorHandler(c.error_handler, vars);
  }

  /** The requester's own options for this slice / page. */
  ownParts(vars: Vars): RequestParts {
    const v = { ...vars, parameters: this.c.$parameters ?? {} };
    const parts = emptyParts();
    for (const [k, val] of Object.entries(evaluateMapping(this.c.request_parameters, v)))
      parts.params[k] = typeof val === 'object' ? JSON.stringify(val) : String(val);
    for (const [k, val] of Object.entries(evaluateMapping(this.c.request_headers, v))) parts.headers[k] = String(val);
    if (this.c.request_body_json !== undefined) parts.bodyJson = evaluateMapping(this.c.request_body_json, v);
    if (this.c.request_body_data !== undefined) {
      if (typeof this.c.request_body_data === 'string' && !this.c.request_body_data.includes('{{'))
        parts.bodyData = Object.fromEntries(new URLSearchParams(this.c.request_body_data));
      else
        parts.bodyData = Object.fromEntries(Object.entries(evaluateMapping(this.c.request_body_data, v)).map(([k, x]) => [k, String(x)]));
    }
    return parts;
  }

  url(vars: Vars, pathOverride: string | undefined): string {
    const v = { ...vars, parameters: this.c.$parameters ?? {} };
    const base = evaluateString(this.c.url_base, v);
    const path = pathOverride ?? evaluateString(this.c.path ?? '', v);
    if (/^https?:\/\//i.test(path)) return path;
    if (!path) return base;
    return `${base.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
  }

  /**
   * Sends one request with retries per the error handler. Returns undefined for an IGNOREd
   * response (no records from it).
   */
  async send(parts: RequestParts, vars: Vars, signal: AbortSignal): Promise<SentRequest | undefined> {
    const method = String(this.c.http_method ?? 'GET').toUpperCase();
    let attempt = 0;
    let refreshed = false;
    const started = Date.now();
    for (;;) {
      const p: RequestParts = {
        params: { ...parts.params },
        headers: { ...parts.headers },
        bodyJson: parts.bodyJson,
        bodyData: parts.bodyData,
        path: parts.path,
      };
      await this.auth.apply(p, signal);
      const u = new URL(this.url(vars, p.path));
      for (const [k, val] of Object.entries(p.params)) u.searchParams.set(k, val);
      const headers: Record<string, string> = { accept: 'application/json', ...p.headers };
      let body: string | undefined;
      if (method !== 'GET' && p.bodyJson !== undefined) {
        body = JSON.stringify(p.bodyJson);
        headers['content-type'] ??= 'application/json';
      } else if (method !== 'GET' && p.bodyData !== undefined) {
        body = new URLSearchParams(p.bodyData).toString();
        headers['content-type'] ??= 'application/x-www-form-urlencoded';
      }
      let outcome: Outcome | undefined;
      let networkError: Error | undefined;
      try {
        const res = await fetch(u, { method, headers, body, signal: AbortSignal.any([signal, AbortSignal.timeout(60_000)]) });
        const bodyText = await res.text();
        let parsed: unknown = undefined;
        if (bodyText.trim()) {
          try {
            parsed = JSON.parse(bodyText);
          } catch {
            parsed = undefined;
          }
        } else parsed = {};
        outcome = { status: res.status, headers: res.headers, bodyText, body: parsed };
      } catch (err) {
        if (signal.aborted) throw err;
        networkError = err as Error;
      }
      const where = `${method} ${safeUrl(u.toString())}`;
      let action: Action;
      let message: string | undefined;
      let handler;
      if (outcome) {
        ({ action, message, handler } = this.errors.classify(outcome));
        // Expired OAuth tokens: refresh once and try again (the CDK refreshes by expiry only).
        if (outcome.status === 401 && action === 'FAIL' && !refreshed && this.auth.refreshAfterUnauthorized) {
          refreshed = await this.auth.refreshAfterUnauthorized(signal);
          continue;
        }
        if (action === 'SUCCESS' && outcome.body === undefined)
          throw new SluiceError(`${where} returned a response that is not JSON`, {
            kind: 'source',
            where: `stream ${this.stream}`,
            hint: 'sluice reads JSON APIs only (JsonDecoder)',
          });
      } else {
        action = 'RETRY';
        handler = this.errors.classify({ status: 200, headers: new Headers(), bodyText: '', body: {} }).handler;
      }
      if (action === 'SUCCESS') return { url: u.toString(), status: outcome!.status, headers: outcome!.headers, body: outcome!.body };
      if (action === 'IGNORE') {
        this.logger.info(
          { stream: this.stream, status: outcome?.status },
          `declarative: ignoring the response of ${where} (error handler action IGNORE)`,
        );
        return undefined;
      }
      const cause = (networkError?.cause as { code?: string; message?: string } | undefined) ?? undefined;
      const what = outcome
        ? `HTTP ${outcome.status}`
        : `network error: ${networkError?.message}${cause ? ` (${cause.code ?? cause.message})` : ''}`;
      if (action === 'RETRY' || action === 'RATE_LIMITED') {
        attempt++;
        const maxTime = handler.maxTimeMs;
        const maxRetries = Math.min(handler.maxRetries, this.limits.maxRetries ?? Infinity);
        if (attempt > maxRetries || (maxTime !== undefined && Date.now() - started > maxTime)) {
          throw new SluiceError(`${where} failed after ${attempt} attempts: ${message ?? what}`, {
            kind: 'connection',
            where: `stream ${this.stream}`,
            transient: true,
            hint: 'the API kept failing or rate limiting; try again later or raise max_retries in the manifest',
          });
        }
        const wait = Math.min(this.errors.backoffMs(handler, attempt, outcome?.headers), this.limits.maxBackoffMs ?? MAX_BACKOFF_MS);
        this.logger.warn({ stream: this.stream, attempt, wait_ms: wait }, `declarative: ${where} gave ${what}; retrying`);
        await sleep(wait, signal);
        continue;
      }
      const snippet = outcome?.bodyText ? `: ${outcome.bodyText.slice(0, 200)}` : '';
      throw new SluiceError(`${where} returned ${what}${message ? ` (${message})` : snippet}`, {
        kind: 'connection',
        where: `stream ${this.stream}`,
        hint:
          outcome?.status === 401 || outcome?.status === 403
            ? 'check the credentials in the source config'
            : outcome?.status === 404
              ? 'check the config values that form the URL'
              : undefined,
      });
    }
  }
}

/** No single wait is longer than this (a Retry-After of an hour is not waited out in one go). */
const MAX_BACKOFF_MS = 300_000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
