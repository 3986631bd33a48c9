// A user's `npm install sluice` resolves our ranges against today's registry, not our lock file.
// Packages released in lockstep with exact peer pins (the PGlite family: pglite-socket 0.2.18 wants
// pglite 0.5.15 exactly, while pglite-pgvector 0.0.15 wants 0.5.14) break that install with
// ERESOLVE as soon as one of them publishes, if we depend on them by caret. So: a dependency that
// pins a peer exactly must itself be pinned exactly, and the peer we also depend on must be pinned
// to that same version.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { dependencies: Record<string, string> };
const exactVersion = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;

// Read from the top-level node_modules (npm hoists direct dependencies there; some packages'
// `exports` hide their package.json from require.resolve).
function installedManifest(name: string): { version: string; peerDependencies?: Record<string, string> } {
  return JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, root), 'utf8'));
}

function lockstepProblems(dependencies: Record<string, string>, peersOf: (name: string) => Record<string, string>): string[] {
  const problems: string[] = [];
  for (const [name, range] of Object.entries(dependencies)) {
    for (const [peer, peerRange] of Object.entries(peersOf(name))) {
      if (!exactVersion.test(peerRange)) continue;
      if (!exactVersion.test(range)) problems.push(`${name} pins its peer ${peer}@${peerRange}, so depend on it exactly (not "${range}")`);
      const ours = dependencies[peer];
      if (ours !== undefined && ours !== peerRange) problems.push(`${name} wants ${peer}@${peerRange}, package.json has "${ours}"`);
    }
  }
  return problems;
}

describe('dependency pins', () => {
  it('packages that pin their peers exactly are pinned exactly, to the versions those peers want', () => {
    const peersOf = (name: string) => {
      const installed = installedManifest(name);
      expect(installed.version, `${name} installed`).toBeTruthy();
      return installed.peerDependencies ?? {};
    };
    expect(lockstepProblems(manifest.dependencies, peersOf)).toEqual([]);
    // The rule is not vacuous: the PGlite family is in scope.
    expect(Object.keys(installedManifest('@electric-sql/pglite-socket').peerDependencies ?? {})).toContain('@electric-sql/pglite');
  });

  it('catches the caret that broke installs', () => {
    const peers: Record<string, Record<string, string>> = {
      '@electric-sql/pglite-socket': { '@electric-sql/pglite': '0.5.15' },
      '@electric-sql/pglite-pgvector': { '@electric-sql/pglite': '0.5.14' },
    };
    const problems = lockstepProblems(
      { '@electric-sql/pglite': '^0.5.14', '@electric-sql/pglite-socket': '^0.2.17', '@electric-sql/pglite-pgvector': '0.0.15' },
      (name) => peers[name] ?? {},
    );
    expect(problems).toEqual([
      '@electric-sql/pglite-socket pins its peer @electric-sql/pglite@0.5.15, so depend on it exactly (not "^0.2.17")',
      '@electric-sql/pglite-socket wants @electric-sql/pglite@0.5.15, package.json has "^0.5.14"',
      '@electric-sql/pglite-pgvector wants @electric-sql/pglite@0.5.14, package.json has "^0.5.14"',
    ]);
  });
});
