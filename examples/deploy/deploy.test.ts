// The deploy examples are checked, not just written: every Kubernetes manifest against the
// Kubernetes (and Prometheus Operator) schemas with unknown fields failing, the alert rules with
// the real promtool, every pipeline they mount with `sluice validate`, the Airflow DAGs with
// python3's byte compiler, and the Dockerfile's structure (its steps run in
// scripts/check-dockerfile.ts, in CI).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { REPO, runCli, tempDir } from '../../test/helpers/cli.ts';
import { parseDockerfile, dockerignoreExcludes } from '../../scripts/check-dockerfile.ts';

const DEPLOY = join(REPO, 'examples/deploy');
const K8S = join(DEPLOY, 'kubernetes');

type Doc = { apiVersion: string; kind: string; metadata: { name: string }; [k: string]: unknown };
// `any` data: the models' constructors each take their own resource type.
type ModelClass = { new (data: any): { validate(): void }; prototype: { validate(this: unknown): void } };

const MODELS: Record<string, ModelClass> = {
  'batch/v1/CronJob': CronJob,
  'batch/v1/Job': Job,
  'apps/v1/Deployment': Deployment,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};

/**
 * Validates `doc` with its model's JSON Schema and lists the fields the schema does not know.
 * The generated validators read every property their schema defines (and iterate free-form
 * maps), so a key of the document that the validator never read is not in the schema.
 */
