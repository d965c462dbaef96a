/**
 * Whether a stream failed only because its reader gave it up (a store that
 * stopped reading a body after its own failure), not because of its writer
 * (a client that went away, a limit, a refused check). Node reports such a
 * stream as a premature close, or as an AbortError when the reader left its
 * async iteration. The reader's own error is then the one to report.
 */
export function closedByReader(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.code === 'ERR_STREAM_PREMATURE_CLOSE' || e?.name === 'AbortError';
}
