import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { loadConfig } from '../config/load.js';
import { migrate, openDatabase } from '../db/index.js';
import { formatBytes } from '../format.js';
import { openStorage } from '../storage/index.js';
import { UploadPipeline } from '../uploads/pipeline.js';
import { ResumableEngine } from '../uploads/resumable.js';
import { RunStore } from '../uploads/runs.js';
import { createSweeper } from './index.js';
import { expiredSessionsTask } from './tasks.js';

export const SWEEP_USAGE = 's3up-server sweep [--config server.yaml] [--dry-run] [--json]   run the retention sweeper once';

/** `s3up-server sweep`: one pass of the sweeper, printing each object it removes (or would remove). Returns the exit code. */
export async function sweepCommand(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } },
    strict: true,
  });
  const config = loadConfig({ configPath: values.config });
  const dryRun = values['dry-run'] ?? false;
  const logger = pino({ level: 'warn' }, pino.destination(2));
  const db = await openDatabase(config.databaseUrl);
  try {
    await migrate(db.db);
    const storage = await openStorage(config.storage);
    try {
      const sweeper = createSweeper({ config, db: db.db, storage, logger, instanceId: `cli-${randomUUID()}` });
      // The same expired-session cleanup the gateway runs (its engine timer is not started here).
      const engine = new ResumableEngine(db.db, new UploadPipeline(storage, new RunStore(db.db), config.storage.pathPrefix), {
        sessionTtlMs: config.raw.uploads.session_ttl_hours * 3600 * 1000,
        sweepIntervalMs: config.raw.uploads.sweep_interval_seconds * 1000,
        logger,
      });
      sweeper.addTask(expiredSessionsTask(engine));
      const verb = dryRun ? 'would remove' : 'removed';
      const report = await sweeper.sweep({
        dryRun,
        lease: !dryRun,
        onObject: values.json ? undefined : (o) => out.write(`${verb} ${o.key} (${o.size} bytes, last modified ${o.last_modified})\n`),
      });
      if (values.json) {
        out.write(`${JSON.stringify(report, null, 2)}\n`);
      } else if (report.skipped) {
        out.write(`sweep skipped: ${report.skipped}\n`);
      } else {
        for (const t of report.tasks) {
          out.write(`task ${t.name}: ${t.error ? `failed: ${t.error}` : `${verb} ${t.removed}`}\n`);
          for (const item of t.items ?? []) out.write(`  ${item}\n`);
        }
        for (const e of report.errors) out.write(`error ${e.key}: ${e.message}\n`);
        out.write(
          `${dryRun ? 'dry run: ' : ''}${report.objects_removed} object(s), ${formatBytes(report.bytes_removed)} ${verb}; ` +
            `${report.objects_protected} kept (upload in progress); ${report.dirs_removed} empty folder(s) removed\n`,
        );
      }
      return report.skipped ? 3 : report.errors.length > 0 ? 1 : 0;
    } finally {
      await storage.close();
    }
  } finally {
    await db.close();
  }
}
