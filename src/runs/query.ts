import { type Kysely, type SelectQueryBuilder, sql } from 'kysely';
import { type Database, RUN_KINDS, RUN_STATUSES, type RunKind, type RunStatus } from '../db/schema.js';
import { AppError, ErrorCode } from '../errors.js';
import { type Run, RunStore } from '../uploads/runs.js';
import { MAX_EPOCH_MS } from '../validate.js';
import type { RunJson } from './json.js';

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 200;
const TERMINAL: RunStatus[] = ['succeeded', 'failed'];
const DAY_MS = 24 * 3600 * 1000;
const HOUR_MS = 3600 * 1000;

/** True when a later successful upload replaced the object this (outer `runs`) record describes. */
const SUPERSEDED = sql<boolean>`exists (select 1 from runs n where n.object_key = runs.object_key and n.status = 'succeeded' and (n.finished_at > runs.finished_at or (n.finished_at = runs.finished_at and n.run_id > runs.run_id)))`;

export type { RunJson } from './json.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function runToJson(r: Run): RunJson {
  return {
    run_id: r.run_id,
    status: r.status,
    kind: r.kind,
    client: r.client,
    path: r.path,
    s3_key: r.object_key,
    size: r.size,
    sha256: r.sha256,
    created_at: new Date(r.created_at).toISOString(),
    updated_at: new Date(r.updated_at).toISOString(),
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
    deleted_at: iso(r.deleted_at),
    timings: { total_ms: r.total_ms, bytes_per_sec: r.bytes_per_sec },
    inputs: { filename: r.filename, content_type: r.content_type },
    error_code: r.error_code,
    error_message: r.error_message,
  };
}

export interface Cursor {
  createdAt: number;
  runId: string;
}

/** Opaque cursor: base64url of `created_ts:run_id` (spec 001). */
export function encodeCursor(c: Cursor): string {
  return Buffer.from(`${c.createdAt}:${c.runId}`, 'utf8').toString('base64url');
}

export function decodeCursor(value: string): Cursor {
  const text = /^[A-Za-z0-9_-]{1,200}$/.test(value) ? Buffer.from(value, 'base64url').toString('utf8') : '';
  const m = /^(\d{1,16}):([0-9A-Za-z-]{1,64})$/.exec(text);
  if (!m) throw new AppError(ErrorCode.INVALID_REQUEST, 'invalid cursor: pass next_cursor from a previous response unchanged');
  return { createdAt: Number(m[1]), runId: m[2] as string };
}

export interface ListFilter {
  /** Only this client's runs (a client's own view, or the admin's `client` filter). */
  client?: string | undefined;
  status?: RunStatus | undefined;
  kind?: RunKind | undefined;
  /** Inclusive bounds on created_at, epoch ms. */
  createdFrom?: number | undefined;
  createdTo?: number | undefined;
  limit?: number | undefined;
  cursor?: Cursor | undefined;
}

export interface ListResult {
  runs: Run[];
  next: Cursor | null;
}

/** Parse a time filter: ISO 8601 or epoch milliseconds. */
export function parseTime(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const ms = /^\d{1,16}$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms) || Math.abs(ms) > MAX_EPOCH_MS)
    throw new AppError(ErrorCode.INVALID_REQUEST, `${name} must be an ISO 8601 time or epoch milliseconds`);
  return ms;
}

export function parseStatus(value: string | undefined): RunStatus | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(RUN_STATUSES as readonly string[]).includes(value)) {
    throw new AppError(ErrorCode.INVALID_REQUEST, `status must be one of ${RUN_STATUSES.join('|')}`);
  }
  return value as RunStatus;
}

export function parseKind(value: string | undefined): RunKind | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(RUN_KINDS as readonly string[]).includes(value)) throw new AppError(ErrorCode.INVALID_REQUEST, `kind must be one of ${RUN_KINDS.join('|')}`);
  return value as RunKind;
}

export function parseLimit(value: string | number | undefined): number {
  if (value === undefined || value === '') return DEFAULT_LIMIT;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new AppError(ErrorCode.INVALID_REQUEST, `limit must be an integer from 1 to ${MAX_LIMIT}`);
  return Math.min(n, MAX_LIMIT);
}

