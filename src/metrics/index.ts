import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { RunKind } from '../db/schema.js';
import type { SweeperMetrics } from '../retention/sweeper.js';
import type { UploadObserver } from '../uploads/pipeline.js';
import type { Run } from '../uploads/runs.js';

/**
 * The gateway's Prometheus metrics, in a registry of their own (never the
 * global one, so several gateways in one process, e.g. tests, do not clash).
 */
export class Metrics implements SweeperMetrics {
  readonly registry = new Registry();
  readonly uploads: Counter<'client' | 'kind' | 'status'>;
  readonly uploadBytes: Counter<'client' | 'kind'>;
  readonly uploadDuration: Histogram<'kind' | 'status'>;
  readonly inFlight: Gauge<'client' | 'kind'>;
  readonly errors: Counter<'code'>;
  readonly httpDuration: Histogram<'method' | 'route' | 'status_class'>;
  readonly sweeperObjects: Counter<'client'>;
  readonly sweeperBytes: Counter<'client'>;
  readonly sweeps: Counter<'outcome'>;
  readonly sweepDuration: Histogram;
  readonly runsPruned: Counter;
  readonly reports: Counter<'client'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.uploads = new Counter({
      name: 's3up_uploads_total',
      help: 'Finished upload attempts by client, kind and outcome',
      labelNames: ['client', 'kind', 'status'],
      registers,
    });
    this.uploadBytes = new Counter({
      name: 's3up_upload_bytes_total',
      help: 'Bytes stored by successful uploads',
      labelNames: ['client', 'kind'],
      registers,
    });
    this.uploadDuration = new Histogram({
      name: 's3up_upload_duration_seconds',
      help: 'Upload duration from start to the final record',
      labelNames: ['kind', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    });
    this.inFlight = new Gauge({
      name: 's3up_uploads_in_flight',
      help: 'Upload requests whose bytes are arriving (whole files, chunks, tus PATCHes)',
      labelNames: ['client', 'kind'],
      registers,
    });
    this.errors = new Counter({ name: 's3up_errors_total', help: 'Error responses by stable error code', labelNames: ['code'], registers });
    this.httpDuration = new Histogram({
      name: 's3up_http_request_duration_seconds',
      help: 'HTTP request duration by route',
      labelNames: ['method', 'route', 'status_class'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    });
    this.sweeperObjects = new Counter({
      name: 's3up_sweeper_deleted_objects_total',
      help: 'Objects deleted by the retention sweeper',
      labelNames: ['client'],
      registers,
    });
    this.sweeperBytes = new Counter({
      name: 's3up_sweeper_deleted_bytes_total',
      help: 'Bytes deleted by the retention sweeper',
      labelNames: ['client'],
      registers,
    });
    this.sweeps = new Counter({ name: 's3up_sweeps_total', help: 'Sweeper passes by outcome (ok|error|skipped)', labelNames: ['outcome'], registers });
    this.sweepDuration = new Histogram({
      name: 's3up_sweep_duration_seconds',
      help: 'Duration of a sweeper pass',
      buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900],
      registers,
    });
    this.runsPruned = new Counter({ name: 's3up_runs_pruned_total', help: 'Upload records deleted by pruning', registers });
    this.reports = new Counter({ name: 's3up_client_reports_total', help: 'Daily reports received', labelNames: ['client'], registers });
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 's3up_' });
  }

  /** The observer to hand to UploadPipeline.observe(). */
  uploadObserver(): UploadObserver {
    return {
      started: (kind: RunKind, client: string) => {
        this.inFlight.inc({ client, kind });
      },
      ended: (kind: RunKind, client: string) => {
        this.inFlight.dec({ client, kind });
      },
      finished: (run: Run, outcome: 'succeeded' | 'failed') => {
        this.uploads.inc({ client: run.client, kind: run.kind, status: outcome });
        if (outcome === 'succeeded' && run.size !== null) this.uploadBytes.inc({ client: run.client, kind: run.kind }, run.size);
        if (run.total_ms !== null) this.uploadDuration.observe({ kind: run.kind, status: outcome }, run.total_ms / 1000);
      },
    };
  }

  errorCode(code: string): void {
    this.errors.inc({ code });
  }

  objectsDeleted(client: string, count: number, bytes: number): void {
    this.sweeperObjects.inc({ client }, count);
    this.sweeperBytes.inc({ client }, bytes);
  }

  sweepFinished(outcome: 'ok' | 'error' | 'skipped', seconds: number): void {
    this.sweeps.inc({ outcome });
    if (outcome !== 'skipped') this.sweepDuration.observe(seconds);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
