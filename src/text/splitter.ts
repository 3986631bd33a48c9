// Cutting text into chunks. Sizes are measured in the embedding model's tokens (or characters),
// chunks break at the coarsest boundary that fits (paragraph, line, sentence, word, grapheme), and
// consecutive chunks share a tail of up to `overlap` units so context is not lost at the seams.

export type Measure = (text: string) => number;

const WORD_BOUNDARY = /(?<=\S)(?=\s)/;

interface Piece {
  text: string;
  size: number;
}

// Pieces concatenate back to the original text. Paragraph and line breaks stay with the text
// before them; spaces stay with the word after them, as BPE tokenizers attach them (" word").
const LEVELS: RegExp[] = [
  /(?<=\n[ \t\r]*\n)(?=[^\r\n])/, // paragraphs (also with CRLF line ends)
  /(?<=\n)(?=[^\n])/, // lines
  /(?<=[.!?;:]["')\]]?)(?=\s+\S)|(?<=[。！？；])(?=\S)/u, // sentences (incl. CJK full stops)
  WORD_BOUNDARY,
];

// Built at first use (~12 ms of ICU set-up): only a word longer than a chunk needs it.
let graphemes: Intl.Segmenter | undefined;

/** Splits text into pieces of at most `max` each (a single grapheme may exceed it; nothing smaller exists). */
function atomize(text: string, max: number, measure: Measure, level: number, out: Piece[], knownSize?: number): void {
  const size = knownSize ?? measure(text);
  if (size <= max) {
    out.push({ text, size });
    return;
  }
  if (level >= LEVELS.length) {
    splitGraphemes(text, size, max, measure, out);
    return;
  }
  const parts = text.split(LEVELS[level]);
  if (parts.length === 1) {
    atomize(text, max, measure, level + 1, out, size);
    return;
  }
  for (const part of parts) atomize(part, max, measure, level + 1, out);
}

/** A "word" longer than a chunk: cut between graphemes so no character (or emoji) is broken. */
function splitGraphemes(text: string, size: number, max: number, measure: Measure, out: Piece[]): void {
  graphemes ??= new Intl.Segmenter(undefined, { granularity: 'grapheme' });
  const units = Array.from(graphemes.segment(text), (s) => s.segment);
  const perPiece = Math.max(1, Math.floor((units.length * max) / size));
  const fit = (from: number, to: number): void => {
    const piece = units.slice(from, to).join('');
    const pieceSize = measure(piece);
    if (pieceSize <= max || to - from === 1) {
      out.push({ text: piece, size: pieceSize });
      return;
    }
    const mid = from + Math.ceil((to - from) / 2);
    fit(from, mid);
    fit(mid, to);
  };
  for (let i = 0; i < units.length; i += perPiece) fit(i, Math.min(units.length, i + perPiece));
}

export interface SplitOptions {
  chunkSize: number;
  chunkOverlap: number;
  measure: Measure;
  /** Measure is additive over concatenation (characters): no need to re-measure merged chunks. */
  additive?: boolean;
}

/** Recursive splitter: returns trimmed, non-empty chunks, each measuring at most chunkSize. */
export function splitRecursive(text: string, opts: SplitOptions): string[] {
  const { chunkSize, measure } = opts;
  const overlap = Math.min(opts.chunkOverlap, chunkSize - 1);
  const trimmed = text.trim();
  if (!trimmed) return [];
  // Most texts are one chunk. Measured as emitted (trimmed), the count is the one the embedder
  // asks for next (the tokenizer memo answers it); only likely fits are checked this way, so a
  // long text is not counted an extra time.
  if (trimmed.length <= 4 * chunkSize && measure(trimmed) <= chunkSize) return [trimmed];
  const pieces: Piece[] = [];
  atomize(text, chunkSize, measure, 0, pieces);

  const chunks: string[] = [];
  const emit = (group: Piece[]): void => {
    const trimmed = group
      .map((p) => p.text)
      .join('')
      .trim();
    if (!trimmed) return;
    // Token counts are not exactly additive (BPE merges across piece seams): check the real size.
    if (!opts.additive && group.length > 1 && measure(trimmed) > chunkSize) {
      const mid = Math.ceil(group.length / 2);
      emit(group.slice(0, mid));
      emit(group.slice(mid));
      return;
    }
    chunks.push(trimmed);
  };

  let current: Piece[] = [];
  let currentSize = 0;
  let hasNew = false; // current holds more than the overlap carried over from the previous chunk
  for (const piece of pieces) {
    if (currentSize + piece.size > chunkSize && hasNew) {
      emit(current);
      current = overlap > 0 ? overlapTail(current, overlap, measure) : [];
      currentSize = current.reduce((n, p) => n + p.size, 0);
      hasNew = false;
    }
    // Make room for the new piece by giving up overlap, never by exceeding the size.
    while (current.length && currentSize + piece.size > chunkSize) currentSize -= current.shift()!.size;
    current.push(piece);
    currentSize += piece.size;
    hasNew = true;
  }
  if (hasNew) emit(current);
  return chunks;
}

/** The last pieces of a chunk measuring at most `overlap`, cut at word boundaries when a piece is too big. */
function overlapTail(group: Piece[], overlap: number, measure: Measure): Piece[] {
  const tail: Piece[] = [];
  let size = 0;
  for (let i = group.length - 1; i >= 0; i--) {
    const piece = group[i];
    if (size + piece.size <= overlap) {
      tail.unshift(piece);
      size += piece.size;
      continue;
    }
    // Take the trailing words of this piece that still fit.
    const words = piece.text.split(WORD_BOUNDARY);
    for (let w = words.length - 1; w >= 0; w--) {
      const wordSize = measure(words[w]);
      if (size + wordSize > overlap) break;
      tail.unshift({ text: words[w], size: wordSize });
      size += wordSize;
    }
    break;
  }
  return tail;
}

export interface MarkdownSection {
  /** Heading titles from the top level down to this section's own heading. */
  headings: string[];
  text: string;
}

const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const FENCE = /^ {0,3}(`{3,}|~{3,})/;

/** Splits markdown at ATX headings (ignoring `#` lines inside fenced code), keeping the heading path. */
export function markdownSections(text: string): MarkdownSection[] {
  const sections: MarkdownSection[] = [];
  const stack: Array<{ level: number; title: string }> = [];
  let lines: string[] = [];
  let bodyHasText = false;
  let fence: string | undefined;
  const flush = () => {
    if (bodyHasText) sections.push({ headings: stack.map((h) => h.title), text: lines.join('\n') });
    lines = [];
    bodyHasText = false;
  };
  for (const line of text.split('\n')) {
    const fenceMatch = FENCE.exec(line);
    if (fenceMatch) {
      const marker = fenceMatch[1];
      if (fence === undefined) fence = marker;
      else if (marker[0] === fence[0] && marker.length >= fence.length) fence = undefined;
    }
    const heading = fence === undefined && !fenceMatch ? HEADING.exec(line.endsWith('\r') ? line.slice(0, -1) : line) : null;
    if (heading) {
      flush();
      const level = heading[1].length;
      while (stack.length && stack[stack.length - 1].level >= level) stack.pop();
      stack.push({ level, title: heading[2].trim() });
      lines.push(line);
      continue;
    }
    lines.push(line);
    if (line.trim()) bodyHasText = true;
  }
  flush();
  return sections;
}
