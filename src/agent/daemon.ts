import type { Stats } from 'node:fs';
import { lstat, readdir, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import picomatch from 'picomatch';
import type { Logger } from 'pino';
import { GatewayError } from '../client/errors.js';
import { GatewayClient, type Transport } from '../client/gateway.js';
import { nodeTransport } from '../client/node-transport.js';
import { VERSION } from '../version.js';
import type { AgentConfig, Watch } from './config.js';
import { Ledger, type QueueRow, utcDay } from './ledger.js';
import { type AgentUploadOutcome, gatewayTarget, matchesRemoteChecksum, nextDelay, scanFiles, uploadOne } from './transfer.js';
import { inotifyWatchCount, isWatchLimitError, TreeWatcher } from './watcher.js';

/** Files between claim and upload (waiting out their debounce, or stable and waiting for a slot): bounds memory. */
const MAX_STAGED = 10_000;
/** Hinted paths not yet looked at; past this the hints are dropped and a rescan covers them. */
const MAX_HINTS = 100_000;
const HINT_BATCH = 2_000;
const SCAN_BATCH = 500;
/**
 * Folders that had events are listed again once the events have been quiet this
 * long: the watcher library can lose a few events of a burst (seen: 1-7 of 5,000
 * files written at once into ten folders, never reported), and a sibling's event
 * is the hint that a folder changed. At most once per TOUCHED_MIN_INTERVAL_MS per
 * folder, and not for folders larger than TOUCHED_MAX_ENTRIES (the periodic
 * rescan covers those).
 */
const TOUCHED_QUIET_MS = 2_000;
const TOUCHED_MIN_INTERVAL_MS = 30_000;
const TOUCHED_MAX_ENTRIES = 20_000;
/** SIGTERM: in-flight uploads get this long to finish before they are aborted (a resumable one keeps its acknowledged chunks). */
const STOP_GRACE_MS = 2_500;
const DEFAULT_CONCURRENCY = 4;

export type Phase = 'starting' | 'scanning' | 'draining' | 'watching' | 'stopping' | 'stopped';

interface Staged {
  row: QueueRow;
  st: Stats;
}

interface InFlight {
  path: string;
  remote: string;
  size: number;
  startedAt: number;
  bytesSent: number;
  abort: AbortController;
  done: Promise<void>;
}

/** What `s3up agent status` shows of the running daemon (the rest it reads from the ledger). */
export interface AgentSnapshot {
  pid: number;
  version: string;
  host: string;
  phase: Phase;
  started_at: string;
  gateway: { state: 'ok' | 'backoff'; consecutive_failures: number; retry_at: string | null; last_error: string | null };
  in_flight: Array<{ path: string; remote_path: string; size: number; bytes_sent: number; started_at: string }>;
  stabilizing: number;
  waiting_for_slot: number;
  hints_pending: number;
  concurrency: number;
  watches: Array<{ local_path: string; folders: number }>;
  inotify_watches: number | null;
  last_rescan_at: string | null;
  warnings: string[];
}

const sameFile = (a: { size: number; mtimeMs: number }, b: { size: number; mtimeMs: number }) => a.size === b.size && a.mtimeMs === b.mtimeMs;
const errCode = (err: unknown) => (err as NodeJS.ErrnoException)?.code;

/** A glob without "/" (`*.tmp`) matches a name at any depth; one with "/" matches the path from the watch root. */
export function ignoreGlobs(globs: readonly string[]): string[] {
  return globs.flatMap((g) => (g.includes('/') ? [g] : [`**/${g}`, `**/${g}/**`]));
}

/**
 * The watching daemon of spec 002: watcher hints -> ledger (durable queue) ->
 * stability check -> the shared transfer core -> ledger. See docs/agent.md.
 */
export class Agent {
  readonly ledger: Ledger;
  readonly client: GatewayClient;
  private readonly target: ReturnType<typeof gatewayTarget>;
  phase: Phase = 'starting';
  private readonly startedAt = Date.now();
  private readonly watchers = new Map<Watch, TreeWatcher>();
  private readonly ignored: (rel: string) => boolean;
  private readonly excludeGlobs: string[];
  private processing = false;
  private readonly hints = new Set<string>();
  private hintTimer: NodeJS.Timeout | undefined;
  private readonly touched = new Set<string>();
  private readonly touchedListedAt = new Map<string, number>();
  private touchedTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly stabilizing = new Map<string, NodeJS.Timeout | undefined>();
  private readonly ready: Staged[] = [];
  private readonly inFlight = new Map<string, InFlight>();
  private pumpTimer: NodeJS.Timeout | undefined;
  private pumpAt = Number.POSITIVE_INFINITY;
  private gatewayFailures = 0;
  private pausedUntil = 0;
  private lastGatewayError: string | null = null;
  private concurrency: number;
  private chunkSize: number | undefined;
  private maxFileSize: number | undefined;
  private rescanning: Promise<void> | undefined;
  private startupScan: Promise<void> | undefined;
  private rescanAgain = false;
  private lastRescanAt: number | null = null;
  private readonly warnings: string[] = [];
  private readonly warned = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private reportsOffered = true;
  private drainedLogged = false;
  private readonly dbFiles: Set<string>;
  private inotifyWatches: number | null = null;
  /** GET /config answered (or is not offered); until then it is asked again when the gateway answers. */
  private gatewayConfigRead = false;

  constructor(
    readonly config: AgentConfig,
    readonly log: Logger,
    opts: { transport?: Transport } = {},
  ) {
    this.ledger = new Ledger(config.databasePath);
    this.client = new GatewayClient({
      baseUrl: config.serverUrl,
      apiKey: config.apiKey,
      userAgent: `s3up-agent/${VERSION}`,
      // Quick retries inside one request; the agent's own backoff (below) takes over after them.
      retry: { attempts: config.retryAttempts, baseDelayMs: 250, maxDelayMs: Math.max(250, Math.min(config.retryDelayMs, 5_000)) },
      transport: opts.transport ?? nodeTransport(),
    });
    this.target = gatewayTarget(this.client);
    this.concurrency = config.concurrency ?? DEFAULT_CONCURRENCY;
    this.chunkSize = config.chunkSize;
    const globs = ignoreGlobs(config.ignore);
    this.excludeGlobs = globs;
    const m = globs.length > 0 ? picomatch(globs, { dot: true }) : () => false;
    this.ignored = (rel) => m(rel);
    const db = config.databasePath;
    this.dbFiles = new Set([db, `${db}-wal`, `${db}-shm`, `${db}-journal`]);
  }

  // ---------------------------------------------------------------- startup

  /** Spec 002's startup order: watcher (events only queued), scan, drain, normal mode. */
  async start(): Promise<void> {
    this.ledger.releaseClaims();
    this.log.info(
      { version: VERSION, server: this.config.serverUrl, database: this.config.databasePath, watches: this.config.watches.map((w) => w.localPath) },
      'agent starting',
    );
    void this.readGatewayConfig();
    for (const w of this.config.watches) {
      const tw = new TreeWatcher(
        w.localPath,
        {
          onPaths: (paths) => this.hint(paths),
          onError: (err) => this.watchError(w, err),
        },
        w.recursive,
      );
      try {
        await tw.start();
      } catch (err) {
        this.watchError(w, err as Error);
      }
      this.watchers.set(w, tw);
      if (this.stopRequested()) return;
    }
    this.log.info({ watches: this.watchers.size }, 'watching (events are queued until the scan is done)');
    this.phase = 'scanning';
    this.writeState();
    this.startupScan = this.scanAll('startup');
    await this.startupScan;
    if (this.stopRequested()) return;
    this.phase = 'draining';
    this.processing = true;
    this.timers.push(setInterval(() => this.writeState(), 1000));
    this.timers.push(setInterval(() => this.requestRescan('periodic'), this.config.rescanIntervalMs));
    this.timers.push(
      setInterval(() => {
        if (!this.gatewayConfigRead) void this.readGatewayConfig();
        void this.report();
      }, this.config.reportIntervalMs),
    );
    for (const t of this.timers) t.unref();
    this.pump();
  }

  private async readGatewayConfig(): Promise<void> {
    try {
      const res = await this.client.request('GET', '/config', { retry: false });
      const body = (await res.json()) as { upload?: { chunk_size_bytes?: number; concurrency?: number; max_file_size_bytes?: number } };
      const u = body.upload ?? {};
      if (this.config.concurrency === undefined && typeof u.concurrency === 'number' && u.concurrency >= 1) this.concurrency = Math.min(64, u.concurrency);
      if (this.config.chunkSize === undefined && typeof u.chunk_size_bytes === 'number' && u.chunk_size_bytes > 0) this.chunkSize = u.chunk_size_bytes;
      if (typeof u.max_file_size_bytes === 'number') this.maxFileSize = u.max_file_size_bytes;
      this.gatewayConfigRead = true;
      this.log.info(
        { concurrency: this.concurrency, chunk_size: this.chunkSize ?? null, max_file_size: this.maxFileSize ?? null },
        'settings from the gateway',
      );
    } catch (err) {
      // An older gateway without GET /config (not asked again), or one that is down
      // (asked again when it answers): local settings apply meanwhile.
      if (err instanceof GatewayError && (err.status === 404 || err.status === 405)) this.gatewayConfigRead = true;
      this.log.info({ err: describe(err) }, 'no settings from the gateway (GET /config); using client.yaml');
    }
  }

  // ---------------------------------------------------------------- hints and decisions

  private watchFor(abs: string): Watch | undefined {
    for (const w of this.config.watches) if (abs === w.localPath || abs.startsWith(`${w.localPath}/`)) return w;
    return undefined;
  }

  private relOf(w: Watch, abs: string): string {
    return path.relative(w.localPath, abs).split(path.sep).join('/');
  }

  private hint(paths: string[]): void {
    for (const p of paths) {
      this.hints.add(p);
      this.touched.add(path.dirname(p));
    }
    if (paths.length > 0) this.scheduleTouched(TOUCHED_QUIET_MS);
    if (this.hints.size > MAX_HINTS) {
      this.hints.clear();
      this.warnOnce('hints', `more than ${MAX_HINTS} changes arrived faster than they could be looked at; dropped them and rescanning`);
      this.requestRescan('hint overflow');
      return;
    }
    this.hintTimer ??= setTimeout(() => {
      this.hintTimer = undefined;
      this.flushHints().catch((err) => {
        if (this.stopRequested()) return;
        this.log.error({ err: describe(err) }, 'could not look at changed paths; rescanning');
        this.requestRescan('hint failure');
      });
    }, 50);
  }

  private async flushHints(): Promise<void> {
    if (this.flushing) return this.flushing;
    this.flushing = (async () => {
      while (this.hints.size > 0 && this.phase !== 'stopping' && this.phase !== 'stopped') {
        const batch: string[] = [];
        for (const p of this.hints) {
          batch.push(p);
          this.hints.delete(p);
          if (batch.length >= HINT_BATCH) break;
        }
        await this.look(batch);
      }
    })().finally(() => {
      this.flushing = undefined;
      // Hints that arrived after the loop's last look, while this flush was ending, found it
      // still running and were left to it: schedule them, or they wait for the next change.
      if (this.hints.size > 0 && !this.stopRequested()) this.hint([]);
    });
    return this.flushing;
  }

  private scheduleTouched(ms: number): void {
    if (this.touchedTimer) clearTimeout(this.touchedTimer);
    this.touchedTimer = setTimeout(() => {
      this.touchedTimer = undefined;
      this.listTouched().catch((err) => {
        if (!this.stopRequested()) this.log.warn({ err: describe(err) }, 'could not list changed folders again');
      });
    }, ms);
    this.touchedTimer.unref();
  }

  /** List the folders that had events again, once they are quiet, and look at their files. */
  private async listTouched(): Promise<void> {
    const now = Date.now();
    let later = false;
    for (const dir of [...this.touched]) {
      if (this.stopRequested()) return;
      const last = this.touchedListedAt.get(dir);
      if (last !== undefined && now - last < TOUCHED_MIN_INTERVAL_MS) {
        later = true;
        continue;
      }
      this.touched.delete(dir);
      this.touchedListedAt.set(dir, now);
      let names: string[];
      try {
        const entries = await readdir(dir, { withFileTypes: true });
        if (entries.length > TOUCHED_MAX_ENTRIES) continue;
        names = entries.filter((e) => e.isFile()).map((e) => path.join(dir, e.name));
      } catch {
        continue; // gone
      }
      for (let i = 0; i < names.length; i += HINT_BATCH) await this.look(names.slice(i, i + HINT_BATCH));
    }
    for (const [dir, at] of this.touchedListedAt) if (now - at >= TOUCHED_MIN_INTERVAL_MS) this.touchedListedAt.delete(dir);
    if (later && !this.stopRequested()) this.scheduleTouched(TOUCHED_MIN_INTERVAL_MS);
  }

  /** Look at hinted paths on disk and decide each against the ledger. */
  private async look(paths: string[]): Promise<void> {
    const looked = await Promise.all(
      paths.map(async (p) => {
        try {
          return { p, st: await lstat(p) };
        } catch (err) {
          return { p, st: undefined, code: errCode(err) };
        }
      }),
    );
    const folders: Array<{ w: Watch; p: string }> = [];
    this.ledger.transaction(() => {
      for (const { p, st } of looked) {
        const w = this.watchFor(p);
        if (!w || this.dbFiles.has(p)) continue;
        const rel = this.relOf(w, p);
        if (rel === '' || this.ignored(rel)) continue;
        if (!w.recursive && rel.includes('/')) continue;
        if (!st) {
          // Gone (deleted, or renamed away): nothing remote is ever deleted; a pending upload of it is dropped.
          const q = this.ledger.queued(p);
          if (q && q.claimed === 0) this.ledger.drop(p);
          this.watchers.get(w)?.forget(p);
          continue;
        }
        if (st.isDirectory()) folders.push({ w, p });
        else if (st.isFile()) this.decide(w, p, rel, st.size, st.mtimeMs, false);
      }
    });
    for (const f of folders) await this.newFolder(f.w, f.p);
    if (looked.length > 0) this.pump();
  }

  /**
   * The decision of spec 002, on scan and on event: not in the ledger -> upload;
   * size or mtime differ -> upload again; otherwise skip. `baseline`: the first scan
   * with upload_existing false records the file without uploading it.
   */
  private decide(w: Watch, abs: string, rel: string, size: number, mtimeMs: number, baseline: boolean): void {
    const f = this.ledger.file(abs);
    const q = this.ledger.queued(abs);
    if (f && f.file_size === size && f.mtime_ms === mtimeMs) {
      // Uploaded and unchanged. In delete mode a local copy still here awaits its verified delete.
      if (this.config.afterUpload === 'delete' && !q) this.ledger.enqueue(abs, f.remote_path, 'verify_delete');
      return;
    }
    if (q) {
      if (q.status === 'pending') return;
      // Parked or skipped: only a changed file is tried again.
      if (q.seen_size === size && q.seen_mtime_ms === mtimeMs) return;
    } else {
      const b = this.ledger.baseline(abs);
      if (b && b.file_size === size && b.mtime_ms === mtimeMs) return;
      if (baseline) {
        this.ledger.recordBaseline(abs, size, mtimeMs);
        return;
      }
    }
    this.ledger.enqueue(abs, `${w.remotePrefix}${rel}`, 'upload');
  }

  /**
   * A new (or moved-in) folder: its files may predate the watch on it, and its
   * subfolders have no watch yet. Watch it and every folder under it first, then
   * crawl it, so a file written after the crawl raises an event.
   */
  private async newFolder(w: Watch, dir: string): Promise<void> {
    if (!w.recursive) return;
    await this.watchers.get(w)?.watchNewFolder(dir);
    await this.scanTree(w, dir, false);
  }

  private async scanTree(w: Watch, root: string, baseline: boolean): Promise<{ files: number }> {
    let batch: Array<{ abs: string; rel: string; size: number; mtimeMs: number }> = [];
    let files = 0;
    const flush = () => {
      const b = batch;
      batch = [];
      this.ledger.transaction(() => {
        for (const f of b) this.decide(w, f.abs, f.rel, f.size, f.mtimeMs, baseline);
      });
    };
    const prefix = root === w.localPath ? '' : `${this.relOf(w, root)}/`;
    for await (const found of scanFiles(root, {
      exclude: this.excludeGlobs,
      onError: (p, err) => this.log.debug({ path: p, code: err.code }, 'unreadable during scan'),
    })) {
      if (this.stopRequested()) break;
      for (const f of found) {
        const rel = `${prefix}${f.relPath}`;
        if (this.dbFiles.has(f.absPath) || this.ignored(rel)) continue;
        if (!w.recursive && rel.includes('/')) continue;
        batch.push({ abs: f.absPath, rel, size: f.size, mtimeMs: f.mtimeMs });
        files++;
      }
      if (batch.length >= SCAN_BATCH) {
        flush();
        this.pump();
        // Let uploads and events run between batches of a large tree.
        await new Promise<void>((r) => setImmediate(r));
      }
    }
    flush();
    return { files };
  }

  private async scanAll(why: string): Promise<void> {
    const t0 = Date.now();
    for (const w of this.config.watches) {
      if (this.stopRequested()) return;
      const key = `scanned:${w.localPath}`;
      const first = this.ledger.meta(key) === undefined;
      const baseline = first && !this.config.uploadExisting;
      const { files } = await this.scanTree(w, w.localPath, baseline);
      if (this.stopRequested()) return;
      if (first) this.ledger.setMeta(key, new Date().toISOString());
      this.log.info({ watch: w.localPath, files, why, first_scan: first, recorded_without_upload: baseline }, 'scan done');
    }
    this.lastRescanAt = Date.now();
    this.log.info({ ms: Date.now() - t0, queued: this.ledger.pendingCount() }, 'scan of all watches done');
    void this.checkWatchCount();
  }

  private requestRescan(why: string): void {
    if (this.phase === 'stopping' || this.phase === 'stopped') return;
    if (this.rescanning) {
      this.rescanAgain = true;
      return;
    }
    this.rescanning = (async () => {
      do {
        this.rescanAgain = false;
        for (const [w, tw] of this.watchers) {
          try {
            await tw.regenerate();
          } catch (err) {
            this.watchError(w, err as Error);
          }
        }
        await this.scanAll(why);
        this.pump();
      } while (this.rescanAgain && this.phase !== 'stopping');
    })()
      .catch((err) => this.log.error({ err: describe(err) }, 'rescan failed'))
      .finally(() => {
        this.rescanning = undefined;
      });
  }

  private watchError(w: Watch, err: Error): void {
    const limit = isWatchLimitError(err);
    this.warnOnce(
      limit ? 'inotify-limit' : `watch-error:${w.localPath}`,
      limit
        ? `cannot watch every folder of ${w.localPath}: the inotify limit is exhausted (${err.message}); raise fs.inotify.max_user_watches / max_user_instances (docs/agent.md). Rescans keep finding files meanwhile`
        : `watcher error on ${w.localPath}: ${err.message}; rescanning`,
    );
    // The startup scan, or the rescan under way (whose watch renewal met this), covers it;
    // asking again from inside a rescan would loop while the limit stays exhausted.
    if (this.phase === 'starting' || this.rescanning) return;
    this.requestRescan(limit ? 'inotify limit' : 'watcher error');
  }

  /** After each scan: compare the watches held with the kernel's limit (a limit reached by other processes shows only here). */
  private async checkWatchCount(): Promise<void> {
    const held = await inotifyWatchCount();
    this.inotifyWatches = held ?? null;
    if (held === undefined) return;
    const { readFile } = await import('node:fs/promises');
    const max = Number((await readFile('/proc/sys/fs/inotify/max_user_watches', 'utf8').catch(() => '')).trim());
    if (Number.isFinite(max) && max > 0 && held >= max * 0.95) {
      this.warnOnce(
        'inotify-limit',
        `this agent holds ${held} inotify watches of the user's limit ${max}: folders beyond it are not watched (only rescans find their files); raise fs.inotify.max_user_watches`,
      );
    }
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.warnings.push(`${new Date().toISOString()} ${message}`);
    this.log.error({ warning: key }, message);
  }

  // ---------------------------------------------------------------- the queue

  private pump(): void {
    if (!this.processing) return;
    const now = Date.now();
    // Stage: claim due entries and let them wait out their debounce side by side.
    if (now >= this.pausedUntil) {
      let room = MAX_STAGED - this.stabilizing.size - this.ready.length;
      while (room > 0) {
        const rows = this.ledger.claim(Math.min(room, 500), now);
        if (rows.length === 0) break;
        room -= rows.length;
        for (const row of rows) this.stage(row);
      }
    }
    // Upload: as many as the concurrency allows; a single probe while the gateway is failing.
    const slots = this.gatewayFailures > 0 ? 1 : this.concurrency;
    while (this.inFlight.size < slots && this.ready.length > 0 && now >= this.pausedUntil) {
      const item = this.ready.shift() as Staged;
      this.startWork(item);
    }
    // Wake up for the next due entry, or at the end of a pause.
    let wake = Number.POSITIVE_INFINITY;
    if (now < this.pausedUntil) wake = this.pausedUntil;
    else {
      const due = this.ledger.nextDue();
      if (due !== undefined && due > now) wake = due;
    }
    this.schedulePump(wake);
    if (this.phase === 'draining' && this.isIdle()) {
      this.phase = 'watching';
      if (!this.drainedLogged) {
        this.drainedLogged = true;
        this.log.info({ ms: Date.now() - this.startedAt }, 'initial queue drained; watching');
        void this.report();
      }
    }
  }

  private stopRequested(): boolean {
    return this.phase === 'stopping' || this.phase === 'stopped';
  }

  private isIdle(): boolean {
    return this.stabilizing.size === 0 && this.ready.length === 0 && this.inFlight.size === 0 && this.ledger.nextDue() === undefined;
  }

  private schedulePump(at: number): void {
    if (!Number.isFinite(at) || at >= this.pumpAt) return;
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    this.pumpAt = at;
    this.pumpTimer = setTimeout(
      () => {
        this.pumpTimer = undefined;
        this.pumpAt = Number.POSITIVE_INFINITY;
        this.pump();
      },
      Math.max(0, at - Date.now()),
    );
  }

  /** Full-jitter exponential backoff from retry_delay_seconds up to max_retry_delay_seconds; a Retry-After is honoured. */
  private backoff(attempt: number, retryAfterMs?: number): number {
    return nextDelay(
      {
        attempts: Number.POSITIVE_INFINITY,
        baseDelayMs: Math.max(100, this.config.retryDelayMs),
        maxDelayMs: this.config.maxRetryDelayMs,
        maxRetryAfterMs: Math.max(this.config.maxRetryDelayMs, 60_000),
      },
      attempt,
      retryAfterMs,
    );
  }

  /** Stability check of spec 002: stat, wait debounce_seconds, stat again. */
  private stage(row: QueueRow): void {
    this.stabilizing.set(row.local_path, undefined);
    const finish = () => {
      this.stabilizing.delete(row.local_path);
      this.pump();
    };
    void (async () => {
      if (row.reason === 'verify_delete') {
        const st = await lstat(row.local_path).catch(() => undefined);
        if (this.stopRequested()) return;
        if (!st) this.ledger.drop(row.local_path);
        else this.ready.push({ row, st });
        return finish();
      }
      const st1 = await lstat(row.local_path).catch(() => undefined);
      if (this.stopRequested()) return;
      if (!st1?.isFile()) {
        this.ledger.drop(row.local_path);
        return finish();
      }
      const f = this.ledger.file(row.local_path);
      if (f && f.file_size === st1.size && f.mtime_ms === st1.mtimeMs) {
        this.ledger.drop(row.local_path); // uploaded already, unchanged
        return finish();
      }
      if (this.maxFileSize !== undefined && st1.size > this.maxFileSize) {
        this.park(row, st1, { status: 413, code: 'PAYLOAD_TOO_LARGE', message: `${st1.size} bytes is over this client's limit of ${this.maxFileSize} bytes` });
        return finish();
      }
      await new Promise<void>((resolve) => this.stabilizing.set(row.local_path, setTimeout(resolve, this.config.debounceMs)));
      if (!this.stabilizing.has(row.local_path) || this.phase === 'stopping') return; // stopped meanwhile
      const st2 = await lstat(row.local_path).catch(() => undefined);
      if (this.stopRequested()) return;
      if (!st2?.isFile()) {
        this.ledger.drop(row.local_path);
        return finish();
      }
      if (sameFile(st1, st2)) {
        this.ready.push({ row, st: st2 });
      } else this.unstable(row, st2);
      finish();
    })().catch((err) => {
      if (this.stopRequested()) return; // the claims are released at stop
      this.log.error({ err: describe(err), path: row.local_path }, 'stability check failed');
      this.ledger.requeue(row.local_path, { next: Date.now() + this.backoff(1), failure: true, error: describe(err), code: 'LOCAL_ERROR' });
      finish();
    });
  }

  private unstable(row: QueueRow, st: Stats): void {
    const r = this.ledger.requeue(row.local_path, { next: Date.now(), attempt: true });
    if (r && r.attempts >= this.config.maxStabilityAttempts) {
      this.ledger.setAside(row.local_path, 'unstable', {
        code: 'NEVER_STABLE',
        error: `still changing after ${r.attempts} stability checks (${this.config.debounceMs / 1000} s apart); skipped until it changes again`,
        size: st.size,
        mtimeMs: st.mtimeMs,
      });
      this.log.warn({ path: row.local_path, attempts: r.attempts }, 'file never became stable; skipped (stability.max_attempts)');
    }
  }

  private park(row: QueueRow, st: { size: number; mtimeMs: number } | undefined, e: { status: number; code: string; message: string }): void {
    this.ledger.setAside(row.local_path, 'parked', {
      code: e.code,
      error: `${e.status ? `${e.status} ` : ''}${e.code}: ${e.message}`,
      size: st?.size ?? null,
      mtimeMs: st?.mtimeMs ?? null,
    });
    this.ledger.countFailure();
    this.log.warn({ path: row.local_path, remote: row.remote_path, status: e.status, code: e.code, reason: e.message }, 'parked: permanent refusal');
  }

  private startWork(item: Staged): void {
    const abort = new AbortController();
    const entry: InFlight = {
      path: item.row.local_path,
      remote: item.row.remote_path,
      size: item.st.size,
      startedAt: Date.now(),
      bytesSent: 0,
      abort,
      done: Promise.resolve(),
    };
    this.inFlight.set(item.row.local_path, entry);
    entry.done = (item.row.reason === 'verify_delete' ? this.verifyDelete(item, entry) : this.upload(item, entry))
      .catch((err) => {
        if (this.phase === 'stopped') return; // outlived the stop's grace: the ledger is closed, the claim was released
        this.log.error({ err: describe(err), path: item.row.local_path }, 'unexpected failure; retrying later');
        this.ledger.requeue(item.row.local_path, { next: Date.now() + this.backoff(2), failure: true, error: describe(err), code: 'INTERNAL' });
      })
      .finally(() => {
        this.inFlight.delete(item.row.local_path);
        if (this.phase !== 'stopped') this.pump();
      });
  }

  private async upload(item: Staged, entry: InFlight): Promise<void> {
    const { row } = item;
    const now0 = await lstat(row.local_path).catch(() => undefined);
    if (!now0?.isFile()) {
      this.ledger.drop(row.local_path);
      return;
    }
    if (!sameFile(now0, item.st)) {
      // Changed while it waited for a slot: it is not stable after all.
      this.unstable(row, now0);
      return;
    }
    this.ledger.setPhase(row.local_path, 'uploading');
    const resumeUploadId = row.upload_id && row.upload_size === now0.size && row.upload_mtime_ms === now0.mtimeMs ? row.upload_id : undefined;
    const t0 = Date.now();
    const out: AgentUploadOutcome = await uploadOne(this.target, {
      localPath: row.local_path,
      remotePath: row.remote_path,
      resumableThreshold: this.config.resumableThreshold,
      chunkSize: this.chunkSize,
      partConcurrency: Math.max(1, Math.min(4, this.concurrency)),
      resumeUploadId,
      onUploadId: (id) => this.ledger.setUploadId(row.local_path, id, now0.size, now0.mtimeMs),
      onProgress: (pr) => {
        entry.bytesSent = pr.bytesSent;
      },
      signal: entry.abort.signal,
    });
    const ms = Date.now() - t0;
    const r = out.result;
    const line = {
      path: row.local_path,
      remote: row.remote_path,
      size: out.size,
      duration_ms: ms,
      mode: out.size >= this.config.resumableThreshold ? 'resumable' : 'plain',
      ...(r?.chunksSent !== undefined ? { chunks_sent: r.chunksSent, chunks_skipped: r.chunksSkipped ?? 0 } : {}),
      ...(resumeUploadId !== undefined ? { resume_upload_id: resumeUploadId } : {}),
    };
    if (out.verdict === 'ok') {
      this.gatewayRecovered();
      // The core stats the file again after the upload (spec 002's post-upload verification).
      const changed = out.changedDuringUpload || out.mtimeMs !== item.st.mtimeMs || out.size !== item.st.size;
      if (changed) {
        // Post-upload verification (spec 002): modified during the upload, so upload it again.
        this.ledger.setUploadId(row.local_path, null, null, null);
        this.ledger.requeue(row.local_path, { next: Date.now() });
        this.log.info({ ...line, outcome: 'changed_during_upload' }, 'upload');
        return;
      }
      this.ledger.recordUploaded(
        {
          localPath: row.local_path,
          remotePath: row.remote_path,
          size: out.size,
          mtimeMs: item.st.mtimeMs,
          sha256: out.sha256 ?? null,
          checksum: out.checksum ?? null,
          checksumAlgorithm: out.checksumAlgorithm ?? null,
          chunkSize: out.chunkSize ?? null,
        },
        this.config.afterUpload === 'delete' ? 'verify_delete' : undefined,
      );
      this.log.info({ ...line, outcome: 'uploaded', checksum: out.checksum }, 'upload');
      return;
    }
    const e = out.error ?? { status: 0, code: 'UNKNOWN', message: 'upload failed' };
    if (entry.abort.signal.aborted) {
      // Stopping: a checkpoint, not a failure (a resumable upload keeps its id and acknowledged chunks).
      this.ledger.requeue(row.local_path, { next: Date.now() });
      this.log.info({ ...line, outcome: 'interrupted' }, 'upload');
      return;
    }
    if (e.code === 'LOCAL_ENOENT' || e.code === 'LOCAL_NOT_A_FILE') {
      this.ledger.drop(row.local_path); // gone (deleted or renamed away) before it could be read
      this.log.info({ ...line, outcome: 'gone', code: e.code }, 'upload');
      return;
    }
    if (out.verdict === 'permanent') {
      this.ledger.setUploadId(row.local_path, null, null, null);
      this.park(row, now0, e);
      this.log.info({ ...line, outcome: 'parked', status: e.status, code: e.code }, 'upload');
      return;
    }
    if (out.changedDuringUpload || e.code === 'LOCAL_CHANGED') {
      // Written to while it was read: not stable after all.
      this.unstable(row, now0);
      this.log.info({ ...line, outcome: 'changed_during_upload', code: e.code }, 'upload');
      return;
    }
    this.ledger.countFailure();
    if (e.code.startsWith('LOCAL_')) {
      // The file could not be read (an I/O error): this file waits, the others go on;
      // after upload.retry_attempts such failures it is parked with the reason.
      const f = this.ledger.requeue(row.local_path, { next: Date.now() + this.backoff(row.failures), failure: true, error: e.message, code: e.code });
      if (f && f.failures >= this.config.retryAttempts) this.park(row, now0, e);
      this.log.info({ ...line, outcome: 'retry_later', code: e.code }, 'upload');
      return;
    }
    // The gateway (or the way to it) failed: back of the queue, and the whole agent backs off,
    // one probe at a time, until the gateway answers again. Never given up.
    this.ledger.requeue(row.local_path, { next: Date.now(), failure: true, error: e.message, code: e.code });
    this.gatewayFailed(e);
    this.log.info({ ...line, outcome: 'retry_later', status: e.status, code: e.code, retry_in_ms: this.pausedUntil - Date.now() }, 'upload');
  }

  private gatewayFailed(e: { status: number; code: string; message: string; retryAfterMs?: number }): void {
    this.gatewayFailures++;
    const delay = this.backoff(this.gatewayFailures - 1, e.retryAfterMs);
    this.pausedUntil = Math.max(this.pausedUntil, Date.now() + delay);
    this.lastGatewayError = `${e.status ? `${e.status} ` : ''}${e.code}: ${e.message}`;
    if (this.gatewayFailures === 1) {
      this.log.warn({ status: e.status, code: e.code, reason: e.message }, 'gateway unavailable: queueing and probing with backoff');
    }
    this.writeState();
  }

  private gatewayRecovered(): void {
    if (this.gatewayFailures === 0) return;
    this.log.info({ failures: this.gatewayFailures }, 'gateway answers again: draining the queue');
    this.gatewayFailures = 0;
    this.pausedUntil = 0;
    this.lastGatewayError = null;
    this.ledger.retryNow();
    if (!this.gatewayConfigRead) void this.readGatewayConfig();
  }

  /** after_upload: delete, only once the gateway confirms the same size and content checksum. */
  private async verifyDelete(item: Staged, _entry: InFlight): Promise<void> {
    const { row } = item;
    this.ledger.setPhase(row.local_path, 'verifying');
    const st = await lstat(row.local_path).catch(() => undefined);
    if (!st?.isFile()) {
      this.ledger.drop(row.local_path);
      return;
    }
    const f = this.ledger.file(row.local_path);
    if (!f || f.file_size !== st.size || f.mtime_ms !== st.mtimeMs) {
      this.ledger.enqueue(row.local_path, row.remote_path, 'upload'); // changed since its upload: upload first
      return;
    }
    let remote: Awaited<ReturnType<GatewayClient['exists']>> & { checksum?: string | null; checksum_algorithm?: string | null; chunk_size?: number | null };
    try {
      remote = await this.client.exists(f.remote_path);
    } catch (err) {
      const ge = err instanceof GatewayError ? err : undefined;
      if (ge?.permanent) {
        this.park(row, st, { status: ge.status, code: ge.errorCode, message: ge.message });
        return;
      }
      this.ledger.requeue(row.local_path, { next: Date.now(), failure: true, error: describe(err), code: ge?.errorCode ?? 'NETWORK_ERROR' });
      this.gatewayFailed({ status: ge?.status ?? 0, code: ge?.errorCode ?? 'NETWORK_ERROR', message: describe(err), retryAfterMs: ge?.retryAfterMs });
      return;
    }
    this.gatewayRecovered();
    if (!remote.exists) {
      this.log.warn({ path: row.local_path, remote: f.remote_path }, 'the gateway no longer holds this file: uploading it again before any delete');
      this.ledger.enqueue(row.local_path, row.remote_path, 'upload');
      return;
    }
    const checksum = remote.checksum ?? null;
    const ok =
      remote.size === st.size &&
      checksum !== null &&
      typeof remote.checksum_algorithm === 'string' &&
      (await matchesRemoteChecksum(row.local_path, { checksum, checksum_algorithm: remote.checksum_algorithm, chunk_size: remote.chunk_size ?? null }));
    if (!ok) {
      this.park(row, st, {
        status: 0,
        code: 'DELETE_NOT_VERIFIED',
        message: `kept: the gateway reports size ${remote.size} and checksum ${checksum ?? 'none'} (${remote.checksum_algorithm ?? '-'}), which do not match the local file`,
      });
      return;
    }
    const last = await lstat(row.local_path).catch(() => undefined);
    if (!last || !sameFile(last, st)) {
      if (last) this.ledger.enqueue(row.local_path, row.remote_path, 'upload');
      else this.ledger.drop(row.local_path);
      return;
    }
    await unlink(row.local_path);
    this.ledger.transaction(() => {
      this.ledger.markLocalDeleted(row.local_path);
      this.ledger.drop(row.local_path);
    });
    this.log.info(
      { path: row.local_path, remote: f.remote_path, size: st.size, checksum, checksum_algorithm: remote.checksum_algorithm },
      'local copy deleted (verified)',
    );
  }

  // ---------------------------------------------------------------- reports and state

  private async report(): Promise<void> {
    try {
      await this.sendReports();
    } catch (err) {
      if (!this.stopRequested()) this.log.error({ err: describe(err) }, 'daily report failed');
    }
  }

  private async sendReports(): Promise<void> {
    if (!this.config.reportsEnabled || !this.reportsOffered) return;
    const now = Date.now();
    const today = utcDay(now);
    const yesterday = utcDay(now - 86_400_000);
    const y = this.ledger.daily(yesterday);
    const dates = y && (y.reported_at === null || y.reported_at < Date.parse(`${today}T00:00:00Z`)) ? [yesterday, today] : [today];
    for (const date of dates) {
      const d = this.ledger.daily(date) ?? { files_uploaded: 0, bytes: 0, failures: 0 };
      try {
        await this.client.request('POST', '/reports', {
          retry: false,
          headers: { 'content-type': 'application/json' },
          body: () =>
            JSON.stringify({
              date,
              files_uploaded: d.files_uploaded,
              bytes: d.bytes,
              failures: d.failures,
              queue_depth: this.ledger.pendingCount(),
              agent_version: VERSION,
              host: os.hostname().slice(0, 255),
            }),
        });
        this.ledger.markReported(date, Date.now());
        this.log.info({ date, files_uploaded: d.files_uploaded, bytes: d.bytes }, 'daily report sent');
      } catch (err) {
        if (err instanceof GatewayError && (err.status === 404 || err.status === 405)) {
          this.reportsOffered = false;
          this.log.info('the gateway takes no reports (POST /reports); not sending them');
          return;
        }
        this.log.info({ err: describe(err) }, 'daily report not sent; next interval tries again');
        return;
      }
    }
  }

  snapshot(): AgentSnapshot {
    return {
      pid: process.pid,
      version: VERSION,
      host: os.hostname(),
      phase: this.phase,
      started_at: new Date(this.startedAt).toISOString(),
      gateway: {
        state: this.gatewayFailures > 0 ? 'backoff' : 'ok',
        consecutive_failures: this.gatewayFailures,
        retry_at: this.pausedUntil > Date.now() ? new Date(this.pausedUntil).toISOString() : null,
        last_error: this.lastGatewayError,
      },
      in_flight: [...this.inFlight.values()].map((f) => ({
        path: f.path,
        remote_path: f.remote,
        size: f.size,
        bytes_sent: f.bytesSent,
        started_at: new Date(f.startedAt).toISOString(),
      })),
      stabilizing: this.stabilizing.size,
      waiting_for_slot: this.ready.length,
      hints_pending: this.hints.size,
      concurrency: this.concurrency,
      watches: [...this.watchers.entries()].map(([w, tw]) => ({ local_path: w.localPath, folders: tw.watched })),
      inotify_watches: this.inotifyWatches,
      last_rescan_at: this.lastRescanAt ? new Date(this.lastRescanAt).toISOString() : null,
      warnings: this.warnings.slice(-20),
    };
  }

  private writeState(): void {
    try {
      this.ledger.writeState(this.snapshot());
    } catch {
      // closed during shutdown
    }
  }

  // ---------------------------------------------------------------- shutdown

  /** SIGTERM: stop taking work, let in-flight uploads finish briefly, checkpoint the rest, close. */
  async stop(): Promise<void> {
    if (this.phase === 'stopping' || this.phase === 'stopped') return;
    this.phase = 'stopping';
    this.processing = false;
    this.log.info({ in_flight: this.inFlight.size }, 'stopping');
    for (const t of this.timers) clearInterval(t);
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    if (this.hintTimer) clearTimeout(this.hintTimer);
    if (this.touchedTimer) clearTimeout(this.touchedTimer);
    for (const tw of this.watchers.values()) await tw.close();
    for (const t of this.stabilizing.values()) if (t) clearTimeout(t);
    this.stabilizing.clear();
    this.ready.length = 0;
    const all = Promise.all([...this.inFlight.values()].map((f) => f.done));
    const grace = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), STOP_GRACE_MS).unref());
    if ((await Promise.race([all.then(() => 'done' as const), grace])) === 'timeout') {
      for (const f of this.inFlight.values()) f.abort.abort(new Error('the agent is stopping'));
      await Promise.race([all, new Promise((r) => setTimeout(r, 2_000).unref())]);
    }
    await this.flushing?.catch(() => {});
    await this.rescanning?.catch(() => {});
    await this.startupScan?.catch(() => {});
    this.ledger.releaseClaims();
    this.phase = 'stopped';
    this.writeState();
    this.ledger.close();
    this.log.info('stopped');
  }
}

function describe(err: unknown): string {
  if (err instanceof GatewayError) return `${err.status} ${err.errorCode}: ${err.message}`;
  return (err as Error)?.message ?? String(err);
}
