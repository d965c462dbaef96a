import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type {} from '@fastify/swagger';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ResolvedClient } from '../config/load.js';
import { databaseUnavailable } from '../db/index.js';
import type { RunKind } from '../db/schema.js';
import { AppError, type ErrorBody, ErrorCode, isAppError } from '../errors.js';
import { exceeds, tooLarge } from '../uploads/limits.js';
import type { ResumableEngine } from '../uploads/resumable.js';
import { authenticate, secretEquals } from './auth.js';
import type { AppContext } from './context.js';

export type { AppContext } from './context.js';

import { registerCors } from './cors.js';
import { settleUnreadBody, watchBodyIdle } from './request-body.js';
import { adminUiRoutes } from './routes/admin-ui.js';
import { chunkedRoutes } from './routes/chunked.js';
import { clientRoutes } from './routes/clients.js';
import { directRoutes } from './routes/direct.js';
import { flagRoutes } from './routes/flags.js';
import { healthRoutes } from './routes/health.js';
import { objectRoutes } from './routes/objects.js';
import { observabilityRoutes, registerOpenApi } from './routes/observability.js';
import { runRoutes } from './routes/runs.js';
import { telemetryRoutes } from './routes/telemetry.js';
import { tokenClient, tokenRoutes } from './routes/tokens.js';
import { tusRoutes } from './routes/tus.js';
import { uploadRoutes } from './routes/uploads.js';

export type AuthMode = 'none' | 'client' | 'admin' | 'client-or-admin';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated client (set for routes with auth 'client'). */
    client: ResolvedClient | undefined;
    /** True when the request carried a valid admin token. */
    isAdmin: boolean;
    /** Aborts (REQUEST_TIMEOUT) when the request body stops arriving; undefined without a body. */
    bodyIdle: AbortSignal | undefined;
  }
  interface FastifyInstance {
    /** The resumable-upload engine (sweepExpired for the sweeper). */
    resumable: ResumableEngine;
  }
  interface FastifyContextConfig {
    auth?: AuthMode;
    /** Upload routes: refuse a declared body over the client's limit (plus this slack) before reading it. */
    uploadSlack?: number;
    /** Upload routes: the kind of run a refused upload is recorded as. */
    uploadKind?: RunKind;
  }
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;

function errorBody(request: FastifyRequest, err: AppError): ErrorBody {
  const body: ErrorBody = { error_code: err.code, message: err.message, request_id: request.id };
  if (err.details) {
    for (const [k, v] of Object.entries(err.details)) if (!(k in body)) body[k] = v;
  }
  return body;
}

/** Translate anything thrown into the error contract. */
export function toAppError(err: unknown): AppError {
  if (isAppError(err)) return err;
  const e = err as FastifyError & { code?: string; statusCode?: number };
  if (e?.validation) return new AppError(ErrorCode.INVALID_REQUEST, e.message);
  const dbDown = databaseUnavailable(err);
  if (dbDown !== undefined)
    return new AppError(ErrorCode.DATABASE_UNAVAILABLE, `the database is unavailable (${dbDown}); retry later`, undefined, { cause: err });
  switch (e?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError(ErrorCode.PAYLOAD_TOO_LARGE, 'request body too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, e.message);
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
    case 'FST_PROTO_VIOLATION':
      return new AppError(ErrorCode.INVALID_REQUEST, e.message);
    case 'FST_REQ_FILE_TOO_LARGE':
      return new AppError(ErrorCode.PAYLOAD_TOO_LARGE, e.message);
    case 'ECONNRESET':
    case 'ERR_STREAM_PREMATURE_CLOSE':
      return new AppError(ErrorCode.UPLOAD_ABORTED, 'the request was interrupted');
  }
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new AppError(ErrorCode.INVALID_REQUEST, e.message);
  }
  return new AppError(ErrorCode.INTERNAL, 'internal error', undefined, { cause: err });
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: AppError): FastifyReply {
  // The client may still be sending: read what is left or close gracefully, so the refusal reaches it.
  settleUnreadBody(request.raw, reply.raw);
  return reply.code(err.status).type('application/json; charset=utf-8').send(errorBody(request, err));
}

