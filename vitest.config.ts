import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// `sluice/cdk` and `sluice/testing` (imported by connectors under test) map to the sources, the same
// modules the tests import, not to the build (package.json "sluice-source" export condition).
// Without "module", as vitest's own default: with it, packages such as @aws-sdk/checksums resolve to
// their bundler-only ESM build (extensionless imports), which Node cannot load.
const conditions = ['sluice-source', ...defaultServerConditions.filter((c) => c !== 'module')];

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
