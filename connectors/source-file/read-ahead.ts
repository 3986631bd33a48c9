// Reads a run's small text files ahead of the pipeline, on a worker thread. The main thread then
// neither blocks on the disk (a cold page cache costs ~60 µs per file, a network file system
// more) nor spends its own time in open/read/close: it decodes each file's bytes when its turn
// comes. Files arrive in batches, a few batches ahead, bounded by count and bytes.
import { Worker } from 'node:worker_threads';

/** Files per batch, and the bytes one batch aims at. */
const BATCH_FILES = 64;
const BATCH_BYTES = 1024 * 1024;
/** Batches requested ahead of the one being consumed. */
const BATCHES_AHEAD = 4;
/** Worker threads, taking batches in turn: a cold disk then serves two reads at a time. */
const READERS = 2;

interface Batch {
  /** todo indexes [from, to) */
  from: number;
  to: number;
  reply: Promise<BatchReply>;
  done?: BatchReply;
}

interface BatchReply {
  buffer: ArrayBuffer;
  ends: Int32Array;
  errors: (string | null)[];
}

/** What a failed worker's batches resolve to: no file read (the caller reads them). */
const EMPTY_REPLY: BatchReply = { buffer: new ArrayBuffer(0), ends: new Int32Array(0), errors: [] };

interface Reader {
  worker: Worker;
  /** Batches sent and not yet answered. */
  out: number;
  post(message: { id: number; paths: string[]; sizes: number[] }): void;
}

export interface ReadAheadFile {
  path: string;
  size: number;
  /** Whether this file is read ahead (small text files); others are left to the caller. */
  eligible: boolean;
}

export class ReadAhead {
  private readonly readers: Reader[] = [];
  private readonly batches: Batch[] = [];
  /** todo index where the next batch starts. */
  private next = 0;
  private nextId = 1;
  private readonly waiting = new Map<number, (reply: BatchReply) => void>();
  /** A worker failed: later batches are left to the caller. */
  private failed = false;
  private closed = false;
  /** A batch has come back: the workers are up. */
  private warm = false;
  /** Position of each eligible file within its batch. */
  private readonly slotOf: Int32Array;

  /**
   * `count` files, described by `fileAt` when their batch is formed (nothing per file is kept
   * for the whole run beyond one int: memory stays flat however many files there are).
   */
  constructor(
    private readonly count: number,
    private readonly fileAt: (index: number) => ReadAheadFile,
    private readonly encoding: BufferEncoding,
  ) {
    this.slotOf = new Int32Array(count).fill(-1);
    for (let i = 0; i < READERS; i++) this.readers.push(this.startWorker());
    this.fill(0);
  }

  private startWorker(): Reader {
    // A reader holds one batch's paths at a time; small heaps keep two threads' RSS to a few MB
    // (V8's defaults cost ~20 MB each). Should one ever run out, it stops and the caller reads.
    const worker = new Worker(new URL('./reader-worker.mjs', import.meta.url), {
      resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
    });
    // An idle worker must not keep the process alive; one with a batch out must (it is awaited).
    const reader: Reader = {
      worker,
      out: 0,
      post(message) {
        if (reader.out++ === 0) worker.ref();
        worker.postMessage(message);
      },
    };
    worker.unref();
    worker.on('message', (m: BatchReply & { id: number }) => {
      const resolve = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      // Not while closing: terminate() refs the worker until its 'exit', which close() awaits. A
      // reply still queued then would unref it, and a process with nothing else open (read() run
      // from a script) would end in that await: exit code 13, the rest of the script never run.
      if (--reader.out === 0 && !this.closed) worker.unref();
      resolve?.(m);
    });
    // A broken worker only means no read-ahead: every file is then read by the caller.
    const fail = () => {
      this.failed = true;
      for (const resolve of this.waiting.values()) resolve(EMPTY_REPLY);
      this.waiting.clear();
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    return reader;
  }

  /**
   * Keeps BATCHES_AHEAD batches requested past `index`, and never more than that unanswered.
   * Replies arrive only when the event loop turns: a caller that consumes in microtasks alone (a
   * plain `for await` over read() in a script or test) reads every file itself, and batches it has
   * passed must not pile up in the workers, read twice and held in memory until the end.
   */
  private fill(index: number): void {
    // Files the caller has passed were read by the caller: the next batch starts where it is.
    if (this.next < index) this.next = index;
    let ahead = 0;
    for (const b of this.batches) if (b.to > index) ahead++;
    for (; this.next < this.count && ahead < BATCHES_AHEAD && this.waiting.size < BATCHES_AHEAD; ahead++) {
      const from = this.next;
      let to = from;
      let bytes = 0;
      const paths: string[] = [];
      const sizes: number[] = [];
      while (to < this.count && to - from < BATCH_FILES && bytes < BATCH_BYTES) {
        const f = this.fileAt(to++);
        if (!f.eligible) continue;
        this.slotOf[to - 1] = paths.length;
        paths.push(f.path);
        sizes.push(f.size);
        bytes += f.size;
      }
      this.next = to;
      const id = this.nextId++;
      const reply = new Promise<BatchReply>((resolve) => {
        if (this.failed) return resolve(EMPTY_REPLY);
        this.waiting.set(id, resolve);
        this.readers[id % READERS].post({ id, paths, sizes });
      });
      const batch: Batch = { from, to, reply };
      reply.then((r) => {
        batch.done = r;
        this.warm = true;
      });
      this.batches.push(batch);
    }
  }

  /**
   * The text of file `index` (files are taken in order), or undefined when it was not read ahead
   * (not eligible, reading failed, or the workers are still starting): the caller reads it itself
   * and meets any error there.
   */
  async take(index: number): Promise<string | undefined> {
    if (this.closed) return undefined;
    this.fill(index);
    while (this.batches.length && this.batches[0].to <= index) this.batches.shift();
    const batch = this.batches[0];
    if (!batch || batch.from > index || this.slotOf[index] < 0) return undefined;
    // While the workers start (~50 ms), the caller reads for itself rather than wait.
    if (!batch.done && !this.warm) return undefined;
    const reply = batch.done ?? (await batch.reply);
    const k = this.slotOf[index];
    if (k >= reply.ends.length || reply.errors[k] !== null) return undefined;
    const start = k === 0 ? 0 : reply.ends[k - 1];
    return Buffer.from(reply.buffer, start, reply.ends[k] - start).toString(this.encoding);
  }

  /** Resolves when the first batch is back (the workers are up). */
  async started(): Promise<void> {
    await this.batches[0]?.reply;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.readers.map((r) => r.worker.terminate()));
  }
}
