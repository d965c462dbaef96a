/**
 * The one error contract: every failure the gateway reports carries a stable
 * code from this enum, an HTTP status and a human message. Codes never change
 * meaning once released; add new ones rather than reusing old ones.
 */
export const ErrorCode = {
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  INVALID_PATH: 'INVALID_PATH',
  INVALID_REQUEST: 'INVALID_REQUEST',
  PATH_REQUIRED: 'PATH_REQUIRED',
  FILE_REQUIRED: 'FILE_REQUIRED',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  CHECKSUM_MISMATCH: 'CHECKSUM_MISMATCH',
  SIZE_MISMATCH: 'SIZE_MISMATCH',
  UPLOAD_ABORTED: 'UPLOAD_ABORTED',
  NOT_FOUND: 'NOT_FOUND',
  RANGE_NOT_SATISFIABLE: 'RANGE_NOT_SATISFIABLE',
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  CONFLICT: 'CONFLICT',
  INVALID_TRANSITION: 'INVALID_TRANSITION',
  SESSION_EXPIRED: 'SESSION_EXPIRED',
  CHUNK_OUT_OF_RANGE: 'CHUNK_OUT_OF_RANGE',
  INCOMPLETE_UPLOAD: 'INCOMPLETE_UPLOAD',
  INVALID_UPLOAD_KEY: 'INVALID_UPLOAD_KEY',
  UPLOAD_KEY_EXPIRED: 'UPLOAD_KEY_EXPIRED',
  STORAGE_UNAVAILABLE: 'STORAGE_UNAVAILABLE',
  STORAGE_ERROR: 'STORAGE_ERROR',
  STORAGE_FULL: 'STORAGE_FULL',
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  DATABASE_UNAVAILABLE: 'DATABASE_UNAVAILABLE',
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const STATUS: Record<ErrorCode, number> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  INVALID_PATH: 400,
  INVALID_REQUEST: 400,
  PATH_REQUIRED: 400,
  FILE_REQUIRED: 400,
  PAYLOAD_TOO_LARGE: 413,
  CHECKSUM_MISMATCH: 400,
  SIZE_MISMATCH: 400,
  UPLOAD_ABORTED: 400,
  NOT_FOUND: 404,
  RANGE_NOT_SATISFIABLE: 416,
  UNSUPPORTED_MEDIA_TYPE: 415,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  INVALID_TRANSITION: 409,
  SESSION_EXPIRED: 410,
  CHUNK_OUT_OF_RANGE: 400,
  INCOMPLETE_UPLOAD: 409,
  INVALID_UPLOAD_KEY: 403,
  UPLOAD_KEY_EXPIRED: 410,
  STORAGE_UNAVAILABLE: 503,
  STORAGE_ERROR: 502,
  /** The store has no room (ENOSPC, EDQUOT): retryable once space is freed. */
  STORAGE_FULL: 507,
  /** The request body stopped arriving (idle longer than the body timeout). */
  REQUEST_TIMEOUT: 408,
  DATABASE_UNAVAILABLE: 503,
  SERVICE_UNAVAILABLE: 503,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
};

export function statusFor(code: ErrorCode): number {
  return STATUS[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(STATUS, value);
}

/** An error the gateway expects and reports to the client as-is. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
    this.status = statusFor(code);
    this.details = details;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

/** The JSON body of every error response. */
export interface ErrorBody {
  error_code: ErrorCode;
  message: string;
  request_id: string;
  [extra: string]: unknown;
}
