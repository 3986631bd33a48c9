// `npm run test:soak`: the long and heavy reliability cases (docs/reliability.md), kept out of
// `npm test`. Same servers as the main suite (test/global-setup.ts); one file at a time.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/soak/**/*.soak.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
    maxWorkers: 1,
  },
});
