// Runs the steps of examples/deploy/Dockerfile without a Docker engine: each stage gets a clean
// directory standing in for its root filesystem, COPY copies what the .dockerignore lets into
// the build context, RUN runs in the stage's WORKDIR (npm downloads from the registry into a
// throwaway cache), and the finished runtime stage must start sluice with production
// dependencies only. Not an image build (no base image, no USER switch): it proves the steps
// work and the result runs. CI runs it (.ci/run); it needs the npm registry and a few minutes.
//
//   npx tsx scripts/check-dockerfile.ts [--keep]
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import picomatch from 'picomatch';

export interface Step {
  op: string;
  args: string;
}
export interface Stage {
  base: string;
  name: string;
  steps: Step[];
}

/** Stages and their instructions (line continuations joined, comments and parser directives dropped). */
export function parseDockerfile(text: string): Stage[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  const stages: Stage[] = [];
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile: cannot parse "${line}"`);
    const op = m[1].toUpperCase();
    const args = m[2].trim();
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`Dockerfile: cannot parse FROM ${args}`);
      stages.push({ base: f[1], name: f[2] ?? String(stages.length), steps: [] });
    } else {
      if (!stages.length) throw new Error(`Dockerfile: ${op} before FROM`);
      stages.at(-1)!.steps.push({ op, args });
    }
  }
  return stages;
}

/** Whether a path (relative to the context) is left out of the build context (Docker's rules: last match wins, a matched directory covers its contents). */
export function dockerignoreExcludes(ignoreText: string, path: string): boolean {
  const rules = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!');
      const pattern = (negated ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
      return { negated, match: picomatch(pattern, { dot: true }) };
    });
  const parts = path.split('/');
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let excluded = false;
  for (const rule of rules) if (candidates.some((c) => rule.match(c))) excluded = !rule.negated;
  return excluded;
}

function copyFiltered(context: string, ignore: string, src: string, dest: string): void {
  const abs = join(context, src);
  if (!existsSync(abs)) throw new Error(`COPY ${src}: not in the build context`);
  const walk = (rel: string) => {
    if (dockerignoreExcludes(ignore, rel)) {
      // An excluded directory can still hold re-included files (e.g. `**` then `!src/**`).
      if (!statSync(join(context, rel)).isDirectory()) return;
    }
    const from = join(context, rel);
    const to = join(dest, relative(src, rel));
    if (statSync(from).isDirectory()) {
      if (rel.split('/').includes('node_modules') || rel.split('/').includes('.git')) return;
      for (const entry of readdirSync(from)) walk(rel === '.' ? entry : `${rel}/${entry}`);
    } else {
      mkdirSync(dirname(to), { recursive: true });
      cpSync(from, to);
    }
  };
  if (statSync(abs).isDirectory()) walk(src.replace(/\/+$/, ''));
  else {
    if (dockerignoreExcludes(ignore, src)) throw new Error(`COPY ${src}: excluded by the .dockerignore`);
    mkdirSync(dirname(dest), { recursive: true });
    cpSync(abs, dest);
  }
}

export function runDockerfile(opts: { dockerfile: string; context: string; ignoreFile: string; root: string }): { runtimeApp: string } {
  const stages = parseDockerfile(readFileSync(opts.dockerfile, 'utf8'));
  const ignore = readFileSync(opts.ignoreFile, 'utf8');
  const npmCache = join(opts.root, 'npm-cache');
  const roots = new Map<string, string>();
  let lastWorkdir = '';
  for (const stage of stages) {
    const root = join(opts.root, 'stage-' + stage.name);
    mkdirSync(root, { recursive: true });
    roots.set(stage.name, root);
    const inRoot = (p: string, cwd: string) => (p.startsWith('/') ? join(root, p) : resolve(cwd, p));
    let workdir = root;
    const env: Record<string, string> = {};
    process.stdout.write(`== stage ${stage.name} (FROM ${stage.base})\n`);
    for (const { op, args } of stage.steps) {
      process.stdout.write(`   ${op} ${args}\n`);
      if (op === 'WORKDIR') {
        workdir = inRoot(args, workdir);
        mkdirSync(workdir, { recursive: true });
      } else if (op === 'ENV') {
        const m = /^(\w+)[= ](.*)$/.exec(args);
        if (!m) throw new Error(`ENV ${args}: expected NAME=value`);
        env[m[1]] = m[2];
      } else if (op === 'COPY') {
        const words = args.split(/\s+/);
        const from = words[0].startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
        const dest = words.pop()!;
        for (const src of words) {
          const target =
            dest.endsWith('/') || words.length > 1 ? join(inRoot(dest, workdir), src.split('/').pop()!) : inRoot(dest, workdir);
          if (from) {
            const fromRoot = roots.get(from);
            if (!fromRoot) throw new Error(`COPY --from=${from}: no such stage before ${stage.name}`);
            const source = join(fromRoot, src);
            if (!existsSync(source)) throw new Error(`COPY --from=${from} ${src}: missing in that stage`);
            cpSync(source, target, { recursive: true });
          } else copyFiltered(opts.context, ignore, src, target);
        }
      } else if (op === 'RUN') {
        const r = spawnSync('sh', ['-ec', args], {
          cwd: workdir,
          stdio: 'inherit',
          env: {
            PATH: process.env.PATH ?? '',
            HOME: join(root, 'home'),
            npm_config_cache: npmCache,
            npm_config_update_notifier: 'false',
            ...env,
          },
        });
        if (r.status !== 0) throw new Error(`RUN ${args}: exit ${r.status}`);
      } else if (!['USER', 'EXPOSE', 'ENTRYPOINT', 'CMD', 'LABEL', 'ARG'].includes(op)) {
        throw new Error(`Dockerfile: ${op} is not handled by this check`);
      }
    }
    lastWorkdir = workdir;
  }
  return { runtimeApp: lastWorkdir };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const root = mkdtempSync(join(tmpdir(), 'sluice-dockerfile-'));
  const started = Date.now();
  let failed = false;
  try {
    const { runtimeApp } = runDockerfile({
      dockerfile: join(repo, 'examples/deploy/Dockerfile'),
      context: repo,
      ignoreFile: join(repo, 'examples/deploy/Dockerfile.dockerignore'),
      root,
    });
    const sluice = (...args: string[]) => {
      const r = spawnSync(process.execPath, [join(runtimeApp, 'bin/sluice.js'), ...args], { cwd: root, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`sluice ${args.join(' ')} in the runtime stage: exit ${r.status}\n${r.stderr}`);
      return r.stdout;
    };
    // The runtime stage runs with production dependencies only.
    for (const dev of ['vitest', 'prettier', 'kubernetes-models', 'fauxqs'])
      if (existsSync(join(runtimeApp, 'node_modules', dev))) throw new Error(`runtime stage has the dev dependency ${dev}`);
    // Compiled JavaScript only: no TypeScript sources (bin/ would run them through tsx) and no tests.
    if (existsSync(join(runtimeApp, 'src'))) throw new Error('runtime stage has the TypeScript sources (src/)');
    const leftovers = readdirSync(join(runtimeApp, 'dist'), { recursive: true }).filter((f) => /\.test\.[cm]?[jt]s$/.test(String(f)));
    if (leftovers.length) throw new Error(`runtime stage has test files: ${leftovers.join(', ')}`);
    process.stdout.write(`sluice ${sluice('--version').trim()} runs from the runtime stage\n`);
    if (!sluice('connectors').includes('pgvector')) throw new Error('sluice connectors does not list pgvector');
    const pipeline = join(root, 'pipeline.yaml');
    writeFileSync(pipeline, readFileSync(join(repo, 'examples/quickstart.yaml'), 'utf8'));
    mkdirSync(join(root, 'corpus'));
    process.stdout.write(sluice('validate', pipeline));
    process.stdout.write(`Dockerfile steps OK in ${Math.round((Date.now() - started) / 1000)}s\n`);
  } catch (err) {
    failed = true;
    process.stderr.write(`Dockerfile check failed: ${(err as Error).message}\n`);
  } finally {
    if (process.argv.includes('--keep')) process.stdout.write(`kept ${root}\n`);
    else rmSync(root, { recursive: true, force: true });
  }
  process.exit(failed ? 1 : 0);
}
