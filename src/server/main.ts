import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import type { ResolvedConfig } from '../config/load.js';
import { checkWritable, type Db, migrate, openDatabase, redactUrl, WriteBatcher } from '../db/index.js';
import { FlagStore } from '../flags/store.js';
import { Metrics } from '../metrics/index.js';
import { ReportStore } from '../reports/store.js';
import { createSweeper, type Sweeper } from '../retention/index.js';
import { expiredSessionsTask } from '../retention/tasks.js';
import { RunQuery } from '../runs/query.js';
import { FsStorage } from '../storage/fs.js';
import { openStorage } from '../storage/index.js';
import type { StorageBackend } from '../storage/types.js';
import { DirectUploads, signingSecret } from '../uploads/direct.js';
import { KeyLocks } from '../uploads/key-locks.js';
import { orphanedRunsTask } from '../uploads/orphans.js';
import { type UploadObserver, UploadPipeline } from '../uploads/pipeline.js';
import { ResumableEngine } from '../uploads/resumable.js';
import { RunStore } from '../uploads/runs.js';
import { PgAdvisoryLocks } from '../uploads/upload-locks.js';
import { VERSION } from '../version.js';
import { type AppContext, buildApp } from './app.js';

/** Header and field names whose values are secrets; pino replaces them before writing. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["x-admin-token"]',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["x-admin-token"]',
  // Node's HTTP parser errors carry the raw request bytes (headers included); Fastify logs them at trace.
  'err.rawPacket',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 's3up-server' } }, destination);
}

/**
 * Apply migrations, tolerating another gateway process doing the same at the
 * same moment: SQLite has no migration lock across processes, so the loser of
 * the race fails ("table ... already exists") after the winner committed; its
 * transaction rolled back, and a retry finds the migrations applied.
 */
async function migrateRacing(db: Parameters<typeof migrate>[0], attempts = 5): Promise<string[]> {
  for (let i = 1; ; i++) {
    try {
      return await migrate(db);
    } catch (err) {
      if (i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 100 * i + Math.floor(Math.random() * 100)));
    }
  }
}

/** Counts upload requests whose bytes are arriving (the pipeline's started and ended events); shutdown waits for them. */
class InFlight {
  count = 0;
  private waiters: Array<() => void> = [];

  observer(): UploadObserver {
    return {
      started: () => {
        this.count++;
      },
      ended: () => {
        this.count = Math.max(0, this.count - 1);
        if (this.count === 0) for (const w of this.waiters.splice(0)) w();
      },
    };
  }

