// DefaultPaginator (CursorPagination, OffsetIncrement, PageIncrement) and NoPagination, with the
// CDK's semantics: the page token goes where page_token_option says (a RequestOption, or
// RequestPath = the token is the next URL/path), the page size where page_size_option says.
import { SluiceError } from '../../src/cdk/index.ts';
import { evaluate, evaluateBoolean, type Vars } from './interpolation.ts';
import type { Component } from './manifest.ts';
import { injectOption, type RequestParts } from './requester.ts';

export interface PageResult {
  body: unknown;
  headers: Record<string, unknown>;
  records: Record<string, unknown>[];
  url: string;
}

/** One paginated read: first the initial token, then next() after each page until it says stop. */
export interface PaginationRun {
  /** The token of the page about to be requested (undefined on a first page without one). */
  token: unknown;
  /** Adds this page's token and page size to the request. */
  inject(parts: RequestParts, vars: Vars): void;
  /** Moves to the next page; false when there is none. */
  next(page: PageResult, vars: Vars): boolean;
}

export function paginationRun(c: Component | undefined, urlBase: string): PaginationRun {
  if (!c || c.type === 'NoPagination') {
    return { token: undefined, inject: () => {}, next: () => false };
  }
  const strategy: Component = c.pagination_strategy ?? {};
  const params = (vars: Vars) => ({ ...vars, parameters: c.$parameters ?? vars.parameters });
  const pageSizeOf = (vars: Vars): number | undefined => {
    const v = evaluate(strategy.page_size, params(vars));
    if (v === undefined || v === null || v === '') return undefined;
    const n = Number(v);
    if (!Number.isFinite(n))
      throw new SluiceError(`${strategy.type}.page_size evaluates to ${JSON.stringify(v)}, not a number`, { kind: 'config' });
    return n;
  };
  let token: unknown;
  switch (strategy.type) {
    case 'OffsetIncrement':
      token = strategy.inject_on_first_request ? 0 : undefined;
      break;
    case 'PageIncrement':
      token = strategy.inject_on_first_request ? Number(strategy.start_from_page ?? 0) : undefined;
      break;
    case 'CursorPagination':
      token = undefined;
      break;
    default:
      throw new SluiceError(`unsupported pagination strategy ${strategy.type}`, { kind: 'config' });
  }
  let page = Number(strategy.start_from_page ?? 0);
  let offset = 0;
  const run: PaginationRun = {
    get token() {
      return token;
    },
    inject(parts, vars) {
      const v = params(vars);
      const size = pageSizeOf(vars);
      if (size !== undefined && c.page_size_option) injectOption(parts, c.page_size_option, size, v);
      if (token !== undefined && c.page_token_option) {
        let value = token;
        // A RequestPath token is the next URL; the part after url_base becomes the path.
        if (c.page_token_option.type === 'RequestPath' && typeof value === 'string' && urlBase && value.startsWith(urlBase))
          value = value.slice(urlBase.length);
        injectOption(parts, c.page_token_option, value, v);
      }
    },
    next(p, vars) {
      const size = pageSizeOf(vars);
      const v = {
        ...params(vars),
        response: p.body,
        headers: p.headers,
        last_record: p.records[p.records.length - 1],
        last_page_size: p.records.length,
        last_page_token_value: token,
      };
      switch (strategy.type) {
        case 'CursorPagination': {
          if (strategy.stop_condition && evaluateBoolean(strategy.stop_condition, v)) return false;
          const next = evaluate(strategy.cursor_value, v);
          if (next === undefined || next === null || next === '' || (typeof next === 'object' && Object.keys(next as object).length === 0))
            return false;
          token = next;
          return true;
        }
        case 'OffsetIncrement': {
          if ((size !== undefined && p.records.length < size) || p.records.length === 0) return false;
          offset += p.records.length;
          token = offset;
          return true;
        }
        case 'PageIncrement': {
          if ((size !== undefined && p.records.length < size) || p.records.length === 0) return false;
          page += 1;
          token = page;
          return true;
        }
      }
      return false;
    },
  };
  return run;
}
