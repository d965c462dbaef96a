import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream';
import type { ResolvedClient } from '../config/load.js';
import { databaseUnavailable } from '../db/index.js';
import type { RunKind } from '../db/schema.js';
import { AppError, ErrorCode, isAppError } from '../errors.js';
import type { StorageBackend } from '../storage/types.js';
import { plainText } from '../validate.js';
import { feed, release } from './body.js';
import { validateContentType } from './content-type.js';
import { KeyLocks } from './key-locks.js';
import { objectKey } from './keys.js';
import { checkSize } from './limits.js';
import { Meter } from './meter.js';
import { UnrecordedSettlements } from './reconcile.js';
import type { Run, RunStore, StoredObject } from './runs.js';
import { checkScope } from './tokens.js';

export interface IngestRequest {
  client: ResolvedClient;
  /** Client-relative path, validated here. */
  path: unknown;
  body: Readable;
  kind: RunKind;
  /** Size the client announced (Content-Length of a raw body); checked before and after. */
  declaredSize?: number | undefined;
  contentType?: string | undefined;
  filename?: string | undefined;
  /** Hex SHA-256 the client expects; a mismatch publishes nothing. Read at commit time (after `beforeCommit`). */
  expectedSha256?: string | undefined;
  /**
   * Called once the body is fully staged, before the checks and the publish:
   * an adapter that must read the rest of its request (a multipart form) does
   * it here; throwing publishes nothing.
   */
  beforeCommit?: (() => Promise<void>) | undefined;
  /**
   * A run created earlier in `queued` (direct uploads: issued with the upload
   * key); it moves to processing instead of a new run being created.
   */
  queuedRun?: Run | undefined;
  /** Aborts when the request body stops arriving (its reason, REQUEST_TIMEOUT, fails the upload). */
  signal?: AbortSignal | undefined;
  /** The protocol's reading of its body stream's own errors (a truncated or malformed form part). */
  bodyError?: ((err: unknown) => AppError) | undefined;
}

/**
 * Bodies announced at up to this many bytes are read into memory and written
 * in one go (no Transform, no write stream): cheaper per upload, and no more
 * memory than the stream path's own buffers. Larger or unannounced bodies stream.
 */
export const SMALL_BODY_MAX = 64 * 1024;

/** What the checks before publishing need to know of the bytes received. */
interface Received {
  readonly bytes: number;
  readonly sha256: string;
}

export interface IngestResult {
  run_id: string;
  s3_key: string;
  path: string;
  size: number;
  sha256: string;
}

/** Hooks for metrics and logs; the pipeline does not depend on what listens. */
export interface UploadObserver {
  /** A request began sending upload bytes (a whole file, a chunk, a tus PATCH). */
  started?(kind: RunKind, client: string): void;
  /** That request's bytes stopped (stored, refused or cut): paired with `started`. */
  ended?(kind: RunKind, client: string): void;
  /** A run settled. */
  finished?(run: Run, outcome: 'succeeded' | 'failed', errorCode?: string): void;
}

/** What a client asks to upload, as every protocol states it (before admission). */
export interface Attempt {
  kind: RunKind;
  /** Client-relative path. */
  path: unknown;
  /** Declared size in bytes, when the protocol declares one. */
  size?: number | undefined;
  /** The field the size came from, for the refusal message. */
  sizeField?: string | undefined;
  contentType?: string | undefined;
  filename?: string | undefined;
}

/** An attempt that passed admission: its key and validated fields. */
export interface Admitted {
  kind: RunKind;
  path: string;
  key: string;
  size: number | undefined;
  contentType: string | undefined;
  filename: string | undefined;
}

/**
 * The one upload lifecycle, for every protocol (multipart form, raw PUT,
 * chunked, tus, presigned PUT, signed form):
 *
 * 1. authorize: the `onRequest` hook (client key; a declared Content-Length
 *    over the limit is refused there, before the body is read);
 * 2. `admit`: the key (validated path), the declared size against the
 *    client's limit (uploads/limits.ts), the content type, the filename, and
 *    a protocol's own checks; a refusal is recorded as a failed run;
 * 3. `open`: the run (`processing` when bytes flow now, `queued` for a direct
 *    upload whose bytes go to the store later);
 * 4. bytes: `ingest` streams a whole body through the meter (limit + SHA-256)
 *    into the store's atomic put; chunked and tus write parts through the
 *    resumable engine; direct uploads go to the store itself;
 * 5. `commit`: under the key's publish lock, the run succeeds and the key's
 *    object row is written in one transaction;
 * 6. `fail`: any failure (refused mid-body, cut when idle, store or database
 *    down, expired session or URL, gateway gone) settles the run as failed
 *    with its error code.
 *
 * `RunStore` is the only writer of runs; a protocol adapter only translates
 * its wire format into these calls.
 */
