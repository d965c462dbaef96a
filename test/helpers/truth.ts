import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { type Dirent, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { openDatabase } from '../../src/db/index.js';
import { FS_TMP_DIR } from '../../src/storage/fs.js';
import { composite } from './resumable.js';
import type { S3rverProcess } from './s3rver.js';

/**
 * "Every record tells the truth", checked after a fault (a crash, an outage, a
 * full disk, a race) straight from the store and the database, not through the
 * gateway:
 * - every stored object has an `objects` row whose size and checksum (plain
 *   SHA-256, or the composite over its chunk size) match the stored bytes, and
 *   whose run is `succeeded` for that key;
 * - every `objects` row names an object the store holds;
 * - no run is left open (`queued` or `processing`), unless the caller lists it,
 *   and no resumable upload is left `completing`.
 * And "no byte acknowledged is lost": every upload answered 2xx is stored
 * byte-exact (or was replaced by a later acknowledged upload of the same key).
 */

export type Store = { kind: 'fs'; root: string } | { kind: 's3'; s3rver: S3rverProcess };

export interface StoredObject {
  key: string;
  bytes: Buffer;
}

export interface ObjectRow {
  object_key: string;
  size: number;
  sha256: string | null;
  checksum: string;
  checksum_algorithm: string;
  chunk_size: number | null;
  run_id: string;
}

export interface RunRow {
  run_id: string;
  status: string;
  object_key: string;
  sha256: string | null;
  size: number | null;
  error_code: string | null;
}

export interface Truth {
  objects: StoredObject[];
  rows: ObjectRow[];
  runs: RunRow[];
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Every object the store holds (the gateway's own staging folder excluded). */
export async function storedObjects(store: Store): Promise<StoredObject[]> {
  if (store.kind === 'fs') {
    let entries: Dirent[];
    try {
      entries = readdirSync(store.root, { withFileTypes: true, recursive: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: StoredObject[] = [];
    for (const e of entries) {
      if (!e.isFile()) continue;
      const full = path.join(e.parentPath, e.name);
      const key = path.relative(store.root, full).split(path.sep).join('/');
      if (key === FS_TMP_DIR || key.startsWith(`${FS_TMP_DIR}/`)) continue;
      out.push({ key, bytes: readFileSync(full) });
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }
  const s = store.s3rver;
  const client = new S3Client({
    endpoint: s.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
  });
  try {
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: s.bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue;
        const got = await client.send(new GetObjectCommand({ Bucket: s.bucket, Key: o.Key }));
        out.push({ key: o.Key, bytes: Buffer.from((await got.Body?.transformToByteArray()) ?? []) });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => a.key.localeCompare(b.key));
  } finally {
    client.destroy();
  }
}

/** The `objects` rows and every run, read from the database the gateway used. */
export async function records(
  databaseUrl: string,
): Promise<{ rows: ObjectRow[]; runs: RunRow[]; completing: Array<{ session_id: string; object_key: string; run_id: string }> }> {
  const db = await openDatabase(databaseUrl);
  try {
    const rows = await db.db.selectFrom('objects').select(['object_key', 'size', 'sha256', 'checksum', 'checksum_algorithm', 'chunk_size', 'run_id']).execute();
    const runs = await db.db.selectFrom('runs').select(['run_id', 'status', 'object_key', 'sha256', 'size', 'error_code']).execute();
    const completing = await db.db.selectFrom('upload_sessions').select(['session_id', 'object_key', 'run_id']).where('status', '=', 'completing').execute();
    return {
      rows: rows.map((r) => ({ ...r, size: Number(r.size), chunk_size: r.chunk_size === null ? null : Number(r.chunk_size) })),
      runs: runs.map((r) => ({ ...r, size: r.size === null ? null : Number(r.size) })),
      completing,
    };
  } finally {
    await db.close();
  }
}

export interface TruthOptions {
  /** Runs allowed to be open still (e.g. a session the test left unfinished on purpose). */
  openRunsAllowed?: string[];
}

/**
 * Assert that every record tells the truth (see above); returns what it read
 * so a test can check more (the acknowledged uploads).
 */
export async function assertRecordsTellTheTruth(store: Store, databaseUrl: string, opts: TruthOptions = {}): Promise<Truth> {
  const objects = await storedObjects(store);
  const { rows, runs, completing } = await records(databaseUrl);
  const rowByKey = new Map(rows.map((r) => [r.object_key, r]));
  const runById = new Map(runs.map((r) => [r.run_id, r]));
  const problems: string[] = [];
  for (const o of objects) {
    const row = rowByKey.get(o.key);
    if (!row) {
      problems.push(`${o.key}: stored (${o.bytes.length} bytes) without an objects row`);
      continue;
    }
    if (row.size !== o.bytes.length) problems.push(`${o.key}: row says ${row.size} bytes, store holds ${o.bytes.length}`);
    const actual = row.checksum_algorithm === 'sha256' ? sha256(o.bytes) : row.chunk_size ? composite(o.bytes, row.chunk_size) : '(no chunk size)';
    if (row.checksum !== actual) problems.push(`${o.key}: row checksum ${row.checksum} (${row.checksum_algorithm}) is not the stored bytes' ${actual}`);
    if (row.sha256 !== null && row.sha256 !== sha256(o.bytes)) problems.push(`${o.key}: row sha256 ${row.sha256} is not the stored bytes'`);
    const run = runById.get(row.run_id);
    if (!run) problems.push(`${o.key}: its row names run ${row.run_id}, which does not exist`);
    else {
      if (run.status !== 'succeeded') problems.push(`${o.key}: its run ${run.run_id} is ${run.status}, not succeeded`);
      if (run.object_key !== o.key) problems.push(`${o.key}: its run ${run.run_id} is for ${run.object_key}`);
    }
  }
  const storedKeys = new Set(objects.map((o) => o.key));
  for (const r of rows) if (!storedKeys.has(r.object_key)) problems.push(`${r.object_key}: an objects row for an object the store does not hold`);
  const allowed = new Set(opts.openRunsAllowed ?? []);
  for (const r of runs) {
    if ((r.status === 'processing' || r.status === 'queued') && !allowed.has(r.run_id)) problems.push(`run ${r.run_id} (${r.object_key}) is still ${r.status}`);
  }
  // A completion is a moment, not a state: no session stays claimed once its gateway is gone.
  for (const c of completing) if (!allowed.has(c.run_id)) problems.push(`session ${c.session_id} (${c.object_key}) is still completing`);
  assert.deepEqual(problems, [], `records that do not tell the truth:\n${problems.join('\n')}`);
  return { objects, rows, runs };
}

/** An upload the gateway answered 2xx: its key and the bytes sent. */
export interface Acknowledged {
  key: string;
  bytes: Buffer;
}

/**
 * No acknowledged byte is lost: the store holds, for each acknowledged key, the
 * bytes of one of the uploads acknowledged for it (concurrent uploads of one
 * key may each be acknowledged; the last to publish wins).
 */
export function assertNothingAcknowledgedLost(truth: Truth, acknowledged: Acknowledged[]): void {
  const stored = new Map(truth.objects.map((o) => [o.key, sha256(o.bytes)]));
  const byKey = new Map<string, Set<string>>();
  for (const a of acknowledged) {
    const set = byKey.get(a.key) ?? new Set<string>();
    set.add(sha256(a.bytes));
    byKey.set(a.key, set);
  }
  const lost: string[] = [];
  for (const [key, shas] of byKey) {
    const got = stored.get(key);
    if (got === undefined) lost.push(`${key}: acknowledged but not stored`);
    else if (!shas.has(got)) lost.push(`${key}: stored bytes are none of the acknowledged uploads`);
  }
  assert.deepEqual(lost, [], `acknowledged uploads lost:\n${lost.join('\n')}`);
}
