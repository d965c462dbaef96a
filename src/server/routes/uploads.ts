import multipart, { type Multipart } from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ResolvedClient } from '../../config/load.js';
import { AppError, ErrorCode } from '../../errors.js';
import { parseSha256 } from '../../uploads/meter.js';
import type { IngestRequest, IngestResult } from '../../uploads/pipeline.js';
import type { AppContext } from '../context.js';

/** Room for multipart boundaries and small fields on top of the file itself. */
export const MULTIPART_SLACK = 1024 * 1024;

export const CHECKSUM_HEADER = 'x-checksum-sha256';

export function requireClient(request: FastifyRequest) {
  const client = request.client;
  if (!client) throw new AppError(ErrorCode.UNAUTHORIZED, 'this route needs a client API key');
  return client;
}

function headerString(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

export function declaredLength(request: FastifyRequest): number | undefined {
  const len = headerString(request, 'content-length');
  if (len === undefined) return undefined;
  const n = Number(len);
  if (!Number.isSafeInteger(n) || n < 0) throw new AppError(ErrorCode.INVALID_REQUEST, 'invalid Content-Length');
  return n;
}

export function uploadResponse(result: IngestResult) {
  return { success: true, run_id: result.run_id, s3_key: result.s3_key, path: result.path, size: result.size, sha256: result.sha256 };
}

const uploadResponseSchema = {
  200: {
    type: 'object',
    properties: {
      success: { type: 'boolean' },
      run_id: { type: 'string' },
      s3_key: { type: 'string' },
      path: { type: 'string' },
      size: { type: 'integer' },
      sha256: { type: 'string' },
    },
  },
};

const FORM_ERRORS: Record<string, ErrorCode> = {
  FST_FILES_LIMIT: ErrorCode.INVALID_REQUEST,
  FST_PARTS_LIMIT: ErrorCode.INVALID_REQUEST,
  FST_FIELDS_LIMIT: ErrorCode.INVALID_REQUEST,
  FST_PROTO_VIOLATION: ErrorCode.INVALID_REQUEST,
  FST_INVALID_MULTIPART_CONTENT_TYPE: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
  FST_MP_PREMATURE_CLOSE: ErrorCode.UPLOAD_ABORTED,
  FST_REQ_FILE_TOO_LARGE: ErrorCode.PAYLOAD_TOO_LARGE,
  ECONNRESET: ErrorCode.UPLOAD_ABORTED,
  ERR_STREAM_PREMATURE_CLOSE: ErrorCode.UPLOAD_ABORTED,
};

/**
 * An error of the multipart parser (or of a form part's stream), in the error
 * contract. Known failures are mapped by their code; the parser's complaints
 * about the body itself (a boundary that does not match the header, a
 * truncated form, a malformed part header) carry no code, so by their origin
 * they are the client's malformed body.
 */
export function formError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const errCode = (err as { code?: unknown } | undefined)?.code;
  const code = typeof errCode === 'string' ? FORM_ERRORS[errCode] : undefined;
  if (errCode === 'FST_FILES_LIMIT') return new AppError(ErrorCode.INVALID_REQUEST, 'only one file per request', undefined, { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  if (code) return new AppError(code, message, undefined, { cause: err });
  return new AppError(ErrorCode.INVALID_REQUEST, `malformed multipart body: ${message}`, undefined, { cause: err });
}

/**
 * The parts of a form, with the parser's errors translated by `formError`.
 * Without `fileSize` the parser puts no limit on a file (its default would be
 * the 1 MiB body limit): the pipeline's meter enforces the client's limit.
 */
export function formParts(request: FastifyRequest, limits: { fileSize?: number } = {}): AsyncIterableIterator<Multipart> {
  const parts = request.parts({ limits: { fileSize: limits.fileSize ?? Number.POSITIVE_INFINITY } })[Symbol.asyncIterator]();
  const it: AsyncIterableIterator<Multipart> = {
    next: () =>
      parts.next().catch((err: unknown) => {
        throw formError(err);
      }),
    return: (value?: unknown) => (parts.return ? parts.return(value) : Promise.resolve({ done: true as const, value: undefined })),
    [Symbol.asyncIterator]: () => it,
  };
  return it;
}

/**
 * Read a form: `path` and `sha256` fields (or ?path= and the checksum header),
 * then exactly one `file`, streamed through the pipeline. The rest of the form
 * is read before the file is published, so a form that turns out invalid (a
 * second file, a truncated body) publishes nothing.
 */
async function readForm(ctx: AppContext, client: ResolvedClient, request: FastifyRequest): Promise<IngestResult> {
  let path: string | undefined = (request.query as { path?: string }).path;
  let expected = headerString(request, CHECKSUM_HEADER);
  // No parser limit on the file: the pipeline's meter enforces the client's limit.
  const parts = formParts(request);
  for (;;) {
    const next = await parts.next();
    if (next.done) throw new AppError(ErrorCode.FILE_REQUIRED, 'the form has no "file" field');
    const part = next.value;
    if (part.type === 'field') {
      if (part.fieldname === 'path') path = String(part.value);
      else if (part.fieldname === 'sha256') expected = String(part.value);
      continue;
    }
    if (part.fieldname !== 'file') {
      throw new AppError(ErrorCode.INVALID_REQUEST, `unexpected file field "${part.fieldname}" (the file goes in "file")`);
    }
    if (path === undefined) {
      throw new AppError(ErrorCode.PATH_REQUIRED, 'send the "path" field before the "file" field (or as ?path=)');
    }
    const ingest: IngestRequest = {
      client,
      path,
      body: part.file,
      kind: 'multipart',
      contentType: part.mimetype || undefined,
      filename: part.filename || undefined,
      expectedSha256: expected === undefined ? undefined : parseSha256(expected),
      signal: request.bodyIdle,
      bodyError: formError,
      beforeCommit: async () => {
        // The file is staged: read what is left of the form before publishing it.
        for (;;) {
          const rest = await parts.next();
          if (rest.done) return;
          const p = rest.value;
          if (p.type === 'file') {
            p.file.resume();
            throw new AppError(ErrorCode.INVALID_REQUEST, 'only one file per request');
          }
          if (p.fieldname === 'sha256') ingest.expectedSha256 = parseSha256(String(p.value));
          else if (p.fieldname === 'path') throw new AppError(ErrorCode.INVALID_REQUEST, 'send the "path" field before the "file" field');
        }
      },
    };
    return ctx.pipeline.ingest(ingest);
  }
}

export async function uploadRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  // POST /upload: multipart/form-data with `path` (and optional `sha256`) before `file`.
  await app.register(async (scope) => {
    await scope.register(multipart, {
      limits: { fields: 10, fieldSize: 64 * 1024, fieldNameSize: 100, files: 1, parts: 20, headerPairs: 100 },
    });
    scope.post(
      '/upload',
      {
        config: { auth: 'client', uploadSlack: MULTIPART_SLACK, uploadKind: 'multipart' },
        schema: {
          summary: 'Upload one file (multipart/form-data: path, optional sha256, then file)',
          querystring: { type: 'object', properties: { path: { type: 'string' } } },
          response: uploadResponseSchema,
        },
      },
      async (request) => {
        const client = requireClient(request);
        if (!request.isMultipart())
          throw new AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, 'POST /upload takes multipart/form-data; use PUT /objects/<path> for a raw body');
        try {
          return uploadResponse(await readForm(ctx, client, request));
        } catch (err) {
          throw formError(err);
        }
      },
    );
  });

  // PUT /objects/<path>: the raw body is the file (curl -T, streaming clients).
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    // Leave the body unread: the pipeline streams it from request.raw.
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    scope.put(
      '/objects/*',
      {
        config: { auth: 'client', uploadSlack: 0, uploadKind: 'raw' },
        schema: { summary: 'Upload one file as the raw request body', response: uploadResponseSchema },
      },
      async (request) => {
        const client = requireClient(request);
        const expected = headerString(request, CHECKSUM_HEADER);
        const result = await ctx.pipeline.ingest({
          client,
          path: (request.params as { '*': string })['*'],
          body: request.raw,
          kind: 'raw',
          declaredSize: declaredLength(request),
          contentType: headerString(request, 'content-type'),
          expectedSha256: expected === undefined ? undefined : parseSha256(expected),
          signal: request.bodyIdle,
        });
        return uploadResponse(result);
      },
    );
  });
}
