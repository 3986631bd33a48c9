// Jinja interpolation for manifest strings ("{{ config['domain'] }}/wiki"), evaluated by the
// sandboxed @huggingface/jinja interpreter: a pure JS tree walker with no eval, no attribute access
// into JS objects beyond plain data, no imports. Templates see only the variables passed in
// (config, parameters, stream_slice, …) and the macros below — never files or the environment.
//
// Semantics follow the CDK's JinjaInterpolation: a string that is exactly one `{{ expression }}`
// evaluates to the expression's value (a number stays a number, an object an object); any other
// template renders to text; an empty result means "no value".
import { Environment, Interpreter, parse, tokenize } from '@huggingface/jinja';
import { createHash } from 'node:crypto';
import {
  addDuration,
  formatDatetime,
  parseAnyDatetime,
  parseDatetime,
  parseDuration,
  pythonDatetimeString,
  type Duration,
  type Instant,
} from './datetime.ts';

type Program = ReturnType<typeof parse>;
// The runtime value classes are not all exported by name; take them from values the library makes.
const probe = new Environment();
probe.set('o', {});
probe.set('f', () => null);
const ObjectValue = probe.lookupVariable('o').constructor as new (v: Map<string, unknown>) => { type: string; value: unknown };
const FunctionValue = probe.lookupVariable('f').constructor as new (fn: (args: RV[], scope: unknown) => RV) => RV;
const toRuntime = (v: unknown): RV => {
  const e = new Environment();
  e.set('v', v);
  return e.lookupVariable('v') as unknown as RV;
};

interface RV {
  type: string;
  value: unknown;
  __bool__(): { value: boolean };
  toString(): string;
}

/** A datetime in a template: `.strftime()`, `.isoformat()`, arithmetic with durations. */
class DateTimeValue extends ObjectValue {
  declare type: string;
  constructor(
    readonly instant: Instant,
    readonly dateOnly = false,
  ) {
    super(new Map());
    this.type = 'DateTimeValue';
    const m = this.value as Map<string, RV>;
    const d = new Date(instant);
    m.set(
      'strftime',
      fn((fmt) => formatDatetime(instant, String(fmt))),
    );
    m.set(
      'isoformat',
      fn((sep) => (dateOnly ? formatDatetime(instant, '%Y-%m-%d') : pythonDatetimeString(instant, sep ? String(sep) : 'T'))),
    );
    m.set(
      'timestamp',
      fn(() => instant / 1000),
    );
    m.set(
      'date',
      fn(() => new DateTimeValue(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()), true)),
    );
    m.set('year', toRuntime(d.getUTCFullYear()));
    m.set('month', toRuntime(d.getUTCMonth() + 1));
    m.set('day', toRuntime(d.getUTCDate()));
    m.set('hour', toRuntime(d.getUTCHours()));
    m.set('minute', toRuntime(d.getUTCMinutes()));
    m.set('second', toRuntime(d.getUTCSeconds()));
  }
  __bool__() {
    return { value: true } as never;
  }
  override toString(): string {
    return this.dateOnly ? formatDatetime(this.instant, '%Y-%m-%d') : pythonDatetimeString(this.instant);
  }
}

class DurationValue extends ObjectValue {
  declare type: string;
  constructor(readonly duration: Duration) {
    super(new Map());
    this.type = 'DurationValue';
    (this.value as Map<string, RV>).set(
      'total_seconds',
      fn(() => (duration.months * 30 * 86_400_000 + duration.ms) / 1000),
    );
  }
  override toString(): string {
    return `${this.duration.ms / 1000}s`;
  }
}

/** A JS function as a template function: arguments arrive as plain JS values. */
function fn(impl: (...args: unknown[]) => unknown): RV {
  return new FunctionValue((args: RV[]) => {
    const plain = args.filter((a) => a.type !== 'KeywordArgumentsValue').map(toJs);
    const kw = args.find((a) => a.type === 'KeywordArgumentsValue');
    const out = impl(...plain, ...(kw ? [toJs(kw)] : []));
    return out instanceof ObjectValue ? (out as unknown as RV) : toRuntime(out ?? null);
  });
}

/** Runtime value → plain JS (datetimes become their Python text form, like str() would). */
export function toJs(v: RV | undefined): unknown {
  if (!v) return undefined;
  if (v instanceof DateTimeValue) return v.toString();
  if (v instanceof DurationValue) return v.toString();
  switch (v.type) {
    case 'UndefinedValue':
      return undefined;
    case 'NullValue':
      return null;
    case 'ArrayValue':
    case 'TupleValue':
      return (v.value as RV[]).map(toJs);
    case 'ObjectValue':
    case 'KeywordArgumentsValue': {
      const out: Record<string, unknown> = {};
      for (const [k, x] of v.value as Map<string, RV>) out[k] = toJs(x);
      return out;
    }
    case 'FunctionValue':
      return undefined;
    default:
      return v.value;
  }
}

