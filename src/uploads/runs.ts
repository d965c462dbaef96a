import { randomUUID } from 'node:crypto';
import { type Kysely, type Selectable, sql, type Updateable } from 'kysely';
import type { WriteBatcher } from '../db/index.js';
import type { Database, ObjectsTable, RunKind, RunStatus, RunsTable } from '../db/schema.js';
import { AppError, ErrorCode } from '../errors.js';

export type Run = Selectable<RunsTable>;
export type StoredObject = Selectable<ObjectsTable>;

/**
 * The lifecycle of spec 001, in one place:
 * queued -> processing -> succeeded|failed, or queued -> succeeded|failed.
 * Terminal states never move.
 */
export const TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  queued: ['processing', 'succeeded', 'failed'],
  processing: ['succeeded', 'failed'],
  succeeded: [],
  failed: [],
};

export function isTerminal(status: RunStatus): boolean {
  return TRANSITIONS[status].length === 0;
}

/** The statuses a run may be in to move to `to`. */
function sourcesOf(to: RunStatus): RunStatus[] {
  return (Object.keys(TRANSITIONS) as RunStatus[]).filter((from) => TRANSITIONS[from].includes(to));
}

export interface NewRun {
  client: string;
  kind: RunKind;
  path: string;
  objectKey: string;
  /** `processing` for uploads whose bytes start flowing at once. */
  status: 'queued' | 'processing';
  size?: number | null;
  contentType?: string | null;
  filename?: string | null;
  /** The gateway instance streaming the bytes (processing runs of plain uploads). */
  owner?: string | null;
  /** When an open run lapses (direct uploads: the URL's expiry). */
  expiresAt?: number | null;
}

export interface Finish {
  size?: number | null;
  sha256?: string | null;
  errorCode?: string | null;
  errorMessage?: string | null;
  /** Moving to processing: the gateway instance that streams the bytes. */
  owner?: string | null;
  /**
   * On success: the object row of the key, written in the same transaction as
   * the run (the caller holds the key's publish lock, so rows follow publishes).
   */
  object?: Omit<StoredObject, 'run_id' | 'uploaded_at'> | undefined;
}

/** A new run's row: the one place that lists a run's columns. */
function newRow(input: NewRun, now: number): Run {
  return {
    run_id: randomUUID(),
    client: input.client,
    kind: input.kind,
    status: input.status,
    path: input.path,
    object_key: input.objectKey,
    size: input.size ?? null,
    sha256: null,
    content_type: input.contentType ?? null,
    filename: input.filename ?? null,
    error_code: null,
    error_message: null,
    created_at: now,
    updated_at: now,
    started_at: input.status === 'processing' ? now : null,
    finished_at: null,
    total_ms: null,
    bytes_per_sec: null,
    deleted_at: null,
    owner: input.owner ?? null,
    expires_at: input.expiresAt ?? null,
  };
}

