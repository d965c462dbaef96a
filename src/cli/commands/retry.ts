import type { Command } from 'commander';
import { type PushConfig, PushConfigSchema } from '../../push/config.js';
import { PushStats, runRetry } from '../../push/engine.js';
import { createReporter } from '../../push/progress.js';
import { buildTarget, openState } from '../../push/target.js';
import { type CliContext, UsageError } from '../context.js';
import { finish, interrupts, progressMode } from './push.js';

interface RetryFlags {
  maxRetries?: string;
  auto?: boolean;
  server?: string;
  apiKey?: string;
  key?: string;
  db?: string;
  json?: boolean;
  progress?: boolean;
  baseDelayMs?: string;
}

/** s3up retry <session>: the session's failed files, in rounds with exponential backoff. */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('retry')
    .description("retry a session's failed files (one round, or --auto: rounds with backoff up to --max-retries)")
    .argument('<session>', 'session id (s3up sessions list)')
    .option('--max-retries <n>', 'a file retried this many times that fails again is failed for good (default: the session config, 3)')
    .option('--auto', 'keep going in rounds with exponential backoff until nothing is left or --max-retries')
    .option('--server <url>', 'gateway URL (default: the one the session used)')
    .option('--api-key <key>', 'client API key (env S3UP_API_KEY)')
    .option('--key <key>', 'same as --api-key')
    .option('--db <url>', 'state database (env DATABASE_URL; default $XDG_DATA_HOME/s3up/push.db)')
    .option('--json', 'machine-readable events on stdout')
    .option('--no-progress', 'no progress display')
    .option('--base-delay-ms <ms>', 'first backoff between rounds (default 2000, doubling, capped at 60 s)')
    .action(async (sessionId: string, flags: RetryFlags) => {
      const state = await openState(flags.db, ctx.env);
      const irq = interrupts(ctx);
      const started = Date.now();
      try {
        const session = await state.session(sessionId).catch((err: Error) => {
          throw new UsageError(`retry: ${err.message}`);
        });
        const stored = PushConfigSchema.safeParse(JSON.parse(session.config_json));
        if (!stored.success) throw new Error(`retry: the session's stored configuration is unreadable: ${stored.error.issues[0]?.message}`);
        const cfg: PushConfig = { ...stored.data, ...(flags.server ? { server: flags.server } : {}) };
        const maxRetries = flags.maxRetries === undefined ? cfg.max_retries : Number(flags.maxRetries);
        if (!Number.isInteger(maxRetries) || maxRetries < 1 || maxRetries > 100) throw new UsageError('retry: --max-retries must be an integer from 1 to 100');
        const built = buildTarget(cfg, flags.apiKey ?? flags.key ?? ctx.env.S3UP_API_KEY);
        const stats = new PushStats();
        stats.scanDone = true;
        const reporter = createReporter(progressMode(ctx, flags.json, flags.progress), stats, ctx, cfg.progress_interval_seconds);
        let result: Awaited<ReturnType<typeof runRetry>>;
        try {
          result = await runRetry({
            state,
            sessionId,
            target: built.target,
            stats,
            signal: irq.signal,
            config: cfg,
            maxRetries,
            auto: Boolean(flags.auto),
            baseDelayMs: flags.baseDelayMs === undefined ? undefined : Number(flags.baseDelayMs),
            onEvent: (e) => reporter.event(e),
            onRound: (round, files, wait) =>
              reporter.note(`retry round ${round}: ${files} file${files === 1 ? '' : 's'}${wait ? `; next round in ${(wait / 1000).toFixed(1)} s` : ''}`, {
                event: 'round',
                round,
                files,
                wait_ms: wait,
              }),
          });
        } finally {
          reporter.stop();
          await built.close();
        }
        await finish(ctx, state, result, Date.now() - started, flags.json);
      } finally {
        irq.dispose();
        await state.close();
      }
    });
}