const instantOf = (v: unknown): Instant | undefined => {
  if (v instanceof DateTimeValue) return v.instant;
  return parseAnyDatetime(v);
};
const kwarg = (args: unknown[], i: number, name: string): unknown => {
  const last = args[args.length - 1];
  if (last && typeof last === 'object' && !Array.isArray(last) && name in (last as object)) return (last as Record<string, unknown>)[name];
  const v = args[i];
  return v && typeof v === 'object' && !Array.isArray(v) ? undefined : v;
};

/** The CDK's macros (airbyte_cdk/sources/declarative/interpolation/macros.py), re-implemented. */
function macros(): Record<string, RV> {
  return {
    now_utc: new FunctionValue(() => new DateTimeValue(Date.now()) as unknown as RV),
    today_utc: new FunctionValue(() => {
      const d = new Date();
      return new DateTimeValue(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()), true) as unknown as RV;
    }),
    timestamp: new FunctionValue((args: RV[]) => {
      const v = args[0] instanceof DateTimeValue ? args[0].instant / 1000 : toJs(args[0]);
      if (typeof v === 'number') return toRuntime(Math.trunc(v));
      const t = parseAnyDatetime(v);
      if (t === undefined) throw new Error(`timestamp(): cannot parse ${JSON.stringify(v)} as a datetime`);
      return toRuntime(Math.trunc(t / 1000));
    }),
    day_delta: fn((...args) => {
      const days = Number(kwarg(args, 0, 'num_days') ?? 0);
      const format = String(kwarg(args, 1, 'format') ?? '%Y-%m-%dT%H:%M:%S.%f%z');
      return formatDatetime(Date.now() + days * 86_400_000, format);
    }),
    duration: new FunctionValue((args: RV[]) => {
      const d = parseDuration(toJs(args[0]));
      if (!d) throw new Error(`duration(): ${JSON.stringify(toJs(args[0]))} is not an ISO 8601 duration (e.g. P1D, PT1H)`);
      return new DurationValue(d) as unknown as RV;
    }),
    str_to_datetime: new FunctionValue((args: RV[]) => {
      const t = parseAnyDatetime(toJs(args[0]));
      if (t === undefined) throw new Error(`str_to_datetime(): cannot parse ${JSON.stringify(toJs(args[0]))}`);
      return new DateTimeValue(t) as unknown as RV;
    }),
    format_datetime: new FunctionValue((args: RV[]) => {
      const plain = args.map((a) => (a instanceof DateTimeValue ? a : toJs(a)));
      const kw = (plain.find((a) => a && typeof a === 'object' && !(a instanceof DateTimeValue) && !Array.isArray(a)) ?? {}) as Record<
        string,
        unknown
      >;
      const pos = plain.filter((a) => !(a && typeof a === 'object' && !(a instanceof DateTimeValue)));
      const [value, format = kw.format, inputFormat = kw.input_format] = pos as unknown[];
      let t: Instant | undefined;
      if (value instanceof DateTimeValue) t = value.instant;
      else if (inputFormat) t = parseDatetime(value, String(inputFormat));
      else t = instantOf(value);
      if (t === undefined) throw new Error(`format_datetime(): cannot parse ${JSON.stringify(value)} as a datetime`);
      return toRuntime(formatDatetime(t, String(format)));
    }),
    max: fn((...args) => pick(args, 1)),
    min: fn((...args) => pick(args, -1)),
  };
}

function pick(args: unknown[], sign: 1 | -1): unknown {
  const list = args.length === 1 && Array.isArray(args[0]) ? (args[0] as unknown[]) : args;
  let best: unknown;
  for (const v of list) {
    if (best === undefined) best = v;
    else if (sign * ((v as number) > (best as number) ? 1 : (v as number) < (best as number) ? -1 : 0) > 0) best = v;
  }
  return best;
}

/** The interpreter with the filters manifests use that Jinja-in-JS lacks, and datetime arithmetic. */
// The library's .d.ts files do not resolve under NodeNext, so the base class is typed here.
const InterpreterBase = Interpreter as unknown as new (env: Environment) => { run(p: Program): { value: unknown } };
class ManifestInterpreter extends InterpreterBase {
  applyFilter(operand: RV, filterNode: { type: string; value?: string; callee?: { value: string } }, env: unknown): RV {
    const name = filterNode.type === 'Identifier' ? filterNode.value : filterNode.callee?.value;
    const text = () => (operand instanceof DateTimeValue ? operand.toString() : String(toJs(operand) ?? ''));
    switch (name) {
      case 'b64encode':
        return toRuntime(Buffer.from(text(), 'utf8').toString('base64'));
      case 'b64decode':
        return toRuntime(Buffer.from(text(), 'base64').toString('utf8'));
      case 'hash':
        return toRuntime(createHash('md5').update(text()).digest('hex'));
      case 'string':
        if (operand instanceof DateTimeValue || operand instanceof DurationValue) return toRuntime(operand.toString());
        break;
    }
    return (Interpreter.prototype as unknown as { applyFilter: (...a: unknown[]) => RV }).applyFilter.call(this, operand, filterNode, env);
  }

