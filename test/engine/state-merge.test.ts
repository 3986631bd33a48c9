// Workers sharing a connection (stateMerge: 'deep') persist only the state they changed: a stale
// start-up view of another worker's streams must never roll that worker's progress back.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli, tempDir, writeFiles } from '../helpers/cli.ts';

describe('deep state merge', () => {
  it('persists only the streams this worker advanced', async () => {
    const dir = tempDir('state-merge-', true);
    writeFiles(dir, {
      '.sluice/state/c.json': JSON.stringify({
        version: 1,
        state: { streams: { t: { offsets: { '0': '10' } }, u: { offsets: { '0': '5' } } } },
      }),
      'worker.ts': `
        import { z } from 'zod';
        import { resolve } from 'node:path';
        import { FileStateStore } from '${join(process.cwd(), 'src/state/index.ts')}';
        import { message } from '${join(process.cwd(), 'src/protocol/messages.ts')}';
        const stream = (name) => ({ name, json_schema: { type: 'object' }, supported_sync_modes: ['incremental'], source_defined_cursor: true, source_defined_primary_key: [['id']] });
        export default {
          kind: 'source',
          spec: { name: 'worker', config: z.strictObject({}) },
          capabilities: { syncModes: ['incremental'], sourceDefinedCursor: true, stateMerge: 'deep' },
          async check() { return { ok: true }; },
          async discover() { return { streams: [stream('t'), stream('u')] }; },
          async *read(_c, _cat, state, ctx) {
            // Another worker advances stream u while this one runs.
            const store = new FileStateStore(resolve(ctx.workDir, '../..'));
            await store.update('c', (s) => ({ ...s, streams: { ...s.streams, u: { offsets: { '0': '99' } } } }));
            yield message.record('t', { id: 1, content: 'one' });
            yield message.streamState('t', { offsets: { ...state.streams.t.offsets, '1': '3' } });
          },
        };`,
      'p.yaml': `version: 1
connections:
  - name: c
    source: { type: ./worker.ts }
    destination: { type: jsonl, config: { path: ./out.jsonl } }
`,
    });
    const r = await runCli(['sync', 'p.yaml'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const saved = JSON.parse(readFileSync(join(dir, '.sluice/state/c.json'), 'utf8')).state;
    expect(saved.streams.t.offsets).toEqual({ '0': '10', '1': '3' });
    expect(saved.streams.u.offsets).toEqual({ '0': '99' });
  });
});
