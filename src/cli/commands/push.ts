import { setMaxListeners } from 'node:events';
import { statSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { ConfigError, configJson, type PushConfig, type PushFlags, resolvePushConfig } from '../../push/config.js';
import { PushStats, runPush, runRetry } from '../../push/engine.js';
import { createReporter, formatBytes, type ProgressMode, summaryText } from '../../push/progress.js';
import type { PushState, SessionRow } from '../../push/state.js';
import { buildTarget, openState } from '../../push/target.js';
import { sendTrigger, triggerPayload } from '../../push/trigger.js';
import { type CliContext, UsageError } from '../context.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

interface PushCommandFlags extends PushFlags {
  apiKey?: string;
  key?: string;
  resume?: string;
  db?: string;
  json?: boolean;
  verbose?: boolean;
  triggerSecret?: string;
  progress?: boolean;
}

/** Interrupts (Ctrl-C, SIGTERM) as an AbortSignal; a second Ctrl-C exits at once. */
export function interrupts(ctx: CliContext): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  // Every request in flight (workers x part concurrency) listens on this signal until it ends.
  setMaxListeners(0, ac.signal);
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) process.exit(130);
    ctx.stderr.write(`\n${sig === 'SIGINT' ? 'Ctrl-C' : sig}: stopping (uploads in flight are abandoned and resume later; press Ctrl-C again to quit now)\n`);
    ac.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export function progressMode(ctx: CliContext, json: boolean | undefined, progress: boolean | undefined): ProgressMode {
  if (json) return 'json';
  if (progress === false) return 'quiet';
  return (ctx.stderr as NodeJS.WriteStream).isTTY ? 'tty' : 'lines';
}

function resumeCommand(cfg: PushConfig, flags: PushCommandFlags, sessionId: string): string {
  const parts = ['s3up push', JSON.stringify(cfg.source_dir), '--resume', sessionId];
  if (flags.config) parts.push('--config', JSON.stringify(flags.config));
  if (cfg.direct) parts.push('--direct', cfg.direct);
  else if (flags.server) parts.push('--server', flags.server);
  if (flags.db) parts.push('--db', JSON.stringify(flags.db));
  return parts.join(' ');
}

/** The end of a push or retry: summary (text or JSON) and the exit code. */
export async function finish(ctx: CliContext, state: PushState, s: SessionRow, elapsedMs: number, json: boolean | undefined): Promise<void> {
  const project = await state.projectName(s.project_id);
  const failures = await state.failures(s.session_id, 10);
  if (json) {
    ctx.stdout.write(
      `${JSON.stringify({
        event: 'summary',
        session_id: s.session_id,
        project,
        status: s.status,
        total_files: Number(s.total_files),
        files_uploaded: Number(s.files_uploaded),
        files_skipped: Number(s.files_skipped),
        files_failed: Number(s.files_failed),
        bytes_uploaded: Number(s.bytes_uploaded),
        duration_ms: elapsedMs,
        failures,
      })}\n`,
    );
  } else {
    ctx.stdout.write(`${summaryText(s, project, elapsedMs, failures)}\n`);
  }
  if (s.status === 'interrupted') ctx.exitCode = 130;
  else if (Number(s.files_failed) > 0) ctx.exitCode = 1;
}

