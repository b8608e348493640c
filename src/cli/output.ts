/**
 * The node's standard output and error (a terminal, journald, a pipe) can go away while it
 * runs: journald restarted, the shell that started it closed. Neither is a reason to stop
 * serving. Nor may a failed write become an uncaught exception that the node logs — to the same
 * broken stream, which failed again, in a loop that took a core and made a SIGTERM miss its
 * deadline. Once a write fails, nothing more goes there; the recent records stay in
 * `minkms logs`, and the audit log is complete.
 */
export function resilientOutput(stream: NodeJS.WriteStream): { write(text: string): void } {
  let open = true;
  // Replaces main's handler on stdout, which ends a CLI command whose reader went away (`… | head`).
  stream.removeAllListeners('error');
  stream.on('error', () => {
    open = false;
  });
  return {
    write: (text) => {
      if (open) stream.write(text);
    },
  };
}
