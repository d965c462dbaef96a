import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';
import { validateClientPath } from './keys.js';

/**
 * Browser upload tokens (spec 004's signed tokens): a client's backend asks the
 * gateway for one with its key and hands it to a page. A token names one
 * client, a path prefix inside that client's namespace, a per-file size limit
 * and an expiry, signed with HMAC-SHA256 under the gateway's token secret.
 *
 * Format: `s3upt.<base64url(JSON claims)>.<base64url(HMAC)>`.
 */
export const TOKEN_PREFIX = 's3upt.';

export interface TokenClaims {
  v: 1;
  /** Client name. */
  c: string;
  /** Path prefix (client-relative, no trailing slash; '' = the whole namespace). */
  p: string;
  /** Largest file, bytes. */
  m: number;
  /** Expiry, epoch ms. */
  e: number;
  /** Token id (for logs). */
  i: string;
}

const MAC_CONTEXT = 's3up upload token v1\n';

function mac(secret: Buffer, payload: string): Buffer {
  return createHmac('sha256', secret).update(MAC_CONTEXT).update(payload).digest();
}

export function isUploadToken(value: string | undefined): value is string {
  return value?.startsWith(TOKEN_PREFIX) === true;
}

/** Validate a requested prefix: '' or a valid client path, kept without a trailing slash. */
export function normalizeScopePrefix(value: unknown): string {
  if (value === undefined || value === null || value === '') return '';
  if (typeof value !== 'string') throw new AppError(ErrorCode.INVALID_REQUEST, 'path_prefix must be a string');
  const trimmed = value.replace(/\/+$/, '');
  if (trimmed === '') return '';
  try {
    return validateClientPath(trimmed);
  } catch (err) {
    throw new AppError(ErrorCode.INVALID_PATH, `path_prefix: ${(err as Error).message}`);
  }
}

/** True when `path` (validated, client-relative) lies under `prefix` ('' = anywhere). */
export function inScope(path: string, prefix: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(`${prefix}/`);
}

/** Refuse a path outside the scope of a token-authenticated client (no-op for keys). */
export function checkScope(client: ResolvedClient, path: string): void {
  const scope = client.pathScope;
  if (scope !== undefined && !inScope(path, scope)) {
    throw new AppError(ErrorCode.FORBIDDEN, `this upload token allows paths under "${scope}/" only`);
  }
}

/** Where revoked token ids are kept (the database, shared by the gateways). */
export interface RevocationStore {
  revoke(tokenId: string, client: string, expiresAt: number, now: number): Promise<void>;
  isRevoked(tokenId: string, client: string): Promise<boolean>;
}

/** Token ids are UUIDs (randomUUID at issue). */
const TOKEN_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class UploadTokens {
  constructor(
    private readonly secret: () => Promise<Buffer>,
    readonly maxTtlSeconds: number,
    private readonly revocations?: RevocationStore,
  ) {}

  /**
   * Revoke a token of `client` by its id (returned when it was issued): from
   * now on every gateway refuses it. Tokens are not stored when issued, so an
   * id is taken as given; a revocation only ever applies to the client that
   * made it, and lasts as long as any token could live.
   */
  async revoke(client: ResolvedClient, tokenId: string, now = Date.now()): Promise<{ token_id: string; revoked_until: number }> {
    if (!TOKEN_ID_RE.test(tokenId)) throw new AppError(ErrorCode.INVALID_REQUEST, 'token_id must be the id returned when the token was issued (a UUID)');
    if (!this.revocations) throw new AppError(ErrorCode.INTERNAL, 'token revocation is not available');
    const until = now + this.maxTtlSeconds * 1000;
    await this.revocations.revoke(tokenId, client.name, until, now);
    return { token_id: tokenId, revoked_until: until };
  }

  async issue(client: ResolvedClient, req: { pathPrefix: string; maxSize?: number | undefined; ttlSeconds?: number | undefined }, now = Date.now()) {
    const ttl = req.ttlSeconds ?? Math.min(3600, this.maxTtlSeconds);
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > this.maxTtlSeconds) {
      throw new AppError(ErrorCode.INVALID_REQUEST, `ttl_seconds must be an integer from 1 to ${this.maxTtlSeconds}`);
    }
    const max = req.maxSize ?? client.maxFileSize;
    if (!Number.isInteger(max) || max < 0 || max > client.maxFileSize) {
      throw new AppError(ErrorCode.INVALID_REQUEST, `max_size_bytes must be an integer from 0 to this client's limit (${client.maxFileSize})`);
    }
    const claims: TokenClaims = { v: 1, c: client.name, p: req.pathPrefix, m: max, e: now + ttl * 1000, i: randomUUID() };
    const payload = Buffer.from(JSON.stringify(claims), 'utf8').toString('base64url');
    const token = `${TOKEN_PREFIX}${payload}.${mac(await this.secret(), payload).toString('base64url')}`;
    return { token, claims };
  }

  /**
   * Check a presented token: signature (constant time), expiry, that its
   * client is still configured, and that it was not revoked. Returns that client narrowed to the token's
   * scope: its size limit lowered to the token's, its paths fenced to the prefix.
   */
  async verify(clients: readonly ResolvedClient[], token: string, now = Date.now()): Promise<{ client: ResolvedClient; claims: TokenClaims }> {
    const rest = token.slice(TOKEN_PREFIX.length);
    const dot = rest.indexOf('.');
    const invalid = () => new AppError(ErrorCode.UNAUTHORIZED, 'invalid upload token');
    if (dot <= 0 || token.length > 2048) throw invalid();
    const payload = rest.slice(0, dot);
    const presented = Buffer.from(rest.slice(dot + 1), 'base64url');
    const want = mac(await this.secret(), payload);
    if (presented.length !== want.length || !timingSafeEqual(presented, want)) throw invalid();
    let claims: TokenClaims;
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as TokenClaims;
    } catch {
      throw invalid();
    }
    if (claims.v !== 1 || typeof claims.c !== 'string' || typeof claims.p !== 'string' || typeof claims.m !== 'number' || typeof claims.e !== 'number') {
      throw invalid();
    }
    if (claims.e <= now) throw new AppError(ErrorCode.UNAUTHORIZED, 'upload token expired: ask for a new one');
    const base = clients.find((c) => c.name === claims.c);
    if (!base) throw invalid();
    if (typeof claims.i === 'string' && (await this.revocations?.isRevoked(claims.i, claims.c))) {
      throw new AppError(ErrorCode.UNAUTHORIZED, 'upload token revoked: ask for a new one');
    }
    return { client: { ...base, maxFileSize: Math.min(base.maxFileSize, claims.m), pathScope: claims.p }, claims };
  }
}