/** s3up push <dir>: spec 003's bulk upload, with --retry and --trigger-url its master flow. */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('push')
    .description('upload a directory tree (resumable: state in a database; re-run or --resume to continue)')
    .argument('[dir]', 'the directory to upload (or "source_dir" in --config)')
    .option('-c, --config <file>', 'JSON config (project, server or bucket_name/s3_prefix, extensions, workers, ...); flags win')
    .option('--project <name>', 'project name (default: the directory name)')
    .option('--server <url>', 'gateway URL (env S3UP_SERVER, default http://127.0.0.1:8080)')
    .option('--api-key <key>', 'client API key (env S3UP_API_KEY)')
    .option('--key <key>', 'same as --api-key')
    .option('--prefix <path>', 'gateway: put everything under this client-relative prefix')
    .option('--direct <s3url>', 'upload straight to S3 (s3://bucket/prefix) with the AWS default credential chain')
    .option('--endpoint <url>', 'direct: S3-compatible endpoint (MinIO, R2, ...)')
    .option('--region <region>', 'direct: region (default AWS_REGION or us-east-1)')
    .addOption(new Option('--path-style', 'direct: path-style addressing (default with --endpoint)'))
    .option('--ext <list>', 'only these extensions (comma-separated, repeatable): --ext wav,jpg', collect)
    .option('--include <glob>', 'only paths matching this glob (repeatable)', collect)
    .option('--exclude <glob>', 'skip paths matching this glob; a matching folder is not entered (repeatable)', collect)
    .option('--follow-symlinks', 'follow symbolic links (default: skipped)')
    .option('-w, --workers <n>', 'files uploaded at once (default 16)')
    .option('--part-concurrency <n>', 'parts in flight per large file (default 4)')
    .option('--chunk-size-mb <n>', 'part size for large files, MiB (default 8)')
    .option('--resumable-threshold-mb <n>', 'files from this size go in resumable parts (default 64)')
    .option('--checksum', 'decide "unchanged" by content (SHA-256), not size and mtime')
    .option('--no-remote-check', 'never list the target; trust only the state database')
    .option('--resume <session>', 'continue this session')
    .option('--retry', 'then retry the failures in rounds with backoff (see --max-retries)')
    .option('--max-retries <n>', 'retry rounds before a file is failed for good (default 3)')
    .option('--trigger-url <url>', 'then POST the session summary to this URL')
    .option('--trigger-secret <secret>', 'sign the trigger with HMAC-SHA256 (env S3UP_TRIGGER_SECRET)')
    .option('--db <url>', 'state database: sqlite:<file>, a file path, or postgres://... (env DATABASE_URL; default $XDG_DATA_HOME/s3up/push.db)')
    .option('--json', 'machine-readable events on stdout (JSON lines)')
    .option('--progress-interval <s>', 'seconds between progress lines without a TTY (default 5)')
    .option('--no-progress', 'no progress display')
    .option('--verbose', 'print the configuration and memory bound')
    .action(async (dir: string | undefined, flags: PushCommandFlags) => {
      let cfg: PushConfig;
      try {
        cfg = resolvePushConfig(dir, flags, ctx.env);
      } catch (err) {
        if (err instanceof ConfigError) throw new UsageError(`push: ${err.message}`);
        throw err;
      }
      const st = statSync(cfg.source_dir, { throwIfNoEntry: false });
      if (!st?.isDirectory()) throw new UsageError(`push: ${cfg.source_dir} is not a directory${st ? '' : ' (it does not exist)'}`);
      const apiKey = flags.apiKey ?? flags.key ?? ctx.env.S3UP_API_KEY;
      const built = buildTarget(cfg, apiKey);
      const state = await openState(flags.db, ctx.env);
      const irq = interrupts(ctx);
      const started = Date.now();
      try {
        const projectId = await state.project(cfg.project);
        let sessionId: string;
        if (flags.resume) {
          const s = await state.session(flags.resume);
          if (s.project_id !== projectId)
            throw new UsageError(`push: session ${flags.resume} belongs to another project (${await state.projectName(s.project_id)})`);
          await state.reopenSession(flags.resume, configJson(cfg));
          sessionId = flags.resume;
        } else {
          sessionId = await state.createSession({
            projectId,
            sourceDir: cfg.source_dir,
            targetKind: built.kind,
            target: built.description,
            targetKey: built.targetKey,
            bucketName: built.bucketName,
            s3Prefix: built.prefix,
            configJson: configJson(cfg),
            triggerUrl: cfg.trigger_url ?? null,
          });
        }
        const stats = new PushStats();
        const reporter = createReporter(progressMode(ctx, flags.json, flags.progress), stats, ctx, cfg.progress_interval_seconds);
        reporter.note(`push ${cfg.source_dir} -> ${built.description} (project ${cfg.project}, session ${sessionId}${flags.resume ? ', resumed' : ''})`, {
          event: 'start',
          session_id: sessionId,
          project: cfg.project,
          source_dir: cfg.source_dir,
          target: built.description,
        });
        if (flags.verbose) {
          reporter.note(
            `workers ${cfg.workers}, part concurrency ${cfg.part_concurrency}, chunk ${cfg.chunk_size_mb} MiB: upload buffers bounded by ${formatBytes(cfg.workers * cfg.part_concurrency * cfg.chunk_size_mb * 1024 * 1024)}`,
          );
        }
        let session: SessionRow;
        try {
          session = await runPush({
            state,
            config: cfg,
            target: built.target,
            targetKey: built.targetKey,
            sessionId,
            projectId,
            stats,
            signal: irq.signal,
            onEvent: (e) => reporter.event(e),
          });
          if (cfg.retry && Number(session.files_failed) > 0 && !irq.signal.aborted) {
            reporter.note(`retrying ${session.files_failed} failed files (up to ${cfg.max_retries} rounds)`);
            session = await runRetry({
              state,
              sessionId,
              target: built.target,
              stats,
              signal: irq.signal,
              config: cfg,
              maxRetries: cfg.max_retries,
              auto: true,
              onEvent: (e) => reporter.event(e),
              onRound: (round, files, wait) =>
                reporter.note(`retry round ${round}: ${files} files${wait ? `; next round in ${Math.round(wait / 1000)} s` : ''}`),
            });
          }
        } finally {
          reporter.stop();
        }
        if (session.status === 'interrupted') {
          ctx.stderr.write(`interrupted. Resume with:\n  ${resumeCommand(cfg, flags, sessionId)}\n`);
        }
        if (cfg.trigger_url && session.status === 'completed') {
          const res = await sendTrigger(cfg.trigger_url, triggerPayload(session, cfg.project), {
            secret: flags.triggerSecret ?? ctx.env.S3UP_TRIGGER_SECRET,
            signal: irq.signal,
          });
          await state.setTrigger(sessionId, cfg.trigger_url, res.ok ? `delivered (HTTP ${res.status})` : `failed: ${res.message}`);
          reporter.note(
            res.ok
              ? `trigger delivered to ${cfg.trigger_url} (HTTP ${res.status})`
              : `trigger to ${cfg.trigger_url} failed after ${res.attempts} attempts: ${res.message}; send it again with s3up trigger ${sessionId} --url ...`,
            {
              event: 'trigger',
              ok: res.ok,
              status: res.status,
            },
          );
          if (!res.ok) ctx.exitCode = 1;
        }
        const code = ctx.exitCode;
        await finish(ctx, state, session, Date.now() - started, flags.json);
        ctx.exitCode = Math.max(code, ctx.exitCode);
      } finally {
        irq.dispose();
        await built.close();
        await state.close();
      }
    });
}
