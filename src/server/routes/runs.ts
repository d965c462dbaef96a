import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RUN_KINDS, RUN_STATUSES } from '../../db/schema.js';
import { AppError, ErrorCode } from '../../errors.js';
import { decodeCursor, encodeCursor, MAX_LIMIT, parseKind, parseLimit, parseStatus, parseTime, runToJson } from '../../runs/query.js';
import { textSchema } from '../../validate.js';
import type { AppContext } from '../context.js';

const nullableString = { type: ['string', 'null'] } as const;
/** prune's max_age_days: up to 100 years (a larger age names a time before any record). */
const MAX_AGE_DAYS = 36_500;
const nullableNumber = { type: ['number', 'null'] } as const;

export const runJsonSchema = {
  type: 'object',
  properties: {
    run_id: { type: 'string' },
    status: { type: 'string', enum: [...RUN_STATUSES] },
    kind: { type: 'string', enum: [...RUN_KINDS] },
    client: { type: 'string' },
    path: { type: 'string' },
    s3_key: { type: 'string' },
    size: nullableNumber,
    sha256: nullableString,
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    started_at: nullableString,
    finished_at: nullableString,
    deleted_at: nullableString,
    timings: { type: 'object', properties: { total_ms: nullableNumber, bytes_per_sec: nullableNumber } },
    inputs: { type: 'object', properties: { filename: nullableString, content_type: nullableString } },
    error_code: nullableString,
    error_message: nullableString,
  },
} as const;

/** The client a request may see: its own name, or (admin) any or the `client` filter. */
function scopeOf(request: FastifyRequest, requested?: string): string | undefined {
  if (request.isAdmin) return requested === undefined || requested === '' ? undefined : requested;
  const client = request.client;
  if (!client) throw new AppError(ErrorCode.UNAUTHORIZED, 'send a client API key or x-admin-token');
  if (requested !== undefined && requested !== '' && requested !== client.name) {
    throw new AppError(ErrorCode.FORBIDDEN, 'the client filter is for the admin; a client sees only its own runs');
  }
  return client.name;
}

/**
 * Spec 001's prune guard, on the server: RUNS_PRUNE_ENABLED offers manual
 * pruning at all; RUNS_PRUNE_LOCKED or PROD_LOCK refuse it (a dry run still
 * counts). The dashboard shows the same state (GET /api/admin/ui-config).
 */
export function pruneGuard(ctx: AppContext): { enabled: boolean; locked: boolean; reason: string | null } {
  const runs = ctx.config.raw.runs;
  const reason = runs.prune_locked ? 'RUNS_PRUNE_LOCKED' : ctx.config.raw.admin.prod_lock ? 'PROD_LOCK' : null;
  return { enabled: runs.prune_enabled, locked: reason !== null, reason };
}

interface ListQuery {
  status?: string;
  kind?: string;
  client?: string;
  created_from?: string;
  created_to?: string;
  limit?: number;
  cursor?: string;
}

export async function runRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.get(
    '/runs/v1',
    {
      config: { auth: 'client-or-admin' },
      schema: {
        summary: 'List upload records, newest first, with an opaque cursor',
        tags: ['runs'],
        querystring: {
          type: 'object',
          properties: {
            status: { type: 'string', enum: [...RUN_STATUSES] },
            kind: { type: 'string', enum: [...RUN_KINDS] },
            client: textSchema({ description: 'admin only' }),
            created_from: { type: 'string', description: 'ISO 8601 or epoch ms, inclusive' },
            created_to: { type: 'string', description: 'ISO 8601 or epoch ms, inclusive' },
            limit: { type: 'integer', minimum: 1, description: `default 50, at most ${MAX_LIMIT}` },
            cursor: textSchema({ description: 'next_cursor of the previous page' }),
          },
        },
        response: {
          200: {
            type: 'object',
            properties: { runs: { type: 'array', items: runJsonSchema }, next_cursor: nullableString, limit: { type: 'integer' } },
          },
        },
      },
    },
    async (request) => {
      const q = request.query as ListQuery;
      const limit = parseLimit(q.limit);
      const res = await ctx.runQuery.list({
        client: scopeOf(request, q.client),
        status: parseStatus(q.status),
        kind: parseKind(q.kind),
        createdFrom: parseTime('created_from', q.created_from),
        createdTo: parseTime('created_to', q.created_to),
        limit,
        cursor: q.cursor === undefined || q.cursor === '' ? undefined : decodeCursor(q.cursor),
      });
      return { runs: res.runs.map(runToJson), next_cursor: res.next ? encodeCursor(res.next) : null, limit };
    },
  );

  app.get(
    '/runs/v1/:run_id',
    {
      config: { auth: 'client-or-admin' },
      schema: {
        summary: 'One upload record (another client’s run answers 404)',
        tags: ['runs'],
        params: { type: 'object', properties: { run_id: textSchema({ maxLength: 128 }) }, required: ['run_id'] },
        response: { 200: runJsonSchema },
      },
    },
    async (request) => {
      const { run_id } = request.params as { run_id: string };
      const run = await ctx.runQuery.get(run_id, scopeOf(request));
      if (!run) throw new AppError(ErrorCode.NOT_FOUND, `no run ${run_id}`);
      return runToJson(run);
    },
  );

  app.post(
    '/runs/v1/prune',
    {
      config: { auth: 'client-or-admin' },
      schema: {
        summary: 'Delete terminal upload records (a client prunes its own; the admin all)',
        tags: ['runs'],
        querystring: {
          type: 'object',
          properties: {
            max_runs: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'keep this many newest terminal records' },
            max_age_days: { type: 'number', exclusiveMinimum: 0, maximum: MAX_AGE_DAYS, description: 'delete terminal records older than this' },
            client: textSchema({ description: 'admin only' }),
            dry_run: { type: 'boolean', description: 'count what would be deleted, delete nothing' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: { scanned: { type: 'integer' }, deleted: { type: 'integer' }, kept: { type: 'integer' }, dry_run: { type: 'boolean' } },
          },
        },
      },
    },
    async (request) => {
      const q = request.query as { max_runs?: number; max_age_days?: number; client?: string; dry_run?: boolean };
      const cfg = ctx.config.raw.runs;
      const guard = pruneGuard(ctx);
      if (!guard.enabled) throw new AppError(ErrorCode.FORBIDDEN, 'manual pruning is disabled on this gateway (runs.prune_enabled, RUNS_PRUNE_ENABLED)');
      if (guard.locked && q.dry_run !== true) throw new AppError(ErrorCode.FORBIDDEN, `manual pruning is locked on this gateway (${guard.reason})`);
      const res = await ctx.runQuery.prune({
        client: scopeOf(request, q.client),
        maxRuns: q.max_runs ?? cfg.prune_max_runs,
        maxAgeDays: q.max_age_days ?? cfg.prune_max_age_days,
        dryRun: q.dry_run === true,
      });
      if (q.dry_run === true) return { ...res, dry_run: true };
      ctx.metrics.runsPruned.inc(res.deleted);
      request.log.info({ ...res, admin: request.isAdmin }, 'runs pruned');
      return res;
    },
  );
}
