// One in-memory PGlite with pgvector, served over the PostgreSQL wire protocol on loopback by
// @electric-sql/pglite-socket (several client connections, one PGlite session behind them).
// Tests read its URL with inject('pgliteUrl') and talk to it through `pg`.
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { keepQueriesTogether } from '../../connectors/destination-pgvector/pglite-queue.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteUrl: string;
  }
}

export async function setup(provide: (key: string, value: unknown) => void): Promise<() => Promise<void>> {
  const db = await PGlite.create({ extensions: { vector } });
  await db.exec('CREATE EXTENSION IF NOT EXISTS vector');
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 16 });
  keepQueriesTogether(server); // test files query it at once
  await server.start();
  provide('pgliteUrl', `postgres://postgres:postgres@${server.getServerConn()}/postgres?sslmode=disable`);
  return async () => {
    await server.stop();
    await db.close();
  };
}
