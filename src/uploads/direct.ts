import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely, Selectable } from 'kysely';
import type { ResolvedClient, ResolvedConfig } from '../config/load.js';
import type { Database, TelemetryEventsTable } from '../db/schema.js';
import { AppError, ErrorCode, isAppError } from '../errors.js';
import { clientPrefix } from './keys.js';
import { exceeds, limitOf, tooLarge } from './limits.js';
import type { UploadPipeline } from './pipeline.js';
import type { Run } from './runs.js';
import { checkScope } from './tokens.js';

/** S3 refuses presigned URLs valid for more than 7 days. */
export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
/** The extra fields of a telemetry event, as JSON, are kept up to this many bytes. */
export const MAX_TELEMETRY_EXTRAS = 4096;
const RUN_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export type TelemetryEvent = Selectable<TelemetryEventsTable>;

/** What a signed filesystem form key carries. */
interface KeyClaims {
  v: 1;
  /** client */
  c: string;
  /** client-relative path */
  p: string;
  /** run id */
  r: string;
  /** declared size, or null */
  s: number | null;
  /** expiry, ms since epoch */
  e: number;
}

export interface IssueRequest {
  runId?: unknown;
  path?: unknown;
  size?: unknown;
  contentType?: unknown;
}

export type Issued =
  | { kind: 's3'; method: 'PUT'; url: string; key: string; ttl: number; headers: Record<string, string>; expiresAt: string; run_id: string; path: string }
  | { kind: 's3'; method: 'POST'; url: string; key: string; ttl: number; fields: Record<string, string>; expiresAt: string; run_id: string; path: string }
  | { kind: 'fs'; formUrl: string; key: string; ttl: number; expiresAt: string; run_id: string; path: string; s3_key: string };

