// Short strings, given as text[from, to) with a hash the caller computed while scanning them,
// numbered 0, 1, 2… without making a string of them: open addressing on the hash, confirmed unit
// by unit (hashes collide). Callers keep what they know of each entry in their own arrays,
// indexed by its number. When it is full, clear() empties it at once. Used where a hot loop meets
// the same words again and again (the tokenizer's pieces, the hash embedder's words).

export class SliceTable {
  /** Entry + 1 per slot; 0 = empty. Twice the entries, so probes stay short. */
  private readonly slots: Int32Array;
  private readonly hashes: Int32Array;
  /** Entry e's units are units[at[e], at[e + 1]). */
  private readonly at: Int32Array;
  private readonly units: Uint16Array;
  private readonly slotMask: number;
  /** Where the last find() stopped: the empty slot a miss leaves for add(). */
  private slot = 0;
  size = 0;

  /** `entries` a power of two. */
  constructor(
    private readonly entries: number,
    unitCapacity: number,
  ) {
    this.slots = new Int32Array(entries * 2);
    this.slotMask = entries * 2 - 1;
    this.hashes = new Int32Array(entries);
    this.at = new Int32Array(entries + 1);
    this.units = new Uint16Array(unitCapacity);
  }

  /** The number of text[from, to) (whose hash is `hash`), or -1. */
  find(text: string, from: number, to: number, hash: number): number {
    const length = to - from;
    let s = (hash ^ (hash >>> 15)) & this.slotMask;
    for (;;) {
      const e = this.slots[s] - 1;
      if (e < 0) break;
      if (this.hashes[e] === hash) {
        let u = this.at[e];
        if (this.at[e + 1] - u === length) {
          let i = from;
          while (i < to && text.charCodeAt(i) === this.units[u]) (i++, u++);
          if (i === to) return e;
        }
      }
      s = (s + 1) & this.slotMask;
    }
    this.slot = s;
    return -1;
  }

  /** Whether a slice of `length` units still fits. */
  fits(length: number): boolean {
    return this.size < this.entries && this.at[this.size] + length <= this.units.length;
  }

  /** Numbers text[from, to), which the find() just before missed; the caller checked fits(). */
  add(text: string, from: number, to: number, hash: number): number {
    const e = this.size++;
    const u = this.at[e];
    this.slots[this.slot] = e + 1;
    this.hashes[e] = hash;
    for (let i = from; i < to; i++) this.units[u + i - from] = text.charCodeAt(i);
    this.at[e + 1] = u + to - from;
    return e;
  }

  clear(): void {
    this.slots.fill(0);
    this.size = 0;
  }
}
