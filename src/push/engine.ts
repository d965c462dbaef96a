import { backoffDelay, sleep } from '../client/retry.js';
import { fileChecksums, matchesRemote } from '../transfer/checksum.js';
import { type ScannedFile, scanBatches } from '../transfer/scan.js';
import type { TransferError, UploadTarget } from '../transfer/target.js';
import { MiB, type UploadLocalFileResult, uploadLocalFile } from '../transfer/upload.js';
import type { PushConfig } from './config.js';
import type { FileUploadsTable } from './db.js';
import { Channel, runWorkers } from './pool.js';
import type { FileOutcome, PushState, SessionRow } from './state.js';

/** Live counters the progress display reads (the engine only writes them). */
export class PushStats {
  found = 0;
  foundBytes = 0;
  scanDone = false;
  toUpload = 0;
  toUploadBytes = 0;
  uploaded = 0;
  skipped = 0;
  failed = 0;
  /** Bytes of finished uploads plus the progress of those in flight. */
  bytesSent = 0;
  readonly current = new Set<string>();
  readonly startedAt = Date.now();
  /** Memory the uploads may hold at most: workers x part concurrency x chunk size (resumable) . */
  boundBytes = 0;
}

export type PushEvent =
  | { event: 'file'; path: string; status: 'uploaded' | 'skipped' | 'failed'; size: number; reason?: string; error?: TransferError; verdict?: string }
  | { event: 'listing'; objects: number }
  | { event: 'warning'; path: string; message: string };

export interface PushRunOptions {
  state: PushState;
  config: PushConfig;
  target: UploadTarget;
  /** Where objects land (target + prefix): the skip decision is per project and target key. */
  targetKey: string;
  sessionId: string;
  projectId: string;
  stats: PushStats;
  onEvent?: (e: PushEvent) => void;
  signal: AbortSignal;
}

interface Job {
  file: ScannedFile;
  uploadId: string | null;
}

/** Files looked up and inserted per batch: one query to the state, one batched insert. */
const DECIDE_BATCH = 256;
const FLUSH_EVERY = 200;
const FLUSH_MS = 250;

/** Outcomes written in batches (one transaction each), in order, off the workers' path. */
class OutcomeWriter {
  private pending: FileOutcome[] = [];
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private error: unknown;

  constructor(
    private readonly state: PushState,
    private readonly sessionId: string,
  ) {}

  add(o: FileOutcome): void {
    this.pending.push(o);
    if (this.pending.length >= FLUSH_EVERY) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length > 0) {
      this.chain = this.chain.then(() =>
        this.state.recordOutcomes(this.sessionId, batch).catch((err: unknown) => {
          this.error ??= err;
        }),
      );
    }
    return this.chain.then(() => {
      if (this.error) throw this.error;
    });
  }
}

function outcomeOf(relPath: string, res: UploadLocalFileResult, permanent: boolean, retried: boolean): FileOutcome {
  return {
    relPath,
    status: res.verdict === 'ok' ? 'uploaded' : 'failed',
    size: res.size,
    mtimeMs: res.mtimeMs,
    sha256: res.sha256,
    checksum: res.checksum,
    checksumAlgorithm: res.checksumAlgorithm,
    chunkSize: res.chunkSize,
    error: res.error,
    permanent,
    retried,
  };
}

