// Live progress of `sync` on a terminal: one line per stream, cut to the terminal width so it
// never wraps (a wrapped line breaks the redraw), the current rate over a sliding window (not the
// average since start), and totals and an ETA when the source sent an estimate (Airbyte ESTIMATE).
import type { LoadedPipeline } from '../config/load.ts';
import type { StreamStats } from '../engine/sync.ts';
import { clearProgressLine, showProgress } from './output.ts';

export interface LiveConnection {
  name: string;
  streams: Record<string, StreamStats>;
  /** A local embedder (hash) makes no requests: no "embed req" for it. */
  localEmbedder: boolean;
}

const WINDOW_MS = 10_000;

/** Keeps recent samples of each stream's counters and renders the progress lines. */
export class ProgressView {
  private samples = new Map<string, Array<{ at: number; read: number }>>();

  /** Records the counters at `now` (call every tick). */
  sample(live: LiveConnection[], now: number): void {
    for (const c of live) {
      for (const [name, s] of Object.entries(c.streams)) {
        const key = `${c.name}/${name}`;
        const list = this.samples.get(key) ?? [];
        list.push({ at: now, read: s.records_read });
        while (list.length > 2 && now - list[0].at > WINDOW_MS) list.shift();
        this.samples.set(key, list);
      }
    }
  }

  /** Records per second over the last ~10 s, or undefined before two samples exist. */
  rate(key: string): number | undefined {
    const list = this.samples.get(key);
    if (!list || list.length < 2) return undefined;
    const first = list[0];
    const last = list[list.length - 1];
    const secs = (last.at - first.at) / 1000;
    return secs > 0 ? (last.read - first.read) / secs : undefined;
  }

  /** One line per running or finished stream of the live connections, each at most `columns - 1` wide. */
  render(live: LiveConnection[], columns: number): string[] {
    const lines: string[] = [];
    for (const c of live) {
      for (const [name, s] of Object.entries(c.streams)) {
        // The counters matter more than a long name: the name is cut first, then the counters.
        const width = Math.max(20, columns - 1);
        const { label, counters } = this.line(c, name, s);
        const room = Math.max(12, width - [...counters].length - 2);
        lines.push(truncate(`${truncateMiddle(label, room)}: ${counters}`, width));
      }
    }
    return lines;
  }

  private line(c: LiveConnection, name: string, s: StreamStats): { label: string; counters: string } {
    const key = `${c.name}/${name}`;
    const rate = this.rate(key);
    const total = s.records_estimated;
    const parts: string[] = [];
    const status = s.status === 'running' ? '' : ` ${s.status}`;
    parts.push(total ? `${count(s.records_read)}/${count(total)} read` : `${count(s.records_read)} read`);
    if (s.status === 'running' && rate !== undefined) parts.push(`${count(Math.round(rate))}/s`);
    if (s.status === 'running' && total && rate && rate > 0 && total > s.records_read)
      parts.push(`ETA ${duration((total - s.records_read) / rate)}`);
    if (s.records_unchanged) parts.push(`${count(s.records_unchanged)} unchanged`);
    parts.push(`${count(s.chunks_written)} chunks`);
    if (!c.localEmbedder) parts.push(`${count(s.embedding_requests)} embed req`, `${count(s.embedding_cache_hits)} cached`);
    return { label: `${key}${status}`, counters: parts.join(' · ') };
  }
}

// Built at first use (~7 ms of ICU set-up at start-up otherwise): only counts of 100,000 and up need it.
let compact: Intl.NumberFormat | undefined;
/** 12,345 below 100,000, then 1.2M: counters stay short enough to fit one line. */
const count = (n: number) =>
  n < 100_000
    ? n.toLocaleString('en-US')
    : (compact ??= new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 })).format(n);

function duration(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Cuts `text` to `width` characters (code points), ending in "…" when cut. */
export function truncate(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width ? text : chars.slice(0, width - 1).join('') + '…';
}

/** Cuts the middle out of `text` ("a-long-conn…/docs"), so both the connection and the stream stay recognisable. */
export function truncateMiddle(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  const tail = Math.floor((width - 1) / 2);
  return chars.slice(0, width - 1 - tail).join('') + '…' + chars.slice(chars.length - tail).join('');
}

/**
 * The progress line of a sync or reindex on a terminal: a frame every 500 ms (none when stderr is
 * not a TTY), and one at once when a connection starts, however short it is.
 */
export function terminalProgress(pipeline: LoadedPipeline) {
  const live: LiveConnection[] = [];
  const view = new ProgressView();
  const tick = () => {
    view.sample(live.slice(-1), Date.now());
    showProgress(view.render(live.slice(-1), process.stderr.columns || 80));
  };
  const ticker = process.stderr.isTTY ? setInterval(tick, 500) : undefined;
  return {
    onConnectionStart(name: string, streams: Record<string, StreamStats>): void {
      const embedding = pipeline.connections.find((c) => c.config.name === name)?.config.embedding;
      live.push({ name, streams, localEmbedder: embedding?.provider === 'hash' });
      if (ticker) tick();
    },
    stop(): void {
      if (ticker) clearInterval(ticker);
      clearProgressLine();
    },
    /** Connections whose embedder runs locally (the summary shows no cost for them). */
    localConnections(): Set<string> {
      return new Set(live.filter((c) => c.localEmbedder).map((c) => c.name));
    },
  };
}
