// A connection with an overwrite stream holds back only that stream's own STATE until it ends: its
// incremental streams keep checkpointing meanwhile, so a crash mid-overwrite loses none of their
// progress (and the overwrite stream's progress is never acknowledged before its switch).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';

const source = (messages: string) => `
  import { z } from 'zod';
  import { message } from '${join(process.cwd(), 'src/protocol/messages.ts')}';
  const stream = (name, modes) => ({ name, json_schema: { type: 'object' }, supported_sync_modes: modes, source_defined_cursor: true, source_defined_primary_key: [['id']] });
  export default {
    kind: 'source',
    spec: { name: 'two', config: z.strictObject({}) },
    capabilities: { syncModes: ['full_refresh', 'incremental'], sourceDefinedCursor: true },
    async check() { return { ok: true }; },
    async discover() { return { streams: [stream('big', ['full_refresh']), stream('inc', ['incremental'])] }; },
    async *read(_c, _cat, state) {
      ${messages}
    },
  };`;

const pipeline = `version: 1
connections:
  - name: c
    source: { type: ./two.ts }
    destination: { type: jsonl, config: { path: ./out } }
    streams:
      - { name: big, sync_mode: full_refresh, destination_sync_mode: overwrite }
      - { name: inc, sync_mode: incremental, destination_sync_mode: append_dedup }
`;

describe('state held during an overwrite', () => {
  it(
    'saves the incremental streams’ checkpoints while the overwrite stream loads, and the overwrite’s only after it ends',
    { timeout: 120_000 },
    async () => {
      const dir = tempDir('ow-state-', true);
      writeFiles(dir, {
        'two.ts': source(`
        yield message.record('big', { id: 1, content: 'big one' });
        yield message.record('inc', { id: 1, content: 'inc one' });
        yield message.streamState('inc', { cursor: 1 });
        yield message.record('big', { id: 2, content: 'big two' });
        yield message.streamState('big', { page: 2 });
        yield message.record('inc', { id: 2, content: 'inc two' });
        yield message.streamState('inc', { cursor: 2 });
        throw new Error('source lost its connection');`),
        'p.yaml': pipeline,
      });
      const crashed = await runCli(['sync', 'p.yaml'], { cwd: dir });
      expect(crashed.code).not.toBe(0);
      const stateFile = join(dir, '.sluice/state/c.json');
      const afterCrash = JSON.parse(readFileSync(stateFile, 'utf8')).state;
      expect(afterCrash.streams).toEqual({ inc: { cursor: 2 } }); // big's page 2 was never acknowledged

      writeFiles(dir, {
        'two.ts': source(`
        if (state?.streams?.inc?.cursor !== 2) throw new Error('resumed from ' + JSON.stringify(state));
        yield message.record('big', { id: 1, content: 'big one' });
        yield message.streamState('big', { page: 1 });
        yield message.record('inc', { id: 3, content: 'inc three' });
        yield message.streamState('inc', { cursor: 3 });
        yield message.record('big', { id: 2, content: 'big two' });
        yield message.streamState('big', { page: 2 });`),
      });
      const resumed = await runCli(['sync', 'p.yaml', '--json'], { cwd: dir });
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(JSON.parse(resumed.stdout).connections[0].streams.inc.records_read).toBe(1);
      expect(JSON.parse(readFileSync(stateFile, 'utf8')).state.streams).toEqual({ inc: { cursor: 3 }, big: { page: 2 } });
    },
  );
});