export class UploadPipeline {
  private readonly observers: UploadObserver[] = [];
  /** The gateway instance streaming this pipeline's uploads (recorded on their runs; see RunStore.orphans). */
  owner: string | null = null;
  /** Publishes of one key, one at a time (with their object rows); across gateways when given shared locks. */
  readonly keyLocks: KeyLocks;
  /** Settlements this gateway could not record (database unavailable), retried until written. */
  readonly unrecorded: UnrecordedSettlements;
  /** Runs a request of this gateway is streaming now. */
  private readonly streaming = new Set<string>();

  constructor(
    readonly storage: StorageBackend,
    readonly runs: RunStore,
    readonly pathPrefix: string,
    keyLocks: KeyLocks = new KeyLocks(),
  ) {
    this.keyLocks = keyLocks;
    this.unrecorded = new UnrecordedSettlements(
      {
        commit: (runId, object) => this.commit(runId, object),
        // The failure was reported (observers told) when it happened; only its record was owed.
        failed: (runId, err) => this.runs.transition(runId, 'failed', { errorCode: err.code, errorMessage: err.message }),
      },
      storage,
    );
  }

  /** Whether this gateway still holds `runId`: a request streams it, or its settlement awaits the database. */
  holds(runId: string): boolean {
    return this.streaming.has(runId) || this.unrecorded.has(runId);
  }

  observe(o: UploadObserver): void {
    this.observers.push(o);
  }

  /** Resolve a client's path to its full key (validating it). */
  keyFor(client: ResolvedClient, path: unknown): { path: string; key: string } {
    const resolved = objectKey(this.pathPrefix, client.name, path);
    checkScope(client, resolved.path);
    return resolved;
  }

  /**
   * Every authenticated attempt gets a run: one refused before it started
   * (invalid path, declared size over the limit, invalid size or content type)
   * is recorded as failed, and the refusal carries its run_id. When the record
   * cannot be written (database down) the refusal still reaches the client.
   */
  async refuse(
    client: ResolvedClient,
    attempt: { kind: RunKind; path: unknown; size?: number | undefined; contentType?: unknown },
    err: AppError,
  ): Promise<AppError> {
    let path = typeof attempt.path === 'string' ? attempt.path : '';
    // The path may be the reason for the refusal: keep it readable, bounded and free of control bytes.
    path = path.replace(/[\u0000-\u001f\u007f]/g, '\ufffd').slice(0, 1024);
    let key = '';
    try {
      key = this.keyFor(client, attempt.path).key;
    } catch {
      key = '';
    }
    try {
      const run = await this.runs.refused(
        {
          client: client.name,
          kind: attempt.kind,
          path,
          objectKey: key,
          size: attempt.size !== undefined && Number.isSafeInteger(attempt.size) ? attempt.size : null,
          contentType: null,
        },
        { code: err.code, message: err.message },
      );
      this.emitFinished(run, 'failed', err.code);
      return new AppError(err.code, err.message, { ...err.details, run_id: run.run_id }, { cause: err.cause });
    } catch {
      return err;
    }
  }

