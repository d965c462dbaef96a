import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import type { ByteRange } from '../../storage/types.js';
import type { AppContext } from '../context.js';
import { requireClient } from './uploads.js';

/**
 * Parse a single `Range: bytes=...` header against an object of `size` bytes.
 * Returns undefined for no (or an ignorable multi-) range, 'unsatisfiable' for 416.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined; // multi-range or another unit: serve the whole object (RFC 9110 allows it)
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) return 'unsatisfiable';
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || (b !== '' && Number(b) < start)) return 'unsatisfiable';
  return { start, end };
}

function contentDisposition(p: string): string {
  const base = path.posix.basename(p);
  const ascii = base.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(base)}`;
}

export async function objectRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  /** What we know of an object: the store's facts plus the record of the upload that wrote it. */
  async function describe(request: FastifyRequest, rawPath: unknown) {
    const client = requireClient(request);
    const { path: rel, key } = ctx.pipeline.keyFor(client, rawPath);
    const info = await ctx.storage.head(key);
    if (!info) return { rel, key, info: undefined, record: undefined };
    const row = await ctx.runs.objectAt(key);
    // Only trust the record if it describes the bytes that are there now.
    const record = row && row.size === info.size ? row : undefined;
    return { rel, key, info, record };
  }

  function pathParam(request: FastifyRequest): unknown {
    const q = request.query as { path?: unknown };
    if (q.path === undefined) throw new AppError(ErrorCode.PATH_REQUIRED, 'the "path" query parameter is required');
    return q.path;
  }

  const pathQuery = { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] } as const;

  app.get(
    '/exists',
    { config: { auth: 'client' }, schema: { summary: 'Does an object exist at path? (HEAD: 200 or 404)', querystring: pathQuery } },
    async (request, reply) => {
      const d = await describe(request, pathParam(request));
      if (request.method === 'HEAD') {
        if (!d.info) return reply.code(404).send();
        reply.header('x-s3up-size', String(d.info.size));
        if (d.record?.sha256) reply.header('x-s3up-sha256', d.record.sha256);
        return reply.code(200).send();
      }
      if (!d.info) {
        return {
          exists: false,
          path: d.rel,
          s3_key: d.key,
          size: null,
          sha256: null,
          checksum: null,
          checksum_algorithm: null,
          chunk_size: null,
          content_type: null,
          uploaded_at: null,
          run_id: null,
        };
      }
      return {
        exists: true,
        path: d.rel,
        s3_key: d.key,
        size: d.info.size,
        sha256: d.record?.sha256 ?? null,
        checksum: d.record?.checksum ?? null,
        checksum_algorithm: d.record?.checksum_algorithm ?? null,
        chunk_size: d.record?.chunk_size ?? null,
        content_type: d.record?.content_type ?? d.info.contentType ?? null,
        uploaded_at: new Date(d.record?.uploaded_at ?? d.info.lastModified.getTime()).toISOString(),
        run_id: d.record?.run_id ?? null,
      };
    },
  );

  /** Attempts to read a consistent object while it is being overwritten. */
  const READ_ATTEMPTS = 5;

  async function download(request: FastifyRequest, reply: FastifyReply, rawPath: unknown) {
    for (let attempt = 1; ; attempt++) {
      const d = await describe(request, rawPath);
      if (!d.info) throw new AppError(ErrorCode.NOT_FOUND, 'no object at this path');
      const etag = d.record ? `"${d.record.sha256 ?? d.record.checksum}"` : d.info.etag;
      const size = d.info.size;
      reply.code(200);
      reply.removeHeader('content-range');
      reply.header('etag', etag);
      reply.header('last-modified', d.info.lastModified.toUTCString());
      reply.header('accept-ranges', 'bytes');
      reply.header('content-type', d.record?.content_type ?? d.info.contentType ?? 'application/octet-stream');
      reply.header('content-disposition', contentDisposition(d.rel));
      // Uploaded content is served from our origin: never let a browser render it.
      reply.header('x-content-type-options', 'nosniff');
      reply.header('content-security-policy', "default-src 'none'; sandbox");
      if (d.record?.sha256) reply.header('x-s3up-sha256', d.record.sha256);
      else reply.removeHeader('x-s3up-sha256');

      const inm = request.headers['if-none-match'];
      if (typeof inm === 'string' && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag || t.trim() === '*')) {
        return reply.code(304).send();
      }
      let range = parseRange(typeof request.headers.range === 'string' ? request.headers.range : undefined, size);
      const ifRange = request.headers['if-range'];
      if (range !== undefined && typeof ifRange === 'string' && ifRange !== etag) range = undefined;
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${size}`);
        throw new AppError(ErrorCode.RANGE_NOT_SATISFIABLE, `range not satisfiable for an object of ${size} bytes`);
      }
      const length = range ? range.end - range.start + 1 : size;
      reply.header('content-length', String(length));
      if (range) {
        reply.code(206);
        reply.header('content-range', `bytes ${range.start}-${range.end}/${size}`);
      }
      if (request.method === 'HEAD') return reply.send();
      const got = await ctx.storage.get(d.key, range);
      if (got && got.info.size === size && got.info.etag === d.info.etag) return reply.send(got.body);
      // Replaced (or deleted) between the check and the read: look again rather than send
      // headers that describe other bytes.
      got?.body.destroy();
      if (attempt >= READ_ATTEMPTS) throw new AppError(ErrorCode.CONFLICT, 'the object kept changing while it was being read; retry');
    }
  }

  // GET and HEAD declared together: Fastify's automatic HEAD route would replace
  // the Content-Length we set with 0.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/download',
    config: { auth: 'client' },
    schema: { summary: 'Download an object (Range, ETag)', querystring: pathQuery },
    handler: (request, reply) => download(request, reply, pathParam(request)),
  });
  app.route({
    method: ['GET', 'HEAD'],
    url: '/objects/*',
    config: { auth: 'client' },
    schema: { summary: 'Download an object by path' },
    handler: (request, reply) => download(request, reply, (request.params as { '*': string })['*']),
  });

  app.delete('/objects/*', { config: { auth: 'client' }, schema: { summary: 'Delete an object' } }, async (request) => {
    const client = requireClient(request);
    const { path: rel, key } = ctx.pipeline.keyFor(client, (request.params as { '*': string })['*']);
    const info = await ctx.storage.head(key);
    if (!info) throw new AppError(ErrorCode.NOT_FOUND, 'no object at this path');
    await ctx.storage.delete(key);
    await ctx.runs.markDeleted(key);
    return { deleted: true, path: rel, s3_key: key };
  });
}