export class RunStore {
  /** `batcher` (SQLite): group-commit the writes of concurrent uploads. */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly batcher?: WriteBatcher,
  ) {}

  private write<T>(fn: (db: Kysely<Database>) => Promise<T>): Promise<T> {
    return this.batcher ? this.batcher.run(fn) : fn(this.db);
  }

  async create(input: NewRun, now = Date.now()): Promise<Run> {
    const run = newRow(input, now);
    await this.write((db) => db.insertInto('runs').values(run).execute());
    return run;
  }

  /** Record an attempt refused at admission: a run that is failed from the start. */
  async refused(input: Omit<NewRun, 'status'>, error: { code: string; message: string }, now = Date.now()): Promise<Run> {
    const run: Run = {
      ...newRow({ ...input, status: 'queued', owner: null, expiresAt: null }, now),
      status: 'failed',
      error_code: error.code,
      error_message: error.message,
      finished_at: now,
      total_ms: 0,
    };
    await this.write((db) => db.insertInto('runs').values(run).execute());
    return run;
  }

  /** Name the gateway now working on an open run (a resumable upload's completion): should it die, the sweeper knows whose it was. */
  async own(runId: string, owner: string | null, now = Date.now()): Promise<void> {
    if (owner === null) return;
    await this.write((db) => db.updateTable('runs').set({ owner, updated_at: now }).where('run_id', '=', runId).where('status', '=', 'processing').execute());
  }

  async get(runId: string): Promise<Run | undefined> {
    return this.db.selectFrom('runs').selectAll().where('run_id', '=', runId).executeTakeFirst();
  }

  /**
   * Move a run to `to`, atomically and in one statement: the UPDATE applies only
   * while the run is in a state that may move there (so concurrent writers
   * cannot break the rules), and computes the timings from the row itself.
   * Only when nothing was updated is the run read, to say why.
   */
  async transition(runId: string, to: RunStatus, finish: Finish = {}, now = Date.now()): Promise<Run> {
    const patch: Updateable<RunsTable> = { status: to, updated_at: now };
    if (finish.size !== undefined) patch.size = finish.size;
    if (finish.sha256 !== undefined) patch.sha256 = finish.sha256;
    if (finish.errorCode !== undefined) patch.error_code = finish.errorCode;
    if (finish.errorMessage !== undefined) patch.error_message = finish.errorMessage;
    if (finish.owner !== undefined) patch.owner = finish.owner;
    if (isTerminal(to)) patch.finished_at = now;
    const startedAt = sql<number>`coalesce(started_at, created_at)`;
    const totalMs = sql<number>`(${now} - ${startedAt})`;
    const size = finish.size === undefined || finish.size === null ? sql<number | null>`size` : sql<number>`${finish.size}`;
    const from = sourcesOf(to);
    const object = to === 'succeeded' ? finish.object : undefined;
    const update = (db: Kysely<Database>) =>
      db
        .updateTable('runs')
        .set(patch)
        .$if(to === 'processing', (q) => q.set({ started_at: sql<number>`coalesce(started_at, ${now})` }))
        .$if(isTerminal(to), (q) => q.set({ total_ms: sql<number>`case when ${totalMs} > 0 then ${totalMs} else 0 end` }))
        .$if(to === 'succeeded', (q) =>
          q.set({ bytes_per_sec: sql<number | null>`case when ${totalMs} > 0 then round(${size} * 1000.0 / ${totalMs}) else null end` }),
        )
        .where('run_id', '=', runId)
        .where('status', 'in', from)
        .returningAll()
        .executeTakeFirst();
    const updated =
      from.length === 0
        ? undefined
        : await this.write(async (db) => {
            if (!object) return update(db);
            const publish = async (trx: Kysely<Database>) => {
              const run = await update(trx);
              if (run) {
                const row: StoredObject = { ...object, run_id: runId, uploaded_at: now };
                await trx
                  .insertInto('objects')
                  .values(row)
                  .onConflict((oc) => oc.column('object_key').doUpdateSet({ ...row }))
                  .execute();
              }
              return run;
            };
            return db.isTransaction ? publish(db) : db.transaction().execute(publish);
          });
    if (updated) return updated;
    const current = await this.get(runId);
    if (!current) throw new AppError(ErrorCode.NOT_FOUND, `run ${runId} not found`);
    throw new AppError(ErrorCode.INVALID_TRANSITION, `run ${runId} cannot move from ${current.status} to ${to}`, {
      run_id: runId,
      from: current.status,
      to,
    });
  }

  /** Delete the records `runIds` that are terminal (prune); returns how many went. */
  async deleteTerminal(runIds: readonly string[]): Promise<number> {
    if (runIds.length === 0) return 0;
    const res = await this.write((db) =>
      db
        .deleteFrom('runs')
        .where('run_id', 'in', [...runIds])
        .where('status', 'in', ['succeeded', 'failed'])
        .executeTakeFirst(),
    );
    return Number(res.numDeletedRows);
  }

  /** The latest successful upload at a key that still exists in the records. */
  async latestAt(objectKey: string): Promise<Run | undefined> {
    return this.db
      .selectFrom('runs')
      .selectAll()
      .where('object_key', '=', objectKey)
      .where('status', '=', 'succeeded')
      .where('deleted_at', 'is', null)
      .orderBy('finished_at', 'desc')
      .limit(1)
      .executeTakeFirst();
  }

  /**
   * Open runs nobody may finish: plain uploads whose gateway stopped
   * heartbeating before `aliveSince` (killed, crashed), or owned by `own`
   * (the caller's gateway, which skips those its requests still hold), and
   * queued direct uploads whose URL lapsed before `now`.
   */
  async orphans(aliveSince: number, now: number, own: string | null = null, limit = 500): Promise<Run[]> {
    const streaming = await this.db
      .selectFrom('runs')
      .selectAll()
      .where('status', '=', 'processing')
      .where('kind', 'in', ['raw', 'multipart', 'direct'])
      .where((eb) =>
        eb.or([
          eb('owner', 'is', null),
          ...(own === null ? [] : [eb('owner', '=', own)]),
          eb.not(eb.exists(eb.selectFrom('heartbeat').select('id').whereRef('heartbeat.id', '=', 'runs.owner').where('heartbeat.at', '>=', aliveSince))),
        ]),
      )
      .where('updated_at', '<', aliveSince)
      .limit(limit)
      .execute();
    const lapsed = await this.db
      .selectFrom('runs')
      .selectAll()
      .where('status', '=', 'queued')
      .where('expires_at', 'is not', null)
      .where('expires_at', '<', now)
      .limit(limit)
      .execute();
    return [...streaming, ...lapsed];
  }

  /** The gateway instances that heartbeated since `since`. */
  async aliveGateways(since: number): Promise<Set<string>> {
    const rows = await this.db.selectFrom('heartbeat').select('id').where('at', '>=', since).execute();
    return new Set(rows.map((r) => r.id));
  }

  /** What is stored at a key now: the object row its latest publish wrote. */
  async objectAt(objectKey: string): Promise<StoredObject | undefined> {
    return this.db.selectFrom('objects').selectAll().where('object_key', '=', objectKey).executeTakeFirst();
  }

  /**
   * Note that the objects at `objectKeys` were deleted (by the client or the
   * sweeper): their object rows go, their runs get `deleted_at`.
   */
  async markDeleted(objectKeys: string | readonly string[], now = Date.now()): Promise<number> {
    const keys = typeof objectKeys === 'string' ? [objectKeys] : [...objectKeys];
    let n = 0;
    for (let i = 0; i < keys.length; i += 500) {
      const slice = keys.slice(i, i + 500);
      n += await this.write(async (db) => {
        const run = async (trx: Kysely<Database>) => {
          await trx.deleteFrom('objects').where('object_key', 'in', slice).execute();
          const res = await trx
            .updateTable('runs')
            .set({ deleted_at: now, updated_at: now })
            .where('object_key', 'in', slice)
            .where('status', '=', 'succeeded')
            .where('deleted_at', 'is', null)
            .executeTakeFirst();
          return Number(res.numUpdatedRows);
        };
        return db.isTransaction ? run(db) : db.transaction().execute(run);
      });
    }
    return n;
  }
}
