// `npm run bench`: runs every test/bench/*.bench.ts (or those named on the command line) and prints
// their reports. A bench module default-exports `async () => Record<string, unknown>`.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => !wanted.length || wanted.some((w) => f.includes(w)))
  .sort();
let failed = 0;
for (const f of files) {
  const name = f.replace(/\.bench\.ts$/, '');
  process.stdout.write(`\n=== bench: ${name}\n`);
  try {
    const mod = (await import(join(dir, f))) as { default: () => Promise<Record<string, unknown>> };
    const report = await mod.default();
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } catch (err) {
    failed++;
    process.stdout.write(`bench ${name} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  }
}
process.exit(failed ? 1 : 0);
