// One throwaway PostgreSQL 15 cluster (wal_level=logical) per test run; tests read its superuser
// URL with inject('pgUrl'). See scripts/postgres-test-server.ts.
import { startPostgres } from '../../scripts/postgres-test-server.ts';
import { prepareNativePgvector, type NativePgvector } from './native-pgvector.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
    /** A database with native pgvector on that server, or why there is none. */
    nativePgvector: NativePgvector;
  }
}

export async function setup(provide: (key: string, value: unknown) => void): Promise<() => Promise<void>> {
  const server = await startPostgres();
  provide('pgUrl', server.url);
  provide('nativePgvector', await prepareNativePgvector(server.url));
  return () => server.stop();
}
