import type { SweepTask } from './sweeper.js';

/** What the sweeper needs from the resumable-upload engine, structurally. */
export interface ExpiringSessions {
  sweepExpired(now?: number): Promise<{ expired: number; cleaned: number; pending: number; deleted: number; settled: number }>;
  countDue(now?: number): Promise<{ expired: number; pending: number }>;
}

/**
 * The sweeper task "abort expired resumable sessions" (spec 000). A real sweep
 * asks the engine to expire, abort and clean up; a dry run only counts the
 * active sessions past their expiry.
 */
export function expiredSessionsTask(engine: ExpiringSessions): SweepTask {
  return {
    name: 'abort-expired-sessions',
    async run({ dryRun, now }) {
      if (dryRun) {
        const due = await engine.countDue(now);
        return { removed: due.expired, items: [`${due.expired} expired session(s) would be aborted, ${due.pending} store abort(s) pending`] };
      }
      const r = await engine.sweepExpired(now);
      return {
        removed: r.expired,
        items: [
          `expired ${r.expired}, store parts cleaned ${r.cleaned}, cleanup pending ${r.pending}, old sessions deleted ${r.deleted}, stalled completions settled ${r.settled}`,
        ],
      };
    },
  };
}
