// The fixture's referee: the OpenAPI validator must accept what Qdrant accepts and catch what it
// rejects, otherwise "validated against the vendor's document" would mean nothing.
import { describe, expect, it } from 'vitest';
import { loadOpenApi } from '../../test/fixtures/openapi.ts';

const POINTS = '/collections/{collection_name}/points';

describe('OpenAPI validator on qdrant-openapi.json', () => {
  it('matches concrete paths to templates, literal segments first', async () => {
    const v = await loadOpenApi('qdrant-openapi.json');
    expect(v.matchPath('put', '/collections/docs_3/points')).toEqual({ template: POINTS, params: { collection_name: 'docs_3' } });
    expect(v.matchPath('post', '/collections/aliases')?.template).toBe('/collections/aliases');
    expect(v.matchPath('post', '/collections/x/points/scroll')?.template).toBe('/collections/{collection_name}/points/scroll');
    expect(v.matchPath('get', '/nope/nothing')).toBeUndefined();
  });

  it('checks request bodies through $refs, anyOf and vendor formats', async () => {
    const v = await loadOpenApi('qdrant-openapi.json');
    expect(v.validateRequest('put', POINTS, { points: [{ id: 1, vector: [0.1, 0.2], payload: { a: null } }] })).toEqual([]);
    expect(v.validateRequest('put', POINTS, { points: [{ id: '550e8400-e29b-41d4-a716-446655440000', vector: [1] }] })).toEqual([]);
    expect(v.validateRequest('put', POINTS, { points: [{ id: 'doc#1', vector: [1] }] }).join(' ')).toContain('/points/0/id');
    expect(v.validateRequest('put', POINTS, { points: [{ id: -1, vector: [1] }] }).join(' ')).toContain('/points/0/id');
    expect(v.validateRequest('put', POINTS, { points: [{ vector: [1] }] }).length).toBeGreaterThan(0);
    expect(
      v.validateRequest('post', '/collections/{collection_name}/points/delete', {
        filter: { must: [{ key: 'k', match: { value: 'x' } }] },
      }),
    ).toEqual([]);
    expect(
      v.validateRequest('post', '/collections/{collection_name}/points/delete', {
        filter: { must: [{ key: 'k', range: { gte: 'high' } }] },
      }).length,
    ).toBeGreaterThan(0);
  });

  it('checks responses, including nullable fields and error bodies', async () => {
    const v = await loadOpenApi('qdrant-openapi.json');
    expect(
      v.validateResponse('put', POINTS, 200, { result: { operation_id: 3, status: 'completed' }, status: 'ok', time: 0.001, usage: null }),
    ).toEqual([]);
    expect(
      v.validateResponse('put', POINTS, 200, { result: { operation_id: 3, status: 'done' }, status: 'ok', time: 0.001 }).join(' '),
    ).toContain('/result/status');
    expect(
      v.validateResponse('put', POINTS, 200, { result: { operation_id: -3, status: 'completed' }, status: 'ok', time: 0 }).length,
    ).toBeGreaterThan(0);
    expect(v.validateResponse('put', POINTS, 400, { status: { error: 'Wrong input' }, time: 0 })).toEqual([]);
    expect(v.validateResponse('put', POINTS, 400, { status: { error: 42 }, time: 0 }).length).toBeGreaterThan(0);
    const info = {
      status: 'green',
      optimizer_status: 'ok',
      segments_count: 1,
      payload_schema: {},
      config: {
        params: {},
        hnsw_config: { m: 16, ef_construct: 100, full_scan_threshold: 10 },
        optimizer_config: { default_segment_number: 0, flush_interval_sec: 5 },
      },
    };
    expect(v.validateResponse('get', '/collections/{collection_name}', 200, { result: info, status: 'ok', time: 0 })).toEqual([]);
    expect(
      v.validateResponse('get', '/collections/{collection_name}', 200, { result: { ...info, status: 'blue' }, status: 'ok', time: 0 })
        .length,
    ).toBeGreaterThan(0);
  });

  it('checks query parameters', async () => {
    const v = await loadOpenApi('qdrant-openapi.json');
    expect(v.validateQuery('put', POINTS, new URLSearchParams('wait=true&ordering=strong'))).toEqual([]);
    expect(v.validateQuery('put', POINTS, new URLSearchParams('wait=soon'))).toHaveLength(1);
    expect(v.validateQuery('put', POINTS, new URLSearchParams('flush=1'))[0]).toContain('not accepted');
  });

  it('reads YAML documents too (Pinecone data plane)', async () => {
    const v = await loadOpenApi('pinecone-db_data_2025-10.oas.yaml');
    expect(v.validateRequest('post', '/vectors/upsert', { vectors: [{ id: 'a#0', values: [0.1] }] })).toEqual([]);
    expect(v.validateRequest('post', '/vectors/upsert', { vectors: [{ values: [0.1] }] })[0]).toContain("'id'");
  });
});
