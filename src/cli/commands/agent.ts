import type { Command } from 'commander';
import type { CliContext } from '../context.js';

/** Spec 002 runs the daemon as `s3up --config client.yaml`: the same as `s3up agent --config client.yaml`. */
export function specForm(argv: string[]): string[] {
  const first = argv[0];
  return first === '--config' || first?.startsWith('--config=') ? ['agent', ...argv] : argv;
}

/** The watching daemon (spec 002): `s3up agent --config client.yaml`, `s3up agent status --config client.yaml [--json]`. */
export function register(program: Command, ctx: CliContext): void {
  const agent = program
    .command('agent')
    .description('run the watching upload daemon (spec 002); see docs/agent.md')
    .option('--config <file>', 'client.yaml')
    .action(async (flags: { config?: string }) => {
      const { runAgent } = await import('../../agent/cli.js');
      ctx.exitCode = await runAgent(flags.config, ctx.stderr);
    });
  agent
    .command('status')
    .description("what the daemon is doing: queue, in flight, parked with reasons, skipped, last uploads, totals (reads the agent's ledger)")
    .option('--config <file>', 'client.yaml')
    .option('--json', 'machine-readable output')
    .action(async (_flags: unknown, cmd: Command) => {
      // `--config` may land on `agent` or on `status`, wherever it was written.
      const flags = cmd.optsWithGlobals<{ config?: string; json?: boolean }>();
      const { runAgentStatus } = await import('../../agent/cli.js');
      ctx.exitCode = await runAgentStatus(flags.config, { json: flags.json }, ctx.stdout, ctx.stderr);
    });
}
