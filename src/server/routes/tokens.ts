import { createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ResolvedClient } from '../../config/load.js';
import { AppError, ErrorCode } from '../../errors.js';
import { loadSigningSecret } from '../../uploads/direct.js';
import { DbRevocations } from '../../uploads/token-revocations.js';
import { isUploadToken, normalizeScopePrefix, UploadTokens } from '../../uploads/tokens.js';
import { presentedKey } from '../auth.js';
import type { AppContext } from '../context.js';
import { TUS_PATH } from './tus-context.js';
import { requireClient } from './uploads.js';

/**
 * The routes an upload token opens (method and route pattern): uploads (form,
 * raw PUT, tus) and the telemetry an uploader posts when done. Nothing else:
 * not reads, not records, not admin, not POST /tokens itself.
 */
const TOKEN_ROUTES = new Set([
  'POST /upload',
  'PUT /objects/*',
  'POST /telemetry',
  ...['POST', 'HEAD', 'PATCH', 'DELETE'].flatMap((m) => [`${m} ${TUS_PATH}`, `${m} ${TUS_PATH}/*`]),
]);

const services = new WeakMap<AppContext, UploadTokens>();

/** One UploadTokens per app. Its secret: uploads.token_secret, else derived from the direct-upload secret. */
export function uploadTokens(ctx: AppContext): UploadTokens {
  let svc = services.get(ctx);
  if (!svc) {
    const u = ctx.config.raw.uploads;
    const storage = ctx.config.storage;
    let secret: Promise<Buffer> | undefined;
    const derive = (base: Buffer) => createHmac('sha256', base).update('s3up upload tokens').digest();
    const get = (): Promise<Buffer> => {
      secret ??=
        u.token_secret !== ''
          ? Promise.resolve(Buffer.from(u.token_secret, 'utf8'))
          : storage.backend === 'fs'
            ? // Kept under the storage root, so every gateway on that root agrees.
              loadSigningSecret(u.direct_signing_secret, path.join(storage.root, '.s3up-tmp', 'secrets')).then(derive)
            : Promise.resolve(u.direct_signing_secret !== '' ? derive(Buffer.from(u.direct_signing_secret)) : randomBytes(32));
      return secret;
    };
    svc = new UploadTokens(get, u.token_max_ttl_seconds, new DbRevocations(ctx.db.db));
    services.set(ctx, svc);
  }
  return svc;
}

/**
 * The client of a request that presents an upload token (as Bearer or
 * x-api-key), narrowed to the token's scope; undefined when it presents no
 * token. A token on a route it does not open is a 403.
 */
export async function tokenClient(ctx: AppContext, request: FastifyRequest): Promise<ResolvedClient | undefined> {
  const presented = presentedKey(request.headers);
  if (!isUploadToken(presented)) return undefined;
  const { client } = await uploadTokens(ctx).verify(ctx.config.clients, presented);
  if (!TOKEN_ROUTES.has(`${request.method} ${request.routeOptions.url}`)) {
    throw new AppError(ErrorCode.FORBIDDEN, 'an upload token opens the upload routes only (POST /upload, PUT /objects, /tus, POST /telemetry)');
  }
  return client;
}

export async function tokenRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.post(
    '/tokens',
    {
      config: { auth: 'client' },
      schema: {
        summary: 'A signed, expiring upload token for a browser: one client, a path prefix, a size limit',
        tags: ['uploads'],
        body: {
          type: 'object',
          properties: {
            path_prefix: { type: 'string', description: 'client-relative folder the token may write under ("" = anywhere)' },
            max_size_bytes: { type: 'integer', minimum: 0, description: "largest file; at most the client's limit (default)" },
            ttl_seconds: { type: 'integer', minimum: 1, description: 'lifetime (default 3600, at most uploads.token_max_ttl_seconds)' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              token: { type: 'string' },
              token_id: { type: 'string', description: 'what DELETE /tokens/{token_id} revokes it by' },
              client: { type: 'string' },
              path_prefix: { type: 'string' },
              max_size_bytes: { type: 'integer' },
              expires_at: { type: 'string' },
              tus_endpoint: { type: 'string' },
              upload_page: { type: 'string' },
            },
          },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      if (client.pathScope !== undefined) throw new AppError(ErrorCode.FORBIDDEN, 'an upload token cannot issue tokens');
      const body = (request.body ?? {}) as { path_prefix?: string; max_size_bytes?: number; ttl_seconds?: number };
      const unknown = Object.keys(body).filter((k) => !['path_prefix', 'max_size_bytes', 'ttl_seconds'].includes(k));
      if (unknown.length > 0) throw new AppError(ErrorCode.INVALID_REQUEST, `unknown field(s): ${unknown.join(', ')}`);
      const { token, claims } = await uploadTokens(ctx).issue(client, {
        pathPrefix: normalizeScopePrefix(body.path_prefix),
        maxSize: body.max_size_bytes,
        ttlSeconds: body.ttl_seconds,
      });
      request.log.info({ token_id: claims.i, client: client.name, path_prefix: claims.p, expires_at: claims.e }, 'upload token issued');
      return {
        token,
        token_id: claims.i,
        client: client.name,
        path_prefix: claims.p,
        max_size_bytes: claims.m,
        expires_at: new Date(claims.e).toISOString(),
        tus_endpoint: `${TUS_PATH}/`,
        upload_page: '/upload',
      };
    },
  );

  app.delete(
    '/tokens/:token_id',
    {
      config: { auth: 'client' },
      schema: {
        summary: 'Revoke an upload token of this client by its id: every gateway refuses it from now on',
        tags: ['uploads'],
        params: { type: 'object', properties: { token_id: { type: 'string', maxLength: 64 } }, required: ['token_id'] },
        response: {
          200: {
            type: 'object',
            properties: {
              token_id: { type: 'string' },
              revoked: { type: 'boolean' },
              revoked_until: { type: 'string', description: 'the revocation is kept until any token issued before it has expired' },
            },
          },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      if (client.pathScope !== undefined) throw new AppError(ErrorCode.FORBIDDEN, 'an upload token cannot revoke tokens');
      const { token_id } = request.params as { token_id: string };
      const r = await uploadTokens(ctx).revoke(client, token_id);
      request.log.info({ token_id, client: client.name }, 'upload token revoked');
      return { token_id: r.token_id, revoked: true, revoked_until: new Date(r.revoked_until).toISOString() };
    },
  );
}
