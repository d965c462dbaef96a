import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { AppError, ErrorCode } from '../../errors.js';
import { validateClientPath } from '../../uploads/keys.js';
import type { AppContext } from '../context.js';
import { requireClient } from './uploads.js';

export const LIST_DEFAULT_LIMIT = 1000;
export const LIST_MAX_LIMIT = 5000;

/** A listing prefix: "" (everything), a folder ("photos/") or the start of a name ("photos/2024-"). */
export function parseListPrefix(value: unknown): string {
  if (value === undefined || value === '') return '';
  if (typeof value !== 'string') throw new AppError(ErrorCode.INVALID_PATH, 'prefix must be a string');
  const folder = value.endsWith('/');
  const body = folder ? value.slice(0, -1) : value;
  // The same validation as an object path: no "..", absolute paths, encodings of either.
  const canonical = validateClientPath(body);
  return folder ? `${canonical}/` : canonical;
}

function encodeListCursor(path: string): string {
  return Buffer.from(`p:${path}`, 'utf8').toString('base64url');
}

function decodeListCursor(value: string): string {
  const text = /^[A-Za-z0-9_-]{1,2000}$/.test(value) ? Buffer.from(value, 'base64url').toString('utf8') : '';
  if (!text.startsWith('p:')) throw new AppError(ErrorCode.INVALID_REQUEST, 'invalid cursor: pass next_cursor from a previous response unchanged');
  return text.slice(2);
}

function parseLimit(value: unknown): number {
  if (value === undefined || value === '') return LIST_DEFAULT_LIMIT;
  const n = typeof value === 'string' && /^\d{1,6}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > LIST_MAX_LIMIT)
    throw new AppError(ErrorCode.INVALID_REQUEST, `limit must be an integer from 1 to ${LIST_MAX_LIMIT}`);
  return n;
}

const objectSchema = {
  type: 'object',
  properties: {
    path: { type: 'string' },
    size: { type: 'number' },
    sha256: { type: ['string', 'null'] },
    checksum: { type: 'string' },
    checksum_algorithm: { type: 'string', enum: ['sha256', 'sha256-of-sha256s'] },
    chunk_size: { type: ['number', 'null'] },
    content_type: { type: ['string', 'null'] },
    uploaded_at: { type: 'string', format: 'date-time' },
  },
} as const;

/**
 * GET /list: the calling client's stored objects under a prefix, in path
 * order, a page at a time (an opaque keyset cursor), read from the objects
 * table: size, checksum (plain SHA-256 or the composite with its chunk size)
 * and upload time per object. A client never sees another client's objects:
 * the query is scoped by the authenticated client, and the prefix is
 * validated like any object path.
 */
export async function listRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.get(
    '/list',
    {
      config: { auth: 'client' },
      schema: {
        summary: "List this client's objects under a prefix (paginated: pass next_cursor back as cursor)",
        querystring: {
          type: 'object',
          properties: { prefix: { type: 'string' }, cursor: { type: 'string' }, limit: { type: 'string' } },
        },
        response: {
          200: { type: 'object', properties: { objects: { type: 'array', items: objectSchema }, next_cursor: { type: ['string', 'null'] } } },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      const q = request.query as { prefix?: unknown; cursor?: unknown; limit?: unknown };
      const prefix = parseListPrefix(q.prefix);
      const limit = parseLimit(q.limit);
      const after = typeof q.cursor === 'string' && q.cursor !== '' ? decodeListCursor(q.cursor) : undefined;
      let query = ctx.db.db
        .selectFrom('objects')
        .select(['path', 'size', 'sha256', 'checksum', 'checksum_algorithm', 'chunk_size', 'content_type', 'uploaded_at'])
        .where('client', '=', client.name);
      if (prefix !== '') {
        query = query.where(sql<boolean>`substr(path, 1, ${[...prefix].length}) = ${prefix}`);
        // SQLite compares text bytewise, so the prefix also bounds the index scan.
        if (ctx.db.dialect === 'sqlite') query = query.where('path', '>=', prefix);
      }
      if (after !== undefined) query = query.where('path', '>', after);
      const rows = await query
        .orderBy('path')
        .limit(limit + 1)
        .execute();
      const page = rows.slice(0, limit);
      return {
        objects: page.map((r) => ({
          path: r.path,
          size: Number(r.size),
          sha256: r.sha256,
          checksum: r.checksum,
          checksum_algorithm: r.checksum_algorithm,
          chunk_size: r.chunk_size === null ? null : Number(r.chunk_size),
          content_type: r.content_type,
          uploaded_at: new Date(Number(r.uploaded_at)).toISOString(),
        })),
        next_cursor: rows.length > limit ? encodeListCursor((page[page.length - 1] as { path: string }).path) : null,
      };
    },
  );
}