export async function buildApp(ctx: AppContext): Promise<FastifyInstance> {
  const { config } = ctx;
  // One cast: the server factory may return an https server, which Fastify's generics cannot express.
  const app = Fastify({
    loggerInstance: ctx.logger,
    trustProxy: config.trustProxy,
    bodyLimit: 1024 * 1024,
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    requestIdHeader: false,
    genReqId: (req) => {
      const h = req.headers['x-request-id'];
      return typeof h === 'string' && REQUEST_ID_RE.test(h) ? h : randomUUID();
    },
    // No trailing-slash folding: `PUT /objects/a/` must be refused (empty segment), not written to `a`.
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 2048 },
    // Router-level failures (broken percent-encoding, over-long params) use the error contract too.
    frameworkErrors: (error, request, reply) => {
      const code = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? ErrorCode.INVALID_PATH : ErrorCode.INVALID_REQUEST;
      reply.header('x-request-id', request.id);
      sendError(request, reply, new AppError(code, code === ErrorCode.INVALID_PATH ? 'invalid path: too long' : 'malformed URL (bad percent-encoding)'));
    },
    serverFactory: (handler) => {
      const server = config.tls ? https.createServer({ cert: config.tls.cert, key: config.tls.key }, handler) : http.createServer(handler);
      // Answer `Expect: 100-continue` only once the request is authorized and
      // within limits (see the preParsing hook), so a refused upload is never sent.
      server.on('checkContinue', handler);
      // Uploads may take hours: no limit on a whole request; a body that stops arriving is cut (watchBodyIdle).
      server.requestTimeout = 0;
      server.headersTimeout = 60_000;
      server.keepAliveTimeout = 65_000;
      return server;
    },
  }) as unknown as FastifyInstance;

  app.decorateRequest('client', undefined);
  app.decorateRequest('isAdmin', false);
  app.decorateRequest('bodyIdle', undefined);

  // Before authentication, so refusals carry the CORS headers too.
  await registerCors(app, config.clients);

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    request.bodyIdle = watchBodyIdle(request.raw, reply.raw, config.bodyIdleTimeoutMs);
    if (ctx.closing.value) {
      reply.header('connection', 'close');
      throw new AppError(ErrorCode.SHUTTING_DOWN, 'the gateway is shutting down; retry shortly');
    }
    const mode = request.routeOptions.config.auth ?? 'client';
    if (mode === 'none') return;
    const adminToken = request.headers['x-admin-token'];
    if ((mode === 'admin' || mode === 'client-or-admin') && typeof adminToken === 'string') {
      if (config.adminToken !== undefined && secretEquals(adminToken, config.adminToken)) {
        request.isAdmin = true;
        return;
      }
      throw new AppError(ErrorCode.UNAUTHORIZED, config.adminToken === undefined ? 'admin access is disabled (set ADMIN_TOKEN)' : 'invalid admin token');
    }
    if (mode === 'admin') throw new AppError(ErrorCode.UNAUTHORIZED, 'missing admin token: send x-admin-token');
    request.client = (await tokenClient(ctx, request)) ?? authenticate(config.clients, request.headers);
    const slack = request.routeOptions.config.uploadSlack;
    if (slack !== undefined) {
      const len = request.headers['content-length'];
      // The early 413: a declared body over the limit is refused before a byte of it is read.
      if (len !== undefined && exceeds(request.client, Number(len), slack)) {
        const refusal = tooLarge(request.client, `the request body (${len} bytes)`);
        // Recorded like every other authenticated attempt (the refusal carries its run_id).
        const kind = request.routeOptions.config.uploadKind;
        if (kind === undefined) throw refusal;
        const params = request.params as { '*'?: string } | undefined;
        const query = request.query as { path?: unknown } | undefined;
        throw await ctx.pipeline.refuse(request.client, { kind, path: params?.['*'] ?? query?.path ?? '', size: Number(len) }, refusal);
      }
    }
  });

  app.addHook('preParsing', async (request, reply, payload) => {
    if (String(request.headers.expect).toLowerCase() === '100-continue' && !reply.raw.headersSent) {
      reply.raw.writeContinue();
    }
    return payload;
  });

  app.setErrorHandler((err, request, reply) => {
    const appErr = toAppError(err);
    ctx.metrics.errorCode(appErr.code);
    if (appErr.status >= 500) {
      request.log.error({ err: appErr.cause ?? err, error_code: appErr.code }, appErr.message);
    } else {
      request.log.info({ error_code: appErr.code }, appErr.message);
    }
    return sendError(request, reply, appErr);
  });

  app.setNotFoundHandler((request, reply) => {
    ctx.metrics.errorCode(ErrorCode.NOT_FOUND);
    return sendError(request, reply, new AppError(ErrorCode.NOT_FOUND, `no route for ${request.method} ${request.url.split('?')[0]}`));
  });

  // Before any route, so the OpenAPI document sees them all.
  await registerOpenApi(app);
  await app.register(healthRoutes, { ctx, extraChecks: { feature_flags: () => ctx.flags.checkWritable() } });
  await app.register(runRoutes, { ctx });
  await app.register(clientRoutes, { ctx });
  await app.register(flagRoutes, { ctx });
  await app.register(observabilityRoutes, { ctx });
  await app.register(uploadRoutes, { ctx });
  await app.register(objectRoutes, { ctx });
  await app.register((await import('./routes/list.js')).listRoutes, { ctx });
  // Resumable (chunked, tus) and direct uploads.
  app.decorate('resumable', ctx.engine);
  await app.register(chunkedRoutes, { ctx, engine: ctx.engine });
  await app.register(tusRoutes, { ctx, engine: ctx.engine });
  await app.register(directRoutes, { ctx });
  await app.register(telemetryRoutes, { ctx });
  await app.register(tokenRoutes, { ctx });
  await app.register(adminUiRoutes, { ctx });
  return app;
}