/** Load the form-key secret: configured, or generated once and kept (mode 0600) in `dir`. */
export async function loadSigningSecret(configured: string, dir: string): Promise<Buffer> {
  if (configured !== '') return Buffer.from(configured, 'utf8');
  const file = path.join(dir, 'direct-upload.key');
  try {
    const text = (await readFile(file, 'utf8')).trim();
    if (text.length >= 64) return Buffer.from(text, 'hex');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString('hex');
  try {
    const fh = await open(file, 'wx', 0o600);
    await fh.writeFile(`${secret}\n`);
    await fh.sync();
    await fh.close();
    return Buffer.from(secret, 'hex');
  } catch (err) {
    // Another gateway on the same root wrote it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return Buffer.from((await readFile(file, 'utf8')).trim(), 'hex');
    throw err;
  }
}

/**
 * The form-key secret of a configuration, loaded on first use: configured, or
 * on the filesystem generated once and kept under the storage root (so every
 * gateway on that root agrees), or on S3 random per process.
 */
export function signingSecret(config: ResolvedConfig): () => Promise<Buffer> {
  const u = config.raw.uploads;
  const storage = config.storage;
  let secret: Promise<Buffer> | undefined;
  return () => {
    secret ??=
      storage.backend === 'fs'
        ? loadSigningSecret(u.direct_signing_secret, path.join(storage.root, '.s3up-tmp', 'secrets'))
        : Promise.resolve(u.direct_signing_secret !== '' ? Buffer.from(u.direct_signing_secret) : randomBytes(32));
    return secret;
  };
}

/**
 * Direct uploads (spec 000): the gateway hands out a presigned PUT (S3, size
 * known), a presigned POST form whose policy bounds the length by the client's
 * limit (S3, size unknown) or a signed, expiring form key (filesystem), records a 'direct' run in 'queued',
 * and learns the outcome from the upload itself (filesystem form) or from the
 * client's upload_complete telemetry, which it checks with HEAD.
 */
export class DirectUploads {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly pipeline: UploadPipeline,
    private readonly secret: () => Promise<Buffer>,
    readonly ttlSeconds: number,
  ) {}

  sign(claims: KeyClaims, secret: Buffer): string {
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const mac = createHmac('sha256', secret).update(payload).digest('base64url');
    return `${payload}.${mac}`;
  }

  /** Verify a form key for `client`: signature, owner, expiry. */
  async verify(client: ResolvedClient, token: string, now = Date.now()): Promise<KeyClaims> {
    const secret = await this.secret();
    const [payload, mac] = token.split('.');
    if (!payload || !mac || token.length > 4096) throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'invalid upload key');
    const want = createHmac('sha256', secret).update(payload).digest();
    const got = Buffer.from(mac, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'invalid upload key');
    let claims: KeyClaims;
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as KeyClaims;
    } catch {
      throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'invalid upload key');
    }
    if (claims.v !== 1 || claims.c !== client.name) throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'this upload key was not issued to this client');
    if (now >= claims.e) throw new AppError(ErrorCode.UPLOAD_KEY_EXPIRED, `the upload key expired at ${new Date(claims.e).toISOString()}`);
    return claims;
  }

  /** TTL actually granted: the configured one, never beyond S3's 7 days. */
  effectiveTtl(): number {
    return Math.max(1, Math.min(this.ttlSeconds, MAX_PRESIGN_SECONDS));
  }

  async issue(client: ResolvedClient, req: IssueRequest, now = Date.now()): Promise<Issued> {
    let relPath: unknown = req.path;
    let contentType = typeof req.contentType === 'string' && req.contentType !== '' ? req.contentType : undefined;
    if (req.runId !== undefined) {
      if (typeof req.runId !== 'string' || !RUN_ID_RE.test(req.runId)) {
        throw new AppError(ErrorCode.INVALID_REQUEST, 'runId must be 1-128 letters, digits, ".", "_" or "-"');
      }
      relPath ??= `runs/${req.runId}.zip`;
      contentType ??= 'application/zip';
    }
    if (relPath === undefined) throw new AppError(ErrorCode.PATH_REQUIRED, 'send {runId} or {path, size, content_type}');
    contentType ??= 'application/octet-stream';
    const size = req.size === undefined || req.size === null ? undefined : Number(req.size);
    const admitted = await this.pipeline.admit(client, { kind: 'direct', path: relPath, size, contentType });
    const { path: rel, key } = admitted;
    contentType = admitted.contentType ?? 'application/octet-stream';
    const ttl = this.effectiveTtl();
    const expiresAt = now + ttl * 1000;
    const run = await this.pipeline.open(client, { ...admitted, contentType }, { status: 'queued', expiresAt, filename: rel.split('/').pop() ?? null, now });
    const presign = this.pipeline.storage.presign;
    if (this.pipeline.storage.kind === 's3' && presign) {
      const common = { kind: 's3', key, ttl, expiresAt: new Date(expiresAt).toISOString(), run_id: run.run_id, path: rel } as const;
      if (size !== undefined) {
        // The size is known: a PUT whose signature covers its length and type.
        const signed = await presign.presignPut(key, { size, contentType, expiresInSeconds: ttl });
        return { ...common, method: 'PUT', url: signed.url, headers: signed.headers };
      }
      // No size (spec 000 sends only runId): a POST form whose signed policy bounds the length by the client's limit.
      const form = await presign.presignPost(key, { maxSize: limitOf(client), contentType, expiresInSeconds: ttl });
      return { ...common, method: 'POST', url: form.url, fields: form.fields };
    }
    const token = this.sign({ v: 1, c: client.name, p: rel, r: run.run_id, s: size ?? null, e: expiresAt }, await this.secret());
    return { kind: 'fs', formUrl: '/runs/upload', key: token, ttl, expiresAt: new Date(expiresAt).toISOString(), run_id: run.run_id, path: rel, s3_key: key };
  }

  /** The queued run a form key stands for (single use: a run leaves 'queued' once). */
  async runForKey(client: ResolvedClient, token: string): Promise<{ claims: KeyClaims; run: Run }> {
    const claims = await this.verify(client, token);
    const run = await this.pipeline.runs.get(claims.r);
    if (!run || run.client !== client.name) throw new AppError(ErrorCode.INVALID_UPLOAD_KEY, 'invalid upload key');
    if (run.status !== 'queued')
      throw new AppError(ErrorCode.CONFLICT, `this upload key was already used (run ${run.run_id} is ${run.status})`, { run_id: run.run_id });
    return { claims, run };
  }

  /**
   * Store a telemetry event. For upload_complete, find the direct run behind
   * `key` (a form key, or the object key a presigned URL was issued for), HEAD
   * the object and settle the run: succeeded when the size matches, failed
   * (SIZE_MISMATCH, the object is removed; or NOT_FOUND) otherwise.
   */
  async telemetry(
    client: ResolvedClient,
    body: { event?: unknown; key?: unknown; size?: unknown; durationMs?: unknown; [k: string]: unknown },
    now = Date.now(),
  ): Promise<{ event_id: string; event: string; run_id: string | null; outcome: string | null; run_status: string | null }> {
    if (typeof body.event !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(body.event)) {
      throw new AppError(ErrorCode.INVALID_REQUEST, 'event must be 1-64 letters, digits, "_", ".", ":" or "-"');
    }
    const key = typeof body.key === 'string' && body.key !== '' ? body.key : null;
    const size = body.size === undefined || body.size === null ? null : Number(body.size);
    if (size !== null && (!Number.isSafeInteger(size) || size < 0)) throw new AppError(ErrorCode.INVALID_REQUEST, 'size must be a non-negative integer');
    const durationMs = body.durationMs === undefined || body.durationMs === null ? null : Number(body.durationMs);
    if (durationMs !== null && (!Number.isFinite(durationMs) || durationMs < 0))
      throw new AppError(ErrorCode.INVALID_REQUEST, 'durationMs must be a non-negative number');
    const { event: _e, key: _k, size: _s, durationMs: _d, ...rest } = body;
    const detail = Object.keys(rest).length > 0 ? JSON.stringify(rest) : null;
    // Stored whole or not at all: a cut JSON text could never be read back.
    if (detail !== null && Buffer.byteLength(detail) > MAX_TELEMETRY_EXTRAS) {
      throw new AppError(
        ErrorCode.INVALID_REQUEST,
        `the event's extra fields take ${Buffer.byteLength(detail)} bytes as JSON; at most ${MAX_TELEMETRY_EXTRAS} are kept`,
      );
    }

    let runId: string | null = null;
    let outcome: string | null = null;
    let runStatus: string | null = null;
    if (body.event === 'upload_complete') {
      if (key === null) throw new AppError(ErrorCode.INVALID_REQUEST, 'upload_complete needs the key the upload was issued');
      const prefix = clientPrefix(this.pipeline.pathPrefix, client.name);
      if (key.startsWith(prefix)) checkScope(client, key.slice(prefix.length));
      const run = await this.findDirectRun(client, key).catch((err: unknown) => {
        if (isAppError(err) && err.code === ErrorCode.NOT_FOUND && !(key.includes('.') && !key.includes('/'))) return undefined;
        throw err;
      });
      if (run) {
        runId = run.run_id;
        const settled = await this.settle(run, size, client);
        outcome = settled.outcome;
        runStatus = settled.run.status;
      } else {
        // An upload by another protocol (tus, from the browser uploader): the key (full, or the client's path) names a stored object.
        const objectKey = key.startsWith(prefix) ? key : this.pipeline.keyFor(client, key).key;
        const stored = await this.pipeline.runs.objectAt(objectKey);
        if (!stored) throw new AppError(ErrorCode.NOT_FOUND, 'no upload is stored at this key');
        runId = stored.run_id;
        outcome = size !== null && size !== stored.size ? 'size_mismatch' : 'verified';
        runStatus = 'succeeded';
      }
    }
    const event: TelemetryEvent = {
      event_id: randomUUID(),
      client: client.name,
      event: body.event,
      key: key === null ? null : key.slice(0, 2048),
      size,
      duration_ms: durationMs,
      run_id: runId,
      outcome,
      detail,
      created_at: now,
    };
    await this.db.insertInto('telemetry_events').values(event).execute();
    return { event_id: event.event_id, event: event.event, run_id: runId, outcome, run_status: runStatus };
  }

  private async findDirectRun(client: ResolvedClient, key: string): Promise<Run> {
    if (key.includes('.') && !key.includes('/')) {
      const claims = await this.verify(client, key, 0);
      const run = await this.pipeline.runs.get(claims.r);
      if (run && run.client === client.name) return run;
    }
    if (!key.startsWith(clientPrefix(this.pipeline.pathPrefix, client.name))) throw new AppError(ErrorCode.NOT_FOUND, 'no direct upload for this key');
    const run = await this.db
      .selectFrom('runs')
      .selectAll()
      .where('client', '=', client.name)
      .where('object_key', '=', key)
      .where('kind', '=', 'direct')
      .orderBy('created_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (!run) throw new AppError(ErrorCode.NOT_FOUND, 'no direct upload for this key');
    return run;
  }

  async settle(run: Run, reported: number | null, client: ResolvedClient | undefined): Promise<{ outcome: string; run: Run }> {
    const info = await this.pipeline.storage.head(run.object_key);
    const expected = run.status === 'succeeded' ? run.size : (run.size ?? reported);
    let outcome: string;
    let error: AppError | undefined;
    if (!info) {
      outcome = 'missing';
      error = new AppError(ErrorCode.NOT_FOUND, 'upload_complete was reported but there is no object at the key');
    } else if ((expected !== null && info.size !== expected) || (reported !== null && info.size !== reported)) {
      outcome = 'size_mismatch';
      error = new AppError(
        ErrorCode.SIZE_MISMATCH,
        `the stored object has ${info.size} bytes; ${expected !== null ? `the upload was issued for ${expected}` : ''}${reported !== null ? ` the client reported ${reported}` : ''}`.trim(),
      );
    } else if (client === undefined || exceeds(client, info.size)) {
      // A store that does not enforce the signed length (or a URL without one) must not let it through;
      // neither may the upload of a client no longer configured.
      outcome = 'too_large';
      error = client
        ? tooLarge(client, `the stored object (${info.size} bytes)`)
        : new AppError(ErrorCode.PAYLOAD_TOO_LARGE, 'the client is no longer configured');
    } else {
      outcome = 'verified';
    }
    if (run.status === 'succeeded' || run.status === 'failed') return { outcome, run };
    if (error) {
      // A wrong-size object must not stay at the key as if it were the upload.
      if (outcome === 'size_mismatch' || outcome === 'too_large') await this.pipeline.storage.delete(run.object_key).catch(() => {});
      return { outcome, run: await this.pipeline.failed(run, error) };
    }
    // The store's bytes are hashed once here, so the object row holds a checksum a client can compute.
    const release = await this.pipeline.keyLocks.acquire(run.object_key);
    let ok: Run;
    try {
      const got = await this.pipeline.storage.get(run.object_key);
      if (!got) throw new AppError(ErrorCode.NOT_FOUND, 'the object disappeared while it was being verified');
      const h = createHash('sha256');
      for await (const chunk of got.body) h.update(chunk as Buffer);
      const sha256 = h.digest('hex');
      ok = await this.pipeline.commit(run.run_id, {
        object_key: run.object_key,
        client: run.client,
        path: run.path,
        size: got.info.size,
        sha256,
        checksum: sha256,
        checksum_algorithm: 'sha256',
        chunk_size: null,
        content_type: run.content_type,
      });
    } finally {
      release();
    }
    return { outcome, run: ok };
  }

  /**
   * A direct upload whose URL expired without an upload_complete: settled from
   * what the store holds (an object within the limits succeeds, with its
   * checksum; none fails the run as expired unused).
   */
  async settleLapsed(run: Run, client: ResolvedClient | undefined): Promise<Run> {
    const info = await this.pipeline.storage.head(run.object_key);
    if (!info) {
      return this.pipeline.failed(run, new AppError(ErrorCode.UPLOAD_KEY_EXPIRED, 'the direct upload URL expired and nothing was uploaded'));
    }
    return (await this.settle(run, null, client)).run;
  }

  async list(client: ResolvedClient, opts: { limit?: number; event?: string | undefined; before?: number | undefined }): Promise<TelemetryEvent[]> {
    let q = this.db.selectFrom('telemetry_events').selectAll().where('client', '=', client.name);
    if (opts.event) q = q.where('event', '=', opts.event);
    if (opts.before !== undefined) q = q.where('created_at', '<', opts.before);
    return q
      .orderBy('created_at', 'desc')
      .orderBy('event_id', 'desc')
      .limit(Math.min(Math.max(opts.limit ?? 100, 1), 1000))
      .execute();
  }
}
