import type { Logger } from 'pino';
import type { ResolvedConfig } from '../config/load.js';
import type { Db } from '../db/index.js';
import type { FlagStore } from '../flags/store.js';
import type { Metrics } from '../metrics/index.js';
import type { ReportStore } from '../reports/store.js';
import type { Sweeper } from '../retention/sweeper.js';
import type { RunQuery } from '../runs/query.js';
import type { StorageBackend } from '../storage/types.js';
import type { DirectUploads } from '../uploads/direct.js';
import type { UploadPipeline } from '../uploads/pipeline.js';
import type { ResumableEngine } from '../uploads/resumable.js';
import type { RunStore } from '../uploads/runs.js';

/** What every route handler gets: the gateway's configuration, stores and services (built in main.ts). */
export interface AppContext {
  config: ResolvedConfig;
  db: Db;
  runs: RunStore;
  storage: StorageBackend;
  pipeline: UploadPipeline;
  /** The resumable-upload engine (chunked, tus). */
  engine: ResumableEngine;
  /** Direct uploads (presigned PUT, signed form key) and their telemetry. */
  direct: DirectUploads;
  logger: Logger;
  instanceId: string;
  /** Set when shutdown begins; new requests are refused with SHUTTING_DOWN. */
  closing: { value: boolean };
  /** Records queries, retention, reports, flags, metrics. */
  runQuery: RunQuery;
  sweeper: Sweeper;
  reports: ReportStore;
  flags: FlagStore;
  metrics: Metrics;
}
