// Loading custom connectors: a module that does not export a valid connector gets an error naming
// the file and exactly what is missing; `sluice test-connector <module>` reports and exits non-zero.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { defineDestination, defineSource, validateConnectorModule, z } from 'sluice/cdk';

const ROOT = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(ROOT, '.tmp-cdk-validate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const source = defineSource({
  spec: { name: 'ok', config: z.strictObject({}) },
  streams: [
    {
      name: 's',
      schema: z.object({ id: z.number() }),
      primaryKey: 'id',
      async *read() {
        yield { id: 1 };
      },
    },
  ],
});

describe('validateConnectorModule', () => {
  it('accepts a default export, a named source/destination export and a CommonJS-style double default', () => {
    expect(validateConnectorModule({ default: source }, 'a.ts')).toBe(source);
    expect(validateConnectorModule({ source }, 'a.ts')).toBe(source);
    expect(validateConnectorModule({ default: { default: source } }, 'a.js')).toBe(source);
    const dest = defineDestination({
      spec: { name: 'd', config: z.strictObject({}) },
      connect: async () => ({ writeBatch: async () => {}, close: async () => {} }),
    });
    expect(validateConnectorModule({ destination: dest }, 'd.ts', 'destination')).toBe(dest);
  });

  it('names the file and exactly what is missing', () => {
    const { read: _r, ...noRead } = source;
    expect(() => validateConnectorModule({ default: noRead }, 'connectors/my.ts')).toThrow(
      'connectors/my.ts: default export has no read() function',
    );
    expect(() =>
      validateConnectorModule({ default: { ...source, spec: { name: 'x', config: { type: 'object' } }, discover: 1 } }, 'c.ts'),
    ).toThrow(
      'c.ts: default export has no spec.config zod schema (use z.strictObject({...}) from zod v4); default export has no discover() function',
    );
    expect(() => validateConnectorModule({ helper: 1, other: 2 }, 'c.ts')).toThrow(
      'c.ts: no default export (nor a "source" or "destination" export); it exports helper, other',
    );
    expect(() => validateConnectorModule({ default: () => source }, 'c.ts')).toThrow(
      'c.ts: default export is a function, not a connector object (did you export the factory instead of calling it?)',
    );
    expect(() => validateConnectorModule({ default: { ...source, kind: 'sink' } }, 'c.ts')).toThrow(
      'c.ts: default export has kind "sink"; expected "source" or "destination"',
    );
    expect(() => validateConnectorModule({ default: source }, 'c.ts', 'destination')).toThrow(
      'c.ts: default export is a source, but it is used as a destination',
    );
    try {
      validateConnectorModule({}, 'c.ts');
    } catch (err) {
      expect((err as { kind: string }).kind).toBe('config');
      expect((err as { hint: string }).hint).toContain("from 'sluice/cdk'");
    }
  });
});

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/sluice.js'), ...args], { cwd: dir, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('sluice test-connector <module>', () => {
  it('fails a connector whose records violate its schema, saying which record and field, exit 1', async () => {
    writeFileSync(
      join(dir, 'bad.ts'),
      `import { defineSource, z } from 'sluice/cdk';
export default defineSource({
  spec: { name: 'bad', config: z.strictObject({ rows: z.number().default(3) }) },
  streams: [{ name: 'things', schema: z.object({ id: z.number(), label: z.string() }), primaryKey: 'id',
    async *read({ config }) { for (let i = 1; i <= config.rows; i++) yield { id: i, label: i === 2 ? null : 'x' } as never; } }],
});
`,
    );
    const r = await cli(['test-connector', './bad.ts', '--config', '{"rows":3}']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('source bad: FAILED');
    expect(r.stdout).toContain('✗ read.records-match-schema: stream "things", record 2 (id=2): /label must be string');
    expect(r.stdout).toContain('10 passed, 1 failed, 0 skipped, 6 not applicable (17 checks)');
  });

  it('reports a module without a connector as a config error naming the file, no stack trace', async () => {
    writeFileSync(join(dir, 'empty.ts'), `export const helper = 1;\n`);
    const r = await cli(['test-connector', './empty.ts']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${join(dir, 'empty.ts')}: no default export (nor a "source" or "destination" export); it exports helper`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
