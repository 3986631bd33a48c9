// `npm run build` (also run by `prepack`): compiles src/ and connectors/ to dist/ (JavaScript and
// .d.ts, tsconfig.build.json) and copies the non-TypeScript files the compiled code loads at run
// time (worker .mjs files), so the published package never runs TypeScript of its own.
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// `node scripts/build.mjs <dir>` builds into another directory (the loader tests do).
const dist = resolve(process.argv[2] ?? join(root, 'dist'));
rmSync(dist, { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', dist], { stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);

const RUNTIME_ASSET = /\.(mjs|cjs)$/;
let copied = 0;
for (const top of ['src', 'connectors']) {
  for (const entry of readdirSync(join(root, top), { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !RUNTIME_ASSET.test(entry.name) || /\.test\./.test(entry.name)) continue;
    const from = join(entry.parentPath, entry.name);
    cpSync(from, join(dist, relative(root, from)));
    copied++;
  }
}
console.log(`built ${relative(process.cwd(), dist) || dist} (${copied} runtime asset${copied === 1 ? '' : 's'} copied)`);
