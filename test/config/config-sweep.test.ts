// Generated sweep over every key of every built-in connector's config (issue 14): a wrong type, an
// unknown (misspelt) key and a missing environment variable each give exactly one clear line
// (file:line: YAML path: what was expected), no stack trace, exit 2, and nothing is written to
// the destination. Hundreds of cases run the real CLI entry point in-process (spawning a process
// each would take minutes); a few are spawned end to end as users run them.
import { Ajv2020 } from 'ajv/dist/2020.js';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { availableBuiltins, loadConnector } from '../../src/engine/registry.ts';
import { configJsonSchema } from '../../src/protocol/spec.ts';
import { REPO, STACK_LINE, runCli, tempDir, writeFiles } from '../helpers/cli.ts';
import { runInProcess, useInProcessCli } from '../helpers/cli-in-process.ts';

/** A valid config of each built-in (nothing here is ever contacted: every case fails validation first). */
const BASE: Record<string, Record<string, unknown>> = {
  'source-file': { path: './docs' },
  'source-postgres': { url: 'postgres://sweep:pw@127.0.0.1:9/db' },
  'source-kafka': { brokers: ['127.0.0.1:9'], topics: ['events'] },
  'source-s3': { bucket: 'sweep-bucket' },
  'source-declarative': { manifest: './manifest.yaml' },
  'source-airbyte': { command: ['node', './source.mjs'] },
  'destination-jsonl': { path: './out.jsonl' },
  'destination-pgvector': { embedded: './pg' },
  'destination-qdrant': { url: 'http://127.0.0.1:9', collection: 'sweep' },
  'destination-pinecone': { api_key: 'sweep-key-not-real', index: 'sweep' },
  'destination-airbyte': { command: ['node', './destination.mjs'] },
};
const OTHER_SIDE = {
  source: { type: 'file', config: BASE['source-file'] },
  destination: { type: 'jsonl', config: BASE['destination-jsonl'] },
};

type Json = Record<string, unknown>;
interface Case {
  kind: 'source' | 'destination';
  connector: string;
  key: string;
  what: 'wrong type' | 'unknown key' | 'missing env var';
  config: Json;
  /** The one problem line must match this. */
  expected: RegExp;
}

const ajv = new Ajv2020({ strict: false, logger: false });
/** Values of other types, tried in order: the first the key's schema rejects is "a wrong type". */
const WRONG_VALUES: unknown[] = [{ nested: { x: 1 } }, 12345, 'not-what-is-expected', true, [{ x: 1 }]];
const jsonType = (v: unknown) => (Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v === 'number' ? 'number' : typeof v);
/** The JSON types a (sub)schema accepts ("integer" counts as number); all of them when it says nothing. */
function jsonTypes(schema: Json): Set<string> {
  const out = new Set<string>();
  const visit = (s: Json) => {
    for (const t of [s.type ?? []].flat() as string[]) out.add(t === 'integer' ? 'number' : t);
    for (const alt of [...((s.anyOf as Json[]) ?? []), ...((s.oneOf as Json[]) ?? [])]) visit(alt);
    if ('const' in s) out.add(jsonType(s.const));
    if (Array.isArray(s.enum)) for (const v of s.enum) out.add(jsonType(v));
  };
  visit(schema);
  return out.size ? out : new Set(['object', 'array', 'string', 'number', 'boolean', 'null']);
}
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function cases(): Promise<Case[]> {
  const out: Case[] = [];
  for (const kind of ['source', 'destination'] as const) {
    for (const connector of availableBuiltins(kind)) {
      const base = BASE[`${kind}-${connector}`];
      expect(base, `add a valid base config for ${kind} ${connector} to this sweep`).toBeDefined();
      const c = await loadConnector(kind, connector, REPO);
      const props = (configJsonSchema(c.spec.config).properties ?? {}) as Record<string, Json>;
      for (const [key, schema] of Object.entries(props)) {
        const at = `connections\\[0\\]\\.${kind}\\.config\\.${escape(key)}`;
        const check = ajv.compile(schema);
        const accepted = jsonTypes(schema);
        const wrong = WRONG_VALUES.find((v) => !accepted.has(jsonType(v)) && !check(v));
        expect(wrong, `no wrong value found for ${kind} ${connector}.${key}`).toBeDefined();
        out.push({
          kind,
          connector,
          key,
          what: 'wrong type',
          config: { ...base, [key]: wrong },
          expected: new RegExp(`: ${at}(\\.|\\[|:)`),
        });
        // A misspelling: the last letter doubled, as fingers do.
        const typo = key + key[key.length - 1];
        out.push({
          kind,
          connector,
          key,
          what: 'unknown key',
          config: { ...base, [typo]: base[key] ?? 'x' },
          expected: new RegExp(
            `: connections\\[0\\]\\.${kind}\\.config\\.${escape(typo)}: unknown key "${escape(typo)}" — did you mean "${escape(key)}"\\?`,
          ),
        });
        const variable = `SLUICE_SWEEP_UNSET_${key.toUpperCase()}`;
        out.push({
          kind,
          connector,
          key,
          what: 'missing env var',
          config: { ...base, [key]: `\${${variable}}` },
          expected: new RegExp(`: ${at}: environment variable ${variable} is not set`),
        });
      }
    }
  }
  return out;
}

