// sluice's protocol messages are Airbyte protocol messages: every constructor's output validates
// against the shared airbyte_protocol.yaml.
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { message } from '../../src/protocol/messages.ts';
import { connectorSpecification } from '../../src/protocol/spec.ts';
import { protocolValidators, sharedSpecsDir } from '../../src/testing/index.ts';
import fileSource from '../../connectors/source-file/index.ts';
import jsonl from '../../connectors/destination-jsonl/index.ts';

describe('protocol messages validate against the Airbyte schema', () => {
  it('finds the shared schema', () => {
    expect(existsSync(join(sharedSpecsDir(), 'airbyte_protocol.yaml'))).toBe(true);
  });

  const v = () => protocolValidators()!;
  const cases = {
    record: message.record('s', { id: 1, text: 'x' }),
    deletion: message.deletion('s', { id: 1 }),
    streamState: message.streamState('s', { cursor: '2024-01-01' }),
    globalState: message.globalState({ lsn: '0/16B3748' }, { s: { snapshot: 'done' } }),
    log: message.log('WARN', 'careful'),
    streamStatus: message.streamStatus('s', 'COMPLETE'),
    estimate: message.estimate('s', 1000, 123456),
    error: message.error('it broke', 'config_error', 's'),
    spec: { type: 'SPEC', spec: connectorSpecification(fileSource) },
    destinationSpec: { type: 'SPEC', spec: connectorSpecification(jsonl) },
    connectionStatus: { type: 'CONNECTION_STATUS', connectionStatus: { status: 'SUCCEEDED' } },
  };
  it.each(Object.entries(cases))('%s', (_name, msg) => {
    const ok = v().message(msg);
    expect(v().message.errors ?? [], JSON.stringify(msg)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('a malformed message is rejected (the validator is real)', () => {
    expect(v().message({ type: 'RECORD', record: { stream: 's' } })).toBe(false);
    expect(v().message({ type: 'STATE', state: { type: 'NOPE' } })).toBe(false);
  });
});
