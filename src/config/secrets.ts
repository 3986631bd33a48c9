// Secret values never appear in output (invariant 7). Every secret the config loader finds is
// registered here, and everything sluice prints goes through `redact`.
const secrets = new Set<string>();

export function registerSecret(value: unknown): void {
  if (typeof value !== 'string' || value.length < 3) return;
  secrets.add(value);
  // Also catch the forms a secret takes inside URLs and headers.
  secrets.add(encodeURIComponent(value));
}

/** Registers the password of a connection URL (postgres://user:pw@host/db). */
export function registerUrlPassword(value: unknown): void {
  if (typeof value !== 'string' || !value.includes('@')) return;
  try {
    const u = new URL(value);
    if (u.password) {
      registerSecret(decodeURIComponent(u.password));
      registerSecret(u.password);
    }
  } catch {
    /* not a URL */
  }
}

const SHORT = 8;
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function redact(text: string): string {
  if (!secrets.size) return text;
  let out = text;
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (!out.includes(s)) continue;
    // Long secrets go wherever they appear; a short one (a test key like "test") only as a whole
    // token, so "test-embed" is not garbled into "***-embed".
    out = s.length >= SHORT ? out.split(s).join('***') : out.replace(new RegExp(`(?<![\\w-])${escapeRe(s)}(?![\\w-])`, 'g'), '***');
  }
  return out;
}

export function secretCount(): number {
  return secrets.size;
}

const SECRETISH = /(pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential|auth)/i;
/** Environment variables whose names look secret are treated as secrets when interpolated. */
export function looksSecret(name: string): boolean {
  return SECRETISH.test(name);
}
