// Worker thread of read-ahead.ts: reads the files of each batch it is sent, in order, with plain
// synchronous reads (blocking only this thread), and returns their bytes end to end in one
// transferred buffer. Plain JavaScript with Node built-ins only, so it starts in milliseconds.
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

parentPort.on('message', ({ id, paths, sizes }) => {
  let capacity = paths.length;
  for (const s of sizes) capacity += s;
  // Not Buffer.allocUnsafe: small buffers come from a shared pool, which cannot be transferred.
  let bytes = new Uint8Array(new ArrayBuffer(Math.max(capacity, 1024)));
  const ends = new Int32Array(paths.length);
  const errors = new Array(paths.length).fill(null);
  let n = 0;
  for (let k = 0; k < paths.length; k++) {
    const start = n;
    try {
      const fd = openSync(paths[k], 'r');
      try {
        for (;;) {
          if (n === bytes.length) {
            const bigger = new Uint8Array(new ArrayBuffer(bytes.length * 2));
            bigger.set(bytes);
            bytes = bigger;
          }
          const got = readSync(fd, bytes, n, bytes.length - n, null);
          if (got === 0) break;
          n += got;
        }
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      n = start;
      errors[k] = err?.code ?? String(err);
    }
    ends[k] = n;
  }
  parentPort.postMessage({ id, buffer: bytes.buffer, ends, errors }, [bytes.buffer]);
});
