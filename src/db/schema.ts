/** Timestamps are stored as integer milliseconds since the epoch (UTC) on both databases. */
export type Millis = number;

export const RUN_STATUSES = ['queued', 'processing', 'succeeded', 'failed'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const RUN_KINDS = ['multipart', 'raw', 'chunked', 'tus', 'direct'] as const;
export type RunKind = (typeof RUN_KINDS)[number];

/** One upload attempt ("run", spec 001). */
export interface RunsTable {
  run_id: string;
  client: string;
  kind: RunKind;
  status: RunStatus;
  /** The client-relative path it asked for. */
  path: string;
  /** The full storage key: {path_prefix}{client}/{path}. */
  object_key: string;
  size: number | null;
  sha256: string | null;
  content_type: string | null;
  filename: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Millis;
  updated_at: Millis;
  started_at: Millis | null;
  finished_at: Millis | null;
  total_ms: number | null;
  bytes_per_sec: number | null;
  deleted_at: Millis | null;
  /** The gateway instance streaming this run's bytes (its heartbeat row says whether it lives). */
  owner: string | null;
  /** An open run not settled by then is settled by the sweeper (direct uploads: the URL's expiry). */
  expires_at: Millis | null;
}

/** A small table that /ready writes to, to prove the database takes writes. */
export interface HeartbeatTable {
  id: string;
  at: Millis;
}

/** A client's daily report (spec 002), one row per (client, date), upserted. */
export interface ClientReportsTable {
  client: string;
  /** UTC day, YYYY-MM-DD. */
  date: string;
  files_uploaded: number;
  bytes: number;
  failures: number;
  queue_depth: number;
  agent_version: string | null;
  host: string | null;
  received_at: Millis;
  first_received_at: Millis;
}

/** A named lease (e.g. "sweeper") so only one gateway runs a periodic job at a time. */
export interface LeasesTable {
  name: string;
  holder: string;
  expires_at: Millis;
}

/** A resumable upload (chunked API or tus) and its place in the store. */
export const SESSION_STATUSES = ['active', 'completing', 'completed', 'aborted', 'expired'] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

export interface UploadSessionsTable {
  session_id: string;
  client: string;
  protocol: 'chunked' | 'tus';
  run_id: string;
  path: string;
  object_key: string;
  file_size: number;
  chunk_size: number;
  total_chunks: number;
  content_type: string | null;
  /** Composite checksum the client declared at init ("sha256-of-sha256s:<hex>"). */
  declared_checksum: string | null;
  /** The store's multipart upload id. */
  store_upload_id: string;
  status: SessionStatus;
  /** Store-side cleanup after abort/expiry: none | done | pending (store could not abort; retried). */
  cleanup: 'none' | 'done' | 'pending';
  cleanup_attempts: number;
  cleanup_error: string | null;
  /** tus: contiguous bytes received. */
  tus_offset: number;
  /** tus: bytes of the unfinished part after tus_offset's part boundary, base64. */
  tus_tail: string | null;
  /** tus: Upload-Metadata as JSON. */
  tus_metadata: string | null;
  result_size: number | null;
  result_checksum: string | null;
  result_etag: string | null;
  error_code: string | null;
  created_at: Millis;
  updated_at: Millis;
  expires_at: Millis;
  completed_at: Millis | null;
}

/** One received part of a session; our own record (s3rver has no ListParts). */
export interface UploadPartsTable {
  session_id: string;
  part_number: number;
  size: number;
  md5: string;
  sha256: string;
  etag: string;
  created_at: Millis;
  /** 'writing' while one request holds the chunk (claimed_at), 'stored' once its bytes are in the store. */
  state: 'writing' | 'stored';
  claimed_at: Millis | null;
}

/** POST /telemetry events (spec 000). */
export interface TelemetryEventsTable {
  event_id: string;
  client: string;
  event: string;
  key: string | null;
  size: number | null;
  duration_ms: number | null;
  run_id: string | null;
  /** What the gateway concluded (e.g. verified, size_mismatch, missing). */
  outcome: string | null;
  detail: string | null;
  created_at: Millis;
}

/** The current state of one stored key: what the latest published upload put there. */
export interface ObjectsTable {
  object_key: string;
  client: string;
  path: string;
  size: number;
  /** Plain SHA-256 of the bytes, when the gateway saw them in one stream (or the upload was one chunk). */
  sha256: string | null;
  /** A checksum a client can compute locally: the sha256, or the composite of a chunked upload. */
  checksum: string;
  checksum_algorithm: 'sha256' | 'sha256-of-sha256s';
  /** Chunk size the composite was computed over (null for sha256). */
  chunk_size: number | null;
  content_type: string | null;
  uploaded_at: Millis;
  run_id: string;
}

/** Uploads and bytes per hour of created_at, client, status and error code (kept by triggers on runs). */
export interface RunStatsTable {
  bucket: Millis;
  client: string;
  status: RunStatus;
  /** '' when the run has none. */
  error_code: string;
  uploads: number;
  bytes: number;
}

/** Objects and bytes stored per client (kept by triggers on objects). */
export interface ClientStorageTable {
  client: string;
  objects: number;
  bytes: number;
}

/** An upload token revoked before its expiry; the row goes once the token would have expired. */
export interface RevokedTokensTable {
  token_id: string;
  client: string;
  revoked_at: Millis;
  expires_at: Millis;
}

export interface Database {
  revoked_tokens: RevokedTokensTable;
  run_stats: RunStatsTable;
  client_storage: ClientStorageTable;
  objects: ObjectsTable;
  upload_sessions: UploadSessionsTable;
  upload_parts: UploadPartsTable;
  telemetry_events: TelemetryEventsTable;
  client_reports: ClientReportsTable;
  leases: LeasesTable;
  runs: RunsTable;
  heartbeat: HeartbeatTable;
}
