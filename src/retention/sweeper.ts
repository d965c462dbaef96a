import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../config/load.js';
import type { Database } from '../db/schema.js';
import { AppError, ErrorCode } from '../errors.js';
import { RunQuery } from '../runs/query.js';
import { FsStorage } from '../storage/fs.js';
import type { StorageBackend } from '../storage/types.js';
import { RunStore } from '../uploads/runs.js';
import { Lease } from './lease.js';

const DAY_MS = 24 * 3600 * 1000;
const BATCH = 1000;
/** At most this many removed objects are kept in a report (counts are always exact). */
const REPORT_ITEMS = 10_000;

export interface SweepTaskContext {
  dryRun: boolean;
  /** The sweep's clock (tests move it forward instead of aging objects). */
  now: number;
  logger: Logger;
}

export interface SweepTaskResult {
  /** How many things the task removed (or would remove in a dry run). */
  removed: number;
  /** Optional descriptions of what was removed, printed by `s3up-server sweep`. */
  items?: string[];
}

/** Extra work the sweeper runs on every pass (e.g. "abort expired resumable sessions"). */
export interface SweepTask {
  name: string;
  run(ctx: SweepTaskContext): Promise<SweepTaskResult | undefined>;
}

export interface SweptObject {
  client: string;
  key: string;
  size: number;
  last_modified: string;
}

export interface SweepReport {
  dry_run: boolean;
  started_at: string;
  finished_at: string;
  /** Set when the sweep did not run because another gateway holds the sweeper lease. */
  skipped?: string;
  /** Objects removed (or that would be removed), capped at 10,000 entries. */
  objects: SweptObject[];
  objects_removed: number;
  bytes_removed: number;
  /** Expired objects left alone because an upload to their key is in progress or just finished. */
  objects_protected: number;
  dirs_removed: number;
  records_marked: number;
  tasks: Array<{ name: string; removed: number; items?: string[]; error?: string }>;
  errors: Array<{ key: string; message: string }>;
}

export interface SweeperMetrics {
  objectsDeleted(client: string, count: number, bytes: number): void;
  sweepFinished(outcome: 'ok' | 'error' | 'skipped', seconds: number): void;
}

export interface SweeperOptions {
  config: ResolvedConfig;
  db: Kysely<Database>;
  storage: StorageBackend;
  logger: Logger;
  /** Identifies this gateway in the sweeper lease. */
  instanceId: string;
  metrics?: SweeperMetrics | undefined;
}

export interface SweepOptions {
  dryRun?: boolean;
  now?: number;
  /** Called for every object removed (or that would be removed), e.g. to print it. */
  onObject?: (o: SweptObject) => void;
  /** Take the lease even for a dry run (default: only real sweeps take it). */
  lease?: boolean;
}

/**
 * The retention sweeper (spec 000): deletes objects older than the retention
 * window under each client's prefix, records it on the upload records, removes
 * empty folders on the filesystem, and runs the tasks other modules register.
 *
 * Safety: an object whose key has an upload queued or in progress, or one that
 * finished inside the window, is never deleted (checked again right before
 * each batch is deleted). Several gateways on one database coordinate through
 * a lease, and every delete is idempotent, so two sweeps at once do no harm.
 */
export class Sweeper {
  private readonly tasks: SweepTask[] = [];
  private readonly query: RunQuery;
  private readonly lease: Lease;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepReport> | undefined;
  private stopped = false;
  lastReport: SweepReport | undefined;

  constructor(private readonly opts: SweeperOptions) {
    this.query = new RunQuery(opts.db);
    this.lease = new Lease(opts.db, 'sweeper', opts.instanceId);
  }

  get intervalMs(): number {
    return this.opts.config.raw.retention.sweep_interval_minutes * 60_000;
  }

  /** Register extra work for every sweep (idempotent by name: a second add replaces the first). */
  addTask(task: SweepTask): void {
    const i = this.tasks.findIndex((t) => t.name === task.name);
    if (i >= 0) this.tasks[i] = task;
    else this.tasks.push(task);
  }

  get taskNames(): string[] {
    return this.tasks.map((t) => t.name);
  }

  /** Retention window of a client, in days. */
  ttlDays(client: string): number {
    const c = this.opts.config.clients.find((x) => x.name === client);
    return c?.retentionDays ?? this.opts.config.raw.retention.ttl_days;
  }

  /** Sweep periodically until stop(). The first pass runs after min(interval, 1 minute). */
  start(): void {
    if (!this.opts.config.raw.retention.enabled || this.timer || this.stopped) return;
    const schedule = (ms: number) => {
      this.timer = setTimeout(() => {
        this.sweep({ lease: true })
          .catch((err: unknown) => this.opts.logger.error({ err }, 'sweep failed'))
          .finally(() => {
            if (!this.stopped) schedule(this.intervalMs);
          });
      }, ms);
      this.timer.unref();
    };
    schedule(Math.min(this.intervalMs, 60_000));
  }

  /** Stop the timer and wait for a sweep in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** Run one sweep. Refused with CONFLICT while another sweep runs in this process. */
  sweep(opts: SweepOptions = {}): Promise<SweepReport> {
    if (this.running) return Promise.reject(new AppError(ErrorCode.CONFLICT, 'a sweep is already running; retry when it has finished'));
    const p = this.doSweep(opts).finally(() => {
      this.running = undefined;
    });
    this.running = p;
    return p;
  }

