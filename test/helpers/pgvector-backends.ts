// Runs a pgvector test suite on both servers users run it on: PGlite + pgvector (the embedded
// default, test/servers/pglite.global.ts) and native PostgreSQL 15 + pgvector (the production path:
// COPY BINARY, staging + merge; test/servers/native-pgvector.ts). Where native pgvector is not
// installed, its suite is reported as skipped with the reason in its name; with
// SLUICE_REQUIRE_PGVECTOR=1 (set by .ci/run) its absence is a failing test instead.
import { describe, inject, it } from 'vitest';

export interface PgvectorBackend {
  name: 'pglite' | 'native';
  /** Superuser URL of a database where the vector extension exists. */
  url: string;
  isPglite: boolean;
}

export const requireNativePgvector = (): boolean => process.env.SLUICE_REQUIRE_PGVECTOR === '1';

/** The native backend, or undefined with the reason it is missing. */
export function nativePgvector(): { backend?: PgvectorBackend; reason?: string } {
  const native = inject('nativePgvector');
  if ('url' in native) return { backend: { name: 'native', url: native.url, isPglite: false } };
  return { reason: native.reason };
}

/** `describe(title)` once per backend; `body` gets the backend (its url is valid inside hooks and tests). */
export function describeOnPgvectorBackends(title: string, body: (backend: PgvectorBackend) => void): void {
  describe(`${title} [PGlite]`, () => body({ name: 'pglite', url: inject('pgliteUrl'), isPglite: true }));
  describeOnNativePgvector(title, body);
}

/** `describe(title)` on native PostgreSQL + pgvector only (see the file comment for when it is missing). */
export function describeOnNativePgvector(title: string, body: (backend: PgvectorBackend) => void): void {
  const { backend, reason } = nativePgvector();
  if (backend) describe(`${title} [native PostgreSQL]`, () => body(backend));
  else if (requireNativePgvector())
    describe(`${title} [native PostgreSQL]`, () =>
      it('needs native pgvector (SLUICE_REQUIRE_PGVECTOR=1)', () => {
        throw new Error(`native pgvector is required but missing: ${reason}`);
      }));
  else describe.skip(`${title} [native PostgreSQL — not run: ${reason}]`, () => body({ name: 'native', url: '', isPglite: false }));
}
