import multipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import type { IngestResult } from '../../uploads/pipeline.js';
import type { AppContext } from '../context.js';
import { formError, formParts, MULTIPART_SLACK, requireClient, uploadResponse } from './uploads.js';

/**
 * Direct uploads (spec 000):
 *   POST /runs/upload-url {runId} | {path, size, content_type}
 *     S3, size given: {method: "PUT", url, headers, key, ttl, expiresAt, run_id}: a presigned PUT bound to size and type
 *     S3, no size:    {method: "POST", url, fields, key, ttl, expiresAt, run_id}: a presigned POST form whose
 *                     policy bounds the length by the client's limit (send `fields`, then the file as `file`)
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
        summary: 'Get a direct upload target: presigned PUT or POST form (S3), or signed form key (filesystem)',
        description:
          'S3 with `size`: `method` PUT, send the body to `url` with exactly `headers` (the signature covers content-length and content-type). ' +
          'S3 without `size`: `method` POST, send multipart/form-data to `url` with every entry of `fields` and then the file as the last field `file`; ' +
          "the signed policy limits the body to the client's max_file_size. Filesystem: multipart to `formUrl` with `key`, then `file`. " +
          'Then report `upload_complete` to POST /telemetry with `key`.',
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
        response: {
          200: {
            type: 'object',
            properties: {
              method: { type: 'string', enum: ['PUT', 'POST'], description: 'S3: how to send the body to `url`' },
              url: { type: 'string', description: 'S3: the presigned PUT URL, or the POST form action' },
              headers: { type: 'object', additionalProperties: { type: 'string' }, description: 'S3 PUT: the headers to send' },
              fields: { type: 'object', additionalProperties: { type: 'string' }, description: 'S3 POST: the form fields to send before `file`' },
              formUrl: { type: 'string', description: 'filesystem: where to POST the multipart form' },
              key: { type: 'string', description: 'S3: the object key; filesystem: the signed form key. Report it in upload_complete.' },
              ttl: { type: 'integer' },
              expiresAt: { type: 'string', format: 'date-time' },
              run_id: { type: 'string' },
              path: { type: 'string' },
              s3_key: { type: 'string' },
            },
            required: ['key', 'ttl', 'expiresAt', 'run_id', 'path'],
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
