// Shared by text extraction (hasText) and the tokenizer's split points: one definition of `\s`.

/** The UTF-16 units JavaScript's `\s` matches (WhiteSpace and LineTerminator; all in the BMP). */
export function isWhitespaceUnit(c: number): boolean {
  if (c > 0x20 && c < 0xa0) return false;
  return (
    c === 0x20 ||
    (c >= 0x09 && c <= 0x0d) ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}