function strictValidate(doc: Doc): { unknown: string[] } {
  const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) throw new Error(`no schema for ${doc.apiVersion} ${doc.kind}`);
  new Model(doc).validate(); // throws with the schema errors
  const read = new Set<string>();
  const proxies = new Map<string, object>();
  const track = (value: unknown, path: string): unknown => {
    if (!value || typeof value !== 'object') return value;
    let p = proxies.get(path);
    if (!p) {
      p = new Proxy(value as object, {
        get(target, key, receiver) {
          const v = Reflect.get(target, key, receiver);
          if (typeof key !== 'string') return v;
          read.add(`${path}/${key}`);
          return track(v, `${path}/${key}`);
        },
        getOwnPropertyDescriptor(target, key) {
          if (typeof key === 'string') read.add(`${path}/${key}`);
          return Reflect.getOwnPropertyDescriptor(target, key);
        },
      });
      proxies.set(path, p);
    }
    return p;
  };
  Model.prototype.validate.call(track({ ...doc }, ''));
  const unknown: string[] = [];
  const walk = (value: unknown, path: string) => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${path}/${i}`));
    else if (value && typeof value === 'object')
      for (const [k, v] of Object.entries(value)) {
        if (!read.has(`${path}/${k}`)) unknown.push(`${path}/${k}`);
        else walk(v, `${path}/${k}`);
      }
  };
  walk(doc, '');
  return { unknown };
}

function manifests(): Array<{ file: string; doc: Doc }> {
  const out: Array<{ file: string; doc: Doc }> = [];
  for (const file of readdirSync(K8S).filter((f) => f.endsWith('.yaml'))) {
    for (const d of parseAllDocuments(readFileSync(join(K8S, file), 'utf8'))) {
      expect(d.errors, file).toEqual([]);
      const doc = d.toJS() as Doc | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

type Container = { name: string; image: string; args?: string[]; command?: string[]; resources?: { requests?: object; limits?: object } };
type PodSpec = {
  containers: Container[];
  volumes?: Array<{ name: string; configMap?: { name: string } }>;
  securityContext?: { runAsNonRoot?: boolean };
};

function podSpec(doc: Doc): PodSpec | undefined {
  const spec = doc.spec as Record<string, any> | undefined;
  if (doc.kind === 'CronJob') return spec?.jobTemplate.spec.template.spec;
  if (doc.kind === 'Job' || doc.kind === 'Deployment') return spec?.template.spec;
  return undefined;
}

describe('Kubernetes manifests', () => {
  const all = manifests();
  const byKind = (kind: string) => all.filter((m) => m.doc.kind === kind).map((m) => m.doc);

  it('are valid against the Kubernetes and Prometheus Operator schemas, with no unknown fields', () => {
    expect(all.length).toBeGreaterThanOrEqual(10);
    for (const { file, doc } of all)
      expect([file, doc.kind, doc.metadata.name, strictValidate(doc).unknown]).toEqual([file, doc.kind, doc.metadata.name, []]);
  });

  it('the strict check catches a misspelt or misplaced field', () => {
    const deployment = byKind('Deployment')[0];
    const broken = structuredClone(deployment) as any;
    broken.spec.template.spec.containers[0].livenesProbe = broken.spec.template.spec.containers[0].livenessProbe;
    expect(strictValidate(broken).unknown).toEqual(['/spec/template/spec/containers/0/livenesProbe']);
    const misplaced = structuredClone(deployment) as any;
    misplaced.spec.resources = { limits: { memory: '1Gi' } };
    expect(strictValidate(misplaced).unknown).toEqual(['/spec/resources']);
    const rule = structuredClone(byKind('PrometheusRule')[0]) as any;
    rule.spec.groups[0].rules[0].severity = 'warning'; // belongs under labels
    expect(strictValidate(rule).unknown).toEqual(['/spec/groups/0/rules/0/severity']);
    const wrongType = structuredClone(byKind('CronJob')[0]) as any;
    wrongType.spec.schedule = 15;
    expect(() => strictValidate(wrongType)).toThrow(/schedule/);
  });

  it('has what the issue asks for: CronJob, Indexed Job, CDC Deployment with probes, PDB, monitoring', () => {
    const cron = byKind('CronJob').find((d) => d.metadata.name === 'sluice-articles')!;
    expect(podSpec(cron)!.containers[0].args).toEqual(expect.arrayContaining(['sync', '--connection=articles', '--json']));
    const job = byKind('Job')[0] as any;
    expect(job.spec.completionMode).toBe('Indexed');
    expect(job.spec.template.spec.containers[0].args).toContain(`--shards=${job.spec.completions}`);
    const deployment = byKind('Deployment')[0] as any;
    const c = deployment.spec.template.spec.containers[0];
    expect(c.args).toEqual(expect.arrayContaining(['--follow', '--metrics-port=9464', '--metrics-host=0.0.0.0', '--stall-seconds=300']));
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.ports[0]).toEqual({ name: 'metrics', containerPort: 9464 });
    expect(deployment.spec.strategy.type).toBe('Recreate');
    const pdb = byKind('PodDisruptionBudget')[0] as any;
    expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
    const monitor = byKind('ServiceMonitor')[0] as any;
    const service = byKind('Service')[0] as any;
    expect(service.spec.selector).toEqual(deployment.spec.template.metadata.labels);
    expect(monitor.spec.selector.matchLabels).toEqual(service.metadata.labels);
    expect(monitor.spec.endpoints[0].port).toBe(service.spec.ports[0].name);
    const alerts = (byKind('PrometheusRule')[0] as any).spec.groups.flatMap((g: any) => g.rules.map((r: any) => r.alert));
    expect(alerts).toEqual(expect.arrayContaining(['SluiceNoSuccessIn2h', 'SluiceErrors', 'SluiceCdcLag']));
  });

  it('every workload runs as non-root with requests and a memory limit, secrets from the Secret', () => {
    const secret = byKind('Secret')[0] as any;
    for (const doc of [...byKind('CronJob'), ...byKind('Job'), ...byKind('Deployment')]) {
      const spec = podSpec(doc)!;
      expect([doc.metadata.name, spec.securityContext?.runAsNonRoot]).toEqual([doc.metadata.name, true]);
      for (const c of spec.containers) {
        expect([doc.metadata.name, c.resources?.requests, (c.resources?.limits as any)?.memory]).toEqual([
          doc.metadata.name,
          expect.anything(),
          expect.stringMatching(/^\d+Mi$/),
        ]);
        const refs = [
          ...((c as any).envFrom ?? []).map((e: any) => e.secretRef?.name),
          ...((c as any).env ?? []).map((e: any) => e.valueFrom?.secretKeyRef?.name),
        ].filter(Boolean);
        expect(refs.every((r: string) => r === secret.metadata.name)).toBe(true);
        for (const ref of ((c as any).env ?? []).map((e: any) => e.valueFrom?.secretKeyRef?.key).filter(Boolean))
          expect(Object.keys(secret.stringData)).toContain(ref);
      }
    }
  });

  it('alert rules pass promtool', () => {
    const dir = tempDir('sluice-rules-');
    const rules = byKind('PrometheusRule').map((d) => (d as any).spec);
    const file = join(dir, 'rules.yaml');
    writeFileSync(file, JSON.stringify({ groups: rules.flatMap((r) => r.groups) }));
    const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('every pipeline the workloads mount passes `sluice validate`', async () => {
    const mounted = new Set<string>();
    for (const doc of [...byKind('CronJob'), ...byKind('Job'), ...byKind('Deployment')])
      for (const v of podSpec(doc)!.volumes ?? []) if (v.configMap) mounted.add(v.configMap.name);
    expect(mounted.size).toBeGreaterThan(0);
    const secret = byKind('Secret')[0] as any;
    for (const name of mounted) {
      const cm = byKind('ConfigMap').find((d) => d.metadata.name === name) as any;
      expect(cm, `ConfigMap ${name}`).toBeDefined();
      const dir = tempDir('sluice-cm-');
      for (const [key, text] of Object.entries(cm.data as Record<string, string>)) {
        writeFileSync(join(dir, key), text);
        // The variables come from the Secret (envFrom): the example values stand in for real ones.
        const r = await runCli(['validate', join(dir, key)], { env: { ...secret.stringData } });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain('valid (2 connections: articles, tickets)');
      }
    }
  });
});

describe('Airflow DAGs', () => {
  it('byte-compile with python3 and fail the task on a non-zero exit', () => {
    const dags = readdirSync(join(DEPLOY, 'airflow')).filter((f) => f.endsWith('.py'));
    expect(dags.sort()).toEqual(['sluice_maintenance.py', 'sluice_sync.py']);
    const out = tempDir('sluice-pyc-');
    for (const dag of dags) {
      const src = join(DEPLOY, 'airflow', dag);
      const r = spawnSync(
        'python3',
        ['-c', 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)', src, join(out, dag + 'c')],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr).toBe(0);
    }
    const sync = readFileSync(join(DEPLOY, 'airflow/sluice_sync.py'), 'utf8');
    expect(sync).toContain('KubernetesPodOperator(');
    expect(sync).toContain('BashOperator(');
    // The pod's exit code is sluice's (exec), and nothing swallows it (`|| true`, `; exit 0`).
    expect(sync).toContain('exec node /app/bin/sluice.js sync');
    expect(sync).not.toMatch(/\|\| *true|exit 0/);
    expect(sync.match(/--json/g)?.length).toBeGreaterThanOrEqual(2);
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  const stages = parseDockerfile(text);

  it('is multi-stage, installs only production dependencies in the runtime stage and runs as non-root', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
    const runs = (i: number) => stages[i].steps.filter((s) => s.op === 'RUN').map((s) => s.args);
    expect(runs(0).join('\n')).toMatch(/npm ci\b/);
    expect(runs(0).join('\n')).toMatch(/npm run build\b/);
    expect(runs(1).join('\n')).toMatch(/npm ci --omit=dev/);
    const user = stages[1].steps.filter((s) => s.op === 'USER').map((s) => s.args);
    expect(user).toEqual(['node']);
    expect(stages[1].steps.at(-2)).toEqual({ op: 'ENTRYPOINT', args: '["node", "/app/bin/sluice.js"]' });
  });

  it('copies only files that exist and that its .dockerignore lets into the build context', () => {
    const ignore = readFileSync(join(DEPLOY, 'Dockerfile.dockerignore'), 'utf8');
    for (const step of stages[0].steps.filter((s) => s.op === 'COPY' && !s.args.startsWith('--from'))) {
      const sources = step.args.split(/\s+/).slice(0, -1);
      for (const src of sources) {
        expect(existsSync(join(REPO, src)), src).toBe(true);
        expect([src, dockerignoreExcludes(ignore, src)]).toEqual([src, false]);
      }
    }
    // Tests and local state stay out; the sources stay in.
    expect(dockerignoreExcludes(ignore, 'src/cli/main.ts')).toBe(false);
    expect(dockerignoreExcludes(ignore, 'src/text/chunker.test.ts')).toBe(true);
    expect(dockerignoreExcludes(ignore, 'connectors/source-postgres/test/e2e.test.ts')).toBe(true);
    expect(dockerignoreExcludes(ignore, 'examples/.sluice/x')).toBe(true);
    expect(dockerignoreExcludes(ignore, 'node_modules/pg/package.json')).toBe(true);
  });
});