/** Upload one file for the push or a retry round; the outcome goes to the writer (an abort leaves it as it was). */
async function transfer(
  opts: Pick<PushRunOptions, 'config' | 'target' | 'state' | 'sessionId' | 'stats' | 'onEvent' | 'signal'>,
  writer: OutcomeWriter,
  relPath: string,
  absPath: string,
  uploadId: string | null,
  judgePermanent: (res: UploadLocalFileResult) => boolean,
  retried: boolean,
): Promise<UploadLocalFileResult> {
  const { config, stats } = opts;
  stats.current.add(relPath);
  let sent = 0;
  const res = await uploadLocalFile(opts.target, {
    localPath: absPath,
    remotePath: relPath,
    resumableThreshold: config.resumable_threshold_mb * MiB,
    chunkSize: config.chunk_size_mb * MiB,
    partConcurrency: config.part_concurrency,
    resumeUploadId: uploadId ?? undefined,
    onUploadId: (id) => opts.state.setUploadId(opts.sessionId, relPath, id),
    onProgress: (p) => {
      stats.bytesSent += p.bytesSent - sent;
      sent = p.bytesSent;
    },
    signal: opts.signal,
  });
  stats.current.delete(relPath);
  stats.bytesSent -= sent;
  if (res.error?.code === 'ABORTED' && opts.signal.aborted) return res;
  if (res.verdict === 'ok') {
    stats.uploaded++;
    stats.bytesSent += res.size;
    opts.onEvent?.({ event: 'file', path: relPath, status: 'uploaded', size: res.size });
  } else {
    stats.failed++;
    opts.onEvent?.({ event: 'file', path: relPath, status: 'failed', size: res.size, error: res.error, verdict: res.verdict });
  }
  writer.add(outcomeOf(relPath, res, res.verdict !== 'ok' && judgePermanent(res), retried));
  return res;
}

/**
 * One push: scan the tree (streaming), decide per batch what to skip (the
 * state first, then at most one listing of the remote prefix, streamed into
 * the state), record the files to send as pending, and upload them with a
 * worker pool while the scan goes on. Memory: the batch being decided, the
 * queue (2 x workers) and the uploads in flight.
 */