  /**
   * Admission, the same for every protocol: the key, the declared size against
   * the client's limit, the content type and filename, then `more` (a
   * protocol's own checks). A refusal is recorded (see `refuse`).
   */
  async admit<T extends object = object>(client: ResolvedClient, attempt: Attempt, more?: (admitted: Admitted) => T): Promise<Admitted & T> {
    try {
      const { path, key } = this.keyFor(client, attempt.path);
      const size = attempt.size;
      if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) {
        throw new AppError(ErrorCode.INVALID_REQUEST, `${attempt.sizeField ?? 'size'} must be a non-negative integer`);
      }
      checkSize(client, size);
      const admitted: Admitted = {
        kind: attempt.kind,
        path,
        key,
        size,
        contentType: validateContentType(attempt.contentType),
        filename: plainText('filename', attempt.filename),
      };
      return { ...admitted, ...(more?.(admitted) ?? ({} as T)) };
    } catch (err) {
      if (!isAppError(err)) throw err;
      throw await this.refuse(client, attempt, err);
    }
  }

  /** The run of an admitted upload: `processing` (its bytes flow now, through this gateway) or `queued` (a direct upload). */
  open(
    client: ResolvedClient,
    a: Admitted,
    opts: { status: 'processing' | 'queued'; expiresAt?: number; filename?: string | null; now?: number },
  ): Promise<Run> {
    return this.runs.create(
      {
        client: client.name,
        kind: a.kind,
        path: a.path,
        objectKey: a.key,
        status: opts.status,
        owner: opts.status === 'processing' ? this.owner : null,
        size: a.size ?? null,
        contentType: a.contentType ?? null,
        filename: opts.filename === undefined ? (a.filename ?? null) : opts.filename,
        expiresAt: opts.expiresAt ?? null,
      },
      opts.now,
    );
  }

  /**
   * The upload is stored: the run succeeds and the key's object row is written
   * with it (one transaction). The caller holds the key's publish lock.
   */
  async commit(runId: string, object: Omit<StoredObject, 'run_id' | 'uploaded_at'>, now = Date.now()): Promise<Run> {
    const done = await this.runs.transition(runId, 'succeeded', { size: object.size, sha256: object.sha256, object }, now);
    this.emitFinished(done, 'succeeded');
    return done;
  }

  /** Count a request whose body is arriving (shutdown waits for these; the in-flight gauge shows them); call the result when it ends. */
  bodyStarted(kind: RunKind, client: string): () => void {
    for (const o of this.observers) o.started?.(kind, client);
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      for (const o of this.observers) o.ended?.(kind, client);
    };
  }

  emitFinished(run: Run, outcome: 'succeeded' | 'failed', errorCode?: string): void {
    for (const o of this.observers) o.finished?.(run, outcome, errorCode);
  }

  /** Settle `run` as failed with `err`; the failed run (it throws when the record cannot be written). */
  async failed(run: Run, err: AppError): Promise<Run> {
    const done = await this.runs.transition(run.run_id, 'failed', { errorCode: err.code, errorMessage: err.message });
    this.emitFinished(done, 'failed', err.code);
    return done;
  }

  /** Record a failure on `run` and return the error to throw (with the run id attached). */
  async fail(run: Run, err: unknown): Promise<AppError> {
    const appErr = uploadError(err);
    let finished = run;
    try {
      finished = await this.runs.transition(run.run_id, 'failed', { errorCode: appErr.code, errorMessage: appErr.message });
    } catch (writeErr) {
      // The record could not be written (database down): the error still reaches the client, the record follows.
      if (databaseUnavailable(writeErr) !== undefined) this.unrecorded.add(run.run_id, { to: 'failed', error: appErr });
    }
    this.emitFinished(finished, 'failed', appErr.code);
    return withRun(appErr, run.run_id, err);
  }

  async ingest(req: IngestRequest): Promise<IngestResult> {
    const { client } = req;
    const admitted = await this.admit(client, {
      kind: req.kind,
      path: req.path,
      size: req.declaredSize,
      contentType: req.contentType,
      filename: req.filename,
    });
    const { path, key } = admitted;
    req.contentType = admitted.contentType;

    const small = req.declaredSize !== undefined && req.declaredSize <= SMALL_BODY_MAX;
    const runCreated = req.queuedRun
      ? this.runs.transition(req.queuedRun.run_id, 'processing', { owner: this.owner })
      : this.open(client, admitted, { status: 'processing' });
    // A small body is read while its record is written (one round trip less per
    // upload); a streamed one starts flowing only once the record exists.
    const smallBody = small ? readSmallBody(req.body, req.declaredSize ?? 0, req.signal) : undefined;
    smallBody?.catch(() => {});
    // No record, no upload (database down: the error handler answers 503).
    const run = await runCreated;
    const ended = this.bodyStarted(req.kind, client.name);
    this.streaming.add(run.run_id);
    /** Set once the bytes are published but their record could not be written. */
    let owed: AppError | undefined;

    try {
      let source: Readable | Buffer;
      let received: Received;
      if (smallBody) {
        const buf = await smallBody;
        source = buf;
        received = { bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') };
      } else {
        const meter = new Meter(client);
        // A client abort fails the meter; the meter passing the limit stops reading the body (never resets the connection).
        feed(req.body, meter, req.signal).catch(() => {});
        source = meter;
        received = meter;
      }
      let release: (() => void) | undefined;
      const put = await this.storage
        .put(key, source, {
          contentType: req.contentType,
          beforeCommit: async () => {
            await req.beforeCommit?.();
            if (req.declaredSize !== undefined && received.bytes !== req.declaredSize) {
              throw new AppError(ErrorCode.SIZE_MISMATCH, `received ${received.bytes} bytes, expected ${req.declaredSize}`);
            }
            if (req.expectedSha256 !== undefined && received.sha256 !== req.expectedSha256) {
              throw new AppError(ErrorCode.CHECKSUM_MISMATCH, `SHA-256 mismatch: received ${received.sha256}, expected ${req.expectedSha256}`, {
                sha256: received.sha256,
              });
            }
            release = await this.keyLocks.acquire(key);
          },
        })
        .catch((err: unknown) => {
          release?.();
          throw err;
        });
      const object: Omit<StoredObject, 'run_id' | 'uploaded_at'> = {
        object_key: key,
        client: client.name,
        path,
        size: put.size,
        sha256: received.sha256,
        checksum: received.sha256,
        checksum_algorithm: 'sha256',
        chunk_size: null,
        content_type: req.contentType ?? null,
      };
      try {
        await this.commit(run.run_id, object);
      } catch (err) {
        // Published, not recorded: the record follows the bytes once the
        // database answers (the key's lock is held until then, so the rows of
        // the key still follow its publishes); the client is told to retry.
        this.unrecorded.add(run.run_id, { to: 'succeeded', object, release });
        release = undefined;
        owed = withRun(uploadError(err), run.run_id, err);
        throw owed;
      } finally {
        release?.();
      }
      return { run_id: run.run_id, s3_key: key, path, size: put.size, sha256: received.sha256 };
    } catch (err) {
      release(req.body);
      if (owed) throw owed;
      throw await this.fail(run, abortedAs(err, req.body, req.bodyError));
    } finally {
      this.streaming.delete(run.run_id);
      ended();
    }
  }
}

