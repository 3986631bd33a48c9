// One sync per connection at a time: a second `sluice sync` of a connection that is running is
// refused with a clear message instead of racing it (two runs would interleave states and writes).
// The lock is a file in the state directory, created with O_EXCL and refreshed every few seconds;
// one left by a dead process (same host, pid gone) or not refreshed for a minute (another host
// sharing the state directory) is taken over. Sources whose workers share a connection on purpose
// (stateMerge: deep, e.g. Kafka consumer groups) are not locked.
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { SluiceError } from '../protocol/errors.ts';

const REFRESH_MS = 10_000;
const STALE_MS = 60_000;

interface Holder {
  pid: number;
  host: string;
  started: string;
  /** Start time of the process in clock ticks since boot (Linux): a recycled pid is not the holder. */
  ticks?: string;
}

function startTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function lockConnection(stateDir: string, connection: string): Promise<() => Promise<void>> {
  const dir = join(stateDir, 'locks');
  const file = join(dir, `${encodeURIComponent(connection)}.lock`);
  await mkdir(dir, { recursive: true });
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date().toISOString(), ticks: startTicks(process.pid) };
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const h = await open(file, 'wx');
      await h.writeFile(JSON.stringify(me));
      await h.close();
      const timer = setInterval(() => {
        const now = new Date();
        utimes(file, now, now).catch(() => undefined);
      }, REFRESH_MS);
      timer.unref();
      return async () => {
        clearInterval(timer);
        await rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new SluiceError(`cannot create the lock ${file}: ${(err as Error).message}`, {
          kind: 'config',
          where: `connection ${connection}`,
          hint: 'the state directory must be writable',
        });
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(await readFile(file, 'utf8')) as Holder;
    } catch {
      holder = undefined; // being written this instant, or left half-written by a crash
    }
    const age = await stat(file).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    // Same host: the holder is gone when its pid is dead, is this very process (a container that
    // restarted gets the same small pid), or was started at another time (a recycled pid).
    const dead = holder
      ? holder.host === me.host &&
        (!alive(holder.pid) ||
          holder.pid === process.pid ||
          (holder.ticks !== undefined && startTicks(holder.pid) !== undefined && startTicks(holder.pid) !== holder.ticks))
      : age > 2_000;
    if (dead || age > STALE_MS) {
      await rm(file, { force: true });
      continue;
    }
    throw new SluiceError(
      `connection ${connection} is already being synced${holder ? ` by process ${holder.pid} on ${holder.host} (since ${holder.started})` : ''}`,
      {
        kind: 'config',
        where: `connection ${connection}`,
        hint: `wait for that sync to finish or stop it; a lock left by a crashed run is taken over automatically (${file})`,
      },
    );
  }
  throw new SluiceError(`cannot lock connection ${connection}: another run keeps taking the lock`, { kind: 'config' });
}
