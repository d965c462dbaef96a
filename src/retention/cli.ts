import { parseArgs } from 'node:util';
import pino from 'pino';
import { loadConfig } from '../config/load.js';
import { formatBytes } from '../format.js';

export const SWEEP_USAGE = 's3up-server sweep [--config server.yaml] [--dry-run] [--json]   run the retention sweeper once';

/** `s3up-server sweep`: one pass of the sweeper, printing each object it removes (or would remove). Returns the exit code. */
export async function sweepCommand(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { config: { type: 'string', short: 'c' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } },
    strict: true,
  });
  const config = loadConfig({ configPath: values.config });
  const dryRun = values['dry-run'] ?? false;
  const logger = pino({ level: 'warn' }, pino.destination(2));
  // The gateway's own parts and sweeper tasks, without serving HTTP.
  const { createGateway } = await import('../server/main.js');
  const gateway = await createGateway(config, { logger });
  const { sweeper } = gateway;
  try {
    const verb = dryRun ? 'would remove' : 'removed';
    const report = await sweeper.sweep({
      dryRun,
      lease: !dryRun,
      onObject: values.json ? undefined : (o) => out.write(`${verb} ${o.key} (${o.size} bytes, last modified ${o.last_modified})\n`),
    });
    if (values.json) {
      out.write(`${JSON.stringify(report, null, 2)}\n`);
    } else if (report.skipped) {
      out.write(`sweep skipped: ${report.skipped}\n`);
    } else {
      for (const t of report.tasks) {
        out.write(`task ${t.name}: ${t.error ? `failed: ${t.error}` : `${verb} ${t.removed}`}\n`);
        for (const item of t.items ?? []) out.write(`  ${item}\n`);
      }
      for (const e of report.errors) out.write(`error ${e.key}: ${e.message}\n`);
      out.write(
        `${dryRun ? 'dry run: ' : ''}${report.objects_removed} object(s), ${formatBytes(report.bytes_removed)} ${verb}; ` +
          `${report.objects_protected} kept (upload in progress); ${report.dirs_removed} empty folder(s) removed\n`,
      );
    }
    return report.skipped ? 3 : report.errors.length > 0 ? 1 : 0;
  } finally {
    await gateway.close();
  }
}
