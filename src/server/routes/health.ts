import type { FastifyInstance } from 'fastify';
import { checkWritable } from '../../db/index.js';
import { VERSION } from '../../version.js';
import type { AppContext } from '../context.js';

type CheckResult = { status: 'ok' } | { status: 'fail'; error: string };

async function timed(fn: () => Promise<void>, timeoutMs: number): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { status: 'ok' };
  } catch (err) {
    // Report the kind of failure, never connection strings or credentials.
    const e = err as { code?: string; message?: string };
    return { status: 'fail', error: e.code ?? (e.message?.startsWith('timed out') ? e.message : 'unavailable') };
  } finally {
    clearTimeout(timer);
  }
}

/** Named readiness checks; other modules add theirs (e.g. the feature-flag store). */
export type ReadinessCheck = () => Promise<void>;

export async function healthRoutes(app: FastifyInstance, { ctx, extraChecks = {} }: { ctx: AppContext; extraChecks?: Record<string, ReadinessCheck> }) {
  app.get('/health', { config: { auth: 'none' } }, async () => ({ status: 'ok', version: VERSION }));

  app.get('/ready', { config: { auth: 'none' } }, async (_request, reply) => {
    const entries: Array<[string, ReadinessCheck]> = [
      ['database', () => checkWritable(ctx.db.db, ctx.instanceId)],
      ['storage', () => ctx.storage.check()],
      ...Object.entries(extraChecks),
    ];
    const results = await Promise.all(entries.map(async ([name, fn]) => [name, await timed(fn, 5000)] as const));
    const checks = Object.fromEntries(results);
    const ok = results.every(([, r]) => r.status === 'ok');
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'fail', version: VERSION, checks });
  });
}
