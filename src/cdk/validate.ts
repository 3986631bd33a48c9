// Checks that a loaded module exports a usable connector, so a mistake in a custom connector is
// reported as "connectors/my.ts: default export has no read() function", not as a crash later.
import type { Destination, Source } from '../protocol/connector.ts';
import { SluiceError } from '../protocol/errors.ts';

const HINT = "export default defineSource({...}) or defineDestination({...}) from 'sluice/cdk'";

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'function') return 'a function';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** Which export holds the connector: default, then `source`/`destination`, then `connector`. */
function pickExport(mod: Record<string, unknown>): { name: string; value: unknown } | undefined {
  let def = mod.default;
  // A CommonJS or double-wrapped ESM module puts the real default one level down.
  if (def && typeof def === 'object' && !('kind' in def) && 'default' in def) def = (def as Record<string, unknown>).default;
  if (def !== undefined) return { name: 'default export', value: def };
  for (const name of ['source', 'destination', 'connector']) {
    if (mod[name] !== undefined) return { name: `export "${name}"`, value: mod[name] };
  }
  return undefined;
}

/**
 * Returns the connector a module exports, or throws a SluiceError (kind config) that names the file
 * and every problem found. `expectedKind` rejects a destination where a source is needed.
 */
export function validateConnectorModule(mod: unknown, file: string, expectedKind?: 'source' | 'destination'): Source | Destination {
  const fail = (problems: string[]): never => {
    throw new SluiceError(`${file}: ${problems.join('; ')}`, { kind: 'config', where: file, hint: HINT });
  };
  if (!mod || typeof mod !== 'object') fail([`the module is ${describeValue(mod)}, not a module with exports`]);
  const picked = pickExport(mod as Record<string, unknown>);
  if (!picked) {
    const names = Object.keys(mod as object);
    fail([`no default export (nor a "source" or "destination" export)${names.length ? `; it exports ${names.join(', ')}` : ''}`]);
  }
  const { name, value } = picked!;
  if (!value || typeof value !== 'object') {
    fail([
      `${name} is ${describeValue(value)}, not a connector object${typeof value === 'function' ? ' (did you export the factory instead of calling it?)' : ''}`,
    ]);
  }
  const c = value as Record<string, unknown>;
  const problems: string[] = [];
  if (c.kind !== 'source' && c.kind !== 'destination') {
    problems.push(`${name} has kind ${JSON.stringify(c.kind)}; expected "source" or "destination"`);
  }
  const spec = c.spec as Record<string, unknown> | undefined;
  if (!spec || typeof spec !== 'object') problems.push(`${name} has no spec object`);
  else {
    if (typeof spec.name !== 'string' || !spec.name) problems.push(`${name} has no spec.name`);
    const cfg = spec.config as { safeParse?: unknown; _zod?: unknown } | undefined;
    if (!cfg || typeof cfg !== 'object' || typeof cfg.safeParse !== 'function' || !cfg._zod) {
      problems.push(`${name} has no spec.config zod schema (use z.strictObject({...}) from zod v4)`);
    }
  }
  if (typeof c.check !== 'function') problems.push(`${name} has no check() function`);
  const caps = c.capabilities as Record<string, unknown> | undefined;
  if (c.kind === 'source') {
    if (typeof c.discover !== 'function') problems.push(`${name} has no discover() function`);
    if (typeof c.read !== 'function') problems.push(`${name} has no read() function`);
    if (!caps || !Array.isArray(caps.syncModes) || caps.syncModes.length === 0) problems.push(`${name} has no capabilities.syncModes list`);
  } else if (c.kind === 'destination') {
    if (typeof c.open !== 'function') problems.push(`${name} has no open() function`);
    if (!caps || !Array.isArray(caps.destinationSyncModes) || caps.destinationSyncModes.length === 0) {
      problems.push(`${name} has no capabilities.destinationSyncModes list`);
    }
  }
  if (problems.length) fail(problems);
  if (expectedKind && c.kind !== expectedKind) {
    throw new SluiceError(`${file}: ${name} is a ${c.kind as string}, but it is used as a ${expectedKind}`, {
      kind: 'config',
      where: file,
      hint: `use it under \`${c.kind as string}:\` in the pipeline, or point ${expectedKind}.type at a ${expectedKind} module`,
    });
  }
  return c as unknown as Source | Destination;
}
