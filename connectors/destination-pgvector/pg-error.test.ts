// pgError turns driver errors into one clear line: a socket the server closed is named as such.
import { describe, expect, it } from 'vitest';
import { pgError } from './session.ts';

describe('pgError', () => {
  it('names a connection the server closed (EPIPE, ECONNRESET) and keeps the driver text', () => {
    for (const [code, text] of [
      ['EPIPE', 'write EPIPE'],
      ['ECONNRESET', 'read ECONNRESET'],
    ]) {
      const err = pgError(Object.assign(new Error(text), { code }), 'connection c, stream s', 'cannot write table exp.docs');
      expect(err.message).toBe(`cannot write table exp.docs: the database server closed the connection (${text})`);
      expect(err.kind).toBe('connection');
      expect(err.transient).toBe(true);
    }
  });

  it('leaves other network errors as the driver says them', () => {
    const err = pgError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'w');
    expect(err.message).toBe('cannot reach the database: connect ECONNREFUSED 127.0.0.1:1');
    expect(err.kind).toBe('connection');
  });
});
