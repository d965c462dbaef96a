import { AsyncLocalStorage } from 'node:async_hooks';
import { getHashes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DataStore, ERRORS, Server, Upload } from '@tus/server';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ResolvedClient } from '../../config/load.js';
import { AppError, ErrorCode, isAppError } from '../../errors.js';
import type { BodyChecksum, ResumableEngine } from '../../uploads/resumable.js';
import type { AppContext } from '../app.js';

/** What a tus request carries into the datastore: who asks, and the PATCH's Upload-Checksum. */
interface TusRequestContext {
  client: ResolvedClient | undefined;
  checksum: BodyChecksum | undefined;
  requestId: string;
}

const als = new AsyncLocalStorage<TusRequestContext>();

/** Upload-Checksum algorithms we verify (tus checksum extension). */
export const TUS_CHECKSUM_ALGORITHMS = ['sha1', 'sha256', 'md5'].filter((a) => getHashes().includes(a));

export const TUS_PATH = '/tus';

class TusError extends Error {
  constructor(
    readonly status_code: number,
    readonly body: string,
  ) {
    super(body);
  }
}

function currentClient(): ResolvedClient {
  const client = als.getStore()?.client;
  if (!client) throw new TusError(401, 'Unauthorized\n');
  return client;
}

/**
 * A tus DataStore over the resumable engine: a tus upload is an engine session
 * (protocol 'tus'); PATCH bodies are cut into the session's parts. Every
 * method works for the calling client only: another client's id is 404.
 */
export class EngineTusStore extends DataStore {
  constructor(
    private readonly engine: ResumableEngine,
    private readonly expirationMs: number,
  ) {
    super();
    this.extensions = ['creation', 'creation-with-upload', 'termination', 'expiration', 'checksum'];
  }

  override async create(upload: Upload): Promise<Upload> {
    const client = currentClient();
    if (upload.size === undefined) throw ERRORS.INVALID_LENGTH;
    const md = upload.metadata ?? {};
    const path = md.path ?? md.filename ?? md.name;
    if (!path) throw new AppError(ErrorCode.PATH_REQUIRED, 'tus Upload-Metadata needs "path" (or "filename")');
    const s = await this.engine.init(client, {
      path,
      fileSize: upload.size,
      contentType: md.filetype ?? md.contentType ?? md.content_type ?? undefined,
      checksum: md.checksum ?? undefined,
      protocol: 'tus',
      sessionId: upload.id,
      tusMetadata: md,
    });
    // An empty upload is finished at creation: no PATCH will come.
    if (upload.size === 0) await this.engine.complete(client, s.session_id);
    upload.creation_date = new Date(s.created_at).toISOString();
    upload.storage = { type: this.engine.storage.kind, path: s.object_key };
    return upload;
  }

  override async getUpload(id: string): Promise<Upload> {
    const client = currentClient();
    const s = await this.engine.find(client.name, id);
    if (!s) throw ERRORS.FILE_NOT_FOUND;
    if (s.status === 'aborted' || s.status === 'expired') throw ERRORS.FILE_NO_LONGER_EXISTS;
    let metadata: Record<string, string | null> | undefined;
    try {
      metadata = s.tus_metadata ? (JSON.parse(s.tus_metadata) as Record<string, string | null>) : undefined;
    } catch {
      metadata = undefined;
    }
    return new Upload({
      id: s.session_id,
      size: s.file_size,
      offset: s.status === 'completed' ? s.file_size : s.tus_offset,
      metadata,
      creation_date: new Date(s.created_at).toISOString(),
      storage: { type: this.engine.storage.kind, path: s.object_key },
    });
  }

  override async write(stream: Readable, id: string, offset: number): Promise<number> {
    const client = currentClient();
    return this.engine.tusWrite(client, id, offset, stream, als.getStore()?.checksum);
  }

  override async remove(id: string): Promise<void> {
    await this.engine.abort(currentClient(), id);
  }

  override async deleteExpired(): Promise<number> {
    const r = await this.engine.sweepExpired();
    return r.expired;
  }

  override getExpiration(): number {
    return this.expirationMs;
  }
}

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
  const store = new EngineTusStore(engine, engine.opts.sessionTtlMs);
  const tus = new Server({
    path: TUS_PATH,
    datastore: store,
    relativeLocation: true,
    respectForwardedHeaders: ctx.config.trustProxy,
    disableTerminationForFinishedUploads: true,
    namingFunction: () => crypto.randomUUID(),
    maxSize: () => als.getStore()?.client?.maxFileSize ?? 0,
    onResponseError: (_req, err) => {
      if (err instanceof TusError) return { status_code: err.status_code, body: err.body };
      if (isAppError(err)) {
        // Our error contract, as JSON, with tus's status conventions.
        const status = err.code === ErrorCode.CHECKSUM_MISMATCH ? 460 : err.code === ErrorCode.SESSION_EXPIRED ? 410 : err.status;
        const requestId = als.getStore()?.requestId ?? '';
        return { status_code: status, body: JSON.stringify({ error_code: err.code, message: err.message, request_id: requestId }) };
      }
      if (err instanceof Error && !('status_code' in err)) {
        ctx.logger.error({ err }, 'tus request failed');
        return {
          status_code: 500,
          body: JSON.stringify({ error_code: ErrorCode.INTERNAL, message: 'internal error', request_id: als.getStore()?.requestId ?? '' }),
        };
      }
      return undefined;
    },
  });

  const handle = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    let checksum: BodyChecksum | undefined;
    try {
      checksum = request.method === 'PATCH' ? parseUploadChecksum(request.headers['upload-checksum'] as string | undefined) : undefined;
    } catch (err) {
      const e = err as TusError;
      throw new AppError(ErrorCode.INVALID_REQUEST, e.body.trim());
    }
    reply.hijack();
    reply.raw.setHeader('Tus-Checksum-Algorithm', TUS_CHECKSUM_ALGORITHMS.join(','));
    reply.raw.setHeader('x-request-id', request.id);
    await als.run({ client: request.client, checksum, requestId: request.id }, () => tus.handle(request.raw, reply.raw));
  };

  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    for (const url of [TUS_PATH, `${TUS_PATH}/*`]) {
      scope.route({ method: ['POST', 'HEAD', 'PATCH', 'DELETE'], url, config: { auth: 'client' }, handler: handle });
      // Discovery (OPTIONS) answers without a key, for CORS preflights.
      scope.route({ method: 'OPTIONS', url, config: { auth: 'none' }, handler: handle });
    }
  });
}
