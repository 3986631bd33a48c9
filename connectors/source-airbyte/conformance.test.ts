// The `airbyte` source passes the same conformance kit as every connector, running the
// protocol-speaking fixture program.
import { join } from 'node:path';
import { describeSourceConformance } from '../../src/testing/index.ts';
import source from './index.ts';

const FIXTURE = join(import.meta.dirname, 'test', 'fixture-source.mjs');

describeSourceConformance('airbyte (fixture program)', () => ({
  source,
  config: { command: [process.execPath, FIXTURE], config: { password: 'right', records: 40, state_every: 7 } },
  badConfigs: [
    { command: [process.execPath, FIXTURE], config: { password: 'wrong' } },
    { command: ['./no-such-program'], config: {} },
    { image: 'x', command: ['y'], config: {} },
  ],
}));
