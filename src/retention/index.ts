import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../config/load.js';
import type { Database } from '../db/schema.js';
import { RunQuery } from '../runs/query.js';
import type { StorageBackend } from '../storage/types.js';
import { DbRevocations } from '../uploads/token-revocations.js';
import { Sweeper, type SweeperMetrics } from './sweeper.js';

export type { SweepReport, SweepTask, SweepTaskContext, SweepTaskResult } from './sweeper.js';
export { Sweeper } from './sweeper.js';

export interface SweeperDeps {
  config: ResolvedConfig;
  db: Kysely<Database>;
  storage: StorageBackend;
  logger: Logger;
  instanceId: string;
  metrics?: (SweeperMetrics & { runsPruned?: { inc(n: number): void } }) | undefined;
}

/**
 * The sweeper the gateway and `s3up-server sweep` share: object retention plus
 * the built-in tasks. Other modules add theirs with `sweeper.addTask(...)`.
 */
export function createSweeper(deps: SweeperDeps): Sweeper {
  const sweeper = new Sweeper(deps);
  const { prune_max_runs: maxRuns, prune_max_age_days: maxAgeDays } = deps.config.raw.runs;
  if (maxRuns !== undefined || maxAgeDays !== undefined) {
    const query = new RunQuery(deps.db);
    sweeper.addTask({
      name: 'prune-runs',
      async run({ dryRun, now }) {
        if (dryRun)
          return {
            removed: 0,
            items: [`would prune terminal records (max_runs=${maxRuns ?? '-'}, max_age_days=${maxAgeDays ?? '-'}); not counted in a dry run`],
          };
        const res = await query.prune({ maxRuns, maxAgeDays, now });
        deps.metrics?.runsPruned?.inc(res.deleted);
        return { removed: res.deleted, items: [`scanned ${res.scanned}, deleted ${res.deleted}, kept ${res.kept}`] };
      },
    });
  }
  const revocations = new DbRevocations(deps.db);
  sweeper.addTask({
    name: 'prune-revoked-tokens',
    async run({ dryRun, now }) {
      if (dryRun) return { removed: 0, items: ['would forget the revocations of upload tokens that have expired anyway'] };
      const n = await revocations.prune(now);
      return { removed: n, items: [`forgot ${n} revocation(s) of expired upload tokens`] };
    },
  });
  return sweeper;
}
