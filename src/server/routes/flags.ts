import type { FastifyInstance } from 'fastify';
import { VERSION } from '../../version.js';
import type { AppContext } from '../context.js';
import { requireClient } from './uploads.js';

const MB = 1024 * 1024;

const documentSchema = {
  type: 'object',
  description: '{version: 1, flags: {name: {enabled, rolloutPercent, clients, description}}, upload: {chunk_size_mb, concurrency}, clients: {name: {upload}}}',
  additionalProperties: true,
} as const;

export async function flagRoutes(app: FastifyInstance, { ctx }: { ctx: AppContext }) {
  app.get(
    '/api/admin/feature-flags/config',
    {
      config: { auth: 'admin' },
      schema: { summary: 'The feature-flag document (admin)', tags: ['config'], response: { 200: documentSchema } },
    },
    async () => {
      await ctx.flags.refresh();
      return ctx.flags.document;
    },
  );

  app.put(
    '/api/admin/feature-flags/config',
    {
      config: { auth: 'admin' },
      schema: {
        summary: 'Replace the document ({flags: ...}) or update some flags ({name: {rolloutPercent: 10}}) (admin)',
        tags: ['config'],
        body: { type: 'object', additionalProperties: true },
        response: { 200: documentSchema },
      },
    },
    async (request) => {
      const doc = await ctx.flags.put(request.body);
      request.log.info({ flags: Object.keys(doc.flags) }, 'feature flags updated');
      return doc;
    },
  );

  app.get(
    '/config',
    {
      config: { auth: 'client' },
      schema: {
        summary: "The calling client's effective flags and upload settings",
        tags: ['config'],
        response: {
          200: {
            type: 'object',
            properties: {
              client: { type: 'string' },
              version: { type: 'string' },
              server_time: { type: 'string' },
              flags: { type: 'object', additionalProperties: { type: 'boolean' } },
              upload: {
                type: 'object',
                properties: {
                  chunk_size_bytes: { type: 'integer' },
                  concurrency: { type: 'integer' },
                  max_file_size_bytes: { type: 'integer' },
                },
              },
              retention_days: { type: 'number' },
            },
          },
        },
      },
    },
    async (request) => {
      const client = requireClient(request);
      await ctx.flags.refresh();
      const base = ctx.config.raw.remote_config;
      const o = ctx.flags.uploadOverrides(client.name);
      return {
        client: client.name,
        version: VERSION,
        server_time: new Date().toISOString(),
        flags: ctx.flags.evaluate(client.name),
        upload: {
          chunk_size_bytes: Math.floor((o.chunk_size_mb ?? base.chunk_size_mb) * MB),
          concurrency: o.concurrency ?? base.concurrency,
          max_file_size_bytes: client.maxFileSize,
        },
        retention_days: client.retentionDays ?? ctx.config.raw.retention.ttl_days,
      };
    },
  );
}