  /** Resolves true once no upload is in flight, false if `timeoutMs` passes first. */
  settled(timeoutMs: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

export interface RunningServer {
  app: FastifyInstance;
  ctx: AppContext;
  url: string;
  port: number;
  /** Stop accepting, let in-flight requests finish within the grace period, release everything. */
  close(graceMs?: number): Promise<void>;
}

/**
 * The gateway's parts, assembled once from a configuration: database
 * (migrated), store, upload records, the upload pipeline, the resumable and
 * direct upload services, and the sweeper with every task. The server
 * (`listen`), the tests and `s3up-server sweep` all start from here, so they
 * run the same code with the same tasks.
 */
export interface Gateway {
  config: ResolvedConfig;
  logger: Logger;
  db: Db;
  storage: StorageBackend;
  runs: RunStore;
  pipeline: UploadPipeline;
  engine: ResumableEngine;
  direct: DirectUploads;
  sweeper: Sweeper;
  metrics: Metrics;
  instanceId: string;
  /** Serve HTTP: the app, its timers and this gateway's heartbeat. Closing the server releases the gateway. */
  listen(): Promise<RunningServer>;
  /** Release the store and the database (a gateway that is not listening). */
  close(): Promise<void>;
}

export async function createGateway(config: ResolvedConfig, opts: { logger?: Logger } = {}): Promise<Gateway> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const db = await openDatabase(config.databaseUrl);
  let storage: StorageBackend | undefined;
  try {
    const applied = await migrateRacing(db.db);
    if (applied.length > 0) logger.info({ migrations: applied }, 'database migrated');
    storage = await openStorage(config.storage);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  const store = storage;
  const runs = new RunStore(db.db, db.dialect === 'sqlite' ? new WriteBatcher(db.db) : undefined);
  // Gateways sharing a PostgreSQL database publish a key one at a time across all of them.
  const keyLocks =
    db.dialect === 'postgres'
      ? new KeyLocks(new PgAdvisoryLocks(config.databaseUrl, 's3up-publish-locks'), (err) =>
          logger.warn({ err }, 'publish lock shared by the gateways not taken (database unavailable): ordered in this gateway only'),
        )
      : new KeyLocks();
  const pipeline = new UploadPipeline(store, runs, config.storage.pathPrefix, keyLocks);
  const instanceId = randomUUID();
  pipeline.owner = instanceId;
  if (store instanceof FsStorage) store.owner = instanceId;
  const metrics = new Metrics();
  pipeline.observe(metrics.uploadObserver());
  const engine = new ResumableEngine(db.db, pipeline, {
    sessionTtlMs: config.raw.uploads.session_ttl_hours * 3600 * 1000,
    sweepIntervalMs: config.raw.uploads.sweep_interval_seconds * 1000,
    heartbeatMs: config.raw.uploads.heartbeat_seconds * 1000,
    logger,
  });
  const direct = new DirectUploads(db.db, pipeline, signingSecret(config), config.raw.uploads.direct_url_ttl_seconds);
  const sweeper = createSweeper({ config, db: db.db, storage: store, logger, instanceId, metrics });
  sweeper.addTask(expiredSessionsTask(engine));
  sweeper.addTask(orphanedRunsTask({ pipeline, direct, clients: config.clients, heartbeatMs: config.raw.uploads.heartbeat_seconds * 1000 }));
  let released: Promise<void> | undefined;
  const release = (): Promise<void> => {
    released ??= (async () => {
      // Records still owed (database away): one last try; what stays owed is settled from the store by a sweeper later.
      if (pipeline.unrecorded.size > 0) {
        await Promise.race([pipeline.unrecorded.retry().catch(() => 0), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
      }
      pipeline.unrecorded.stop();
      await pipeline.keyLocks.close().catch(() => {});
      await engine.stop();
      await store.close();
      await db.close();
    })();
    return released;
  };
  const gateway: Gateway = {
    config,
    logger,
    db,
    storage: store,
    runs,
    pipeline,
    engine,
    direct,
    sweeper,
    metrics,
    instanceId,
    listen: () => listen(gateway, release),
    close: release,
  };
  return gateway;
}

/** Build the HTTP app over a gateway and listen; the returned server's close releases the gateway. */
async function listen(gw: Gateway, release: () => Promise<void>): Promise<RunningServer> {
  const { config, logger, db, sweeper } = gw;
  const uploads = new InFlight();
  gw.pipeline.observe(uploads.observer());
  let app: FastifyInstance | undefined;
  let ctx: AppContext;
  try {
    // This gateway's heartbeat: the sweeper of any gateway settles the open runs of one that went silent.
    await checkWritable(db.db, gw.instanceId);
    const flags = await FlagStore.open(config.featureFlagsPath);
    if (flags.loadError) logger.error({ error: flags.loadError }, 'feature flags not loaded: serving none until a valid document is PUT');
    ctx = {
      config,
      db,
      runs: gw.runs,
      storage: gw.storage,
      pipeline: gw.pipeline,
      engine: gw.engine,
      direct: gw.direct,
      logger,
      instanceId: gw.instanceId,
      closing: { value: false },
      runQuery: new RunQuery(db.db, gw.runs),
      sweeper,
      reports: new ReportStore(db.db),
      flags,
      metrics: gw.metrics,
    };
    app = await buildApp(ctx);
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    // Start-up failed half way (database down, port taken): release what was opened.
    await app?.close().catch(() => {});
    await release().catch(() => {});
    throw err;
  }
  const started = app;
  sweeper.start();
  gw.engine.start();
  const heartbeat = setInterval(() => {
    checkWritable(db.db, ctx.instanceId).catch((err: unknown) => logger.warn({ err }, 'heartbeat not written (database unavailable?)'));
  }, config.raw.uploads.heartbeat_seconds * 1000);
  heartbeat.unref();
  const addr = started.server.address() as AddressInfo;
  const scheme = config.tls ? 'https' : 'http';
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${scheme}://${host}:${addr.port}`;
  logger.info(
    { url, version: VERSION, storage: config.storage.backend, database: redactUrl(config.databaseUrl), clients: config.clients.length },
    's3up-server listening',
  );

  let closed: Promise<void> | undefined;
  const close = (graceMs = config.shutdownGraceMs): Promise<void> => {
    closed ??= (async () => {
      ctx.closing.value = true;
      clearInterval(heartbeat);
      const force = setTimeout(() => {
        logger.warn({ graceMs }, 'grace period over: closing remaining connections');
        started.server.closeAllConnections();
      }, graceMs);
      force.unref();
      const sweeping = sweeper.stop();
      try {
        await started.close();
      } finally {
        clearTimeout(force);
        await sweeping;
        // Connections are gone, but a cut upload is still cleaning up (temp file, failed record): let it finish.
        if (!(await uploads.settled(5000))) logger.warn({ uploads: uploads.count }, 'uploads still unfinished at exit');
        await release();
      }
    })();
    return closed;
  };
  return { app: started, ctx, url, port: addr.port, close };
}

/** Assemble a gateway and serve it (the bin and most tests). */
export async function startServer(config: ResolvedConfig, opts: { logger?: Logger } = {}): Promise<RunningServer> {
  return (await createGateway(config, opts)).listen();
}
