// specs/pipeline.schema.json, as an editor uses it: validate pipeline YAML with ajv against it.
// Built-in connectors' configs are described (a `tabel:` typo is flagged), `${VAR}` references are
// allowed anywhere, custom connectors keep a free-form config.
import { Ajv2020 } from 'ajv/dist/2020.js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { availableBuiltins } from '../../src/engine/registry.ts';
import { REPO } from '../helpers/cli.ts';

const SCHEMA_FILE = join(REPO, 'specs/pipeline.schema.json');
const schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8'));
const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

function errorsOf(doc: unknown): string[] {
  if (validate(doc)) return [];
  return (validate.errors ?? []).map(
    (e) => `${e.instancePath} ${e.message}${e.params && 'additionalProperty' in e.params ? ` ${e.params.additionalProperty}` : ''}`,
  );
}

const quickstartText = readFileSync(join(REPO, 'examples/quickstart.yaml'), 'utf8');
const quickstart = () => parse(quickstartText);

describe('specs/pipeline.schema.json', () => {
  it('accepts the example pipeline, whose first line points the editor at the schema', () => {
    expect(errorsOf(quickstart())).toEqual([]);
    const modeline = /^# yaml-language-server: \$schema=(\S+)$/m.exec(quickstartText);
    expect(modeline).not.toBeNull();
    expect(resolve(dirname(join(REPO, 'examples/quickstart.yaml')), modeline![1])).toBe(SCHEMA_FILE);
  });

  it('flags a `tabel:` typo in the pgvector config', () => {
    const doc = quickstart();
    doc.connections[0].destination.config.tabel = 'docs';
    expect(errorsOf(doc)).toContain('/connections/0/destination/config must NOT have additional properties tabel');
  });

  it('flags a wrong type in a connector config, but not a ${VAR} reference', () => {
    const doc = quickstart();
    doc.connections[0].source.config.checkpoint_every = 'often';
    expect(errorsOf(doc).some((e) => e.startsWith('/connections/0/source/config/checkpoint_every'))).toBe(true);
    doc.connections[0].source.config.checkpoint_every = '${EVERY:-100}';
    doc.connections[0].processing.chunk_size = '${CHUNK}';
    expect(errorsOf(doc)).toEqual([]);
  });

  it.each(['source', 'destination'] as const)('describes the config of every built-in %s', (kind) => {
    for (const name of availableBuiltins(kind)) {
      expect(schema.$defs[`${kind}-${name}`]?.type, name).toBe('object');
      const doc = quickstart();
      doc.connections[0][kind] = { type: name, config: { surely_not_a_key: 1 } };
      expect(errorsOf(doc), name).toContain(`/connections/0/${kind}/config must NOT have additional properties surely_not_a_key`);
    }
  });

  it('leaves the config of a custom connector free', () => {
    const doc = quickstart();
    doc.connections[0].source = { type: './connectors/my-api.ts', config: { anything: [1, 2], goes: true } };
    expect(errorsOf(doc)).toEqual([]);
  });

  it('its $id is where an installed sluice serves it', () => {
    expect(schema.$id).toBe('sluice/specs/pipeline.schema.json');
    expect(createRequire(join(REPO, 'package.json')).resolve(schema.$id)).toBe(SCHEMA_FILE);
  });
});
