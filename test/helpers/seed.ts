import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database, RunKind, RunStatus } from '../../src/db/schema.js';

const KINDS: RunKind[] = ['multipart', 'raw', 'chunked', 'tus', 'direct'];
const ERRORS = ['CHECKSUM_MISMATCH', 'PAYLOAD_TOO_LARGE', 'UPLOAD_ABORTED'];
const HOUR = 3600 * 1000;

export interface SeedOptions {
  clients: string[];
  count: number;
  /** Newest record's age and the spacing between records. */
  now?: number;
  spacingMs?: number;
  /** Records of these clients are all older than this many hours (a client that went silent). */
  silent?: Record<string, number>;
  pathPrefix?: string;
}

/**
 * Upload records written straight into the database (as a gateway would have
 * written them), varied in client, status, kind, error and age, newest first
 * every `spacingMs`. Every fifth is failed with one of three error codes.
 */
export async function seedRuns(db: Kysely<Database>, opts: SeedOptions): Promise<void> {
  const now = opts.now ?? Date.now();
  const spacing = opts.spacingMs ?? 20 * 60 * 1000;
  const rows = [];
  for (let i = 0; i < opts.count; i++) {
    const client = opts.clients[i % opts.clients.length] as string;
    const silentFor = opts.silent?.[client];
    const created = now - (i + 1) * spacing - (silentFor ? silentFor * HOUR : 0);
    const failed = i % 5 === 4;
    const status: RunStatus = failed ? 'failed' : 'succeeded';
    const size = 1000 + i * 17;
    rows.push({
      run_id: randomUUID(),
      client,
      kind: KINDS[i % KINDS.length] as RunKind,
      status,
      path: `seed/file-${i}.bin`,
      object_key: `${opts.pathPrefix ?? 'backups/'}${client}/seed/file-${i}.bin`,
      size,
      sha256: failed ? null : 'a'.repeat(64),
      content_type: 'application/octet-stream',
      filename: `file-${i}.bin`,
      error_code: failed ? (ERRORS[i % ERRORS.length] as string) : null,
      error_message: failed ? 'seeded failure' : null,
      created_at: created,
      updated_at: created + 150,
      started_at: created,
      finished_at: created + 150,
      total_ms: 150,
      bytes_per_sec: Math.round((size * 1000) / 150),
      deleted_at: null,
      owner: null,
      expires_at: null,
    });
  }
  for (let i = 0; i < rows.length; i += 100)
    await db
      .insertInto('runs')
      .values(rows.slice(i, i + 100))
      .execute();
}