export async function runPush(opts: PushRunOptions): Promise<SessionRow> {
  const { state, config, target, stats, signal, sessionId } = opts;
  const writer = new OutcomeWriter(state, sessionId);
  const queue = new Channel<Job>(config.workers * 2);
  stats.boundBytes = config.workers * config.part_concurrency * config.chunk_size_mb * MiB;
  let listing: Promise<boolean> | undefined;
  const ensureListing = () => {
    listing ??= (async () => {
      try {
        const n = await state.storeRemote(sessionId, target.list('', signal));
        opts.onEvent?.({ event: 'listing', objects: n });
        return true;
      } catch (err) {
        if (signal.aborted) throw err;
        // Without the listing, files the state does not know are uploaded (the target verifies them).
        const { error } = target.judge(err);
        opts.onEvent?.({
          event: 'warning',
          path: target.description,
          message: `cannot list the target (${error.code}: ${error.message}); uploading what the state does not know`,
        });
        return false;
      }
    })();
    return listing;
  };

  const decide = async (batch: ScannedFile[]) => {
    const now = Date.now();
    const known = await state.known(
      opts.projectId,
      opts.targetKey,
      batch.map((f) => f.relPath),
    );
    const rows: FileUploadsTable[] = [];
    const jobs: Job[] = [];
    const unknown: Array<{ file: ScannedFile; uploadId: string | null }> = [];
    const row = (f: ScannedFile, status: 'pending' | 'skipped', extra: Partial<FileUploadsTable> = {}): FileUploadsTable => ({
      session_id: sessionId,
      project_id: opts.projectId,
      target_key: opts.targetKey,
      rel_path: f.relPath,
      remote_path: f.relPath,
      size: f.size,
      mtime_ms: f.mtimeMs,
      status,
      permanent: 0,
      retry_count: 0,
      sha256: null,
      checksum: null,
      checksum_algorithm: null,
      chunk_size: null,
      upload_id: null,
      error_status: null,
      error_code: null,
      error_message: null,
      updated_at: now,
      uploaded_at: null,
      ...extra,
    });
    // A file the state already holds as uploaded gets no new row (the state would grow by the
    // whole tree on every no-op run); one found at the target is recorded, so the state knows it.
    const skip = (f: ScannedFile, reason: string, extra: Partial<FileUploadsTable> | undefined) => {
      if (extra) rows.push(row(f, 'skipped', extra));
      stats.skipped++;
      opts.onEvent?.({ event: 'file', path: f.relPath, status: 'skipped', size: f.size, reason });
    };
    for (const f of batch) {
      const k = known.get(f.relPath);
      const same = k !== undefined && k.size === f.size && k.mtime_ms === f.mtimeMs;
      if (same && (k.status === 'uploaded' || k.status === 'skipped')) {
        if (config.checksum) {
          const sums = await fileChecksums(f.absPath, undefined, signal).catch(() => undefined);
          if (sums && k.sha256 !== null && sums.sha256 === k.sha256) {
            if (k.session_id === sessionId) stats.uploaded++;
            else skip(f, 'unchanged (checksum)', undefined);
            continue;
          }
        } else {
          // Already done by this very session (resumed): leave its row as it is.
          if (k.session_id === sessionId) stats.uploaded++;
          else skip(f, 'unchanged (size and mtime)', undefined);
          continue;
        }
      }
      unknown.push({ file: f, uploadId: same ? k.upload_id : null });
    }
    if (unknown.length > 0 && config.remote_check && (await ensureListing())) {
      const remote = await state.remote(
        sessionId,
        unknown.map((u) => u.file.relPath),
      );
      const still: typeof unknown = [];
      for (const u of unknown) {
        const r = remote.get(u.file.relPath);
        if (r && r.size === u.file.size) {
          if (r.checksum && r.checksum_algorithm) {
            const algo = r.checksum_algorithm as 'sha256' | 'sha256-of-sha256s';
            if (await matchesRemote(u.file.absPath, { checksum: r.checksum, checksum_algorithm: algo, chunk_size: r.chunk_size }, signal).catch(() => false)) {
              skip(u.file, 'already at the target (same checksum)', {
                checksum: r.checksum,
                checksum_algorithm: algo,
                chunk_size: r.chunk_size,
                sha256: algo === 'sha256' ? r.checksum : null,
              });
              continue;
            }
          } else if (!config.checksum) {
            skip(u.file, 'already at the target (same size)', {});
            continue;
          }
        }
        still.push(u);
      }
      unknown.length = 0;
      unknown.push(...still);
    }
    for (const u of unknown) {
      rows.push(row(u.file, 'pending', { upload_id: u.uploadId }));
      jobs.push(u);
      stats.toUpload++;
      stats.toUploadBytes += u.file.size;
    }
    await state.putFiles(rows);
    for (const j of jobs) await queue.put(j);
  };

  const producer = (async () => {
    try {
      let batch: ScannedFile[] = [];
      for await (const files of scanBatches(config.source_dir, {
        include: config.include,
        exclude: config.exclude,
        extensions: config.extensions,
        followSymlinks: config.follow_symlinks,
        signal,
        onError: (p, err) => opts.onEvent?.({ event: 'warning', path: p, message: `cannot read: ${err.code ?? err.message}` }),
      })) {
        for (const f of files) {
          stats.found++;
          stats.foundBytes += f.size;
          batch.push(f);
        }
        if (batch.length >= DECIDE_BATCH) {
          await decide(batch);
          batch = [];
        }
        if (signal.aborted) break;
      }
      if (batch.length > 0 && !signal.aborted) await decide(batch);
    } finally {
      stats.scanDone = true;
      queue.close();
    }
  })();

  const workers = runWorkers(queue, config.workers, async (job) => {
    if (signal.aborted) return;
    await transfer(opts, writer, job.file.relPath, job.file.absPath, job.uploadId, () => false, false);
  });
  let failure: unknown;
  await Promise.all([producer, workers]).catch((err: unknown) => {
    failure = err;
  });
  // If the producer failed, the workers finish what was queued; wait for them either way.
  await workers.catch(() => {});
  await writer.flush();
  if (failure !== undefined && !signal.aborted) {
    await state.finishSession(sessionId, 'failed', { found: stats.found, foundBytes: stats.foundBytes, skipped: stats.skipped });
    throw failure;
  }
  return state.finishSession(sessionId, signal.aborted ? 'interrupted' : 'completed', {
    found: stats.found,
    foundBytes: stats.foundBytes,
    skipped: stats.skipped,
  });
}

