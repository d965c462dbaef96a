import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';
import type { SweepTask } from '../retention/sweeper.js';
import { FsStorage } from '../storage/fs.js';
import type { DirectUploads } from './direct.js';
import type { UploadPipeline } from './pipeline.js';

/**
 * The sweeper task "settle orphaned runs": no run stays open for good.
 * - A plain upload whose gateway stopped heartbeating for three intervals
 *   (killed, crashed) can no longer finish: its run fails. Nothing it
 *   streamed was published (the publish and its record are one step).
 * - A queued direct upload whose URL expired is settled from the store, once
 *   it has had as long again as its URL lived: the store checks a presigned
 *   URL when a request starts, so an upload begun just before expiry may
 *   still be arriving.
 */
export function orphanedRunsTask(deps: {
  pipeline: UploadPipeline;
  direct: DirectUploads;
  clients: readonly ResolvedClient[];
  heartbeatMs: number;
}): SweepTask {
  const clientOf = (name: string): ResolvedClient | undefined => deps.clients.find((c) => c.name === name);
  return {
    name: 'settle-orphaned-runs',
    async run({ dryRun, now }) {
      const orphans = await deps.pipeline.runs.orphans(now - 3 * deps.heartbeatMs, now - deps.direct.effectiveTtl() * 1000);
      if (dryRun) return { removed: orphans.length, items: [`${orphans.length} orphaned run(s) would be settled`] };
      let settled = 0;
      for (const run of orphans) {
        try {
          if (run.status === 'queued') {
            await deps.direct.settleLapsed(run, clientOf(run.client));
          } else {
            await deps.pipeline.fail(run, new AppError(ErrorCode.UPLOAD_ABORTED, 'the gateway handling this upload stopped before it finished'));
          }
          settled++;
        } catch {
          // Settled meanwhile by someone else (INVALID_TRANSITION), or the store is down: the next sweep retries.
        }
      }
      // The temp files those uploads were writing (filesystem store).
      let temps = 0;
      const storage = deps.pipeline.storage;
      if (storage instanceof FsStorage) temps = await storage.removeTempsOfDead(await deps.pipeline.runs.aliveGateways(now - 3 * deps.heartbeatMs));
      return { removed: settled, items: [`settled ${settled} orphaned run(s), removed ${temps} temp file(s) of stopped gateways`] };
    },
  };
}
