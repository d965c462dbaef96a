import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import type { IngestResult } from '../../uploads/pipeline.js';
import type { AppContext } from '../app.js';
import { formError, formParts, MULTIPART_SLACK, requireClient, uploadResponse } from './uploads.js';

/**
 * Direct uploads (spec 000):
 *   POST /runs/upload-url {runId} | {path, size, content_type}
 *     S3: {url, key, ttl, headers, expiresAt, run_id}: a presigned PUT bound to size and type
 *     fs: {formUrl: "/runs/upload", key, ttl, expiresAt, run_id}: a signed, expiring form key
 *   POST /runs/upload   multipart: key, then file (through the one upload pipeline)
 */
export async function directRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  const { direct } = ctx;

  app.post(
    '/runs/upload-url',
    {
      config: { auth: 'client' },
      schema: {
        summary: 'Get a direct upload target: presigned PUT (S3) or signed form key (filesystem)',
        body: {
          type: 'object',
          properties: {
            runId: { type: 'string' },
            path: { type: 'string' },
            size: { type: 'integer', minimum: 0 },
            content_type: { type: 'string' },
            contentType: { type: 'string' },
          },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      const b = (request.body ?? {}) as { runId?: unknown; path?: unknown; size?: unknown; content_type?: unknown; contentType?: unknown };
      const issued = await direct.issue(client, { runId: b.runId, path: b.path, size: b.size, contentType: b.content_type ?? b.contentType });
      const { kind: _kind, ...body } = issued;
      return body;
    },
  );

  await app.register(async (scope) => {
    await scope.register(multipart, {
      limits: { fields: 10, fieldSize: 8 * 1024, fieldNameSize: 100, files: 1, parts: 20, headerPairs: 100 },
    });
    scope.post(
      '/runs/upload',
      {
        config: { auth: 'client', uploadSlack: MULTIPART_SLACK, uploadKind: 'direct' },
        schema: { summary: 'Filesystem direct upload: multipart with the signed "key", then "file"' },
      },
      async (request) => {
        const client = requireClient(request);
        if (!request.isMultipart()) throw new AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, 'POST /runs/upload takes multipart/form-data (key, then file)');
        let token: string | undefined;
        let result: IngestResult | undefined;
        for await (const part of formParts(request)) {
          if (part.type === 'field') {
            if (part.fieldname === 'key') token = String(part.value);
            continue;
          }
          if (part.fieldname !== 'file') throw new AppError(ErrorCode.INVALID_REQUEST, `unexpected file field "${part.fieldname}" (the file goes in "file")`);
          if (result) throw new AppError(ErrorCode.INVALID_REQUEST, 'only one file per request');
          if (token === undefined) throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'send the "key" field before the "file" field');
          const { claims, run } = await direct.runForKey(client, token);
          result = await ctx.pipeline.ingest({
            client,
            path: claims.p,
            body: part.file,
            kind: 'direct',
            declaredSize: claims.s ?? undefined,
            contentType: part.mimetype || run.content_type || undefined,
            filename: part.filename || undefined,
            queuedRun: run,
            signal: request.bodyIdle,
            bodyError: formError,
          });
        }
        if (!result) throw new AppError(ErrorCode.FILE_REQUIRED, 'the form has no "file" field');
        return { ...uploadResponse(result), key: token };
      },
    );
  });
}
