import cors from '@fastify/cors';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';

/**
 * The gateway's one CORS policy. A client lists the web origins whose pages
 * may call the gateway with its key or its upload tokens
 * (`clients[].cors_origins`). A browser asks before it sends a credential, so
 * the preflight is answered from the union of all clients' origins, without a
 * key; once the request is authenticated, its Origin must be one of that
 * client's own (else 403). Every answer to an allowed origin carries the CORS
 * headers, refusals (401, 403, 413, 503) included, so the page can read them.
 * @tus/server applies the same policy to what it writes itself (see
 * tus-server.ts: `allowedOrigins`).
 */

/** Request headers a browser client may send. */
export const CORS_ALLOWED_HEADERS = [
  'authorization',
  'x-api-key',
  'x-request-id',
  'content-type',
  'x-checksum-sha256',
  'range',
  'if-none-match',
  // tus
  'tus-resumable',
  'upload-length',
  'upload-metadata',
  'upload-offset',
  'upload-defer-length',
  'upload-concat',
  'upload-checksum',
  'x-http-method-override',
  'x-requested-with',
];

/** Response headers a page may read. */
export const CORS_EXPOSED_HEADERS = [
  'x-request-id',
  'location',
  'etag',
  'content-range',
  'content-disposition',
  'x-s3up-sha256',
  'retry-after',
  'tus-resumable',
  'tus-version',
  'tus-extension',
  'tus-max-size',
  'tus-checksum-algorithm',
  'upload-offset',
  'upload-length',
  'upload-metadata',
  'upload-expires',
  'upload-defer-length',
  'upload-concat',
];

export class CorsPolicy {
  private readonly all: Set<string>;
  constructor(clients: readonly ResolvedClient[]) {
    this.all = new Set(clients.flatMap((c) => c.corsOrigins));
  }

  /** Some client allows this origin (preflights and the headers of every answer). */
  allows(origin: string | undefined): origin is string {
    return origin !== undefined && this.all.has(origin);
  }

  /** This client allows this origin. */
  allowsFor(client: ResolvedClient, origin: string): boolean {
    return client.corsOrigins.includes(origin);
  }
}

/** True when the request's Origin is the gateway itself (the /upload page): no CORS involved. */
export function sameOrigin(request: FastifyRequest, origin: string): boolean {
  return origin === `${request.protocol}://${request.host}`;
}

/**
 * Register the policy. Must run before the authentication hook: its
 * `onRequest` hook sets the headers (and answers preflights) first, so a 401
 * thrown afterwards still carries them.
 */
export async function registerCors(app: FastifyInstance, clients: readonly ResolvedClient[]): Promise<CorsPolicy> {
  const policy = new CorsPolicy(clients);
  await app.register(cors, {
    hook: 'onRequest',
    delegator: (request, cb) => {
      const origin = request.headers.origin;
      const isPreflight = request.method === 'OPTIONS' && request.headers['access-control-request-method'] !== undefined;
      // Not a browser's cross-origin request, or an origin nobody allowed: no CORS headers. A plain
      // OPTIONS (tus discovery) goes on to its route.
      if (!policy.allows(origin) || (request.method === 'OPTIONS' && !isPreflight) || request.routeOptions.config.auth === 'admin') {
        cb(null, { origin: false });
        return;
      }
      cb(null, {
        origin,
        methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
        allowedHeaders: CORS_ALLOWED_HEADERS,
        exposedHeaders: CORS_EXPOSED_HEADERS,
        maxAge: 600,
        strictPreflight: false,
      });
    },
  });
  // After authentication: an authenticated cross-origin request must come from one of its client's origins.
  app.addHook('preValidation', async (request) => {
    const origin = request.headers.origin;
    const client = request.client;
    if (origin === undefined || client === undefined || sameOrigin(request, origin)) return;
    if (!policy.allowsFor(client, origin)) {
      throw new AppError(ErrorCode.FORBIDDEN, `origin ${origin} is not allowed for client ${client.name} (clients[].cors_origins)`);
    }
  });
  return policy;
}