export interface RetryOptions extends Omit<PushRunOptions, 'config' | 'targetKey' | 'projectId'> {
  config: Pick<PushConfig, 'workers' | 'part_concurrency' | 'chunk_size_mb' | 'resumable_threshold_mb'>;
  /** A file that has been retried this many times and fails again is permanently failed. */
  maxRetries: number;
  /** Rounds with backoff until nothing is left or maxRetries is reached (else one round). */
  auto: boolean;
  /** Backoff between rounds: first delay and cap (ms). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  onRound?: (round: number, files: number, waitMs: number) => void;
}

/**
 * Retry a session's failed files in rounds. A success moves a file to
 * uploaded; a failure counts a retry, and after `maxRetries` retries (or a
 * permanent refusal such as a file that no longer exists) it is failed for good
 * with its last error.
 */
export async function runRetry(opts: RetryOptions): Promise<SessionRow> {
  const { state, sessionId, signal, stats } = opts;
  const session = await state.session(sessionId);
  const rounds = opts.auto ? Math.max(1, opts.maxRetries) : 1;
  const fullConfig = { ...opts.config, source_dir: session.source_dir } as PushConfig;
  for (let round = 1; round <= rounds && !signal.aborted; round++) {
    const writer = new OutcomeWriter(state, sessionId);
    const queue = new Channel<{ rel: string; abs: string; uploadId: string | null; retries: number }>(opts.config.workers * 2);
    let count = 0;
    let longestRetryAfter = 0;
    const producer = (async () => {
      try {
        // Fetch page by page; files moved to 'retry' drop out of the next page's query.
        for (;;) {
          const page = await state.failedFiles(sessionId, 500);
          if (page.length === 0 || signal.aborted) break;
          await state.markRetrying(
            sessionId,
            page.map((f) => f.rel_path),
          );
          for (const f of page) {
            count++;
            stats.toUpload++;
            stats.toUploadBytes += Number(f.size);
            await queue.put({ rel: f.rel_path, abs: `${session.source_dir}/${f.rel_path}`, uploadId: f.upload_id, retries: Number(f.retry_count) });
          }
          if (page.length < 500) break;
        }
      } finally {
        queue.close();
      }
    })();
    const workers = runWorkers(queue, opts.config.workers, async (job) => {
      if (signal.aborted) return;
      const res = await transfer(
        { ...opts, config: fullConfig },
        writer,
        job.rel,
        job.abs,
        job.uploadId,
        (r) => r.verdict === 'permanent' || job.retries + 1 >= opts.maxRetries,
        true,
      );
      if (res.error?.retryAfterMs) longestRetryAfter = Math.max(longestRetryAfter, res.error.retryAfterMs);
    });
    await Promise.all([producer, workers]);
    await writer.flush();
    // Files left in 'retry' by an interrupted round go back to failed.
    await state.db.updateTable('file_uploads').set({ status: 'failed' }).where('session_id', '=', sessionId).where('status', '=', 'retry').execute();
    if (count === 0) {
      opts.onRound?.(round, 0, 0);
      break;
    }
    const left = await state.failedFiles(sessionId, 1);
    if (left.length === 0 || round === rounds) {
      opts.onRound?.(round, count, 0);
      break;
    }
    const wait = Math.max(
      backoffDelay({ attempts: rounds, baseDelayMs: opts.baseDelayMs ?? 2000, maxDelayMs: opts.maxDelayMs ?? 60_000 }, round - 1),
      Math.min(longestRetryAfter, opts.maxDelayMs ?? 60_000),
    );
    opts.onRound?.(round, count, wait);
    await sleep(wait, signal).catch(() => {});
  }
  return state.finishSession(sessionId, signal.aborted ? 'interrupted' : 'completed');
}
