import type { Readable } from 'node:stream';
import { DataStore, ERRORS, type Locker, Server, Upload } from '@tus/server';
import { AppError, ErrorCode, isAppError } from '../../errors.js';
import { limitOf } from '../../uploads/limits.js';
import type { ResumableEngine } from '../../uploads/resumable.js';
import { inScope } from '../../uploads/tokens.js';
import type { AppContext } from '../context.js';
import { CORS_ALLOWED_HEADERS, CORS_EXPOSED_HEADERS, CorsPolicy } from '../cors.js';
import { currentClient, TUS_PATH, TusError, tusContext } from './tus-context.js';

// Loaded on the first tus request (see tus.ts): @tus/server and what it pulls
// in (OpenTelemetry API, debug, ...) cost memory that a gateway whose clients
// never speak tus should not pay.

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
    if (!s || (client.pathScope !== undefined && !inScope(s.path, client.pathScope))) throw ERRORS.FILE_NOT_FOUND;
    if (s.status === 'aborted' || s.status === 'expired') throw ERRORS.FILE_NO_LONGER_EXISTS;
    if (s.status === 'completing') throw new AppError(ErrorCode.CONFLICT, 'the upload is being completed; retry');
    // Every byte arrived but the object was not published (the store failed at
    // completion): report the offset only once the object is there, so a client
    // never takes an unpublished upload for a finished one.
    if (s.status === 'active' && s.file_size > 0 && s.tus_offset === s.file_size) await this.engine.complete(client, s.session_id);
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
    const ctx = tusContext.getStore();
    return this.engine.tusWrite(client, id, offset, stream, ctx?.checksum, ctx?.signal);
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

/** The @tus/server instance for /tus, over the resumable engine; `locker` keeps two requests from writing one upload at once. */
export function createTusServer(ctx: AppContext, engine: ResumableEngine, locker: Locker): Server {
  const store = new EngineTusStore(engine, engine.opts.sessionTtlMs);
  // The gateway's one CORS policy (src/server/cors.ts), not @tus/server's default of `*` for every origin.
  const cors = new CorsPolicy(ctx.config.clients);
  return new Server({
    allowedOrigins: (origin) => cors.allows(origin),
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    path: TUS_PATH,
    datastore: store,
    locker,
    relativeLocation: true,
    respectForwardedHeaders: ctx.config.trustProxy,
    disableTerminationForFinishedUploads: true,
    namingFunction: () => crypto.randomUUID(),
    maxSize: () => {
      const client = tusContext.getStore()?.client;
      return client ? limitOf(client) : 0;
    },
    onResponseError: (_req, err) => {
      if (err instanceof TusError) return { status_code: err.status_code, body: err.body };
      if (isAppError(err)) {
        // Our error contract, as JSON, with tus's status conventions.
        const status = err.code === ErrorCode.CHECKSUM_MISMATCH ? 460 : err.code === ErrorCode.SESSION_EXPIRED ? 410 : err.status;
        const requestId = tusContext.getStore()?.requestId ?? '';
        return { status_code: status, body: JSON.stringify({ error_code: err.code, message: err.message, request_id: requestId }) };
      }
      if (err instanceof Error && !('status_code' in err)) {
        ctx.logger.error({ err }, 'tus request failed');
        return {
          status_code: 500,
          body: JSON.stringify({ error_code: ErrorCode.INTERNAL, message: 'internal error', request_id: tusContext.getStore()?.requestId ?? '' }),
        };
      }
      return undefined;
    },
  });
}
