// collectSecrets walks a connector's zod schema next to its config value. It must find at least what
// the walk over the config's JSON Schema found (the previous implementation, kept here as the
// reference), for every built-in connector, and must not take ordinary values for secrets.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { collectSecrets } from '../../src/config/config-secrets.ts';
import { redact } from '../../src/config/secrets.ts';
import { availableBuiltins, loadConnector } from '../../src/engine/registry.ts';
import { configJsonSchema } from '../../src/protocol/spec.ts';

type Json = Record<string, unknown>;
const unique = (tag: string) => `${tag.replace(/[^a-z0-9]/gi, '')}-${randomBytes(6).toString('hex')}`;
const isRegistered = (s: string) => redact(`<${s}>`) === '<***>';

/** The previous collectSecrets: walks the JSON Schema; reports what it would register. */
function referenceSecrets(schema: z.ZodType, value: unknown): { secrets: unknown[]; urls: string[] } {
  const secrets: unknown[] = [];
  const urls: string[] = [];
  const walk = (s: Json | undefined, v: unknown) => {
    if (!s || v === undefined || v === null) return;
    if (s.airbyte_secret === true) secrets.push(v);
    if (typeof v === 'string') urls.push(v);
    for (const alt of [...((s.anyOf as unknown[]) ?? []), ...((s.oneOf as unknown[]) ?? []), ...((s.allOf as unknown[]) ?? [])])
      walk(alt as Json, v);
    if (Array.isArray(v)) for (const item of v) walk(s.items as Json, item);
    else if (typeof v === 'object') {
      const props = (s.properties ?? {}) as Record<string, Json>;
      for (const [k, child] of Object.entries(v as Json)) walk(props[k] ?? (s.additionalProperties as Json), child);
    }
  };
  walk(configJsonSchema(schema), value);
  return { secrets, urls };
}

/** A value with every property the JSON Schema describes (each union's options merged), strings made by `leaf`. */
function fullValue(s: Json | undefined, path: string, leaf: (path: string) => string): unknown {
  if (!s) return leaf(path);
  const options = [...((s.anyOf as Json[]) ?? []), ...((s.oneOf as Json[]) ?? []), ...((s.allOf as Json[]) ?? [])];
  const objectLike = [s, ...options].filter((o) => o.properties);
  if (objectLike.length) {
    const out: Json = {};
    for (const o of objectLike)
      for (const [k, child] of Object.entries(o.properties as Record<string, Json>)) out[k] ??= fullValue(child, `${path}.${k}`, leaf);
    return out;
  }
  const arrayLike = [s, ...options].find((o) => o.type === 'array' && o.items && typeof o.items === 'object');
  if (arrayLike) return [fullValue(arrayLike.items as Json, `${path}[]`, leaf)];
  return leaf(path);
}

const builtins = (['source', 'destination'] as const).flatMap((kind) => availableBuiltins(kind).map((name) => ({ kind, name })));

describe('collectSecrets', () => {
  it.each(builtins)('finds every secret the JSON Schema walk found: $kind $name', async ({ kind, name }) => {
    const connector = await loadConnector(kind, name, process.cwd());
    const schema = connector.spec.config as z.ZodType;

    const plain = fullValue(configJsonSchema(schema), name, unique);
    const { secrets } = referenceSecrets(schema, plain);
    collectSecrets(schema, plain);
    for (const s of secrets.filter((x): x is string => typeof x === 'string')) expect(isRegistered(s), s).toBe(true);

    const passwords: string[] = [];
    const withUrls = fullValue(configJsonSchema(schema), name, (path) => {
      const pw = unique(path);
      passwords.push(pw);
      return `postgres://user:${pw}@db.example:5432/app`;
    });
    const { urls } = referenceSecrets(schema, withUrls);
    collectSecrets(schema, withUrls);
    for (const url of urls) expect(isRegistered(new URL(url).password), url).toBe(true);
  });

  it('the built-ins with secret fields are covered (the comparison above is not empty)', async () => {
    const found: string[] = [];
    for (const { kind, name } of builtins) {
      const schema = (await loadConnector(kind, name, process.cwd())).spec.config as z.ZodType;
      if (referenceSecrets(schema, fullValue(configJsonSchema(schema), name, unique)).secrets.length) found.push(`${kind}-${name}`);
    }
    expect(found).toEqual(expect.arrayContaining(['destination-pinecone', 'destination-qdrant']));
  });

  it('follows unions, pipes, lazy and recursive schemas, records, tuples, intersections and catchall', () => {
    const secret = () => z.string().meta({ secret: true });
    type Tree = { key?: string; children?: Tree[] };
    const tree: z.ZodType<Tree> = z.lazy(() => z.object({ key: secret().optional(), children: z.array(tree).optional() }));
    const schema = z.strictObject({
      auth: z.union([z.object({ kind: z.literal('token'), token: secret() }), z.object({ kind: z.literal('basic'), password: secret() })]),
      trimmed: z.preprocess((v) => (typeof v === 'string' ? v.trim() : v), secret()),
      headers: z.record(z.string(), secret()),
      pair: z.tuple([z.string(), secret()]),
      both: z.intersection(z.object({ a: secret() }), z.object({ b: z.string() })),
      extra: z.object({ known: z.string() }).catchall(secret()),
      tree: tree.optional(),
      wrapped: secret().nullable().default('x').readonly(),
      name: z.string(),
    });
    const v = {
      auth: { kind: 'basic', password: unique('basic') },
      trimmed: unique('trimmed'),
      headers: { Authorization: unique('header') },
      pair: [unique('first'), unique('second')],
      both: { a: unique('a'), b: unique('b') },
      extra: { known: unique('known'), other: unique('other') },
      tree: { children: [{ children: [{ key: unique('deep') }] }] },
      wrapped: unique('wrapped'),
      name: unique('name'),
    };
    collectSecrets(schema, v);
    for (const s of [
      v.auth.password,
      v.trimmed,
      v.headers.Authorization,
      v.pair[1],
      v.both.a,
      v.extra.other,
      v.tree.children[0].children[0].key,
      v.wrapped,
    ])
      expect(isRegistered(s!), s).toBe(true);
    // Ordinary values stay visible.
    for (const s of [v.name, v.pair[0], v.both.b, v.extra.known]) expect(isRegistered(s), s).toBe(false);
  });

  it("takes a custom connector's `airbyte_secret: true` meta for a secret, as the JSON Schema walk did", () => {
    const schema = z.object({ key: z.string().meta({ airbyte_secret: true }), name: z.string() });
    const v = { key: unique('key'), name: unique('name') };
    expect(referenceSecrets(schema, v).secrets).toEqual([v.key]);
    collectSecrets(schema, v);
    expect(isRegistered(v.key)).toBe(true);
    expect(isRegistered(v.name)).toBe(false);
  });

  it('registers the password of a URL anywhere in the config, and nothing else of it', () => {
    const pw = unique('pw');
    const host = unique('host');
    collectSecrets(z.object({ nested: z.array(z.any()) }), { nested: [{ deep: `postgres://user:${pw}@${host}:5432/db` }] });
    expect(isRegistered(pw)).toBe(true);
    expect(isRegistered(host)).toBe(false);
  });
});
