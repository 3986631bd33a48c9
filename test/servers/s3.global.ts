// One in-memory S3 server (fauxqs) per test run, on 127.0.0.1 only; tests read its endpoint with
// inject('s3Endpoint') and talk to it with @aws-sdk/client-s3 (forcePathStyle: true, any keys).
// It runs in the vitest main process, so test workers' memory measures only the code under test.
import { buildApp } from 'fauxqs';

declare module 'vitest' {
  export interface ProvidedContext {
    s3Endpoint: string;
  }
}

export async function setup(provide: (key: string, value: unknown) => void): Promise<() => Promise<void>> {
  // startFauxqs() binds 0.0.0.0; building the app ourselves keeps it on loopback.
  const app = buildApp({ logger: false });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  provide('s3Endpoint', address);
  return async () => {
    await app.close();
  };
}
