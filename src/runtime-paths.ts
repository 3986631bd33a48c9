// Where sluice's own files are, whether it runs from its TypeScript sources (a checkout, tests) or
// from the compiled package (dist/src/…, dist/connectors/…).
import { dirname, extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);

/** The extension of sluice's own modules: '.ts' when running the sources, '.js' when built. */
export const MODULE_EXT: '.ts' | '.js' = extname(here) === '.ts' ? '.ts' : '.js';

/** The directory holding src/ and connectors/: the checkout, or dist/ in the package. */
export const CODE_ROOT = resolve(dirname(here), '..');

/** The package root (package.json, specs/). */
export const PACKAGE_ROOT = MODULE_EXT === '.ts' ? CODE_ROOT : resolve(CODE_ROOT, '..');
