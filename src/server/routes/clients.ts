import type { FastifyInstance } from 'fastify';
import { parseReport, reportToJson } from '../../reports/store.js';
import type { AppContext } from '../context.js';
import { requireClient } from './uploads.js';

const reportProps = {
  date: { type: 'string' },
  files_uploaded: { type: 'integer', minimum: 0 },
  bytes: { type: 'integer', minimum: 0 },
  failures: { type: 'integer', minimum: 0 },
  queue_depth: { type: 'integer', minimum: 0 },
  agent_version: { type: 'string' },
  host: { type: 'string' },
} as const;

const reportJsonSchema = {
  type: 'object',
  properties: { ...reportProps, agent_version: { type: ['string', 'null'] }, host: { type: ['string', 'null'] }, received_at: { type: 'string' } },
} as const;

const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

export async function clientRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.post(
    '/reports',
    {
      config: { auth: 'client' },
      schema: {
        summary: "An agent's daily report; resending the same date replaces it",
        tags: ['clients'],
        body: { type: 'object', properties: reportProps, required: ['date', 'files_uploaded', 'bytes', 'failures', 'queue_depth'] },
        response: {
          200: {
            type: 'object',
            properties: { stored: { type: 'boolean' }, created: { type: 'boolean' }, client: { type: 'string' }, report: reportJsonSchema },
          },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      const report = parseReport(request.body);
      const { row, created } = await ctx.reports.upsert(client.name, report);
      ctx.metrics.reports.inc({ client: client.name });
      return { stored: true, created, client: client.name, report: reportToJson(row) };
    },
  );

  app.get(
    '/clients',
    {
      config: { auth: 'admin' },
      schema: {
        summary: 'Activity of every configured client (admin)',
        tags: ['clients'],
        response: {
          200: {
            type: 'object',
            properties: {
              generated_at: { type: 'string' },
              clients: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    name: { type: 'string' },
                    last_seen: { type: ['string', 'null'] },
                    uploads_today: { type: 'integer' },
                    bytes_today: { type: 'integer' },
                    failures_today: { type: 'integer' },
                    uploads_7d: { type: 'integer' },
                    bytes_7d: { type: 'integer' },
                    failures_7d: { type: 'integer' },
                    in_progress: { type: 'integer' },
                    storage: { type: 'object', properties: { objects: { type: 'integer' }, bytes: { type: 'integer' } } },
                    retention_days: { type: 'number' },
                    max_file_size_bytes: { type: 'integer' },
                    latest_report: { anyOf: [reportJsonSchema, { type: 'null' }] },
                  },
                },
              },
            },
          },
        },
      },
    },
    async () => {
      const now = Date.now();
      const [activity, storage, latest, received] = await Promise.all([
        ctx.runQuery.activity(now),
        ctx.runQuery.storageUsed(),
        ctx.reports.latestPerClient(),
        ctx.reports.lastReceived(),
      ]);
      const byClient = new Map(activity.map((a) => [a.client, a]));
      const used = new Map(storage.map((s) => [s.client, s]));
      // The newest record of each client: one index seek each, side by side.
      const lastUploads = await Promise.all(ctx.config.clients.map((c) => byClient.get(c.name)?.last_upload_at ?? ctx.runQuery.lastUploadAt(c.name)));
      const clients = [];
      for (const [i, c] of ctx.config.clients.entries()) {
        const a = byClient.get(c.name);
        const lastUpload = lastUploads[i] ?? null;
        const lastReport = received.get(c.name) ?? null;
        const lastSeen = lastUpload === null ? lastReport : lastReport === null ? lastUpload : Math.max(lastUpload, lastReport);
        const report = latest.get(c.name);
        clients.push({
          name: c.name,
          last_seen: iso(lastSeen),
          uploads_today: a?.uploads_today ?? 0,
          bytes_today: a?.bytes_today ?? 0,
          failures_today: a?.failures_today ?? 0,
          uploads_7d: a?.uploads_7d ?? 0,
          bytes_7d: a?.bytes_7d ?? 0,
          failures_7d: a?.failures_7d ?? 0,
          in_progress: a?.in_progress ?? 0,
          storage: { objects: used.get(c.name)?.objects ?? 0, bytes: used.get(c.name)?.bytes ?? 0 },
          retention_days: c.retentionDays ?? ctx.config.raw.retention.ttl_days,
          max_file_size_bytes: c.maxFileSize,
          latest_report: report ? reportToJson(report) : null,
        });
      }
      return { generated_at: new Date(now).toISOString(), clients };
    },
  );
}
