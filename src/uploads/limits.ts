import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';

/**
 * The one rule of a client's size limit (`max_file_size_mb`): a file may have
 * at most `limitOf(client)` bytes. Every check of it calls `checkSize` or
 * `exceeds`: the declared Content-Length before a body is read (with room for
 * the multipart framing), the declared size of a chunked, tus or direct upload
 * at admission, the bytes counted as they stream (Meter), and a direct upload's
 * stored object when it is settled.
 */
export function limitOf(client: ResolvedClient): number {
  return client.maxFileSize;
}

/** True when `size` bytes (plus `overhead` bytes of framing allowed on top) pass the client's limit. */
export function exceeds(client: ResolvedClient, size: number, overhead = 0): boolean {
  return size > limitOf(client) + overhead;
}

/** 413 PAYLOAD_TOO_LARGE for `what` (e.g. "the file (N bytes)"), with the limit in the details. */
export function tooLarge(client: ResolvedClient, what: string): AppError {
  const limit = limitOf(client);
  return new AppError(ErrorCode.PAYLOAD_TOO_LARGE, `${what} exceeds this client's limit of ${limit} bytes`, { limit });
}

/** Refuse `size` bytes over the limit (no-op when the size is unknown). */
export function checkSize(client: ResolvedClient, size: number | undefined, opts: { overhead?: number; what?: string } = {}): void {
  if (size !== undefined && exceeds(client, size, opts.overhead)) throw tooLarge(client, opts.what ?? `the file (${size} bytes)`);
}
