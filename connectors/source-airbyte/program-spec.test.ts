// The program's own `spec`: `sluice spec airbyte --pipeline` prints it, its connectionSpecification
// validates the `config:` block (at load time for `command:` programs, at `check` for both the
// source and the destination), and values it marks airbyte_secret are never printed.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { testContext } from '../../src/testing/index.ts';
import { STACK_LINE, runCli, tempDir, writeFiles } from '../../test/helpers/cli.ts';
import destination from '../destination-airbyte/index.ts';
import source from './index.ts';
import { programSpecification, validateAgainstSpec } from './program-spec.ts';

const FIXTURE = join(import.meta.dirname, 'test', 'fixture-source.mjs');
const DEST_FIXTURE = join(import.meta.dirname, '..', 'destination-airbyte', 'test', 'fixture-destination.mjs');
const SECRET = 'hunter2-very-secret';
const base = (file: string) => ({ command: [process.execPath, file], docker_args: [], env: {} });

function pipeline(sourceConfig: string, destination = `{ type: jsonl, config: { path: out.jsonl, include_embeddings: false } }`) {
  return `version: 1
connections:
  - name: notes
    source:
      type: airbyte
      config:
        command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(FIXTURE)}]
        config: ${sourceConfig}
    destination: ${destination}
    processing: { text_fields: [text], chunk_size: 200 }
    streams:
      - { name: notes, sync_mode: incremental, destination_sync_mode: append_dedup }
`;
}

describe("the airbyte program's own spec", () => {
  it('runs `spec` and validates a config against its connectionSpecification, naming paths, never values', async () => {
    const spec = await programSpecification(base(FIXTURE), import.meta.dirname);
    expect(spec.connectionSpecification.properties.password).toEqual({ type: 'string', airbyte_secret: true });
    const ok = validateAgainstSpec(spec, { password: SECRET, records: 3 });
    expect(ok).toEqual({ problems: [], secrets: [SECRET] });
    const bad = validateAgainstSpec(spec, { password: SECRET, records: 'many', state_every: 0 });
    expect(bad.problems).toEqual([
      { path: ['records'], message: "must be integer (from the program's spec)" },
      { path: ['state_every'], message: "must be >= 1 (from the program's spec)" },
    ]);
    expect(JSON.stringify(bad.problems)).not.toContain(SECRET);
  });

  it('source and destination `check` fail on a config the program’s spec rejects, before running `check`', async () => {
    const ctx = testContext();
    expect(await source.check({ ...base(FIXTURE), config: { password: 'right', records: 'many' } }, ctx)).toEqual({
      ok: false,
      message: "config does not match the program's spec: config.records: must be integer (from the program's spec)",
    });
    // The program's check was not reached (it logs this line first).
    expect(ctx.logs.some((l) => l.msg === 'checking the password')).toBe(false);
    expect(await source.check({ ...base(FIXTURE), config: { password: 'right', records: 3 } }, ctx)).toEqual({ ok: true });
    expect(await destination.check({ ...base(DEST_FIXTURE), config: { path: 5 } }, ctx)).toEqual({
      ok: false,
      message: "config does not match the program's spec: config.path: must be string (from the program's spec)",
    });
  });

  it('a program with no SPEC is a clear error', async () => {
    const broken = { command: [process.execPath, '-e', 'process.stderr.write("no spec here\\n"); process.exit(2)'] };
    await expect(programSpecification(broken, import.meta.dirname)).rejects.toThrow(
      /\(spec\) sent no SPEC message \(exit code 2\); last output: no spec here/,
    );
  });

  it(
    '`sluice spec airbyte --pipeline` prints the program’s spec; `sluice validate` reports bad config by YAML path; secrets stay hidden',
    { timeout: 60_000 },
    async () => {
      const dir = tempDir('sluice-airbyte-spec-');
      writeFiles(dir, {
        'ok.yaml': pipeline(`{ password: ${SECRET}, records: 3, echo_password: true }`),
        'bad.yaml': pipeline(`{ password: ${SECRET}, records: many }`),
        'jsonl.yaml': pipeline(`{ records: 3 }`).replace('type: airbyte', 'type: airbyte'),
      });
      const spec = await runCli(['spec', 'airbyte', '--pipeline', join(dir, 'ok.yaml')]);
      expect(spec.code, spec.stderr).toBe(0);
      const printed = JSON.parse(spec.stdout) as {
        type: string;
        spec: { connectionSpecification: { properties: Record<string, unknown> } };
      };
      expect(printed.type).toBe('SPEC');
      expect(Object.keys(printed.spec.connectionSpecification.properties)).toContain('state_every');

      // The destination here is jsonl, not a program.
      const notProgram = await runCli(['spec', 'airbyte', '--pipeline', join(dir, 'ok.yaml'), '--kind', 'destination']);
      expect(notProgram.code).not.toBe(0);
      expect(notProgram.stderr).toMatch(/the connection's destination is "jsonl"/);
      expect(notProgram.stderr).not.toMatch(STACK_LINE);

      const bad = await runCli(['validate', join(dir, 'bad.yaml')]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr + bad.stdout).toMatch(/source\.config\.config\.records.*must be integer \(from the program's spec\)/);
      expect(bad.stderr + bad.stdout).not.toContain(SECRET);
      expect(bad.stderr).not.toMatch(STACK_LINE);

      // The program logs its password at ERROR level: sluice redacts it, as the spec marks it airbyte_secret.
      const check = await runCli(['check', join(dir, 'ok.yaml')]);
      expect(check.stdout).toMatch(/notes source: FAILED — wrong password/);
      expect(check.stderr + check.stdout).toMatch(/password was \*\*\*/);
      expect(check.stderr + check.stdout).not.toContain(SECRET);
    },
  );
});
