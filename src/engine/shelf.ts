// The run's shelf (ConnectorContext.shelf): open resources a connector hands from one of its calls
// to a later one of the same run, so a sync connects once where it used to connect twice.
import type { ResourceShelf } from '../protocol/connector.ts';

export class RunShelf implements ResourceShelf {
  private readonly parked = new Map<string, { value: unknown; close: () => Promise<void> }>();

  park(key: string, value: unknown, close: () => Promise<void>): void {
    const before = this.parked.get(key);
    this.parked.set(key, { value, close });
    if (before) void before.close().catch(() => undefined);
  }

  take<T>(key: string): T | undefined {
    const entry = this.parked.get(key);
    if (!entry) return undefined;
    this.parked.delete(key);
    return entry.value as T;
  }

  /** Closes what no call took (the run ended, or failed before the call that would have taken it). */
  async close(): Promise<void> {
    const left = [...this.parked.values()];
    this.parked.clear();
    await Promise.all(left.map((e) => e.close().catch(() => undefined)));
  }

  get size(): number {
    return this.parked.size;
  }
}
