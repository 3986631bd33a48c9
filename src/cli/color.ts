// Colour on a terminal only, and never when NO_COLOR is set (https://no-color.org); FORCE_COLOR
// turns it on where there is no terminal (CI logs that render ANSI).
export function useColor(stream: NodeJS.WriteStream = process.stderr): boolean {
  if (process.env.NO_COLOR) return false;
  if (process.env.FORCE_COLOR && process.env.FORCE_COLOR !== '0') return true;
  return !!stream.isTTY && process.env.TERM !== 'dumb';
}

/** `text` in red, when colour is on for stderr. */
export const red = (text: string): string => (useColor() ? `\x1b[31m${text}\x1b[39m` : text);
