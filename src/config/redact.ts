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
