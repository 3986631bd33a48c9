// Connection URLs carry user names and passwords percent-encoded (RFC 3986). A password with a
// bare "%" or other reserved characters breaks them in ways each client reports differently, so
// connectors check the URL in their config schema: one message, at `validate` time, no secret in it.

/** Why `url` is not a usable connection URL, or undefined when it is. Never echoes the URL. */
export function connectionUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'not a valid URL (expected e.g. postgres://user:password@host:5432/db)';
  }
  for (const [part, value] of [
    ['user name', u.username],
    ['password', u.password],
    ['path', u.pathname],
  ] as const) {
    try {
      decodeURIComponent(value);
    } catch {
      return (
        `the ${part} in the URL is not valid percent-encoding (a "%" must be followed by two hex digits): ` +
        'encode special characters (e.g. encodeURIComponent: "%" → %25, "@" → %40, "/" → %2F)'
      );
    }
  }
  return undefined;
}
