// RecordSelector: DpathExtractor (field_path with `*` wildcards), RecordFilter, the
// AddFields / RemoveFields transformations and the default schema normalization.
import { evaluate, evaluateBoolean, evaluateString, type Vars } from './interpolation.ts';
import type { Component } from './manifest.ts';

type Rec = Record<string, unknown>;

/** Values at a dpath (segments may be `*`, which fans out over a list or mapping). */
export function dpathValues(root: unknown, path: readonly string[]): unknown[] {
  let nodes: unknown[] = [root];
  for (const seg of path) {
    const next: unknown[] = [];
    for (const n of nodes) {
      if (n === null || typeof n !== 'object') continue;
      if (seg === '*') next.push(...(Array.isArray(n) ? n : Object.values(n)));
      else if (Array.isArray(n)) {
        if (/^\d+$/.test(seg) && Number(seg) < n.length) next.push(n[Number(seg)]);
      } else if (seg in (n as Rec)) next.push((n as Rec)[seg]);
    }
    nodes = next;
  }
  return nodes;
}

/** DpathExtractor: the records of a response body. */
export function extractRecords(extractor: Component | undefined, body: unknown, vars: Vars): Rec[] {
  const path: string[] = ((extractor?.field_path ?? []) as unknown[]).map((p) =>
    evaluateString(p, { ...vars, parameters: extractor?.$parameters ?? vars.parameters }),
  );
  const wildcard = path.includes('*');
  const found = path.length ? dpathValues(body, path) : [body];
  const out: Rec[] = [];
  for (const v of found) {
    if (Array.isArray(v)) {
      for (const x of v) if (x && typeof x === 'object' && !Array.isArray(x)) out.push(x as Rec);
    } else if (v && typeof v === 'object') {
      // A mapping is one record (with a wildcard path: one per match).
      if (wildcard || path.length || Object.keys(v).length) out.push(v as Rec);
    }
  }
  return out;
}

export class RecordSelector {
  constructor(
    private readonly c: Component,
    private readonly transformations: Component[],
    private readonly schema: Record<string, unknown> | undefined,
  ) {}

  select(body: unknown, vars: Vars): Rec[] {
    const params = { ...vars, parameters: this.c.$parameters ?? vars.parameters };
    let records = extractRecords(this.c.extractor, body, params);
    const filter = this.c.record_filter;
    if (filter?.condition) records = records.filter((record) => evaluateBoolean(filter.condition, { ...params, record }));
    for (const t of this.transformations) records = records.map((r) => transform(t, r, params));
    if (this.c.schema_normalization === 'Default' && this.schema) records = records.map((r) => normalize(r, this.schema!));
    return records;
  }
}

function transform(t: Component, record: Rec, vars: Vars): Rec {
  const v = { ...vars, parameters: t.$parameters ?? vars.parameters, record };
  if (t.condition && !evaluateBoolean(t.condition, v)) return record;
  if (t.type === 'AddFields') {
    const out = structuredClone(record);
    for (const f of (t.fields ?? []) as Component[]) {
      const path: string[] = (f.path ?? []).map((p: unknown) => evaluateString(p, v));
      let value = evaluate(f.value, { ...v, record: out });
      value = castValue(value, f.value_type);
      let node: Rec = out;
      for (const p of path.slice(0, -1)) {
        if (!node[p] || typeof node[p] !== 'object') node[p] = {};
        node = node[p] as Rec;
      }
      node[path[path.length - 1]] = value === undefined ? null : value;
    }
    return out;
  }
  if (t.type === 'RemoveFields') {
    const out = structuredClone(record);
    for (const pointer of (t.field_pointers ?? []) as string[][])
      removePath(
        out,
        pointer.map((p) => evaluateString(p, v)),
      );
    return out;
  }
  return record;
}

function castValue(value: unknown, type: string | undefined): unknown {
  if (!type || value === undefined || value === null) return value;
  switch (type) {
    case 'string':
      return typeof value === 'object' ? JSON.stringify(value) : String(value);
    case 'integer':
      return Math.trunc(Number(value));
    case 'number':
      return Number(value);
    case 'boolean':
      return value === true || value === 'true' || value === 'True';
  }
  return value;
}

function removePath(node: unknown, path: string[]): void {
  if (!node || typeof node !== 'object' || !path.length) return;
  const [head, ...rest] = path;
  const keys = head === '*' ? Object.keys(node) : [head];
  for (const k of keys) {
    if (!(k in (node as Rec))) continue;
    if (rest.length === 0) {
      if (Array.isArray(node)) (node as unknown[]).splice(Number(k), 1);
      else delete (node as Rec)[k];
    } else removePath((node as Rec)[k], rest);
  }
}

/** TypeTransformer's default normalization for top-level fields: strings to the declared scalar type. */
function normalize(record: Rec, schema: Record<string, unknown>): Rec {
  const props = (schema.properties ?? {}) as Record<string, { type?: string | string[] }>;
  const out: Rec = { ...record };
  for (const [k, s] of Object.entries(props)) {
    const v = out[k];
    if (v === undefined || v === null) continue;
    const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
    if (types.includes(typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v)) continue;
    if (types.includes('integer') && typeof v === 'string' && /^-?\d+$/.test(v)) out[k] = Number(v);
    else if (types.includes('number') && typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) out[k] = Number(v);
    else if (types.includes('string') && (typeof v === 'number' || typeof v === 'boolean')) out[k] = String(v);
    else if (types.includes('boolean') && (v === 'true' || v === 'false')) out[k] = v === 'true';
  }
  return out;
}
