import { createHash, type Hash, randomUUID } from 'node:crypto';
import { Readable, Transform, type TransformCallback, Writable } from 'node:stream';
import type { Kysely, Selectable } from 'kysely';
import type { Logger } from 'pino';
import { COMPOSITE_ALGORITHM, compositeChecksum } from '../checksum.js';
import type { ResolvedClient } from '../config/load.js';
import { databaseUnavailable } from '../db/index.js';
import type { Database, UploadPartsTable, UploadSessionsTable } from '../db/schema.js';
import { AppError, ErrorCode, isAppError } from '../errors.js';
import { closedByReader } from '../storage/reader-gone.js';
import type { MultipartCapability, StorageBackend, StoredPart } from '../storage/types.js';
import { feed, release } from './body.js';
import { OffThreadMd5 } from './md5-worker.js';
import type { UploadPipeline } from './pipeline.js';
import { storedDigest } from './reconcile.js';
import type { StoredObject } from './runs.js';
import { inScope } from './tokens.js';

export type Session = Selectable<UploadSessionsTable>;
export type PartRow = Selectable<UploadPartsTable>;

const MiB = 1024 * 1024;
/** S3's limits: at most 10,000 parts, each at least 5 MiB (but the last) and at most 5 GiB. */
export const MAX_PARTS = 10_000;
export const S3_MIN_PART = 5 * MiB;
export const MAX_PART = 5 * 1024 * MiB;
/** Failed store aborts are retried by the sweeper this many times, then left for a bucket lifecycle rule. */
export const MAX_CLEANUP_ATTEMPTS = 20;
/** Finished sessions are kept this long (idempotent complete, status), then deleted. */
export const FINISHED_RETENTION_MS = 7 * 24 * 3600 * 1000;
/** A chunk claim older than this was left by a request that died; another request may take it over. */
export const STALE_CLAIM_MS = 10 * 60 * 1000;

export { COMPOSITE_ALGORITHM, compositeChecksum } from '../checksum.js';

/**
 * Chunk size, decided by the server (spec 004 adaptive sizes):
 * < 25 MiB: 1 MiB, 25-100 MiB: 5 MiB, > 100 MiB: 10 MiB; at least 5 MiB on S3
 * (its minimum part size); grown in whole MiB so no upload needs more than
 * 10,000 parts.
 */
export function chunkSizeFor(fileSize: number, backend: 'fs' | 's3'): number {
  let size = fileSize < 25 * MiB ? MiB : fileSize <= 100 * MiB ? 5 * MiB : 10 * MiB;
  if (backend === 's3') size = Math.max(size, S3_MIN_PART);
  const needed = Math.ceil(Math.ceil(fileSize / MAX_PARTS) / MiB) * MiB;
  return Math.min(MAX_PART, Math.max(size, needed));
}

export function totalChunksFor(fileSize: number, chunkSize: number): number {
  return fileSize === 0 ? 0 : Math.ceil(fileSize / chunkSize);
}

/** Accept "<hex>-N", "<hex>" or "sha256-of-sha256s:<hex>[-N]"; return "<hex>" (N is checked by the caller). */
export function parseComposite(value: string): { hex: string; parts: number | undefined } {
  const m = /^(?:sha256-of-sha256s:)?([0-9a-fA-F]{64})(?:-(\d+))?$/.exec(value.trim());
  if (!m) {
    throw new AppError(
      ErrorCode.INVALID_REQUEST,
      `checksum must be the composite ${COMPOSITE_ALGORITHM} checksum "<64 hex>-<chunks>" (SHA-256 over the chunks' SHA-256 digests; see docs/resumable-uploads.md)`,
    );
  }
  return { hex: (m[1] as string).toLowerCase(), parts: m[2] === undefined ? undefined : Number(m[2]) };
}

/** Content-MD5 (base64, RFC 1864) or 32 hex characters -> hex. */
export function parseMd5(value: string): string {
  const v = value.trim();
  if (/^[0-9a-fA-F]{32}$/.test(v)) return v.toLowerCase();
  if (/^[A-Za-z0-9+/]{22}==$/.test(v)) return Buffer.from(v, 'base64').toString('hex');
  throw new AppError(ErrorCode.INVALID_REQUEST, 'the chunk MD5 must be base64 (Content-MD5) or 32 hex characters');
}

/**
 * One pass over a chunk: SHA-256 always, MD5 when asked (it runs at a quarter of
 * SHA-256's speed here, so only a client that sends Content-MD5 pays for it);
 * exact length enforced (short or long bodies fail the stream).
 */
export class PartHasher extends Transform {
  bytes = 0;
  private readonly md5h: OffThreadMd5 | undefined;
  private readonly sha: Hash = createHash('sha256');
  md5 = '';
  sha256 = '';

  constructor(
    private readonly expected: number,
    withMd5 = true,
  ) {
    // Node's default 16 KiB buffers: chunks pass straight through (see Meter: deep
    // queues get socket buffers promoted and held until a full collection).
    super();
    this.md5h = withMd5 ? new OffThreadMd5() : undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expected) {
      cb(new AppError(ErrorCode.SIZE_MISMATCH, `the chunk is longer than ${this.expected} bytes`, { expected: this.expected }));
      return;
    }
    this.sha.update(chunk);
    if (!this.md5h) {
      cb(null, chunk);
      return;
    }
    // MD5 on the worker thread; waits only when the worker falls behind.
    this.md5h.update(chunk).then(
      () => cb(null, chunk),
      (err: unknown) => cb(err as Error),
    );
  }

  override _flush(cb: TransformCallback): void {
    if (this.bytes !== this.expected) {
      cb(new AppError(ErrorCode.SIZE_MISMATCH, `the chunk has ${this.bytes} bytes, expected ${this.expected}`, { expected: this.expected }));
      return;
    }
    this.sha256 = this.sha.digest('hex');
    if (!this.md5h) {
      cb();
      return;
    }
    this.md5h.digest().then(
      (hex) => {
        this.md5 = hex;
        cb();
      },
      (err: unknown) => cb(err as Error),
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (this.md5 === '') this.md5h?.drop();
    cb(err);
  }
}

