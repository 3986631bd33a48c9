// The kit's check of a config against an outside JSON Schema (Airbyte program spec, low-code
// manifest spec): paths and expectations in the problems, never values; defaults only when asked;
// airbyte_secret values found in every branch.
import { describe, expect, it } from 'vitest';
import { airbyteSecretValues, configProblemsAgainstJsonSchema } from '../../src/cdk/index.ts';

const schema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  type: 'object',
  required: ['api_key', 'region'],
  additionalProperties: false,
  properties: {
    api_key: { type: 'string', airbyte_secret: true },
    region: { type: 'string', enum: ['eu', 'us'] },
    page_size: { type: 'integer', default: 50 },
    auth: {
      oneOf: [
        { type: 'object', properties: { password: { type: 'string', airbyte_secret: true } } },
        { type: 'object', properties: { token: { type: 'string', airbyte_secret: true } } },
      ],
    },
    hosts: { type: 'array', items: { type: 'object', properties: { key: { type: 'string', airbyte_secret: true } } } },
  },
};

describe('configProblemsAgainstJsonSchema', () => {
  it('names the path and what was expected, never the value', () => {
    const config = { api_key: 'sk-very-secret', region: 'mars', extra: 1 };
    const problems = configProblemsAgainstJsonSchema(schema, config, { origin: 'the test spec', pathPrefix: ['config'] });
    expect(problems).toEqual(
      expect.arrayContaining([
        { path: ['config', 'region'], message: 'must be equal to one of the allowed values (from the test spec)' },
        { path: ['config', 'extra'], message: 'unknown field "extra" (not in the test spec)' },
      ]),
    );
    expect(JSON.stringify(problems)).not.toContain('sk-very-secret');
    expect(JSON.stringify(problems)).not.toContain('mars');
    expect(configProblemsAgainstJsonSchema(schema, { api_key: 'k' }, { origin: 'the test spec' })).toEqual([
      { path: [], message: 'missing required field "region" (from the test spec)' },
    ]);
  });

  it('fills in defaults only when asked', () => {
    const plain = { api_key: 'k', region: 'eu' };
    expect(configProblemsAgainstJsonSchema(schema, plain, { origin: 'x' })).toEqual([]);
    expect(plain).toEqual({ api_key: 'k', region: 'eu' });
    const filled: Record<string, unknown> = { api_key: 'k', region: 'eu' };
    expect(configProblemsAgainstJsonSchema(schema, filled, { origin: 'x', useDefaults: true })).toEqual([]);
    expect(filled.page_size).toBe(50);
  });

  it('reports a schema that is not JSON Schema under its name', () => {
    expect(
      configProblemsAgainstJsonSchema({ type: 'no-such-type' }, {}, { origin: 'the spec', schemaName: 'the connectionSpecification' }),
    ).toEqual([{ path: [], message: expect.stringMatching(/^the connectionSpecification is not a valid JSON Schema: /) }]);
  });
});

describe('airbyteSecretValues', () => {
  it('finds secret values at any depth, in oneOf branches and array items', () => {
    const config = { api_key: 'a', region: 'eu', auth: { token: 'b' }, hosts: [{ key: 'c' }, { key: 'd' }] };
    expect(airbyteSecretValues(schema, config).sort()).toEqual(['a', 'b', 'c', 'd']);
    expect(airbyteSecretValues(schema, { region: 'eu' })).toEqual([]);
  });
});
