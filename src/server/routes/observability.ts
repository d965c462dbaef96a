import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError, ErrorCode } from '../../errors.js';
import { VERSION } from '../../version.js';
import { secretEquals } from '../auth.js';
import type { AppContext } from '../context.js';

export interface RegisteredRoute {
  method: string;
  url: string;
}

const registered = new WeakMap<FastifyInstance, RegisteredRoute[]>();

/** Every route registered after registerOpenApi (for the test that checks the OpenAPI document covers them). */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  return registered.get(app) ?? [];
}

/**
 * Register @fastify/swagger. Call it before any route so its onRoute hook
 * sees every route; the document is served at /openapi.json.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  const list: RegisteredRoute[] = [];
  registered.set(app, list);
  app.addHook('onRoute', (r) => {
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) {
      if (m !== 'HEAD') list.push({ method: m, url: r.url });
    }
  });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 's3up gateway',
        version: VERSION,
        description: 'Uploads to S3-compatible storage or the filesystem, upload records, admin and remote config.',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'client API key' },
          apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key', description: 'client API key' },
          adminToken: { type: 'apiKey', in: 'header', name: 'x-admin-token', description: 'ADMIN_TOKEN' },
        },
      },
    },
    // Security requirements follow each route's auth mode.
    transform: ({ schema, url, route }) => {
      const auth = route.config?.auth ?? 'client';
      const security: Array<Record<string, string[]>> =
        auth === 'none'
          ? []
          : auth === 'admin'
            ? [{ adminToken: [] }]
            : auth === 'client-or-admin'
              ? [{ bearer: [] }, { apiKey: [] }, { adminToken: [] }]
              : [{ bearer: [] }, { apiKey: [] }];
      return { schema: { ...(schema ?? {}), security }, url };
    },
  });
}

function metricsAllowed(ctx: AppContext, request: FastifyRequest): boolean {
  if (ctx.config.raw.metrics.public) return true;
  const token = ctx.config.adminToken;
  if (token === undefined) return false;
  const header = request.headers['x-admin-token'];
  if (typeof header === 'string' && secretEquals(header, token)) return true;
  const auth = request.headers.authorization;
  return typeof auth === 'string' && /^Bearer /i.test(auth) && secretEquals(auth.slice(7).trim(), token);
}

export async function observabilityRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    ctx.metrics.httpDuration.observe({ method: request.method, route, status_class: `${Math.floor(reply.statusCode / 100)}xx` }, reply.elapsedTime / 1000);
  });

  app.get('/openapi.json', { config: { auth: 'none' }, schema: { summary: 'This OpenAPI document', tags: ['meta'] } }, async () => app.swagger());

  app.get(
    '/metrics',
    {
      config: { auth: 'none' },
      schema: {
        summary: 'Prometheus metrics (admin token as x-admin-token or Bearer, unless metrics.public)',
        tags: ['meta'],
        security: [{ adminToken: [] }, { bearer: [] }],
      },
    },
    async (request, reply) => {
      if (!metricsAllowed(ctx, request)) {
        throw new AppError(
          ErrorCode.UNAUTHORIZED,
          ctx.config.adminToken === undefined
            ? 'metrics need ADMIN_TOKEN (sent as x-admin-token or Bearer) or METRICS_PUBLIC=1'
            : 'send the admin token as x-admin-token or Authorization: Bearer',
        );
      }
      return reply.type(ctx.metrics.contentType).send(await ctx.metrics.text());
    },
  );

  app.post(
    '/api/admin/sweep',
    {
      config: { auth: 'admin' },
      schema: {
        summary: 'Run the retention sweeper now (admin); dry_run=true only reports',
        tags: ['admin'],
        querystring: { type: 'object', properties: { dry_run: { type: 'boolean' } } },
      },
    },
    async (request) => {
      const { dry_run } = request.query as { dry_run?: boolean };
      return ctx.sweeper.sweep({ dryRun: dry_run ?? false });
    },
  );

  app.get(
    '/api/admin/sweep',
    { config: { auth: 'admin' }, schema: { summary: "The last sweep's report in this gateway (admin)", tags: ['admin'] } },
    async () => ({ interval_minutes: ctx.config.raw.retention.sweep_interval_minutes, tasks: ctx.sweeper.taskNames, last: ctx.sweeper.lastReport ?? null }),
  );
}

// Registered in the parent's context (like fastify-plugin), so the onResponse hook times every route.
(observabilityRoutes as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