export interface InitRequest {
  path: unknown;
  fileSize: number;
  contentType?: string | undefined;
  checksum?: string | undefined;
  protocol: 'chunked' | 'tus';
  /** A chunk size the client would like; honoured when it fits the store's rules, else the server's choice stands. */
  preferredChunkSize?: number | undefined;
  /** tus: the id the protocol layer chose. */
  sessionId?: string | undefined;
  tusMetadata?: Record<string, string | null> | undefined;
}

export interface CompleteResult {
  file_id: string;
  run_id: string;
  s3_key: string;
  path: string;
  size: number;
  checksum: string;
  checksum_algorithm: typeof COMPOSITE_ALGORITHM;
  /** The whole file's SHA-256, when the upload was one chunk (then it equals the composite's input). */
  sha256: string | null;
  status: 'completed';
}

export interface SweepResult {
  expired: number;
  cleaned: number;
  pending: number;
  deleted: number;
  /** Completions a stopped gateway left unfinished, settled (see settleStalledCompletions). */
  settled: number;
}

export interface EngineOptions {
  sessionTtlMs: number;
  sweepIntervalMs: number;
  /** The gateways' heartbeat interval: a completion whose gateway missed three heartbeats is settled by a sweep. */
  heartbeatMs?: number | undefined;
  logger?: Logger | undefined;
}

/** tus: a PATCH body's Upload-Checksum, verified before anything of that PATCH is recorded. */
export interface BodyChecksum {
  algorithm: string;
  expected: Buffer;
}

