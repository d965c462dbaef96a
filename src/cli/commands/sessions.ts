import type { Command } from 'commander';
import { formatBytes, formatDuration } from '../../push/progress.js';
import type { SessionRow } from '../../push/state.js';
import { openState } from '../../push/target.js';
import { type CliContext, UsageError } from '../context.js';

function sessionJson(s: SessionRow & { project?: string }) {
  return {
    session_id: s.session_id,
    project: s.project,
    status: s.status,
    source_dir: s.source_dir,
    target: s.target,
    bucket_name: s.bucket_name,
    s3_prefix: s.s3_prefix,
    total_files: Number(s.total_files),
    files_uploaded: Number(s.files_uploaded),
    files_skipped: Number(s.files_skipped),
    files_failed: Number(s.files_failed),
    bytes_total: Number(s.bytes_total),
    bytes_uploaded: Number(s.bytes_uploaded),
    started_at: new Date(Number(s.started_at)).toISOString(),
    finished_at: s.finished_at === null ? null : new Date(Number(s.finished_at)).toISOString(),
    trigger_url: s.trigger_url,
    trigger_status: s.trigger_status,
  };
}

/** s3up sessions list | show <id>: history and statistics. */
export function register(program: Command, ctx: CliContext): void {
  const sessions = program.command('sessions').description('push sessions: history and statistics');
  sessions
    .command('list')
    .description('recent sessions, newest first')
    .option('--project <name>', 'only this project')
    .option('--limit <n>', 'how many (default 20)')
    .option('--db <url>', 'state database (env DATABASE_URL; default $XDG_DATA_HOME/s3up/push.db)')
    .option('--json', 'JSON output')
    .action(async (flags: { project?: string; limit?: string; db?: string; json?: boolean }) => {
      const limit = flags.limit === undefined ? 20 : Number(flags.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new UsageError('sessions list: --limit must be an integer from 1 to 10000');
      const state = await openState(flags.db, ctx.env);
      try {
        const rows = await state.sessions({ project: flags.project, limit });
        if (flags.json) {
          ctx.stdout.write(`${JSON.stringify(rows.map(sessionJson))}\n`);
          return;
        }
        if (rows.length === 0) {
          ctx.stdout.write('no sessions yet\n');
          return;
        }
        for (const s of rows) {
          const dur = s.finished_at === null ? '' : ` in ${formatDuration(Number(s.finished_at) - Number(s.started_at))}`;
          ctx.stdout.write(
            `${s.session_id}  ${new Date(Number(s.started_at)).toISOString()}  ${s.project}  ${s.status}  ${Number(s.files_uploaded)} up / ${Number(s.files_skipped)} skipped / ${Number(s.files_failed)} failed of ${Number(s.total_files)}  ${formatBytes(Number(s.bytes_uploaded))}${dur}\n`,
          );
        }
      } finally {
        await state.close();
      }
    });
  sessions
    .command('show')
    .description('one session: counts, bytes, timing, failures')
    .argument('<session>')
    .option('--failures <n>', 'failures to list (default 50)')
    .option('--db <url>', 'state database (env DATABASE_URL; default $XDG_DATA_HOME/s3up/push.db)')
    .option('--json', 'JSON output')
    .action(async (id: string, flags: { failures?: string; db?: string; json?: boolean }) => {
      const state = await openState(flags.db, ctx.env);
      try {
        const s = await state.session(id).catch((err: Error) => {
          throw new UsageError(`sessions show: ${err.message}`);
        });
        const project = await state.projectName(s.project_id);
        const failures = await state.failures(id, flags.failures === undefined ? 50 : Number(flags.failures));
        const elapsed = (s.finished_at === null ? Date.now() : Number(s.finished_at)) - Number(s.started_at);
        if (flags.json) {
          ctx.stdout.write(`${JSON.stringify({ ...sessionJson({ ...s, project }), duration_ms: elapsed, failures })}\n`);
          return;
        }
        const speed = elapsed > 0 ? (Number(s.bytes_uploaded) * 1000) / elapsed : 0;
        const lines = [
          `session ${s.session_id}`,
          `  project:   ${project}`,
          `  status:    ${s.status}`,
          `  source:    ${s.source_dir}`,
          `  target:    ${s.target}`,
          `  files:     ${Number(s.total_files)} found, ${Number(s.files_uploaded)} uploaded, ${Number(s.files_skipped)} skipped, ${Number(s.files_failed)} failed`,
          `  bytes:     ${formatBytes(Number(s.bytes_uploaded))} uploaded of ${formatBytes(Number(s.bytes_total))}`,
          `  started:   ${new Date(Number(s.started_at)).toISOString()}`,
          `  finished:  ${s.finished_at === null ? '-' : new Date(Number(s.finished_at)).toISOString()} (${formatDuration(elapsed)}, ${formatBytes(speed)}/s)`,
        ];
        if (s.trigger_url) lines.push(`  trigger:   ${s.trigger_url}: ${s.trigger_status ?? 'not sent'}`);
        for (const f of failures)
          lines.push(`  failed${f.permanent ? ' (permanent)' : ''}: ${f.rel_path}: ${f.error_code ?? ''} ${f.error_message ?? ''} (retries: ${f.retry_count})`);
        ctx.stdout.write(`${lines.join('\n')}\n`);
      } finally {
        await state.close();
      }
    });
}