function writePipeline(dir: string, c: Case): string {
  writeFiles(dir, { 'docs/a.md': '# a\n\ntext' });
  const file = join(dir, `${c.kind}-${c.connector}-${c.key}-${c.what.replace(/ /g, '-')}.yaml`);
  writeFileSync(
    file,
    stringify({
      version: 1,
      connections: [
        {
          name: 'sweep',
          ...OTHER_SIDE,
          [c.kind]: { type: c.connector, config: c.config },
          embedding: { provider: 'hash', dimensions: 8 },
        },
      ],
    }),
  );
  return file;
}

useInProcessCli();

const all = await cases();

describe('config sweep: every key of every built-in connector', () => {
  it('covers every built-in connector and key', () => {
    const keys = new Set(all.map((c) => `${c.kind}-${c.connector}.${c.key}`));
    expect(keys.size).toBeGreaterThan(80);
    expect(all).toHaveLength(keys.size * 3);
  });

  for (const kind of ['source', 'destination'] as const) {
    for (const connector of availableBuiltins(kind)) {
      it(`${kind} ${connector}: wrong type, unknown key, missing env var → one clear line, exit 2, nothing written`, async () => {
        const dir = tempDir();
        const failures: string[] = [];
        for (const c of all.filter((x) => x.kind === kind && x.connector === connector)) {
          const file = writePipeline(dir, c);
          const r = await runInProcess(['sync', file]);
          const problems = r.stderr.split('\n').filter((l) => l.startsWith(`  ${file}:`));
          const ok =
            r.code === 2 &&
            problems.length === 1 &&
            c.expected.test(problems[0]) &&
            /^ {2}\S+\.yaml:\d+: /.test(problems[0]) &&
            !STACK_LINE.test(r.stderr) &&
            !/looks like a bug/.test(r.stderr) &&
            !r.stderr.includes('sweep-key-not-real');
          if (!ok) failures.push(`${c.key} (${c.what}): exit ${r.code}\n${r.stderr}`);
        }
        expect(failures).toEqual([]);
        // Nothing but the pipeline files and the corpus: no output file, no embedded database, no state.
        expect(readdirSync(dir).filter((f) => !f.endsWith('.yaml') && f !== 'docs')).toEqual([]);
      });
    }
  }
});

describe('config sweep, spawned end to end', () => {
  const pick = (kind: string, connector: string, key: string, what: Case['what']) =>
    all.find((c) => c.kind === kind && c.connector === connector && c.key === key && c.what === what)!;
  it.each([
    pick('source', 'postgres', 'port', 'wrong type'),
    pick('destination', 'pgvector', 'table', 'unknown key'),
    pick('source', 'kafka', 'brokers', 'missing env var'),
    pick('destination', 'pinecone', 'api_key', 'wrong type'),
  ])('$kind $connector: $key ($what)', async (c) => {
    const dir = tempDir();
    const r = await runCli(['sync', writePipeline(dir, c)]);
    const problems = r.stderr.split('\n').filter((l) => /^ {2}\S+\.yaml:\d+: /.test(l));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(c.expected);
    expect(r.stderr).not.toMatch(STACK_LINE);
    expect(r.stderr).not.toContain('sweep-key-not-real');
    expect(r.code).toBe(2);
    expect(readdirSync(dir).filter((f) => !f.endsWith('.yaml') && f !== 'docs')).toEqual([]);
  });
});
