// Finds the secrets in a connector's config by walking its zod schema next to the value. (It used to
// walk the config's JSON Schema, but z.toJSONSchema of a connector schema costs ~3–9 ms, paid
// on every start-up.) The walk errs towards finding more: it follows every branch a value may have
// been read by (each union option, both sides of a pipe, lazy and recursive schemas).
import { z } from 'zod';
import { registerSecret, registerUrlPassword } from './secrets.ts';

/** Registers config values whose schema is marked `.meta({ secret: true })` (or `airbyte_secret: true`), and every URL password. */
export function collectSecrets(schema: z.ZodType, value: unknown): void {
  registerUrlPasswords(value);
  markSecrets(schema, value, new Set());
}

function registerUrlPasswords(value: unknown): void {
  if (typeof value === 'string') registerUrlPassword(value);
  else if (Array.isArray(value)) for (const item of value) registerUrlPasswords(item);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) registerUrlPasswords(v);
}

type Def = { type: string } & Record<string, unknown>;
const asSchema = (x: unknown): z.ZodType | undefined => (x && typeof x === 'object' && '_zod' in x ? (x as z.ZodType) : undefined);

/** `seen`: the schemas already applied to this same value (ends cycles of lazy and wrapper schemas). */
function markSecrets(schema: z.ZodType | undefined, value: unknown, seen: Set<z.ZodType>): void {
  if (!schema || value === undefined || value === null || seen.has(schema)) return;
  seen.add(schema);
  // `secret: true` is sluice's mark; `airbyte_secret: true` in a custom connector's meta reached the
  // JSON Schema as it is, and the walk over that found it too.
  const meta = z.globalRegistry.get(schema);
  if (meta?.secret === true || meta?.airbyte_secret === true) registerSecret(value);
  const def = (schema as unknown as { _zod: { def: Def } })._zod.def;
  const same = (s: unknown) => markSecrets(asSchema(s), value, seen);
  const child = (s: unknown, v: unknown) => markSecrets(asSchema(s), v, new Set());
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'nonoptional':
    case 'catch':
    case 'readonly':
    case 'promise':
    case 'success':
      return same(def.innerType);
    case 'pipe':
      same(def.in);
      return same(def.out);
    case 'lazy':
      return same((def.getter as () => unknown)());
    case 'union':
      for (const option of def.options as unknown[]) same(option);
      return;
    case 'intersection':
      same(def.left);
      return same(def.right);
    case 'object': {
      if (typeof value !== 'object' || Array.isArray(value)) return;
      const shape = def.shape as Record<string, unknown>;
      for (const [k, v] of Object.entries(value)) child(Object.hasOwn(shape, k) ? shape[k] : def.catchall, v);
      return;
    }
    case 'record':
      if (typeof value === 'object' && !Array.isArray(value)) for (const v of Object.values(value)) child(def.valueType, v);
      return;
    case 'array':
      if (Array.isArray(value)) for (const item of value) child(def.element, item);
      return;
    case 'tuple':
      if (Array.isArray(value)) value.forEach((item, i) => child((def.items as unknown[])[i] ?? def.rest, item));
      return;
  }
}
