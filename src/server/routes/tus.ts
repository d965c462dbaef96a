import type { Server } from '@tus/server';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import type { BodyChecksum, ResumableEngine } from '../../uploads/resumable.js';
import { PgAdvisoryLocks, UploadLocker } from '../../uploads/upload-locks.js';
import { textSchema } from '../../validate.js';
import type { AppContext } from '../context.js';
import { settleUnreadBody } from '../request-body.js';
import { TUS_CHECKSUM_ALGORITHMS, TUS_PATH, TusError, tusContext } from './tus-context.js';

const tusIdParams = { type: 'object', properties: { '*': textSchema({ maxLength: 128 }) } } as const;

function parseUploadChecksum(value: string | undefined): BodyChecksum | undefined {
  if (value === undefined) return undefined;
  const m = /^([a-z0-9-]+) ([A-Za-z0-9+/=]+)$/.exec(value.trim());
  if (!m) throw new TusError(400, 'Invalid Upload-Checksum\n');
  const algorithm = m[1] as string;
  if (!TUS_CHECKSUM_ALGORITHMS.includes(algorithm)) throw new TusError(400, `Unsupported checksum algorithm ${algorithm}\n`);
  return { algorithm, expected: Buffer.from(m[2] as string, 'base64') };
}

/**
 * tus 1.0 at /tus (core, creation, creation-with-upload, termination,
 * expiration, checksum) with @tus/server doing the protocol. Fastify
 * authenticates the request (onRequest hook) and leaves the body unread;
 * @tus/server then takes over the raw request and response.
 */
export async function tusRoutes(app: FastifyInstance, { ctx, engine }: { ctx: AppContext; engine: ResumableEngine }) {
  // One writer per upload: across gateways too on PostgreSQL (advisory locks; connected on first use).
  const locker = new UploadLocker(ctx.db.dialect === 'postgres' ? new PgAdvisoryLocks(ctx.config.databaseUrl) : undefined);
  app.addHook('onClose', () => locker.close());
  // @tus/server is loaded with the first tus request, not at start.
  let server: Promise<Server> | undefined;
  const tusServer = (): Promise<Server> => {
    server ??= import('./tus-server.js').then((m) => m.createTusServer(ctx, engine, locker));
    return server;
  };

  const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    let checksum: BodyChecksum | undefined;
    try {
      checksum = request.method === 'PATCH' ? parseUploadChecksum(request.headers['upload-checksum'] as string | undefined) : undefined;
    } catch (err) {
      const e = err as TusError;
      throw new AppError(ErrorCode.INVALID_REQUEST, e.body.trim());
    }
    const tus = await tusServer();
    reply.hijack();
    reply.raw.setHeader('Tus-Checksum-Algorithm', TUS_CHECKSUM_ALGORITHMS.join(','));
    reply.raw.setHeader('x-request-id', request.id);
    try {
      await tusContext.run({ client: request.client, checksum, requestId: request.id, signal: request.bodyIdle }, () => tus.handle(request.raw, reply.raw));
    } finally {
      // A PATCH refused or cut short: what the client still sends is read and discarded (or lingered over).
      settleUnreadBody(request.raw, reply.raw);
    }
  };

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    for (const url of [TUS_PATH, `${TUS_PATH}/*`]) {
      scope.route({ method: ['POST', 'HEAD', 'PATCH', 'DELETE'], url, config: { auth: 'client' }, schema: { params: tusIdParams }, handler: handle });
      // Discovery (OPTIONS) answers without a key, for CORS preflights.
      scope.route({ method: 'OPTIONS', url, config: { auth: 'none' }, handler: handle });
    }
  });
}
