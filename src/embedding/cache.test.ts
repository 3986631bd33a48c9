import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { openEmbeddingCache } from './index.ts';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'sluice-cache-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const vector = (seed: number, dims = 8) => Float32Array.from({ length: dims }, (_, i) => Math.sin(seed * 31 + i));

/** Runs a script in another Node process (with tsx, like the CLI) that writes to the cache. */
function writeFromChildProcess(dir: string, from: number, count: number): Promise<void> {
  const cacheModule = resolve(import.meta.dirname, 'cache.ts');
  const script = `
    const { openEmbeddingCache } = await import(${JSON.stringify(cacheModule)});
    const cache = await openEmbeddingCache(${JSON.stringify(dir)});
    for (let batch = 0; batch < ${count}; batch += 50) {
      const entries = [];
      for (let i = ${from} + batch; i < ${from} + Math.min(${count}, batch + 50); i++)
        entries.push(['k' + i, Float32Array.from({ length: 8 }, (_, j) => Math.sin(i * 31 + j))]);
      await cache.putMany(entries);
    }
    await cache.close();
  `;
  return new Promise((ok, fail) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`child exited ${code}: ${stderr}`))));
  });
}

describe('embedding cache', () => {
  it('returns hits and misses in key order, with exact vectors', async () => {
    const cache = await openEmbeddingCache(tempDir());
    await cache.putMany([
      ['a', vector(1)],
      ['c', vector(3)],
    ]);
    const [a, b, c] = await cache.getMany(['a', 'b', 'c']);
    expect(a).toEqual(vector(1));
    expect(b).toBeUndefined();
    expect(c).toEqual(vector(3));
    expect(await cache.getMany([])).toEqual([]);
    await cache.close();
  });

  it('persists across re-open and across processes, with two processes writing at once', async () => {
    const dir = tempDir();
    const cache = await openEmbeddingCache(dir);
    // A second process writes while this one writes too.
    const child = writeFromChildProcess(dir, 0, 300);
    for (let i = 1000; i < 1300; i += 50) {
      await cache.putMany(Array.from({ length: 50 }, (_, j) => [`k${i + j}`, vector(i + j)] as [string, Float32Array]));
    }
    await child;
    const fromChild = await cache.getMany(['k0', 'k150', 'k299']);
    expect(fromChild).toEqual([vector(0), vector(150), vector(299)]);
    await cache.close();

    const reopened = await openEmbeddingCache(dir);
    const keys = [...Array.from({ length: 300 }, (_, i) => `k${i}`), ...Array.from({ length: 300 }, (_, i) => `k${1000 + i}`), 'missing'];
    const values = await reopened.getMany(keys);
    expect(values.filter((v) => v !== undefined)).toHaveLength(600);
    expect(values[599]).toEqual(vector(1299));
    expect(values[600]).toBeUndefined();
    await reopened.close();
  });

  it('overwrites a key with the latest vector', async () => {
    const dir = tempDir();
    const cache = await openEmbeddingCache(dir);
    await cache.putMany([['x', vector(1, 4)]]);
    await cache.putMany([['x', vector(2, 4)]]);
    expect((await cache.getMany(['x']))[0]).toEqual(vector(2, 4));
    await cache.close();
  });
});
