import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream';
import type { ResolvedClient } from '../config/load.js';
import { databaseUnavailable } from '../db/index.js';
import type { RunKind } from '../db/schema.js';
import { AppError, ErrorCode, isAppError } from '../errors.js';
import type { StorageBackend } from '../storage/types.js';
import { validateContentType } from './content-type.js';
import { KeyLocks } from './key-locks.js';
import { objectKey } from './keys.js';
import { Meter } from './meter.js';
import type { Run, RunStore } from './runs.js';
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

/**
 * The one upload pipeline: authorize (done by the caller) -> resolve and
 * validate the key -> check limits -> stream through the meter (size limit +
 * SHA-256) -> backend (atomic publish) -> record. Every protocol adapter
 * (multipart form, raw PUT, direct form, ...) is a thin layer over `ingest`.
 */
export class UploadPipeline {
  private readonly observers: UploadObserver[] = [];
  /** The gateway instance streaming this pipeline's uploads (recorded on their runs; see RunStore.orphans). */
  owner: string | null = null;
  /** Publishes of one key, one at a time (with their object rows). */
  readonly keyLocks = new KeyLocks();

  constructor(
    readonly storage: StorageBackend,
    readonly runs: RunStore,
    readonly pathPrefix: string,
  ) {}

  observe(o: UploadObserver): void {
    this.observers.push(o);
  }

  /** Resolve a client's path to its full key (validating it). */
  keyFor(client: ResolvedClient, path: unknown): { path: string; key: string } {
    const resolved = objectKey(this.pathPrefix, client.name, path);
    checkScope(client, resolved.path);
    return resolved;
  }

  checkDeclaredSize(client: ResolvedClient, size: number | undefined): void {
    if (size !== undefined && size > client.maxFileSize) {
      throw new AppError(ErrorCode.PAYLOAD_TOO_LARGE, `the file (${size} bytes) exceeds this client's limit of ${client.maxFileSize} bytes`, {
        limit: client.maxFileSize,
      });
    }
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

  /** Run `check` (admission); a refusal it throws is recorded (see `refuse`). */
  async admit<T>(client: ResolvedClient, attempt: { kind: RunKind; path: unknown; size?: number | undefined }, check: () => T): Promise<T> {
    try {
      return check();
    } catch (err) {
      if (!isAppError(err)) throw err;
      throw await this.refuse(client, attempt, err);
    }
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

  /** Record a failure on `run` and return the error to throw (with the run id attached). */
  async fail(run: Run, err: unknown): Promise<AppError> {
    const dbDown = isAppError(err) ? undefined : databaseUnavailable(err);
    const appErr = isAppError(err)
      ? err
      : dbDown !== undefined
        ? new AppError(ErrorCode.DATABASE_UNAVAILABLE, `the database is unavailable (${dbDown}); retry later`, undefined, { cause: err })
        : new AppError(ErrorCode.INTERNAL, 'the upload failed', undefined, { cause: err });
    let finished = run;
    try {
      finished = await this.runs.transition(run.run_id, 'failed', { errorCode: appErr.code, errorMessage: appErr.message });
    } catch {
      // The record could not be updated (database down): the error still reaches the client.
    }
    this.emitFinished(finished, 'failed', appErr.code);
    return new AppError(appErr.code, appErr.message, { ...appErr.details, run_id: run.run_id }, { cause: appErr.cause ?? err });
  }

  async ingest(req: IngestRequest): Promise<IngestResult> {
    const { client } = req;
    const { path, key } = await this.admit(client, { kind: req.kind, path: req.path, size: req.declaredSize }, () => {
      const resolved = this.keyFor(client, req.path);
      this.checkDeclaredSize(client, req.declaredSize);
      req.contentType = validateContentType(req.contentType);
      return resolved;
    });

    const small = req.declaredSize !== undefined && req.declaredSize <= SMALL_BODY_MAX;
    const runCreated = req.queuedRun
      ? this.runs.transition(req.queuedRun.run_id, 'processing', { owner: this.owner })
      : this.runs.create({
          client: client.name,
          kind: req.kind,
          path,
          objectKey: key,
          status: 'processing',
          owner: this.owner,
          size: req.declaredSize ?? null,
          contentType: req.contentType ?? null,
          filename: req.filename ?? null,
        });
    // A small body is read while its record is written (one round trip less per
    // upload); a streamed one starts flowing only once the record exists.
    const smallBody = small ? readSmallBody(req.body, req.declaredSize ?? 0) : undefined;
    smallBody?.catch(() => {});
    // No record, no upload (database down: the error handler answers 503).
    const run = await runCreated;
    const ended = this.bodyStarted(req.kind, client.name);

    try {
      let source: Readable | Buffer;
      let received: Received;
      if (smallBody) {
        const buf = await smallBody;
        source = buf;
        received = { bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') };
      } else {
        const meter = new Meter(client.maxFileSize);
        // Errors on either side (client abort, limit exceeded) destroy both streams.
        pipeline(req.body, meter, () => {});
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
      let done: Run;
      try {
        done = await this.runs.transition(run.run_id, 'succeeded', {
          size: put.size,
          sha256: received.sha256,
          object: {
            object_key: key,
            client: client.name,
            path,
            size: put.size,
            sha256: received.sha256,
            checksum: received.sha256,
            checksum_algorithm: 'sha256',
            chunk_size: null,
            content_type: req.contentType ?? null,
          },
        });
      } finally {
        release?.();
      }
      this.emitFinished(done, 'succeeded');
      return { run_id: run.run_id, s3_key: key, path, size: put.size, sha256: received.sha256 };
    } catch (err) {
      const reported = abortedAs(err, req.body);
      req.body.destroy();
      throw await this.fail(run, reported);
    } finally {
      ended();
    }
  }
}

/**
 * Read a body of at most `size` bytes into one Buffer. Rejects if the stream
 * fails or ends early (client gone) or brings more than announced.
 */
function readSmallBody(body: Readable, size: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
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
      body.off('data', onData);
      if (err) reject(err);
      else resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, n));
    });
  });
}

const MALFORMED_MULTIPART = /unexpected end of (multipart data|form)|terminated early due to unexpected end|malformed part header|boundary not found/i;

/** A multipart parser's complaint about the body itself (bad boundary, truncated form): the client's fault. */
export function malformedMultipart(err: unknown): AppError | undefined {
  const message = (err as Error | undefined)?.message;
  if (typeof message !== 'string' || !MALFORMED_MULTIPART.test(message)) return undefined;
  return new AppError(ErrorCode.INVALID_REQUEST, `malformed multipart body: ${message}`, undefined, { cause: err });
}

/** A body that ended early (client went away) is reported as UPLOAD_ABORTED, not a server fault. */
function abortedAs(err: unknown, body: Readable): unknown {
  if (isAppError(err)) return err;
  const malformed = malformedMultipart(err) ?? malformedMultipart(body.errored);
  if (malformed) return malformed;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (err as Error | undefined)?.name === 'AbortError' || body.errored) {
    return new AppError(ErrorCode.UPLOAD_ABORTED, 'the upload was interrupted before it completed', undefined, { cause: err });
  }
  return err;
}
