/**
 * Credentials in URLs (`https://user:password@host:2379`) must never reach an error message or a
 * log line: configuration and start-up errors are printed, logged and pasted into tickets.
 */

/** Any `scheme://userinfo@` in the text. The userinfo ends at the last `@` before the host. */
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#'"`]*@/gi;

/** Replaces the userinfo of every URL in `text` with `***` (`https://***@host:2379`). */
export function redactCredentials(text: string): string {
  return text.replace(USERINFO, '$1***@');
}

/** Whether `url` carries a userinfo part (`user@`, `user:password@`). */
export function hasCredentials(url: string): boolean {
  USERINFO.lastIndex = 0;
  const found = USERINFO.test(url);
  USERINFO.lastIndex = 0;
  return found;
}

/**
 * One endpoint as it may be shown in an error: everything up to its last `@` (the userinfo,
 * however it is written — with or without a scheme, with `/` inside) replaced by `***@`.
 */
export function hideUserinfo(endpoint: string): string {
  return endpoint.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, '$1***@');
}