  evaluateBinaryExpression(node: { operator: { value: string }; left: unknown; right: unknown }, env: unknown): RV {
    const op = node.operator.value;
    if (['+', '-', '<', '>', '<=', '>=', '==', '!='].includes(op)) {
      const self = this as unknown as { evaluate: (n: unknown, e: unknown) => RV };
      const left = self.evaluate(node.left, env);
      const right = self.evaluate(node.right, env);
      if (left instanceof DateTimeValue || right instanceof DateTimeValue) {
        if (left instanceof DateTimeValue && right instanceof DurationValue && (op === '+' || op === '-'))
          return new DateTimeValue(addDuration(left.instant, right.duration, op === '+' ? 1 : -1), left.dateOnly) as unknown as RV;
        const a = left instanceof DateTimeValue ? left.instant : instantOf(toJs(left));
        const b = right instanceof DateTimeValue ? right.instant : instantOf(toJs(right));
        if (a !== undefined && b !== undefined) {
          if (op === '-') return new DurationValue({ months: 0, ms: a - b }) as unknown as RV;
          const r = { '<': a < b, '>': a > b, '<=': a <= b, '>=': a >= b, '==': a === b, '!=': a !== b }[op];
          if (r !== undefined) return toRuntime(r);
        }
      }
    }
    return (Interpreter.prototype as unknown as { evaluateBinaryExpression: (...a: unknown[]) => RV }).evaluateBinaryExpression.call(
      this,
      node,
      env,
    );
  }
}

const programs = new Map<string, { program: Program; single: boolean }>();

function compile(src: string) {
  let c = programs.get(src);
  if (!c) {
    const program = parse(tokenize(src, { lstrip_blocks: true, trim_blocks: true }));
    // Exactly one `{{ … }}` and nothing else: the value keeps its type.
    const single = /^\s*\{\{[\s\S]*\}\}\s*$/.test(src) && program.body.length === 1 && !/\}\}[\s\S]*\{\{/.test(src);
    c = { program, single };
    if (programs.size > 5000) programs.clear();
    programs.set(src, c);
  }
  return c;
}

/** A template's syntax error, if any (for `sluice validate`). */
export function templateError(src: string): string | undefined {
  try {
    compile(src);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

export const isTemplate = (v: unknown): v is string => typeof v === 'string' && (v.includes('{{') || v.includes('{%'));

export type Vars = Record<string, unknown>;

/** Evaluates a template string with these variables; a plain string comes back unchanged. */
export function evaluate(value: unknown, vars: Vars): unknown {
  if (!isTemplate(value)) return value;
  const { program, single } = compile(value);
  const env = new Environment();
  for (const [k, v] of Object.entries(macros())) env.setVariable(k, v as never);
  for (const [k, v] of Object.entries(vars)) env.set(k, v === undefined ? undefined : v);
  const interpreter = new ManifestInterpreter(env);
  try {
    if (single) {
      const r = (interpreter as unknown as { evaluate: (n: unknown, e: unknown) => RV }).evaluate(program.body[0], env);
      const js = toJs(r);
      return js === '' ? undefined : js;
    }
    const out = String(interpreter.run(program).value);
    return out === '' ? undefined : out;
  } catch (err) {
    throw new Error(`cannot evaluate ${JSON.stringify(value)}: ${(err as Error).message}`);
  }
}

/** Evaluates and renders as text ('' for no value). */
export function evaluateString(value: unknown, vars: Vars): string {
  const v = evaluate(value, vars);
  if (v === undefined || v === null) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const FALSE_TEXT = new Set(['False', 'false', '{}', '[]', '()', '', '0', '0.0', 'None']);
/** The CDK's InterpolatedBoolean truthiness. */
export function evaluateBoolean(value: unknown, vars: Vars): boolean {
  if (typeof value === 'boolean') return value;
  const v = evaluate(value, vars);
  if (v === undefined || v === null || v === false || v === 0) return false;
  if (typeof v === 'string') return !FALSE_TEXT.has(v.trim());
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/** Evaluates every template inside a mapping/list (keys too, as the CDK does); drops empty values. */
export function evaluateMapping(value: unknown, vars: Vars): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value === 'string') {
    const v = evaluate(value, vars);
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  }
  const out: Record<string, unknown> = {};
  for (const [k, raw] of Object.entries(value as Record<string, unknown>)) {
    const key = evaluateString(k, vars);
    const v = deepEvaluate(raw, vars);
    if (v === undefined || v === null || v === '') continue;
    out[key] = v;
  }
  return out;
}

export function deepEvaluate(value: unknown, vars: Vars): unknown {
  if (typeof value === 'string') return evaluate(value, vars);
  if (Array.isArray(value)) return value.map((v) => deepEvaluate(v, vars));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[evaluateString(k, vars)] = deepEvaluate(v, vars);
    return out;
  }
  return value;
}
