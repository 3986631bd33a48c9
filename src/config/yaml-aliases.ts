// YAML anchors and aliases (`&base` / `*base`) are legal in pipeline files, but two misuses make
// the yaml library throw while converting to plain values: an alias whose anchor is not defined
// (above it), and an alias "bomb" that expands exponentially. Both become normal config problems
// with the line of the offending alias.
import { isAlias, visit, type Document, type LineCounter } from 'yaml';

export interface AliasProblem {
  line?: number;
  message: string;
}

/** `doc.toJS()`, or the problems that stop it (undefined aliases, excessive alias expansion). */
export function toJsChecked(doc: Document, lines: LineCounter): { value: unknown } | { problems: AliasProblem[] } {
  const unresolved: AliasProblem[] = [];
  let firstAliasLine: number | undefined;
  visit(doc, {
    Alias(_key, node) {
      const line = node.range ? lines.linePos(node.range[0]).line : undefined;
      firstAliasLine ??= line;
      if (!isAlias(node) || node.resolve(doc) === undefined)
        unresolved.push({ line, message: `YAML alias *${node.source} refers to no anchor &${node.source} defined above it` });
    },
  });
  if (unresolved.length) return { problems: unresolved };
  try {
    return { value: doc.toJS() as unknown };
  } catch (err) {
    return {
      problems: [
        {
          line: firstAliasLine,
          message: `YAML aliases expand too far (${(err as Error).message.toLowerCase()}); write the values out instead of nesting aliases`,
        },
      ],
    };
  }
}