/** A failure in the error contract: ours as it is, the database's as DATABASE_UNAVAILABLE (retryable), anything else INTERNAL. */
function uploadError(err: unknown): AppError {
  if (isAppError(err)) return err;
  const dbDown = databaseUnavailable(err);
  if (dbDown !== undefined) {
    return new AppError(ErrorCode.DATABASE_UNAVAILABLE, `the database is unavailable (${dbDown}); retry later`, undefined, { cause: err });
  }
  return new AppError(ErrorCode.INTERNAL, 'the upload failed', undefined, { cause: err });
}

/** `err` with the run it belongs to (the client quotes it). */
function withRun(err: AppError, runId: string, original: unknown): AppError {
  return new AppError(err.code, err.message, { ...err.details, run_id: runId }, { cause: err.cause ?? original });
}

/**
 * Read a body of at most `size` bytes into one Buffer. Rejects if the stream
 * fails or ends early (client gone) or brings more than announced.
 */
function readSmallBody(body: Readable, size: number, signal?: AbortSignal): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const onAbort = () => {
      body.off('data', onData);
      body.pause();
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const chunks: Buffer[] = [];
    let n = 0;
    const onData = (chunk: Buffer): void => {
      n += chunk.length;
      if (n > size) {
        body.off('data', onData);
        body.pause();
        reject(new AppError(ErrorCode.SIZE_MISMATCH, `the body is longer than the ${size} bytes announced`));
        return;
      }
      chunks.push(chunk);
    };
    body.on('data', onData);
    const cleanup = finished(body, (err) => {
      cleanup();
      signal?.removeEventListener('abort', onAbort);
      body.off('data', onData);
      if (err) reject(err);
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, n));
    });
  });
}

/**
 * What a failure means for the client, by where it came from: our own errors
 * as they are; the database's (a lost connection is tagged at the driver's
 * edge, see db/index.ts) left for `fail` to report as DATABASE_UNAVAILABLE; a
 * failure of the body stream itself in the protocol's terms (`bodyError`),
 * else as an interrupted upload (UPLOAD_ABORTED, not a server fault).
 */
function abortedAs(err: unknown, body: Readable, bodyError: ((err: unknown) => AppError) | undefined): unknown {
  if (isAppError(err)) return err;
  if (databaseUnavailable(err) !== undefined) return err;
  if (body.errored && bodyError) return bodyError(body.errored);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (err as Error | undefined)?.name === 'AbortError' || body.errored) {
    return new AppError(ErrorCode.UPLOAD_ABORTED, 'the upload was interrupted before it completed', undefined, { cause: err });
  }
  return err;
}
