// The declarative source passes the same conformance kit as every connector (spec, check,
// discover, protocol messages, schemas, primary keys, incremental state and resume without loss or
// repeats), here with the ticketing manifest (OAuth, offsets, DatetimeBasedCursor without lookback)
// against its local stand-in. (A manifest with a lookback_window re-reads that window on purpose;
// the destination's primary-key dedup makes that idempotent, so the kit's no-repeat check does not
// apply to it.)
import { afterAll, beforeAll } from 'vitest';
import { describeSourceConformance } from '../../src/testing/index.ts';
import { ticketApi, type Api } from './test/apis.ts';
import { MANIFESTS } from './test/read.ts';
import source from './index.ts';

let api: Api;
beforeAll(async () => {
  api = await ticketApi({
    clientId: 'cid',
    clientSecret: 'csecret-123456',
    refreshToken: 'rtoken-123456',
    callsPerToken: 1000,
    tickets: Array.from({ length: 24 }, (_, i) => ({
      id: i + 1,
      subject: `Ticket ${i + 1}`,
      description: `Problem ${i + 1}`,
      // Pairs share an updated_at: ties at a cursor value must not be lost or repeated either.
      updated_at: new Date(Date.UTC(2024, 0, 1 + Math.floor(i / 2), 12)).toISOString().replace('.000Z', 'Z'),
      comments: [{ id: (i + 1) * 10, body: `reply to ${i + 1}` }],
    })),
  });
});
afterAll(() => api.close());

const config = () => ({
  api_url: api.url,
  start_date: '2024-01-01T00:00:00Z',
  credentials: { client_id: 'cid', client_secret: 'csecret-123456', refresh_token: 'rtoken-123456' },
});

describeSourceConformance('declarative (ticketing manifest)', () => ({
  source,
  ctx: { baseDir: MANIFESTS },
  config: { manifest: 'tickets.yaml', config: config() },
  streams: ['tickets'],
  badConfigs: [
    { manifest: 'no-such-manifest.yaml', config: config() },
    { manifest: 'tickets.yaml', config: { ...config(), credentials: { ...config().credentials, refresh_token: 'wrong-token-000' } } },
    { manifest: 'tickets.yaml', config: { api_url: api.url } },
    { manifest: 'tickets.yaml' },
  ],
}));
