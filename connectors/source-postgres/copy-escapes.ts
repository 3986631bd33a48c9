// COPY text-format escapes, resolved without a regular expression. COPY TO writes `\b \f \n \r \t
// \v \\`; COPY FROM also reads `\digits` (octal) and `\xHH`, and `\c` for any other c means c, so
// those are read the same way for safety. Nearly every body with paragraphs has `\n` escapes, and a
// regex replace with a callback per escape cost more than the rest of the COPY reader together.
//
// The result is exactly what the former `s.replace(/\\(?:([bfnrtv\\])|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))/g, …)`
// gave, corners included: a trailing backslash stays, and so does a backslash before a line
// terminator (`.` matches none of \n, \r, U+2028, U+2029); an octal escape reaches \777 (U+01FF);
// `\c` before a surrogate pair drops only the backslash.

/** The character a one-letter escape stands for, by the letter's char code ('' : not one). */
const SIMPLE: string[] = Array.from({ length: 128 }, () => '');
SIMPLE[98] = '\b';
SIMPLE[102] = '\f';
SIMPLE[110] = '\n';
SIMPLE[114] = '\r';
SIMPLE[116] = '\t';
SIMPLE[118] = '\v';
SIMPLE[92] = '\\';

const isOctal = (c: number): boolean => c >= 48 && c <= 55;
const hexValue = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1);

/** The octal (`\0` to `\777`) or hex (`\x0` to `\xFF`) escape whose backslash is at `i`, or undefined. */
function numericEscape(s: string, i: number, end: number): { text: string; length: number } | undefined {
  let k = i + 1;
  let code = 0;
  if (isOctal(s.charCodeAt(k))) {
    for (; k < end && k <= i + 3 && isOctal(s.charCodeAt(k)); k++) code = code * 8 + s.charCodeAt(k) - 48;
  } else if (s.charCodeAt(k) === 120 /* x */) {
    for (k++; k < end && k <= i + 3 && hexValue(s.charCodeAt(k)) >= 0; k++) code = code * 16 + hexValue(s.charCodeAt(k));
    if (k === i + 2) return undefined; // `\x` without a hex digit is the letter x
  } else return undefined;
  return { text: String.fromCharCode(code), length: k - i };
}

/**
 * `s.slice(start, end)` with its COPY escapes resolved. `backslash`: where to start looking for the
 * first backslash (the caller often knows where it is).
 */
export function unescapeCopy(s: string, start: number, end: number, backslash = start): string {
  let out = '';
  let from = start; // text from here on is not in `out` yet
  for (let i = s.indexOf('\\', backslash); i >= 0 && i + 1 < end; i = s.indexOf('\\', i)) {
    const c = s.charCodeAt(i + 1);
    let text = c < 128 ? SIMPLE[c] : '';
    let next = i + 2;
    if (!text) {
      const numeric = numericEscape(s, i, end);
      if (numeric) {
        text = numeric.text;
        next = i + numeric.length;
      } else if (c === 10 || c === 13 || c === 0x2028 || c === 0x2029) {
        i++; // the backslash stays
        continue;
      } else next = i + 1; // `\c` is c: only the backslash goes
    }
    out += s.slice(from, i) + text;
    from = i = next;
  }
  return from === start ? s.slice(start, end) : out + s.slice(from, end);
}
