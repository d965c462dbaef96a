import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';

/** The key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>`. */
export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  const x = headers['x-api-key'];
  if (typeof x === 'string' && x.length > 0) return x.trim();
  return undefined;
}

/**
 * Find the client owning `key`. The presented key is hashed and compared with
 * every client's stored hash in constant time, without stopping at a match, so
 * timing tells nothing about which keys exist.
 */
export function findClient(clients: readonly ResolvedClient[], key: string | undefined): ResolvedClient | undefined {
  if (key === undefined || key.length === 0 || key.length > 512) return undefined;
  const digest = createHash('sha256').update(key, 'utf8').digest();
  let found: ResolvedClient | undefined;
  for (const c of clients) {
    if (timingSafeEqual(digest, c.keyHash) && found === undefined) found = c;
  }
  return found;
}

export function authenticate(clients: readonly ResolvedClient[], headers: IncomingHttpHeaders): ResolvedClient {
  const key = presentedKey(headers);
  if (key === undefined) throw new AppError(ErrorCode.UNAUTHORIZED, 'missing API key: send Authorization: Bearer <key> or x-api-key');
  const client = findClient(clients, key);
  if (!client) throw new AppError(ErrorCode.UNAUTHORIZED, 'invalid API key');
  return client;
}

/** Constant-time comparison of two secrets of any length. */
export function secretEquals(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}
