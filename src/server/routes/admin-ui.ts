import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import { VERSION } from '../../version.js';
import type { AppContext } from '../context.js';
import { pruneGuard } from './runs.js';

/**
 * The web pages built by `npm run build` (Vite, from web/) into dist/web:
 * the admin dashboard at /admin (a single-page app: every /admin/... path
 * answers its index.html) and the browser uploader at /upload, with their
 * hashed assets at /assets/. Served by a small route rather than
 * @fastify/static: the set of files is fixed at build time, so a map of
 * them read once is all that is needed (and nothing outside it is reachable).
 */

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/** No inline script or style, nothing from another origin, no framing. */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** dist/web of the package this file belongs to (src/ under tsx, dist/src/ when built). */
export function webRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'dist', 'web');
    dir = path.dirname(dir);
  }
  return path.resolve('dist', 'web');
}

function listFiles(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else out.set(`/${path.relative(root, full).split(path.sep).join('/')}`, full);
    }
  };
  if (existsSync(root)) walk(root);
  return out;
}

export async function adminUiRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  const root = webRoot();
  let files: Map<string, string> | undefined;
  const fileMap = () => {
    // Read once; re-read while the build is missing, so building after start works.
    if (!files || files.size === 0) files = listFiles(root);
    return files;
  };

  const send = async (reply: FastifyReply, rel: string, immutable: boolean) => {
    const file = fileMap().get(rel);
    if (!file) return undefined;
    const body = await readFile(file);
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    reply.header('content-type', type);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
    if (type.startsWith('text/html')) {
      reply.header('content-security-policy', PAGE_CSP);
      reply.header('referrer-policy', 'no-referrer');
      reply.header('x-frame-options', 'DENY');
    }
    return reply.send(body);
  };

  const page = (entry: 'admin' | 'upload') => async (request: FastifyRequest, reply: FastifyReply) => {
    const sub = request.url.split('?')[0] ?? '';
    // A real file under the page's folder (e.g. an icon), else the app's index.html (client-side routes).
    if (sub.startsWith(`/${entry}/`) && fileMap().has(sub) && !sub.endsWith('.html')) return send(reply, sub, false);
    const sent = await send(reply, `/${entry}/index.html`, false);
    if (sent === undefined) {
      throw new AppError(ErrorCode.SERVICE_UNAVAILABLE, 'the web pages are not built: run `npm run build` (dist/web is missing)');
    }
    return sent;
  };

  const web = (summary: string) => ({ config: { auth: 'none' as const }, schema: { summary, tags: ['web'] } });
  app.get('/admin', web('The admin dashboard (HTML; its data needs the admin token)'), page('admin'));
  app.get('/admin/*', web('The admin dashboard: every path answers the app, which routes in the browser'), page('admin'));
  app.get('/upload', web('The browser uploader (HTML; an upload token in the URL fragment: /upload#token=...)'), page('upload'));
  app.get('/assets/*', web('Hashed assets of the web pages (cached for a year)'), async (request, reply) => {
    const rel = (request.url.split('?')[0] ?? '').replace(/^\/+/, '/');
    const sent = await send(reply, rel, true);
    if (sent === undefined) throw new AppError(ErrorCode.NOT_FOUND, `no asset ${rel}`);
    return sent;
  });

  app.get(
    '/api/admin/ui-config',
    {
      config: { auth: 'admin' },
      schema: {
        summary: 'What the admin dashboard needs to know about this gateway (prune guard, clients)',
        tags: ['admin'],
        response: {
          200: {
            type: 'object',
            properties: {
              version: { type: 'string' },
              prune: {
                type: 'object',
                properties: {
                  enabled: { type: 'boolean' },
                  locked: { type: 'boolean' },
                  reason: { type: ['string', 'null'] },
                  max_runs: { type: ['integer', 'null'] },
                  max_age_days: { type: ['number', 'null'] },
                },
              },
              clients: { type: 'array', items: { type: 'string' } },
            },
          },
        },
      },
    },
    async () => {
      const runs = ctx.config.raw.runs;
      return {
        version: VERSION,
        prune: { ...pruneGuard(ctx), max_runs: runs.prune_max_runs ?? null, max_age_days: runs.prune_max_age_days ?? null },
        clients: ctx.config.clients.map((c) => c.name),
      };
    },
  );

  app.get(
    '/api/admin/overview',
    {
      config: { auth: 'admin' },
      schema: {
        summary: 'Uploads and bytes per hour, success rate, in progress, errors by code, storage per client (admin)',
        tags: ['admin'],
        querystring: {
          type: 'object',
          properties: {
            hours: { type: 'integer', minimum: 1, maximum: 24 * 90, description: 'window, default 168 (7 days)' },
            client: { type: 'string' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              generated_at: { type: 'string' },
              from: { type: 'string' },
              bucket_seconds: { type: 'integer' },
              totals: {
                type: 'object',
                properties: {
                  succeeded: { type: 'integer' },
                  failed: { type: 'integer' },
                  bytes: { type: 'integer' },
                  success_rate: { type: ['number', 'null'] },
                  in_progress: { type: 'integer' },
                },
              },
              series: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { t: { type: 'string' }, succeeded: { type: 'integer' }, failed: { type: 'integer' }, bytes: { type: 'integer' } },
                },
              },
              errors_by_code: { type: 'array', items: { type: 'object', properties: { error_code: { type: 'string' }, count: { type: 'integer' } } } },
              storage: {
                type: 'array',
                items: { type: 'object', properties: { client: { type: 'string' }, objects: { type: 'integer' }, bytes: { type: 'integer' } } },
              },
            },
          },
        },
      },
    },
    async (request) => {
      const q = request.query as { hours?: number; client?: string };
      const now = Date.now();
      const client = q.client === undefined || q.client === '' ? undefined : q.client;
      const [ov, open, storage] = await Promise.all([
        ctx.runQuery.overview(now - (q.hours ?? 168) * 3600 * 1000, client),
        ctx.runQuery.inProgress(),
        ctx.runQuery.storageUsed(),
      ]);
      const succeeded = ov.series.reduce((n, r) => n + r.succeeded, 0);
      const failed = ov.series.reduce((n, r) => n + r.failed, 0);
      const inProgress = client === undefined ? [...open.values()].reduce((a, b) => a + b, 0) : (open.get(client) ?? 0);
      return {
        generated_at: new Date(now).toISOString(),
        from: new Date(ov.from).toISOString(),
        bucket_seconds: 3600,
        totals: {
          succeeded,
          failed,
          bytes: ov.series.reduce((n, r) => n + r.bytes, 0),
          success_rate: succeeded + failed === 0 ? null : succeeded / (succeeded + failed),
          in_progress: inProgress,
        },
        series: ov.series.map((r) => ({ ...r, t: new Date(r.t).toISOString() })),
        errors_by_code: ov.errors,
        storage: (client === undefined ? storage : storage.filter((s) => s.client === client)).sort((a, b) => b.bytes - a.bytes),
      };
    },
  );
}