export interface PruneOptions {
  maxRuns?: number | undefined;
  maxAgeDays?: number | undefined;
  /** Only this client's records. */
  client?: string | undefined;
  /** Count what would be deleted; delete nothing (`deleted` is that count). */
  dryRun?: boolean | undefined;
  now?: number;
}

export interface PruneResult {
  scanned: number;
  deleted: number;
  kept: number;
}

export interface ClientActivity {
  client: string;
  last_upload_at: number | null;
  uploads_today: number;
  bytes_today: number;
  failures_today: number;
  uploads_7d: number;
  bytes_7d: number;
  failures_7d: number;
  in_progress: number;
}

export interface StorageUsed {
  client: string;
  objects: number;
  bytes: number;
}

export interface Overview {
  /** Start of the first hour counted, epoch ms. */
  from: number;
  /** Per hour with any terminal upload: succeeded and failed uploads, bytes of the succeeded ones. */
  series: Array<{ t: number; succeeded: number; failed: number; bytes: number }>;
  /** Failed uploads per error code, most frequent first. */
  errors: Array<{ error_code: string; count: number }>;
}

/** Start of the UTC day containing `ms`. */
export function utcDayStart(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/**
 * Read side of the upload records: listing with keyset pagination, scoped
 * lookups, pruning and per-client aggregates. Writes (create/transition) stay
 * in RunStore, which owns the lifecycle rules.
 */
/** Reads of the upload records; its one write (prune) goes through RunStore, the only writer of runs. */
export class RunQuery {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly store: RunStore = new RunStore(db),
  ) {}

  private filtered<O>(q: SelectQueryBuilder<Database, 'runs', O>, f: ListFilter): SelectQueryBuilder<Database, 'runs', O> {
    let out = q;
    if (f.client !== undefined) out = out.where('client', '=', f.client);
    if (f.status !== undefined) out = out.where('status', '=', f.status);
    if (f.kind !== undefined) out = out.where('kind', '=', f.kind);
    if (f.createdFrom !== undefined) out = out.where('created_at', '>=', f.createdFrom);
    if (f.createdTo !== undefined) out = out.where('created_at', '<=', f.createdTo);
    return out;
  }

  /**
   * Newest first by (created_at desc, run_id desc). The cursor is the last row
   * of the previous page, so rows inserted meanwhile (always newer, or tied and
   * placed by run_id) never shift the pages of the rows that were there.
   */
  async list(f: ListFilter): Promise<ListResult> {
    const limit = Math.min(Math.max(1, f.limit ?? DEFAULT_LIMIT), MAX_LIMIT);
    let q = this.filtered(this.db.selectFrom('runs').selectAll(), f);
    const c = f.cursor;
    if (c) {
      // The redundant `created_at <=` bound lets both databases start an index range scan at the cursor
      // (an OR alone makes PostgreSQL scan from the newest row and filter).
      q = q
        .where('created_at', '<=', c.createdAt)
        .where((eb) => eb.or([eb('created_at', '<', c.createdAt), eb.and([eb('created_at', '=', c.createdAt), eb('run_id', '<', c.runId)])]));
    }
    const rows = await q
      .orderBy('created_at', 'desc')
      .orderBy('run_id', 'desc')
      .limit(limit + 1)
      .execute();
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { runs: page, next: rows.length > limit && last ? { createdAt: last.created_at, runId: last.run_id } : null };
  }

  /** A run visible to `client` (undefined: the admin sees every run). */
  async get(runId: string, client?: string): Promise<Run | undefined> {
    let q = this.db.selectFrom('runs').selectAll().where('run_id', '=', runId);
    if (client !== undefined) q = q.where('client', '=', client);
    return q.executeTakeFirst();
  }

  /**
   * Delete terminal records beyond the `maxRuns` newest terminal ones and/or
   * older than `maxAgeDays`. Queued and processing runs are never touched, and
   * neither is the record of an object that is still stored (the latest
   * successful upload at a key that was not deleted): it is the gateway's index
   * of what is in the store (checksums, storage used). `scanned` counts every
   * record in scope, `kept` = scanned - deleted.
   */
  async prune(opts: PruneOptions): Promise<PruneResult> {
    const now = opts.now ?? Date.now();
    const scope = <O>(q: SelectQueryBuilder<Database, 'runs', O>) => (opts.client === undefined ? q : q.where('client', '=', opts.client));
    const counted = await scope(this.db.selectFrom('runs').select((eb) => eb.fn.countAll<number>().as('n'))).executeTakeFirstOrThrow();
    const scanned = Number(counted.n);
    if (opts.maxRuns === undefined && opts.maxAgeDays === undefined) return { scanned, deleted: 0, kept: scanned };

    // Both limits: a record goes when either says so.
    let boundary: Cursor | undefined;
    if (opts.maxRuns !== undefined) {
      const nth = await scope(this.db.selectFrom('runs').select(['created_at', 'run_id']).where('status', 'in', TERMINAL))
        .orderBy('created_at', 'desc')
        .orderBy('run_id', 'desc')
        .offset(opts.maxRuns)
        .limit(1)
        .executeTakeFirst();
      if (nth) boundary = { createdAt: nth.created_at, runId: nth.run_id };
    }
    const ageCutoff = opts.maxAgeDays === undefined ? undefined : now - opts.maxAgeDays * DAY_MS;
    if (boundary === undefined && ageCutoff === undefined) return { scanned, deleted: 0, kept: scanned };

    const candidates = () => {
      let q = this.db.selectFrom('runs').select('run_id').where('status', 'in', TERMINAL);
      if (opts.client !== undefined) q = q.where('client', '=', opts.client);
      return (
        q
          .where((eb) => {
            const reasons = [];
            if (boundary) {
              const b = boundary;
              // At or past the (maxRuns+1)-th newest terminal record.
              reasons.push(eb.or([eb('created_at', '<', b.createdAt), eb.and([eb('created_at', '=', b.createdAt), eb('run_id', '<=', b.runId)])]));
            }
            if (ageCutoff !== undefined) reasons.push(eb('created_at', '<', ageCutoff));
            return eb.or(reasons);
          })
          // Keep the record of a live object.
          .where((eb) => eb.or([eb('status', '!=', 'succeeded'), eb('deleted_at', 'is not', null), SUPERSEDED]))
          .limit(500)
      );
    };

    if (opts.dryRun) {
      const n = await this.db
        .selectFrom(candidates().clearLimit().as('c'))
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow();
      return { scanned, deleted: Number(n.n), kept: scanned - Number(n.n) };
    }
    let deleted = 0;
    for (;;) {
      const ids = (await candidates().execute()).map((r) => r.run_id);
      if (ids.length === 0) break;
      deleted += await this.store.deleteTerminal(ids);
      if (ids.length < 500) break;
    }
    return { scanned, deleted, kept: scanned - deleted };
  }

  /**
   * Uploads, bytes and failures per client since the start of today (UTC) and
   * over the last 7 days, from the hourly rollup (`run_stats`, kept by
   * triggers), so the cost does not grow with the number of records. The 7-day
   * window starts at the hour boundary before now - 7 days.
   */
  async activity(now = Date.now()): Promise<ClientActivity[]> {
    const today = utcDayStart(now);
    const weekAgo = Math.floor((now - 7 * DAY_MS) / HOUR_MS) * HOUR_MS;
    const [rows, open] = await Promise.all([
      this.db
        .selectFrom('run_stats')
        .select([
          'client',
          sql<number>`sum(case when status = 'succeeded' and bucket >= ${today} then uploads else 0 end)`.as('uploads_today'),
          sql<number>`sum(case when status = 'succeeded' and bucket >= ${today} then bytes else 0 end)`.as('bytes_today'),
          sql<number>`sum(case when status = 'failed' and bucket >= ${today} then uploads else 0 end)`.as('failures_today'),
          sql<number>`sum(case when status = 'succeeded' then uploads else 0 end)`.as('uploads_7d'),
          sql<number>`sum(case when status = 'succeeded' then bytes else 0 end)`.as('bytes_7d'),
          sql<number>`sum(case when status = 'failed' then uploads else 0 end)`.as('failures_7d'),
        ])
        .where('bucket', '>=', weekAgo)
        .groupBy('client')
        .execute(),
      this.inProgress(),
    ]);
    const out = new Map<string, ClientActivity>();
    const entry = (client: string): ClientActivity => {
      let a = out.get(client);
      if (!a) {
        a = { client, last_upload_at: null, uploads_today: 0, bytes_today: 0, failures_today: 0, uploads_7d: 0, bytes_7d: 0, failures_7d: 0, in_progress: 0 };
        out.set(client, a);
      }
      return a;
    };
    for (const r of rows) {
      Object.assign(entry(r.client), {
        uploads_today: Number(r.uploads_today),
        bytes_today: Number(r.bytes_today),
        failures_today: Number(r.failures_today),
        uploads_7d: Number(r.uploads_7d),
        bytes_7d: Number(r.bytes_7d),
        failures_7d: Number(r.failures_7d),
      });
    }
    for (const [client, n] of open) entry(client).in_progress = n;
    return [...out.values()];
  }

  /** Queued and processing records per client (the status index; few at any time). */
  async inProgress(): Promise<Map<string, number>> {
    const rows = await this.db
      .selectFrom('runs')
      .select((eb) => ['client', eb.fn.countAll<number>().as('n')])
      .where('status', 'in', ['queued', 'processing'])
      .groupBy('client')
      .execute();
    return new Map(rows.map((r) => [r.client, Number(r.n)]));
  }

  /** The newest record per client, whatever its age (for last_seen). */
  async lastUploadAt(client: string): Promise<number | null> {
    const row = await this.db
      .selectFrom('runs')
      .select('created_at')
      .where('client', '=', client)
      .orderBy('created_at', 'desc')
      .orderBy('run_id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row ? row.created_at : null;
  }

  /**
   * Storage used per client: the objects table (one row per stored key, so
   * overwrites count once), summed per client by triggers into
   * `client_storage`. One small read, never a listing of the store.
   */
  async storageUsed(): Promise<StorageUsed[]> {
    const rows = await this.db.selectFrom('client_storage').selectAll().where('objects', '>', 0).execute();
    return rows.map((r) => ({ client: r.client, objects: Number(r.objects), bytes: Number(r.bytes) }));
  }

  /**
   * The admin overview since `from` (rounded down to its hour) from the hourly
   * rollup: uploads, failures and bytes per hour, and failures per error code.
   */
  async overview(from: number, client?: string): Promise<Overview> {
    const since = Math.floor(from / HOUR_MS) * HOUR_MS;
    // One pass over the rollup rows of the window: per hour, status and error code.
    let q = this.db
      .selectFrom('run_stats')
      .select(['bucket', 'status', 'error_code', sql<number>`sum(uploads)`.as('n'), sql<number>`sum(bytes)`.as('b')])
      .where('bucket', '>=', since)
      .where('status', 'in', TERMINAL);
    if (client !== undefined) q = q.where('client', '=', client);
    const rows = await q.groupBy(['bucket', 'status', 'error_code']).execute();
    const hours = new Map<number, { t: number; succeeded: number; failed: number; bytes: number }>();
    const errors = new Map<string, number>();
    for (const r of rows) {
      const t = Number(r.bucket);
      let h = hours.get(t);
      if (!h) {
        h = { t, succeeded: 0, failed: 0, bytes: 0 };
        hours.set(t, h);
      }
      const n = Number(r.n);
      if (r.status === 'succeeded') {
        h.succeeded += n;
        h.bytes += Number(r.b);
      } else {
        h.failed += n;
        const code = r.error_code === '' ? 'UNKNOWN' : r.error_code;
        errors.set(code, (errors.get(code) ?? 0) + n);
      }
    }
    return {
      from: since,
      series: [...hours.values()].filter((h) => h.succeeded !== 0 || h.failed !== 0).sort((a, b) => a.t - b.t),
      errors: [...errors.entries()]
        .map(([error_code, count]) => ({ error_code, count }))
        .filter((e) => e.count > 0)
        .sort((a, b) => b.count - a.count || a.error_code.localeCompare(b.error_code)),
    };
  }

  /**
   * Object keys among `keys` the sweeper must leave alone: an upload to them is
   * queued or in progress, or one finished at/after `since` (the object was
   * rewritten after it was listed).
   */
  async protectedKeys(keys: string[], since: number): Promise<Set<string>> {
    const out = new Set<string>();
    for (let i = 0; i < keys.length; i += 500) {
      const batch = keys.slice(i, i + 500);
      const rows = await this.db
        .selectFrom('runs')
        .select('object_key')
        .distinct()
        .where('object_key', 'in', batch)
        .where((eb) => eb.or([eb('status', 'in', ['queued', 'processing']), eb.and([eb('status', '=', 'succeeded'), eb('finished_at', '>=', since)])]))
        .execute();
      for (const r of rows) out.add(r.object_key);
    }
    return out;
  }
}
