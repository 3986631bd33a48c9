// The S3 source passes the same conformance kit as every connector (spec, check, discover,
// protocol messages, schema, primary keys, incremental state and resume without loss or repeats).
import { afterAll, beforeAll, inject } from 'vitest';
import { describeSourceConformance } from '../../src/testing/index.ts';
import { TEST_CREDENTIALS, freshBucket, put, testClient } from '../../test/fixtures/s3.ts';
import source from './index.ts';

const endpoint = inject('s3Endpoint');
const client = testClient(endpoint);
let docs: string;
let rows: string;

beforeAll(async () => {
  docs = await freshBucket(client, 'conf-docs');
  rows = await freshBucket(client, 'conf-rows');
  await Promise.all(
    Array.from({ length: 30 }, (_, i) => put(client, docs, `kb/page-${String(i).padStart(2, '0')}.md`, `# Page ${i}\n\nbody ${i}`)),
  );
  await Promise.all(
    Array.from({ length: 6 }, (_, f) =>
      put(
        client,
        rows,
        `t/part-${f}.jsonl`,
        Array.from({ length: 5 }, (_, r) => JSON.stringify({ id: f * 5 + r, body: `row ${f}/${r}` })).join('\n'),
      ),
    ),
  );
});
afterAll(() => client.destroy());

const common = () => ({ endpoint, force_path_style: true, ...TEST_CREDENTIALS });

describeSourceConformance('s3 (text documents)', () => ({
  source,
  config: { ...common(), bucket: docs, prefix: 'kb/' },
  badConfigs: [
    { ...common(), bucket: 'no-such-bucket-anywhere' },
    { ...common(), bucket: docs, endpoint: 'http://127.0.0.1:9' },
    { ...common(), bucket: docs, secret_access_key: undefined },
    { ...common(), bucket: docs, format: 'xml' },
  ],
}));

describeSourceConformance('s3 (jsonl rows)', () => ({
  source,
  config: { ...common(), bucket: rows, prefix: 't/', primary_key: 'id' },
}));
