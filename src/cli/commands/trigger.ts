import type { Command } from 'commander';
import { openState } from '../../push/target.js';
import { sendTrigger, triggerPayload } from '../../push/trigger.js';
import { type CliContext, UsageError } from '../context.js';

interface TriggerFlags {
  url?: string;
  secret?: string;
  db?: string;
  json?: boolean;
  attempts?: string;
}

/** s3up trigger <session> --url URL: tell a downstream system a session is done. */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('trigger')
    .description("POST a session's summary (JSON) to a URL, signed with HMAC-SHA256 when a secret is set; transient failures are retried")
    .argument('<session>', 'session id (s3up sessions list)')
    .option('--url <url>', "where to POST (default: the session's --trigger-url)")
    .option('--secret <secret>', 'HMAC-SHA256 secret (env S3UP_TRIGGER_SECRET): X-S3up-Signature: sha256=hex(HMAC(secret, timestamp + "." + body))')
    .option('--attempts <n>', 'attempts in all for transient failures (default 5)')
    .option('--db <url>', 'state database (env DATABASE_URL; default $XDG_DATA_HOME/s3up/push.db)')
    .option('--json', 'print the result as JSON')
    .action(async (sessionId: string, flags: TriggerFlags) => {
      const state = await openState(flags.db, ctx.env);
      try {
        const s = await state.session(sessionId).catch((err: Error) => {
          throw new UsageError(`trigger: ${err.message}`);
        });
        const url = flags.url ?? s.trigger_url;
        if (!url) throw new UsageError('trigger: --url is required (the session has no trigger URL)');
        if (!/^https?:\/\//.test(url)) throw new UsageError('trigger: --url must be an http(s) URL');
        const attempts = flags.attempts === undefined ? 5 : Number(flags.attempts);
        if (!Number.isInteger(attempts) || attempts < 1 || attempts > 20) throw new UsageError('trigger: --attempts must be an integer from 1 to 20');
        const payload = triggerPayload(s, await state.projectName(s.project_id));
        const res = await sendTrigger(url, payload, {
          secret: flags.secret ?? ctx.env.S3UP_TRIGGER_SECRET,
          retry: { attempts, baseDelayMs: 500, maxDelayMs: 15_000, maxRetryAfterMs: 60_000 },
        });
        await state.setTrigger(sessionId, url, res.ok ? `delivered (HTTP ${res.status})` : `failed: ${res.message}`);
        if (flags.json) ctx.stdout.write(`${JSON.stringify({ ...res, url, payload })}\n`);
        else
          ctx.stdout.write(
            res.ok
              ? `delivered to ${url} (HTTP ${res.status}, attempt ${res.attempts})\n`
              : `not delivered to ${url} after ${res.attempts} attempts: ${res.message}\n`,
          );
        if (!res.ok) ctx.exitCode = 1;
      } finally {
        await state.close();
      }
    });
}