function md5Etag(etag: string): string | undefined {
  const m = /^"?([0-9a-f]{32})"?$/i.exec(etag);
  return m ? (m[1] as string).toLowerCase() : undefined;
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** The object row of a completed session: a plain SHA-256 for up to one chunk, else the composite. */
function objectOf(s: Session, size: number, sha256: string | null, composite: string | null): Omit<StoredObject, 'run_id' | 'uploaded_at'> {
  return {
    object_key: s.object_key,
    client: s.client,
    path: s.path,
    size,
    sha256: s.total_chunks === 0 ? EMPTY_SHA256 : sha256,
    checksum: s.total_chunks === 0 ? EMPTY_SHA256 : s.total_chunks === 1 ? (sha256 as string) : (composite as string),
    checksum_algorithm: s.total_chunks <= 1 ? 'sha256' : COMPOSITE_ALGORITHM,
    chunk_size: s.total_chunks <= 1 ? null : s.chunk_size,
    content_type: s.content_type,
  };
}

/**
 * The one resumable-upload engine behind the chunked API and tus. Sessions and
 * parts live in the database (so a restart or another gateway continues an
 * upload); bytes go straight into the store's multipart capability (S3
 * multipart parts, or in place into one staging file on the filesystem).
 * Every state change is an atomic conditional update on the session row.
 */
export class ResumableEngine {
  readonly storage: StorageBackend;
  readonly mp: MultipartCapability;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepResult> | undefined;
  /** Sessions this gateway is completing right now. */
  private readonly completingHere = new Set<string>();

  constructor(
    private readonly db: Kysely<Database>,
    readonly pipeline: UploadPipeline,
    readonly opts: EngineOptions,
  ) {
    this.storage = pipeline.storage;
    const mp = this.storage.multipart;
    if (!mp) throw new Error(`the ${this.storage.kind} storage backend has no multipart capability`);
    this.mp = mp;
  }

  /** The largest chunk any session may have (multipart form limits). */
  readonly maxChunkSize = MAX_PART;

  chunkSizeFor(fileSize: number): number {
    return chunkSizeFor(fileSize, this.storage.kind);
  }

  /**
   * The server decides: a client's preferred chunk size is taken only when it is
   * a whole number of MiB, at least 1 MiB (5 MiB on S3), at most 5 GiB, and keeps
   * the upload within 10,000 parts; otherwise the adaptive size applies.
   */
  negotiateChunkSize(fileSize: number, preferred: number | undefined): number {
    const auto = this.chunkSizeFor(fileSize);
    if (preferred === undefined || !Number.isSafeInteger(preferred) || preferred % MiB !== 0) return auto;
    const min = this.storage.kind === 's3' ? S3_MIN_PART : MiB;
    if (preferred < min || preferred > MAX_PART || Math.ceil(fileSize / preferred) > MAX_PARTS) return auto;
    return preferred;
  }

  /** Start the periodic sweep (expired sessions, failed aborts). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.sweepExpired().catch((err) => this.opts.logger?.warn({ err }, 'resumable sweep failed'));
    }, this.opts.sweepIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping?.catch(() => undefined);
  }

  async init(client: ResolvedClient, req: InitRequest, now = Date.now()): Promise<Session> {
    const admitted = await this.pipeline.admit(
      client,
      { kind: req.protocol, path: req.path, size: req.fileSize, sizeField: 'file_size', contentType: req.contentType },
      () => {
        const chunkSize = this.negotiateChunkSize(req.fileSize, req.preferredChunkSize);
        return { chunkSize, totalChunks: totalChunksFor(req.fileSize, chunkSize) };
      },
    );
    const { path, key, chunkSize, totalChunks } = admitted;
    req.contentType = admitted.contentType;
    let declared: string | null = null;
    if (req.checksum !== undefined && req.checksum !== '') {
      const c = parseComposite(req.checksum);
      if (c.parts !== undefined && c.parts !== totalChunks) {
        throw new AppError(ErrorCode.INVALID_REQUEST, `the checksum covers ${c.parts} chunks but this upload has ${totalChunks} (chunk_size ${chunkSize})`, {
          chunk_size: chunkSize,
          total_chunks: totalChunks,
        });
      }
      declared = `${c.hex}-${totalChunks}`;
    }
    const storeUploadId = await this.mp.create(key, { contentType: req.contentType, partSize: chunkSize, totalSize: req.fileSize });
    let run: Awaited<ReturnType<UploadPipeline['runs']['create']>>;
    try {
      run = await this.pipeline.open(client, admitted, { status: 'processing', filename: path.split('/').pop() ?? null, now });
    } catch (err) {
      await this.mp.abort(key, storeUploadId).catch(() => false);
      throw err;
    }
    const session: Session = {
      session_id: req.sessionId ?? randomUUID(),
      client: client.name,
      protocol: req.protocol,
      run_id: run.run_id,
      path,
      object_key: key,
      file_size: req.fileSize,
      chunk_size: chunkSize,
      total_chunks: totalChunks,
      content_type: req.contentType ?? null,
      declared_checksum: declared,
      store_upload_id: storeUploadId,
      status: 'active',
      cleanup: 'none',
      cleanup_attempts: 0,
      cleanup_error: null,
      tus_offset: 0,
      tus_tail: null,
      tus_metadata: req.tusMetadata ? JSON.stringify(req.tusMetadata) : null,
      result_size: null,
      result_checksum: null,
      result_etag: null,
      error_code: null,
      created_at: now,
      updated_at: now,
      expires_at: now + this.opts.sessionTtlMs,
      completed_at: null,
    };
    await this.db.insertInto('upload_sessions').values(session).execute();
    return session;
  }

  /** The session if it exists and belongs to `client`; another client's id is indistinguishable from a missing one. */
  async find(client: string, sessionId: string): Promise<Session | undefined> {
    if (sessionId.length > 128) return undefined;
    return this.db.selectFrom('upload_sessions').selectAll().where('session_id', '=', sessionId).where('client', '=', client).executeTakeFirst();
  }

  async owned(client: ResolvedClient, sessionId: string): Promise<Session> {
    const s = await this.find(client.name, sessionId);
    // An upload token's holder sees only the uploads under its prefix.
    if (!s || (client.pathScope !== undefined && !inScope(s.path, client.pathScope))) throw new AppError(ErrorCode.NOT_FOUND, `upload ${sessionId} not found`);
    return s;
  }

  private assertWritable(s: Session, now: number): void {
    if (s.status === 'completed') throw new AppError(ErrorCode.CONFLICT, 'the upload is already completed', { file_id: s.session_id });
    if (s.status === 'completing') throw new AppError(ErrorCode.CONFLICT, 'the upload is being completed', { file_id: s.session_id });
    if (s.status === 'aborted') throw new AppError(ErrorCode.NOT_FOUND, `upload ${s.session_id} was aborted`);
    if (s.status === 'expired' || now >= s.expires_at) {
      throw new AppError(ErrorCode.SESSION_EXPIRED, `upload ${s.session_id} expired at ${new Date(s.expires_at).toISOString()}`, {
        expires_at: new Date(s.expires_at).toISOString(),
      });
    }
  }

  expectedPartSize(s: Session, partNumber: number): number {
    return partNumber === s.total_chunks ? s.file_size - (s.total_chunks - 1) * s.chunk_size : s.chunk_size;
  }

  async parts(sessionId: string): Promise<PartRow[]> {
    // Only stored parts count: a chunk still being written is missing until it is done.
    return this.db.selectFrom('upload_parts').selectAll().where('session_id', '=', sessionId).where('state', '=', 'stored').orderBy('part_number').execute();
  }

  /**
   * Receive one chunk. The body streams through MD5 + SHA-256 straight into the
   * store's part (S3 UploadPart with ContentLength = chunk size; the filesystem
   * writes in place). A chunk whose MD5 does not match is refused and not
   * recorded; the same chunk sent again with the same MD5 is accepted.
   */
  async putPart(...args: Parameters<ResumableEngine['receivePart']>): ReturnType<ResumableEngine['receivePart']> {
    const ended = this.pipeline.bodyStarted('chunked', args[0].name);
    try {
      return await this.receivePart(...args);
    } finally {
      ended();
    }
  }

  private async receivePart(
    client: ResolvedClient,
    sessionId: string,
    partNumber: number,
    body: Readable,
    opts: {
      length?: number | undefined;
      md5?: string | undefined;
      sha256?: string | undefined;
      signal?: AbortSignal | undefined;
      /** The protocol's reading of its body stream's own errors (a malformed form part). */
      bodyError?: ((err: unknown) => AppError) | undefined;
    },
    now = Date.now(),
  ): Promise<{ chunk_number: number; status: 'received' | 'duplicate' | 'replaced'; md5: string; sha256: string; size: number }> {
    const s = await this.owned(client, sessionId);
    this.assertWritable(s, now);
    if (!Number.isSafeInteger(partNumber) || partNumber < 1 || partNumber > s.total_chunks) {
      throw new AppError(ErrorCode.CHUNK_OUT_OF_RANGE, `chunk_number must be 1..${s.total_chunks}`, { total_chunks: s.total_chunks });
    }
    const size = this.expectedPartSize(s, partNumber);
    if (opts.length !== undefined && opts.length !== size) {
      throw new AppError(ErrorCode.SIZE_MISMATCH, `chunk ${partNumber} must be ${size} bytes, the request declares ${opts.length}`, { expected: size });
    }
    const existing = await this.db
      .selectFrom('upload_parts')
      .selectAll()
      .where('session_id', '=', s.session_id)
      .where('part_number', '=', partNumber)
      .executeTakeFirst();
    const sameAsStored =
      existing !== undefined &&
      existing.size === size &&
      ((opts.md5 !== undefined && existing.md5 === opts.md5) || (opts.sha256 !== undefined && existing.sha256 === opts.sha256));
    if (existing && sameAsStored) {
      // Already stored with this checksum: read the body to its end (the client
      // is sending it) but write nothing.
      await feed(body, new Writable({ write: (_c, _e, cb) => cb() }), opts.signal);
      return { chunk_number: partNumber, status: 'duplicate', md5: existing.md5, sha256: existing.sha256, size };
    }
    // Claim the chunk before writing a byte: of two requests sending the same
    // chunk at once, one writes and the other is told to retry, so the store
    // never holds a mix of two bodies and the part row names what was written.
    if (!(await this.claimPart(s.session_id, partNumber, size, existing, now))) {
      throw new AppError(ErrorCode.CONFLICT, `chunk ${partNumber} is being received by another request; retry when it is done`, {
        chunk_number: partNumber,
      });
    }
    const current = await this.find(client.name, s.session_id);
    if (current?.status !== 'active') {
      await this.dropPart(s.session_id, partNumber);
      throw new AppError(ErrorCode.CONFLICT, 'the upload changed state while the chunk arrived; check its status', { chunk_number: partNumber });
    }
    const hasher = new PartHasher(size, opts.md5 !== undefined);
    const abort = new AbortController();
    // A body that fails midway (client gone, wrong length) cancels the store request at once.
    let bodyError: unknown;
    const flowing = feed(body, hasher, opts.signal).catch((err: unknown) => {
      bodyError ??= err;
      abort.abort(err);
      throw err;
    });
    flowing.catch(() => {});
    let stored: StoredPart;
    try {
      stored = await this.mp.uploadPart(s.object_key, s.store_upload_id, partNumber, hasher, size, { signal: abort.signal });
      await flowing;
    } catch (err) {
      // The body's own failure (client gone, wrong length, idle) is the cause, unless it is only the
      // premature close our store caused by giving up the stream (disk full, store down).
      const cause = bodyError !== undefined && !closedByReader(bodyError) ? bodyError : err;
      const failedBody = body.errored && !closedByReader(body.errored) ? body.errored : null;
      release(body);
      hasher.destroy();
      await this.dropPart(s.session_id, partNumber);
      if (!isAppError(cause) && failedBody && opts.bodyError) throw opts.bodyError(failedBody);
      throw abortedOr(cause);
    }
    if (opts.md5 !== undefined && hasher.md5 !== opts.md5) {
      // The store now holds bytes we do not vouch for: forget any earlier copy, so the chunk shows as missing.
      await this.dropPart(s.session_id, partNumber);
      throw new AppError(ErrorCode.CHECKSUM_MISMATCH, `chunk ${partNumber}: MD5 mismatch (received ${hasher.md5}, expected ${opts.md5})`, {
        chunk_number: partNumber,
        md5: hasher.md5,
      });
    }
    if (opts.sha256 !== undefined && hasher.sha256 !== opts.sha256) {
      await this.dropPart(s.session_id, partNumber);
      throw new AppError(ErrorCode.CHECKSUM_MISMATCH, `chunk ${partNumber}: SHA-256 mismatch (received ${hasher.sha256}, expected ${opts.sha256})`, {
        chunk_number: partNumber,
        sha256: hasher.sha256,
      });
    }
    const storeMd5 = md5Etag(stored.etag);
    if (this.storage.kind === 's3' && hasher.md5 !== '' && storeMd5 !== undefined && storeMd5 !== hasher.md5) {
      await this.dropPart(s.session_id, partNumber);
      throw new AppError(ErrorCode.STORAGE_ERROR, `chunk ${partNumber}: the store acknowledged different bytes (ETag ${storeMd5})`);
    }
    await this.recordParts(s.session_id, [{ part_number: partNumber, size, md5: hasher.md5, sha256: hasher.sha256, etag: stored.etag }], now);
    const status = existing ? (existing.sha256 === hasher.sha256 ? 'duplicate' : 'replaced') : 'received';
    return { chunk_number: partNumber, status, md5: hasher.md5, sha256: hasher.sha256, size };
  }

  /**
   * Take the right to write one chunk: a new row in state 'writing', or a
   * stored row moved to 'writing'. A claim whose request died without
   * releasing it (a gateway killed mid-chunk) is taken over once it is
   * STALE_CLAIM_MS old. Resolves false when another request holds it.
   */
  private async claimPart(sessionId: string, partNumber: number, size: number, existing: PartRow | undefined, now: number): Promise<boolean> {
    if (!existing) {
      const res = await this.db
        .insertInto('upload_parts')
        .values({ session_id: sessionId, part_number: partNumber, size, md5: '', sha256: '', etag: '', created_at: now, state: 'writing', claimed_at: now })
        .onConflict((oc) => oc.columns(['session_id', 'part_number']).doNothing())
        .executeTakeFirst();
      if (Number(res.numInsertedOrUpdatedRows ?? 0) === 1) return true;
    }
    const res = await this.db
      .updateTable('upload_parts')
      .set({ state: 'writing', claimed_at: now })
      .where('session_id', '=', sessionId)
      .where('part_number', '=', partNumber)
      .where((eb) => eb.or([eb('state', '=', 'stored'), eb('claimed_at', '<', now - STALE_CLAIM_MS)]))
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  private async dropPart(sessionId: string, partNumber: number): Promise<void> {
    await this.db.deleteFrom('upload_parts').where('session_id', '=', sessionId).where('part_number', '=', partNumber).execute();
  }

  private async recordParts(
    sessionId: string,
    parts: Array<Pick<PartRow, 'part_number' | 'size' | 'md5' | 'sha256' | 'etag'>>,
    now: number,
    trx: Kysely<Database> = this.db,
  ): Promise<void> {
    for (const p of parts) {
      await trx
        .insertInto('upload_parts')
        .values({ session_id: sessionId, ...p, created_at: now, state: 'stored', claimed_at: null })
        .onConflict((oc) =>
          oc
            .columns(['session_id', 'part_number'])
            .doUpdateSet({ size: p.size, md5: p.md5, sha256: p.sha256, etag: p.etag, created_at: now, state: 'stored', claimed_at: null }),
        )
        .execute();
    }
  }

  async status(client: ResolvedClient, sessionId: string) {
    const s = await this.owned(client, sessionId);
    const parts = await this.parts(s.session_id);
    const have = new Set(parts.map((p) => p.part_number));
    const missing: number[] = [];
    for (let n = 1; n <= s.total_chunks; n++) if (!have.has(n)) missing.push(n);
    const status = s.status === 'active' && Date.now() >= s.expires_at ? 'expired' : s.status;
    return {
      file_id: s.session_id,
      run_id: s.run_id,
      path: s.path,
      s3_key: s.object_key,
      status,
      file_size: s.file_size,
      chunk_size: s.chunk_size,
      total_chunks: s.total_chunks,
      uploaded_chunks: s.status === 'completed' ? Array.from({ length: s.total_chunks }, (_, i) => i + 1) : parts.map((p) => p.part_number),
      missing: s.status === 'completed' ? [] : missing,
      bytes_received: s.status === 'completed' ? s.file_size : parts.reduce((n, p) => n + p.size, 0),
      expires_at: new Date(s.expires_at).toISOString(),
      checksum: s.result_checksum,
      store_cleanup: s.cleanup,
    };
  }

  private resultOf(s: Session): CompleteResult {
    return {
      file_id: s.session_id,
      run_id: s.run_id,
      s3_key: s.object_key,
      path: s.path,
      size: s.result_size ?? s.file_size,
      checksum: s.result_checksum ?? '',
      checksum_algorithm: COMPOSITE_ALGORITHM,
      sha256: s.total_chunks === 1 && s.result_checksum ? (s.result_etag?.startsWith('sha256:') ? s.result_etag.slice(7) : null) : null,
      status: 'completed',
    };
  }

  /**
   * Assemble the object. The session row moves active -> completing with one
   * conditional update, so of two concurrent completes exactly one assembles;
   * the other gets 409 while it runs and the same result once it is done.
   */
  async complete(client: ResolvedClient, sessionId: string, now = Date.now()): Promise<CompleteResult> {
    const s = await this.owned(client, sessionId);
    if (s.status === 'completed') return this.resultOf(s);
    this.assertWritable(s, now);
    const claimed = await this.db
      .updateTable('upload_sessions')
      .set({ status: 'completing', updated_at: now })
      .where('session_id', '=', s.session_id)
      .where('status', '=', 'active')
      .where('expires_at', '>', now)
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) === 0) {
      const again = await this.owned(client, sessionId);
      if (again.status === 'completed') return this.resultOf(again);
      this.assertWritable(again, now);
      throw new AppError(ErrorCode.CONFLICT, 'the upload changed state; retry');
    }
    // While this gateway completes it, the session is held here; should it die, its run names it (see settleStalledCompletions).
    this.completingHere.add(s.session_id);
    let published = false;
    try {
      await this.pipeline.runs.own(s.run_id, this.pipeline.owner, now);
      const parts = await this.parts(s.session_id);
      const have = new Map(parts.map((p) => [p.part_number, p]));
      const missing: number[] = [];
      const wrongSize: number[] = [];
      for (let n = 1; n <= s.total_chunks; n++) {
        const p = have.get(n);
        if (!p) missing.push(n);
        else if (p.size !== this.expectedPartSize(s, n)) wrongSize.push(n);
      }
      if (missing.length > 0 || wrongSize.length > 0) {
        throw new AppError(
          ErrorCode.INCOMPLETE_UPLOAD,
          missing.length > 0 ? `${missing.length} of ${s.total_chunks} chunks are missing` : `chunks ${wrongSize.join(', ')} have the wrong size`,
          { missing: [...missing, ...wrongSize].sort((a, b) => a - b), total_chunks: s.total_chunks },
        );
      }
      const ordered = Array.from({ length: s.total_chunks }, (_, i) => have.get(i + 1) as PartRow);
      const total = ordered.reduce((n, p) => n + p.size, 0);
      if (total !== s.file_size) {
        throw new AppError(ErrorCode.SIZE_MISMATCH, `the chunks hold ${total} bytes, the upload declared ${s.file_size}`);
      }
      const composite = compositeChecksum(ordered.map((p) => p.sha256));
      if (s.declared_checksum !== null && s.declared_checksum !== composite) {
        throw new AppError(ErrorCode.CHECKSUM_MISMATCH, `composite checksum mismatch: computed ${composite}, declared ${s.declared_checksum}`, {
          checksum: composite,
        });
      }
      // One publish at a time per key: the object row below follows this publish.
      let release: (() => void) | undefined = await this.pipeline.keyLocks.acquire(s.object_key);
      const sha256 = s.total_chunks === 1 ? (ordered[0] as PartRow).sha256 : null;
      const doneAt = Date.now();
      try {
        if (s.total_chunks === 0) {
          await this.storage.put(s.object_key, Readable.from([]), { contentType: s.content_type ?? undefined });
          published = true;
          await this.mp.abort(s.object_key, s.store_upload_id).catch(() => false);
        } else {
          await this.mp.complete(
            s.object_key,
            s.store_upload_id,
            ordered.map((p) => ({ partNumber: p.part_number, etag: p.etag, size: p.size })),
          );
          published = true;
        }
        const object = objectOf(s, total, sha256, composite);
        try {
          await this.pipeline.commit(s.run_id, object, doneAt);
        } catch (err) {
          this.opts.logger?.warn({ err, run_id: s.run_id }, 'could not record the completed upload');
          // Published, not recorded (database away): the record follows the bytes once it answers, under the key's lock.
          if (databaseUnavailable(err) !== undefined) {
            this.pipeline.unrecorded.add(s.run_id, { to: 'succeeded', object, release });
            release = undefined;
          }
        }
      } finally {
        release?.();
      }
      await this.markCompleted(s, { size: total, composite, sha256, at: doneAt });
      const done = await this.owned(client, sessionId);
      return this.resultOf(done);
    } catch (err) {
      // Not published: the client may complete again. Published (the session row could not follow):
      // it stays claimed, and a sweep completes it from its run or the store, never assembling twice.
      if (!published) await this.reopen(s);
      throw err;
    } finally {
      this.completingHere.delete(s.session_id);
    }
  }

  /** The session row after its object is published and recorded; its parts' rows go. */
  private async markCompleted(s: Session, r: { size: number; composite: string | null; sha256: string | null; at: number }): Promise<void> {
    await this.db
      .updateTable('upload_sessions')
      .set({
        status: 'completed',
        result_size: r.size,
        result_checksum: r.composite,
        result_etag: r.sha256 ? `sha256:${r.sha256}` : null,
        completed_at: r.at,
        updated_at: r.at,
        tus_offset: s.file_size,
        tus_tail: null,
        cleanup: 'done',
      })
      .where('session_id', '=', s.session_id)
      .execute();
    await this.db.deleteFrom('upload_parts').where('session_id', '=', s.session_id).execute();
  }

  /** Back to active after a completion that did not publish: the client may complete again. */
  private async reopen(s: Session): Promise<void> {
    await this.db
      .updateTable('upload_sessions')
      .set({ status: 'active', updated_at: Date.now() })
      .where('session_id', '=', s.session_id)
      .where('status', '=', 'completing')
      .execute();
  }

  /**
   * Completions nobody will finish: sessions left `completing` by a gateway
   * that died between claiming a completion and recording it (kill -9, crash),
   * or by this one when the database went away before the session row was
   * written. A session is taken once its run's owner (the gateway completing
   * it) stopped heartbeating, or is this gateway and no completion here holds
   * it; each is settled under the key's publish lock, from the records first
   * and then from the store:
   * - its run succeeded: the publish was recorded, only the session row is
   *   behind: it is completed;
   * - the store holds, at its key, exactly the bytes its parts add up to (size
   *   and composite checksum, read from the store): the store assembled it
   *   before the record could be written: the run succeeds with that object and
   *   the session is completed;
   * - otherwise nothing was published: the session is active again and its
   *   parts are still in the store, so the client's next complete assembles it
   *   (an expired one is then expired by the next sweep);
   * - its run was settled another way (failed): the session is aborted with it.
   * Called by sweepExpired; returns how many sessions were settled.
   */
  async settleStalledCompletions(aliveSince: number, now = Date.now()): Promise<number> {
    const own = this.pipeline.owner;
    const stalled = await this.db
      .selectFrom('upload_sessions')
      .leftJoin('runs', 'runs.run_id', 'upload_sessions.run_id')
      .selectAll('upload_sessions')
      .where('upload_sessions.status', '=', 'completing')
      .where('upload_sessions.updated_at', '<', aliveSince)
      .where((eb) =>
        eb.or([
          eb('runs.owner', 'is', null),
          ...(own === null ? [] : [eb('runs.owner', '=', own)]),
          eb.not(eb.exists(eb.selectFrom('heartbeat').select('id').whereRef('heartbeat.id', '=', 'runs.owner').where('heartbeat.at', '>=', aliveSince))),
        ]),
      )
      .limit(100)
      .execute();
    let settled = 0;
    for (const s of stalled) {
      // Completing here, or its record owed by this gateway (settled when the database answers).
      if (this.completingHere.has(s.session_id) || this.pipeline.holds(s.run_id)) continue;
      try {
        const outcome = await this.settleStalled(s, now);
        if (outcome === 'skipped') continue;
        settled++;
        this.opts.logger?.warn({ session_id: s.session_id, run_id: s.run_id, outcome }, 'settled a completion its gateway did not finish');
      } catch (err) {
        // The store or the database is away: the next sweep tries again.
        this.opts.logger?.warn({ err, session_id: s.session_id }, 'could not settle a stalled completion yet');
      }
    }
    return settled;
  }

  private async settleStalled(stale: Session, now: number): Promise<'completed' | 'published' | 'reopened' | 'aborted' | 'skipped'> {
    const release = await this.pipeline.keyLocks.acquire(stale.object_key);
    try {
      const s = await this.db.selectFrom('upload_sessions').selectAll().where('session_id', '=', stale.session_id).executeTakeFirst();
      if (s?.status !== 'completing' || this.completingHere.has(stale.session_id)) return 'skipped';
      const parts = await this.parts(s.session_id);
      const whole = parts.length === s.total_chunks && parts.every((p, i) => p.part_number === i + 1 && p.size === this.expectedPartSize(s, i + 1));
      const composite = whole ? compositeChecksum(parts.map((p) => p.sha256)) : null;
      const sha256 = whole && s.total_chunks === 1 ? (parts[0] as PartRow).sha256 : null;
      const run = await this.pipeline.runs.get(s.run_id);
      if (run?.status === 'succeeded') {
        // The parts' rows may be gone already; the object row of this run has the checksums then.
        const row = composite === null ? await this.pipeline.runs.objectAt(s.object_key) : undefined;
        const mine = row?.run_id === s.run_id ? row : undefined;
        const recorded =
          composite ??
          (mine === undefined
            ? null
            : mine.checksum_algorithm === COMPOSITE_ALGORITHM
              ? mine.checksum
              : compositeChecksum(s.total_chunks === 0 || mine.sha256 === null ? [] : [mine.sha256]));
        await this.markCompleted(s, {
          size: run.size ?? s.file_size,
          composite: recorded,
          sha256: sha256 ?? (s.total_chunks === 1 ? (mine?.sha256 ?? null) : null),
          at: run.finished_at ?? now,
        });
        return 'completed';
      }
      if (run?.status === 'processing') {
        if (whole && composite !== null) {
          const stored = await storedDigest(this.storage, s.object_key, s.chunk_size);
          if (stored && stored.size === s.file_size && stored.composite === composite) {
            await this.pipeline.commit(s.run_id, objectOf(s, stored.size, sha256, composite), now);
            await this.markCompleted(s, { size: stored.size, composite, sha256, at: now });
            return 'published';
          }
        }
        await this.reopen(s);
        return 'reopened';
      }
      await this.db
        .updateTable('upload_sessions')
        .set({ status: 'aborted', error_code: run?.error_code ?? ErrorCode.UPLOAD_ABORTED, updated_at: now, tus_tail: null })
        .where('session_id', '=', s.session_id)
        .where('status', '=', 'completing')
        .execute();
      await this.cleanup(s, now);
      return 'aborted';
    } finally {
      release();
    }
  }

  /** Abort: the parts are dropped from the store (or the record says the store could not, and the sweeper retries). */
  async abort(client: ResolvedClient, sessionId: string, now = Date.now()): Promise<{ file_id: string; status: 'aborted'; store_cleanup: string }> {
    const s = await this.owned(client, sessionId);
    if (s.status === 'completed' || s.status === 'completing') {
      throw new AppError(ErrorCode.CONFLICT, `the upload is ${s.status}; delete the object instead`, { file_id: s.session_id });
    }
    if (s.status === 'aborted' || s.status === 'expired') return { file_id: s.session_id, status: 'aborted', store_cleanup: s.cleanup };
    const claimed = await this.db
      .updateTable('upload_sessions')
      .set({ status: 'aborted', error_code: ErrorCode.UPLOAD_ABORTED, updated_at: now, tus_tail: null })
      .where('session_id', '=', s.session_id)
      .where('status', '=', 'active')
      .executeTakeFirst();
    if (Number(claimed.numUpdatedRows) === 0) throw new AppError(ErrorCode.CONFLICT, 'the upload changed state; retry');
    await this.failRun(s, new AppError(ErrorCode.UPLOAD_ABORTED, 'the client aborted the upload'));
    const cleanup = await this.cleanup(s, now);
    return { file_id: s.session_id, status: 'aborted', store_cleanup: cleanup };
  }

  private async failRun(s: Session, err: AppError): Promise<void> {
    const run = await this.pipeline.runs.get(s.run_id);
    if (run && (run.status === 'queued' || run.status === 'processing')) await this.pipeline.fail(run, err);
  }

  /** Drop the store's parts; returns the session's new cleanup state. */
  private async cleanup(s: Session, now: number): Promise<'done' | 'pending'> {
    let ok = false;
    let why: string | null = null;
    try {
      ok = await this.mp.abort(s.object_key, s.store_upload_id);
      if (!ok) why = 'the store cannot abort multipart uploads (AbortMultipartUpload not implemented); retried by the sweeper';
    } catch (err) {
      why = isAppError(err) ? err.message : 'abort failed';
    }
    if (ok) await this.db.deleteFrom('upload_parts').where('session_id', '=', s.session_id).execute();
    const state = ok ? 'done' : 'pending';
    await this.db
      .updateTable('upload_sessions')
      .set((eb) => ({ cleanup: state, cleanup_error: why, cleanup_attempts: eb('cleanup_attempts', '+', 1), updated_at: now }))
      .where('session_id', '=', s.session_id)
      .execute();
    if (!ok) this.opts.logger?.info({ file_id: s.session_id, reason: why }, 'store parts not removed; will retry');
    return state;
  }

  /**
   * Expire sessions past expires_at (abort their parts, fail their runs), retry
   * store aborts that failed earlier, and delete finished sessions after a week.
   * Safe to run on several gateways at once: every step claims its row first.
   */
  sweepExpired(now = Date.now()): Promise<SweepResult> {
    const run = async (): Promise<SweepResult> => {
      const result: SweepResult = { expired: 0, cleaned: 0, pending: 0, deleted: 0, settled: 0 };
      // First the stalled completions: one reopened here may be expired below.
      if (this.opts.heartbeatMs !== undefined) result.settled = await this.settleStalledCompletions(now - 3 * this.opts.heartbeatMs, now);
      const due = await this.db.selectFrom('upload_sessions').selectAll().where('status', '=', 'active').where('expires_at', '<=', now).limit(200).execute();
      for (const s of due) {
        const claimed = await this.db
          .updateTable('upload_sessions')
          .set({ status: 'expired', error_code: ErrorCode.SESSION_EXPIRED, updated_at: now, tus_tail: null })
          .where('session_id', '=', s.session_id)
          .where('status', '=', 'active')
          .executeTakeFirst();
        if (Number(claimed.numUpdatedRows) === 0) continue;
        result.expired++;
        await this.failRun(s, new AppError(ErrorCode.SESSION_EXPIRED, 'the upload session expired before it was completed'));
        if ((await this.cleanup(s, now)) === 'done') result.cleaned++;
        else result.pending++;
      }
      const retry = await this.db
        .selectFrom('upload_sessions')
        .selectAll()
        .where('cleanup', '=', 'pending')
        .where('cleanup_attempts', '<', MAX_CLEANUP_ATTEMPTS)
        .where('updated_at', '<', now)
        .limit(200)
        .execute();
      for (const s of retry) {
        if ((await this.cleanup(s, now)) === 'done') result.cleaned++;
        else result.pending++;
      }
      const old = await this.db
        .deleteFrom('upload_sessions')
        .where('status', 'in', ['completed', 'aborted', 'expired'])
        .where('cleanup', '!=', 'pending')
        .where('updated_at', '<', now - FINISHED_RETENTION_MS)
        .executeTakeFirst();
      result.deleted = Number(old.numDeletedRows);
      return result;
    };
    // One sweep at a time in this process.
    const p = (this.sweeping ?? Promise.resolve()).catch(() => undefined).then(run);
    this.sweeping = p;
    return p;
  }

  /** What a sweep at `now` would do (dry runs): expired sessions and pending store aborts. */
  async countDue(now = Date.now()): Promise<{ expired: number; pending: number }> {
    const expired = await this.db
      .selectFrom('upload_sessions')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('status', '=', 'active')
      .where('expires_at', '<=', now)
      .executeTakeFirst();
    const pending = await this.db
      .selectFrom('upload_sessions')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('cleanup', '=', 'pending')
      .where('cleanup_attempts', '<', MAX_CLEANUP_ATTEMPTS)
      .executeTakeFirst();
    return { expired: Number(expired?.n ?? 0), pending: Number(pending?.n ?? 0) };
  }

  /** Record the parts a PATCH stored and its new offset (and tail), in one transaction, if nobody moved the offset meanwhile. */
  private async saveTusProgress(
    sessionId: string,
    fromOffset: number,
    rows: Array<Pick<PartRow, 'part_number' | 'size' | 'md5' | 'sha256' | 'etag'>>,
    newOffset: number,
    newTail: Buffer | undefined,
    now: number,
  ): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await this.recordParts(sessionId, rows, now, trx);
      const res = await trx
        .updateTable('upload_sessions')
        .set({ tus_offset: newOffset, tus_tail: newTail ? newTail.toString('base64') : null, updated_at: Date.now() })
        .where('session_id', '=', sessionId)
        .where('tus_offset', '=', fromOffset)
        .where('status', '=', 'active')
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) === 0) throw new AppError(ErrorCode.CONFLICT, 'the upload was changed concurrently');
    });
  }

  // ---- tus: a byte stream at an offset, mapped onto fixed-size parts ----

  /**
   * Append a tus PATCH body at `offset`. tus bytes arrive in order but at any
   * offset and size, so they are cut into parts of chunk_size: complete parts
   * go to the store as they fill (at most one part buffered in memory per
   * request); the bytes of an unfinished last part (a PATCH that stopped mid-part)
   * are kept in the session row (tus_tail), so any gateway can continue. The
   * new offset and the parts are recorded together, and only after the whole
   * body passed its Upload-Checksum when one was sent.
   */
  async tusWrite(client: ResolvedClient, sessionId: string, offset: number, body: Readable, checksum?: BodyChecksum, signal?: AbortSignal): Promise<number> {
    const ended = this.pipeline.bodyStarted('tus', client.name);
    // The body went idle: stop reading; what arrived is kept (the upload resumes from there) and the PATCH answers 408.
    const onIdle = () => body.destroy(signal?.reason as Error);
    signal?.addEventListener('abort', onIdle, { once: true });
    try {
      return await this.receiveTus(client, sessionId, offset, body, checksum);
    } finally {
      signal?.removeEventListener('abort', onIdle);
      ended();
    }
  }

  private async receiveTus(client: ResolvedClient, sessionId: string, offset: number, body: Readable, checksum?: BodyChecksum): Promise<number> {
    const now = Date.now();
    const s = await this.owned(client, sessionId);
    this.assertWritable(s, now);
    if (offset !== s.tus_offset) throw new AppError(ErrorCode.CONFLICT, `offset ${offset} does not match the upload's offset ${s.tus_offset}`);
    const P = s.chunk_size;
    let partStart = Math.floor(offset / P) * P;
    const tail = s.tus_tail ? Buffer.from(s.tus_tail, 'base64') : Buffer.alloc(0);
    if (tail.length !== offset - partStart) throw new AppError(ErrorCode.INTERNAL, 'stored tail does not match the offset');
    let chunks: Buffer[] = tail.length > 0 ? [tail] : [];
    let buffered = tail.length;
    let received = offset;
    const verify = checksum ? createHash(checksum.algorithm) : undefined;
    const rows: Array<Pick<PartRow, 'part_number' | 'size' | 'md5' | 'sha256' | 'etag'>> = [];

    const flush = async (): Promise<void> => {
      const buf = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, buffered);
      const n = partStart / P + 1;
      // tus verifies bodies with Upload-Checksum; parts keep SHA-256 only (for the composite).
      const md5 = '';
      const sha256 = createHash('sha256').update(buf).digest('hex');
      let stored: StoredPart;
      try {
        stored = await this.mp.uploadPart(s.object_key, s.store_upload_id, n, buf, buf.length);
      } catch (err) {
        throw new StoreWriteFailure(err);
      }
      rows.push({ part_number: n, size: buf.length, md5, sha256, etag: stored.etag });
      partStart += buf.length;
      chunks = [];
      buffered = 0;
    };

    let failure: unknown;
    try {
      for await (const c of body) {
        let chunk = c as Buffer;
        verify?.update(chunk);
        if (received + chunk.length > s.file_size) throw new AppError(ErrorCode.SIZE_MISMATCH, 'more bytes than the upload length');
        received += chunk.length;
        while (chunk.length > 0) {
          const room = Math.min(P, s.file_size - partStart) - buffered;
          const take = chunk.subarray(0, room);
          chunks.push(take);
          buffered += take.length;
          chunk = chunk.subarray(take.length);
          if (buffered === Math.min(P, s.file_size - partStart)) await flush();
        }
      }
    } catch (err) {
      failure = err;
    }
    if (failure instanceof StoreWriteFailure) {
      // The store refused a part: the offset may only count bytes the store (or
      // the session row's tail) durably holds. Keep the parts stored before the
      // failure; the part that failed is not counted, so the client resends it.
      const storedTo = rows.length > 0 ? partStart : offset;
      if (rows.length > 0) await this.saveTusProgress(s.session_id, offset, rows, storedTo, undefined, now);
      this.opts.logger?.warn({ file_id: s.session_id, offset: storedTo }, 'tus PATCH: the store refused a part; offset kept at the stored bytes');
      throw storeFailure(failure.cause);
    }
    if (failure !== undefined) {
      // The client went away or sent too much: keep what was fully received (tus resumes from the new offset).
      if (isAppError(failure) && failure.code === ErrorCode.SIZE_MISMATCH) throw failure;
      if (checksum) throw abortedOr(failure);
    }
    if (verify && checksum && !verify.digest().equals(checksum.expected)) {
      throw new AppError(ErrorCode.CHECKSUM_MISMATCH, 'Upload-Checksum does not match the body');
    }
    // Bytes buffered past the last full part become the tail.
    const newTail = buffered > 0 ? (chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, buffered)) : undefined;
    const newOffset = partStart + buffered;
    await this.saveTusProgress(s.session_id, offset, rows, newOffset, newTail, now);
    if (newOffset === s.file_size) await this.complete(client, sessionId);
    if (isAppError(failure) && failure.code === ErrorCode.REQUEST_TIMEOUT) throw failure;
    if (failure !== undefined && !isAppError(failure)) this.opts.logger?.debug({ file_id: s.session_id, offset: newOffset }, 'tus PATCH ended early');
    return newOffset;
  }
}

/** A part the store did not take (disk full, store down): not the client's doing. */
class StoreWriteFailure extends Error {
  constructor(override readonly cause: unknown) {
    super('the store refused a part', { cause });
  }
}

/** A store failure in the error contract: retryable (503/507) unless the store said otherwise. */
function storeFailure(err: unknown): AppError {
  if (isAppError(err) && err.status >= 500) return err;
  return new AppError(ErrorCode.STORAGE_UNAVAILABLE, 'the store did not take the bytes; retry from the offset HEAD reports', undefined, { cause: err });
}

/** A chunk's failure by where it came from: the database's left as it is (a lost connection is not the client's abort). */
function abortedOr(err: unknown): unknown {
  if (isAppError(err)) return err;
  if (databaseUnavailable(err) !== undefined) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (err as Error | undefined)?.name === 'AbortError') {
    return new AppError(ErrorCode.UPLOAD_ABORTED, 'the chunk was interrupted before it completed', undefined, { cause: err });
  }
  return err;
}
