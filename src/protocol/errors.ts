// Errors are for people (invariant 7): every failure a user can cause or fix is a SluiceError
// with what failed and what to do. Anything else is a bug and is reported as one.

export type ErrorKind = 'config' | 'connection' | 'source' | 'destination' | 'embedding' | 'internal' | 'interrupted';

export class SluiceError extends Error {
  readonly kind: ErrorKind;
  /** What the user can do about it. */
  readonly hint?: string;
  /** Where: file, YAML path, connection, stream, record position… */
  readonly where?: string;
  /** Transient failures may succeed on retry (network, 429, 5xx). */
  readonly transient: boolean;

  constructor(message: string, opts: { kind?: ErrorKind; hint?: string; where?: string; cause?: unknown; transient?: boolean } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'SluiceError';
    this.kind = opts.kind ?? 'internal';
    this.hint = opts.hint;
    this.where = opts.where;
    this.transient = opts.transient ?? false;
  }
}

export const configError = (message: string, where?: string, hint?: string) => new SluiceError(message, { kind: 'config', where, hint });

/** Adds context ("stream docs", "connection x") to an error without losing its kind or hint. */
export function withContext(err: unknown, where: string): SluiceError {
  if (err instanceof SluiceError) {
    const merged = err.where ? mergeWhere(where, err.where) : where;
    return new SluiceError(err.message, {
      kind: err.kind,
      hint: err.hint,
      where: merged,
      cause: err.cause ?? err,
      transient: err.transient,
    });
  }
  const e = err as NodeJS.ErrnoException | undefined;
  return new SluiceError(describeUnknown(err), { kind: 'internal', where, cause: err, transient: isTransientNetworkError(e) });
}

/** "connection c, stream docs" + "stream docs, table t" → "connection c, stream docs, table t" (no part twice). */
function mergeWhere(outer: string, inner: string): string {
  const parts = outer.split(', ');
  for (const p of inner.split(', ')) if (!parts.includes(p)) parts.push(p);
  return parts.join(', ');
}

export function describeUnknown(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

const TRANSIENT_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
  // PostgreSQL SQLSTATEs of a server shutting down or starting up (restart, failover).
  '57P01',
  '57P02',
  '57P03',
]);
export function isTransientNetworkError(err: NodeJS.ErrnoException | undefined): boolean {
  return !!err && typeof err.code === 'string' && TRANSIENT_CODES.has(err.code);
}
