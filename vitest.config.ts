import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// `sluice/cdk` and `sluice/testing` (imported by connectors under test) map to the sources, the same
// modules the tests import, not to the build (package.json "sluice-source" export condition).
const conditions = ['sluice-source', ...defaultServerConditions];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ['sluice-source'] } },
  test: {
    include: ['test/**/*.test.ts', 'connectors/**/*.test.ts', 'src/**/*.test.ts', 'examples/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    maxWorkers: 2,
  },
});
