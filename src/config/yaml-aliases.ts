// YAML anchors and aliases (`&base` / `*base`) are legal in pipeline files, but two misuses make
// the yaml library throw while converting to plain values: an alias whose anchor is not defined
// (above it), and an alias "bomb" that expands exponentially. Both become normal config problems
// with the line of the offending alias.
import { isAlias, isPair, isScalar, isSeq, visit, type Document, type LineCounter } from 'yaml';

export interface AliasProblem {
  path: (string | number)[];
  line?: number;
  message: string;
}

/** The YAML path (keys and indexes) of a node, from the visitor's ancestors. */
function yamlPath(ancestors: readonly unknown[], node: unknown): (string | number)[] {
  const out: (string | number)[] = [];
  const chain = [...ancestors, node];
  chain.forEach((n, i) => {
    if (isPair(n)) out.push(isScalar(n.key) ? String(n.key.value) : String(n.key));
    else if (isSeq(n)) {
      const index = n.items.indexOf(chain[i + 1] as never);
      if (index >= 0) out.push(index);
    }
  });
  return out;
}

/** `doc.toJS()`, or the problems that stop it (undefined aliases, excessive alias expansion). */
export function toJsChecked(doc: Document, lines: LineCounter): { value: unknown } | { problems: AliasProblem[] } {
  const unresolved: AliasProblem[] = [];
  let first: { path: (string | number)[]; line?: number } | undefined;
  visit(doc, {
    Alias(_key, node, ancestors) {
      const line = node.range ? lines.linePos(node.range[0]).line : undefined;
      const path = yamlPath(ancestors, node);
      first ??= { path, line };
      if (!isAlias(node) || node.resolve(doc) === undefined)
        unresolved.push({ path, line, message: `YAML alias *${node.source} refers to no anchor &${node.source} defined above it` });
    },
  });
  if (unresolved.length) return { problems: unresolved };
  try {
    return { value: doc.toJS() as unknown };
  } catch (err) {
    return {
      problems: [
        {
          path: first?.path ?? [],
          line: first?.line,
          message: `YAML aliases expand too far (${(err as Error).message.toLowerCase()}); write the values out instead of nesting aliases`,
        },
      ],
    };
  }
}
