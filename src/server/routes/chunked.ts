import type { Readable } from 'node:stream';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import { parseSha256 } from '../../uploads/meter.js';
import { COMPOSITE_ALGORITHM, parseMd5, type ResumableEngine } from '../../uploads/resumable.js';
import { textSchema } from '../../validate.js';
import type { AppContext } from '../context.js';
import { CHECKSUM_HEADER, declaredLength, formError, formParts, MULTIPART_SLACK, requireClient } from './uploads.js';

interface InitBody {
  path?: unknown;
  file_name?: unknown;
  file_size?: unknown;
  content_type?: unknown;
  checksum?: unknown;
  chunk_size?: unknown;
}

const fileIdParams = { type: 'object', properties: { file_id: textSchema({ maxLength: 128 }) } } as const;

function header(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function chunkNumber(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,6}$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new AppError(ErrorCode.INVALID_REQUEST, 'chunk_number is required (a positive integer)');
  return n;
}

/**
 * The chunked, resumable upload API of spec 004, a thin adapter over the
 * resumable engine:
 *   POST   /upload/chunked/init               {path, file_size, content_type?, checksum?}
 *   POST   /upload/chunked/:file_id/chunk     raw body (?chunk_number= or X-Chunk-Number, Content-MD5)
 *                                             or multipart (chunk_number, chunk_md5, then the chunk file)
 *   GET    /upload/chunked/:file_id/status
 *   POST   /upload/chunked/:file_id/complete
 *   DELETE /upload/chunked/:file_id
 */
export async function chunkedRoutes(app: FastifyInstance, { engine }: { ctx: AppContext; engine: ResumableEngine }) {
  app.post(
    '/upload/chunked/init',
    {
      config: { auth: 'client' },
      schema: {
        summary: 'Start a chunked, resumable upload; the server picks the chunk size',
        body: {
          type: 'object',
          properties: {
            path: { type: 'string' },
            file_name: { type: 'string' },
            // Any JSON value: the engine validates it, so an invalid size is a recorded refusal.
            file_size: {},
            content_type: { type: 'string' },
            checksum: { type: 'string' },
            chunk_size: { type: 'integer', minimum: 1 },
          },
          required: ['file_size'],
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      const body = (request.body ?? {}) as InitBody;
      const path = body.path ?? body.file_name;
      if (path === undefined) {
        throw await engine.pipeline.refuse(client, { kind: 'chunked', path: '' }, new AppError(ErrorCode.PATH_REQUIRED, 'path is required'));
      }
      const s = await engine.init(client, {
        path,
        fileSize: typeof body.file_size === 'number' ? body.file_size : Number.NaN,
        contentType: typeof body.content_type === 'string' && body.content_type !== '' ? body.content_type : undefined,
        checksum: typeof body.checksum === 'string' ? body.checksum : undefined,
        preferredChunkSize: typeof body.chunk_size === 'number' ? body.chunk_size : undefined,
        protocol: 'chunked',
      });
      return {
        file_id: s.session_id,
        run_id: s.run_id,
        s3_key: s.object_key,
        path: s.path,
        chunk_size: s.chunk_size,
        total_chunks: s.total_chunks,
        expires_at: new Date(s.expires_at).toISOString(),
        checksum_algorithm: COMPOSITE_ALGORITHM,
      };
    },
  );

  await app.register(async (scope) => {
    await scope.register(multipart, {
      limits: { fields: 10, fieldSize: 1024, fieldNameSize: 100, files: 1, parts: 20, headerPairs: 100 },
    });
    // Raw chunks: leave the body unread, the engine streams it.
    scope.addContentTypeParser('application/octet-stream', (_request, _payload, done) => done(null));
    scope.post(
      '/upload/chunked/:file_id/chunk',
      {
        config: { auth: 'client', uploadSlack: MULTIPART_SLACK },
        schema: {
          summary: 'Send one chunk (raw body with Content-MD5, or multipart: chunk_number, chunk_md5, chunk)',
          params: fileIdParams,
          querystring: { type: 'object', properties: { chunk_number: { type: 'string' } } },
        },
      },
      async (request) => {
        const client = requireClient(request);
        const fileId = (request.params as { file_id: string }).file_id;
        const query = request.query as { chunk_number?: string };
        let n: unknown = query.chunk_number ?? header(request, 'x-chunk-number');
        let md5 = header(request, 'content-md5');
        let sha = header(request, CHECKSUM_HEADER);
        if (!request.isMultipart()) {
          return engine.putPart(client, fileId, chunkNumber(n), request.raw as Readable, {
            length: declaredLength(request),
            md5: md5 === undefined ? undefined : parseMd5(md5),
            sha256: sha === undefined ? undefined : parseSha256(sha),
            signal: request.bodyIdle,
          });
        }
        let result: Awaited<ReturnType<ResumableEngine['putPart']>> | undefined;
        for await (const part of formParts(request, { fileSize: engine.maxChunkSize + 1 })) {
          if (part.type === 'field') {
            if (part.fieldname === 'chunk_number') n = String(part.value);
            else if (part.fieldname === 'chunk_md5' || part.fieldname === 'md5') md5 = String(part.value);
            else if (part.fieldname === 'chunk_sha256' || part.fieldname === 'sha256') sha = String(part.value);
            continue;
          }
          if (part.fieldname !== 'chunk' && part.fieldname !== 'file') {
            throw new AppError(ErrorCode.INVALID_REQUEST, `unexpected file field "${part.fieldname}" (the chunk goes in "chunk")`);
          }
          if (result) throw new AppError(ErrorCode.INVALID_REQUEST, 'one chunk per request');
          result = await engine.putPart(client, fileId, chunkNumber(n), part.file, {
            md5: md5 === undefined ? undefined : parseMd5(md5),
            sha256: sha === undefined ? undefined : parseSha256(sha),
            signal: request.bodyIdle,
            bodyError: formError,
          });
        }
        if (!result) throw new AppError(ErrorCode.FILE_REQUIRED, 'the form has no "chunk" field');
        return result;
      },
    );
  });

  app.get(
    '/upload/chunked/:file_id/status',
    { config: { auth: 'client' }, schema: { summary: 'Chunks received and missing; resume from here', params: fileIdParams } },
    async (request) => engine.status(requireClient(request), (request.params as { file_id: string }).file_id),
  );

  app.post(
    '/upload/chunked/:file_id/complete',
    { config: { auth: 'client' }, schema: { summary: 'Assemble the chunks into the object and verify it', params: fileIdParams } },
    async (request) => engine.complete(requireClient(request), (request.params as { file_id: string }).file_id),
  );

  app.delete(
    '/upload/chunked/:file_id',
    { config: { auth: 'client' }, schema: { summary: 'Abort the upload and drop its chunks', params: fileIdParams } },
    async (request) => engine.abort(requireClient(request), (request.params as { file_id: string }).file_id),
  );
}
