import type { FastifyInstance } from 'fastify';
import { MAX_EPOCH_MS, textSchema } from '../../validate.js';
import type { AppContext } from '../context.js';
import { requireClient } from './uploads.js';

/**
 * POST /telemetry {event, key, size, durationMs}: stores the event; for
 * upload_complete the gateway HEADs the object and settles the direct run.
 * GET /telemetry?event=&limit=&before=: the calling client's events, newest first.
 */
export async function telemetryRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  const { direct } = ctx;
  app.post(
    '/telemetry',
    {
      config: { auth: 'client' },
      schema: {
        summary: 'Report a client-side event (upload_complete settles a direct upload)',
        body: {
          type: 'object',
          properties: {
            event: textSchema(),
            key: textSchema(),
            size: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
            durationMs: { type: 'number', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          },
          required: ['event'],
        },
      },
    },
    async (request) => direct.telemetry(requireClient(request), (request.body ?? {}) as Record<string, unknown>),
  );
  app.get(
    '/telemetry',
    {
      config: { auth: 'client' },
      schema: {
        summary: "This client's telemetry events, newest first",
        querystring: {
          type: 'object',
          properties: {
            event: textSchema(),
            limit: { type: 'integer', minimum: 1, maximum: 1000 },
            before: { type: 'integer', minimum: -MAX_EPOCH_MS, maximum: MAX_EPOCH_MS },
          },
        },
      },
    },
    async (request) => {
      const q = request.query as { event?: string; limit?: number; before?: number };
      const events = await direct.list(requireClient(request), q);
      return {
        events: events.map((e) => ({
          event_id: e.event_id,
          event: e.event,
          key: e.key,
          size: e.size,
          durationMs: e.duration_ms,
          run_id: e.run_id,
          outcome: e.outcome,
          detail: parseDetail(e.detail),
          created_at: new Date(e.created_at).toISOString(),
        })),
      };
    },
  );
}

/** An event's extra fields. Rows stored before extras were bounded may hold cut JSON: shown as null, never a failed listing. */
function parseDetail(detail: string | null): unknown {
  if (detail === null) return null;
  try {
    return JSON.parse(detail) as unknown;
  } catch {
    return null;
  }
}
