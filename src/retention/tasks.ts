import { type Kysely, sql } from 'kysely';
import type { Database } from '../db/schema.js';
import type { SweepTask } from './sweeper.js';

/** What the sweeper needs from the resumable-upload engine (issue 3), structurally. */
export interface ExpiringSessions {
  sweepExpired(now?: number): Promise<{ expired: number; cleaned: number; pending: number; deleted: number }>;
}

/**
 * The sweeper task "abort expired resumable sessions" (spec 000). A real sweep
 * asks the engine to expire, abort and clean up; a dry run only counts the
 * active sessions past their expiry.
 */
export function expiredSessionsTask(engine: ExpiringSessions, db: Kysely<Database>): SweepTask {
  return {
    name: 'abort-expired-sessions',
    async run({ dryRun, now }) {
      if (dryRun) {
        const res = await sql<{ n: number | string }>`select count(*) as n from upload_sessions where status = 'active' and expires_at <= ${now}`.execute(db);
        const n = Number(res.rows[0]?.n ?? 0);
        return { removed: n, items: [`${n} expired session(s) would be aborted`] };
      }
      const r = await engine.sweepExpired(now);
      return {
        removed: r.expired,
        items: [`expired ${r.expired}, store parts cleaned ${r.cleaned}, cleanup pending ${r.pending}, old sessions deleted ${r.deleted}`],
      };
    },
  };
}
