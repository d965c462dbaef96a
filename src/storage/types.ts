import type { Readable } from 'node:stream';

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
  /** The store's own entity tag (S3 ETag, or a stat-based tag on the filesystem). */
  etag: string;
  contentType?: string | undefined;
}

export interface PutOptions {
  contentType?: string | undefined;
  /**
   * Called once every byte is durably staged and before the object becomes
   * visible at its key. Throwing here abandons the upload: nothing is published
   * and a previous object at the key is left untouched.
   */
  beforeCommit?: (() => Promise<void> | void) | undefined;
}

export interface PutResult {
  size: number;
  /** The store's ETag where it returns one at no extra cost (S3); the filesystem derives it on read. */
  etag?: string | undefined;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export interface GetResult {
  body: Readable;
  info: ObjectInfo;
}

export interface DeleteManyResult {
  deleted: string[];
  errors: Array<{ key: string; message: string }>;
}

/** One stored part of a resumable upload. */
export interface StoredPart {
  partNumber: number;
  etag: string;
  size: number;
}

/**
 * Parts assembled into one object at completion. The S3 backend maps it onto
 * multipart uploads; the filesystem backend onto part files in a staging folder.
 */
export interface MultipartCapability {
  /**
   * Begin an assembly for `key`; returns the store's upload id. Every part but
   * the last is exactly `partSize` bytes, so a store may place parts by offset.
   */
  create(key: string, opts: { contentType?: string | undefined; partSize: number; totalSize: number }): Promise<string>;
  /** Store one part (1-based). The body must be exactly `size` bytes. */
  uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Readable | Buffer,
    size: number,
    /** Aborting gives up the part (a body that failed midway must not leave the store waiting). */
    opts?: { signal?: AbortSignal | undefined },
  ): Promise<StoredPart>;
  /** Publish the parts, in order, as one object at `key`. */
  complete(key: string, uploadId: string, parts: StoredPart[]): Promise<PutResult>;
  /** Drop the parts. Resolves `false` when the store cannot abort (s3rver); the caller retries later. */
  abort(key: string, uploadId: string): Promise<boolean>;
}

export interface PresignCapability {
  /** A URL that accepts a PUT of exactly `size` bytes with `contentType` until it expires (the length is signed). */
  presignPut(key: string, opts: { size: number; contentType: string; expiresInSeconds: number }): Promise<{ url: string; headers: Record<string, string> }>;
  /**
   * A browser-style POST form (S3 POST Object) for a body of unknown size: its
   * signed policy holds `content-length-range` [0, `maxSize`], the key and the
   * content type, so the store refuses a larger body. The client sends `fields`
   * in this order, then the file as the last field `file`.
   */
  presignPost(key: string, opts: { maxSize: number; contentType: string; expiresInSeconds: number }): Promise<{ url: string; fields: Record<string, string> }>;
}

/** What the upload pipeline needs from a store. Optional capabilities are detected, never faked. */
export interface StorageBackend {
  readonly kind: 'fs' | 's3';
  /**
   * Store `body` at `key`; the object appears atomically and only when complete.
   * A stream is written as it arrives; a Buffer (a small body the pipeline
   * already holds) is written in one go, without stream machinery.
   */
  put(key: string, body: Readable | Buffer, opts?: PutOptions): Promise<PutResult>;
  head(key: string): Promise<ObjectInfo | null>;
  get(key: string, range?: ByteRange): Promise<GetResult | null>;
  delete(key: string): Promise<void>;
  /** Every object below a key prefix (which should end with '/'). */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /**
   * Delete many objects (S3: DeleteObjects in batches of 1000). Missing keys count as deleted.
   * `unmodifiedSince`: where the store can check it (filesystem), an object modified since is kept.
   */
  deleteMany?(keys: string[], opts?: { unmodifiedSince?: Date }): Promise<DeleteManyResult>;
  /** Throws when the store cannot be reached or written (used by /ready). */
  check(): Promise<void>;
  close(): Promise<void>;
  readonly multipart?: MultipartCapability;
  readonly presign?: PresignCapability;
}
