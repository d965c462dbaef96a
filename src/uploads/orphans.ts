import type { ResolvedClient } from '../config/load.js';
import { AppError, ErrorCode } from '../errors.js';
import type { SweepTask } from '../retention/sweeper.js';
import { FsStorage } from '../storage/fs.js';
import type { DirectUploads } from './direct.js';
import type { UploadPipeline } from './pipeline.js';
import { storedDigest } from './reconcile.js';
import type { Run } from './runs.js';

/**
 * The sweeper task "settle orphaned runs": no run stays open for good.
 * - First this gateway's own owed records are retried (settlements it could
 *   not write while the database was away).
 * - A plain upload nobody streams any more (its gateway stopped heartbeating
 *   for three intervals: killed, crashed; or this gateway, whose request for
 *   it is gone) is settled from the store: the store publishes an upload only
 *   once it is complete and verified, so an object at its key that no object
 *   row describes (size and SHA-256 read from the store) is this upload,
 *   published before its record could be written: the run succeeds with that
 *   row. Otherwise the run fails. Runs this gateway still holds are skipped.
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
      const { pipeline } = deps;
      if (!dryRun) await pipeline.unrecorded.retry();
      const orphans = (await pipeline.runs.orphans(now - 3 * deps.heartbeatMs, now - deps.direct.effectiveTtl() * 1000, pipeline.owner)).filter(
        (run) => !pipeline.holds(run.run_id),
      );
      if (dryRun) return { removed: orphans.length, items: [`${orphans.length} orphaned run(s) would be settled`] };
      let settled = 0;
      for (const run of orphans) {
        try {
          if (run.status === 'queued') {
            await deps.direct.settleLapsed(run, clientOf(run.client));
          } else {
            await settleUnfinished(pipeline, run);
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

/** Settle a plain upload nobody streams any more, from what the store holds at its key (see above). */
async function settleUnfinished(pipeline: UploadPipeline, run: Run): Promise<void> {
  const release = await pipeline.keyLocks.acquire(run.object_key);
  try {
    const stored = await storedDigest(pipeline.storage, run.object_key);
    if (stored && (run.size === null || run.size === stored.size)) {
      const row = await pipeline.runs.objectAt(run.object_key);
      const described = row !== undefined && row.size === stored.size && (row.sha256 === null || row.sha256 === stored.sha256);
      if (!described) {
        await pipeline.commit(run.run_id, {
          object_key: run.object_key,
          client: run.client,
          path: run.path,
          size: stored.size,
          sha256: stored.sha256,
          checksum: stored.sha256,
          checksum_algorithm: 'sha256',
          chunk_size: null,
          content_type: run.content_type,
        });
        return;
      }
    }
    const err = await pipeline.fail(run, new AppError(ErrorCode.UPLOAD_ABORTED, 'the upload stopped before it finished (its gateway or request went away)'));
    // fail() reports the error; a record it could not write is owed, not settled.
    if (pipeline.unrecorded.has(run.run_id)) throw err;
  } finally {
    release();
  }
}