  private async doSweep(opts: SweepOptions): Promise<SweepReport> {
    const dryRun = opts.dryRun ?? false;
    const now = opts.now ?? Date.now();
    const t0 = performance.now();
    const { config, logger } = this.opts;
    const report: SweepReport = {
      dry_run: dryRun,
      started_at: new Date().toISOString(),
      finished_at: '',
      objects: [],
      objects_removed: 0,
      bytes_removed: 0,
      objects_protected: 0,
      dirs_removed: 0,
      records_marked: 0,
      tasks: [],
      errors: [],
    };
    const useLease = opts.lease ?? !dryRun;
    // Long enough for a slow sweep; released at the end, so a crash delays the next one at most this long.
    const leaseMs = Math.max(this.intervalMs * 2, 15 * 60_000);
    if (useLease && !(await this.lease.acquire(leaseMs))) {
      report.skipped = 'another gateway is sweeping (lease held)';
      report.finished_at = new Date().toISOString();
      this.opts.metrics?.sweepFinished('skipped', (performance.now() - t0) / 1000);
      logger.info('sweep skipped: another gateway holds the sweeper lease');
      return report;
    }
    try {
      for (const client of config.clients) {
        await this.sweepClient(client.name, { dryRun, now, onObject: opts.onObject }, report);
      }
      for (const task of this.tasks) {
        try {
          const res = await task.run({ dryRun, now, logger });
          report.tasks.push({ name: task.name, removed: res?.removed ?? 0, ...(res?.items ? { items: res.items } : {}) });
        } catch (err) {
          logger.error({ err, task: task.name }, 'sweep task failed');
          report.tasks.push({ name: task.name, removed: 0, error: err instanceof Error ? err.message : String(err) });
        }
      }
      report.finished_at = new Date().toISOString();
      this.lastReport = report;
      this.opts.metrics?.sweepFinished(report.errors.length > 0 ? 'error' : 'ok', (performance.now() - t0) / 1000);
      if (report.objects_removed > 0 || report.tasks.some((t) => t.removed > 0) || report.errors.length > 0) {
        logger.info(
          {
            dry_run: dryRun,
            objects_removed: report.objects_removed,
            bytes_removed: report.bytes_removed,
            objects_protected: report.objects_protected,
            dirs_removed: report.dirs_removed,
            tasks: report.tasks,
            errors: report.errors.length,
          },
          dryRun ? 'sweep (dry run) finished' : 'sweep finished',
        );
      }
      return report;
    } catch (err) {
      this.opts.metrics?.sweepFinished('error', (performance.now() - t0) / 1000);
      throw err;
    } finally {
      if (useLease) await this.lease.release().catch(() => {});
    }
  }

  private async sweepClient(client: string, o: { dryRun: boolean; now: number; onObject: SweepOptions['onObject'] }, report: SweepReport): Promise<void> {
    const { storage } = this.opts;
    const prefix = `${this.opts.config.storage.pathPrefix}${client}/`;
    const cutoff = o.now - this.ttlDays(client) * DAY_MS;
    const dirs = new Set<string>();
    let batch: SweptObject[] = [];

    const flush = async () => {
      if (batch.length === 0) return;
      const current = batch;
      batch = [];
      // Checked right before deleting: an upload that started since the listing keeps its object.
      const keep = await this.query.protectedKeys(
        current.map((b) => b.key),
        cutoff,
      );
      const doomed = current.filter((b) => !keep.has(b.key));
      report.objects_protected += current.length - doomed.length;
      let removedKeys: Set<string>;
      if (o.dryRun) {
        removedKeys = new Set(doomed.map((d) => d.key));
      } else {
        const keys = doomed.map((d) => d.key);
        const res = storage.deleteMany ? await storage.deleteMany(keys, { unmodifiedSince: new Date(cutoff) }) : await deleteOneByOne(storage, keys);
        report.errors.push(...res.errors);
        removedKeys = new Set(res.deleted);
        report.records_marked += await this.markDeleted(res.deleted, o.now);
      }
      let bytes = 0;
      let count = 0;
      for (const d of doomed) {
        if (!removedKeys.has(d.key)) continue;
        count++;
        bytes += d.size;
        if (report.objects.length < REPORT_ITEMS) report.objects.push(d);
        o.onObject?.(d);
        if (storage instanceof FsStorage) dirs.add(path.dirname(storage.pathFor(d.key)));
      }
      report.objects_removed += count;
      report.bytes_removed += bytes;
      if (!o.dryRun && count > 0) this.opts.metrics?.objectsDeleted(client, count, bytes);
    };

    for await (const info of storage.list(prefix)) {
      if (info.lastModified.getTime() >= cutoff) continue;
      batch.push({ client, key: info.key, size: info.size, last_modified: info.lastModified.toISOString() });
      if (batch.length >= BATCH) await flush();
    }
    await flush();

    // After the listing, so the walk never loses a folder under its feet.
    if (!o.dryRun && storage instanceof FsStorage) {
      const stopAt = storage.pathFor(`${prefix}x`).replace(/[/\\]x$/, '');
      const sorted = [...dirs].sort((a, b) => b.length - a.length);
      for (const dir of sorted) report.dirs_removed += await storage.removeEmptyDirs(dir, stopAt);
    }
  }

  private async markDeleted(keys: string[], now: number): Promise<number> {
    return new RunStore(this.opts.db).markDeleted(keys, now);
  }
}

async function deleteOneByOne(storage: StorageBackend, keys: string[]) {
  const out = { deleted: [] as string[], errors: [] as Array<{ key: string; message: string }> };
  for (const key of keys) {
    try {
      await storage.delete(key);
      out.deleted.push(key);
    } catch (err) {
      out.errors.push({ key, message: err instanceof Error ? err.message : String(err) });
    }
  }
  return out;
}
