// The Qdrant fixture's aliases behave like Qdrant's (what `sluice reindex` relies on): every point
// and collection operation resolves an alias; one POST /collections/aliases applies all of its
// actions or none; an alias may not take a collection's name (nor a collection an alias's); deleting
// a collection drops its aliases. Requests and responses are checked against Qdrant's OpenAPI document.
import { QdrantClient } from '@qdrant/js-client-rest';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startQdrantFixture, type QdrantFixture } from '../../test/fixtures/qdrant-server.ts';

let fx: QdrantFixture;
let client: QdrantClient;
beforeAll(async () => {
  fx = await startQdrantFixture();
  client = new QdrantClient({ url: fx.url, checkCompatibility: false });
  for (const [name, size] of [
    ['a_1', 2],
    ['a_2', 3],
  ] as const)
    await client.createCollection(name, { vectors: { size, distance: 'Dot' } });
  await client.upsert('a_1', { wait: true, points: [{ id: 1, vector: [1, 0], payload: { g: 1 } }] });
  await client.upsert('a_2', { wait: true, points: [{ id: 1, vector: [0, 1, 0], payload: { g: 2 } }] });
});
afterAll(async () => {
  await fx?.close();
  expect(fx.violations).toEqual([]);
});

const errorOf = (p: Promise<unknown>) =>
  p.then(
    () => 'no error',
    (e: { status?: number; data?: { status?: { error?: string } } }) => `${e.status} ${e.data?.status?.error}`,
  );

it('point and collection operations resolve an alias; GET /aliases and /collections/{name}/aliases list it', async () => {
  await client.updateCollectionAliases({ actions: [{ create_alias: { alias_name: 'a', collection_name: 'a_1' } }] });
  expect((await client.getCollection('a')).config.params.vectors).toMatchObject({ size: 2 });
  await client.upsert('a', { wait: true, points: [{ id: 2, vector: [0, 1], payload: { g: 1 } }] });
  expect((await client.count('a', { exact: true })).count).toBe(2);
  expect(fx.pointsOf('a_1')).toHaveLength(2);
  expect((await client.scroll('a', { limit: 10 })).points.map((p) => p.id)).toEqual([1, 2]);
  expect((await client.getAliases()).aliases).toEqual([{ alias_name: 'a', collection_name: 'a_1' }]);
  expect((await client.getCollectionAliases('a_1')).aliases).toEqual([{ alias_name: 'a', collection_name: 'a_1' }]);
  await client.batchUpdate('a', { wait: true, operations: [{ delete_payload: { keys: ['g'], filter: { must: [{ has_id: [2] }] } } }] });
  expect(fx.pointsOf('a_1').map((p) => p.payload)).toEqual([{ g: 1 }, {}]);
});

it('several actions in one request switch atomically: all of them, or none when one fails', async () => {
  await client.updateCollectionAliases({
    actions: [
      { delete_alias: { alias_name: 'a' } },
      { create_alias: { alias_name: 'a', collection_name: 'a_2' } },
      { create_alias: { alias_name: 'a_prev', collection_name: 'a_1' } },
    ],
  });
  expect(fx.aliases.get('a')).toBe('a_2');
  expect(fx.aliases.get('a_prev')).toBe('a_1');
  // The last action names a missing collection: the whole request fails, nothing moved.
  const failed = await errorOf(
    client.updateCollectionAliases({
      actions: [
        { delete_alias: { alias_name: 'a' } },
        { create_alias: { alias_name: 'a', collection_name: 'a_1' } },
        { create_alias: { alias_name: 'a_x', collection_name: 'missing' } },
      ],
    }),
  );
  expect(failed).toMatch(/^404 .*missing/);
  expect(fx.aliases.get('a')).toBe('a_2');
  expect(fx.aliases.has('a_x')).toBe(false);
  // Deleting an alias that does not exist fails the request too.
  expect(
    await errorOf(
      client.updateCollectionAliases({
        actions: [{ delete_alias: { alias_name: 'a_prev' } }, { delete_alias: { alias_name: 'nope' } }],
      }),
    ),
  ).toMatch(/^404 /);
  expect(fx.aliases.get('a_prev')).toBe('a_1');
});

it('an alias may not take a collection name, nor a collection an alias name', async () => {
  expect(
    await errorOf(client.updateCollectionAliases({ actions: [{ create_alias: { alias_name: 'a_1', collection_name: 'a_2' } }] })),
  ).toMatch(/^400 .*already exists/);
  expect(await errorOf(client.createCollection('a', { vectors: { size: 2, distance: 'Dot' } }))).toMatch(/^400 .*already exists/);
  expect(fx.collections.has('a')).toBe(false);
});

it('deleting a collection drops its aliases; operations on a dangling name are 404', async () => {
  await client.deleteCollection('a_1');
  expect(fx.aliases.has('a_prev')).toBe(false);
  expect(fx.aliases.get('a')).toBe('a_2');
  expect(await errorOf(client.count('a_prev', { exact: true }))).toMatch(/^404 /);
});
