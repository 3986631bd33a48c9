import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileStateStore, applyStateMessage, mergeConnectionState } from '../../src/state/index.ts';
import { chunkId, chunkUuid, documentId, uuidV5 } from '../../src/protocol/identity.ts';
import { message } from '../../src/protocol/messages.ts';
import { tempDir } from '../helpers/cli.ts';

describe('identity', () => {
  it('UUIDv5 matches the RFC 4122 reference vector', () => {
    expect(uuidV5('www.example.com', '6ba7b810-9dad-11d1-80b4-00c04fd430c8')).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
  });
  it('document ids are stable for single, numeric and composite keys', () => {
    expect(documentId({ id: 42 }, [['id']])).toBe('42');
    expect(documentId({ id: 42n as unknown as number }, [['id']])).toBe('42');
    expect(documentId({ a: 'x', b: 7 }, [['a'], ['b']])).toBe('["x","7"]');
    expect(documentId({ user: { id: 'u1' } }, [['user', 'id']])).toBe('u1');
    expect(() => documentId({ id: null }, [['id']])).toThrow(/no value for primary key field "id"/);
  });
  it('chunk ids are pure functions of (stream, document, index)', () => {
    expect(chunkId('doc', 3)).toBe('doc#3');
    const u = chunkUuid('s', 'doc', 3);
    expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(chunkUuid('s', 'doc', 3)).toBe(u);
    expect(chunkUuid('t', 'doc', 3)).not.toBe(u);
  });
});

describe('state', () => {
  it('applies STREAM and GLOBAL messages', () => {
    let s = applyStateMessage(undefined, message.streamState('a', { c: 1 }).state);
    s = applyStateMessage(s, message.globalState({ lsn: '0/10' }, { b: { x: 1 } }).state);
    expect(s).toEqual({ streams: { a: { c: 1 }, b: { x: 1 } }, shared: { lsn: '0/10' } });
  });

  it('deep merge keeps what other workers checkpointed', () => {
    const stored = { streams: { t: { offsets: { '0': '10', '1': '20' } } } };
    const mine = { streams: { t: { offsets: { '1': '25' } } } };
    expect(mergeConnectionState(stored, mine, 'deep')).toEqual({ streams: { t: { offsets: { '0': '10', '1': '25' } } } });
    expect(mergeConnectionState(stored, mine, 'replace')).toEqual(mine);
  });

  it('the file store writes atomically and serialises concurrent updates', async () => {
    const dir = tempDir();
    const store = new FileStateStore(dir);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => store.update('c', (prev) => ({ streams: { ...(prev?.streams ?? {}), [`s${i}`]: { n: i } } }))),
    );
    const loaded = await store.load('c');
    expect(Object.keys(loaded!.streams)).toHaveLength(20);
    await store.reset('c', ['s0']);
    expect((await store.load('c'))!.streams.s0).toBeUndefined();
    await store.reset('c');
    expect(await store.load('c')).toBeUndefined();
  });

  it('a corrupt state file is a clear error that says how to recover', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'c.json'), '{not json');
    await expect(new FileStateStore(dir).load('c')).rejects.toThrow(/not valid JSON/);
    expect(readFileSync(join(dir, 'c.json'), 'utf8')).toBe('{not json');
  });
});
