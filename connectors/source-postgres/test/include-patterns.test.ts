// include/exclude patterns: plain names are compared directly (picomatch loads only for globs);
// the answer must be picomatch's for every pattern and name.
import picomatch from 'picomatch';
import { describe, expect, it } from 'vitest';
import { globMatch } from '../db.ts';

const ALPHABET = ['a', 'B', '.', '-', '_', '1', '$', '/', '\\', ' '];

function stringsUpTo(length: number): string[] {
  const out = [''];
  let layer = [''];
  for (let n = 1; n <= length; n++) {
    layer = layer.flatMap((s) => ALPHABET.map((c) => s + c));
    out.push(...layer);
  }
  return out;
}

describe('globMatch', () => {
  it('agrees with picomatch on every pattern and name of up to 3 characters, and on odd names', () => {
    const short = stringsUpTo(3);
    const names = [...short, 'docs', 'Docs', 'x/docs', 'docs/', 'a\\b', 'a b', 'é', '.docs', 'docs.', 'prof_src.docs', 'ünï.cödé', '🙂'];
    // Patterns of the characters compared directly (the rest go to picomatch anyway), and some globs.
    const patterns = [
      ...short.filter((p) => /^[A-Za-z0-9_.-]+$/.test(p)),
      'docs',
      'prof_src.docs',
      'prof_*.docs',
      'doc?',
      '*.docs',
      '{a,b}',
      '!docs',
      'a/b',
    ];
    let disagreements = 0;
    for (const p of patterns) {
      const picomatchSays = picomatch(p, { dot: true });
      for (const n of names) if (globMatch(n, p) !== picomatchSays(n)) disagreements++;
    }
    expect(disagreements).toBe(0);
  });

  it('matches a plain name only to itself, and globs as globs', () => {
    expect(globMatch('docs', 'docs')).toBe(true);
    expect(globMatch('docs2', 'docs')).toBe(false);
    expect(globMatch('Docs', 'docs')).toBe(false);
    expect(globMatch('docs2', 'docs*')).toBe(true);
    expect(globMatch('prof_src.docs', 'prof_*.d?cs')).toBe(true);
  });
});
